#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Fills <repo>/.carry (git-ignored) with what a GPU machine without a package registry needs to build
# gcomp's GPU checks, for tools/gpu-check.sh (docs/gpu.md "Checking on a GPU machine"):
#   .carry/googletest/           GoogleTest sources (from GCOMP_GTEST_SOURCE_DIR or /usr/src/googletest,
#                                which Debian's libgtest-dev installs): gpu-check.sh builds them
#   .carry/nccl/include/nccl.h   the NCCL header of this toolkit, used only if the GPU machine's toolkit
#                                has none (the library itself comes from its PyTorch, nvidia-nccl)
# Idempotent; prints the size. Usage: tools/prepare-gpu-carry.sh
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
carry=$root/.carry
src=${GCOMP_GTEST_SOURCE_DIR:-/usr/src/googletest}
if [ ! -f "$src/CMakeLists.txt" ]; then
  echo "prepare-gpu-carry: no GoogleTest sources at $src (apt-get install libgtest-dev, or set GCOMP_GTEST_SOURCE_DIR)" >&2
  exit 1
fi
git -C "$root" check-ignore -q .carry/x || {
  echo "prepare-gpu-carry: .carry/ is not ignored by git in $root (see .gitignore)" >&2
  exit 1
}
mkdir -p "$carry"
rm -rf "$carry/googletest.tmp"
cp -r "$src" "$carry/googletest.tmp"
rm -rf "$carry/googletest"
mv "$carry/googletest.tmp" "$carry/googletest"
nvcc=${CUDACXX:-$(command -v nvcc || echo /usr/local/cuda/bin/nvcc)}
header=$(dirname "$nvcc")/../include/nccl.h
if [ -f "$header" ]; then
  mkdir -p "$carry/nccl/include"
  cp "$header" "$carry/nccl/include/nccl.h"
fi
echo "prepare-gpu-carry: $(du -sh "$carry" | cut -f1) in $carry:"
(cd "$carry" && find . -maxdepth 3 -name CMakeLists.txt -path './googletest/CMakeLists.txt' -o -name nccl.h) | sed 's/^/  /'
echo "carry it with the device tool: carry: [\".carry\"] (docs/gpu.md)"
