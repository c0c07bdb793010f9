#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""Static budget of gcomp's CUDA kernels (issue 13 item 5), from `nvcc -Xptxas -v` and
`cuobjdump -sass`; tools/gpu-budget.sh compiles the translation units and calls this.

  gpu_budget.py [--all] [--before] OUTDIR   reads OUTDIR/<tu>.ptxas and OUTDIR/<tu>.sass, prints the markdown
                                 table: one row per pass of KERNELS (--all: every kernel; --before:
                                 the element counts of the layout before the quad rewrite, commit
                                 179d438, for the kernels whose names did not change)

Per kernel: registers, stack frame, spill bytes (ptxas), SASS instructions in total and per element
of the steady-state loop, and the bytes read and written per element against the minimum of the
pass it belongs to.

SASS per element: the kernel's loops are found from its backward branches (a branch to a lower
address closes a loop). The hot loop is the innermost loop whose body holds every opcode the
KERNELS entry lists (e.g. the global load of the input and the ballot of the bit planes); where
several disjoint loops qualify (a vector and a scalar copy), the cheapest. Its
cost is its own instructions, plus each inner loop's cost times that loop's trip count (KERNELS:
by an opcode the inner loop holds; the trip counts of the spec named, 1 otherwise). A CALL counts as one instruction: the subroutines
nvcc calls out of line here are slow paths (the 64-bit division of a block lookup past 2^32, the
special cases of a double division). Both sides of every branch are counted (the error paths too),
so it is an upper bound of the executed instructions; it is divided by the elements a thread handles per iteration of that loop (the
amortized work of enclosing loops, one per tile or per block, is left out). Bytes per element
come from the code (the KERNELS table: what each pass reads and writes, for the spec named), not
from the SASS.
"""
import os
import re
import sys

# name regex -> (pass and spec, hot-loop opcodes, elements per hot-loop iteration per thread ("auto":
# 4 when the loop loads 16 bytes, else 1),
# {opcode held by an inner loop: its trip count}, bytes read per element, bytes written per
# element, minimum bytes per element of the whole operation the pass belongs to). "-": not a per
# element pass (per tile, per block, per word, one thread).
KERNELS = [
    (r"reduce_tiles_kernel.*CenteredSquareSumOp", "terngrad clip: centered pass", ["LDG", "DADD"],  "auto8", {}, 4, 0, None),
    (r"reduce_tiles_kernel.*SquareSumOp", "l2 block norms (dither, sdither, spherical)", ["LDG", "DADD"],  "auto8", {}, 4, 0,
     None),
    (r"reduce_tiles_kernel.*AbsMaxOp", "linf block max (terngrad, dither linf)", ["LDG"], "auto", {}, 4, 0, None),
    (r"reduce_tiles_kernel.*AbsSumOp", "l1 block sums (scaled sign)", ["LDG", "DADD"],  "auto8", {}, 4, 0, None),
    (r"reduce_tiles_kernel.*PowSumOp", "lp block sums", ["LDG", "DADD"],  "auto8", {}, 4, 0, None),
    (r"reduce_tiles_kernel.*SumOp", "terngrad clip: mean pass", ["LDG", "DADD"],  "auto8", {}, 4, 0, None),
    (r"combine_tiles_kernel|combine_blocks_kernel", "block scales: tile values -> scale", [], None, {}, "-", "-", None),
    # quantize: before, a warp per 32 elements (ballot per plane, planes loop x3); after, a thread
    # per quad (the transpose loop runs once for <= 8 planes).
    (r"quantize_planes_kernelILb0ELNS_6detail8FuseModeE0E", "dither:levels=4 encode (sign + 3 level planes)", ["LDG", "SHFL"], 4,
     {"SHFL": 1}, 4, 0.5, 4.5),
    (r"quantize_planes_kernelENS", "dither:levels=4 encode (sign + 3 level planes)", ["LDG", "VOTE"], 1, {"VOTE": 3}, 4,
     0.5, 4.5),
    (r"encode_sign_kernelILNS_6detail8FuseModeE0ELb1E", "plain sign encode (finiteness folded in)", ["LDG", "SHFL"], 4, {}, 4, 0.125,
     4.125),
    (r"encode_sign_kernelENS", "sign encode", ["LDG", "VOTE"], 1, {}, 4, 0.125, 4.125),
    (r"encode_natural_kernelILNS_6detail8FuseModeE0ELb1E", "natural encode (finiteness folded in)", ["LDG", "SHFL"], 4, {}, 4, 1.125,
     5.125),
    (r"encode_natural_kernelENS", "natural encode", ["LDG", "VOTE"], 1, {}, 4, 1.125, 5.125),
    (r"encode_identity_kernelILNS_6detail8FuseModeE0ELb1E", "identity encode (finiteness folded in)", ["LDG", "STG"], 4, {}, 4, 4, 8),
    (r"encode_identity_kernelENS", "identity encode", ["LDG", "STG"], 1, {}, 4, 4, 8),
    (r"check_finite_kernel", "finiteness pass (before: every unscaled encode; after: EF/DIANA variants)", ["LDG"],
     "auto", {}, 4, 0, None),
    # grid: before, a warp per 32 elements for every width (grid_level_rcp, double); after, a quad
    # per thread for B = 8, 16, 32 and the warp layout with grid_level_f for the other widths.
    (r"grid_encode_kernelENS", "grid:bits=16 encode", ["LDG", "SHFL"], 1, {"SHFL": 3}, 4, 2, 6),
    (r"grid_encode_quads_kernelILi2ELNS_6detail8FuseModeE0ELb1E",
     "grid:bits=16 encode, a quad per thread (finiteness folded in)", ["LDG", "STG", "?LDG*128"], "auto", {}, 4, 2, 6),
    (r"grid_encode_quads_kernelILi1ELNS_6detail8FuseModeE0ELb1E",
     "grid:bits=8 encode, a quad per thread (finiteness folded in)", ["LDG", "STG", "?LDG*128"], "auto", {}, 4, 1, 5),
    (r"grid_encode_kernelILb1E", "grid:bits=12 encode, a warp per 32 elements (finiteness folded in)",
     ["LDG", "SHFL"], 1, {"SHFL": 4}, 4, 1.5, 5.5),
    (r"decode_quads_kernel.*DenseQuadDecoderILb0EEELb0E", "dither:levels=4 decode-reduce, per payload (validation in)",
     ["LDG", "STG"], 4, {}, 0.5, 4, 4.5),
    (r"decode_quads_kernel.*SignQuadDecoderELb0E", "sign decode-reduce, per payload (validation in)", ["LDG", "STG"],
     4, {}, 0.125, 4, 4.125),
    (r"decode_quads_kernel.*NaturalQuadDecoderELb0E", "natural decode-reduce, per payload (validation in)",
     ["LDG", "STG"], 4, {}, 1.125, 4, 5.125),
    (r"decode_quads_kernel.*IdentityQuadDecoderELb0E", "identity decode-reduce, per payload (validation in)",
     ["LDG", "STG"], 4, {}, 4, 4, 8),
    (r"decode_quads_kernel.*GridQuadDecoderILi2EEELb0E", "grid:bits=16 decode-reduce, per payload (validation in)",
     ["LDG", "STG"], 4, {}, 2, 4, 6),
    (r"decode_quads_kernel.*GridQuadDecoderILi1EEELb0E", "grid:bits=8 decode-reduce, per payload (validation in)",
     ["LDG", "STG"], 4, {}, 1, 4, 5),
    (r"decode_quads_kernel.*GridQuadDecoderILi0EEELb0E", "grid:bits=12 decode-reduce, per payload (validation in)",
     ["LDG", "STG"], 4, {}, 1.5, 4, 5.5),
    (r"decode_elements_kernel.*DenseDecoder", "dither:levels=4 decode-reduce, per payload", ["LDG", "STG"], 1, {}, 0.5,
     4, 4.5),
    (r"decode_elements_kernel.*SignDecoder", "sign decode-reduce, per payload", ["LDG", "STG"], 1, {}, 0.125, 4,
     4.125),
    (r"decode_elements_kernel.*NaturalDecoder", "natural decode-reduce, per payload", ["LDG", "STG"], 1, {}, 1.125, 4,
     5.125),
    (r"decode_elements_kernel.*IdentityDecoder", "identity decode-reduce, per payload", ["LDG", "STG"], 1, {}, 4, 4, 8),
    (r"decode_elements_kernel.*GridDecoder", "grid decode-reduce, per payload", ["LDG", "STG"], 1, {}, 2, 4, 6),
    (r"validate_planes_kernel", "dither decode: validation pass (before only)", ["LDG"], 32, {}, 0.5, 0, None),
    (r"validate_natural_kernel", "natural decode: validation pass (before only)", ["LDG"], 1, {}, 1.125, 0, None),
    (r"validate_identity_kernel", "identity decode: validation pass (before only)", ["LDG"], 1, {}, 4, 0, None),
    (r"grid_validate_kernel", "grid decode: validation pass (before only)", ["LDG"], 1, {}, 2, 0, None),
    # exact top-k / random-k: before, 4 histogram passes + count + scatter over all n, one element
    # per thread (random-k: a Philox block per key per pass); after, pass 1 (histogram of the top 12
    # bits), pass 2 (compact_candidates) and pass 3 (scatter) over all n, a quad per thread.
    (r"radix_histogram_kernelINS1_12MagnitudeKeyEEEvT_lii", "topk: pass 1, 12-bit histogram", ["LDG", "MATCH"],
     "auto", {}, 4, 0, None),
    (r"radix_histogram_kernelINS1_9RandomKeyEEEvT_lii", "randk: pass 1, 12-bit histogram", ["IMAD", "MATCH"], 4, {},
     0, 0, None),
    (r"radix_histogram_kernel.*MagnitudeKey", "topk: radix histogram pass (x4)", ["LDG", "ATOMS"], 1, {}, 4, 0, None),
    (r"radix_histogram_kernel.*RandomKey", "randk: radix histogram pass (x4)", ["IMAD", "ATOMS"], 1, {}, 0, 0, None),
    (r"compact_candidates_kernel.*MagnitudeKey", "topk: pass 2, class A counts + candidate compaction",
     ["LDG", "VOTE"], "auto", {}, 4, 0.0625, None),
    (r"compact_candidates_kernel.*RandomKey", "randk: pass 2, class A counts + candidate compaction", ["IMAD", "VOTE"],
     4, {}, 0, 0, None),
    (r"count_tiles_kernel.*MagnitudeKey", "topk: class count pass (after: full path only)", ["LDG"], "auto", {}, 4, 0,
     None),
    (r"count_tiles_kernel.*RandomKey", "randk: class count pass (after: full path only)", ["IMAD"],
     {"before": 1, "after": 4}, {}, 0, 0, None),
    (r"scatter_selected_kernel.*MagnitudeKey", "topk: scatter pass", ["LDG", "BAR", "?LDG*128"], "auto", {}, 4, 0.02,
     None),
    (r"scatter_selected_kernel.*RandomKey", "randk: scatter pass", ["IMAD", "BAR"], {"before": 1, "after": 4}, {},
     0.04, 0.04, None),
    (r"sdither_count_kernel", "sdither encode: count pass", [], None, {}, 4, 0, None),
    (r"sdither_write_kernel", "sdither encode: write pass", [], None, {}, 4, "-", None),
    (r"spherical_encode_kernel", "spherical encode (compute bound)", [], None, {}, 4, "-", None),
]

# Kernels of the "before" code only (--before): the after-era check below does not expect them.
BEFORE_ONLY = {
    r"quantize_planes_kernelENS", r"encode_sign_kernelENS", r"encode_natural_kernelENS",
    r"encode_identity_kernelENS", r"decode_elements_kernel.*DenseDecoder", r"decode_elements_kernel.*SignDecoder",
    r"decode_elements_kernel.*NaturalDecoder", r"decode_elements_kernel.*IdentityDecoder",
    r"radix_histogram_kernel.*MagnitudeKey", r"radix_histogram_kernel.*RandomKey", r"validate_planes_kernel",
    r"validate_natural_kernel", r"validate_identity_kernel", r"grid_encode_kernelENS",
    r"decode_elements_kernel.*GridDecoder", r"grid_validate_kernel",
}
assert BEFORE_ONLY <= {k[0] for k in KERNELS}


def parse_ptxas(path):
    """function -> {regs, stack, spill_st, spill_ld}"""
    res = {}
    cur = None
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            m = re.search(r"Function properties for (\S+)", line)
            if m:
                cur = m.group(1)
                res.setdefault(cur, {})
                continue
            m = re.search(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads", line)
            if m and cur:
                res[cur].update(stack=int(m.group(1)), spill_st=int(m.group(2)), spill_ld=int(m.group(3)))
                continue
            m = re.search(r"Compiling entry function '(\S+)'", line)
            if m:
                cur = m.group(1)
                res.setdefault(cur, {})
                continue
            m = re.search(r"Used (\d+) registers", line)
            if m and cur:
                res[cur]["regs"] = int(m.group(1))
    return res


INSN = re.compile(r"/\*([0-9a-f]{4,})\*/\s+(@!?U?P\w+\s+)?([A-Z][A-Z0-9_.]*)([^;]*);")


def parse_sass(path):
    """function -> list of (addr, opcode, operands)"""
    funcs = {}
    cur = None
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            m = re.search(r"Function : (\S+)", line)
            if m:
                cur = m.group(1)
                funcs[cur] = []
                continue
            if cur is None:
                continue
            m = INSN.search(line)
            if m:
                funcs[cur].append((int(m.group(1), 16), m.group(3), m.group(4).strip()))
    return funcs


def branch_target(op, operands):
    if not op.startswith("BRA") or op.startswith("BRA.DIV"):
        return None
    m = re.search(r"0x([0-9a-f]+)\s*$", operands)
    return int(m.group(1), 16) if m else None


def call_target(op, operands):
    if not op.startswith("CALL"):
        return None
    m = re.search(r"0x([0-9a-f]+)", operands)
    return int(m.group(1), 16) if m else None


def analyze(insns, hot, trips):
    """(total instructions, cost of one hot-loop iteration or None, loops found)"""
    real = [i for i in insns if i[1] != "NOP"]
    if not real:
        return 0, None, 0

    def sub_size(t):  # a called subroutine: from its first instruction to its RET
        n = 0
        for a, op, _ in real:
            if a < t:
                continue
            n += 1
            if op.startswith("RET"):
                break
        return n

    heads = {}
    for a, op, ops in real:
        t = branch_target(op, ops)
        if t is not None and t <= a:
            heads[t] = max(heads.get(t, a), a)  # several back edges to one head: one loop
    loops = sorted(heads.items())

    def inside(inner, outer):
        return outer[0] <= inner[0] and inner[1] <= outer[1] and inner != outer

    def children(loop):
        inner = [lp for lp in loops if inside(lp, loop)]
        return [lp for lp in inner if not any(inside(lp, o) for o in inner)]

    def ops_in(loop):
        return [op for a, op, _ in real if loop[0] <= a <= loop[1]]

    def cost(loop):
        kids = children(loop)
        own = 0
        for a, op, ops in real:
            if loop[0] <= a <= loop[1] and not any(t <= a <= e for t, e in kids):
                own += 1  # a CALL counts as one: its subroutine is a cold path (below)
        total = own
        for kid in kids:
            k = next((n for opc, n in trips.items() if any(o.startswith(opc) for o in ops_in(kid))), 1)
            total += cost(kid) * k
        return total

    if not hot:
        return len(real), None, []
    def has(loop, h):  # "LDG*128": a 16-byte global load
        if "*" in h:
            pre, post = h.split("*")
            return any(o.startswith(pre) and post in o for o in ops_in(loop))
        return any(o.startswith(h) for o in ops_in(loop))

    need = [h for h in hot if not h.startswith("?")]
    prefer = [h[1:] for h in hot if h.startswith("?")]  # "?X": among the candidates, those with X
    cands = [lp for lp in loops if all(has(lp, h) for h in need)]
    preferred = [lp for lp in cands if all(has(lp, h) for h in prefer)]
    cands = preferred or cands
    cands = [lp for lp in cands if not any(inside(o, lp) for o in cands)]  # innermost
    if not cands:
        return len(real), None, []
    best = min(cands, key=cost)  # the tightest loop that holds the hot work
    return len(real), cost(best), ops_in(best)


def short_name(mangled):
    m = re.search(r"\d+([a-z][a-z_0-9]*_kernel)", mangled)
    name = m.group(1) if m else mangled[:40]
    for tag in ("CenteredSquareSumOp", "SquareSumOp", "AbsMaxOp", "AbsSumOp", "PowSumOp", "SumOp", "DenseDecoder",
                "SignDecoder", "NaturalDecoder", "IdentityDecoder", "GridDecoder", "MagnitudeKey", "RandomKey"):
        if tag in mangled and "<" not in name:
            name += f"<{tag}>"
            break
    return name


def fmt(v):
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.3g}"
    return str(v)


def main(argv):
    show_all = "--all" in argv
    era = "before" if "--before" in argv else "after"
    args = [a for a in argv[1:] if a not in ("--all", "--before")]
    if len(args) != 1:
        print(__doc__, file=sys.stderr)
        return 64
    out = args[0]
    rows = []
    for tu in sorted(f[:-5] for f in os.listdir(out) if f.endswith(".sass")):
        ptx = parse_ptxas(os.path.join(out, tu + ".ptxas"))
        sass = parse_sass(os.path.join(out, tu + ".sass"))
        for fn, insns in sorted(sass.items(), key=lambda kv: short_name(kv[0])):
            meta = next((k for k in KERNELS if re.search(k[0], fn)), None)
            total, loop_cost, hot_ops = analyze(insns, meta[2] if meta else [], meta[4] if meta else {})
            info = ptx.get(fn, {})
            elems = meta[3] if meta else None
            if isinstance(elems, dict):  # differs between the two layouts of the same kernel name
                elems = elems[era]
            if elems in ("auto", "auto8"):  # 16-byte loads in the hot loop: quads (two per round: auto8)
                vec = any(o.startswith("LDG") and ".128" in o for o in hot_ops)
                elems = (8 if elems == "auto8" else 4) if vec else 1
            per_elem = loop_cost / elems if (loop_cost and elems) else None
            rows.append({
                "key": KERNELS.index(meta) if meta else (tu, short_name(fn)),
                "tu": tu, "kernel": short_name(fn), "op": meta[1] if meta else "",
                "regs": info.get("regs"), "stack": info.get("stack"),
                "spill": (info.get("spill_st", 0) or 0) + (info.get("spill_ld", 0) or 0),
                "sass": total, "loop": loop_cost, "per_elem": per_elem,
                "read": meta[5] if meta else None, "write": meta[6] if meta else None,
                "min": meta[7] if meta else None,
            })
    print("| TU | kernel | pass (spec) | regs | stack B | spill B | SASS total | SASS hot loop | SASS / element | "
          "read B/el | write B/el | op minimum B/el |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    seen = set()
    for r in rows:
        key = r["key"]
        if key in seen or (not show_all and not r["op"]):
            continue
        seen.add(key)
        print(f"| {r['tu']} | `{r['kernel']}` | {r['op']} | {fmt(r['regs'])} | {fmt(r['stack'])} | {fmt(r['spill'])} | "
              f"{r['sass']} | {fmt(r['loop'])} | {fmt(r['per_elem'])} | {fmt(r['read'])} | {fmt(r['write'])} | "
              f"{fmt(r['min'])} |")
    # A kernel of the list that no longer matches (a renamed kernel, a changed template mangling)
    # would drop its row silently: name it and fail, so the table is never regenerated short.
    matched = {r["key"] for r in rows if isinstance(r["key"], int)}
    missing = [k[0] for i, k in enumerate(KERNELS) if i not in matched and k[0] not in BEFORE_ONLY]
    if era == "after" and missing:
        print("gpu_budget: no kernel in the SASS matches " + ", ".join(missing), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
