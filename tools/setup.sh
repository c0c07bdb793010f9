#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Installs what gcomp needs to build and test, from the system package manager (Debian/Ubuntu).
# Idempotent: packages already present are not fetched again. The CUDA toolkit is optional and
# is not installed here (the CUDA build turns on when nvcc is found).
set -euo pipefail
pkgs=(cmake ninja-build g++ make pkg-config binutils libgtest-dev libopenmpi-dev openmpi-bin python3 libhwy-dev
  clang-format-14)  # clang-format-14: tools/format.sh and the CTest FormatCheck (GCOMP_FORMAT_CHECK=ON)
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
# Python: the extension gcomp._core is built by CMake with pybind11 for the python3 first on PATH
# (pybind11 from pip, so that it matches that interpreter, e.g. a pyenv one; Debian's
# pybind11-dev would pair with /usr/bin/python3 only), which needs that interpreter's Python.h
# (pyenv and python.org builds ship it; Debian's python3 needs python3-dev). NumPy and pytest run
# the Python tests.
# PyTorch (the DDP hook tests) with GCOMP_SETUP_TORCH=1, which tools/test.sh sets by default: from
# PyPI, where the Linux x86_64 wheel is the CUDA build (~2.8 GB of wheels with its nvidia-*
# dependencies, ~5 GB installed; it runs on CPU-only machines). Measured on the 2-core test
# machine: download 50 s, install 124 s.
pip_install() { python3 -m pip install --quiet --disable-pip-version-check "$@" 2> /dev/null \
  || python3 -m pip install --quiet --disable-pip-version-check --break-system-packages "$@"; }
if ! python3 -m pip --version > /dev/null 2>&1; then
  DEBIAN_FRONTEND=noninteractive ${sudo:-} apt-get install -y -qq --no-install-recommends python3-pip
fi
if ! python3 -c 'import os, sysconfig; raise SystemExit(not os.path.exists(os.path.join(sysconfig.get_paths()["include"], "Python.h")))'; then
  if [ "$(command -v python3)" = /usr/bin/python3 ]; then
    echo "gcomp setup: installing python3-dev (Python.h for the extension gcomp._core)"
    DEBIAN_FRONTEND=noninteractive ${sudo:-} apt-get install -y -qq --no-install-recommends python3-dev
  else
    echo "gcomp setup: $(command -v python3) has no Python.h; the Python extension will not be built" >&2
  fi
fi
# scikit-build-core: the build backend of `pip install .` (pyproject.toml; the PipInstall test builds
# with it offline, --no-build-isolation).
python3 -c "import numpy, pytest, pybind11, scikit_build_core" 2> /dev/null || pip_install numpy pytest pybind11 scikit-build-core
if [ "${GCOMP_SETUP_TORCH:-0}" = 1 ] && ! python3 -c "import torch" 2> /dev/null; then
  echo "gcomp setup: installing PyTorch from PyPI (~2.8 GB of wheels, a few minutes)"
  start=$(date +%s)
  pip_install torch
  echo "gcomp setup: PyTorch $(python3 -c 'import torch; print(torch.__version__)') installed in $(( $(date +%s) - start )) s"
fi
