#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""Static budget of gcomp's CUDA kernels (issue 13 item 5), from `nvcc -Xptxas -v` and
`cuobjdump -sass`; tools/gpu-budget.sh compiles the translation units and calls this.

  gpu_budget.py --check-sources ROOT   without nvcc: every __global__ kernel under ROOT/cuda has a
                                 KERNELS entry and every entry names one (ctest GpuBudgetKernels)
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
import subprocess
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
    (r"reduce_tiles_kernel.*AbsMaxOp", "linf block max (terngrad, dither linf)", ["LDG", "?LDG*128"], "auto", {}, 4, 0, None),
    (r"reduce_tiles_kernel.*AbsSumOp", "l1 block sums (scaled sign)", ["LDG", "DADD"],  "auto8", {}, 4, 0, None),
    (r"reduce_tiles_kernel.*PowSumOp", "lp block sums", ["LDG", "DADD"],  "auto8", {}, 4, 0, None),
    (r"reduce_tiles_kernel.*SumOp", "terngrad clip: mean and max-magnitude pass (max by atomicMax)", ["LDG", "DADD"],  "auto8", {}, 4, 0, None),
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
    (r"check_finite_kernel",
     "finiteness pass (before: every unscaled encode; after: EF/DIANA variants, randk, encode_with_scales)",
     ["LDG", "?LDG*128"],
     "auto", {}, 4, 0, None),
    # grid: before, a warp per 32 elements for every width (grid_level_rcp, double); after, a quad
    # per thread for B = 8, 16, 32 and the warp layout with grid_level_f for the other widths.
    (r"grid_encode_kernelENS", "grid:bits=16 encode", ["LDG", "SHFL"], 1, {"SHFL": 3}, 4, 2, 6),
    (r"grid_encode_quads_kernelILi2ELNS_6detail8FuseModeE0ELb1E",
     "grid:bits=16 encode, a quad per thread (finiteness folded in)", ["LDG", "STG", "?LDG*128"], "auto", {}, 4, 2, 6),
    (r"grid_encode_quads_kernelILi1ELNS_6detail8FuseModeE0ELb1E",
     "grid:bits=8 encode, a quad per thread (finiteness folded in)", ["LDG", "STG", "?LDG*128"], "auto", {}, 4, 1, 5),
    (r"grid_encode_kernelILb[01]ELb1E", "grid:bits=12 encode of the Session's gradient view (bf16 / f16 loaded "
     "one element per lane; bits 25..31 the same loop, double level)", ["LDG", "SHFL"], 1, {"SHFL": 4}, 2, 1.5, 3.5),
    (r"grid_encode_kernelILb1E", "grid:bits=12 encode, a warp per 32 elements (finiteness folded in)",
     ["LDG", "SHFL"], 1, {"SHFL": 4}, 4, 1.5, 5.5),
    # The Session's step in the quad decoders' last store (SessionStore, cuda/fused/decode_store.cuh;
    # one kernel per decoder, the step chosen at run time): before the plain stores, whose patterns
    # they also match. Per payload as the plain decode-reduce; the step's own arrays once per
    # operation (docs/performance.md "Passes over memory, per operation": mean, vote, two-way, DIANA).
    (r"decode_quads_kernel.*DenseQuadDecoderILb0EEELb0E.*SessionStore",
     "dither:levels=4 decode-reduce, the Session step in its last store (per payload)", ["LDG", "STG"], 4, {}, 0.5,
     4, 4.5),
    (r"decode_quads_kernel.*SignQuadDecoderELb0E.*SessionStore",
     "sign decode-reduce, the Session step in its last store (vote, mean; per payload)", ["LDG", "STG"], 4, {},
     0.125, 4, 4.125),
    (r"decode_quads_kernel.*Lb0E.*SessionStore",
     "natdither, natural, identity, grid decode-reduce, the Session step in its last store (per payload)",
     ["LDG", "STG"], 4, {}, "-", 4, None),
    (r"decode_quads_kernel.*Lb1E.*SessionStore", "quad codecs: decode times a (the Session's downlink, a != 1)",
     ["LDG", "STG"], 4, {}, "-", 4, None),
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
    # The Session's gradient view (ViewMagnitudeKey; randk's scatter with kViewIn): their own
    # instantiations, so the fp32 rows below keep their code. bf16 / f16 elements load one at a time
    # (2 B/el; fp32 with nonfinite=zero 4 B/el), instead of a widened / zeroed copy first (6-8 B/el).
    (r"radix_histogram_kernel.*ViewMagnitudeKey", "topk, gradient view: radix histogram passes (pass 1 and the "
     "full path's)", ["LDG", "MATCH"], 4, {"LDG": 4}, 2, 0, None),
    (r"compact_candidates_kernel.*ViewMagnitudeKey", "topk, gradient view: pass 2, class A counts + candidate "
     "compaction", ["LDG", "VOTE"], 4, {"LDG": 4}, 2, 0.0625, None),
    (r"count_tiles_kernel.*ViewMagnitudeKey", "topk, gradient view: class count pass (full path only; SASS / "
     "element: the view's element load alone)", ["LDG"], 1, {}, 2, 0, None),
    (r"scatter_selected_kernel.*ViewMagnitudeKey", "topk, gradient view: scatter pass", ["LDG", "BAR"], 4, {"LDG": 4}, 2,
     0.02, None),
    (r"scatter_selected_kernel.*RandomKeyELb1E", "randk, gradient view: scatter pass (the gather's widening out of "
     "line)", ["IMAD", "BAR"], 4, {}, 0.02, 0.04, None),
    (r"count_rounds_kernel.*ViewMagnitudeKey", "topk sampled, gradient view: the adaptation rounds' counts, "
     "finiteness (SASS / element: the view's element load alone)", ["LDG"], 1, {}, 2, 0, None),
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
    (r"scatter_selected_kernel.*RandomKey", "randk: scatter pass (decode: the index list)", ["IMAD", "BAR"], {"before": 1, "after": 4}, {},
     0.04, 0.04, None),
    (r"spherical_encode_kernelILb1E", "spherical encode of the Session's gradient view (compute bound)", [], None, {},
     2, "-", None),
    (r"spherical_encode_kernel", "spherical encode (compute bound)", [], None, {}, 4, "-", None),
    # ---- every other kernel under cuda/ (s7): the fused EF/DIANA and overwrite variants, the
    # per-entry, per-word and one-thread kernels. Bytes per element of the n-element arrays; "-"
    # where the kernel's work is per entry (k), per candidate, per word, per block or one thread
    # (its size is then in the pass text).
    # Encodes with the fused memory update: EF reads x (p) and writes e; DIANA reads g and h and
    # writes h; the separate finiteness pass (check_finite_kernel) runs before them.
    (r"quantize_planes_kernelILb1ELNS_6detail8FuseModeE0E", "natdither:levels=4 encode", ["LDG", "SHFL"], 4,
     {"SHFL": 1}, 4, 0.5, 4.5),
    (r"quantize_planes_kernelILb0ELNS_6detail8FuseModeE1E", "dither:levels=4 encode, EF (e = p - v)", ["LDG", "SHFL"],
     4, {"SHFL": 1}, 4, 4.5, 8.5),
    (r"quantize_planes_kernelILb0ELNS_6detail8FuseModeE2E", "dither:levels=4 encode, DIANA (h += alpha v)",
     ["LDG", "SHFL"], 4, {"SHFL": 1}, 8, 4.5, 12.5),
    (r"quantize_planes_kernelILb1ELNS_6detail8FuseModeE[12]E", "natdither:levels=4 encode, EF (DIANA: 4 B more read)",
     ["LDG", "SHFL"], 4, {"SHFL": 1}, 4, 4.5, 8.5),
    (r"encode_sign_kernelILNS_6detail8FuseModeE0ELb0E", "scaled sign encode (after the l1 scale pass)",
     ["LDG", "SHFL"], 4, {}, 4, 0.125, 8.125),
    (r"encode_sign_kernelILNS_6detail8FuseModeE1E", "sign encode, EF", ["LDG", "SHFL"], 4, {}, 4, 4.125, 8.125),
    (r"encode_sign_kernelILNS_6detail8FuseModeE2E", "sign encode, DIANA", ["LDG", "SHFL"], 4, {}, 8, 4.125, 12.125),
    (r"encode_natural_kernelILNS_6detail8FuseModeE1E", "natural encode, EF", ["LDG", "SHFL"], 4, {}, 4, 5.125, 9.125),
    (r"encode_natural_kernelILNS_6detail8FuseModeE2E", "natural encode, DIANA", ["LDG", "SHFL"], 4, {}, 8, 5.125,
     13.125),
    (r"encode_identity_kernelILNS_6detail8FuseModeE1E", "identity encode, EF", ["LDG", "STG"], 4, {}, 4, 8, 12),
    (r"encode_identity_kernelILNS_6detail8FuseModeE2E", "identity encode, DIANA", ["LDG", "STG"], 4, {}, 8, 8, 16),
    (r"grid_encode_quads_kernelILi4ELNS_6detail8FuseModeE0ELb1E",
     "grid:bits=32 encode, a quad per thread (finiteness folded in)", ["LDG", "STG", "?LDG*128"], "auto", {}, 4, 4, 8),
    (r"grid_encode_quads_kernelILi2ELNS_6detail8FuseModeE1E", "grid:bits=16 encode, EF", ["LDG", "STG", "?LDG*128"],
     "auto", {}, 4, 6, 10),
    (r"grid_encode_quads_kernelILi2ELNS_6detail8FuseModeE2E", "grid:bits=16 encode, DIANA",
     ["LDG", "STG", "?LDG*128"], "auto", {}, 8, 6, 14),
    (r"grid_encode_quads_kernelILi[14]ELNS_6detail8FuseModeE[12]E",
     "grid:bits=8 encode, EF (bits=8 DIANA, bits=32 EF/DIANA: the same loop)",
     ["LDG", "STG", "?LDG*128"], "auto", {}, 4, 5, 9),
    (r"grid_encode_kernelILb0E", "grid:bits=28 encode (bits 25..31), a warp per 32 elements, double level",
     ["LDG", "SHFL"], 1, {"SHFL": 4}, 4, 3.5, 7.5),
    # decode: natdither's and bits=32 grid's reduce; the overwrite variants (one payload, out written).
    (r"decode_quads_kernel.*DenseQuadDecoderILb1EEELb0E",
     "natdither:levels=4 decode-reduce, per payload (validation in)", ["LDG", "STG"], 4, {}, 0.5, 4, 4.5),
    (r"decode_quads_kernel.*GridQuadDecoderILi4EEELb0E", "grid:bits=32 decode-reduce, per payload (validation in)",
     ["LDG", "STG"], 4, {}, 4, 4, 8),
    (r"decode_quads_kernel.*DenseQuadDecoderILb0EEELb1E", "dither:levels=4 decode (overwrite, validation in)",
     ["LDG", "STG"], 4, {}, 0.5, 4, 4.5),
    (r"decode_quads_kernel.*DenseQuadDecoderILb1EEELb1E", "natdither:levels=4 decode (overwrite, validation in)",
     ["LDG", "STG"], 4, {}, 0.5, 4, 4.5),
    (r"decode_quads_kernel.*SignQuadDecoderELb1E", "sign decode (overwrite, validation in)", ["LDG", "STG"], 4, {},
     0.125, 4, 4.125),
    (r"decode_quads_kernel.*NaturalQuadDecoderELb1E", "natural decode (overwrite, validation in)", ["LDG", "STG"], 4,
     {}, 1.125, 4, 5.125),
    (r"decode_quads_kernel.*IdentityQuadDecoderELb1E", "identity decode (overwrite, validation in)", ["LDG", "STG"], 4,
     {}, 4, 4, 8),
    (r"decode_quads_kernel.*GridQuadDecoderILi1EEELb1E", "grid:bits=8 decode (overwrite, validation in)",
     ["LDG", "STG"], 4, {}, 1, 4, 5),
    (r"decode_quads_kernel.*GridQuadDecoderILi2EEELb1E", "grid:bits=16 decode (overwrite, validation in)",
     ["LDG", "STG"], 4, {}, 2, 4, 6),
    (r"decode_quads_kernel.*GridQuadDecoderILi4EEELb1E", "grid:bits=32 decode (overwrite, validation in)",
     ["LDG", "STG"], 4, {}, 4, 4, 8),
    (r"decode_quads_kernel.*GridQuadDecoderILi0EEELb1E", "grid:bits=12 decode (overwrite, validation in)",
     ["LDG", "STG"], 4, {}, 1.5, 4, 5.5),
    # Shared by every translation unit (cuda/common/common_kernels.cuh, varlen_kernels.cuh).
    (r"fill_zero_kernel", "decode: out = 0 (a plain reduce of no payload: quad codecs, spherical, sdither)", ["STG"], 1, {}, 0,
     4, None),
    (r"store_zero_sum_kernel", "Session step of a decode-reduce of no payload (sdither, spherical)", ["STG"], 1, {}, 0, 4,
     None),
    (r"check_scales_kernel", "encode_with_scales: the caller's scales checked (per block)", [], None, {}, "-", "-",
     None),
    (r"copy_scales_kernel", "compute_scales: the block scales copied out, +Inf on error when shared (per block)", [],
     None, {}, "-", "-", None),
    (r"prepare_received_kernel", "received messages: size rule, tail zeroed (per payload word)", [], None, {}, "-",
     "-", None),
    # Exact selection (radix_select.cuh): one-block and per-candidate kernels. Candidates: the
    # elements of the threshold's 12-bit bin, about n / 4096 for spread-out keys.
    (r"init_select_kernel", "topk/randk: select state reset (one block)", [], None, {}, "-", "-", None),
    (r"radix_digit_kernel", "topk/randk: digit from the histogram (one block)", [], None, {}, "-", "-", None),
    (r"candidate_histogram_kernel", "topk/randk: 10-bit digit over the candidates (x2; 4 B per candidate)",
     ["LDG", "ATOMS"], 1, {}, "-", "-", None),
    (r"candidate_tile_counts_kernel", "topk/randk: candidates' class counts (12 B per candidate)", ["LDG", "ATOMG"],
     1, {}, "-", "-", None),
    # topk payload and decode (topk_kernels.cuh): per entry (k = n / 100, w = ceil(log2 n) index bits).
    (r"pack_indices_kernel", "topk encode: index words (per word; 8 B per entry read, w/8 written)", [], None, {}, "-",
     "-", None),
    (r"validate_topk_kernel", "topk decode: validation (per entry: 4 + w/8 B)", [], None, {}, "-", "-", None),
    # The sparse decodes' output pass (sparse_merge_kernels.cuh): one CTA per 4096-element tile,
    # the sums in shared memory, the tile's entries staged 1024 at a time and merged payload after
    # payload, each element stored once by the Store (the Session step: before
    # the plain stores, whose patterns they also match). Per launch of up to 64 payloads (index
    # lists: the plan's merge_batch): 4 B/el written, out read for the batches after the first
    # (and accumulate), and per entry 4 + w/8 B (index words, w = 26 at n = 2^26: 0.07 B/el at
    # k = n / 100) or 4 + 8 B (index lists: 0.12 B/el) per payload. Hot loop: the store of the tile
    # (a quad per thread and iteration). Each payload's entries of a tile come from its per-tile
    # entry offsets, written before each launch by sparse_tile_starts_kernel (a k-sized pass).
    (r"sparse_tile_starts_kernel", "topk, randk decode: per-tile entry offsets (per entry: two indices read; 8 B "
     "written per 4096-element tile and payload)", [], None, {}, "-", "-", None),
    (r"sparse_merge_kernel.*PackedEntriesELb0E.*SessionStore",
     "topk decode-reduce (P <= 64): the tile merge, the Session step in its store", ["LDS", "STG"], 4, {},
     "0.07 P", 4, "4 + 0.07 P"),
    (r"sparse_merge_kernel.*ListEntriesELb0E.*SessionStore",
     "topk index=rice, randk decode-reduce (one batch): the tile merge, the Session step in its store",
     ["LDS", "STG"], 4, {}, "0.12 P", 4, "4 + 0.12 P"),
    (r"sparse_merge_kernel.*Lb1E.*SessionStore", "topk, randk: decode times a (the Session's downlink, a != 1)",
     ["LDS", "STG"], 4, {}, 0.07, 4, 4.07),
    (r"sparse_merge_kernel.*PackedEntriesELb0E", "topk decode-reduce (P <= 64): the tile merge, one pass",
     ["LDS", "STG"], 4, {}, "0.07 P", 4, "4 + 0.07 P"),
    (r"sparse_merge_kernel.*ListEntriesELb0E", "topk index=rice, randk decode-reduce (one batch): the tile merge",
     ["LDS", "STG"], 4, {}, "0.12 P", 4, "4 + 0.12 P"),
    (r"sparse_merge_kernel.*PackedEntriesELb1E", "topk decode (overwrite): the tile merge", ["LDS", "STG"], 4, {},
     0.07, 4, 4.07),
    (r"sparse_merge_kernel.*ListEntriesELb1E", "topk index=rice, randk decode (overwrite): the tile merge",
     ["LDS", "STG"], 4, {}, 0.12, 4, 4.12),
    # topk sampled (spec 4.4): the sample, its 8-bit selection, the adaptation rounds.
    (r"gather_sample_kernel", "topk sampled: the sample (n / stride strided loads)", [], None, {}, "-", "-", None),
    (r"sample_threshold_kernel", "topk sampled: threshold from the sample (one thread)", [], None, {}, "-", "-", None),
    (r"count_rounds_kernel", "topk sampled: all ten adaptation rounds' counts of \\|x\\| >= thr_r, per tile, "
     "finiteness", ["LDG"], "auto", {}, 4, 0, None),
    (r"finish_rounds_kernel", "topk sampled: the round that stands, its tile counts, truncate or exact (per tile)",
     [], None, {}, "-", "-", None),
    # randk (randk_kernels.cuh).
    (r"validate_randk_kernel", "randk decode: values finite (per entry: 4 B)", [], None, {}, "-", "-", None),
    (r"write_randk_header_kernel", "randk encode, k = 0: the header (one thread)", [], None, {}, "-", "-", None),
    # topk index=rice (rice_kernels.cuh): per entry, per stream word, per group of 1024 codes.
    (r"rice_len_kernel", "topk index=rice encode: code lengths (per entry: 16 B read, 8 written)", [], None, {},
     "-", "-", None),
    (r"rice_zero_kernel", "topk index=rice encode: stream zeroed (per word)", [], None, {}, "-", "-", None),
    (r"rice_write_kernel", "topk index=rice encode: codes ORed in (per entry)", [], None, {}, "-", "-", None),
    (r"rice_check_kernel", "topk index=rice decode: header, directory, padding, values (per entry / word)", [], None,
     {}, "-", "-", None),
    (r"rice_group_sum_kernel", "topk index=rice decode: group parse, gap sums (one thread per 1024 codes)", [], None,
     {}, "-", "-", None),
    (r"rice_total_kernel", "topk index=rice decode: last index < n (one thread)", [], None, {}, "-", "-", None),
    (r"rice_indices_kernel", "topk index=rice decode: parse again into the batch's index list (one thread per "
     "1024 codes; 8 B written per entry)", [], None, {}, "-", "-", None),
    # sdither (sdither_kernels.cuh): S = the record stream's bits per element (data dependent), W
    # = the worst case's (the stream buffer). The encode after the scale pass: the init kernel
    # (does not read x) and ONE pass over x (look-back scan, records, directory, fused memory).
    (r"sdither_init_kernel", "sdither encode: tile state, scales, stream zeroed (per word)", [], None, {}, 0, "W/8",
     None),
    (r"sdither_encode_kernel", "sdither encode: the one pass (look-back scan + records; the Session's gradient "
     "view: 2 B/el for bf16 / f16, loaded by viewed_element)", [], None, {}, 4, "S/8", None),
    # The decode per payload: the header kernel (no walk of the stream), then ONE walk per chunk
    # that validates and writes (the output is then unspecified on a corrupt payload).
    (r"sdither_validate_header_kernel", "sdither decode: header, directory, padding (per block / chunk / word)", [],
     None, {}, "-", "-", None),
    (r"sdither_decode_kernel.*SessionStore",
     "sdither decode: the last payload's walk with the Session step in its store (one thread per chunk)", [], None,
     {}, "S/8", 4, None),
    (r"sdither_decode_kernel", "sdither decode: the one walk per chunk, validation in (one thread per chunk)", [],
     None, {}, "S/8", 4, None),
    # The decode-reduce of P >= 2 payloads (sdither_merge_kernels.cuh), in batches of
    # sdither_merge_batch (32 KiB of one-byte staging slices: 8 payloads at chunk 4096, 64 at chunk
    # <= 512): one CTA per group of chunks (sdither_merge_group: one chunk of 4096, several short
    # ones), the batch's walks of the group at once (a thread per payload and chunk) into shared
    # memory, then every element summed in payload order and stored once (out read for the batches
    # after the first: 4 B/el). Hot loop: the sum of an element over the slices.
    (r"sdither_merge_kernel.*SessionStore",
     "sdither decode-reduce (a batch): the merged walk, the Session step in its store (a CTA per chunk group)",
     ["LDS", "STG"], 1, {}, "S/8 P", 4, "4 + S/8 P"),
    (r"sdither_merge_kernel", "sdither decode-reduce (a batch): the merged walk, each element stored once "
     "(a CTA per chunk group)", ["LDS", "STG"], 1, {}, "S/8 P", 4, "4 + S/8 P"),
    # spherical (spherical_kernels.cuh): m_l-element blocks, B-bit indices.
    (r"spherical_pack_kernel", "spherical encode: index words (per word)", [], None, {}, "-", "-", None),
    (r"spherical_validate_kernel", "spherical decode: norms and indices (per block)", [], None, {}, "-", "-", None),
    (r"spherical_decode_kernel.*SessionStore",
     "spherical decode: the last payload with the Session step in its store (one thread per block)", [], None, {},
     "-", 4, None),
    (r"spherical_decode_kernel", "spherical decode (one thread per block: codeword regenerated, compute bound)", [],
     None, {}, "-", 4, None),
    (r"codebook_normals_kernel", "spherical: codebook normals for the CPU == GPU test (8 B per normal)", [], None, {},
     0, "-", None),
    # Session device steps (session_kernels.cuh, VecOps<float> of device_ops.cu): grid-stride loops.
    (r"widen_bf16_kernel", "Session: bf16 gradient -> fp32 (the copy: delay queue, track_norms)", ["LDG", "STG"], 1, {},
     2, 4, 6),
    (r"widen_f16_kernel", "Session: f16 gradient -> fp32 (the copy: delay queue, track_norms)", ["LDG", "STG"], 1, {},
     2, 4, 6),
    (r"zero_nonfinite_kernel", "Session nonfinite=zero: dst = finite(src) ? src : 0 (the copy: delay queue, track_norms)",
     ["LDG", "STG"], 1, {}, 4, 4, None),
    (r"scale_kernel", "Session: dst = a x (lr, 1/P)", ["LDG", "STG"], 1, {}, 4, 4, None),
    (r"scale_twice_kernel", "Session: u = b (a x), the mean's two scales in one pass", ["LDG", "STG"], 1, {}, 4, 4,
     None),
    (r"lincomb_kernel", "Session: dst = a x + b y (EF p, momentum, DIANA g^, two-way)", ["LDG", "STG"], 1, {}, 8, 4,
     None),
    (r"lincomb_src_kernel", "Session: dst = a x + b y, x the bf16 gradient view (widened as loaded; nonfinite=zero's +0)",
     ["LDG", "STG"], 1, {}, 6, 4, None),
    (r"mul_kernel", "Session: dst = x y (compensation=diagonal)", ["LDG", "STG"], 1, {}, 8, 4, None),
    (r"vote_kernel", "Session majority vote: u = lr sign(acc) (uplink codecs without the fused store)",
     ["LDG", "STG"], 1, {}, 4, 4, None),
    (r"nonfinite_flag_kernel", "Session nonfinite=error/skip: any non-finite (late agreement: only after the encode "
     "reported one; a delay, hessian-ec: every step)", ["LDG"], 1, {}, 4, 0, None),
    (r"nonfinite_flag_src_kernel", "Session nonfinite=error/skip: any non-finite in a bf16/f16 gradient view (as above)",
     ["LDG"], 1, {}, 2, 0, None),
    (r"merge_status_kernel", "Session: call status -> step status (one thread)", [], None, {}, "-", "-", None),
    (r"status_words_kernel", "Session: the status words of the message slots (one thread per slot)", [], None, {}, "-",
     "-", None),
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


def _plain_name(mangled):
    """The kernel's identifier from its mangled name (<length><identifier> of the Itanium ABI)."""
    for m in re.finditer(r"_kernel", mangled):
        end = m.end()
        for length in range(len("_kernel") + 1, end + 1):
            start = end - length
            digits = str(length)
            if mangled[start - len(digits):start] == digits and mangled[start].isalpha():
                return mangled[start:end]
    return mangled[:40]


def _demangle(names):
    """mangled -> demangled by c++filt (binutils, present wherever nvcc is), {} without it."""
    try:
        out = subprocess.run(["c++filt"], input="\n".join(names), capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return {}
    lines = out.split("\n")
    return dict(zip(names, lines)) if len(lines) >= len(names) else {}


_DEMANGLED = {}


def short_name(mangled):
    """kernel<template arguments> without namespaces and parameters, e.g.
    decode_quads_kernel<GridQuadDecoder<2>, false>; the plain identifier when c++filt is absent."""
    name = _plain_name(mangled)
    full = _DEMANGLED.get(mangled)
    if full:
        full = re.sub(r"\(anonymous namespace\)::|gcomp::cuda::detail::|gcomp::detail::", "", full)
        if "_kernel" not in mangled:  # CUB's own kernels (--all): their identifier alone
            m = re.search(r"([A-Za-z_]\w*)\s*[<(]", full.replace("void ", "", 1))
            return m.group(1) if m else name
        at = full.find(name)
        if at >= 0:
            depth = 0
            for i in range(at + len(name), len(full)):
                c = full[i]
                if c == "<":
                    depth += 1
                elif c == ">":
                    depth -= 1
                elif c == "(" and depth == 0:
                    return full[at:i]
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


# `__global__ void [__launch_bounds__(...)] name(` in the CUDA sources (comments removed first).
GLOBAL_KERNEL = re.compile(r"__global__\s+void\s+(?:__launch_bounds__\s*\([^)]*\)\s*)?([A-Za-z_]\w*)\s*\(")
# The kernel identifiers an entry's pattern names (lower case, ending in _kernel).
ENTRY_KERNEL = re.compile(r"[a-z][a-z0-9_]*?_kernel")


def source_kernels(root):
    """{kernel identifier: first file that defines it} of every __global__ function under root/cuda."""
    found = {}
    for dirpath, _, files in os.walk(os.path.join(root, "cuda")):
        for f in sorted(files):
            if not f.endswith((".cu", ".cuh", ".hpp", ".h")):
                continue
            path = os.path.join(dirpath, f)
            with open(path, encoding="utf-8") as fh:
                text = fh.read()
            text = re.sub(r"//[^\n]*|/\*.*?\*/", " ", text, flags=re.S)
            for m in GLOBAL_KERNEL.finditer(text):
                found.setdefault(m.group(1), os.path.relpath(path, root))
    return found


def check_sources(root):
    """The KERNELS list against the sources, without nvcc: every __global__ kernel under cuda/ is
    named by an entry, and every entry (but the BEFORE_ONLY ones, of removed code) names a kernel
    that exists. Returns the list of problems."""
    kernels = source_kernels(root)
    problems = []
    if not kernels:
        return [f"no __global__ kernel found under {root}/cuda"]
    named = {}
    for entry in KERNELS:
        for k in ENTRY_KERNEL.findall(entry[0]):
            named.setdefault(k, []).append(entry[0])
    for k, where in sorted(kernels.items()):
        if k not in named:
            problems.append(f"{where}: kernel {k} has no KERNELS entry in tools/gpu_budget.py")
    for entry in KERNELS:
        if entry[0] in BEFORE_ONLY:
            continue
        names = ENTRY_KERNEL.findall(entry[0])
        if not any(k in kernels for k in names):
            problems.append(f"KERNELS entry {entry[0]!r} ({entry[1]}) names no __global__ kernel under cuda/")
    return problems


def main(argv):
    if len(argv) == 3 and argv[1] == "--check-sources":
        problems = check_sources(argv[2])
        for p in problems:
            print("gpu_budget: " + p, file=sys.stderr)
        if not problems:
            print(f"gpu_budget: {len(source_kernels(argv[2]))} kernels under cuda/, each with a KERNELS entry; "
                  f"{len(KERNELS) - len(BEFORE_ONLY)} entries, each naming one")
        return 1 if problems else 0
    show_all = "--all" in argv
    era = "before" if "--before" in argv else "after"
    args = [a for a in argv[1:] if a not in ("--all", "--before")]
    if len(args) != 1:
        print(__doc__, file=sys.stderr)
        return 64
    out = args[0]
    rows = []
    tus = sorted(f[:-5] for f in os.listdir(out) if f.endswith(".sass"))
    parsed = {tu: (parse_ptxas(os.path.join(out, tu + ".ptxas")), parse_sass(os.path.join(out, tu + ".sass")))
              for tu in tus}
    _DEMANGLED.update(_demangle(sorted({fn for _, sass in parsed.values() for fn in sass})))
    for tu in tus:
        ptx, sass = parsed[tu]
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
                "key": KERNELS.index(meta) if meta else (tu, short_name(fn)), "fn": fn,
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
    # would drop its row silently, and a kernel no entry matches would have none: name them and
    # fail, so the table is never regenerated short (CUB's own kernels have no row).
    matched = {r["key"] for r in rows if isinstance(r["key"], int)}
    missing = [k[0] for i, k in enumerate(KERNELS) if i not in matched and k[0] not in BEFORE_ONLY]
    unlisted = sorted({r["kernel"] for r in rows
                       if not isinstance(r["key"], int) and not r["fn"].startswith("_ZN3cub")})
    if era == "after" and missing:
        print("gpu_budget: no kernel in the SASS matches " + ", ".join(missing), file=sys.stderr)
    if era == "after" and unlisted:
        print("gpu_budget: no KERNELS entry matches " + ", ".join(unlisted), file=sys.stderr)
    return 1 if era == "after" and (missing or unlisted) else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
