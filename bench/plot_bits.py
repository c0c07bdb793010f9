#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""Plot bits per coordinate against omega for every codec, with the lower-bound curve.

usage: bench/plot_bits.py BITS.json [--out PNG] [--error measured|declared|both] [--input NAME]

BITS.json is what `gcomp-bench bits --json` writes. Codecs that differ only in the swept
parameter (levels, ratio, k, bits) form one group: one colour, joined by a line. Filled markers
and solid lines: measured; hollow markers and dotted lines: declared. The x axis is omega: the codec's omega for
unbiased codecs, and eps/(1 - eps) for contractive ones (eps = 1 - delta), which puts both on the
same lower bound b/d >= (1/2) log2(1 + 1/omega) (spec/ALGORITHMS.md §5.1). `measured` plots the
measured error at the actual message length, `declared` the declared worst case at the declared
(worst-case) length. Points with omega <= 0 (identity) or no guarantee are left out. Log-log axes.
"""
import argparse
import json
import math
import sys

SWEPT = {"levels", "ratio", "k", "bits"}


def group_of(spec):
    """The spec without its swept parameter: 'dither:levels=4,norm=l2,block=0' -> 'dither:norm=l2,block=0'."""
    name, _, params = spec.partition(":")
    kept = [kv for kv in params.split(",") if kv and kv.split("=")[0] not in SWEPT]
    return name + (":" + ",".join(kept) if kept else "")


def omega_of(rec, which):
    """omega (or eps/(1-eps)) and bits/coord of a record, or None when not plottable."""
    n = rec["n"]
    if which == "declared":
        if rec.get("declared_omega") is not None:
            w = rec["declared_omega"]
        elif rec.get("declared_delta") is not None:
            eps = 1.0 - rec["declared_delta"]
            w = eps / (1.0 - eps) if eps < 1.0 else None
        else:
            w = None
        bits = rec["bits_worst"] / n
    else:
        m = rec.get("measured")
        if m is None:
            w = None
        elif rec["measured_kind"] == "omega":
            w = m
        else:
            w = m / (1.0 - m) if m < 1.0 else None
        bits = rec["bits_per_coord"]
    if w is None or not (w > 0) or math.isinf(w) or not (bits > 0):
        return None
    return w, bits


def main(argv):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("json")
    ap.add_argument("--out", help="output image (default: the JSON path with .png)")
    ap.add_argument("--error", choices=["measured", "declared", "both"], default="both")
    ap.add_argument("--input", help="only this input (gaussian, grad); default: all")
    ap.add_argument("--title")
    args = ap.parse_args(argv)

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with open(args.json) as f:
        data = json.load(f)
    records = [r for r in data["records"] if args.input is None or r.get("input") == args.input]
    if not records:
        print("plot_bits.py: no records to plot", file=sys.stderr)
        return 1
    inputs = sorted({r.get("input", "gaussian") for r in records})
    kinds = ["measured", "declared"] if args.error == "both" else [args.error]

    fig, axes = plt.subplots(1, len(inputs), figsize=(10.5 * len(inputs), 6), squeeze=False)
    families = sorted({group_of(r["spec"]) for r in records})
    cmap = plt.get_cmap("tab20")
    colour = {fam: cmap(i % 20) for i, fam in enumerate(families)}
    for ax, inp in zip(axes[0], inputs):
        xs_all = []
        for fam in families:
            for kind in kinds:
                pts = []
                for r in records:
                    if r.get("input", "gaussian") != inp or group_of(r["spec"]) != fam:
                        continue
                    p = omega_of(r, kind)
                    if p is not None:
                        pts.append(p)
                if not pts:
                    continue
                pts.sort()
                xs_all += [p[0] for p in pts]
                filled = kind == "measured"
                ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", linestyle="-" if filled else ":",
                        color=colour[fam], markerfacecolor=colour[fam] if filled else "none",
                        label=fam if kind == kinds[0] else None)
        if xs_all:
            lo, hi = min(xs_all) / 2, max(xs_all) * 2
            grid = [lo * (hi / lo) ** (i / 200) for i in range(201)]
            ax.plot(grid, [0.5 * math.log2(1 + 1 / w) for w in grid], color="black", linewidth=2,
                    label="lower bound (1/2) log2(1 + 1/omega)")
        n = next((r["n"] for r in records if r.get("input", "gaussian") == inp), 0)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("omega (contractive: eps/(1-eps))")
        ax.set_ylabel("bits per coordinate")
        how = "filled: measured, hollow: declared" if len(kinds) > 1 else kinds[0]
        ax.set_title(args.title or f"{inp}, d = {n} ({how})")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    out = args.out or (args.json[:-5] if args.json.endswith(".json") else args.json) + ".png"
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
