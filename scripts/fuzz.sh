#!/usr/bin/env bash
# Builds the libFuzzer targets (fuzz/, clang + ASan + UBSan, in build-fuzz/) and runs each for
# a bounded time over a copy of its seed corpus (fuzz/corpus/<target>/), so nothing is ever
# written into the repository. Fails if any target crashes, leaks, times out or breaks one of
# its checks; the input that did it is kept under build-fuzz/artifacts/.
#
#   scripts/fuzz.sh [--seconds=N] [--jobs=J] [TARGET...]
#     --seconds=N   per target (default 20)
#     --jobs=J      targets run at once (default: KVTIER_JOBS or 2)
#     TARGET...     a subset (default: every target)
#
# Prints, per target, libFuzzer's final figures: executions, executions/s, coverage (edges)
# and features, and the corpus size it ended with. KVTIER_FUZZ_KEEP_CORPUS=DIR keeps the
# grown corpora there (to merge new seeds by hand: fuzz/README in docs/fuzzing.md).
set -euo pipefail
cd "$(dirname "$0")/.."
root="$PWD"

seconds=20
jobs="${KVTIER_JOBS:-2}"
targets=()
for a in "$@"; do
  case "$a" in
    --seconds=*) seconds="${a#--seconds=}" ;;
    --jobs=*) jobs="${a#--jobs=}" ;;
    -h|--help) sed -n '2,14p' "$0"; exit 0 ;;
    -*) echo "usage: scripts/fuzz.sh [--seconds=N] [--jobs=J] [TARGET...]" >&2; exit 2 ;;
    *) targets+=("$a") ;;
  esac
done
all_targets=(fuzz_disk_record fuzz_remote_record fuzz_resp fuzz_disk_recover fuzz_index_value fuzz_json fuzz_trace_mooncake
             fuzz_trace_csv fuzz_c_api)
[ ${#targets[@]} -eq 0 ] && targets=("${all_targets[@]}")
for t in "${targets[@]}"; do
  [ -d "fuzz/corpus/$t" ] || { echo "scripts/fuzz.sh: unknown target '$t' (no fuzz/corpus/$t)" >&2; exit 2; }
done

scripts/install-deps.sh
dir="${KVTIER_FUZZ_BUILD_DIR:-build-fuzz}"
start=$(date +%s)
# -O1 and line tables only: the build is part of CI's time; ASan reports still name lines.
args=(-G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo
      "-DCMAKE_CXX_FLAGS_RELWITHDEBINFO=-O1 -gline-tables-only"
      "-DCMAKE_C_FLAGS_RELWITHDEBINFO=-O1 -gline-tables-only"
      -DCMAKE_C_COMPILER=clang -DCMAKE_CXX_COMPILER=clang++ -DKVTIER_CUDA=OFF
      -DKVTIER_BUILD_FUZZ=ON -DKVTIER_BUILD_TESTS=OFF -DKVTIER_BUILD_BENCH=OFF
      -DKVTIER_BUILD_EXAMPLES=OFF -DKVTIER_BUILD_TOOLS=OFF -DKVTIER_BUILD_PYTHON=OFF)
if [ "${CI:-}" = "true" ]; then args+=(-DKVTIER_WERROR=ON); fi
mkdir -p "$dir"
cmake -S . -B "$dir" "${args[@]}" >"$dir.configure.log" 2>&1 || { cat "$dir.configure.log"; exit 1; }
cmake --build "$dir" --target "${targets[@]}" -j "$jobs"
built=$(date +%s)
echo "== fuzz: built ${#targets[@]} targets in $((built - start)) s; running each for ${seconds} s, $jobs at a time" >&2

work="$(mktemp -d "${TMPDIR:-/tmp}/kvtier-fuzz.XXXXXX")"
trap 'rm -rf "$work"' EXIT
artifacts="$root/$dir/artifacts"
mkdir -p "$artifacts"
export ASAN_OPTIONS="${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1}"
export UBSAN_OPTIONS="${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}"

# Runs one target; its log goes to $work/<target>.log and its exit status to <target>.rc.
run_target() {
  local t="$1"
  mkdir -p "$work/$t"
  cp -R "fuzz/corpus/$t/." "$work/$t/"
  local rc=0
  # -timeout: one input may take 25 s at most (a hang is a failure); -max_len: the largest
  # seeds are 13 KiB records. fuzz_c_api's and fuzz_disk_recover's inputs are edit and call
  # programs: libFuzzer's slow length ramp would hold them to a few steps for minutes, so
  # they start at full length.
  local extra=()
  [ "$t" = fuzz_c_api ] && extra=(-len_control=0 -max_len=1024)
  [ "$t" = fuzz_disk_recover ] && extra=(-len_control=0 -max_len=512)
  "$dir/fuzz/$t" -max_total_time="$seconds" -timeout=25 -rss_limit_mb=2560 -max_len=20000 \
    "${extra[@]}" -print_final_stats=1 -artifact_prefix="$artifacts/$t-" "$work/$t" \
    >"$work/$t.log" 2>&1 || rc=$?
  echo "$rc" >"$work/$t.rc"
}

running=0
for t in "${targets[@]}"; do
  run_target "$t" &
  running=$((running + 1))
  if [ "$running" -ge "$jobs" ]; then
    wait -n || true
    running=$((running - 1))
  fi
done
wait || true

failed=0
total_execs=0
printf '%-22s %12s %9s %7s %7s %8s  %s\n' target executions exec/s cov ft corpus result >&2
for t in "${targets[@]}"; do
  log="$work/$t.log"
  rc="$(cat "$work/$t.rc" 2>/dev/null || echo 1)"
  execs="$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)"
  eps="$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)"
  # The last status line: "#N  DONE  cov: C ft: F corp: K/B ..."
  last="$(grep -E '^#[0-9]+' "$log" | tail -1 || true)"
  cov="$(sed -n 's/.* cov: \([0-9]*\).*/\1/p' <<<"$last")"
  ft="$(sed -n 's/.* ft: \([0-9]*\).*/\1/p' <<<"$last")"
  corp="$(sed -n 's/.* corp: \([0-9]*\)\/.*/\1/p' <<<"$last")"
  result=ok
  if [ "$rc" != 0 ]; then
    result="FAILED (exit $rc)"
    failed=1
  fi
  printf '%-22s %12s %9s %7s %7s %8s  %s\n' "$t" "${execs:-?}" "${eps:-?}" "${cov:-?}" \
    "${ft:-?}" "${corp:-?}" "$result" >&2
  total_execs=$((total_execs + ${execs:-0}))
  echo "FUZZ_TARGET $t ${execs:-0} ${eps:-0} ${cov:-0} ${ft:-0} ${corp:-0} $rc"
  if [ "$rc" != 0 ]; then
    echo "---- $t: last lines of its log (full log: $artifacts/$t.log)" >&2
    cp "$log" "$artifacts/$t.log"
    grep -v -E '^#[0-9]+ ' "$log" | tail -60 >&2
    ls "$artifacts" | grep -E "^$t-" | sed "s|^|  input kept: $artifacts/|" >&2 || true
  fi
  if [ -n "${KVTIER_FUZZ_KEEP_CORPUS:-}" ]; then
    mkdir -p "$KVTIER_FUZZ_KEEP_CORPUS/$t"
    cp -R "$work/$t/." "$KVTIER_FUZZ_KEEP_CORPUS/$t/"
  fi
done
end=$(date +%s)
echo "== fuzz: ${#targets[@]} targets, $total_execs executions in $((end - built)) s of fuzzing ($((end - start)) s with the build)" >&2
# For bench/run fuzz (bench/fuzz.sh): the FUZZ_TARGET lines above, and
# "FUZZ_SUMMARY targets failed executions fuzz_seconds".
echo "FUZZ_SUMMARY ${#targets[@]} $failed $total_execs $((end - built))"
exit "$failed"
