#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""Plot gcomp-train results: relative error vs iterations and vs uplink bits.

usage: tools/plot.py RESULT.json [RESULT.json ...] --out PREFIX [--title TEXT]

Each JSON is what `gcomp-train --json` writes (a single run, or several with --compare). Writes
PREFIX_iters.png and PREFIX_bits.png.
"""
import argparse
import json
import sys


def runs_of(path):
    with open(path) as f:
        data = json.load(f)
    if "runs" in data:
        return data["runs"]
    return [data["run"]] if "run" in data else [data]


def label_of(run):
    codec = run.get("codec", "")
    return run.get("label") or (run["algo"] if codec in ("", "identity") else f'{run["algo"]} {codec}')


def main(argv):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("results", nargs="+")
    ap.add_argument("--out", required=True)
    ap.add_argument("--title", default="")
    args = ap.parse_args(argv)
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = [r for path in args.results for r in runs_of(path)]
    for xkey, suffix, xlabel in (("iter", "iters", "iteration"), ("bits", "bits", "uplink bits per worker")):
        fig, ax = plt.subplots(figsize=(6.4, 4.2))
        for r in runs:
            hist = [h for h in r["history"] if h["rel_error"] > 0]
            xs = [h["iter"] if xkey == "iter" else 8 * h["bytes_up"] for h in hist]
            ax.semilogy(xs, [h["rel_error"] for h in hist], label=label_of(r))
        ax.set_xlabel(xlabel)
        ax.set_ylabel(r"$\|x_k - x^*\|^2 / \|x^*\|^2$")
        if xkey == "bits":
            ax.set_xscale("log")
        ax.set_title(args.title, fontsize=10)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(f"{args.out}_{suffix}.png", dpi=110)
        plt.close(fig)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
