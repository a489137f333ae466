#!/usr/bin/env bash
# Installs the Debian 12 packages kvtier needs to build, test and benchmark, if missing.
# Safe to rerun: it installs nothing when everything is present. Needs root or sudo.
set -euo pipefail

packages=(
  build-essential cmake ninja-build pkg-config git
  libabsl-dev librocksdb-dev liburing-dev libzstd-dev libxxhash-dev libssl-dev
  libgtest-dev libgmock-dev
  libcli11-dev libcpp-httplib-dev   # the kvtier CLI (tools/) and the metrics endpoint; flags everywhere
  nlohmann-json3-dev         # JSON: the trace reader, safetensors header, CLI, benchmark output, /stats
  clang libclang-rt-14-dev   # TSan build, -Wthread-safety checks, libFuzzer (scripts/fuzz.sh)
  fio                        # the disk benchmark's ceiling
  redis-server redis-tools   # the remote tier's tests and bench start a local Redis Cluster
  openssl                    # the remote tier's TLS test makes its CA and keys
  gnuplot-nox                # bench eviction's PNG plot
  pybind11-dev python3-dev python3-numpy   # the Python module (bindings/python/)
  python3-pip python3-setuptools python3-wheel   # pip install bindings/python (check-install.sh)
)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi

echo "kvtier: installing missing packages: ${missing[*]}" >&2
sudo=""
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null || { echo "kvtier: need root or sudo to install ${missing[*]}" >&2; exit 1; }
  sudo="sudo"
fi
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
$sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
