#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Runs the GPU test binary under compute-sanitizer memcheck and racecheck; exits non-zero on any
# sanitizer error or test failure. Usage:
#   tools/run-gpu-sanitizer.sh [BUILD_DIR]        (default: build-cuda)
# Environment:
#   GCOMP_SANITIZER_FILTER  gtest filter (default: everything but the 1000003-element cases, which
#                           take long under the sanitizer; use '*' for the full suite)
#   COMPUTE_SANITIZER       path of compute-sanitizer (default: from PATH, else /usr/local/cuda/bin)
# Without a CUDA device there is nothing to check: the script says so and exits 0.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
build="${1:-${root}/build-cuda}"
bin="${build}/tests/gpu/gcomp_gpu_tests"
filter="${GCOMP_SANITIZER_FILTER:--*n1000003*}"

sanitizer="${COMPUTE_SANITIZER:-$(command -v compute-sanitizer || true)}"
if [[ -z "${sanitizer}" && -x /usr/local/cuda/bin/compute-sanitizer ]]; then
  sanitizer=/usr/local/cuda/bin/compute-sanitizer
fi

if [[ ! -x "${bin}" ]]; then
  echo "run-gpu-sanitizer: ${bin} not found; build it first:" >&2
  echo "  cmake -S ${root} -B ${build} -G Ninja -DGCOMP_CUDA=ON && cmake --build ${build} --target gcomp_gpu_tests" >&2
  exit 2
fi
if ! command -v nvidia-smi >/dev/null 2>&1 || ! nvidia-smi -L >/dev/null 2>&1; then
  echo "run-gpu-sanitizer: no CUDA device: nothing to check"
  exit 0
fi
if [[ -z "${sanitizer}" ]]; then
  echo "run-gpu-sanitizer: compute-sanitizer not found (set COMPUTE_SANITIZER)" >&2
  exit 2
fi

status=0
for tool in memcheck racecheck; do
  extra=()
  [[ "${tool}" == memcheck ]] && extra=(--leak-check full)
  [[ "${tool}" == racecheck ]] && extra=(--racecheck-report analysis)
  echo "=== compute-sanitizer --tool ${tool} ${bin} --gtest_filter=${filter}"
  if ! "${sanitizer}" --tool "${tool}" --error-exitcode 97 "${extra[@]}" "${bin}" --gtest_filter="${filter}"; then
    echo "=== ${tool}: FAILED" >&2
    status=1
  else
    echo "=== ${tool}: clean"
  fi
done
exit "${status}"
