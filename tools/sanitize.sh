#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# AddressSanitizer + UndefinedBehaviorSanitizer run of the whole CPU test suite (DESIGN.md §4,
# STYLE.md §8): configures a RelWithDebInfo build without CUDA, builds it and runs ctest minus the
# `slow` and `large` labels. Any sanitizer report aborts the test that triggered it
# (halt_on_error, -fno-sanitize-recover=all), so ctest fails. LeakSanitizer is on, except in a
# second pass over the tests that launch MPI processes (OpenMPI leaks from plugins it dlclose()s;
# their frames show as "<unknown module>", which no suppression can name); ASan and UBSan stay on
# there. Set GCOMP_SAN_LEAKS=0 where LeakSanitizer cannot run (under ptrace: gdb, strace).
# The Python package's test (label python) preloads the ASan runtime into the interpreter
# (tests/python/CMakeLists.txt) and leaves the torch tests out.
# Not run under the sanitizers, and why:
#   InstallAndExamples        links uninstrumented example programs against the installed ASan build
#   PipInstall                builds an uninstrumented wheel of its own (pip; the same test runs in tools/test.sh)
#   CapiErrors.BadAllocBecomesOutOfMemory
#                             asks for 2^51 bytes; ASan's allocator reports out-of-memory instead of
#                             letting operator new throw std::bad_alloc
# Scope (GCOMP_SAN_SCOPE): `full` (default) runs all of the above; `ci` (what .ci/run runs) leaves
# out the eight algorithm targets on the shipped data, ^Shipped/(DianaTest|EfTest|HessianEcTest)\.
# (T6-T15: thousands of Session steps each, most of the full run's test time under ASan; the same
# Session code runs under the sanitizers in the SessionTest, SessionAlgoTest, SessionFaults and
# F32AlgoTest suites, every algorithm for a few steps). docs/hardening.md has the measured times.
# Usage: tools/sanitize.sh [build-dir]   (default: build-asan)
# Environment: CXX (compiler, default c++), GCOMP_SAN_JOBS (default nproc), GCOMP_SAN_LEAKS (1/0),
#              GCOMP_SAN_SCOPE (full/ci), GCOMP_SAN_CTEST_ARGS (extra ctest arguments, e.g. "-R Codec").
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build=${1:-$root/build-asan}
jobs=${GCOMP_SAN_JOBS:-$(nproc 2>/dev/null || echo 2)}
leaks=${GCOMP_SAN_LEAKS:-1}
scope=${GCOMP_SAN_SCOPE:-full}
case "$scope" in
  full) scope_excluded='' ;;
  ci) scope_excluded='|^Shipped/(DianaTest|EfTest|HessianEcTest)\.' ;;
  *) echo "sanitize: GCOMP_SAN_SCOPE must be full or ci, not '$scope'" >&2; exit 2 ;;
esac
flags="-fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer"
start=$(date +%s)
"$root/tools/setup.sh"
generator=()
if command -v ninja >/dev/null 2>&1; then generator=(-G Ninja); fi
cmake -S "$root" -B "$build" "${generator[@]}" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DGCOMP_CUDA=OFF \
  -DGCOMP_MPI=AUTO -DGCOMP_WERROR=ON -DGCOMP_TEST_TIMEOUT=3600 -DCMAKE_CXX_FLAGS="$flags" \
  -DCMAKE_EXE_LINKER_FLAGS="-fsanitize=address,undefined" \
  -DCMAKE_SHARED_LINKER_FLAGS="-fsanitize=address,undefined"
cmake --build "$build" -j "$jobs"
built=$(date +%s)
asan_common="halt_on_error=1:abort_on_error=1:allocator_may_return_null=1:detect_stack_use_after_return=1:check_initialization_order=1:strict_init_order=1"
export UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1"
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
mpi_tests='^(CommMpi\.|GcompTrainCli$|BenchComm\.mpi)'
excluded="^(InstallAndExamples|PipInstall|CapiErrors\\.BadAllocBecomesOutOfMemory)\$$scope_excluded"
status=0
# shellcheck disable=SC2086
ASAN_OPTIONS="$asan_common:detect_leaks=${leaks}" ctest --test-dir "$build" -j "$jobs" --output-on-failure \
  --label-exclude 'slow|large' -E "$excluded|$mpi_tests" ${GCOMP_SAN_CTEST_ARGS:-} || status=1
# shellcheck disable=SC2086
ASAN_OPTIONS="$asan_common:detect_leaks=0" ctest --test-dir "$build" -j "$jobs" --output-on-failure \
  --label-exclude 'slow|large' -R "$mpi_tests" ${GCOMP_SAN_CTEST_ARGS:-} || status=1
end=$(date +%s)
echo "sanitize ($scope): build $((built - start)) s, tests $((end - built)) s, total $((end - start)) s; $([[ $status -eq 0 ]] && echo PASSED || echo FAILED)"
exit $status
