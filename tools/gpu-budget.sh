#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Static budget of the CUDA kernels (docs/performance.md "GPU"): compiles each translation unit of
# cuda/ for the target architecture with the build's flags and `-Xptxas -v`, disassembles it with
# `cuobjdump -sass`, and prints one markdown row per kernel (tools/gpu_budget.py: registers,
# stack, spills, SASS instructions in total and per element of the steady-state loop, bytes per
# element against the minimum). Needs nvcc and cuobjdump (CUDA toolkit; else the one Triton ships);
# no GPU. Usage: tools/gpu-budget.sh [ARCH (default 90)] [OUTDIR (default: a temporary one)]
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
arch=${1:-90}
out=${2:-$(mktemp -d)}
mkdir -p "$out"
nvcc=${CUDACXX:-$(command -v nvcc || echo /usr/local/cuda/bin/nvcc)}
[ -x "$nvcc" ] || { echo "gpu-budget: nvcc not found (set CUDACXX)" >&2; exit 2; }
cuobjdump=${CUOBJDUMP:-$(command -v cuobjdump || true)}
[ -n "$cuobjdump" ] || [ ! -x "$(dirname "$nvcc")/cuobjdump" ] || cuobjdump=$(dirname "$nvcc")/cuobjdump
if [ -z "$cuobjdump" ]; then
  cuobjdump=$(python3 -c 'import os, triton; print(os.path.join(os.path.dirname(triton.__file__), "backends/nvidia/bin/cuobjdump"))' 2> /dev/null || true)
fi
[ -n "$cuobjdump" ] && [ -x "$cuobjdump" ] || { echo "gpu-budget: cuobjdump not found (set CUOBJDUMP)" >&2; exit 2; }
# The flags of the library build (cmake/GcompWarnings.cmake, cuda/CMakeLists.txt), device code only.
flags=(-cubin "-arch=sm_$arch" -O3 -DNDEBUG --fmad=false -std=c++20 -DGCOMP_HAVE_CUDA=1 -I "$root/include" -I "$root"
  -Xptxas -v)
for tu in elementwise_launch sparse_launch coded_launch device_codec rice_launch; do
  "$nvcc" "${flags[@]}" -o "$out/$tu.cubin" "$root/cuda/dispatch/$tu.cu" 2> "$out/$tu.ptxas"
done
"$nvcc" "${flags[@]}" -o "$out/device_ops.cubin" "$root/cuda/session/device_ops.cu" 2> "$out/device_ops.ptxas"
for f in "$out"/*.cubin; do
  "$cuobjdump" -sass "$f" > "${f%.cubin}.sass"
done
echo "<!-- tools/gpu-budget.sh $arch: $("$nvcc" --version | tail -1), git $(git -C "$root" rev-parse --short HEAD)$(git -C "$root" diff --quiet -- cuda include || echo '+changes') -->"
python3 "$root/tools/gpu_budget.py" "$out"
