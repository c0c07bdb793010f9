#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Installs what gcomp needs to build and test, from the system package manager (Debian/Ubuntu).
# Idempotent: packages already present are not fetched again. The CUDA toolkit is optional and
# is not installed here (the CUDA build turns on when nvcc is found).
set -euo pipefail
pkgs=(cmake ninja-build g++ make pkg-config binutils libgtest-dev libopenmpi-dev openmpi-bin python3)
missing=()
for p in "${pkgs[@]}"; do
  dpkg -s "$p" > /dev/null 2>&1 || missing+=("$p")
done
sudo=""
[ "$(id -u)" = 0 ] || sudo="sudo"
if [ ${#missing[@]} -gt 0 ]; then
  echo "gcomp setup: installing ${missing[*]}"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
# Python test dependencies (the Python package's tests); PyTorch only when asked for, since its
# PyPI wheel is ~3 GB: GCOMP_SETUP_TORCH=1 tools/setup.sh. Without torch the DDP tests skip.
pip_install() { python3 -m pip install --quiet --disable-pip-version-check "$@" 2> /dev/null \
  || python3 -m pip install --quiet --disable-pip-version-check --break-system-packages "$@"; }
if ! python3 -m pip --version > /dev/null 2>&1; then
  DEBIAN_FRONTEND=noninteractive ${sudo:-} apt-get install -y -qq --no-install-recommends python3-pip
fi
python3 -c "import numpy, pytest" 2> /dev/null || pip_install numpy pytest
if [ "${GCOMP_SETUP_TORCH:-0}" = 1 ]; then
  python3 -c "import torch" 2> /dev/null || pip_install torch
fi
