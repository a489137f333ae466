#!/usr/bin/env bash
# Runs kvtier's GPU checks on a machine with an NVIDIA GPU, from a pack made by
# scripts/gpu-pack.sh: the CUDA-labelled tests, the engine suites on the real device
# (KVTIER_TEST_DEVICE=cuda), then the GPU benchmarks one at a time (nothing else on the GPU).
#   scripts/gpu-check.sh [PACK_DIR] [RESULTS_DIR] [tests|bench|all|demo-gpu|hf] [TARBALL]
# demo-gpu (not part of all; ~8 minutes): the long-context demo with its matmuls on the GPU
# through cuBLAS: a small all-resident check of the cuBLAS decoder, then --preset=llama3-8b
# (KVTIER_DEMO_LAYERS=N for fewer than 32 layers) with the KV streamed from the host tier
# alone and with disk in the path, prefetch on and off, decode tokens/s against the link
# limit (KV bytes per step / gpu-copy's H2D GB/s, measured first in the same run).
# cuBLAS is loaded at run time: the pip wheel's libcublas.so.13 (nvidia-cublas) is found on
# python3's sys.path and put on LD_LIBRARY_PATH, or named by KVTIER_CUBLAS.
# hf (not part of all): the Python package's KvtierCache on the machine's own torch and
# transformers: test_hf_cache.py under pytest, then bench/hf_cache_bench.py, about 4 minutes.
# Logs and each benchmark's JSON go to RESULTS_DIR; the last lines printed are a summary.
# With TARBALL, RESULTS_DIR is also packed into it after every step (so a run cut short by a
# time limit still leaves what it measured).
set -uo pipefail
pack="$(cd "${1:-.gpu}" && pwd)"
res="${2:-gpu-results}"
what="${3:-all}"
tarball="${4:-}"
mkdir -p "$res"
res="$(cd "$res" && pwd)"
export LD_LIBRARY_PATH="$pack/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export TMPDIR="${TMPDIR:-/tmp}"
summary="$res/summary.txt"
# cuBLAS for the device decoder (examples/llm/cublas_library.h): the pip wheel's copy.
if [ -z "${KVTIER_CUBLAS:-}" ]; then
  for d in $(python3 -c 'import sys; print(" ".join(p for p in sys.path if p))' 2>/dev/null) \
           /usr/local/cuda/lib64; do
    for f in "$d"/nvidia/cublas/lib/libcublas.so.13 "$d"/nvidia/cu13/lib/libcublas.so.13 \
             "$d"/libcublas.so.13; do
      if [ -e "$f" ] && [ -z "${cublas_dir:-}" ]; then cublas_dir="$(dirname "$f")"; fi
    done
  done
  if [ -n "${cublas_dir:-}" ]; then
    export LD_LIBRARY_PATH="$cublas_dir:$LD_LIBRARY_PATH"
  fi
fi
: >"$summary"
note() { echo "$*" | tee -a "$summary"; }
save() { if [ -n "$tarball" ]; then tar czf "$tarball" -C "$res" .; fi; }
echo "cuBLAS: ${KVTIER_CUBLAS:-${cublas_dir:-libcublas.so.13 not found (pip nvidia-cublas)}}" | tee -a "$summary"

{ date -u; nvidia-smi -L; nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.mem,pcie.link.gen.current,pcie.link.width.current --format=csv; nproc; free -g; df -h "$TMPDIR"; } >"$res/machine.txt" 2>&1
cat "$res/machine.txt"

run_test() {  # name env-assignment binary [gtest args]
  local name="$1" envs="$2" bin="$3"; shift 3
  local start=$SECONDS
  env $envs timeout "${KVTIER_TEST_TIMEOUT:-150}" "$pack/$bin" "$@" >"$res/$name.log" 2>&1
  local rc=$?
  local passed failed skipped
  passed=$(grep -c '^\[       OK \]' "$res/$name.log")
  failed=$(grep -E '^\[  FAILED  \] [A-Za-z]' "$res/$name.log" | grep -vc 'listed below')
  skipped=$(grep -c '^\[  SKIPPED \]' "$res/$name.log")
  printf '%-44s rc=%-3s %4ss  ok=%s failed=%s skipped=%s\n' "$name" "$rc" $((SECONDS - start)) \
    "$passed" "$failed" "$skipped" >>"$summary"
}

export -f run_test
export pack res summary
# Phase 1: the CUDA kernel and device tests (fast; they check what the benchmarks then time).
if [ "$what" = all ] || [ "$what" = tests ]; then
  for t in device/device_cuda_conformance device/device_cuda kernels/kernels_paged_kernels_cuda \
           kernels/kernels_quantize_cuda examples/examples_attention_cuda \
           examples/llm_device_decoder_cuda; do
    echo "${t#*/} KVTIER_TEST_SEED=$RANDOM tests/${t}_test"
  done | xargs -P 4 -L 1 bash -c 'run_test "$0" "$1" "$2"'
  save
fi

bench() {  # name timeout program [args]
  local name="$1" limit="$2" prog="$3"; shift 3
  local start=$SECONDS
  timeout "$limit" "$pack/$prog" "$@" >"$res/$name.out" 2>"$res/$name.err"
  local rc=$?
  tail -n 1 "$res/$name.out" >"$res/$name.json"
  note "$(printf '%-22s rc=%-3s %4ss  %s' "$name" "$rc" $((SECONDS - start)) \
    "$(cut -c1-400 "$res/$name.json")")"
  save
}
if [ "$what" = all ] || [ "$what" = bench ]; then
  bench gpu-copy 150 bench/kvtier_bench_gpu_copy --device=cuda
  bench attention 150 bench/kvtier_bench_attention --device=cuda
  bench quantize 90 bench/kvtier_bench_quantize --device=cuda
  link=$(python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))["ceiling"])' \
    "$res/gpu-copy.json" 2>/dev/null || true)
  bench demo-gpu 150 bench/kvtier_bench_demo --preset=gpu ${link:+--link-gbps=$link}
  bench host 60 bench/kvtier_bench_host
fi
if [ "$what" = demo-gpu ]; then
  bench gpu-copy 90 bench/kvtier_bench_gpu_copy --device=cuda
  link=$(python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))["ceiling"])' \
    "$res/gpu-copy.json" 2>/dev/null || true)
  # The cuBLAS decoder at a small shape with the all-resident check on (same decoder both
  # sides): tiers vs all-resident, greedy tokens and logits within tolerance. 2e-2, not the
  # default 5e-3: a last-bit difference in attention (float kernel vs double reference) can
  # flip the fp16 rounding of the next matmul's input (emulated, 256 tokens: 2.2e-3).
  bench demo-cublas-check 60 examples/kvtier_long_context_demo --device=cuda --matmul=device \
    --context=2048 --chunk=256 --decode=8 --turn2=64 --copy-gbps=0 --tolerance=2e-2 --json
  layers=${KVTIER_DEMO_LAYERS:+--layers=$KVTIER_DEMO_LAYERS}
  # KV from the host tier alone (it holds every block; disk reads stay ~0 during decode).
  bench demo-llama3-host 150 bench/kvtier_bench_demo --preset=llama3-8b $layers \
    --host-mib=4096 ${link:+--link-gbps=$link}
  # Disk in the path: the host tier holds half the KV (the default), the rest is read back.
  bench demo-llama3-disk 180 bench/kvtier_bench_demo --preset=llama3-8b $layers \
    ${link:+--link-gbps=$link}
  for run in demo-llama3-host demo-llama3-disk; do
    python3 - "$res/$run.json" "$run" <<'PY' 2>/dev/null | tee -a "$summary"
import json, sys
f = json.load(open(sys.argv[1]))
print("%-18s %s: decode %.2f tok/s with prefetch (%.2f without), link limit %.2f tok/s "
      "(%s), ratio %.2f; stall %.1f%% / %.1f%%; disk read %.0f MiB; check %s"
      % (sys.argv[2], f.get("matmul", "?"), f["figure"], f["decode_tokens_per_s_no_prefetch"],
         f["ceiling"], f["ceiling_source"], f["ratio"], 100 * f["stall_fraction_prefetch"],
         100 * f["stall_fraction_no_prefetch"], f["disk_bytes_out_prefetch"] / 2**20, f["check"]))
PY
  done
fi
# Phase 3: the engine suites on the real device (after the benchmarks: they share the GPU).
if [ "$what" = all ] || [ "$what" = tests ]; then
  for t in engine engine_disk engine_fault engine_stress engine_external_memory; do
    echo "${t}_on_cuda KVTIER_TEST_DEVICE=cuda tests/api/kvtier_${t}_test"
  done | xargs -P 5 -L 1 bash -c 'run_test "$0" "$1" "$2"'
  save
fi
# Mode hf: KvtierCache (bindings/python/kvtier/hf_cache.py) against the machine's python3,
# torch and transformers, from the pack's python/ (gpu-pack.sh): the module built for that
# interpreter, the tests and the benchmark. Bounded: pytest 150 s, each benchmark 90 s.
hf_check() {
  local py="$pack/python" start rc
  if ! ls "$py"/kvtier/_kvtier*.so >/dev/null 2>&1; then
    note "hf: no Python module in $py (gpu-pack.sh packs it; see its KVTIER_PACK_PYTHON_INCLUDE)"
    return
  fi
  export PYTHONPATH="$py${PYTHONPATH:+:$PYTHONPATH}"
  python3 -c 'import sys, torch, transformers, kvtier; print(sys.version.split()[0], torch.__version__, transformers.__version__, torch.cuda.is_available())' \
    >"$res/hf-versions.txt" 2>&1
  note "hf versions (python torch transformers cuda): $(tail -n 1 "$res/hf-versions.txt")"
  start=$SECONDS
  (cd "$py/tests" && timeout 150 python3 -m pytest -q -p no:cacheprovider test_hf_cache.py) \
    >"$res/hf-pytest.log" 2>&1
  rc=$?
  note "$(printf '%-22s rc=%-3s %4ss  %s' hf-pytest "$rc" $((SECONDS - start)) \
    "$(tail -n 1 "$res/hf-pytest.log")")"
  save
  hf_bench() {  # name [args]
    local name="$1"; shift
    local start=$SECONDS
    timeout 90 python3 "$py/bench/hf_cache_bench.py" "$@" >"$res/$name.out" 2>"$res/$name.err"
    local rc=$?
    tail -n 1 "$res/$name.out" >"$res/$name.json"
    note "$(printf '%-22s rc=%-3s %4ss  %s' "$name" "$rc" $((SECONDS - start)) \
      "$(cut -c1-400 "$res/$name.json")")"
    save
  }
  # Host tier only, then a host tier of a quarter of the KV so that blocks go through disk.
  hf_bench hf-bench --context 16384 --new-tokens 64
  hf_bench hf-bench-disk --context 16384 --new-tokens 32 --caches dynamic,kvtier \
    --host-tier-mb 64 --disk-dir tmp
}
if [ "$what" = hf ]; then
  hf_check
fi
echo "==== summary"
cat "$summary"
