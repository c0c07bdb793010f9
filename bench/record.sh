#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Runs one benchmark command and stores its results under bench/results/ (docs/benchmarks.md):
#   NAME.json  the records (the command's own --json output: command, git sha, device, seed)
#   NAME.log   stdout + stderr, the table as printed
#   NAME.env   the exact command, date, git sha and status, host, CPU, load averages at the start and
#              the end, GPUs, driver, CUDA, MPI
# usage: bench/record.sh NAME COMMAND [ARGS...]      (the script appends --json bench/results/NAME.json)
# e.g.   bench/record.sh $(date +%F)-h200-comm-nccl build-cuda/bench/gcomp-bench comm --backend nccl -b 1M -e 1G
set -euo pipefail
if [[ $# -lt 2 ]]; then
  sed -n '3,9p' "$0" >&2
  exit 2
fi
root="$(cd "$(dirname "$0")/.." && pwd)"
name="$1"
shift
out="$root/bench/results"
mkdir -p "$out"
{
  echo "command: $* --json bench/results/$name.json"
  echo "cwd: $PWD"
  echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo "git: $(git -C "$root" rev-parse HEAD 2>/dev/null || echo unknown)$(git -C "$root" diff --quiet 2>/dev/null || echo ' (dirty)')"
  echo "host: $(hostname)"
  echo "cpu: $(grep -m1 'model name' /proc/cpuinfo 2>/dev/null | cut -d: -f2- | sed 's/^ //') x $(nproc)"
  echo "load: $(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null) (1, 5, 15 min averages at the start; other processes share the CPUs)"
  if command -v nvidia-smi >/dev/null 2>&1; then
    nvidia-smi --query-gpu=index,name,driver_version,memory.total,clocks.max.sm --format=csv,noheader 2>/dev/null | sed 's/^/gpu: /' || true
    nvidia-smi topo -m 2>/dev/null | sed 's/^/topo: /' || true
  fi
  if command -v nvcc >/dev/null 2>&1; then echo "nvcc: $(nvcc --version | tail -1)"; fi
  if command -v mpiexec >/dev/null 2>&1; then echo "mpi: $(mpiexec --version 2>/dev/null | head -1)"; fi
} > "$out/$name.env"
set +e
"$@" --json "$out/$name.json" 2>&1 | tee "$out/$name.log"
rc=${PIPESTATUS[0]}
echo "load_end: $(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null)" >> "$out/$name.env"
echo "exit: $rc" >> "$out/$name.env"
exit "$rc"
