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

# ---- Files and bad input (DESIGN.md §4, docs/hardening.md "Files"; issue 18 #1, #4, #6, #14, #16).
say() { echo "FAILED: $*"; fail=1; }
p="$work/dither.gcp"
# A failed write to stdout is an error. The only /dev file touched is /dev/full, as a redirect: no
# /dev path is ever given as an output here (a regressed tool would replace it).
for args in "list" "info $p" "demo --n 64"; do
  if $tool $args > /dev/full 2> "$work/err"; then say "exit 0 with stdout on /dev/full: $args"; fi
  grep -q "No space left" "$work/err" || say "no message for stdout on /dev/full: $args ($(cat "$work/err"))"
done
[ -c /dev/full ] || say "/dev/full is no longer a character device"
# A FIFO is written through, never replaced; without a reader it is refused at once.
mkfifo "$work/fifo"
timeout 20 "$tool" decode --in "$p" --out "$work/fifo" 2> "$work/err" && say "decode into a FIFO nobody reads succeeded"
grep -q "nobody reads" "$work/err" || say "no message for a FIFO without a reader ($(cat "$work/err"))"
( timeout 20 cat "$work/fifo" > "$work/fifo.out" ) &
reader=$!
for i in $(seq 100); do "$tool" decode --in "$p" --out "$work/fifo" 2> /dev/null && break; sleep 0.1; done
wait "$reader"
[ -p "$work/fifo" ] || say "the FIFO was replaced"
cmp -s "$work/fifo.out" "$work/dither.f32" || say "the FIFO's reader did not get the decoded bytes"
# A character device (a private node of the full device, where mknod is allowed): written through,
# the failed write is an error, the node stays.
if mknod "$work/full" c 1 7 2> /dev/null; then
  "$tool" decode --in "$p" --out "$work/full" 2> "$work/err" && say "decode to a full device exited 0"
  [ -c "$work/full" ] || say "the character device was replaced by a regular file"
fi
# A symbolic link is followed and kept; the target keeps its mode. A dangling link is refused.
cp "$work/identity.f32" "$work/target.f32"; chmod 600 "$work/target.f32"; ln -s target.f32 "$work/link.f32"
check "$tool" decode --in "$p" --out "$work/link.f32"
[ -L "$work/link.f32" ] || say "the symbolic link was replaced"
cmp -s "$work/target.f32" "$work/dither.f32" || say "the link's target did not get the output"
[ "$(stat -c %a "$work/target.f32")" = 600 ] || say "mode 600 became $(stat -c %a "$work/target.f32")"
ln -s missing.f32 "$work/dangling.f32"
"$tool" decode --in "$p" --out "$work/dangling.f32" 2> /dev/null && say "a dangling link was written"
# A hard-linked file is refused (a rename would split it from its other name).
cp "$work/identity.f32" "$work/hard1.f32"; ln "$work/hard1.f32" "$work/hard2.f32"
"$tool" decode --in "$p" --out "$work/hard2.f32" 2> "$work/err" && say "a hard-linked output was replaced"
grep -q "hard links" "$work/err" || say "no message for a hard link"
cmp -s "$work/hard1.f32" "$work/identity.f32" || say "the hard link's other name changed"
# The input is never the output (same device and inode, also through a link).
cp "$p" "$work/self.gcp"; cp "$work/x.f32" "$work/self.f32"; ln -s self.gcp "$work/selflink.gcp"
for args in "decode --in $work/self.gcp --out $work/self.gcp" "decode --in $work/selflink.gcp --out $work/self.gcp" \
            "encode --codec dither --in $work/self.f32 --out $work/self.f32"; do
  $tool $args 2> "$work/err" && say "input overwritten: $args"
  grep -q "same file as the input" "$work/err" || say "no message for: $args"
done
cmp -s "$work/self.gcp" "$p" || say "the payload input was modified"
cmp -s "$work/self.f32" "$work/x.f32" || say "the float input was modified"
# Inputs: a directory, a stream that is no frame, a frame followed by more bytes from a pipe.
"$tool" decode --in "$work" --out "$work/o.f32" 2> "$work/err" && say "a directory was decoded"
grep -q "is a directory" "$work/err" || say "no message for a directory input ($(cat "$work/err"))"
timeout 20 "$tool" decode --in /dev/zero --out "$work/o.f32" 2> "$work/err"; rc=$?
[ "$rc" = 1 ] || say "decode --in /dev/zero: exit $rc (124: it read without bound)"
cat "$p" /dev/zero 2> /dev/null | timeout 20 "$tool" decode --in /dev/stdin --out "$work/o.f32" 2> "$work/err"; rc=$?
[ "$rc" = 1 ] || say "a frame followed by /dev/zero on a pipe: exit $rc"
grep -q "trailing" "$work/err" || say "no message for trailing bytes on a pipe ($(cat "$work/err"))"
head -c 4000 "$work/x.f32" | "$tool" encode --codec sign --in /dev/stdin --out "$work/pipe.gcp" || say "encode from a pipe"
[ ! -e "$work/o.f32" ] || say "an output was left by a failed decode"
# A few header bytes that claim 2^40 or 2^50 elements (top-k): refused before allocating 4n bytes.
python3 - "$work" <<'PY'
import struct, sys, zlib
d = sys.argv[1]
ref = open(d + "/topk.gcp", "rb").read()
codec_id = struct.unpack_from("<I", ref, 12)[0]
def frame(spec, n, body, stream=0):
    spec = spec.encode()
    seg_off = (80 + len(spec) + 7) & ~7
    header = seg_off + 8 + 8
    h = 0xcbf29ce484222325
    for b in struct.pack("<Q", n):
        h = ((h ^ b) * 0x100000001b3) & 0xffffffffffffffff
    out = bytearray(header)
    struct.pack_into("<IHHIIQQQQIIIIQI", out, 0, 0x504d4347, 1, 0, header, codec_id, n, 1, h, 0, 0, 0, stream,
                     len(spec), len(body), zlib.crc32(body))
    out[80:80 + len(spec)] = spec
    struct.pack_into("<Q", out, seg_off, n)
    struct.pack_into("<I", out, 76, zlib.crc32(bytes(out)))
    return bytes(out) + body
for e in (40, 50):
    w = (e + 31) // 32
    open("%s/huge%d.gcp" % (d, e), "wb").write(frame("topk:k=1", 2 ** e, struct.pack("<f", 1.0) + b"\0" * 4 * w))
open(d + "/small.gcp", "wb").write(frame("topk:k=1", 1000, struct.pack("<f", 1.0) + b"\0" * 4))
open(d + "/stream7.gcp", "wb").write(frame("topk:k=1", 1000, struct.pack("<f", 1.0) + b"\0" * 4, stream=7))
PY
check "$tool" decode --in "$work/small.gcp" --out "$work/small.f32"
for e in 40 50; do
  timeout 60 "$tool" decode --in "$work/huge$e.gcp" --out "$work/huge.f32" 2> "$work/err"; rc=$?
  [ "$rc" = 1 ] || say "a 2^$e-element top-k frame: exit $rc"
  grep -q "refused before allocating" "$work/err" || say "no message for a 2^$e-element frame ($(cat "$work/err"))"
done
[ ! -e "$work/huge.f32" ] || say "output left by a refused decode"
# Header text is escaped in messages; a stream offset other than 0 or 8 is refused.
"$tool" info "$work/stream7.gcp" > /dev/null 2> "$work/err" && say "stream offset 7 accepted"
grep -q "stream offset 7" "$work/err" || say "no message for stream offset 7 ($(cat "$work/err"))"
python3 - "$work/small.gcp" "$work/evil.gcp" <<'PY'
import struct, sys, zlib
f = bytearray(open(sys.argv[1], "rb").read())
f[80:88] = b"\x1b[31m\0zq"
header = struct.unpack_from("<I", f, 8)[0]
struct.pack_into("<I", f, 76, 0)
struct.pack_into("<I", f, 76, zlib.crc32(bytes(f[:header])))
open(sys.argv[2], "wb").write(f)
PY
"$tool" info "$work/evil.gcp" > /dev/null 2> "$work/err" && say "a header with control bytes was accepted"
if grep -q $'\x1b' "$work/err"; then say "an escape sequence from a header reached stderr"; fi
grep -q 'x1b\[31m\\x00zq' "$work/err" || say "the escaped header text (after the NUL too) is missing: $(cat -v "$work/err")"
# No temporary file is left anywhere in the work directory.
ls -a "$work" | grep -q "gcomp-tmp" && say "temporary files left: $(ls -a "$work" | grep gcomp-tmp)"

# Variable-length codecs (docs/wire-format.md §6): encode writes the used bytes only, so on a
# sparse vector an sdither file is smaller than the dither file of the same quantizer (and decodes
# to the same values), and gap-coded top-k indices make a smaller file than plain ones; info shows
# the used and the worst-case bytes; a body cut short is rejected.
python3 - "$work/sparse.f32" "$work/g.f32" <<'PY'
import struct, sys, math, random
n = 4096
v = [0.0] * n
for i in range(0, n, 97):
    v[i] = math.cos(i) * 3
open(sys.argv[1], "wb").write(struct.pack("<%df" % n, *v))
r = random.Random(4)
open(sys.argv[2], "wb").write(struct.pack("<65536f", *[r.gauss(0, 1) for _ in range(65536)]))
PY
for c in "dither:levels=1,norm=l2" "sdither:levels=1,norm=l2"; do
  check "$tool" encode --codec "$c" --in "$work/sparse.f32" --out "$work/${c%%:*}_sp.gcp" --seed 3
  check "$tool" decode --in "$work/${c%%:*}_sp.gcp" --out "$work/${c%%:*}_sp.f32"
done
for c in "topk:ratio=0.01" "topk:ratio=0.01,index=rice"; do
  check "$tool" encode --codec "$c" --in "$work/g.f32" --out "$work/${c//[:=,.]/_}.gcp"
  check "$tool" decode --in "$work/${c//[:=,.]/_}.gcp" --out "$work/${c//[:=,.]/_}.f32"
done
d_size=$(stat -c %s "$work/dither_sp.gcp")
s_size=$(stat -c %s "$work/sdither_sp.gcp")
[ "$s_size" -lt "$d_size" ] || { echo "FAILED: sdither file ($s_size bytes) not smaller than dither ($d_size)"; fail=1; }
cmp -s "$work/dither_sp.f32" "$work/sdither_sp.f32" || { echo "FAILED: sdither and dither decode differently"; fail=1; }
p_size=$(stat -c %s "$work/topk_ratio_0_01.gcp")
r_size=$(stat -c %s "$work/topk_ratio_0_01_index_rice.gcp")
[ "$r_size" -lt "$p_size" ] || { echo "FAILED: rice top-k file ($r_size bytes) not smaller than plain ($p_size)"; fail=1; }
cmp -s "$work/topk_ratio_0_01.f32" "$work/topk_ratio_0_01_index_rice.f32" || { echo "FAILED: rice and plain top-k decode differently"; fail=1; }
"$tool" info "$work/sdither_sp.gcp" > "$work/sd.json" || { echo "FAILED: info sdither"; fail=1; }
python3 -c "
import json, os, sys
d = json.load(open(sys.argv[1]))
assert d['variable_length'] is True and d['used_bytes'] == d['bytes'] < d['worst_case_bytes'], d
assert d['header_bytes'] + d['used_bytes'] == os.path.getsize(sys.argv[2]), d
" "$work/sd.json" "$work/sdither_sp.gcp" || { echo "FAILED: info of a short sdither frame"; fail=1; }
"$tool" info "$work/dither_sp.gcp" > "$work/d.json" || { echo "FAILED: info dither"; fail=1; }
python3 -c "
import json, sys
d = json.load(open(sys.argv[1]))
assert d['variable_length'] is False and d['used_bytes'] == d['bytes'] == d['worst_case_bytes'], d
" "$work/d.json" || { echo "FAILED: info of a dither frame"; fail=1; }
head -c $((s_size - 4)) "$work/sdither_sp.gcp" > "$work/sd_cut.gcp"
if "$tool" decode --in "$work/sd_cut.gcp" --out "$work/sd_cut.f32" 2> "$work/sd_cut.err"; then
  echo "FAILED: a cut sdither frame decoded"; fail=1
fi
grep -q "corrupt" "$work/sd_cut.err" || { echo "FAILED: no message for a cut sdither frame"; fail=1; }

if [ "$fail" = 0 ]; then echo "gcomp-codec CLI: all checks passed ($count codecs)"; fi
exit $fail
