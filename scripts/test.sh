#!/usr/bin/env bash
# README command 2: install what is missing, build, and run the whole test suite.
#   scripts/test.sh                 the suite (CUDA device built when nvcc is found; GPU tests
#                                   skip, saying so, when no GPU is present)
#   scripts/test.sh --sanitize=address   the suite under AddressSanitizer + UBSan
#   scripts/test.sh --sanitize=thread    the suite under ThreadSanitizer (clang)
# The plain run then installs the build into a temporary prefix and builds and runs consumers
# of it (scripts/check-install.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh

sanitize=""
for a in "$@"; do
  case "$a" in
    --sanitize=address|--sanitize=thread) sanitize="${a#--sanitize=}" ;;
    *) echo "usage: scripts/test.sh [--sanitize=address|thread]" >&2; exit 2 ;;
  esac
done

if [ -z "$sanitize" ]; then
  dir=build
  scripts/build.sh "$dir" -DKVTIER_BUILD_TESTS=ON
else
  dir="build-$sanitize"
  # Sanitizer builds leave CUDA off (nothing to run it on here) and skip benches/examples.
  # -O1: a fraction of -O2's compile time (the CI runs three full builds on two cores). ASan
  # needs only line tables (-g1) for its reports; TSan keeps full debug info (-g), because its
  # suppressions (tests/sanitizers/tsan.supp) match qualified function names, which line
  # tables do not carry (with -g1 every absl::Status refcount frame became a bare "Unref").
  debug=-g1
  if [ "$sanitize" = "thread" ]; then debug=-g; fi
  extra=(-DKVTIER_SANITIZE="$sanitize" -DKVTIER_CUDA=OFF -DKVTIER_BUILD_BENCH=OFF
         -DKVTIER_BUILD_EXAMPLES=OFF -DKVTIER_BUILD_TESTS=ON
         "-DCMAKE_C_FLAGS_RELWITHDEBINFO=-O1 $debug -DNDEBUG"
         "-DCMAKE_CXX_FLAGS_RELWITHDEBINFO=-O1 $debug -DNDEBUG")
  if [ "$sanitize" = "thread" ]; then
    # clang: TSan plus the -Wthread-safety lock-annotation checks.
    extra+=(-DCMAKE_C_COMPILER=clang -DCMAKE_CXX_COMPILER=clang++)
  fi
  scripts/build.sh "$dir" "${extra[@]}"
fi
export ASAN_OPTIONS="${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1}"
export UBSAN_OPTIONS="${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}"
export TSAN_OPTIONS="${TSAN_OPTIONS:-halt_on_error=1:second_deadlock_stack=1:suppressions=$PWD/tests/sanitizers/tsan.supp}"
(cd "$dir" && ctest --output-on-failure -j "${KVTIER_JOBS:-2}" --timeout 600)
if [ -z "$sanitize" ]; then
  # Install into a temporary prefix; build and run consumers via find_package and pkg-config.
  scripts/check-install.sh "$dir"
fi
