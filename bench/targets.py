#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""Issue 13's CPU targets against recorded `gcomp-bench` runs (bench/results/*.json).

Reads a one-thread `gcomp-bench codecs --cpu` run, optionally the same run with two threads and a
`gcomp-bench comm` run, and prints a markdown table: each codec's encode, decode and decode-reduce as
a fraction of the same-run memcpy, the two-thread speed-up (one-thread median time over two-thread
median time) of each operation, and whether each target is met. With --baseline (an earlier
one-thread run) each fraction is printed beside the baseline's. Exit status 0; the table is the
output (docs/performance.md "Current figures" is made from it).

    python3 bench/targets.py --one R-1t.json [--two R-2t.json] [--comm R-comm.json] [--baseline B-1t.json]

Targets (issue 13, one thread, 64 MiB of fp32): encode >= 0.5 for sign, terngrad, dither with
blocks >= 256, natural, grid and random-k, >= 0.3 for sdither, >= 0.2 for exact top-k at 1 %;
decode and decode-reduce (per payload) >= 0.7 for every codec; two threads >= 1.7x one thread;
`comm`: the compressed sign rows no slower than the fp32 allreduce row.
"""
import argparse
import json
import math
import re
import sys

DECODE_TARGET = 0.7
THREADS_TARGET = 1.7


def encode_target(spec):
    """The encode target of a codec spec, or None where issue 13 sets none."""
    name, _, opts = spec.partition(":")
    fields = dict(kv.split("=", 1) for kv in opts.split(",") if "=" in kv)
    if name == "sdither":
        return 0.3
    if name == "topk":
        return 0.2 if abs(float(fields.get("ratio", "0")) - 0.01) < 1e-12 else None
    if name == "dither":
        block = int(fields.get("block", "0"))
        return 0.5 if block == 0 or block >= 256 else None
    if name in ("sign", "terngrad", "natural", "grid", "randk"):
        return 0.5
    return None


def fmt(value, target):
    """Two decimals, or three, rounded down, where two would round a miss up to the target."""
    text = f"{value:.2f}"
    if target is not None and value < target <= float(text):
        text = f"{math.floor(value * 1000.0) / 1000.0:.3f}"
    return text


def mark(value, target):
    if target is None:
        return fmt(value, None)
    return f"**{fmt(value, target)}**" if value >= target else f"{fmt(value, target)} ✗"


def load(path):
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def by_codec(run):
    return {r["codec"]: r for r in run["records"]}


def codec_table(one, two, base):
    r1 = by_codec(one)
    r2 = by_codec(two) if two else {}
    rb = by_codec(base) if base else {}
    head = ["codec", "encode (target)", "decode", "decode-reduce / payload"]
    if two:
        head.append("2 threads / 1: enc, dec, red")
    if base:
        head.append("baseline enc / dec / red")
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    missed = []
    for spec, r in r1.items():
        et = encode_target(spec)
        enc = mark(r["enc_frac_copy"], et) + (f" ({et})" if et is not None else "")
        cells = [f"`{spec}`", enc, mark(r["dec_frac_copy"], DECODE_TARGET)]
        red = r.get("red_frac_copy")
        cells.append(mark(red, DECODE_TARGET) if red is not None else "-")
        if et is not None and r["enc_frac_copy"] < et:
            missed.append(f"{spec} encode {fmt(r['enc_frac_copy'], et)} < {et}")
        if r["dec_frac_copy"] < DECODE_TARGET:
            missed.append(f"{spec} decode {fmt(r['dec_frac_copy'], DECODE_TARGET)} < {DECODE_TARGET}")
        if red is not None and red < DECODE_TARGET:
            missed.append(f"{spec} decode-reduce {fmt(red, DECODE_TARGET)} < {DECODE_TARGET}")
        if two:
            t = r2.get(spec)
            if t is None:
                cells.append("-")
            else:
                ups = []
                for key, what in (("enc_us_median", "enc"), ("dec_us_median", "dec"),
                                  ("red_us_per_payload_median", "red")):
                    if r.get(key) and t.get(key):
                        up = r[key] / t[key]
                        text = fmt(up, THREADS_TARGET)
                        ups.append(text if up >= THREADS_TARGET else f"{text} ✗")
                        if up < THREADS_TARGET:
                            missed.append(f"{spec} two threads {what} {text}x < {THREADS_TARGET}x")
                cells.append(", ".join(ups))
        if base:
            b = rb.get(spec)
            cells.append("-" if b is None else " / ".join(
                f"{b.get(k, float('nan')):.2f}" for k in ("enc_frac_copy", "dec_frac_copy", "red_frac_copy")))
        lines.append("| " + " | ".join(cells) + " |")
    return lines, missed


def comm_table(comm):
    rows = [r for r in comm["records"]]
    base = {r["size_bytes"]: r["time_us"] for r in rows if r["algo"] == "allreduce"}
    lines = ["| size | algo | time µs | x allreduce | enc / comm / dec µs |", "|---|---|---|---|---|"]
    missed = []
    for r in rows:
        ref = base.get(r["size_bytes"])
        x = r["time_us"] / ref if ref else float("nan")
        sign = r["algo"] != "allreduce" and re.match(r"sign(:|$)", r["codec"]) is not None
        text = f"{math.ceil(x * 1000.0) / 1000.0:.3f}" if sign and x > 1.0 and f"{x:.2f}" == "1.00" else f"{x:.2f}"
        cell = f"{text}x" if not sign else (f"**{text}x**" if x <= 1.0 else f"{text}x ✗")
        if sign and x > 1.0:
            missed.append(f"comm {r['algo']} {text}x the allreduce")
        lines.append(f"| {r['size_bytes']} | {r['algo']} | {r['time_us']:.0f} | {cell} | "
                     f"{r.get('enc_us', 0):.0f} / {r.get('comm_us', 0):.0f} / {r.get('dec_us', 0):.0f} |")
    return lines, missed


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--one", required=True, help="gcomp-bench codecs --cpu --threads 1 JSON")
    ap.add_argument("--two", help="the same run with --threads 2")
    ap.add_argument("--comm", help="gcomp-bench comm JSON")
    ap.add_argument("--baseline", help="an earlier one-thread run, printed beside")
    a = ap.parse_args(argv)
    one = load(a.one)
    print(f"one thread: {one.get('command', '?')} at {one.get('git_sha', '?')[:12]}")
    lines, missed = codec_table(one, load(a.two) if a.two else None, load(a.baseline) if a.baseline else None)
    print("\n".join(lines))
    if a.comm:
        comm = load(a.comm)
        print(f"\ncomm: {comm.get('command', '?')} at {comm.get('git_sha', '?')[:12]}")
        cl, cm = comm_table(comm)
        print("\n".join(cl))
        missed += cm
    print(f"\nmissed ({len(missed)}):" if missed else "\nevery target met")
    for m in missed:
        print(f"- {m}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
