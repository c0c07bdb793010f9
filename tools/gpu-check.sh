#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# gpu-check: everything gcomp checks on a GPU machine, in one command, within 9 minutes of wall
# time (--quick: 4), on a fresh 16-core machine with the repository and the GoogleTest sources
# carried (docs/gpu.md "Checking on a GPU machine"). Logs, JSON reports and a one-screen summary go
# to OUTDIR.
#
# Usage: tools/gpu-check.sh [options] OUTDIR
#   --quick             the 4-minute plan (filtered tests, memcheck, one benchmark size)
#   --dry-run           print the plan (stages, time caps, commands) and exit 0; touches nothing
#   --stages A,B,...    run only these stages (probe, configure and build always run first, unless
#                       --no-build), e.g. --stages memcheck,racecheck to rerun two sanitizers
#   --no-build          use the build directory as it is (no configure, no build)
#   --build-dir DIR     build directory (default: <repo>/build-gpucheck; kept between runs)
#   --jobs N            build and test parallelism (default: the number of cores)
#   --budget S          wall-time budget in seconds (default 540; --quick 240)
#   --sanitizer-filter F  gtest filter of the compute-sanitizer stages (default: see below)
# Environment: GCOMP_GTEST_SOURCE_DIR (GoogleTest sources; default <repo>/.carry/googletest when
# present, see tools/prepare-gpu-carry.sh), GCOMP_NCCL_LIBRARY (a libnccl.so.2; default: the
# toolkit's, else the one of python3's nvidia-nccl package), CUDACXX (nvcc), PYTHON (python3).
#
# Stages, in order; each has its own time cap, and all share the run's deadline: a stage is
# started only while enough time is left, else it is reported as not reached.
#   probe        nvcc builds tools/gpu_probe.cu and runs it: device memory, a kernel, a copy back,
#                every value checked. No usable device: exit 2 at once (never "clean").
#   configure    CMake, Ninja, Release, only the detected architecture, MPI off.
#   build        the GPU test binaries, gcomp-bench and the Python extension, -j N.
#   gpu-tests    gcomp_gpu_tests once per shard (GTEST_TOTAL_SHARDS, in parallel), not once per
#                case; JSON per shard. Fails on any failure, and when every test skipped.
#   fault-tests  gcomp_cuda_fault_tests (constructor error paths on a fake runtime; no device).
#   memcheck, racecheck, synccheck, initcheck
#                compute-sanitizer over a small gtest filter, each bounded in time.
#   bench-codecs gcomp-bench codecs, one process per codec (partial results survive a cap).
#   torch-peers  bench/peers/torch_codecs.py on the CUDA device, same sizes and seed.
#   bench-nccl   gcomp-bench comm --backend nccl with 2 ranks on the one GPU (two processes,
#                distinct NCCL_HOSTIDs, TCP bootstrap on 127.0.0.1).
#   ddp-cuda     tests/python/test_ddp_cuda.py (the DDP hook with backend='cuda'); JUnit XML.
#   large        gcomp_gpu_large_tests (n > 2^31), full plan only, last.
# Exit: 0 every planned stage passed; 1 a stage failed, timed out, was blocked (a prerequisite
# missing) or was not reached, or every GPU test skipped; 2 no usable CUDA device; 64 usage.
set -uo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
quick=0
dry=0
only=""
no_build=0
build=""
jobs=$(nproc 2> /dev/null || echo 4)
budget=""
san_filter=""
out=""

usage() { sed -n '3,43p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; }
orig_args="$*"

while [ $# -gt 0 ]; do
  case "$1" in
    --quick) quick=1 ;;
    --dry-run) dry=1 ;;
    --stages) only=${2:?--stages needs a list}; shift ;;
    --no-build) no_build=1 ;;
    --build-dir) build=${2:?--build-dir needs a directory}; shift ;;
    --jobs) jobs=${2:?--jobs needs a number}; shift ;;
    --budget) budget=${2:?--budget needs seconds}; shift ;;
    --sanitizer-filter) san_filter=${2:?--sanitizer-filter needs a filter}; shift ;;
    -h | --help) usage; exit 0 ;;
    -*) echo "gpu-check: unknown option $1" >&2; usage >&2; exit 64 ;;
    *) [ -z "$out" ] || { echo "gpu-check: one OUTDIR only (got '$out' and '$1')" >&2; exit 64; }; out=$1 ;;
  esac
  shift
done
[ -n "$out" ] || { echo "gpu-check: OUTDIR is missing" >&2; usage >&2; exit 64; }
case "$jobs" in '' | *[!0-9]*) echo "gpu-check: --jobs must be a positive number" >&2; exit 64 ;; esac
[ "$jobs" -ge 1 ] || { echo "gpu-check: --jobs must be a positive number" >&2; exit 64; }
if [ -z "$budget" ]; then budget=$([ $quick = 1 ] && echo 240 || echo 540); fi
case "$budget" in '' | *[!0-9]*) echo "gpu-check: --budget must be seconds" >&2; exit 64 ;; esac
build=${build:-$root/build-gpucheck}
mode=$([ $quick = 1 ] && echo quick || echo full)

# ------------------------------------------------------------------------------------ the plan
# name | cap in the full plan | cap in the quick plan (0: not in it) | least seconds worth starting
all_stages=(probe configure build gpu-tests fault-tests memcheck bench-codecs torch-peers bench-nccl ddp-cuda
            racecheck synccheck initcheck large)
declare -A cap_full=([probe]=45 [configure]=60 [build]=200 [gpu-tests]=150 [fault-tests]=30 [memcheck]=60
  [bench-codecs]=90 [torch-peers]=45 [bench-nccl]=45 [ddp-cuda]=45 [racecheck]=45 [synccheck]=30 [initcheck]=45
  [large]=120)
declare -A cap_quick=([probe]=30 [configure]=45 [build]=150 [gpu-tests]=60 [fault-tests]=20 [memcheck]=30
  [bench-codecs]=30 [torch-peers]=0 [bench-nccl]=0 [ddp-cuda]=0 [racecheck]=0 [synccheck]=0 [initcheck]=0 [large]=0)
declare -A least=([probe]=10 [configure]=10 [build]=30 [gpu-tests]=20 [fault-tests]=5 [memcheck]=15
  [bench-codecs]=15 [torch-peers]=15 [bench-nccl]=20 [ddp-cuda]=20 [racecheck]=15 [synccheck]=10 [initcheck]=15
  [large]=60)

cap_of() { if [ $quick = 1 ]; then echo "${cap_quick[$1]}"; else echo "${cap_full[$1]}"; fi; }
planned() {  # in this mode's plan and in --stages (probe, configure, build: always, unless --no-build)
  [ "$(cap_of "$1")" -gt 0 ] || return 1
  case "$1" in
    probe) return 0 ;;
    configure | build) [ $no_build = 0 ] ;;
    *) [ -z "$only" ] || [[ ",$only," == *",$1,"* ]] ;;
  esac
}
if [ -n "$only" ]; then
  IFS=, read -r -a _wanted <<< "$only"
  for s in "${_wanted[@]}"; do
    [ -n "${cap_full[$s]+x}" ] || { echo "gpu-check: unknown stage '$s' (stages: ${all_stages[*]})" >&2; exit 64; }
  done
fi

# Gtest filters. The sanitizers take one codec layout (4097 elements, one seed: every kernel runs,
# a block boundary and a partial last group included) and a few session cases.
quick_test_filter='-*n1000003*:*n5_0_4097_31_100000*:*_4096_1000_7'
default_san_filter='AllCodecs/GpuCodecs.*/*_n4097_s0:SmallLayouts/GpuCodecs.*/*_n33_s0:GpuCodecBehaviour.EmptyLayoutPayloadsMatchCpu:GpuCodecBehaviour.Corrupt*:AllAlgorithms/GpuSessionTest.*/diana_23_1_40:AllAlgorithms/GpuSessionTest.*/compressed_gd_spherical_23_1_40:AllAlgorithms/GpuSessionTest.*/dist_ef_sgdm_sharded_23_1_40:AllAlgorithms/GpuSessionTest.*/ef_sgd_topk_23_1_40'
shared_mem_filter='AllCodecs/GpuCodecs.EncodeMatchesCpuBytes/*_n4097_s0:AllCodecs/GpuCodecs.DecodeReduceOfThreePayloadsMatchesCpu/*_n4097_s0:AllCodecs/GpuCodecs.ErrorFeedbackMatchesCpu/*_n4097_s0'
san_filter_of() {
  if [ -n "$san_filter" ]; then echo "$san_filter"; return; fi
  case "$1" in
    memcheck | initcheck) if [ $quick = 1 ]; then echo "$shared_mem_filter"; else echo "$default_san_filter"; fi ;;
    *) echo "$shared_mem_filter" ;;
  esac
}
# Benchmarks: gcomp-bench's default codecs; sizes in fp32 bytes.
bench_codecs=("dither:levels=4,norm=l2,block=512" "dither:levels=1,norm=linf,block=4096" "terngrad"
  "terngrad:clip=2.5" "natdither:levels=3,norm=l2" "sign" "sign:block=4096" "topk:ratio=0.01" "topk:ratio=0.001"
  "randk:ratio=0.01" "natural" "identity" "sdither:levels=1,norm=l2" "sdither:levels=4,norm=linf,block=4096"
  "spherical" "spherical:block=8,bits=4" "grid:step=0.00390625,bits=16")
if [ $quick = 1 ]; then
  bench_sizes=(-b 64M -e 64M -f 4 -n 10 -w 3)
  bench_codecs=("dither:levels=4,norm=l2,block=512" "sign" "topk:ratio=0.01" "randk:ratio=0.01" "identity")
else
  bench_sizes=(-b 16M -e 256M -f 4 -n 10 -w 3)
fi
nccl_args=(-b 1M -e 64M -f 4 -n 5 -w 2 --codecs 'dither:levels=4,norm=l2,block=512;sign;topk:ratio=0.01')

describe() {
  case "$1" in
    probe) echo "nvcc -gencode arch=compute_75,code=compute_75 tools/gpu_probe.cu; run it (a kernel, values checked)" ;;
    configure) echo "cmake -G Ninja Release GCOMP_CUDA=ON CMAKE_CUDA_ARCHITECTURES=<probed> GCOMP_MPI=OFF GCOMP_GTEST_SOURCE_DIR" ;;
    build) echo "cmake --build -j $jobs: gcomp_gpu_tests gcomp_cuda_fault_tests gcomp-bench gcomp_python$([ $quick = 1 ] || echo ' gcomp_gpu_large_tests')" ;;
    gpu-tests) echo "gcomp_gpu_tests in $(shards) shards at once, --gtest_output=json$([ $quick = 1 ] && echo " --gtest_filter=$quick_test_filter")" ;;
    fault-tests) echo "gcomp_cuda_fault_tests --gtest_output=json" ;;
    memcheck) echo "compute-sanitizer --tool memcheck --leak-check full, filter $(san_filter_of memcheck | cut -c1-60)..." ;;
    racecheck | synccheck) echo "compute-sanitizer --tool $1, filter $(san_filter_of "$1" | cut -c1-60)..." ;;
    initcheck) echo "compute-sanitizer --tool initcheck, filter $(san_filter_of initcheck | cut -c1-60)..." ;;
    bench-codecs) echo "gcomp-bench codecs ${bench_sizes[*]}, ${#bench_codecs[@]} codecs, one process each, JSON each" ;;
    torch-peers) echo "python3 bench/peers/torch_codecs.py (CUDA device) ${bench_sizes[*]} --json" ;;
    bench-nccl) echo "2 x gcomp-bench comm --backend nccl ${nccl_args[*]} (RANK/WORLD_SIZE=2, NCCL_HOSTID per rank)" ;;
    ddp-cuda) echo "python3 -m pytest tests/python/test_ddp_cuda.py --junitxml (the one-GPU hook test must run)" ;;
    large) echo "gcomp_gpu_large_tests --gtest_output=json (n > 2^31)" ;;
  esac
}
shards() { local s=$((jobs / 2)); [ $s -ge 1 ] || s=1; [ $s -le 8 ] || s=8; echo $s; }

if [ $dry = 1 ]; then
  echo "gpu-check plan: $mode, budget ${budget} s, build dir $build, jobs $jobs, output $out"
  printf '  %-13s %6s  %s\n' stage cap_s what
  sum=0
  for s in "${all_stages[@]}"; do
    if planned "$s"; then
      printf '  %-13s %6s  %s\n' "$s" "$(cap_of "$s")" "$(describe "$s")"
      sum=$((sum + $(cap_of "$s")))
    else
      printf '  %-13s %6s  %s\n' "$s" "-" "not in this plan"
    fi
  done
  echo "  caps add up to $sum s; the budget of $budget s ends the run first: later stages are then reported as not reached"
  exit 0
fi

# ------------------------------------------------------------------------------------ running
mkdir -p "$out"/logs "$out"/tests "$out"/sanitize "$out"/bench "$out"/probe "$out"/ddp || {
  echo "gpu-check: cannot create $out" >&2
  exit 1
}
out=$(cd "$out" && pwd)
stages_tsv=$out/stages.tsv
: > "$stages_tsv"
start=$SECONDS
deadline=$((start + budget - 10))  # 10 s for the summary
PY=${PYTHON:-$(command -v python3 || true)}
declare -A result

record() {  # name status seconds note
  result[$1]=$2
  printf '%s\t%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$(cap_of "$1")" "$4" >> "$stages_tsv"
  printf 'gpu-check: %-13s %-11s %4ss  %s\n' "$1" "$2" "$3" "$4"
}

finish() {
  local code=$1
  for s in "${all_stages[@]}"; do
    if [ -z "${result[$s]+x}" ]; then
      if ! planned "$s"; then
        printf '%s\t%s\t0\t0\t%s\n' "$s" "OFF" "not in this plan" >> "$stages_tsv"
      elif [ "$code" = 2 ]; then
        printf '%s\t%s\t0\t%s\t%s\n' "$s" "NOT-RUN" "$(cap_of "$s")" "no usable CUDA device" >> "$stages_tsv"
      else
        printf '%s\t%s\t0\t%s\t%s\n' "$s" "NOT-REACHED" "$(cap_of "$s")" "the budget ran out first" >> "$stages_tsv"
        [ "$code" = 0 ] && code=1
      fi
    fi
  done
  {
    echo "mode=$mode"
    echo "budget_s=$budget"
    echo "elapsed_s=$((SECONDS - start))"
    echo "exit=$code"
    echo "git_sha=$(git -C "$root" rev-parse HEAD 2> /dev/null || echo unknown)"
    echo "git_dirty=$(git -C "$root" status --porcelain 2> /dev/null | grep -c . || true)"
    echo "host=$(uname -n) cores=$(nproc 2> /dev/null || echo ?)"
    echo "command=tools/gpu-check.sh $orig_args"
  } > "$out/run.env"
  if [ -n "$PY" ] && "$PY" "$root/tools/gpu_check_report.py" "$out" > /dev/null 2> "$out/logs/report.log"; then
    cat "$out/summary.txt"
  else
    echo "gpu-check: (no python3 for the report; stages:)"
    column -t -s $'\t' "$stages_tsv" 2> /dev/null || cat "$stages_tsv"
  fi
  exit "$code"
}

# Runs one stage: `stage NAME FUNCTION`. The function gets the seconds it may use in $limit and
# returns 0 pass, 1 fail, 3 blocked (a prerequisite is missing; it sets $note), 124 timeout.
note=""
stage() {
  local name=$1 fn=$2
  planned "$name" || return 0
  local left=$((deadline - SECONDS))
  if [ $left -lt "${least[$name]}" ]; then
    record "$name" NOT-REACHED 0 "${left} s left, needs ${least[$name]} s"
    return 0
  fi
  limit=$(cap_of "$name")
  [ "$limit" -le "$left" ] || limit=$left
  note=""
  local t0=$SECONDS rc=0
  "$fn" > "$out/logs/$name.log" 2>&1 || rc=$?
  local took=$((SECONDS - t0))
  case $rc in
    0) record "$name" PASS "$took" "$note" ;;
    3) record "$name" BLOCKED "$took" "$note" ;;
    124 | 137) record "$name" TIMEOUT "$took" "cap ${limit} s; ${note}" ;;
    *) record "$name" FAIL "$took" "${note:-exit $rc, see logs/$name.log}" ;;
  esac
}
passed() { [ "${result[$1]:-}" = PASS ]; }
bounded() { timeout --kill-after=5 "$1" "${@:2}"; }  # bounded SECONDS CMD...

nvcc=${CUDACXX:-$(command -v nvcc || true)}
[ -n "$nvcc" ] || { [ -x /usr/local/cuda/bin/nvcc ] && nvcc=/usr/local/cuda/bin/nvcc; }
cuda_home=""
[ -n "$nvcc" ] && cuda_home=$(cd "$(dirname "$nvcc")/.." && pwd)
cc=""

# -- probe
do_probe() {
  if [ -z "$nvcc" ]; then
    note="no usable CUDA device: no CUDA compiler (nvcc) was found, so no CUDA program can be built or run here"
    return 2
  fi
  echo "+ $nvcc -O2 -std=c++17 -gencode arch=compute_75,code=compute_75 -o $out/probe/gcomp-gpu-probe tools/gpu_probe.cu"
  if ! bounded "$limit" "$nvcc" -O2 -std=c++17 -gencode arch=compute_75,code=compute_75 \
    -o "$out/probe/gcomp-gpu-probe" "$root/tools/gpu_probe.cu"; then
    note="nvcc could not build tools/gpu_probe.cu (logs/probe.log)"
    return 1
  fi
  local rc=0
  bounded 30 "$out/probe/gcomp-gpu-probe" > "$out/probe/device.json" 2> "$out/probe/stderr.txt" || rc=$?
  cat "$out/probe/stderr.txt"
  if [ $rc = 0 ]; then
    cc=$(sed -n 's/.*"cc": "\([0-9]*\)".*/\1/p' "$out/probe/device.json")
    note="$(sed -n 's/.*"name": "\([^"]*\)".*/\1/p' "$out/probe/device.json"), sm_$cc"
    return 0
  fi
  note=$(head -c 300 "$out/probe/stderr.txt" | tr '\n' ' ' | sed 's/^gcomp-gpu-probe: //; s/ *$//')
  [ $rc = 2 ] && return 2
  return 1
}
t0=$SECONDS
limit=$(cap_of probe)
prc=0
do_probe > "$out/logs/probe.log" 2>&1 || prc=$?
if [ $prc = 2 ]; then
  record probe NO-DEVICE $((SECONDS - t0)) "$note"
  echo "gpu-check: ${note}" >&2
  echo "gpu-check: nothing was checked (exit 2); this is not a clean run" >&2
  finish 2
elif [ $prc != 0 ]; then
  record probe FAIL $((SECONDS - t0)) "$note"
  finish 1
fi
record probe PASS $((SECONDS - t0)) "$note"

# -- configure
gtest_src=${GCOMP_GTEST_SOURCE_DIR:-}
[ -z "$gtest_src" ] && [ -f "$root/.carry/googletest/CMakeLists.txt" ] && gtest_src=$root/.carry/googletest
nccl_lib=${GCOMP_NCCL_LIBRARY:-}
nccl_inc=""
find_nccl() {
  # The toolkit's NCCL first (CMake finds it itself), else python3's nvidia-nccl package (PyTorch's).
  if [ -f "$cuda_home/include/nccl.h" ] && ls "$cuda_home"/lib*/libnccl.so* > /dev/null 2>&1; then return 0; fi
  [ -n "$PY" ] || return 0
  local dir
  dir=$("$PY" -c 'import importlib.util as u; s = u.find_spec("nvidia.nccl"); print(s.submodule_search_locations[0] if s else "")' 2> /dev/null || true)
  if [ -n "$dir" ] && [ -f "$dir/lib/libnccl.so.2" ]; then
    [ -n "$nccl_lib" ] || nccl_lib=$dir/lib/libnccl.so.2
    if [ -f "$dir/include/nccl.h" ]; then nccl_inc=$dir/include; fi
  fi
  if [ -z "$nccl_inc" ] && [ -f "$root/.carry/nccl/include/nccl.h" ]; then nccl_inc=$root/.carry/nccl/include; fi
}
do_configure() {
  find_nccl
  local args=(-S "$root" -B "$build" -DCMAKE_BUILD_TYPE=Release -DGCOMP_CUDA=ON "-DCMAKE_CUDA_COMPILER=$nvcc"
    "-DCMAKE_CUDA_ARCHITECTURES=${cc:-90}" -DGCOMP_MPI=OFF -DGCOMP_WERROR=OFF -DGCOMP_BUILD_TESTS=ON)
  command -v ninja > /dev/null && args+=(-G Ninja)
  [ -n "$gtest_src" ] && args+=("-DGCOMP_GTEST_SOURCE_DIR=$gtest_src")
  [ -n "$PY" ] && args+=("-DPython3_EXECUTABLE=$PY")
  if [ -n "$nccl_inc" ] && [ -n "$nccl_lib" ]; then
    args+=("-DGCOMP_NCCL_INCLUDE_DIR=$nccl_inc" "-DGCOMP_NCCL_LIBRARY=$nccl_lib")
  fi
  command -v ccache > /dev/null && args+=(-DCMAKE_CXX_COMPILER_LAUNCHER=ccache -DCMAKE_CUDA_COMPILER_LAUNCHER=ccache)
  echo "+ cmake ${args[*]}"
  bounded "$limit" cmake "${args[@]}" || { note="cmake failed (logs/configure.log)"; return 1; }
  note="sm_${cc:-90}, gtest from ${gtest_src:-an installed package}"
  grep -q "nccl communicator on" "$out/logs/configure.log" && note="$note, nccl on" || note="$note, nccl OFF"
  grep -q "Python extension gcomp._core for" "$out/logs/configure.log" && note="$note, python module on" ||
    note="$note, python module OFF"
  return 0
}
stage configure do_configure
configured=0
[ -f "$build/CMakeCache.txt" ] && configured=1

have_target() { grep -q "Python extension gcomp._core for" "$out/logs/configure.log" 2> /dev/null; }
do_build() {
  [ $configured = 1 ] || { note="not configured"; return 3; }
  local targets=(gcomp_gpu_tests gcomp_cuda_fault_tests gcomp-bench)
  have_target && targets+=(gcomp_python)
  [ $quick = 1 ] || targets+=(gcomp_gpu_large_tests)
  local keep=()
  command -v ninja > /dev/null && keep=(-- -k 0)
  echo "+ cmake --build $build -j $jobs --target ${targets[*]}"
  bounded "$limit" cmake --build "$build" -j "$jobs" --target "${targets[@]}" "${keep[@]}"
}
stage build do_build

gpu_bin=$build/tests/gpu/gcomp_gpu_tests
fault_bin=$build/tests/gpu/gcomp_cuda_fault_tests
large_bin=$build/tests/gpu/gcomp_gpu_large_tests
bench_bin=$build/bench/gcomp-bench

# -- GPU tests: one process per shard, all shards at once (the CPU oracle is the long part).
do_gpu_tests() {
  [ -x "$gpu_bin" ] || { note="$gpu_bin was not built"; return 3; }
  local n
  n=$(shards)
  local filter=()
  [ $quick = 1 ] && filter=("--gtest_filter=$quick_test_filter")
  local pids=() i rc=0
  rm -f "$out"/tests/gpu_tests.shard*.json
  for ((i = 0; i < n; ++i)); do
    env GTEST_TOTAL_SHARDS="$n" GTEST_SHARD_INDEX="$i" timeout --kill-after=5 "$limit" "$gpu_bin" "${filter[@]}" \
      "--gtest_output=json:$out/tests/gpu_tests.shard$i.json" > "$out/logs/gpu-tests.shard$i.log" 2>&1 &
    pids+=($!)
  done
  for i in "${!pids[@]}"; do
    local r=0
    wait "${pids[$i]}" || r=$?
    echo "shard $i: exit $r (logs/gpu-tests.shard$i.log)"
    if [ $r = 124 ] || [ $r = 137 ]; then rc=124; elif [ $r != 0 ] && [ $rc = 0 ]; then rc=1; fi
  done
  grep -h "^\[  FAILED  \]" "$out"/logs/gpu-tests.shard*.log | sort -u | head -20
  gtest_counts "$out"/tests/gpu_tests.shard*.json
  # Every test skipped means nothing was checked: a failure, not a pass.
  if [ $rc = 0 ] && [ "${counts_run:-0}" = 0 ]; then
    note="every test skipped ($note)"
    return 1
  fi
  return $rc
}
# Sets note to "P passed, F failed, S skipped of T" and counts_run to P + F, from gtest JSON files.
gtest_counts() {
  counts_run=0
  [ -n "$PY" ] || return 0
  local line
  line=$("$PY" "$root/tools/gpu_check_report.py" --gtest-counts "$@")
  counts_run=${line%% *}
  note=${line#* }
}
stage gpu-tests do_gpu_tests

do_fault_tests() {
  [ -x "$fault_bin" ] || { note="$fault_bin was not built"; return 3; }
  local rc=0
  bounded "$limit" "$fault_bin" "--gtest_output=json:$out/tests/fault_tests.json" || rc=$?
  gtest_counts "$out/tests/fault_tests.json"
  return $rc
}
stage fault-tests do_fault_tests

# -- compute-sanitizer
sanitizer=${COMPUTE_SANITIZER:-$(command -v compute-sanitizer || true)}
[ -z "$sanitizer" ] && [ -n "$cuda_home" ] && [ -x "$cuda_home/bin/compute-sanitizer" ] && sanitizer=$cuda_home/bin/compute-sanitizer
sanitize() {
  local tool=$1
  [ -n "$sanitizer" ] || { note="compute-sanitizer not found (set COMPUTE_SANITIZER)"; return 3; }
  [ -x "$gpu_bin" ] || { note="$gpu_bin was not built"; return 3; }
  local extra=()
  case $tool in
    memcheck) extra=(--leak-check full) ;;
    racecheck) extra=(--racecheck-report all) ;;
  esac
  local f
  f=$(san_filter_of "$tool")
  echo "+ $sanitizer --tool $tool ${extra[*]} --error-exitcode 97 $gpu_bin --gtest_filter=$f"
  local rc=0
  bounded "$limit" "$sanitizer" --tool "$tool" "${extra[@]}" --error-exitcode 97 --print-limit 100 \
    "$gpu_bin" "--gtest_filter=$f" "--gtest_output=json:$out/sanitize/$tool.json" || rc=$?
  cp "$out/logs/$tool.log" "$out/sanitize/$tool.log" 2> /dev/null || true
  local summary
  summary=$(grep -h "ERROR SUMMARY" "$out/logs/$tool.log" 2> /dev/null | tail -1 | sed 's/^=* *//')
  note=${summary:-no ERROR SUMMARY line}
  [ $rc = 97 ] && note="$note (sanitizer errors)"
  return $rc
}
do_memcheck() { sanitize memcheck; }
do_racecheck() { sanitize racecheck; }
do_synccheck() { sanitize synccheck; }
do_initcheck() { sanitize initcheck; }

# -- benchmarks
do_bench_codecs() {
  [ -x "$bench_bin" ] || { note="$bench_bin was not built"; return 3; }
  local i=0 rc=0 done_=0 c peers=()
  # gcomp-bench codecs --peers (when this build has it) times the PyTorch peers on the same input
  # in the same run, on the CUDA device.
  if "$bench_bin" codecs --help 2>&1 | grep -q -- "--peers" && [ -n "$PY" ] &&
    "$PY" -c "import torch; assert torch.cuda.is_available()" 2> /dev/null; then
    peers=(--peers --python "$PY")
  fi
  for c in "${bench_codecs[@]}"; do
    local left=$((stage_end - SECONDS))
    if [ $left -lt 5 ]; then echo "cap reached before $c"; rc=124; break; fi
    echo "+ gcomp-bench codecs --codecs '$c' ${bench_sizes[*]} ${peers[*]} --json bench/codecs.$i.json"
    local r=0
    bounded "$left" "$bench_bin" codecs --codecs "$c" "${bench_sizes[@]}" "${peers[@]}" --json "$out/bench/codecs.$i.json" ||
      r=$?
    if [ $r = 124 ] || [ $r = 137 ]; then rc=124; break; fi
    [ $r = 0 ] || rc=1
    done_=$((done_ + 1))
    i=$((i + 1))
  done
  note="$done_ of ${#bench_codecs[@]} codecs${peers:+, torch peers on the same input}"
  return $rc
}
do_torch_peers() {
  [ -n "$PY" ] || { note="no python3"; return 3; }
  "$PY" -c "import torch; assert torch.cuda.is_available()" 2> /dev/null || { note="python3 has no CUDA torch"; return 3; }
  local script=$root/bench/peers/torch_codecs.py dev=()
  "$PY" "$script" --help 2>&1 | grep -q -- "--device" && dev=(--device cuda)
  echo "+ $PY bench/peers/torch_codecs.py ${dev[*]} ${bench_sizes[*]} --json bench/torch.json"
  bounded "$limit" "$PY" "$script" "${dev[@]}" "${bench_sizes[@]}" --json "$out/bench/torch.json"
}
free_port() { "$PY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
do_bench_nccl() {
  [ -x "$bench_bin" ] || { note="$bench_bin was not built"; return 3; }
  grep -q "nccl communicator on" "$out/logs/configure.log" 2> /dev/null || { note="built without the nccl backend (no nccl.h)"; return 3; }
  local port
  port=$(free_port)
  local envs=(WORLD_SIZE=2 MASTER_ADDR=127.0.0.1 "MASTER_PORT=$port" NCCL_SOCKET_IFNAME=lo NCCL_IB_DISABLE=1
    NCCL_DEBUG=WARN)
  [ -n "$nccl_lib" ] && envs+=("GCOMP_NCCL_LIBRARY=$nccl_lib")
  echo "+ ${envs[*]} RANK=r NCCL_HOSTID=gcomp-check-r gcomp-bench comm --backend nccl ${nccl_args[*]}"
  env "${envs[@]}" RANK=1 NCCL_HOSTID=gcomp-check-1 timeout --kill-after=5 "$limit" "$bench_bin" comm \
    --backend nccl "${nccl_args[@]}" > "$out/logs/bench-nccl.rank1.log" 2>&1 &
  local p1=$!
  local r0=0 r1=0
  env "${envs[@]}" RANK=0 NCCL_HOSTID=gcomp-check-0 timeout --kill-after=5 "$limit" "$bench_bin" comm \
    --backend nccl "${nccl_args[@]}" --json "$out/bench/comm_nccl.json" || r0=$?
  wait $p1 || r1=$?
  echo "rank 0: exit $r0; rank 1: exit $r1 (logs/bench-nccl.rank1.log)"
  if [ $r0 = 124 ] || [ $r1 = 124 ] || [ $r0 = 137 ] || [ $r1 = 137 ]; then return 124; fi
  [ $r0 = 0 ] && [ $r1 = 0 ]
}
do_ddp_cuda() {
  [ -n "$PY" ] || { note="no python3"; return 3; }
  ls "$build"/python/gcomp/_core*.so > /dev/null 2>&1 || { note="gcomp._core was not built (pybind11 or Python.h missing at configure)"; return 3; }
  local envs=("PYTHONPATH=$root/python:$build/python" PYTHONDONTWRITEBYTECODE=1 GCOMP_COMM_TIMEOUT_MS=60000)
  [ -n "$nccl_lib" ] && envs+=("GCOMP_NCCL_LIBRARY=$nccl_lib")
  local rc=0
  env "${envs[@]}" timeout --kill-after=5 "$limit" "$PY" -m pytest -q -rs -p no:cacheprovider "$root/tests/python/test_ddp_cuda.py" \
    "--junitxml=$out/ddp/junit.xml" || rc=$?
  [ $rc = 0 ] || return $rc
  # The one-GPU test must have run, not skipped.
  if ! "$PY" "$root/tools/gpu_check_report.py" --junit-ran "$out/ddp/junit.xml" test_device_hook_on_one_gpu; then
    note="test_device_hook_on_one_gpu did not run (skipped: see logs/ddp-cuda.log)"
    return 1
  fi
  note="test_device_hook_on_one_gpu passed"
}
do_large() {
  [ -x "$large_bin" ] || { note="$large_bin was not built"; return 3; }
  local rc=0
  bounded "$limit" "$large_bin" "--gtest_output=json:$out/tests/large_tests.json" || rc=$?
  gtest_counts "$out/tests/large_tests.json"
  return $rc
}

# Stages after the build share one driver; bench-codecs needs its end time.
stage_end=0
run_stage() {
  local name=$1 fn=$2
  stage_end=$((SECONDS + $(cap_of "$name")))
  [ $stage_end -le $deadline ] || stage_end=$deadline
  stage "$name" "$fn"
}
run_stage memcheck do_memcheck
run_stage bench-codecs do_bench_codecs
run_stage torch-peers do_torch_peers
run_stage bench-nccl do_bench_nccl
run_stage ddp-cuda do_ddp_cuda
run_stage racecheck do_racecheck
run_stage synccheck do_synccheck
run_stage initcheck do_initcheck
run_stage large do_large

code=0
for s in "${all_stages[@]}"; do
  case "${result[$s]:-}" in
    '' | PASS) ;;
    *) code=1 ;;
  esac
done
finish $code
