#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# The test command: installs dependencies (PyTorch included, see below), configures a clean build
# (CUDA compiled when nvcc is present; GPU tests skip without a device), builds and runs the whole
# suite with ctest.
# Usage: tools/test.sh [build-dir]   (default: build-test)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build=${1:-$root/build-test}
# PyTorch is installed by default so that the DDP hook tests (2 gloo processes on CPU) run;
# GCOMP_SETUP_TORCH=0 opts out (they then skip). When it was asked for, a torch that cannot be
# imported fails the Python tests instead of skipping them (GCOMP_REQUIRE_TORCH).
export GCOMP_SETUP_TORCH=${GCOMP_SETUP_TORCH:-1}
if [ "$GCOMP_SETUP_TORCH" = 1 ]; then export GCOMP_REQUIRE_TORCH=1; fi
"$root/tools/setup.sh"
jobs=$(nproc 2>/dev/null || echo 2)
cmake -S "$root" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DGCOMP_CUDA=AUTO -DGCOMP_MPI=AUTO -DGCOMP_WERROR=ON \
  -DGCOMP_FORMAT_CHECK=ON
cmake --build "$build" -j "$jobs"
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
ctest --test-dir "$build" -j "$jobs" --output-on-failure --label-exclude "large|slow"
