#!/bin/bash
# Installs the Debian packages Bilevel needs (only those missing), then configures and builds ./build.
# Usage: cluster/setup.sh [BUILD_DIR]     (as root, or with sudo available, on Debian 12)
set -euo pipefail
cd "$(dirname "$0")/.."
build=${1:-build}
packages="g++ make cmake pkg-config petsc-dev slepc-dev libopenmpi-dev openmpi-bin libboost-program-options-dev
          libgtest-dev dataset-fashion-mnist libopenblas0 zlib1g-dev libbz2-dev liblzma-dev python3-petsc4py
          python3-mpi4py python3-numpy python3-matplotlib"
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
# Open MPI's mpirun adds a 10-line notice whenever a rank exits non-zero; our programs print their own
# one-line error on rank 0, so keep mpirun quiet about it (a user-level MCA setting; remove the line to undo).
mca=${HOME:-/root}/.openmpi/mca-params.conf
if ! grep -qs '^orte_execute_quiet' "$mca"; then
  mkdir -p "$(dirname "$mca")"
  printf '# added by bilevel cluster/setup.sh: programs print their own one-line errors\norte_execute_quiet = 1\n' >> "$mca"
fi
cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=Release > /dev/null
cmake --build "$build" -j"$(nproc)"
