#!/bin/bash
# Installs the Debian packages Bilevel needs (only those missing), then configures and builds ./build.
# Usage: cluster/setup.sh [BUILD_DIR]     (as root, or with sudo available, on Debian 12)
set -euo pipefail
cd "$(dirname "$0")/.."
build=${1:-build}
packages="g++ make cmake pkg-config petsc-dev slepc-dev libopenmpi-dev openmpi-bin libboost-program-options-dev
          libgtest-dev dataset-fashion-mnist libopenblas0 zlib1g-dev libbz2-dev liblzma-dev"
missing=""
for p in $packages; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing="$missing $p"
done
if [ -n "$missing" ]; then
  echo "setup: installing$missing"
  sudo=""; [ "$(id -u)" -eq 0 ] || sudo=sudo
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends $missing > /dev/null
fi
cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=Release > /dev/null
cmake --build "$build" -j"$(nproc)"
