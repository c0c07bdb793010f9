#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""bench/targets.py on made-up runs: which rows it marks met or missed against issue 13's targets,
and that it prints a miss rounded up to the target with three decimals."""
import contextlib
import io
import json
import os
import sys
import tempfile

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "bench"))
import targets  # noqa: E402


def record(codec, enc, dec, red, enc_us=100.0, dec_us=100.0, red_us=100.0):
    return {"codec": codec, "enc_frac_copy": enc, "dec_frac_copy": dec, "red_frac_copy": red,
            "enc_us_median": enc_us, "dec_us_median": dec_us, "red_us_per_payload_median": red_us}


def run(tmp, **runs):
    args = []
    for name, content in runs.items():
        path = os.path.join(tmp, name + ".json")
        with open(path, "w", encoding="utf-8") as f:
            json.dump(content, f)
        args += ["--" + name, path]
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert targets.main(args) == 0
    return out.getvalue()


def main():
    assert targets.encode_target("sign") == 0.5
    assert targets.encode_target("sign:block=4096") == 0.5
    assert targets.encode_target("dither:levels=4,norm=l2,block=512") == 0.5
    assert targets.encode_target("dither:levels=3,norm=l1,block=100") is None  # blocks below 256
    assert targets.encode_target("topk:ratio=0.01") == 0.2
    assert targets.encode_target("topk:ratio=0.001") is None
    assert targets.encode_target("sdither:levels=4,norm=linf") == 0.3
    assert targets.encode_target("natdither:levels=3") is None
    assert targets.encode_target("identity") is None
    one = {"command": "one", "git_sha": "0" * 40, "records": [
        record("sign", 0.5, 0.7, 1.2),                     # every target met, exactly
        record("terngrad", 0.49, 0.698, 0.71),             # encode missed; decode 0.698 prints as 0.698
        record("topk:ratio=0.001", 0.1, 0.9, 0.9),         # no encode target
        record("natdither:levels=3,norm=l2", 0.2, 0.75, 0.6),  # decode-reduce missed
    ]}
    two = {"records": [
        record("sign", 0, 0, 0, enc_us=100 / 1.7, dec_us=100 / 1.8, red_us=100 / 1.9),
        record("terngrad", 0, 0, 0, enc_us=100 / 1.695, dec_us=50, red_us=50),
    ]}
    comm = {"command": "comm", "git_sha": "1" * 40, "records": [
        {"size_bytes": 64, "algo": "allreduce", "codec": "fp32", "time_us": 100.0},
        {"size_bytes": 64, "algo": "allgather+sign", "codec": "sign", "time_us": 100.4},
        {"size_bytes": 64, "algo": "allgather+sign:block=4096", "codec": "sign:block=4096", "time_us": 99.0},
        {"size_bytes": 64, "algo": "allgather+terngrad", "codec": "terngrad", "time_us": 300.0},
    ]}
    with tempfile.TemporaryDirectory() as tmp:
        out = run(tmp, one=one, two=two, comm=comm)
    missed = [line[2:] for line in out.splitlines() if line.startswith("- ")]
    assert missed == [
        "terngrad encode 0.49 < 0.5",
        "terngrad decode 0.698 < 0.7",
        "terngrad two threads enc 1.695x < 1.7x",
        "natdither:levels=3,norm=l2 decode-reduce 0.60 < 0.7",
        "comm allgather+sign 1.004x the allreduce",
    ], missed
    assert "| `sign` | **0.50** (0.5) | **0.70** | **1.20** | 1.70, 1.80, 1.90 |" in out, out
    assert "| `topk:ratio=0.001` | 0.10 | **0.90** | **0.90** | - |" in out, out
    assert "**0.99x**" in out and "3.00x |" in out, out
    with tempfile.TemporaryDirectory() as tmp:
        out = run(tmp, one={"records": [record("sign", 0.9, 0.9, 0.9)]})
    assert out.rstrip().endswith("every target met"), out
    print("targets.py: ok")


if __name__ == "__main__":
    main()
