#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Builds the libFuzzer targets of tests/fuzz with clang (ASan + UBSan, no CUDA) and runs each one
# for a bounded time, starting from the seed corpus tests/fuzz/corpus/<target>/. New inputs go to
# <build>/corpus/<target>/ (the checked-in seeds are never modified); crashes, timeouts and OOMs are
# copied to tests/fuzz/crashes/<target>/. Exits non-zero when any target found one.
# Usage: tools/fuzz.sh [seconds-per-target] [target...]   (default: 60 s, every target)
# Environment: GCOMP_FUZZ_BUILD (build dir, default build-fuzz), GCOMP_FUZZ_JOBS (build jobs),
#              CC/CXX (default clang/clang++).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
seconds=${1:-60}
shift || true
build=${GCOMP_FUZZ_BUILD:-$root/build-fuzz}
jobs=${GCOMP_FUZZ_JOBS:-$(nproc 2>/dev/null || echo 2)}
all_targets=(frame raw_decode spec checkpoint libsvm capi)
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
  rc=0
  "$build/tests/fuzz/gcomp_fuzz_$t" "$corpus" "${seeds[@]}" -max_total_time="$seconds" -timeout=5 \
    -rss_limit_mb=2048 -print_final_stats=1 -artifact_prefix="$artifacts/" \
    >"$build/fuzz-$t.log" 2>&1 || rc=$?
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
