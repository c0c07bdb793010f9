#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# One command for docs/results/reproduction.md: installs dependencies (and matplotlib), builds
# gcomp-train from a clean build directory, runs every experiment on the shipped datasets, draws the
# plots and writes the report. Usage: tools/reproduce.sh [--datasets a,b,...]
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build="$root/build-reproduce"
"$root/tools/setup.sh"
python3 -c "import matplotlib" 2> /dev/null || python3 -m pip install --quiet matplotlib
rm -rf "$build"
cmake -S "$root" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DGCOMP_CUDA=OFF -DGCOMP_BUILD_TESTS=OFF -DGCOMP_WERROR=ON
cmake --build "$build" -j "$(nproc)" --target gcomp-train
rm -rf "$root/docs/results/data" "$root/docs/results/plots"
python3 "$root/tools/reproduce.py" --train "$build/tools/gcomp-train" --out "$root/docs/results" "$@"
