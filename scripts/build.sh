#!/usr/bin/env bash
# Configures and builds kvtier into a build directory.
#   scripts/build.sh [BUILD_DIR] [extra cmake args...]
# Uses -j2 (the project's reference machine has 2 cores); override with KVTIER_JOBS.
# Under CI (CI=true) warnings are errors.
set -euo pipefail
cd "$(dirname "$0")/.."
dir="${1:-build}"
shift || true
args=(-G Ninja -DCMAKE_BUILD_TYPE="${KVTIER_BUILD_TYPE:-RelWithDebInfo}")
if [ "${CI:-}" = "true" ]; then args+=(-DKVTIER_WERROR=ON); fi
cmake -S . -B "$dir" "${args[@]}" "$@" >"$dir.configure.log" 2>&1 || { cat "$dir.configure.log"; exit 1; }
cmake --build "$dir" -j "${KVTIER_JOBS:-2}"
