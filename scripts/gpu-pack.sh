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
du -sh "$out"
