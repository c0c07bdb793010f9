#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""Runs a gcomp-bench command and checks the JSON it wrote.

usage: run_bench.py comm|codecs|bits JSON -- COMMAND [ARGS...]

The command must exit 0; then JSON must parse and match the subcommand's schema:
  comm    every record has the table columns, #wrong == 0, finite positive times, ratio >= 1 on
          compressed rows, eff_busbw == busbw on the allreduce rows
  codecs  every record has finite timings and bits/elem, #wrong == 0
  bits    every record has finite positive bits, and R >= 1 for the declared worst case (the lower
          bound b >= (d/2) log2(1 + 1/omega) holds for any codec meeting its declared guarantee)
"""
import json
import math
import os
import subprocess
import sys


def fail(msg):
    print(f"run_bench.py: {msg}", file=sys.stderr)
    sys.exit(1)


def finite(v):
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def require(rec, keys, where):
    for k in keys:
        if k not in rec:
            fail(f"{where}: missing key {k!r} in {rec}")


def check_top(data, tool):
    require(data, ["tool", "command", "git_sha", "records"], "top level")
    if data["tool"] != tool:
        fail(f"tool is {data['tool']!r}, expected {tool!r}")
    if not data["records"]:
        fail("no records")


def check_comm(data):
    check_top(data, "gcomp-bench comm")
    require(data, ["backend", "ranks", "device", "memory", "seed", "iters", "warmup", "codecs"], "top level")
    algos = set()
    for rec in data["records"]:
        require(rec, ["size_bytes", "count", "type", "algo", "codec"], "record")
        if "skipped" in rec:
            fail(f"row skipped: {rec}")
        require(rec, ["time_us", "algbw_gbps", "busbw_gbps", "wrong", "ratio", "bits_per_elem", "enc_us",
                      "comm_us", "dec_us", "eff_busbw_gbps"], "record")
        if rec["wrong"] != 0:
            fail(f"#wrong {rec['wrong']} in {rec['algo']} at {rec['size_bytes']} B")
        for k in ["time_us", "algbw_gbps", "busbw_gbps", "ratio", "bits_per_elem", "enc_us", "comm_us", "dec_us",
                  "eff_busbw_gbps"]:
            if not finite(rec[k]) or rec[k] < 0:
                fail(f"{k} = {rec[k]!r} in {rec}")
        if rec["time_us"] <= 0 or rec["count"] * 4 != rec["size_bytes"]:
            fail(f"bad time or count in {rec}")
        kind = rec["algo"].split("+")[0]
        algos.add(kind)
        if kind == "allreduce":
            if abs(rec["eff_busbw_gbps"] - rec["busbw_gbps"]) > 1e-6 * max(1.0, rec["busbw_gbps"]):
                fail(f"allreduce eff_busbw != busbw in {rec}")
        elif rec["ratio"] < 1.0:
            fail(f"compression ratio < 1 in {rec}")
    if algos != {"allreduce", "allgather", "twoway"}:
        fail(f"row kinds {sorted(algos)}")


def check_codecs(data):
    check_top(data, "gcomp-bench codecs")
    require(data, ["device", "path", "seed"], "top level")
    for rec in data["records"]:
        require(rec, ["codec", "path", "elems", "payload_bytes", "bits_per_elem", "enc_us_median", "dec_us_median",
                      "enc_gbps_uncompressed", "dec_gbps_uncompressed", "copy_gbps", "wrong", "check"], "record")
        if rec["wrong"] != 0:
            fail(f"#wrong {rec['wrong']} for {rec['codec']}")
        for k in ["bits_per_elem", "enc_us_median", "dec_us_median", "copy_gbps"]:
            if not finite(rec[k]) or rec[k] < 0:
                fail(f"{k} = {rec[k]!r} in {rec}")


def check_bits(data):
    check_top(data, "gcomp-bench bits")
    require(data, ["inputs", "seed"], "top level")
    names = set()
    for rec in data["records"]:
        require(rec, ["input", "spec", "n", "bits", "bits_worst", "bits_per_coord", "class", "measured",
                      "R_declared", "R_measured"], "record")
        names.add(rec["spec"].split(":")[0])
        for k in ["bits", "bits_worst", "bits_per_coord"]:
            if not finite(rec[k]) or rec[k] <= 0:
                fail(f"{k} = {rec[k]!r} for {rec['spec']}")
        r = rec["R_declared"]
        if r is not None and (not finite(r) or r < 1.0):
            fail(f"R_declared = {r!r} < 1 for {rec['spec']} (the declared guarantee beats the lower bound)")
    return names


def main(argv):
    if len(argv) < 4 or argv[2] != "--":
        fail(__doc__)
    mode, path, cmd = argv[0], argv[1], argv[3:]
    if os.path.exists(path):
        os.remove(path)
    rc = subprocess.run(cmd).returncode
    if rc != 0:
        fail(f"command exited {rc}: {' '.join(cmd)}")
    with open(path) as f:
        data = json.load(f)
    if mode == "comm":
        check_comm(data)
    elif mode == "codecs":
        check_codecs(data)
    elif mode == "bits":
        names = check_bits(data)
        if "--codecs" not in cmd and "--codec" not in cmd:
            every = {"identity", "dither", "terngrad", "sign", "topk", "randk", "natural", "natdither", "sdither",
                     "spherical"}
            if not every <= names:
                fail(f"default codec list misses {sorted(every - names)}")
    else:
        fail(f"unknown mode {mode!r}")
    print(f"run_bench.py: {mode}: {len(data['records'])} records OK")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
