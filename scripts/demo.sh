#!/usr/bin/env bash
# README command 1: install what is missing, build, and run the main demo on this machine's
# device (a GPU when one works, else the emulated device). Arguments go to the demo.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
KVTIER_BUILD_TESTS=OFF scripts/build.sh build -DKVTIER_BUILD_TESTS=OFF
exec build/examples/kvtier_long_context_demo "$@"
