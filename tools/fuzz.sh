#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Builds the libFuzzer targets of tests/fuzz with clang (ASan + UBSan, no CUDA) and runs each one
# for a bounded time, starting from the seed corpus tests/fuzz/corpus/<target>/. New inputs go to
# <build>/corpus/<target>/ (the checked-in seeds are never modified); crashes, timeouts and OOMs are
# copied to tests/fuzz/crashes/<target>/. Exits non-zero when any target found one. A timeout is
# replayed once alone and counts only if it times out again.
# Usage: tools/fuzz.sh [seconds-per-target] [target...]   (default: 60 s, every target)
# Environment: GCOMP_FUZZ_BUILD (build dir, default build-fuzz), GCOMP_FUZZ_JOBS (build jobs),
#              CC/CXX (default clang/clang++).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
seconds=${1:-60}
shift || true
build=${GCOMP_FUZZ_BUILD:-$root/build-fuzz}
jobs=${GCOMP_FUZZ_JOBS:-$(nproc 2>/dev/null || echo 2)}
all_targets=(frame raw_decode encode spec checkpoint manifest libsvm capi)
targets=("$@")
if [[ ${#targets[@]} -eq 0 ]]; then targets=("${all_targets[@]}"); fi
generator=()
if command -v ninja >/dev/null 2>&1; then generator=(-G Ninja); fi
CC=${CC:-clang} CXX=${CXX:-clang++} cmake -S "$root" -B "$build" "${generator[@]}" \
  -DCMAKE_BUILD_TYPE=RelWithDebInfo -DGCOMP_CUDA=OFF -DGCOMP_MPI=OFF -DGCOMP_FUZZ=ON \
  -DGCOMP_BUILD_TESTS=OFF -DGCOMP_BUILD_TOOLS=OFF -DGCOMP_WERROR=ON \
  -DCMAKE_CXX_FLAGS="-fsanitize=fuzzer-no-link,address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer"
cmake --build "$build" -j "$jobs" --target "${targets[@]/#/gcomp_fuzz_}"
export ASAN_OPTIONS="halt_on_error=1:abort_on_error=1:detect_leaks=1"
export UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1"
status=0
for t in "${targets[@]}"; do
  corpus="$build/corpus/$t"
  artifacts="$build/artifacts/$t"
  rm -rf "$artifacts"
  mkdir -p "$corpus" "$artifacts"
  seeds=()
  if [[ -d "$root/tests/fuzz/corpus/$t" ]]; then seeds=("$root/tests/fuzz/corpus/$t"); fi
  echo "== fuzz $t for ${seconds} s"
  : >"$build/fuzz-$t.log"
  # A timeout counts only when the input times out again when replayed alone: a stalled machine
  # (disk, other jobs) can hold one execution past -timeout without the input being slow. After
  # such a stall the target resumes for the rest of its time (at most three stalls).
  deadline=$(($(date +%s) + seconds))
  for attempt in 1 2 3 4; do
    rc=0
    left=$((deadline - $(date +%s)))
    [[ $attempt -gt 1 && $left -lt 5 ]] && break
    "$build/tests/fuzz/gcomp_fuzz_$t" "$corpus" "${seeds[@]}" -max_total_time="$((left > 1 ? left : 1))" -timeout=5 \
      -rss_limit_mb=2048 -print_final_stats=1 -artifact_prefix="$artifacts/" \
      >>"$build/fuzz-$t.log" 2>&1 || rc=$?
    stalled=0
    shopt -s nullglob
    for f in "$artifacts"/timeout-*; do
      if [[ $rc -eq 70 ]] && "$build/tests/fuzz/gcomp_fuzz_$t" -timeout=5 -rss_limit_mb=2048 "$f" \
        >>"$build/fuzz-$t.log" 2>&1; then
        echo "fuzz $t: $(basename "$f") ran within the timeout when replayed alone (a stall, not counted)"
        mv "$f" "$build/stall-$t-$(basename "$f")"
        stalled=1
      fi
    done
    shopt -u nullglob
    [[ $stalled -eq 1 && $attempt -lt 4 ]] || break
  done
  [[ $stalled -eq 1 ]] && rc=0
  grep -E '^stat::number_of_executed_units|^Done|ERROR|SUMMARY' "$build/fuzz-$t.log" || true
  shopt -s nullglob
  found=("$artifacts"/crash-* "$artifacts"/timeout-* "$artifacts"/oom-* "$artifacts"/leak-*)
  shopt -u nullglob
  if [[ $rc -ne 0 || ${#found[@]} -gt 0 ]]; then
    status=1
    mkdir -p "$root/tests/fuzz/crashes/$t"
    for f in "${found[@]}"; do cp "$f" "$root/tests/fuzz/crashes/$t/"; done
    echo "fuzz $t: FAILED (exit $rc); reproducers in tests/fuzz/crashes/$t/, log $build/fuzz-$t.log"
  fi
done
exit $status
