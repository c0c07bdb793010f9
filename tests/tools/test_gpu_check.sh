#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# tools/gpu-check.sh where no GPU is usable (CI; CUDA_VISIBLE_DEVICES is emptied so that a GPU
# machine takes the same path): it must say so and exit 2, never report a clean run, and build
# nothing; its plans (--dry-run) must list every stage with its time cap within the 9-minute
# (full) and 4-minute (quick) budgets; usage errors exit 64.
# Usage: test_gpu_check.sh REPO_ROOT
set -uo pipefail
root=${1:?usage: test_gpu_check.sh REPO_ROOT}
script=$root/tools/gpu-check.sh
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fail=0
check() {  # check DESCRIPTION COMMAND...
  if "${@:2}"; then echo "ok: $1"; else echo "FAILED: $1"; fail=1; fi
}

# Plans.
full=$("$script" --dry-run "$tmp/plan")
check "--dry-run exits 0" test $? = 0
for s in probe configure build gpu-tests fault-tests memcheck racecheck synccheck initcheck bench-codecs torch-peers \
         bench-nccl ddp-cuda large; do
  check "full plan runs $s with a cap" grep -Eq "^  $s +[0-9]+ " <<< "$full"
done
check "full plan: budget 540 s" grep -q "budget 540 s" <<< "$full"
quick=$("$script" --quick --dry-run "$tmp/plan")
check "quick plan: budget 240 s" grep -q "budget 240 s" <<< "$quick"
for s in probe configure build gpu-tests memcheck bench-codecs; do
  check "quick plan runs $s" grep -Eq "^  $s +[0-9]+ " <<< "$quick"
done
check "quick plan leaves out the large tests" grep -Eq "^  large +- " <<< "$quick"
check "--dry-run touches nothing" test ! -e "$tmp/plan"

# Usage errors.
"$script" > /dev/null 2>&1
check "no OUTDIR: exit 64" test $? = 64
"$script" --stages nosuch "$tmp/x" > /dev/null 2>&1
check "unknown stage: exit 64" test $? = 64

# No usable device.
log=$(CUDA_VISIBLE_DEVICES= "$script" --build-dir "$tmp/build" "$tmp/out" 2>&1)
rc=$?
echo "$log" | sed 's/^/  | /'
check "no device: exit 2" test $rc = 2
check "no device: says so" grep -q "no usable CUDA device" <<< "$log"
check "no device: says it is not a clean run" grep -q "not a clean run" <<< "$log"
check "no device: nothing passed" bash -c "! grep -q PASS '$tmp/out/stages.tsv'"
check "no device: every stage listed" test "$(wc -l < "$tmp/out/stages.tsv")" -eq 14
check "no device: nothing configured or built" test ! -e "$tmp/build"
if command -v python3 > /dev/null; then
  check "no device: summary written" grep -q "exit 2" "$tmp/out/summary.txt"
  check "no device: summary.json written" python3 -c "import json,sys; d=json.load(open(sys.argv[1])); sys.exit(d['run']['exit'] != '2')" "$tmp/out/summary.json"
fi
exit $fail
