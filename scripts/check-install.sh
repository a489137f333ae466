#!/usr/bin/env bash
# Installs a build into a temporary prefix and builds against it what an inference engine
# would: the examples that use only the public API, once through find_package(kvtier)
# (examples/consumer) and once through pkg-config (kvtier.pc), then runs them.
#   scripts/check-install.sh [BUILD_DIR]     (default: build; it must be built already)
# scripts/test.sh runs it after the suite. Exits non-zero, saying what failed, on any error.
set -euo pipefail
cd "$(dirname "$0")/.."
build="${1:-build}"
prefix="$(mktemp -d -t kvtier-prefix.XXXXXX)"
work="$(mktemp -d -t kvtier-consumer.XXXXXX)"
trap 'rm -rf "$prefix" "$work"' EXIT

echo "== check-install: cmake --install $build --prefix $prefix" >&2
cmake --install "$build" --prefix "$prefix" >"$work/install.log" 2>&1 ||
  { cat "$work/install.log"; exit 1; }

# What is installed: the public headers, the library with its SONAME link, the packages.
lib="$(find "$prefix" -name 'libkvtier.so.*.*.*' -print -quit)"
[ -n "$lib" ] || { echo "check-install: no libkvtier.so.X.Y.Z installed" >&2; exit 1; }
libdir="$(dirname "$lib")"
for f in "$libdir/libkvtier.so" "$libdir/libkvtier.so.0.1" "$libdir/pkgconfig/kvtier.pc" \
         "$libdir/cmake/kvtier/kvtierConfig.cmake" \
         "$libdir/cmake/kvtier/kvtierConfigVersion.cmake" \
         "$prefix/include/kvtier/engine.h" "$prefix/include/kvtier/c_api.h"; do
  [ -e "$f" ] || { echo "check-install: $f is missing" >&2; exit 1; }
done
extra_headers="$(find "$prefix/include" -type f ! -path "$prefix/include/kvtier/*.h")"
[ -z "$extra_headers" ] || { echo "check-install: unexpected headers: $extra_headers" >&2; exit 1; }
if readelf -d "$lib" | grep -q 'RUNPATH\|RPATH'; then
  echo "check-install: the installed library carries a build RPATH" >&2; exit 1
fi

echo "== check-install: find_package(kvtier): examples/consumer" >&2
cmake -S examples/consumer -B "$work/cmake" -G Ninja -DCMAKE_PREFIX_PATH="$prefix" \
  -DCMAKE_BUILD_TYPE=RelWithDebInfo >"$work/configure.log" 2>&1 ||
  { cat "$work/configure.log"; exit 1; }
cmake --build "$work/cmake" -j "${KVTIER_JOBS:-2}"
"$work/cmake/kvtier_c_api_example" --device=emulated
"$work/cmake/kvtier_tiers_example" --device=emulated --copy-gbps=0 >"$work/tiers.log" 2>&1 ||
  { cat "$work/tiers.log"; exit 1; }
tail -n 3 "$work/tiers.log"

echo "== check-install: pkg-config kvtier" >&2
export PKG_CONFIG_PATH="$libdir/pkgconfig"
version="$(pkg-config --modversion kvtier)"
[ "$version" = "0.1.0" ] || { echo "check-install: kvtier.pc says version $version" >&2; exit 1; }
# shellcheck disable=SC2046  # word splitting of the flags is intended
cc -std=c11 -Wall -Wextra -Werror examples/c_api_example.c -o "$work/c_api_example_pc" \
  $(pkg-config --cflags --libs kvtier)
# shellcheck disable=SC2046
c++ -std=c++20 -Wall -Wextra -Werror examples/tiers_example.cc -o "$work/tiers_example_pc" \
  $(pkg-config --cflags --libs kvtier absl_str_format absl_strings)
LD_LIBRARY_PATH="$libdir" "$work/c_api_example_pc" --device=emulated --disk="$work/disk"
LD_LIBRARY_PATH="$libdir" "$work/tiers_example_pc" --device=emulated --copy-gbps=0 \
  >"$work/tiers_pc.log" 2>&1 || { cat "$work/tiers_pc.log"; exit 1; }
echo "== check-install: passed (find_package and pkg-config consumers built and ran)" >&2
