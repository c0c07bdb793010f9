#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# A full file system (DESIGN.md §4, docs/hardening.md "Files"; issue 18 #4, #5): every file gcomp's
# tools write (gcomp-codec, gcomp-train outputs and checkpoints, gcomp-bench JSON) fails with a
# message and a non-zero exit, the previous file stays as it was, and no temporary file is left.
# The file system is a tmpfs filled to the last byte, mounted in a private mount namespace (unshare)
# when this process may mount one; otherwise the same writes fail through RLIMIT_FSIZE (ulimit -f 1,
# SIGXFSZ ignored, so write() returns EFBIG).
# Usage: test_full_disk.sh gcomp-codec gcomp-train gcomp-bench data-dir
set -u
codec="$1"
train="$2"
bench="$3"
data="$4"

if [ "${GCOMP_FULL_DISK_MODE:-}" = "" ]; then
  work=$(mktemp -d)
  trap 'rm -rf "$work"' EXIT
  if [ "$(id -u)" = 0 ] && command -v unshare > /dev/null &&
    unshare --mount --propagation private true 2> /dev/null; then
    GCOMP_FULL_DISK_MODE=tmpfs GCOMP_FULL_DISK_WORK="$work" \
      unshare --mount --propagation private bash "$0" "$@"
  else
    GCOMP_FULL_DISK_MODE=ulimit GCOMP_FULL_DISK_WORK="$work" bash "$0" "$@"
  fi
  exit $?
fi

work="$GCOMP_FULL_DISK_WORK"
fs="$work/fs"
mkdir -p "$fs"
fail=0
say() { echo "FAILED: $*"; fail=1; }

# Inputs live outside the full file system.
python3 - "$work/x.f32" <<'PY'
import struct, sys, math
n = 100000
open(sys.argv[1], "wb").write(struct.pack("<%df" % n, *[math.sin(0.1 * i) for i in range(n)]))
PY
"$codec" encode --codec dither --in "$work/x.f32" --out "$work/x.gcp" || say "encode the input payload"

targets="dec.f32 enc.gcp bits.json run.json run.csv comm.json"
ck=(--data "$data/mushrooms" --workers 2 --quiet)
if [ "$GCOMP_FULL_DISK_MODE" = tmpfs ]; then
  mount -t tmpfs -o size=64k tmpfs "$fs" || { echo "FAILED: mount tmpfs"; exit 1; }
  for t in $targets; do echo "previous $t" > "$fs/$t"; done
  "$train" "${ck[@]}" --iters 5 --checkpoint "$fs/ck" --checkpoint-every 5 > /dev/null || say "the first checkpoint set"
  # Fill it: the filler write stops at ENOSPC.
  head -c 1048576 /dev/zero > "$fs/filler" 2> /dev/null
  limit() { "$@"; }
  echo "# full tmpfs: $(df -k "$fs" | tail -1)"
else
  for t in $targets; do echo "previous $t" > "$fs/$t"; done
  "$train" "${ck[@]}" --iters 5 --checkpoint "$fs/ck" --checkpoint-every 5 > /dev/null || say "the first checkpoint set"
  limit() { (ulimit -f 1; trap '' XFSZ; exec "$@"); }
  echo "# no mount permission: RLIMIT_FSIZE of 1 KiB"
fi

expect_fail() {  # name, command...
  local name="$1"
  shift
  limit "$@" > /dev/null 2> "$work/err"
  local rc=$?
  [ "$rc" != 0 ] || say "$name: exit 0 on a full file system"
  grep -qE "No space left|File too large|failed|free \(refused" "$work/err" || say "$name: no message ($(head -c 300 "$work/err"))"
}
expect_fail "gcomp-codec decode" "$codec" decode --in "$work/x.gcp" --out "$fs/dec.f32"
expect_fail "gcomp-codec encode" "$codec" encode --codec identity --in "$work/x.f32" --out "$fs/enc.gcp"
expect_fail "gcomp-codec bits --json" "$codec" bits --n 4096 --json "$fs/bits.json"
expect_fail "gcomp-train --json --csv" "$train" --data "$data/mushrooms" --iters 300 --workers 2 --quiet \
  --json "$fs/run.json" --csv "$fs/run.csv"
expect_fail "gcomp-bench comm --json" "$bench" comm --ranks 2 -b 64K -e 64K -n 1 -w 0 --json "$fs/comm.json"
# A checkpoint set that cannot be written leaves the previous set whole (issue 18 #5).
expect_fail "gcomp-train --checkpoint" "$train" "${ck[@]}" --iters 10 --resume "$fs/ck" --checkpoint "$fs/ck" --checkpoint-every 5
[ "$GCOMP_FULL_DISK_MODE" = tmpfs ] && rm -f "$fs/filler"
"$train" "${ck[@]}" --iters 6 --resume "$fs/ck" --json "$work/resumed.json" > /dev/null || say "the previous set does not load"
python3 -c "
import json; h = json.load(open('$work/resumed.json'))['history']
assert h[0]['iter'] == 0 and h[-2]['iter'] == 5 and h[-1]['iter'] == 6, [p['iter'] for p in h]" || say "resumed from the wrong step"
for t in $targets; do
  [ "$(cat "$fs/$t" 2> /dev/null)" = "previous $t" ] || say "$t was changed or lost: $(head -c 80 "$fs/$t" | tr -d '\0')"
done
left=$(ls -a "$fs" | grep gcomp-tmp)
[ -z "$left" ] || say "temporary files left: $left"

[ "$fail" = 0 ] && echo "full file system ($GCOMP_FULL_DISK_MODE): all checks passed"
exit $fail
