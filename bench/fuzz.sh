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
# The JSON line, written by Python's json module from scripts/fuzz.sh's summary lines.
python3 - "$seconds" "$targets" "$execs" "$fuzz_s" "$out" <<'PY'
import json, sys
seconds, targets, execs, fuzz_s, out = sys.argv[1:]
per_target = {}
for line in open(out):
    if not line.startswith("FUZZ_TARGET "):
        continue
    _, t, e, eps, cov, ft, corp, rc = line.split()
    per_target[t] = {"executions": int(e), "exec_per_s": float(eps), "cov": int(cov),
                     "ft": int(ft), "corpus": int(corp), "clean": rc == "0"}
clean = sum(1 for t in per_target.values() if t["clean"])
targets, execs, fuzz_s = int(targets), int(execs), float(fuzz_s)
print(json.dumps({"bench": "fuzz", "figure": clean, "unit": "targets clean", "ceiling": targets,
                  "ceiling_source": "targets run",
                  "ratio": round(clean / targets, 2) if targets > 0 else 0,
                  "seconds_per_target": float(seconds), "executions": execs,
                  "exec_per_s": round(execs / fuzz_s) if fuzz_s > 0 else 0,
                  "targets": per_target}))
PY
exit "$status"
