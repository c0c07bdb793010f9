#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# gcomp-bench refuses bad numeric flags at once, naming the flag (issue 18 #12, #14): --ranks -1
# was accepted, --ranks 100000 grew to 17 GB (P^2 messages) before failing.
set -u
bench=$1
fail=0
while IFS='|' read -r flag args; do
  [ -n "$flag" ] || continue
  start=$(date +%s)
  # shellcheck disable=SC2086
  timeout 30 "$bench" $args > /dev/null 2> "$TMPDIR_BENCH/err"; rc=$?
  took=$(( $(date +%s) - start ))
  if [ "$rc" = 0 ] || [ "$rc" = 124 ]; then echo "FAILED: exit $rc for: $args"; fail=1; fi
  grep -q -- "$flag" "$TMPDIR_BENCH/err" || { echo "FAILED: the message does not name $flag: $args ($(cat "$TMPDIR_BENCH/err"))"; fail=1; }
  [ "$took" -le 10 ] || { echo "FAILED: took $took s to refuse: $args"; fail=1; }
done <<'LIST'
--ranks|comm --backend local --ranks -1 -b 4K -e 4K -n 1 -w 0
--ranks|comm --backend local --ranks 0 -b 4K -e 4K -n 1 -w 0
--ranks|comm --backend local --ranks 100000 -b 4K -e 4K -n 1 -w 0
--ranks|comm --backend local --ranks 18446744073709551617 -b 4K -e 4K -n 1 -w 0
-n|comm --backend local --ranks 2 -b 4K -e 4K -n 0 -w 0
-f|comm --backend local --ranks 2 -b 4K -e 64K -f 1 -n 1 -w 0
--seed|comm --backend local --ranks 2 -b 4K -e 4K -n 1 -w 0 --seed -1
LIST
exit $fail
