#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# End-to-end checks of the gcomp-codec command line: every listed codec round-trips through files,
# info prints JSON, and bad input exits non-zero with a message and leaves no output file.
set -u
tool="$1"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
fail=0
check() { if ! "$@"; then echo "FAILED: $*"; fail=1; fi; }

python3 - "$work/x.f32" <<'PY'
import struct, sys, math
n = 1000
vals = [math.sin(0.37 * i) * (1 + (i % 7)) for i in range(n)]
open(sys.argv[1], "wb").write(struct.pack("<%df" % n, *vals))
PY

codecs=$("$tool" list | awk 'NR > 1 && $1 != "" && $1 !~ /^guarantee/ {print $1}' | grep -v '^guarantee')
[ -n "$codecs" ] || { echo "FAILED: list printed no codecs"; exit 1; }
count=0
for c in $codecs; do
  check "$tool" encode --codec "$c" --in "$work/x.f32" --out "$work/$c.gcp" --seed 5 --step 2 --rank 1 --segments 600,400
  check "$tool" decode --in "$work/$c.gcp" --out "$work/$c.f32"
  size=$(stat -c %s "$work/$c.f32")
  [ "$size" = 4000 ] || { echo "FAILED: $c decoded to $size bytes"; fail=1; }
  "$tool" info "$work/$c.gcp" > "$work/$c.json" || { echo "FAILED: info $c"; fail=1; }
  python3 -c "import json,sys; d=json.load(open(sys.argv[1])); assert d['codec']==sys.argv[2] and d['n']==1000 and d['seed']==5 and d['step']==2 and d['rank']==1 and d['segments']==[600,400], d" "$work/$c.json" "$c" \
    || { echo "FAILED: info JSON of $c"; fail=1; }
  count=$((count + 1))
done
[ "$count" -ge 8 ] || { echo "FAILED: only $count codecs listed"; fail=1; }

# identity round-trips exactly
cmp -s "$work/x.f32" "$work/identity.f32" || { echo "FAILED: identity is not lossless"; fail=1; }

# Corrupted and truncated payloads: non-zero exit, a message, no output file.
python3 - "$work/dither.gcp" "$work/bad.gcp" "$work/short.gcp" <<'PY'
import sys
d = bytearray(open(sys.argv[1], "rb").read())
d[len(d) // 2] ^= 0x40
open(sys.argv[2], "wb").write(d)
open(sys.argv[3], "wb").write(open(sys.argv[1], "rb").read()[:-3])
PY
for f in bad short; do
  if "$tool" decode --in "$work/$f.gcp" --out "$work/$f.out" 2> "$work/$f.err"; then
    echo "FAILED: decode of $f.gcp succeeded"; fail=1
  fi
  grep -q "corrupt" "$work/$f.err" || { echo "FAILED: no message for $f.gcp"; cat "$work/$f.err"; fail=1; }
  [ ! -e "$work/$f.out" ] || { echo "FAILED: partial output for $f.gcp"; fail=1; }
  ls "$work" | grep -q "$f.out.tmp" && { echo "FAILED: temporary file left for $f.gcp"; fail=1; }
  if "$tool" info "$work/$f.gcp" > /dev/null 2>&1; then echo "FAILED: info accepted $f.gcp"; fail=1; fi
done

# Bad arguments.
printf 'abc' > "$work/odd.f32"
for args in "encode --codec dither --in $work/odd.f32 --out $work/o.gcp" \
            "encode --codec nope --in $work/x.f32 --out $work/o.gcp" \
            "encode --codec dither --in $work/missing.f32 --out $work/o.gcp" \
            "encode --codec dither --in $work/x.f32 --out $work/o.gcp --segments 10,20" \
            "encode --codec dither --in $work/x.f32" \
            "encode --codec dither --in $work/x.f32 --out $work/o.gcp --bogus 1" \
            "frobnicate"; do
  if $tool $args 2> "$work/err.txt"; then echo "FAILED: accepted: $args"; fail=1; fi
  [ -s "$work/err.txt" ] || { echo "FAILED: no message for: $args"; fail=1; }
  [ ! -e "$work/o.gcp" ] || { echo "FAILED: output written for: $args"; fail=1; }
done

if [ "$fail" = 0 ]; then echo "gcomp-codec CLI: all checks passed ($count codecs)"; fi
exit $fail
