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
if [ ${#missing[@]} -gt 0 ]; then
  sudo=""
  [ "$(id -u)" = 0 ] || sudo="sudo"
  echo "gcomp setup: installing ${missing[*]}"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
