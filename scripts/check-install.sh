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

# The Python package, imported from outside the source tree with nothing but the installed
# directory on its path: an engine on the emulated device stores two blocks, matches them and
# loads them back byte for byte.
check_python() {  # SITE_DIR HOW_INSTALLED
  (cd "$work" && env -u PYTHONHOME PYTHONPATH="$1" PYTHONNOUSERSITE=1 PYTHONDONTWRITEBYTECODE=1 \
     "$python" - "$1" "$2" <<'PY'
import os, sys
import numpy as np
import kvtier
site, how = sys.argv[1], sys.argv[2]
where = os.path.dirname(os.path.realpath(kvtier.__file__))
assert where == os.path.join(os.path.realpath(site), "kvtier"), f"kvtier imported from {where}"
with kvtier.Engine.open(layers=2, kv_heads=2, head_dim=16, dtype="fp16", block_tokens=16,
                        model="check-install@1", host_tier_bytes=64 << 12,
                        device="emulated") as engine:
    tokens = np.arange(32, dtype=np.int32)
    kv = (np.arange(2 * np.prod(engine.block_shape)) % 251).astype(engine.dtype)
    kv = kv.reshape((2,) + engine.block_shape)
    engine.store("default", tokens, kv)
    matched, keys = engine.match("default", tokens)
    assert matched == 32 and len(keys) == 2, (matched, keys)
    back = engine.load("default", keys)
    assert np.array_equal(back.view(np.uint16), kv.view(np.uint16)), "loaded bytes differ"
print(f"check-install: python ({how}): kvtier from {where}: 2 blocks stored, matched, loaded")
PY
  ) || { echo "check-install: the Python package installed by $2 does not work" >&2; exit 1; }
}

if compgen -G "$build/bindings/python/kvtier/_kvtier*.so" >/dev/null; then
  python="$(sed -n 's/^_Python3_EXECUTABLE:INTERNAL=//p' "$build/CMakeCache.txt")"
  python="${python:-/usr/bin/python3}"
  echo "== check-install: python: the package cmake --install put under $prefix" >&2
  ext="$(find "$prefix" -name '_kvtier*.so' -print -quit)"
  [ -n "$ext" ] || { echo "check-install: no _kvtier extension installed" >&2; exit 1; }
  site="$(dirname "$(dirname "$ext")")"
  case "$site" in
    "$prefix"/lib*/python3*/*-packages) ;;
    *) echo "check-install: Python package installed outside lib/python3*/*-packages: $site" >&2
       exit 1 ;;
  esac
  for f in bindings/python/kvtier/*.py; do
    [ -f "$site/kvtier/${f##*/}" ] || { echo "check-install: $f is not installed" >&2; exit 1; }
  done
  check_python "$site" "cmake --install"

  echo "== check-install: python: pip install bindings/python (offline, extension from $build)" >&2
  "$python" -m pip --version >/dev/null 2>&1 ||
    { echo "check-install: no pip for $python (scripts/install-deps.sh installs python3-pip)" >&2
      exit 1; }
  KVTIER_BUILD_DIR="$build" "$python" -m pip install --no-build-isolation --no-deps --no-index \
    --disable-pip-version-check --root-user-action=ignore --target "$work/pip-site" \
    bindings/python >"$work/pip.log" 2>&1 || { cat "$work/pip.log"; exit 1; }
  check_python "$work/pip-site" "pip install"
else
  echo "== check-install: python: skipped ($build has no Python module)" >&2
fi
echo "== check-install: passed (find_package and pkg-config consumers built and ran)" >&2
