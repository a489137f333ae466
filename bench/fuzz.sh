#!/usr/bin/env bash
# bench/run fuzz [--seconds=N] [--jobs=J] [TARGET...]: every libFuzzer target (fuzz/) for N
# seconds each (default 600), through scripts/fuzz.sh, in build-fuzz/.
#
# Its JSON line: figure = targets that ran the whole time without a crash, leak, hang or
# broken check; ceiling = targets run (ratio 1.0 is a clean run). A fuzzing campaign has no
# throughput ceiling to compare with, so executions per second (summed over targets, which
# run `jobs` at a time) and per-target executions, coverage (edges) and features are
# reported beside it as what the run achieved, not as a score.
set -uo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
seconds=600
args=()
for a in "$@"; do
  case "$a" in
    --seconds=*) seconds="${a#--seconds=}" ;;
    *) args+=("$a") ;;
  esac
done
out="$(mktemp)"
trap 'rm -f "$out"' EXIT
"$root/scripts/fuzz.sh" --seconds="$seconds" "${args[@]}" | tee "$out"
status=${PIPESTATUS[0]}
read -r _ targets failed execs fuzz_s < <(grep '^FUZZ_SUMMARY ' "$out" | tail -1) ||
  { echo "bench fuzz: scripts/fuzz.sh printed no summary (exit $status)" >&2; exit 1; }
clean=0
per_target=""
while read -r _ t e eps cov ft corp rc; do
  [ "$rc" = 0 ] && clean=$((clean + 1))
  per_target+="${per_target:+, }\"$t\": {\"executions\": $e, \"exec_per_s\": $eps, \"cov\": $cov, \"ft\": $ft, \"corpus\": $corp, \"clean\": $([ "$rc" = 0 ] && echo true || echo false)}"
done < <(grep '^FUZZ_TARGET ' "$out")
eps_total=$(awk -v e="$execs" -v s="$fuzz_s" 'BEGIN { printf "%.0f", (s > 0 ? e / s : 0) }')
ratio=$(awk -v c="$clean" -v t="$targets" 'BEGIN { printf "%.2f", (t > 0 ? c / t : 0) }')
printf '{"bench": "fuzz", "figure": %d, "unit": "targets clean", "ceiling": %d, "ceiling_source": "targets run", "ratio": %s, "seconds_per_target": %s, "executions": %s, "exec_per_s": %s, "targets": {%s}}\n' \
  "$clean" "$targets" "$ratio" "$seconds" "$execs" "$eps_total" "$per_target"
exit "$status"
