#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# gcomp-train's algorithm fixes of issue 14 (docs/algorithms.md "Automatic step", "Bounded delay"),
# each a regression test that failed before the fix:
#  - --momentum changes signsgd-mv (Signum) and doublesqueeze; hessian-ec refuses it; --lr auto
#    scales by (1 - mu) only where the momentum sums the steps;
#  - f - f* includes the l1 term with --l1 (it was negative);
#  - --lr auto in the delay setting is 1/(L (1 + omega) (tau + 1)) for every tau, 0 included, and
#    tau = 0 equals the synchronous run with that step bit for bit;
#  - per-(step, worker) delays: --delay-table and --delay-random, a table of constant rows equals
#    --delay, bad tables and conflicting flags are refused with a message.
set -u
tool="$1"
data="$2/mushrooms"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
fail=0
say() { echo "FAILED: $*"; fail=1; }
run() { # NAME ARGS...: one run with --json NAME.json
  local name="$1"; shift
  "$tool" --data "$data" --workers 4 --quiet "$@" --json "$work/$name.json" > /dev/null 2> "$work/$name.err" \
    || { say "run $name: $(cat "$work/$name.err")"; return 1; }
}

# Momentum: never silently ignored.
run ss0 --algo signsgd-mv --codec sign:scale=none --iters 40
run ss9 --algo signsgd-mv --codec sign:scale=none --iters 40 --momentum 0.9
run ds0 --algo doublesqueeze --codec sign --server-codec sign --iters 40
run ds9 --algo doublesqueeze --codec sign --server-codec sign --iters 40 --momentum 0.9
python3 - "$work" <<'PY' || fail=1
import json, sys
w = sys.argv[1]
load = lambda n: json.load(open(f"{w}/{n}.json"))
ss0, ss9, ds0, ds9 = load("ss0"), load("ss9"), load("ds0"), load("ds9")
assert ss0["history"] != ss9["history"], "signsgd-mv: momentum 0.9 gave the iterates of momentum 0"
assert ds0["history"] != ds9["history"], "doublesqueeze: momentum 0.9 gave the iterates of momentum 0"
# Signum averages its momentum: the automatic step does not shrink; DoubleSqueeze's heavy ball does.
assert ss9["run"]["lr"] == ss0["run"]["lr"], (ss0["run"]["lr"], ss9["run"]["lr"])
r = ds9["run"]["lr"] / ds0["run"]["lr"]
assert abs(r - 0.1) < 1e-12, r
assert abs(ds0["run"]["lr"] - 0.5 / ds0["L"]) < 1e-12 * ds0["run"]["lr"], (ds0["run"]["lr"], ds0["L"])
print("momentum: signsgd-mv and doublesqueeze change; lr auto doublesqueeze %.4g -> %.4g" % (ds0["run"]["lr"], ds9["run"]["lr"]))
PY
if "$tool" --data "$data" --workers 4 --quiet --algo hessian-ec --codec natural --momentum 0.5 --iters 2 \
    > /dev/null 2> "$work/hec.err"; then
  say "hessian-ec accepted --momentum"
fi
grep -q "momentum" "$work/hec.err" || say "hessian-ec --momentum: no message naming the momentum ($(cat "$work/hec.err"))"

# f - f* with --l1 includes the l1 term: never below 0 (the composite problem's minimum is f*).
run l1 --algo diana --codec dither:levels=1,norm=linf --l1 0.01 --iters 300
python3 - "$work/l1.json" <<'PY' || fail=1
import json, sys
d = json.load(open(sys.argv[1]))
gaps = [h["f_gap"] for h in d["history"]]
assert min(gaps) >= -1e-12 * abs(d["f_star"]), min(gaps)
assert gaps[0] > 0 and gaps[-1] < gaps[0], (gaps[0], gaps[-1])
print("l1: f - f* from %.3g to %.3g, never negative" % (gaps[0], gaps[-1]))
PY

# --lr auto in the delay setting: 1/(L (1 + omega) (tau + 1)), tau = 0 included.
codec="dither:levels=1,norm=linf"
run sync --algo compressed-gd --codec $codec --iters 60
run d0 --algo compressed-gd --codec $codec --iters 60 --delay 0
run d3 --algo compressed-gd --codec $codec --iters 60 --delay 3
python3 - "$work" > "$work/lr.txt" <<'PY' || fail=1
import json, math, sys
w = sys.argv[1]
load = lambda n: json.load(open(f"{w}/{n}.json"))
sync, d0, d3 = load("sync"), load("d0"), load("d3")
L, d, n = sync["L"], sync["dim"], sync["workers"]
omega = (math.sqrt(d) - 1) / 2  # l_inf dithering, s = 1, whole vector
close = lambda a, b: abs(a - b) <= 1e-12 * b
assert close(sync["run"]["lr"], 1 / (L * (1 + 6 * omega / n))), (sync["run"]["lr"], 1 / (L * (1 + 6 * omega / n)))
assert close(d0["run"]["lr"], 1 / (L * (1 + omega))), (d0["run"]["lr"], 1 / (L * (1 + omega)))
assert close(d3["run"]["lr"], 1 / (L * (1 + omega) * 4)), d3["run"]["lr"]
print("%.17g" % d0["run"]["lr"])
PY
# tau = 0 is the synchronous run with the same step, bit for bit (T15).
run sync_same_lr --algo compressed-gd --codec $codec --iters 60 --lr "$(cat "$work/lr.txt")"
python3 -c "
import json; a=json.load(open('$work/d0.json')); b=json.load(open('$work/sync_same_lr.json'))
assert a['history']==b['history'], 'delay 0 differs from the synchronous run'" || say "delay 0 vs synchronous"

# Per-(step, worker) delays.
printf '# constant rows: the same as --delay 2\n2 2 2 2\n\n2 2 2 2\n' > "$work/const.txt"
printf '0 1 2 3\n3 0 1 2\n2 3 0 1\n1 2 3 0\n' > "$work/iag.txt"
run fixed2 --algo ef-sgd --codec sign --iters 50 --delay 2 --lr 0.01
run table2 --algo ef-sgd --codec sign --iters 50 --delay-table "$work/const.txt" --lr 0.01
run iag --algo ef-sgd --codec sign --iters 50 --delay-table "$work/iag.txt" --lr 0.01
run rand3 --algo ef-sgd --codec sign --iters 50 --delay-random 3 --lr 0.01
run fixed3 --algo ef-sgd --codec sign --iters 50 --delay 3 --lr 0.01
python3 - "$work" <<'PY' || fail=1
import json, sys
w = sys.argv[1]
h = lambda n: json.load(open(f"{w}/{n}.json"))["history"]
assert h("fixed2") == h("table2"), "a table of constant rows differs from --delay"
assert h("iag") != h("fixed2") and h("iag") != h("fixed3"), "the cyclic table equals a fixed delay"
assert h("rand3") != h("fixed3"), "--delay-random 3 equals --delay 3"
print("delays: table == fixed for constant rows; cyclic table and random differ from fixed")
PY
printf '0 1 2\n' > "$work/short.txt"
for a in "--delay-table $work/short.txt" "--delay-table $work/missing.txt" "--delay 1 --delay-random 2" \
         "--delay-random -1"; do
  if $tool --data "$data" --workers 4 --quiet --iters 2 $a > /dev/null 2> "$work/err"; then say "accepted: $a"; fi
  [ -s "$work/err" ] || say "no message for: $a"
done
grep -q "one per worker" <("$tool" --data "$data" --workers 4 --quiet --iters 2 --delay-table "$work/short.txt" 2>&1) \
  || say "short table row: no message naming the row length"

[ "$fail" = 0 ] && echo "gcomp-train algorithms: all checks passed"
exit $fail
