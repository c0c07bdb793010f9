#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""The reports of tools/gpu-check.sh, read from its OUTDIR (standard library only).

  gpu_check_report.py OUTDIR                      writes OUTDIR/summary.txt (one screen) and
                                                  OUTDIR/summary.json: pass/fail per stage, times
                                                  against caps, what was not reached, the figures
  gpu_check_report.py --gtest-counts JSON...      prints "RUN P passed, F failed, S skipped of T"
  gpu_check_report.py --junit-ran XML NAME        exit 0 when test NAME ran and passed

Figures: the device (probe), the test counts and failing tests, the compute-sanitizer error
summaries, per codec the encode and decode throughput as a fraction of the same-run device copy
(gcomp-bench codecs, largest size), gcomp's encode against the PyTorch peers on the same sizes
(bench/peers/torch_codecs.py: peer time / gcomp time, > 1 means gcomp is faster), the nccl comm
table (largest size: fp32 allreduce against the compressed rows), and the DDP hook test.
"""
import glob
import json
import os
import sys
import xml.etree.ElementTree as ET

# PyTorch peer method -> the gcomp codec that computes the same operator (bench/peers/torch_codecs.py).
PEERS = {
    "qsgd": "dither:levels=4,norm=l2,block=512",
    "terngrad": "terngrad",
    "signsgd": "sign",
    "topk": "topk:ratio=0.01",
}


def gtest_counts(paths):
    passed = failed = skipped = 0
    failing = []
    for path in paths:
        try:
            with open(path, encoding="utf-8") as f:
                doc = json.load(f)
        except (OSError, ValueError):
            continue
        for suite in doc.get("testsuites", []):
            for t in suite.get("testsuite", []):
                if t.get("result") == "SKIPPED" or t.get("status") == "NOTRUN":
                    skipped += 1
                elif t.get("failures"):
                    failed += 1
                    failing.append(f"{suite.get('name')}.{t.get('name')}")
                else:
                    passed += 1
    return passed, failed, skipped, failing


def junit_ran(path, name):
    try:
        cases = [c for c in ET.parse(path).iter("testcase") if c.get("name") == name]
    except (OSError, ET.ParseError):
        return False
    return bool(cases) and not any(c.find(t) is not None for c in cases for t in ("skipped", "failure", "error"))


def load_json(path):
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def read_stages(out):
    stages = []
    try:
        with open(os.path.join(out, "stages.tsv"), encoding="utf-8") as f:
            for line in f:
                parts = line.rstrip("\n").split("\t")
                if len(parts) >= 5:
                    stages.append({"stage": parts[0], "status": parts[1], "seconds": int(parts[2] or 0),
                                   "cap_s": int(parts[3] or 0), "note": parts[4]})
    except OSError:
        pass
    return stages


def read_env(out):
    env = {}
    try:
        with open(os.path.join(out, "run.env"), encoding="utf-8") as f:
            for line in f:
                key, _, value = line.rstrip("\n").partition("=")
                env[key] = value
    except OSError:
        pass
    return env


def codec_records(out):
    recs = []
    for path in sorted(glob.glob(os.path.join(out, "bench", "codecs.*.json"))):
        doc = load_json(path)
        if doc:
            recs.extend(r for r in doc.get("records", []) if r.get("path", "gpu") == "gpu")
    return recs


def sanitizer_lines(out):
    res = {}
    for tool in ("memcheck", "racecheck", "synccheck", "initcheck"):
        path = os.path.join(out, "sanitize", f"{tool}.log")
        try:
            with open(path, encoding="utf-8", errors="replace") as f:
                lines = [ln.strip("= \n") for ln in f if "ERROR SUMMARY" in ln]
        except OSError:
            continue
        res[tool] = lines[-1] if lines else "no ERROR SUMMARY line"
    return res


def report(out):
    env = read_env(out)
    stages = read_stages(out)
    device = load_json(os.path.join(out, "probe", "device.json")) or {}
    summary = {"run": env, "device": device, "stages": stages}
    lines = []
    dev = f"{device.get('name', '?')} sm_{device.get('cc', '?')}, {device.get('sms', '?')} SMs" if device else "none"
    lines.append(f"gpu-check ({env.get('mode', '?')}): exit {env.get('exit', '?')} after {env.get('elapsed_s', '?')} s "
                 f"of {env.get('budget_s', '?')} s; device: {dev}")
    lines.append(f"  git {env.get('git_sha', '?')[:12]} ({env.get('git_dirty', '0')} changed files), "
                 f"{env.get('host', '')}")
    lines.append(f"  {'stage':<13} {'status':<11} {'s':>4} {'cap':>4}  note")
    for s in stages:
        lines.append(f"  {s['stage']:<13} {s['status']:<11} {s['seconds']:>4} {s['cap_s']:>4}  {s['note'][:90]}")
    not_reached = [s["stage"] for s in stages if s["status"] == "NOT-REACHED"]
    if not_reached:
        lines.append(f"  not reached (the budget ran out): {', '.join(not_reached)}")
    if any(s["status"] == "NO-DEVICE" for s in stages):
        lines.append("  no usable CUDA device: nothing was built, tested or measured; this is not a clean run")

    tests = {}
    for name, pattern in (("gpu-tests", "gpu_tests.shard*.json"), ("fault-tests", "fault_tests.json"),
                          ("large", "large_tests.json")):
        paths = glob.glob(os.path.join(out, "tests", pattern))
        if paths:
            p, f, sk, failing = gtest_counts(paths)
            tests[name] = {"passed": p, "failed": f, "skipped": sk, "failing": failing}
            if failing:
                lines.append(f"  {name} failing: {', '.join(failing[:4])}{' ...' if len(failing) > 4 else ''}")
    summary["tests"] = tests
    san = sanitizer_lines(out)
    summary["sanitizers"] = san

    recs = codec_records(out)
    table = []
    if recs:
        largest = {}
        for r in recs:
            if r["codec"] not in largest or r["elems"] > largest[r["codec"]]["elems"]:
                largest[r["codec"]] = r
        lines.append("  codecs at the largest size (fraction of the same-run device copy, minimal bytes moved):")
        lines.append(f"    {'codec':<38} {'elems':>10} {'enc':>6} {'dec':>6} {'enc_us':>9} {'wrong':>5}")
        for codec, r in largest.items():
            table.append({k: r.get(k) for k in ("codec", "elems", "enc_frac_copy", "dec_frac_copy", "enc_us_median",
                                                "dec_us_median", "copy_gbps", "wrong")})
            lines.append(f"    {codec:<38} {r['elems']:>10} {r.get('enc_frac_copy', 0):>6.2f} "
                         f"{r.get('dec_frac_copy', 0):>6.2f} {r.get('enc_us_median', 0):>9.1f} {r.get('wrong', 0):>5}")
    summary["codecs"] = table

    peers = []
    for path in sorted(glob.glob(os.path.join(out, "bench", "codecs.*.json"))):  # gcomp-bench --peers
        for p in (load_json(path) or {}).get("peers", []):
            if p.get("peer_enc_us_median") and p.get("gcomp_enc_us_median"):
                peers.append({"peer": p.get("peer"), "codec": p.get("codec"), "elems": p.get("elems"),
                              "torch_enc_us": p["peer_enc_us_median"], "gcomp_enc_us": p["gcomp_enc_us_median"],
                              "ratio": p["peer_enc_us_median"] / p["gcomp_enc_us_median"], "same_input": True})
    torch_doc = load_json(os.path.join(out, "bench", "torch.json"))
    if torch_doc and recs and not peers:
        by = {(r["codec"], r["elems"]): r for r in recs}
        for t in torch_doc.get("records", []):
            codec = PEERS.get(t.get("method"))
            g = by.get((codec, t.get("elems")))
            if not g or not g.get("enc_us_median") or not t.get("enc_us_median"):
                continue
            peers.append({"peer": t["method"], "codec": codec, "elems": t["elems"],
                          "torch_enc_us": t["enc_us_median"], "gcomp_enc_us": g["enc_us_median"],
                          "ratio": t["enc_us_median"] / g["enc_us_median"]})
        if peers:
            top = max(p["elems"] for p in peers)
            lines.append("  torch peer / gcomp encode time (> 1: gcomp faster), n = %d: %s" % (top, ", ".join(
                f"{p['peer']} {p['ratio']:.2f}" for p in peers if p["elems"] == top)))
    summary["peers"] = peers

    comm = load_json(os.path.join(out, "bench", "comm_nccl.json"))
    if comm:
        rows = comm.get("records", [])
        summary["nccl"] = {"rows": len(rows), "wrong": sum(int(r.get("wrong", 0) or 0) for r in rows
                                                           if isinstance(r.get("wrong"), (int, float)))}
        if rows:
            top = max(r.get("size_bytes", 0) for r in rows)
            parts = [f"{r.get('codec')}/{r.get('algo')} {r.get('time_us', 0):.0f} us" for r in rows
                     if r.get("size_bytes") == top]
            lines.append(f"  nccl, 2 ranks, {top >> 20} MiB: " + "; ".join(parts)[:150])
    for tool, text in san.items():
        lines.append(f"  {tool}: {text}")
    summary["text"] = lines
    with open(os.path.join(out, "summary.json"), "w", encoding="utf-8") as f:
        json.dump(summary, f, indent=2)
    with open(os.path.join(out, "summary.txt"), "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")


def main(argv):
    if len(argv) >= 2 and argv[1] == "--gtest-counts":
        p, f, s, _ = gtest_counts(argv[2:])
        print(f"{p + f} {p} passed, {f} failed, {s} skipped of {p + f + s}")
        return 0
    if len(argv) == 4 and argv[1] == "--junit-ran":
        return 0 if junit_ran(argv[2], argv[3]) else 1
    if len(argv) != 2:
        print(__doc__, file=sys.stderr)
        return 64
    report(argv[1])
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
