#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""Reproduce the seed papers' claims with gcomp-train on the shipped datasets.

usage: tools/reproduce.py --train BUILD/tools/gcomp-train [--out docs/results] [--datasets a,b]

Runs every experiment on every dataset, keeps the gcomp-train JSON under OUT/data/, draws the
plots under OUT/plots/ (tools/plot.py), and writes OUT/reproduction.md with the tables and what
each claim became. tools/reproduce.sh is the one command that builds and runs this.
"""
import argparse
import json
import os
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
DATASETS = ["mushrooms", "a9a", "w8a", "phishing", "madelon"]
ITERS = {"mushrooms": 5000, "phishing": 6000, "a9a": 6000, "w8a": 8000, "madelon": 9000}
L1 = "dither:levels=1,norm=linf"
L2 = "dither:levels=1,norm=l2"
LONG_EF_DATASET = "mushrooms"  # the 30000-step run without error feedback (section 3), one dataset for time


def experiments(ds, L):
    """(name, title, gcomp-train arguments) per experiment; L is the smoothness of the split."""
    n = ITERS[ds]
    return [
        ("memory", "DIANA vs compressed GD without memory (same step)",
         ["--iters", str(n), "--compare", f"diana={L1};compressed-gd={L1};diana={L2};compressed-gd={L2};gd"]),
        ("blocks", "DIANA: l_inf vs l2, whole vector vs blocks of 16 and 4",
         ["--iters", str(n), "--compare", ";".join(f"diana=dither:levels=1,norm={p},block={b}"
                                                    for p in ("linf", "l2") for b in (0, 16, 4))]),
        ("ef", "single node: error feedback vs none, scaled sign and top-k (gamma = 1/L)",
         ["--workers", "1", "--iters", "5000", "--lr", repr(1.0 / L["L1"]), "--compare",
          "ef-sgd=sign;compressed-gd=sign;ef-sgd=sign:block=4;ef-sgd=topk:ratio=0.125;compressed-gd=topk:ratio=0.125"]),
    ] + ([
        ("ef_long", "single node, 30000 steps: scaled sign and top-k without error feedback keep converging",
         ["--workers", "1", "--iters", "30000", "--lr", repr(1.0 / L["L1"]), "--compare",
          "compressed-gd=sign;compressed-gd=topk:ratio=0.125;ef-sgd=topk:ratio=0.125"]),
    ] if ds == LONG_EF_DATASET else []) + [
        ("twoway", "two-way dist-EF-SGDM (scaled sign up and down) vs the uncompressed twin, minibatch 32",
         ["--iters", str(n), "--batch", "32", "--momentum", "0.9", "--lr", repr(0.05 / L["L"]), "--compare",
          "dist-ef-sgdm=sign|sign;dist-ef-sgdm=sign:block=16|sign:block=16;dist-ef-sgdm=identity|identity"]),
        ("twoway_full", "two-way EF with full gradients: plateau vs step (dist-EF-SGDM, DoubleSqueeze)",
         ["--iters", "10000", "--momentum", "0.9", "--lr", repr(0.05 / L["L"]), "--compare",
          "dist-ef-sgdm=sign|sign;dist-ef-sgdm=identity|identity"]),
        ("sign", "signSGD majority vote vs gradient descent",
         ["--iters", "10000", "--compare", "signsgd-mv=sign:scale=none;gd"]),
    ] + [
        (f"delay{tau}", f"stale gradients, tau = {tau}, gamma = 1/(L(1+omega)(tau+1))",
         ["--iters", "6000", "--delay", str(tau), "--compare", f"compressed-gd=identity;compressed-gd={L2};compressed-gd={L1}"])
        for tau in (0, 2, 8)
    ] + [
        (f"hessian_{comp}", f"least squares, grid quantizer step 1e-3 |grad f(0)|_inf, compensation {comp}",
         ["--loss", "squared", "--workers", "1", "--iters", "3000", "--algo", "hessian-ec", "--compensation", comp,
          "--lr", repr(1.0 / L["LS"]), "--codec", f"grid:step={1e-3 * L['LS_g0']!r},bits=32"])
        for comp in ("none", "classical", "hessian", "diagonal")
    ]


def run(train, args, out_json):
    cmd = [train] + args + ["--quiet", "--json", out_json]
    t0 = time.time()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, cwd=ROOT)
    return time.time() - t0, cmd


def first_hit(run, eps, key="iter"):
    for h in run["history"]:
        if h["rel_error"] <= eps:
            return h[key] if key == "iter" else 8 * h["bytes_up"]
    return None


def fmt(v):
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:.2e}"
    return str(v)


def label(r):
    if r.get("server_codec") and r["algo"] in ("dist-ef-sgdm", "doublesqueeze"):
        return f'{r["algo"]} {r["codec"]} / {r["server_codec"]}'
    return r["algo"] + (" " + r["codec"] if r["codec"] != "identity" else "")


def main(argv):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--train", required=True)
    ap.add_argument("--out", default=os.path.join(ROOT, "docs", "results"))
    ap.add_argument("--datasets", default=",".join(DATASETS))
    ap.add_argument("--reuse", action="store_true", help="keep result files that already exist (no rerun)")
    args = ap.parse_args(argv)
    args.train = os.path.abspath(args.train)
    args.out = os.path.abspath(args.out)
    os.makedirs(os.path.join(args.out, "data"), exist_ok=True)
    os.makedirs(os.path.join(args.out, "plots"), exist_ok=True)
    results, commands = {}, []
    for ds in args.datasets.split(","):
        path = os.path.relpath(os.path.join(ROOT, "data", "libsvm", ds), ROOT)
        consts = {}
        for workers, key, extra in ((10, "L", []), (1, "L1", []), (1, "LS", ["--loss", "squared"])):
            tmp = os.path.join(args.out, "data", f"{ds}_consts{key}.json")
            run(args.train, ["--data", path, "--iters", "0", "--workers", str(workers)] + extra, tmp)
            info = json.load(open(tmp))
            consts[key], consts[key + "_g0"] = info["L"], info["grad0_inf"]
            os.remove(tmp)
        for name, title, exargs in experiments(ds, consts):
            out_json = os.path.join(args.out, "data", f"{ds}_{name}.json")
            if args.reuse and os.path.exists(out_json):
                seconds, cmd = 0.0, [args.train, "--data", path] + exargs + ["--quiet", "--json", out_json]
            else:
                seconds, cmd = run(args.train, ["--data", path] + exargs, out_json)
            shown = [os.path.basename(cmd[0])] + cmd[1:-2]  # without the --json path
            commands.append(" ".join(c if not any(ch in c for ch in " ;|") else f'"{c}"' for c in shown))
            data = json.load(open(out_json))
            results[(ds, name)] = (title, data)
            subprocess.run([sys.executable, os.path.join(HERE, "plot.py"), out_json, "--out",
                            os.path.join(args.out, "plots", f"{ds}_{name}"), "--title", f"{ds}: {title}"], check=True)
            print(f"{ds:10s} {name:12s} {seconds:6.1f} s", flush=True)
    write_report(args, results, commands)
    return 0


def table(data, cols=("it@1e-6", "it@1e-10", "bits@1e-10", "final", "plateau")):
    rows = ["| run | lr | bits/elem | " + " | ".join(cols) + " |", "|---|---|---|" + "---|" * len(cols)]
    for r in data["runs"]:
        hist = r["history"]
        tail = sorted(h["rel_error"] for h in hist[len(hist) * 4 // 5:])
        vals = {"it@1e-6": first_hit(r, 1e-6), "it@1e-10": first_hit(r, 1e-10),
                "bits@1e-10": first_hit(r, 1e-10, "bits"), "final": r["final"]["rel_error"],
                "plateau": tail[len(tail) // 2] if tail else None}
        rows.append(f"| {label(r)} | {r['lr']:.3g} | {r['bits_per_element_up']:.2f} | " +
                    " | ".join(fmt(vals[c]) for c in cols) + " |")
    return "\n".join(rows)


def write_report(args, results, commands):
    dss = sorted({ds for ds, _ in results}, key=DATASETS.index)
    get = lambda ds, name: results[(ds, name)][1]["runs"]
    lines = ["# Reproduction of the papers' claims with gcomp", "",
             "Generated by `tools/reproduce.sh` (which builds gcomp and runs `tools/reproduce.py`) from a clean "
             "build. Every number below is read from the gcomp-train JSON files the script writes to `data/` "
             "(about 10 MB, not committed: rerun the script to get them); the plots are in `plots/`. Setup (spec/ALGORITHMS.md §9.2): l2-regularised logistic regression, lambda = L0/100, "
             "10 workers with contiguous splits, full local gradients unless stated, x0 = 0, "
             "rel_error = |x - x*|^2/|x*|^2 with x* from Newton's method. Plateau = median rel_error over the last "
             "fifth of the run.", ""]

    def verdict(ok):
        return "**holds**" if ok else "**does not hold**"

    # Claim 1: memory.
    ok_diana = all(get(ds, "memory")[0]["final"]["rel_error"] <= 1e-10 for ds in dss)
    ok_stall = all(get(ds, "memory")[1]["final"]["rel_error"] >= 1e-6 for ds in dss)
    lines += ["## 1. DIANA converges linearly to the exact optimum; compressed GD without memory stalls", "",
              f"Claim (DIANA; §8.1, §8.5): with the same 2-bit quantizer and step, DIANA reaches the optimum while "
              f"QSGD/TernGrad-style compressed GD only reaches a neighbourhood. DIANA (l_inf) reached 1e-10 on every "
              f"dataset: {verdict(ok_diana)}; the no-memory baseline stayed above 1e-6: {verdict(ok_stall)}.", ""]
    for ds in dss:
        lines += [f"**{ds}**", "", table(results[(ds, "memory")][1]), "",
                  f"![{ds} memory](plots/{ds}_memory_iters.png) ![{ds} memory bits](plots/{ds}_memory_bits.png)", ""]

    # Claim 2: norms and blocks.
    def hits(ds):
        return {r["codec"]: first_hit(r, 1e-10) for r in get(ds, "blocks")}
    ok_norm = ok_block = True
    for ds in dss:
        h = hits(ds)
        for b in (0, 16, 4):
            a, c = h[f"dither:levels=1,norm=linf,block={b}"], h[f"dither:levels=1,norm=l2,block={b}"]
            ok_norm &= a is not None and (c is None or a < c)
        for p in ("linf", "l2"):
            seq = [h[f"dither:levels=1,norm={p},block={b}"] for b in (4, 16, 0)]
            ok_block &= all(x is not None for x in seq[:2]) and seq[0] < seq[1] and (seq[2] is None or seq[1] < seq[2])
    lines += ["## 2. l_inf beats l2, and smaller blocks beat the whole vector", "",
              f"Claim (DIANA, §2.5): at equal dense bits, l_inf quantization needs fewer iterations than l2 "
              f"({verdict(ok_norm)} for every block size and dataset), and blocks of 4 < 16 < whole vector in "
              f"iterations to 1e-10 ({verdict(ok_block)}). Blocks cost 32 bits per block of scale, so b = 4 "
              f"sends 10 bits/element against ~2.3 for the whole vector: fewer iterations, not fewer bits.", ""]
    for ds in dss:
        lines += [f"**{ds}**", "", table(results[(ds, "blocks")][1], ("it@1e-6", "it@1e-10", "bits@1e-10", "final")), "",
                  f"![{ds} blocks](plots/{ds}_blocks_iters.png)", ""]

    # Claim 3: error feedback on one node.
    def at_iter(run, k):
        hist = [h for h in run["history"] if h["iter"] <= k]
        return hist[-1]["rel_error"] if hist else None

    ok_ef = all(first_hit(get(ds, "ef")[0], 1e-12) is not None for ds in dss)
    ok_noef = all(get(ds, "ef")[1]["final"]["rel_error"] > 1e-6 for ds in dss)
    speedup = {ds: first_hit(get(ds, "ef")[4], 1e-6) / first_hit(get(ds, "ef")[3], 1e-6) for ds in dss
               if first_hit(get(ds, "ef")[4], 1e-6) and first_hit(get(ds, "ef")[3], 1e-6)}
    ok_topk = len(speedup) == len(dss)
    lines += ["## 3. Error feedback makes biased compressors converge at the rate of GD", "",
              f"Claim (EF-SGD, §8.2): scaled-sign SGD with error feedback converges like GD (one node, full "
              f"gradient, gamma = 1/L): reached 1e-12 on every dataset: {verdict(ok_ef)}. Without error feedback "
              f"the same compressors do not stall, they converge too, only slowly: with one node and full gradients a "
              f"contractive compressor with gamma = 1/L still takes a descent step, so scaled sign keeps converging "
              f"linearly at a much lower rate (still above 1e-6 after 5000 steps on every dataset: "
              f"{verdict(ok_noef)}; rel_error after 5000 steps: " +
              ", ".join(f"{ds} {get(ds, 'ef')[1]['final']['rel_error']:.2g}" for ds in dss) + "). "
              f"Top-k (12.5 %) without error feedback converges linearly as well, and error feedback reaches 1e-6 "
              + ", ".join(f"{ds} {v:.1f}x" for ds, v in speedup.items()) +
              f" sooner ({verdict(ok_topk)} on every dataset).", ""]
    if (LONG_EF_DATASET, "ef_long") in results:
        lr_runs = get(LONG_EF_DATASET, "ef_long")
        marks = (5000, 10000, 20000, 30000)
        lines += [f"{LONG_EF_DATASET}, 30000 steps (rel_error after k steps; it@ = first logged step at or below):", "",
                  "| run | " + " | ".join(f"k = {k}" for k in marks) + " | it@1e-6 | it@1e-10 | it@1e-12 |",
                  "|---|" + "---|" * (len(marks) + 3)]
        for r in lr_runs:
            lines.append(f"| {label(r)} | " + " | ".join(fmt(at_iter(r, k)) for k in marks) + " | " +
                         " | ".join(fmt(first_hit(r, e)) for e in (1e-6, 1e-10, 1e-12)) + " |")
        lines += ["", f"![{LONG_EF_DATASET} ef long](plots/{LONG_EF_DATASET}_ef_long_iters.png)", ""]
    for ds in dss:
        lines += [f"**{ds}**", "", table(results[(ds, "ef")][1]), "", f"![{ds} ef](plots/{ds}_ef_iters.png)", ""]

    # Claim 4: two-way.
    lines += ["## 4. Two-way compression (dist-EF-SGDM) tracks full-precision momentum SGD", "",
              "Claim (Zheng et al., §8.3): with stochastic gradients, compressing both the workers' messages and the "
              "server's aggregate with blockwise scaled sign reaches the accuracy of momentum SGD while sending about "
              "1 bit per element each way instead of 32. Minibatch 32 per worker, mu = 0.9, eta = 0.05/L. The table "
              "shows the plateau of each run (the SGD noise floor).", ""]
    ratios = []
    for ds in dss:
        runs = get(ds, "twoway")
        t = {label(r): r for r in runs}
        tail = lambda r: sorted(h["rel_error"] for h in r["history"][len(r["history"]) * 4 // 5:])[len(r["history"]) // 10]
        comp, full = runs[1], runs[2]
        ratios.append(tail(comp) / tail(full))
        lines += [f"**{ds}**", "", table(results[(ds, "twoway")][1], ("it@1e-6", "final", "plateau")), "",
                  f"![{ds} twoway](plots/{ds}_twoway_iters.png) ![{ds} twoway bits](plots/{ds}_twoway_bits.png)", ""]
    lines += [f"Plateau of blockwise two-way sign over the uncompressed twin: " +
              ", ".join(f"{ds} {r:.2f}x" for ds, r in zip(dss, ratios)) + ".", "",
              "With **full** gradients and heterogeneous workers the same method does not converge exactly: it "
              "plateaus (spec T12), while the uncompressed twin converges to machine precision:", ""]
    for ds in dss:
        lines += [f"**{ds}**", "", table(results[(ds, "twoway_full")][1], ("final", "plateau")), ""]

    # Claim 5: signSGD.
    ok_sign = all(min(h["rel_error"] for h in get(ds, "sign")[0]["history"][len(get(ds, "sign")[0]["history"]) // 2:]) >= 1e-3
                  for ds in dss)
    lines += ["## 5. signSGD with majority vote is biased on heterogeneous data", "",
              f"Claim (§3.3, T13): with full gradients the majority of signs is not the sign of the mean, so signSGD-MV "
              f"stalls at a wrong point (min rel_error over the second half >= 1e-3 on every dataset: {verdict(ok_sign)}), "
              f"while GD converges.", ""]
    for ds in dss:
        lines += [f"**{ds}**", "", table(results[(ds, "sign")][1], ("final", "plateau")), ""]

    # Claim 6: delays.
    lines += ["## 6. Stale gradients", "",
              "Claim (§7, T15): with gamma = 1/(L(1+omega)(tau+1)) compressed GD with delay tau stays stable; exact "
              "gradients still converge, dithered ones reach a neighbourhood. tau = 0 is the synchronous run.", ""]
    for ds in dss:
        rows = ["| tau | " + " | ".join(label(r) for r in get(ds, "delay0")) + " |",
                "|---|" + "---|" * len(get(ds, "delay0"))]
        for tau in (0, 2, 8):
            rows.append(f"| {tau} | " + " | ".join(fmt(r["final"]["rel_error"]) for r in get(ds, f"delay{tau}")) + " |")
        lines += [f"**{ds}** (final rel_error after 6000 steps)", ""] + rows + [""]

    # Claim 7: Hessian-aided error compensation.
    lines += ["## 7. Hessian-aided error compensation does not accumulate quantization errors", "",
              "Claim (Khirirat et al. 2019, §6): on a quadratic, with a deterministic quantizer of error at most eps "
              "(grid of step Delta = 1e-3 |grad f(0)|_inf, eps = Delta sqrt(d)/2), Hessian-aided EC ends within "
              "gamma*eps of x*, while no compensation accumulates the error. Least squares, lambda = L0/100, one "
              "worker, gamma = 1/L, 3000 steps. Table: final |x - x*| / (gamma*eps).", "",
              "| dataset | none | classical | hessian | diagonal |", "|---|---|---|---|---|"]
    ok_h = ok_none = True
    for ds in dss:
        cells = []
        for comp in ("none", "classical", "hessian", "diagonal"):
            data = results[(ds, f"hessian_{comp}")][1]
            geps = (1.0 / data["L"]) * (1e-3 * data["grad0_inf"]) * data["dim"] ** 0.5 / 2
            cells.append((data["final"]["rel_error"] * data["xstar_sq"]) ** 0.5 / geps)
        ok_h &= cells[2] <= 1.0
        ok_none &= cells[0] >= 10 * cells[2]
        lines.append(f"| {ds} | " + " | ".join(f"{c:.3g}" for c in cells) + " |")
    lines += ["", f"Hessian-aided EC within gamma*eps on every dataset: {verdict(ok_h)}; no compensation at least 10x "
              f"farther: {verdict(ok_none)}. The same check runs in the test suite (T14, tests/algorithms/test_hessian_ec.cpp).", ""]

    lines += ["## Where results differ from the papers", "",
              "- Two-way EF with full gradients on heterogeneous workers plateaus instead of converging (section 4, "
              "second table). The paper's claims are for stochastic gradients, where this floor lies below the SGD "
              "noise; the spec (§8.3) records the same behaviour.",
              "- Whole-vector scaled sign in two-way EF is much worse than blockwise sign on these problems; the "
              "paper's main method is blockwise.",
              "- Block quantization (section 2) wins in iterations, but not in bits, because every block carries a "
              "32-bit scale.", "",
              "## Commands", "", "```"] + commands + ["```", ""]
    path = os.path.join(args.out, "reproduction.md")
    text = "\n".join(lines)
    old = open(path).read() if os.path.exists(path) else ""
    begin, end = "<!-- BEGIN dl (tools/reproduce_dl.py) -->", "<!-- END dl -->"
    if begin in old and end in old:  # the deep-learning section of tools/reproduce_dl.py stays
        block = old[old.index(begin):old.index(end) + len(end)]
        text = text.replace("## Where results differ from the papers", block + "\n\n## Where results differ from the papers", 1)
    with open(path, "w") as f:
        f.write(text)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
