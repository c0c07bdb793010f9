#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# gcomp-train end to end: the README's main job claim (DIANA <= 1e-8 where the no-memory baseline
# stays above 1e-5 on mushrooms), JSON/CSV schema, checkpoint + resume equals an uninterrupted run,
# local and MPI backends give identical iterates, bad input exits non-zero with a message.
set -u
tool="$1"
data="$2"
mpiexec="${3:-}"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
fail=0
say() { echo "FAILED: $*"; fail=1; }

# The usage names every value of each enum option, as the one name table has them
# (include/gcomp/names.hpp): a name added there and missing from --help fails here.
"$tool" --help > "$work/help.txt" || say "--help"
python3 - "$data/../../include/gcomp/names.hpp" "$work/help.txt" <<'PY' || fail=1
import re, sys
src, usage = open(sys.argv[1]).read(), open(sys.argv[2]).read()
def names(enum):
    m = re.search(r"struct EnumNames<%s> \{.*?kTable\[\] = \{(.*?)\};" % enum, src, re.S)
    assert m, "no table for " + enum
    found = re.findall(r'\{\s*%s::k\w+,\s*"([^"]+)"\s*\}' % enum, m.group(1))
    assert found, "no names for " + enum
    return found
for flag, enum in (("--device", "Backend"), ("--algo", "Algorithm"), ("--server", "ServerMode"),
                   ("--compensation", "Compensation")):
    want = flag + " " + "|".join(names(enum))
    assert want in usage, "usage lacks '%s'" % want
print("usage: the names of names.hpp")
PY

"$tool" --data "$data/mushrooms" --iters 4000 --quiet \
  --compare "diana=dither:levels=1,norm=linf;compressed-gd=dither:levels=1,norm=linf" --json "$work/cmp.json" > "$work/cmp.txt" \
  || say "compare run"
python3 - "$work/cmp.json" <<'PY' || fail=1
import json, sys
d = json.load(open(sys.argv[1]))
diana, base = d["runs"]
assert diana["algo"] == "diana" and base["algo"] == "compressed-gd"
assert diana["lr"] == base["lr"], "same step"
assert diana["final"]["rel_error"] <= 1e-8, diana["final"]
assert base["final"]["rel_error"] > 1e-5, base["final"]
for r in d["runs"]:
    h = r["history"]
    assert h[0]["iter"] == 0 and h[-1]["iter"] == 4000
    assert all(set(p) >= {"iter", "rel_error", "f_gap", "bytes_up"} for p in h)
    assert r["bytes_up"] > 0
print("compare: diana %.2e, compressed-gd %.2e" % (diana["final"]["rel_error"], base["final"]["rel_error"]))
PY
grep -q "it@1e-10" "$work/cmp.txt" || say "comparison table missing"

# Single run JSON has the documented top-level fields; CSV has a header and rows.
"$tool" --data "$data/mushrooms" --algo ef-sgd --codec sign --iters 50 --workers 4 --quiet \
  --json "$work/one.json" --csv "$work/one.csv" > /dev/null || say "single run"
python3 -c "
import json,sys; d=json.load(open('$work/one.json'))
assert d['iters']==50 and set(d['final'])=={'rel_error','f_gap'} and d['bytes_up']>0 and 'bytes_down' in d
assert d['history'][-1]['iter']==50" || say "single-run JSON schema"
head -1 "$work/one.csv" | grep -q "algo,codec,iter,rel_error" || say "CSV header"

# Checkpoint at 30 then resume to 60 equals a straight run of 60.
args=(--data "$data/mushrooms" --algo dist-ef-sgdm --codec sign --server-codec sign --momentum 0.9 --workers 3 --quiet)
"$tool" "${args[@]}" --iters 60 --json "$work/straight.json" > /dev/null || say "straight run"
"$tool" "${args[@]}" --iters 30 --checkpoint "$work/ck" --checkpoint-every 30 > /dev/null || say "first half"
"$tool" "${args[@]}" --iters 60 --resume "$work/ck" --json "$work/resumed.json" > /dev/null || say "resumed run"
python3 -c "
import json; a=json.load(open('$work/straight.json')); b=json.load(open('$work/resumed.json'))
assert a['final']==b['final'], (a['final'], b['final'])
# The counters continue across the resume (issue 18 #9): bytes and the whole history, so the
# bits-to-target columns are those of the straight run.
assert a['bytes_up']==b['bytes_up'] and a['bytes_down']==b['bytes_down'], (a['bytes_up'], b['bytes_up'])
assert a['history']==b['history'], 'resumed history differs'" || say "resume is not bit-identical"
# Checkpoint sets (issue 18 #5, #13): a mixed or partial set, or another dataset of the same
# dimension, is refused with a message; the set itself is intact.
ls "$work" | grep -q '^ck\.s30-.*\.rank2$' || say "no rank file of the step-30 set: $(ls "$work")"
cp "$work"/ck.s30-*.rank1 "$work/older.rank1"
"$tool" "${args[@]}" --iters 40 --resume "$work/ck" --checkpoint "$work/ck" --checkpoint-every 40 > /dev/null || say "resume and save"
[ "$(ls "$work" | grep -c '^ck\.s')" = 3 ] || say "the step-30 files were not replaced by the step-40 set: $(ls "$work")"
cp "$work"/ck.s40-*.rank1 "$work/newer.rank1"
cp "$work/older.rank1" "$work"/ck.s40-*.rank1
"$tool" "${args[@]}" --iters 60 --resume "$work/ck" > /dev/null 2> "$work/err" && say "a mixed checkpoint set was loaded"
grep -q "mixed" "$work/err" || say "no message for a mixed set: $(cat "$work/err")"
cp "$work/newer.rank1" "$work"/ck.s40-*.rank1
mv "$work"/ck.s40-*.rank2 "$work/gone.rank2"
"$tool" "${args[@]}" --iters 60 --resume "$work/ck" > /dev/null 2> "$work/err" && say "a partial checkpoint set was loaded"
grep -q "partial" "$work/err" || say "no message for a partial set: $(cat "$work/err")"
mv "$work/gone.rank2" "$work/$(ls "$work" | grep '^ck\.s40-.*\.rank1$' | sed 's/rank1$/rank2/')"
python3 - "$data/mushrooms" "$work/other.svm" <<'PY'
import sys
rows = open(sys.argv[1]).read().splitlines()
rows[0], rows[1] = rows[1], rows[0]   # same dimension and rows, other order: other data
open(sys.argv[2], "w").write("\n".join(rows) + "\n")
PY
"$tool" "${args[@]/$data\/mushrooms/$work/other.svm}" --iters 60 --resume "$work/ck" > /dev/null 2> "$work/err" \
  && say "a checkpoint of another dataset was resumed"
grep -q "other data" "$work/err" || say "no message for another dataset: $(cat "$work/err")"
"$tool" "${args[@]}" --iters 60 --resume "$work/ck" > /dev/null || say "the intact set no longer loads"

# local and MPI backends: identical iterates (same seed, same world size).
if [ -n "$mpiexec" ]; then
  margs=(--data "$data/mushrooms" --algo diana --codec "dither:levels=2,norm=l2,block=16" --iters 100 --quiet --seed 7)
  "$tool" "${margs[@]}" --workers 4 --json "$work/local.json" > /dev/null || say "local run"
  OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 \
    "$mpiexec" --allow-run-as-root --oversubscribe -n 4 "$tool" "${margs[@]}" --backend mpi --json "$work/mpi.json" > /dev/null \
    || say "mpi run"
  python3 -c "
import json; a=json.load(open('$work/local.json')); b=json.load(open('$work/mpi.json'))
assert a['history']==b['history'], 'local and mpi histories differ'" || say "local vs mpi"
  # The fp32 session backend (the CUDA backend's CPU twin): local and mpi bit-identical too.
  fargs=(--data "$data/mushrooms" --algo dist-ef-sgdm --codec "sign:block=16" --server-codec sign --server sharded
         --momentum 0.9 --iters 60 --quiet --seed 3 --device host-f32)
  "$tool" "${fargs[@]}" --workers 4 --json "$work/local32.json" > /dev/null || say "local host-f32 run"
  OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 \
    "$mpiexec" --allow-run-as-root --oversubscribe -n 4 "$tool" "${fargs[@]}" --backend mpi --json "$work/mpi32.json" \
    > /dev/null || say "mpi host-f32 run"
  python3 -c "
import json; a=json.load(open('$work/local32.json')); b=json.load(open('$work/mpi32.json'))
assert a['history']==b['history'], 'host-f32: local and mpi histories differ'" || say "host-f32 local vs mpi"
  # Variable-length messages (issue 16) over MPI_Allgatherv / MPI_Alltoallv: one-way DIANA with
  # sdither (cpu) and the sharded two-way server with sdither up, topk index=rice down (host-f32):
  # local and mpi give the same iterates and count the same bytes, and fewer than the worst case.
  for v in "--algo diana --codec sdither:levels=1,norm=l2" \
           "--algo doublesqueeze --codec sdither:levels=2,norm=l2,block=32 --server-codec topk:k=8,index=rice --server sharded --device host-f32"; do
    read -r -a vargs <<< "$v"
    vargs+=(--data "$data/mushrooms" --iters 60 --quiet --seed 5)
    "$tool" "${vargs[@]}" --workers 4 --json "$work/vlocal.json" > /dev/null || say "local varlen run ($v)"
    OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 \
      "$mpiexec" --allow-run-as-root --oversubscribe -n 4 "$tool" "${vargs[@]}" --backend mpi --json "$work/vmpi.json" \
      > /dev/null || say "mpi varlen run ($v)"
    python3 -c "
import json; a=json.load(open('$work/vlocal.json')); b=json.load(open('$work/vmpi.json'))
assert a['history']==b['history'], 'local and mpi histories differ'
assert (a['bytes_up'], a['bytes_down'])==(b['bytes_up'], b['bytes_down']), (a['bytes_up'], b['bytes_up'])
ups = [h['bytes_up'] for h in a['history']]
steps = [ups[i + 1] - ups[i] for i in range(len(ups) - 1)]
assert len(set(steps)) > 1, 'every step sent the same bytes: %s' % steps[:5]" || say "varlen local vs mpi ($v)"
  done
fi

# DIANA on a9a (10 workers, 200 steps, levels=1, l2), the run of issue 16: sdither sends fewer bytes
# per worker than dither (each message at its used size) and reaches the same iterates (sdither
# decodes to dither's values; only the coding differs).
for c in dither sdither; do
  "$tool" --data "$data/a9a" --algo diana --codec "$c:levels=1,norm=l2" --workers 10 --iters 200 --quiet \
    --json "$work/a9a_$c.json" > /dev/null || say "a9a $c run"
done
python3 -c "
import json; d=json.load(open('$work/a9a_dither.json')); s=json.load(open('$work/a9a_sdither.json'))
assert [h['rel_error'] for h in d['history']]==[h['rel_error'] for h in s['history']], 'iterates differ'
assert s['bytes_up'] < d['bytes_up'], (s['bytes_up'], d['bytes_up'])
print('a9a DIANA bytes per worker: sdither %d, dither %d' % (s['bytes_up'], d['bytes_up']))" || say "a9a sdither vs dither"

# Bad input: a message and a non-zero exit.
printf '1 1:x\n' > "$work/bad.svm"
for a in "--data $work/missing.svm" "--data $work/bad.svm" "--data $data/mushrooms --algo adam" \
         "--data $data/mushrooms --codec nope" "--data $data/mushrooms --iters -1" "--data $data/mushrooms --bogus 1" \
         "--data $data/mushrooms --lr x" "--iters 5" "--data $data/mushrooms --checkpoint $work/c"; do
  if $tool $a --quiet > /dev/null 2> "$work/err"; then say "accepted: $a"; fi
  [ -s "$work/err" ] || say "no message for: $a"
done

# --backend nccl: on a machine without a GPU (or a build without NCCL) it must fail at once with the
# reason, not wait for peers in the NCCL id exchange (RANK 0 of 2 would otherwise listen for rank 1).
if ! nvidia-smi -L > /dev/null 2>&1; then
  RANK=0 WORLD_SIZE=2 MASTER_ADDR=127.0.0.1 MASTER_PORT=29531 timeout 60 \
    "$tool" --data "$data/mushrooms" --backend nccl --iters 2 --quiet > /dev/null 2> "$work/nccl_err"
  rc=$?
  [ "$rc" = 124 ] && say "--backend nccl without a GPU hung"
  [ "$rc" = 0 ] && say "--backend nccl without a GPU succeeded"
  grep -q "backend nccl" "$work/nccl_err" || say "--backend nccl without a GPU: no clear message ($(cat "$work/nccl_err"))"
fi
if $tool --data "$data/mushrooms" --backend nccl --device cpu --quiet > /dev/null 2> "$work/err"; then
  say "accepted: --backend nccl --device cpu"
fi
grep -q "cuda session backend" "$work/err" || say "no message for --backend nccl --device cpu"

# ---- Bad input and files (DESIGN.md §4; issue 18 #4, #6, #7, #8, #10, #12, #16).
m="$data/mushrooms"
# Every numeric flag is range-checked with a message naming it; flags no configuration uses are errors.
while IFS='|' read -r flag args; do
  timeout 60 $tool --data "$m" --iters 3 --quiet $args > /dev/null 2> "$work/err"; rc=$?
  [ "$rc" = 2 ] || say "exit $rc (not 2) for: $args"
  grep -q -- "$flag" "$work/err" || say "the message for '$args' does not name $flag: $(head -1 "$work/err")"
done <<'FLAGS'
--alpha|--alpha -1
--alpha|--alpha 0
--l1|--l1 -1
--batch|--batch -1
--batch|--batch 100000
--features|--features -5
--iters|--iters 18446744073709551617
--momentum|--momentum 1.5
--l2|--l2 -1
--lr|--lr -0.5
--seed|--seed -1
--delay|--delay -1
--workers|--workers 0
--workers|--workers 100000
--checkpoint-every|--checkpoint-every 5
--codec|--algo gd --codec sign
--server-codec|--algo diana --server-codec sign
--server|--algo ef-sgd --server sharded
--alpha|--algo ef-sgd --alpha 0.5
--compensation|--algo diana --compensation none
--compare|--compare gd=sign
--compare|--compare diana=sign|sign
FLAGS
if [ -n "$mpiexec" ]; then
  $tool --data "$m" --iters 3 --quiet --backend mpi --workers 4 > /dev/null 2> "$work/err" && say "--workers 4 with a 1-rank mpi world accepted"
  grep -q -- "--workers" "$work/err" || say "no message for --workers under --backend mpi"
fi
# The number of elements to hold is bounded before allocating (feature index, delay).
printf '1 1:1 2147483646:2\n-1 2:1\n1 3:1\n-1 1:0.5 4:1\n' > "$work/wide.svm"
timeout 60 $tool --data "$work/wide.svm" --workers 2 --iters 5 --quiet > /dev/null 2> "$work/err"; rc=$?
[ "$rc" = 1 ] || say "a feature index of 2^31-2: exit $rc"
grep -q "refused before allocating" "$work/err" || say "no message for a huge feature index: $(cat "$work/err")"
timeout 60 $tool --data "$m" --delay 2000000000 --iters 5 --quiet > /dev/null 2> "$work/err"; rc=$?
{ [ "$rc" = 1 ] && grep -q "refused before allocating" "$work/err"; } || say "--delay 2e9: exit $rc, $(cat "$work/err")"
# A 4-row file with one feature index of 10000 (40000) solves in seconds (sparse reference solution).
for idx in 10000 40000; do
  printf "1 1:1 $idx:2\n-1 2:1\n1 3:1\n-1 1:0.5 4:1\n" > "$work/sparse.svm"
  timeout 60 $tool --data "$work/sparse.svm" --workers 2 --iters 50 --quiet --json "$work/sparse.json" > /dev/null \
    || say "a 4-row file with feature index $idx (exit $?)"
done
# --l1 reference solutions that used to cycle between neighbouring doubles for 200000 steps.
for l1 in 0.1 0.03 0.05; do
  timeout 120 $tool --data "$m" --iters 20 --l1 $l1 --quiet > /dev/null || say "--l1 $l1 did not finish in 120 s (exit $?)"
done
# Inputs: a directory, a stream without newlines.
$tool --data "$work" --iters 3 --quiet > /dev/null 2> "$work/err" && say "a directory as --data was accepted"
grep -q "is a directory" "$work/err" || say "no message for a directory as --data: $(cat "$work/err")"
timeout 60 $tool --data /dev/zero --iters 3 --quiet > /dev/null 2> "$work/err"; rc=$?
[ "$rc" = 1 ] || say "--data /dev/zero: exit $rc"
# Outputs: checked before the run; never the data file; stdout failures are errors.
cp "$m" "$work/m.svm"
$tool --data "$work/m.svm" --iters 3 --quiet --json "$work/m.svm" > /dev/null 2> "$work/err" && say "--json = --data accepted"
cmp -s "$work/m.svm" "$m" || say "the data file was overwritten"
start=$(date +%s)
timeout 60 $tool --data "$m" --iters 100000000 --quiet --csv "$work/nodir/x.csv" > /dev/null 2> "$work/err"; rc=$?
[ "$rc" = 1 ] || say "an unwritable --csv: exit $rc (124: the run started)"
[ $(( $(date +%s) - start )) -lt 30 ] || say "an unwritable --csv was found only after the run"
$tool --data "$m" --iters 3 --quiet > /dev/full 2> "$work/err" && say "exit 0 with stdout on /dev/full"
grep -q "No space left" "$work/err" || say "no message for stdout on /dev/full"
ls -a "$work" | grep -q "gcomp-tmp" && say "temporary files left: $(ls -a "$work" | grep gcomp-tmp)"

# ---- A failing rank ends the whole MPI job at once (issue 18 #2; DESIGN.md §4): MPI_Abort, no rank
# left waiting in a collective for the collective timeout, or forever in MPI_Finalize.
if [ -n "$mpiexec" ]; then
  mpirun_env=(env OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1)
  # A setup failure on one rank (its --data is missing), the default 300 s timeout on the others.
  start=$(date +%s)
  "${mpirun_env[@]}" timeout 120 "$mpiexec" --allow-run-as-root --oversubscribe \
    -n 1 "$tool" --data "$m" --backend mpi --iters 50 --quiet : \
    -n 1 "$tool" --data "$work/missing.svm" --backend mpi --iters 50 --quiet > /dev/null 2> "$work/err"
  rc=$?; took=$(( $(date +%s) - start ))
  [ "$rc" != 0 ] && [ "$rc" != 124 ] || say "one rank with a missing --data: exit $rc after $took s (124: the job hung)"
  [ "$took" -lt 60 ] || say "one rank with a missing --data: the job took $took s to end"
  grep -q "missing.svm" "$work/err" || say "no message naming the missing data file: $(head -c 300 "$work/err")"
  # A stopped rank (SIGSTOP): its peer times out after GCOMP_COMM_TIMEOUT_MS and the job ends.
  GCOMP_COMM_TIMEOUT_MS=4000 "${mpirun_env[@]}" "$mpiexec" --allow-run-as-root --oversubscribe -n 2 \
    "$tool" --data "$m" --backend mpi --iters 100000000 --quiet > /dev/null 2> "$work/err" &
  job=$!
  ranks=""
  for i in $(seq 100); do
    ranks=$(ps -o pid= --ppid "$job" 2> /dev/null | tr -d ' ')
    [ "$(echo "$ranks" | grep -c .)" -ge 2 ] && break
    sleep 0.2
  done
  victim=$(echo "$ranks" | head -1)
  sleep 3  # both ranks are past setup and stepping
  start=$(date +%s)
  [ -n "$victim" ] && kill -STOP "$victim"
  ended=0
  for i in $(seq 90); do
    if ! kill -0 "$job" 2> /dev/null; then ended=1; break; fi
    sleep 1
  done
  if [ "$ended" = 0 ]; then
    say "a stopped rank: the job did not end within 90 s (timeout 4 s)"
    [ -n "$victim" ] && kill -KILL "$victim" 2> /dev/null
    kill "$job" 2> /dev/null
  fi
  wait "$job"; rc=$?
  took=$(( $(date +%s) - start ))
  [ "$rc" != 0 ] || say "a stopped rank: the job exited 0"
  [ "$took" -le 30 ] || say "a stopped rank: the job ended $took s after the stop (timeout 4 s)"
  grep -q "timed out" "$work/err" || say "a stopped rank: no timeout message: $(head -c 300 "$work/err")"
  [ -n "$victim" ] && kill -KILL "$victim" 2> /dev/null
fi

[ "$fail" = 0 ] && echo "gcomp-train: all checks passed"
exit $fail
