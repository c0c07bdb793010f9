// SPDX-License-Identifier: Apache-2.0
// Device entries of topk (cuda/topk) and randk (cuda/randk; DeviceCodecEntry in plan.cuh): plans,
// exact radix selection, fused EF/DIANA updates, index packing, the DGC-style sampled top-k, and
// the decodes (P payloads in rank order): validation, then the tile merge that writes each output
// element once, with the Session's step in its store (decode_store; cuda/topk/sparse_merge_kernels.cuh).
#include "cuda/common/common_kernels.cuh"
#include "cuda/common/cuda_check.cuh"
#include "cuda/dispatch/plan.cuh"
#include "cuda/randk/randk_kernels.cuh"
#include "cuda/topk/radix_select.cuh"
#include "cuda/topk/sparse_merge_kernels.cuh"
#include "cuda/topk/topk_kernels.cuh"
#include "host/codecs/registry.hpp"

#include <gcomp/detail/codec_math.hpp>
#include <gcomp/detail/rice.hpp>
#include <gcomp/detail/sparse.hpp>

#include <cub/device/device_scan.cuh>

#include <algorithm>
#include <cmath>
#include <type_traits>

namespace gcomp::cuda::detail {

namespace {

unsigned selection_grid(const DevicePlan& plan, int64_t n) {
  // Per-block histogram counters are 32-bit: keep every block under 2^31 elements.
  return grid_for(n, kThreads * 16, plan.max_blocks, gcomp::detail::ceil_div(n, int64_t{1} << 31));
}

void init_select(const Workspace& ws, int64_t k, const uint8_t* header, uint32_t step, uint32_t rank,
                 cudaStream_t stream) {
  GCOMP_LAUNCH(init_select_kernel, 1, kThreads, stream, ws.select, ws.hist, k,
               reinterpret_cast<const uint32_t*>(header), step, rank);
}

/// One digit: its histogram over the n elements, then the digit.
template <class KeyFn>
void full_digit(const DevicePlan& plan, const Workspace& ws, KeyFn kf, int64_t n, int shift, int bits, bool report,
                int64_t cand_cap, int run, cudaStream_t stream) {
  GCOMP_LAUNCH((radix_histogram_kernel<KeyFn>), selection_grid(plan, n), kThreads, stream, kf, n, shift, bits,
               ws.select, ws.hist, ws.status, report, run);
  GCOMP_LAUNCH(radix_digit_kernel, 1, kThreads, stream, ws.select, ws.hist, shift, bits, cand_cap, run);
}

/// Steps 1-2 of radix_select.cuh over the plan's n elements: T, k_rem and the per-tile class counts
/// in cnt_a/cnt_b. Both paths after the first digit are enqueued; the device runs the one the
/// first digit chose (the other's kernels return at once).
template <class KeyFn>
void select_threshold_and_counts(const DevicePlan& plan, const Workspace& ws, KeyFn kf, bool report_nonfinite,
                                 cudaStream_t stream) {
  const int64_t n = plan.n;
  full_digit(plan, ws, kf, n, 20, 12, report_nonfinite, plan.cand_cap, kRunAlways, stream);  // pass 1
  // Candidate path: pass 2, then two 10-bit digits on the candidates, then their class counts.
  const int64_t tiles = plan.sel_tiles;
  GCOMP_LAUNCH((compact_candidates_kernel<KeyFn>), grid_for(tiles, 1, plan.max_blocks), kThreads, stream, kf, n, tiles,
               ws.select, ws.cnt_a, ws.cnt_b, ws.cand_key, ws.cand_idx);
  const unsigned cand_grid = grid_for(plan.cand_cap, kThreads, plan.max_blocks);
  for (const int shift : {10, 0}) {
    GCOMP_LAUNCH(candidate_histogram_kernel, cand_grid, kThreads, stream, ws.select, ws.hist, ws.cand_key, shift, 10);
    GCOMP_LAUNCH(radix_digit_kernel, 1, kThreads, stream, ws.select, ws.hist, shift, 10, int64_t{0}, kRunCandidates);
  }
  GCOMP_LAUNCH(candidate_tile_counts_kernel, cand_grid, kThreads, stream, ws.select, ws.cand_key, ws.cand_idx, ws.cnt_a,
               ws.cnt_b);
  // Full path: three more digits over the n elements, then the class counts.
  full_digit(plan, ws, kf, n, 12, 8, false, 0, kRunFull, stream);
  full_digit(plan, ws, kf, n, 4, 8, false, 0, kRunFull, stream);
  full_digit(plan, ws, kf, n, 0, 4, false, 0, kRunFull, stream);
  GCOMP_LAUNCH((count_tiles_kernel<KeyFn>), grid_for(tiles, 1, plan.max_blocks), kThreads, stream, kf, n, tiles,
               ws.select, ws.cnt_a, ws.cnt_b, kRunFull);
}

/// Step 3 of radix_select.cuh: the scans of the tile counts and the scatter pass (kViewIn: the
/// encode's input is the Session's gradient view, scatter_selected_kernel).
template <class KeyFn, bool kViewIn = false>
void scan_and_scatter(const DevicePlan& plan, const Workspace& ws, KeyFn kf, const ScatterArgs& args,
                      cudaStream_t stream) {
  const int64_t tiles = plan.sel_tiles;
  size_t bytes = plan.scan_temp_bytes;
  GCOMP_CUDA_TRY(cub::DeviceScan::ExclusiveSum(ws.scan_temp, bytes, ws.cnt_a, ws.off_a, tiles, stream));
  bytes = plan.scan_temp_bytes;
  GCOMP_CUDA_TRY(cub::DeviceScan::ExclusiveSum(ws.scan_temp, bytes, ws.cnt_b, ws.off_b, tiles, stream));
  GCOMP_LAUNCH((scatter_selected_kernel<KeyFn, kViewIn>), grid_for(tiles, 1, plan.max_blocks), kThreads, stream, kf,
               plan.n, tiles, ws.select, ws.off_a, ws.off_b, args, ws.status);
}

/// The exact selection of k over the plan's n elements, scattered by `args`.
template <class KeyFn, bool kViewIn = false>
void select_exact(const DevicePlan& plan, const Workspace& ws, KeyFn kf, const ScatterArgs& args, bool report_nonfinite,
                  cudaStream_t stream) {
  select_threshold_and_counts(plan, ws, kf, report_nonfinite, stream);
  scan_and_scatter<KeyFn, kViewIn>(plan, ws, kf, args, stream);
}

/// Four 8-bit digits over `n` keys (the DGC sample: small, no candidate path).
template <class KeyFn>
void radix_passes_8bit(const DevicePlan& plan, const Workspace& ws, KeyFn kf, int64_t n, cudaStream_t stream) {
  for (int shift = 24; shift >= 0; shift -= 8) full_digit(plan, ws, kf, n, shift, 8, false, 0, kRunAlways, stream);
}

float randk_value_scale(const DevicePlan& plan) {
  return plan.unbiased ? gcomp::detail::randk_scale(plan.n, plan.k) : 1.0f;
}

/// DGC-style threshold (spec §4.4) into the select state: sample, select on the sample, adapt.
/// KeyFn: MagnitudeKey, or ViewMagnitudeKey for the Session's gradient view.
template <class KeyFn>
void sampled_threshold(const DevicePlan& plan, const Workspace& ws, Input in, cudaStream_t stream) {
  constexpr bool kView = std::is_same_v<KeyFn, ViewMagnitudeKey>;
  GCOMP_LAUNCH(gather_sample_kernel<kView>, grid_for(plan.sample_count, kThreads, plan.max_blocks), kThreads, stream,
               in, plan.sample_start, plan.sample_stride, plan.sample_count, ws.sample);
  init_select(ws, plan.sample_k, nullptr, 0, 0, stream);
  radix_passes_8bit(plan, ws, MagnitudeKey{Input{ws.sample, nullptr}}, plan.sample_count, stream);
  GCOMP_LAUNCH(sample_threshold_kernel, 1, 1, stream, ws.select, plan.k);
  // Every adaptation round's count in one pass over x (which also checks finiteness), then the
  // round that stands, its tile counts as the truncate mode's class counts, and the mode.
  GCOMP_LAUNCH(count_rounds_kernel<KeyFn>, grid_for(plan.sel_tiles, 1, plan.max_blocks), kThreads, stream, in, plan.n,
               plan.sel_tiles, ws.select, ws.round_cnt, ws.status);
  GCOMP_LAUNCH(finish_rounds_kernel, grid_for(plan.sel_tiles, kThreads, plan.max_blocks), kThreads, stream, ws.select,
               plan.k, ws.round_cnt, plan.sel_tiles, ws.cnt_a, ws.cnt_b);
}

}  // namespace

size_t query_scan_temp_bytes(int64_t items) {
  size_t bytes = 0;
  GCOMP_CUDA_TRY(cub::DeviceScan::ExclusiveSum(nullptr, bytes, static_cast<int64_t*>(nullptr),
                                               static_cast<int64_t*>(nullptr), items));
  return bytes;
}

namespace {

/// The scatter pass's arguments for an encode: what it reads and how it updates the memory
/// (topk and randk add their outputs).
ScatterArgs encode_scatter_args(Input in, Fuse fuse, float* d_mem, float alpha) {
  ScatterArgs args{};
  args.op = ScatterOp::kEncode;
  args.fuse = fuse;
  args.in = in;
  args.mem = d_mem;
  args.alpha = alpha;
  return args;
}

/// topk's selection (or, `sampled`, the DGC-style threshold first) with keys KeyFn: MagnitudeKey,
/// or ViewMagnitudeKey for the Session's gradient view.
template <class KeyFn>
void topk_select(const DevicePlan& plan, const Workspace& ws, Input in, const ScatterArgs& args, bool sampled,
                 cudaStream_t stream) {
  KeyFn kf{};
  kf.in = in;
  if (sampled) {
    sampled_threshold<KeyFn>(plan, ws, in, stream);  // its first count pass checks finiteness
    // Truncate mode (decided on the device) skips the exact selection; otherwise it runs here.
    select_exact(plan, ws, kf, args, false, stream);
  } else {
    init_select(ws, plan.k, nullptr, 0, 0, stream);
    select_exact(plan, ws, kf, args, true, stream);
  }
}

/// topk: the exact selection (or, `sampled`, the DGC-style threshold), then the index words or the
/// Rice-coded index stream.
void topk_encode_impl(const DevicePlan& plan, const Workspace& ws, Input in, uint8_t* d_payload, Fuse fuse,
                      float* d_mem, float alpha, bool sampled, cudaStream_t stream) {
  if (plan.n == 0) return;  // k = 0: topk writes nothing (as the CPU codec)
  ScatterArgs args = encode_scatter_args(in, fuse, d_mem, alpha);
  args.vals_out = reinterpret_cast<float*>(d_payload);
  args.idx_out = ws.idx;
  args.scale = 1.0f;
  // DIANA into a separate h_out (the Session's second buffer): every element written by the
  // scatter, h itself where not selected (DeviceCodecEntry::diana_full_memory: no copy of h).
  args.full_memory = fuse == Fuse::kDiana && plan.fold_check;
  if (in.src == gcomp::detail::kSrcF32)
    topk_select<MagnitudeKey>(plan, ws, in, args, sampled, stream);
  else
    topk_select<ViewMagnitudeKey>(plan, ws, in, args, sampled, stream);
  if (plan.rice) {
    launch_rice_pack(plan, ws, d_payload, stream);
    return;
  }
  const int64_t words = gcomp::detail::ceil_div(plan.k * plan.index_bits, 32);
  GCOMP_LAUNCH(pack_indices_kernel, grid_for(words, kThreads, plan.max_blocks), kThreads, stream, ws.idx, plan.k,
               plan.index_bits, reinterpret_cast<uint32_t*>(d_payload + 4 * plan.k), words, ws.status);
}

void topk_encode(const DevicePlan& plan, const Workspace& ws, Input in, const RngKey&, uint8_t* d_payload, Fuse fuse,
                 float* d_mem, float alpha, cudaStream_t stream) {
  topk_encode_impl(plan, ws, in, d_payload, fuse, d_mem, alpha, false, stream);
}

void topk_encode_sampled(const DevicePlan& plan, const Workspace& ws, Input in, const RngKey&, uint8_t* d_payload,
                         Fuse fuse, float* d_mem, float alpha, cudaStream_t stream) {
  topk_encode_impl(plan, ws, in, d_payload, fuse, d_mem, alpha, true, stream);
}

void randk_encode(const DevicePlan& plan, const Workspace& ws, Input in, const RngKey& key, uint8_t* d_payload,
                  Fuse fuse, float* d_mem, float alpha, cudaStream_t stream) {
  if (plan.n == 0) {  // k = 0: randk writes its header (as the CPU codec)
    GCOMP_LAUNCH(write_randk_header_kernel, 1, 1, stream, reinterpret_cast<uint32_t*>(d_payload), key.step, key.rank);
    return;
  }
  ScatterArgs args = encode_scatter_args(in, fuse, d_mem, alpha);
  // The EF scatter reads every element of the input; with a memory the caller drops on failure
  // (the Session's second buffer, plan.fold_check) it checks them there, without a pass of its own.
  args.check = fuse == Fuse::kEF && plan.fold_check;
  if (!args.check)
    GCOMP_LAUNCH(check_finite_kernel,
                 grid_for(gcomp::detail::ceil_div(plan.n, int64_t{lanes::kQuadElems}), kThreads, plan.max_blocks),
                 kThreads, stream, in, plan.n, ws.status);
  args.hdr_out = reinterpret_cast<uint32_t*>(d_payload);
  args.vals_out = reinterpret_cast<float*>(d_payload + 8);
  args.scale = randk_value_scale(plan);
  const RandomKey kf{key};
  init_select(ws, plan.k, nullptr, key.step, key.rank, stream);
  if (in.src == gcomp::detail::kSrcF32)
    select_exact(plan, ws, kf, args, false, stream);
  else
    select_exact<RandomKey, true>(plan, ws, kf, args, false, stream);  // the gather loads the gradient view
}

// ---- decodes: validation, then the tile merge (cuda/topk/sparse_merge_kernels.cuh) ---------------

/// The tile merge of P payloads after their validation: kOverwrite decodes payload 0; kAccumulate
/// and kReduce run batches of the plan's merge_batch (<= kMaxWeights) payloads in order, each
/// continuing the sums of the one before (the first from zeros for kReduce). Per batch:
/// `prepare(first, count)` enqueues what the batch's index lists need, then the per-tile entry
/// offsets (sparse_tile_starts_kernel, k-sized), then the merge of the Entries `entries(first)`.
/// `store` is applied by the last launch only (the earlier batches keep their partial sums in
/// d_out); a reduce of no payload stores zeros (through `store`).
template <class Store, class Prepare, class MakeEntries>
void launch_sparse_merge(const DevicePlan& plan, const Workspace& ws, int num_payloads, const float* h_weights,
                         DecodeMode mode, float scale, float* d_out, cudaStream_t stream, const Store& store,
                         Prepare prepare, MakeEntries entries) {
  using Entries = decltype(entries(0));
  constexpr bool kPlain = std::is_same_v<Store, PlainStore>;
  const int64_t tiles = gcomp::detail::ceil_div(plan.n, int64_t{kMergeTile});
  const unsigned grid = grid_for(tiles, 1, plan.max_blocks);
  const auto starts = [&](int first, int count) {
    prepare(first, count);
    GCOMP_LAUNCH((sparse_tile_starts_kernel<Entries>), grid_for(count * (plan.k + 1), kThreads, plan.max_blocks),
                 kThreads, stream, entries(first), count, tiles, ws.merge_starts, ws.status);
  };
  WeightList w{};
  if (mode == DecodeMode::kOverwrite) {
    starts(0, 1);
    GCOMP_LAUNCH((sparse_merge_kernel<Entries, true, Store>), grid, kThreads, stream, entries(0), plan.n, 1,
                 ws.merge_starts, w, scale, true, d_out, ws.status, store);
    return;
  }
  if (num_payloads == 0) {
    if (mode == DecodeMode::kReduce)
      GCOMP_LAUNCH((sparse_merge_kernel<Entries, false, Store>), grid, kThreads, stream, entries(0), plan.n, 0,
                   ws.merge_starts, w, scale, true, d_out, ws.status, store);
    return;
  }
  for (int first = 0; first < num_payloads; first += plan.merge_batch) {
    const int count = std::min(plan.merge_batch, num_payloads - first);
    for (int j = 0; j < count; ++j) w.w[j] = h_weights != nullptr ? h_weights[first + j] : 1.0f;
    const bool from_zero = mode == DecodeMode::kReduce && first == 0;
    starts(first, count);
    if (kPlain || first + count < num_payloads)
      GCOMP_LAUNCH((sparse_merge_kernel<Entries, false, PlainStore>), grid, kThreads, stream, entries(first), plan.n,
                   count, ws.merge_starts, w, scale, from_zero, d_out, ws.status, PlainStore{});
    else
      GCOMP_LAUNCH((sparse_merge_kernel<Entries, false, Store>), grid, kThreads, stream, entries(first), plan.n, count,
                   ws.merge_starts, w, scale, from_zero, d_out, ws.status, store);
  }
}

/// Payloads per tile merge of the codecs with index lists in the workspace (topk index=rice,
/// randk): up to kMaxWeights lists of k int64 indices, within max(4 n, 1 MiB) bytes (the output's
/// own size for large n), at least one.
int list_merge_batch(int64_t n, int64_t k) {
  if (k <= 0) return 1;
  const int64_t budget = std::max<int64_t>(4 * n, int64_t{1} << 20);
  return static_cast<int>(std::clamp<int64_t>(budget / (8 * k), 1, kMaxWeights));
}

/// topk: every payload validated (index words: validate_topk_kernel; index=rice: its checks), then
/// the tile merge (index words read in place; index=rice parsed per batch into ws.idx).
template <class Store>
void topk_decode_with(const DevicePlan& plan, const Workspace& ws, const uint8_t* d_payloads, size_t stride,
                      int num_payloads, const float* h_weights, DecodeMode mode, float* d_out, cudaStream_t stream,
                      const Store& store) {
  if (plan.n == 0) return;
  const int checked = mode == DecodeMode::kOverwrite ? std::min(num_payloads, 1) : num_payloads;
  if (plan.rice) {
    launch_rice_validate(plan, ws, d_payloads, stride, checked, stream);
    const auto prepare = [&](int first, int count) {
      for (int j = 0; j < count; ++j)
        launch_rice_indices(plan, ws, d_payloads + static_cast<size_t>(first + j) * stride,
                            static_cast<uint64_t>(first + j) << 40, ws.idx + static_cast<int64_t>(j) * plan.k, stream);
    };
    const auto entries = [&](int first) {
      return ListEntries{d_payloads + static_cast<size_t>(first) * stride, stride, plan.k, 0, ws.idx};
    };
    launch_sparse_merge(plan, ws, num_payloads, h_weights, mode, 1.0f, d_out, stream, store, prepare, entries);
    return;
  }
  const unsigned grid_k = grid_for(plan.k, kThreads, plan.max_blocks);
  for (int j = 0; j < checked; ++j) {
    const uint8_t* pj = d_payloads + static_cast<size_t>(j) * stride;
    const uint64_t base = static_cast<uint64_t>(j) << 40;
    GCOMP_LAUNCH(validate_topk_kernel, grid_k, kThreads, stream, pj, plan.n, plan.k, plan.index_bits, base, ws.status);
  }
  const auto entries = [&](int first) {
    return PackedEntries{d_payloads + static_cast<size_t>(first) * stride, stride, plan.k, plan.index_bits};
  };
  launch_sparse_merge(
      plan, ws, num_payloads, h_weights, mode, 1.0f, d_out, stream, store, [](int, int) {}, entries);
}

/// randk: every payload's values validated, then per batch each payload's selection regenerated
/// (its seed and stream from its key, step and rank from its header) into its index list in
/// ws.idx, then the tile merge of the batch (values times n/k when unbiased).
template <class Store>
void randk_decode_with(const DevicePlan& plan, const Workspace& ws, const uint8_t* d_payloads, size_t stride,
                       int num_payloads, const float* h_weights, DecodeMode mode, const RngKey* keys, float* d_out,
                       cudaStream_t stream, const Store& store) {
  if (plan.n == 0) return;
  const int checked = mode == DecodeMode::kOverwrite ? std::min(num_payloads, 1) : num_payloads;
  const unsigned grid_k = grid_for(plan.k, kThreads, plan.max_blocks);
  for (int j = 0; j < checked; ++j) {
    const uint8_t* pj = d_payloads + static_cast<size_t>(j) * stride;
    const uint64_t base = static_cast<uint64_t>(j) << 40;
    GCOMP_LAUNCH(validate_randk_kernel, grid_k, kThreads, stream, pj, plan.k, base, ws.status);
  }
  const auto prepare = [&](int first, int count) {
    for (int j = 0; j < count; ++j) {
      const uint8_t* pj = d_payloads + static_cast<size_t>(first + j) * stride;
      ScatterArgs args{};
      args.op = ScatterOp::kDecodeIndices;
      args.idx_out = ws.idx + static_cast<int64_t>(j) * plan.k;
      const RandomKey kf{keys[first + j]};  // payload's seed and stream; its step and rank from its header
      init_select(ws, plan.k, pj, 0, 0, stream);
      select_exact(plan, ws, kf, args, false, stream);
    }
  };
  const auto entries = [&](int first) {
    return ListEntries{d_payloads + static_cast<size_t>(first) * stride, stride, plan.k, 8, ws.idx};
  };
  launch_sparse_merge(plan, ws, num_payloads, h_weights, mode, randk_value_scale(plan), d_out, stream, store, prepare,
                      entries);
}

void topk_decode(const DevicePlan& plan, const Workspace& ws, const uint8_t* d_payloads, size_t stride,
                 int num_payloads, const float* h_weights, DecodeMode mode, const RngKey*, float* d_out,
                 cudaStream_t stream) {
  topk_decode_with(plan, ws, d_payloads, stride, num_payloads, h_weights, mode, d_out, stream, PlainStore{});
}

void topk_decode_store(const DevicePlan& plan, const Workspace& ws, const uint8_t* d_payloads, size_t stride,
                       int num_payloads, DecodeMode mode, const RngKey*, const SessionStore& store, float* d_out,
                       cudaStream_t stream) {
  topk_decode_with(plan, ws, d_payloads, stride, num_payloads, nullptr, mode, d_out, stream, store);
}

void randk_decode(const DevicePlan& plan, const Workspace& ws, const uint8_t* d_payloads, size_t stride,
                  int num_payloads, const float* h_weights, DecodeMode mode, const RngKey* keys, float* d_out,
                  cudaStream_t stream) {
  randk_decode_with(plan, ws, d_payloads, stride, num_payloads, h_weights, mode, keys, d_out, stream, PlainStore{});
}

void randk_decode_store(const DevicePlan& plan, const Workspace& ws, const uint8_t* d_payloads, size_t stride,
                        int num_payloads, DecodeMode mode, const RngKey* keys, const SessionStore& store, float* d_out,
                        cudaStream_t stream) {
  randk_decode_with(plan, ws, d_payloads, stride, num_payloads, nullptr, mode, keys, d_out, stream, store);
}

// ---- plans and workspace parts ------------------------------------------------------------------

/// topk and randk: k and the sizes of the exact selection.
void sparse_plan(DevicePlan& p, const CodecSpec& spec) {
  p.k = gcomp::detail::sparse_k_of(spec, p.n);
  p.index_bits = static_cast<int>(gcomp::detail::ceil_log2_u64(static_cast<uint64_t>(p.n)));
  p.sel_tiles = gcomp::detail::ceil_div(p.n, kSelectTile);
  p.cand_cap = std::min<int64_t>(p.n, p.n / 16 + 4096);
  p.scan_temp_bytes = p.sel_tiles > 0 ? query_scan_temp_bytes(p.sel_tiles) : 0;
}

/// spec §4.4 sampling (synxlin): stride = ceil(n / max(ceil(0.01 n), ceil(2/rho)) / 32) * 32 + 1,
/// lowered by 8 while n / stride is below the target; everything when n <= ceil(2/rho).
void plan_sample(DevicePlan& p) {
  const double n = static_cast<double>(p.n);
  const double rho = static_cast<double>(p.k) / n;
  const double target = std::max(std::ceil(0.01 * n), std::ceil(2.0 / rho));
  int64_t stride = 1;
  if (n > std::ceil(2.0 / rho)) {
    stride = static_cast<int64_t>(std::ceil(n / target / 32.0)) * 32 + 1;
    while (stride > 8 && n / static_cast<double>(stride) < target) stride -= 8;
    stride = std::clamp<int64_t>(stride, 1, p.n);
  }
  p.sample_stride = stride;
  p.sample_start = 0;  // drawn per call from the RngKey (sample_start_for)
  // Sized for the largest sample (start 0); a call with start > 0 takes one or a few fewer.
  p.sample_count = gcomp::detail::ceil_div(p.n, stride);
  p.sample_k = 0;
}

/// topk index=rice (docs/wire-format.md §3.4.1): the CPU codec's parameters and sizes.
void plan_rice(DevicePlan& p, const Codec& cpu) {
  p.rice = true;
  p.rice_b = gcomp::detail::rice_param(p.n, p.k);
  p.rice_dir = gcomp::detail::rice_dir_entries(p.k);
  p.rice_worst_bits = static_cast<int64_t>(gcomp::detail::rice_worst_bits(p.n, p.k, p.rice_b));
  p.rice_words = gcomp::detail::ceil_div(p.rice_worst_bits, 32);
  p.rice_scan_temp_bytes = query_rice_scan_temp_bytes(p.k);
  p.merge_batch = list_merge_batch(p.n, p.k);
  GCOMP_EXPECTS(
      p.payload_bytes == static_cast<size_t>(4 * (p.k + 1 + p.rice_dir + p.rice_words)) && cpu.variable_length(),
      gcompErrorInternal, "DeviceCodec: topk index=rice payload size disagrees with the CPU codec");
}

void topk_plan(DevicePlanner& planner, const CodecSpec& spec) {
  DevicePlan& p = planner.plan;
  sparse_plan(p, spec);
  p.merge_batch = kMaxWeights;  // index words: read in place (index=rice: plan_rice)
  p.input_reads = 3;            // the 12-bit histogram, the class counts and compaction, the scatter
  p.loads_view = true;          // ViewMagnitudeKey: every pass over x loads the gradient view
  if (p.n > 0) plan_sample(p);
  if (spec.options<TopKOptions>().index == IndexCode::kRice) plan_rice(p, planner.cpu);
}

void randk_plan(DevicePlanner& planner, const CodecSpec& spec) {
  sparse_plan(planner.plan, spec);
  planner.plan.unbiased = spec.options<RandKOptions>().unbiased;
  planner.plan.merge_batch = list_merge_batch(planner.plan.n, planner.plan.k);
  planner.plan.loads_view = true;  // check_finite_kernel and the scatter's gather load the gradient view
}

/// The exact selection's state, histogram, candidates, tile counts and scan storage.
void selection_workspace(const DevicePlan& p, WorkspaceLayout& wl, Carver& c) {
  const size_t tiles = static_cast<size_t>(p.sel_tiles);
  wl.select = c.take(sizeof(SelectState));
  wl.hist = c.take(kSelectBins * sizeof(unsigned long long));
  wl.cand_key = c.take(static_cast<size_t>(p.cand_cap) * sizeof(uint32_t));
  wl.cand_idx = c.take(static_cast<size_t>(p.cand_cap) * sizeof(int64_t));
  wl.cnt_a = c.take(tiles * sizeof(int64_t));
  wl.cnt_b = c.take(tiles * sizeof(int64_t));
  wl.off_a = c.take(tiles * sizeof(int64_t));
  wl.off_b = c.take(tiles * sizeof(int64_t));
  wl.scan_temp = c.take(p.scan_temp_bytes);
}

/// The decode's per-tile entry offsets: merge_batch payloads x (tiles + 1).
void merge_workspace(const DevicePlan& p, WorkspaceLayout& wl, Carver& c) {
  const auto tiles = static_cast<size_t>(gcomp::detail::ceil_div(p.n, int64_t{kMergeTile}));
  wl.merge_starts = c.take(static_cast<size_t>(p.merge_batch) * (tiles + 1) * sizeof(int64_t));
}

/// topk: the selection, the k indices (index=rice: merge_batch lists of k for the decode), the
/// sample and (index=rice) the code lengths and offsets.
void topk_workspace(const DevicePlan& p, WorkspaceLayout& wl, Carver& c) {
  if (p.n == 0) return;
  selection_workspace(p, wl, c);
  const int lists = p.rice ? p.merge_batch : 1;
  wl.idx = c.take(static_cast<size_t>(p.k) * static_cast<size_t>(lists) * sizeof(int64_t));
  merge_workspace(p, wl, c);
  wl.sample = c.take(static_cast<size_t>(p.sample_count) * sizeof(float));
  wl.round_cnt = c.take(static_cast<size_t>(p.sel_tiles) * kRoundWords * sizeof(uint32_t));
  if (p.rice) {
    wl.rice_len = c.take(static_cast<size_t>(p.k) * sizeof(int64_t));
    wl.rice_off = c.take(static_cast<size_t>(p.k) * sizeof(int64_t));
    wl.rice_temp = c.take(p.rice_scan_temp_bytes);
  }
}

/// randk: the selection and, for the decode, merge_batch index lists of k and their tile offsets.
void randk_workspace(const DevicePlan& p, WorkspaceLayout& wl, Carver& c) {
  if (p.n == 0) return;
  selection_workspace(p, wl, c);
  wl.idx = c.take(static_cast<size_t>(p.k) * static_cast<size_t>(p.merge_batch) * sizeof(int64_t));
  merge_workspace(p, wl, c);
}

}  // namespace

extern const DeviceCodecEntry kTopKDevice{.plan = topk_plan,
                                          .workspace = topk_workspace,
                                          .encode = topk_encode,
                                          .decode = topk_decode,
                                          .decode_store = topk_decode_store,
                                          .encode_sampled = topk_encode_sampled,
                                          .selected_memory = true,
                                          .diana_full_memory = true};
extern const DeviceCodecEntry kRandKDevice{.plan = randk_plan,
                                           .workspace = randk_workspace,
                                           .encode = randk_encode,
                                           .decode = randk_decode,
                                           .decode_store = randk_decode_store,
                                           .reads_key = true,
                                           .selected_memory = true};

}  // namespace gcomp::cuda::detail
