#!/usr/bin/env bash
# Packs what scripts/gpu-check.sh runs on a GPU machine that has the CUDA driver but none of
# kvtier's Debian packages: the CUDA-enabled test and benchmark programs of a build tree
# (stripped; the CUDA runtime is already static) and the shared libraries they load that are
# not part of glibc/libstdc++ (RocksDB, liburing, Abseil, xxHash, OpenSSL and their own deps).
#   scripts/gpu-pack.sh [BUILD_DIR] [OUT_DIR]     default: build  .gpu
# cuBLAS is not packed (~700 MB): the demo and llm_device_decoder_cuda_test dlopen the GPU
# machine's own libcublas.so.13 (pip nvidia-cublas), which gpu-check.sh finds.
# On the GPU machine:  scripts/gpu-check.sh OUT_DIR RESULTS_DIR [tests|bench|all|demo-gpu]
set -euo pipefail
cd "$(dirname "$0")/.."
build="${1:-build}"
out="${2:-.gpu}"
if ! grep -q "\.cu\.o" "$build/build.ninja" 2>/dev/null; then
  echo "gpu-pack: $build was not configured with the CUDA device (no .cu objects in $build/build.ninja)" >&2
  exit 1
fi
programs=(
  tests/device/device_cuda_conformance_test
  tests/device/device_cuda_test
  tests/kernels/kernels_paged_kernels_cuda_test
  tests/kernels/kernels_quantize_cuda_test
  tests/examples/examples_attention_cuda_test
  tests/examples/llm_device_decoder_cuda_test
  tests/api/kvtier_engine_test
  tests/api/kvtier_engine_disk_test
  tests/api/kvtier_engine_fault_test
  tests/api/kvtier_engine_stress_test
  tests/api/kvtier_engine_external_memory_test
  bench/kvtier_bench_gpu_copy
  bench/kvtier_bench_attention
  bench/kvtier_bench_quantize
  bench/kvtier_bench_demo
  bench/kvtier_bench_host
  examples/kvtier_long_context_demo
  tools/kvtier
)
cmake --build "$build" -j "${KVTIER_JOBS:-2}" --target $(for p in "${programs[@]}"; do basename "$p"; done)
rm -rf "$out"
mkdir -p "$out/lib"
for p in "${programs[@]}"; do
  mkdir -p "$out/$(dirname "$p")"
  strip --strip-debug -o "$out/$p" "$build/$p"  # symbols kept: backtraces name functions
done
# Shared libraries: everything ldd resolves except the C library, the dynamic loader and the
# C++ runtime, which any machine that runs CUDA programs has (newer ones load older binaries).
for p in "${programs[@]}"; do ldd "$build/$p"; done |
  awk '$2 == "=>" && $3 ~ /^\// {print $3}' | sort -u |
  grep -Ev '/(libc|libm|libpthread|libdl|librt|libstdc\+\+|libgcc_s)\.so' |
  while read -r lib; do cp -L "$lib" "$out/lib/"; done
strip --strip-unneeded "$out"/lib/*.so* 2>/dev/null || true

# The Python package for gpu-check.sh's hf mode, in $out/python: kvtier/*.py, the extension
# kvtier._kvtier, test_hf_cache.py and bench/hf_cache_bench.py. The GPU machine's python3 is
# 3.12 (this machine's Debian one 3.11), so the extension is compiled once more with the build's
# own command for kvtier_python, against 3.12's headers (KVTIER_PACK_PYTHON_INCLUDE, default a
# pyenv 3.12) and named for it (KVTIER_PACK_PYTHON_TAG). Only kvtier_module.cc is recompiled;
# the kvtier libraries it links are the build's. Without 3.12 headers the build's own module
# is packed (usable only by the same Python version).
pack_python() {
  mkdir -p "$out/python/kvtier" "$out/python/tests" "$out/python/bench"
  cp bindings/python/kvtier/*.py "$out/python/kvtier/"
  cp bindings/python/tests/test_hf_cache.py "$out/python/tests/"
  cp bench/hf_cache_bench.py "$out/python/bench/"
  if ! grep -q 'kvtier_python' "$build/build.ninja"; then
    echo "gpu-pack: $build has no Python module (needs pybind11-dev, python3-dev," \
      "python3-numpy): hf mode will say so" >&2
    return 0
  fi
  cmake --build "$build" -j "${KVTIER_JOBS:-2}" --target kvtier_python
  local inc="${KVTIER_PACK_PYTHON_INCLUDE:-}" tag="${KVTIER_PACK_PYTHON_TAG:-cpython-312-x86_64-linux-gnu}"
  if [ -z "$inc" ]; then
    inc=$(ls -d "$(pyenv root 2>/dev/null || echo "$HOME/.pyenv")"/versions/3.12*/include/python3.12 \
      2>/dev/null | tail -n 1)
  fi
  if [ -z "$inc" ] || [ ! -f "$inc/Python.h" ]; then
    echo "gpu-pack: no Python 3.12 headers (set KVTIER_PACK_PYTHON_INCLUDE): packing the" \
      "build's own module" >&2
    cp "$build"/bindings/python/kvtier/_kvtier*.so "$out/python/kvtier/"
    return 0
  fi
  local cmds cc ld obj so dest
  cmds=$(ninja -C "$build" -t commands kvtier_python)
  cc=$(grep -F 'kvtier_module.cc' <<<"$cmds" | tail -n 1)
  ld=$(tail -n 1 <<<"$cmds")
  obj=$(grep -oE -- '-o [^ ]+' <<<"$cc" | head -n 1 | cut -c4-)
  so=$(grep -oE -- '-o [^ ]+' <<<"$ld" | head -n 1 | cut -c4-)
  dest="$(cd "$out/python/kvtier" && pwd)/_kvtier.$tag.so"
  # Every include of the build's Python (Debian's /usr/include/python3.11 and its multiarch
  # pyconfig.h folder) gives way to 3.12's.
  cc=$(sed -E 's#(-isystem +|-I)[^ ]*python3\.[0-9]+[^ ]*##g' <<<"$cc")
  cc="${cc//"$obj"/"$obj.py312.o"} -isystem $inc"
  ld="${ld//"$obj"/"$obj.py312.o"}"
  ld="${ld//"$so"/"$dest"}"
  (cd "$build" && eval "$cc" && eval "$ld")
  strip --strip-unneeded "$dest"
  echo "gpu-pack: kvtier._kvtier for Python 3.12 ($inc) -> $dest"
}
pack_python
# The module's own shared libraries (cpp-httplib, zstd, ... that no program above needs), into
# lib/ as for the programs: gpu-check.sh puts lib/ on LD_LIBRARY_PATH.
for m in "$out"/python/kvtier/_kvtier*.so; do
  if [ -e "$m" ]; then ldd "$m"; fi
done | awk '$2 == "=>" && $3 ~ /^\// {print $3}' | sort -u |
  grep -Ev '/(libc|libm|libpthread|libdl|librt|libstdc\+\+|libgcc_s)\.so' |
  while read -r lib; do [ -e "$out/lib/$(basename "$lib")" ] || cp -L "$lib" "$out/lib/"; done ||
  true  # (no module, or nothing new: grep finds no line)
du -sh "$out"
