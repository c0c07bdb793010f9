// SPDX-License-Identifier: Apache-2.0
// Device entries of the coded codecs (plan, workspace, encode, decode; DeviceCodecEntry in
// plan.cuh): sdither (cuda/sdither), spherical (cuda/spherical) and grid (cuda/grid), with their
// fused EF/DIANA variants and decode-reduce of P payloads in rank order.
#include "cuda/common/common_kernels.cuh"
#include "cuda/common/cuda_check.cuh"
#include "cuda/dispatch/decode_launch.cuh"
#include "cuda/dispatch/plan.cuh"
#include "cuda/dispatch/reduce_launch.cuh"
#include "cuda/fused/decode_elements.cuh"
#include "cuda/grid/grid_kernels.cuh"
#include "cuda/quant/block_reduce.cuh"
#include "cuda/sdither/sdither_kernels.cuh"
#include "cuda/sdither/sdither_merge_kernels.cuh"
#include "cuda/spherical/spherical_kernels.cuh"
#include "host/codecs/registry.hpp"
#include "host/codecs/spherical.hpp"

#include <gcomp/detail/codec_math.hpp>
#include <gcomp/detail/elias.hpp>
#include <gcomp/detail/norms.hpp>
#include <gcomp/detail/reduce.hpp>
#include <gcomp/detail/sdither_merge.hpp>

#include <algorithm>
#include <cstring>
#include <type_traits>
#include <vector>

namespace gcomp::cuda::detail {

namespace {

SDitherParams sdither_params(const DevicePlan& plan) {
  return SDitherParams{plan.map,      plan.blocks,       plan.n,          plan.num_blocks, plan.chunk, plan.num_chunks,
                       plan.sd_tiles, plan.stream_words, plan.worst_bits, plan.levels,     plan.code};
}

SphericalParams spherical_params(const DevicePlan& plan) {
  return SphericalParams{plan.blocks,   plan.num_blocks, plan.index_words, plan.bits,
                         plan.unscaled, plan.beta_len,   plan.beta_val,    plan.num_betas};
}

GridParams grid_params(const DevicePlan& plan) {
  return GridParams{plan.n,
                    gcomp::detail::ceil_div(plan.n * static_cast<int64_t>(plan.bits), 32),
                    plan.bits,
                    plan.step,
                    gcomp::detail::grid_inverse_step(plan.step),
                    gcomp::detail::grid_inverse_step_f(plan.step, plan.bits)};
}

/// The fp32 block norms (l2: sqrt of the fixed-order sum of squares; l_inf: max |x|) into
/// ws.scales, in the order of cuda/quant/block_reduce.cuh; a non-finite norm sets the status.
template <class Op>
void block_norms(const DevicePlan& plan, const Workspace& ws, Input in, Op op, cudaStream_t stream) {
  const FinishArgs fin{Finish::kNorm, plan.norm, plan.p, 0.0, ws.scales, nullptr, nullptr, ws.status};
  launch_block_reduce(plan, ws, in, SameOp<Op>{op}, op, fin, stream);
}

/// The block scales of sdither (the l2 or l_inf norms of its dither) into ws.scales.
void sdither_scales(const DevicePlan& plan, const Workspace& ws, Input in, cudaStream_t stream) {
  if (plan.norm == gcomp::detail::kNormLinf)
    block_norms(plan, ws, in, gcomp::detail::AbsMaxOp{}, stream);
  else
    block_norms(plan, ws, in, gcomp::detail::SquareSumOp{}, stream);
}

/// The sdither message for the block scales `scales` (device, num_blocks floats): the init kernel
/// (tile state, counter, scales, zeroed stream), then the one encode pass over x. Both do nothing
/// once the status word reports an error.
void sdither_write(const DevicePlan& plan, const Workspace& ws, Input in, const float* scales, const RngKey& key,
                   uint8_t* d_payload, Fuse fuse, float* d_mem, float alpha, cudaStream_t stream) {
  const SDitherParams p = sdither_params(plan);
  SdTileState state;
  GCOMP_CUDA_TRY(state.Init(static_cast<int>(plan.sd_tiles), ws.sd.state, plan.sd_state_bytes));
  // InitializeStatus covers tile g with thread g: at least one thread per tile, uncapped.
  const unsigned init_grid =
      std::max(static_cast<unsigned>(gcomp::detail::ceil_div(plan.sd_tiles, int64_t{kThreads})),
               grid_for(std::max(plan.stream_words, plan.num_blocks), kThreads, plan.max_blocks));
  GCOMP_LAUNCH(sdither_init_kernel, init_grid, kThreads, stream, p, scales, state, ws.sd.next_tile, d_payload,
               ws.status);
  GCOMP_LAUNCH(sdither_encode_kernel, grid_for(plan.sd_tiles, 1, plan.max_blocks), kThreads, stream, p, in, scales, key,
               state, ws.sd.next_tile, d_payload, fuse, d_mem, alpha, ws.status);
}

void sdither_encode(const DevicePlan& plan, const Workspace& ws, Input in, const RngKey& key, uint8_t* d_payload,
                    Fuse fuse, float* d_mem, float alpha, cudaStream_t stream) {
  if (plan.n == 0) {  // the payload is T = 0 alone
    GCOMP_CUDA_TRY(cudaMemsetAsync(d_payload, 0, plan.payload_bytes, stream));
    return;
  }
  sdither_scales(plan, ws, in, stream);
  sdither_write(plan, ws, in, ws.scales, key, d_payload, fuse, d_mem, alpha, stream);
}

void spherical_encode(const DevicePlan& plan, const Workspace& ws, Input in, const RngKey& key, uint8_t* d_payload,
                      Fuse fuse, float* d_mem, float alpha, cudaStream_t stream) {
  if (plan.n == 0) return;
  block_norms(plan, ws, in, gcomp::detail::SquareSumOp{}, stream);
  const SphericalParams p = spherical_params(plan);
  const unsigned grid = grid_for(plan.num_blocks, kWarpsPerBlock, plan.max_blocks);
  if (in.src == gcomp::detail::kSrcF32)
    GCOMP_LAUNCH(spherical_encode_kernel<false>, grid, kThreads, stream, p, in, ws.scales, key, ws.idx, d_payload, fuse,
                 d_mem, alpha, ws.status);
  else  // the Session's gradient view
    GCOMP_LAUNCH(spherical_encode_kernel<true>, grid, kThreads, stream, p, in, ws.scales, key, ws.idx, d_payload, fuse,
                 d_mem, alpha, ws.status);
  GCOMP_LAUNCH(spherical_pack_kernel, grid_for(plan.index_words, kThreads, plan.max_blocks), kThreads, stream, p,
               ws.idx, d_payload, ws.status);
}

/// The quad encode of the whole-byte widths (kBytes = B / 8): the plain encode checks finiteness in
/// its one pass (the payload is then unspecified on a non-finite input); EF/DIANA check first, in a
/// pass of their own, so that the memory is never written on a non-finite input.
template <int kBytes>
void grid_encode_quads(const DevicePlan& plan, const Workspace& ws, Input in, uint32_t* d_payload, Fuse fuse,
                       float* d_mem, float alpha, cudaStream_t stream) {
  const GridParams p = grid_params(plan);
  const unsigned grid =
      grid_for(gcomp::detail::ceil_div(plan.n, int64_t{lanes::kQuadElems}), kThreads, plan.max_blocks);
  const bool check = fuse == Fuse::kNone || plan.fold_check;  // else checked by a pass before
  if (fuse == Fuse::kNone)
    GCOMP_LAUNCH((grid_encode_quads_kernel<kBytes, Fuse::kNone, true>), grid, kThreads, stream, p, in, d_payload, d_mem,
                 alpha, ws.status);
  if (fuse == Fuse::kEF && check)
    GCOMP_LAUNCH((grid_encode_quads_kernel<kBytes, Fuse::kEF, true>), grid, kThreads, stream, p, in, d_payload, d_mem,
                 alpha, ws.status);
  if (fuse == Fuse::kEF && !check)
    GCOMP_LAUNCH((grid_encode_quads_kernel<kBytes, Fuse::kEF, false>), grid, kThreads, stream, p, in, d_payload, d_mem,
                 alpha, ws.status);
  if (fuse == Fuse::kDiana && check)
    GCOMP_LAUNCH((grid_encode_quads_kernel<kBytes, Fuse::kDiana, true>), grid, kThreads, stream, p, in, d_payload,
                 d_mem, alpha, ws.status);
  if (fuse == Fuse::kDiana && !check)
    GCOMP_LAUNCH((grid_encode_quads_kernel<kBytes, Fuse::kDiana, false>), grid, kThreads, stream, p, in, d_payload,
                 d_mem, alpha, ws.status);
}

void grid_encode(const DevicePlan& plan, const Workspace& ws, Input in, uint8_t* d_payload, Fuse fuse, float* d_mem,
                 float alpha, cudaStream_t stream) {
  if (plan.n == 0) return;
  // The memory must stay untouched on a non-finite input: check first (unless the plan says the
  // memory may be left unspecified: DevicePlan::fold_check).
  if (fuse != Fuse::kNone && !plan.fold_check)
    GCOMP_LAUNCH(check_finite_kernel,
                 grid_for(gcomp::detail::ceil_div(plan.n, int64_t{lanes::kQuadElems}), kThreads, plan.max_blocks),
                 kThreads, stream, in, plan.n, ws.status);
  uint32_t* words = reinterpret_cast<uint32_t*>(d_payload);
  switch (plan.bits) {
    case 8: grid_encode_quads<1>(plan, ws, in, words, fuse, d_mem, alpha, stream); return;
    case 16: grid_encode_quads<2>(plan, ws, in, words, fuse, d_mem, alpha, stream); return;
    case 32: grid_encode_quads<4>(plan, ws, in, words, fuse, d_mem, alpha, stream); return;
    default: break;
  }
  const unsigned grid = grid_for(plan.groups, kWarpsPerBlock, plan.max_blocks);
  const bool check = fuse == Fuse::kNone || plan.fold_check;
  const bool view = in.src != gcomp::detail::kSrcF32;  // the Session's gradient view
  const bool single = plan.bits <= gcomp::detail::kGridFloatMaxBits;
  if (single && !view)
    GCOMP_LAUNCH((grid_encode_kernel<true, false>), grid, kThreads, stream, grid_params(plan), in, words, fuse, check,
                 d_mem, alpha, ws.status);
  if (single && view)
    GCOMP_LAUNCH((grid_encode_kernel<true, true>), grid, kThreads, stream, grid_params(plan), in, words, fuse, check,
                 d_mem, alpha, ws.status);
  if (!single && !view)
    GCOMP_LAUNCH((grid_encode_kernel<false, false>), grid, kThreads, stream, grid_params(plan), in, words, fuse, check,
                 d_mem, alpha, ws.status);
  if (!single && view)
    GCOMP_LAUNCH((grid_encode_kernel<false, true>), grid, kThreads, stream, grid_params(plan), in, words, fuse, check,
                 d_mem, alpha, ws.status);
}

/// Weight of payload j for a decode mode.
float weight_of(DecodeMode mode, const float* h_weights, int j) {
  if (mode == DecodeMode::kOverwrite) return 1.0f;
  return h_weights != nullptr ? h_weights[j] : 1.0f;
}

/// One pass over each payload (GridQuadDecoder: validation in the decode; the output is then
/// unspecified on a corrupt payload, DeviceCodec::decode).
template <class Store = PlainStore>
void grid_decode(const DevicePlan& plan, const Workspace& ws, const uint8_t* d_payloads, size_t stride,
                 int num_payloads, const float* h_weights, DecodeMode mode, float* d_out, cudaStream_t stream,
                 const Store& store = Store{}) {
  const GridParams p = grid_params(plan);
  const auto launch = [&](auto dec) {
    launch_decode_quads(dec, plan, ws, d_payloads, stride, num_payloads, h_weights, mode, d_out, stream, store);
  };
  switch (plan.bits) {
    case 8: launch(GridQuadDecoder<1>{p}); return;
    case 16: launch(GridQuadDecoder<2>{p}); return;
    case 32: launch(GridQuadDecoder<4>{p}); return;
    default: launch(GridQuadDecoder<0>{p});
  }
}

void sdither_encode_scaled(const DevicePlan& plan, const Workspace& ws, Input in, const float* scales,
                           const RngKey& key, uint8_t* d_payload, cudaStream_t stream) {
  if (plan.n == 0) {  // as sdither_encode: the payload is T = 0 alone
    GCOMP_CUDA_TRY(cudaMemsetAsync(d_payload, 0, plan.payload_bytes, stream));
    return;
  }
  sdither_write(plan, ws, in, scales, key, d_payload, Fuse::kNone, nullptr, 0.0f, stream);
}

void sdither_scales_entry(const DevicePlan& plan, const Workspace& ws, Input in, cudaStream_t stream) {
  if (plan.n > 0) sdither_scales(plan, ws, in, stream);
}

void grid_encode_entry(const DevicePlan& plan, const Workspace& ws, Input in, const RngKey&, uint8_t* d_payload,
                       Fuse fuse, float* d_mem, float alpha, cudaStream_t stream) {
  grid_encode(plan, ws, in, d_payload, fuse, d_mem, alpha, stream);
}

void grid_decode_entry(const DevicePlan& plan, const Workspace& ws, const uint8_t* d_payloads, size_t stride,
                       int num_payloads, const float* h_weights, DecodeMode mode, const RngKey*, float* d_out,
                       cudaStream_t stream) {
  if (plan.n > 0) grid_decode(plan, ws, d_payloads, stride, num_payloads, h_weights, mode, d_out, stream);
}

void grid_decode_store(const DevicePlan& plan, const Workspace& ws, const uint8_t* d_payloads, size_t stride,
                       int num_payloads, DecodeMode mode, const RngKey*, const SessionStore& store, float* d_out,
                       cudaStream_t stream) {
  if (plan.n > 0) grid_decode(plan, ws, d_payloads, stride, num_payloads, nullptr, mode, d_out, stream, store);
}

/// A decode-reduce of no payload: out = 0 (PlainStore), or the store of a zero sum.
template <class Store>
void launch_zero_sum(const DevicePlan& plan, const Workspace& ws, float* d_out, const Store& store,
                     cudaStream_t stream) {
  const unsigned grid = grid_for(plan.n, kThreads, plan.max_blocks);
  if constexpr (std::is_same_v<Store, PlainStore>)
    GCOMP_LAUNCH(fill_zero_kernel, grid, kThreads, stream, d_out, plan.n, ws.status);
  else
    GCOMP_LAUNCH((store_zero_sum_kernel<Store>), grid, kThreads, stream, plan.n, d_out, ws.status, store);
}

/// The decode of spherical payloads: every payload validated (validate(j, payload j)) before
/// anything is written, then decode(j, payload j, weight, mode, from_zero, grid, last) per payload
/// on `grid` blocks; `last` marks the launch that stores through `store` (a Session step applied to
/// the sum of every payload), the others store plainly into d_out.
template <class Store, class Validate, class Decode>
void decode_checked(const DevicePlan& plan, const Workspace& ws, const uint8_t* d_payloads, size_t stride,
                    int num_payloads, const float* h_weights, DecodeMode mode, float* d_out, unsigned grid,
                    const Store& store, Validate validate, Decode decode, cudaStream_t stream) {
  for (int j = 0; j < num_payloads; ++j)
    validate(j, d_payloads + static_cast<size_t>(j) * stride, static_cast<uint64_t>(j) << 40);
  if (plan.n == 0) return;
  if (mode == DecodeMode::kReduce && num_payloads == 0) {
    launch_zero_sum(plan, ws, d_out, store, stream);
    return;
  }
  const int count = mode == DecodeMode::kOverwrite ? 1 : num_payloads;
  for (int j = 0; j < count; ++j) {
    const uint8_t* pj = d_payloads + static_cast<size_t>(j) * stride;
    const float w = weight_of(mode, h_weights, j);
    const int m = mode == DecodeMode::kOverwrite ? 0 : 1;
    const bool from_zero = mode == DecodeMode::kReduce && j == 0;
    decode(j, pj, w, m, from_zero, grid, j + 1 == count);
  }
}

/// sdither: payload after payload, the header kernel (no walk of the stream; also for n = 0: an
/// empty message still has T), then ONE walk of each chunk that validates and decodes
/// (sdither_decode_kernel). Validation is inside the decode, so the output is unspecified on a
/// corrupt payload, as for the other one-pass decoders (DeviceCodec::decode). The kernels of the
/// payloads after a corrupt one return at once (status word); the status names the first corrupt
/// payload in rank order (index = j * 2^40 + position, the smallest reported). The last payload's
/// walk stores through `store` (PlainStore: out; a SessionStore: the Session's step of the sum).
/// A decode-reduce of two or more payloads whose chunk and s allow it (sdither_merge_batch) takes
/// sdither_merge_batched instead: the same status, the same bits.
template <class Store>
void sdither_decode_each(const DevicePlan& plan, const Workspace& ws, const uint8_t* d_payloads, size_t stride,
                         int count, const float* h_weights, DecodeMode mode, float* d_out, cudaStream_t stream,
                         const Store& store) {
  const SDitherParams sp = sdither_params(plan);
  const int64_t header_work = std::max({plan.num_blocks, plan.num_chunks, plan.stream_words, int64_t{1}});
  const unsigned header_grid = grid_for(header_work, kThreads, plan.max_blocks);
  const unsigned grid = grid_for(plan.num_chunks, kThreads, plan.max_blocks);
  for (int j = 0; j < count; ++j) {
    const uint8_t* pj = d_payloads + static_cast<size_t>(j) * stride;
    const uint64_t base = static_cast<uint64_t>(j) << 40;
    GCOMP_LAUNCH(sdither_validate_header_kernel, header_grid, kThreads, stream, sp, pj, base, ws.status, nullptr, 0u);
    if (plan.n == 0) continue;
    const float w = weight_of(mode, h_weights, j);
    const int m = mode == DecodeMode::kOverwrite ? 0 : 1;
    const bool from_zero = mode == DecodeMode::kReduce && j == 0;
    if (j + 1 == count)
      GCOMP_LAUNCH((sdither_decode_kernel<Store>), grid, kThreads, stream, sp, pj, base, w, m, from_zero, d_out,
                   ws.status, store);
    else
      GCOMP_LAUNCH((sdither_decode_kernel<PlainStore>), grid, kThreads, stream, sp, pj, base, w, m, from_zero, d_out,
                   ws.status, PlainStore{});
  }
}

/// The merged decode-reduce (cuda/sdither/sdither_merge_kernels.cuh) of `count` >= 2 payloads in
/// batches of `batch` (sdither_merge_batch), each continuing the sums of the one before (the first
/// from zeros for kReduce). Per batch: the walkable word set to "all" (ws.sd.next_tile, the
/// encode's tile counter, unused by a decode), the header kernel of each payload in rank order
/// (each lowers the word when its payload fails or an earlier error stops it), then one launch,
/// a CTA per group of chunks (sdither_merge_group), that walks the payloads before the word and
/// stores every element once;
/// `store` only in the last batch's launch (the earlier ones keep their partial sums in d_out).
template <class Store>
void sdither_merge_batched(const DevicePlan& plan, const Workspace& ws, const uint8_t* d_payloads, size_t stride,
                           int count, int batch, const float* h_weights, DecodeMode mode, float* d_out,
                           cudaStream_t stream, const Store& store) {
  constexpr bool kPlain = std::is_same_v<Store, PlainStore>;
  const SDitherParams sp = sdither_params(plan);
  const int64_t header_work = std::max({plan.num_blocks, plan.num_chunks, plan.stream_words, int64_t{1}});
  const unsigned header_grid = grid_for(header_work, kThreads, plan.max_blocks);
  unsigned* const walkable = ws.sd.next_tile;
  WeightList w{};
  for (int first = 0; first < count; first += batch) {
    const int size = std::min(batch, count - first);
    GCOMP_CUDA_TRY(cudaMemsetAsync(walkable, 0xff, sizeof(unsigned), stream));
    for (int j = 0; j < size; ++j) {
      const uint8_t* pj = d_payloads + static_cast<size_t>(first + j) * stride;
      GCOMP_LAUNCH(sdither_validate_header_kernel, header_grid, kThreads, stream, sp, pj,
                   static_cast<uint64_t>(first + j) << 40, ws.status, walkable, static_cast<unsigned>(j));
      w.w[j] = weight_of(mode, h_weights, first + j);
    }
    const uint8_t* pb = d_payloads + static_cast<size_t>(first) * stride;
    const bool from_zero = mode == DecodeMode::kReduce && first == 0;
    const int64_t group = gcomp::detail::sdither_merge_group(plan.chunk, size);
    const unsigned grid = grid_for(gcomp::detail::ceil_div(plan.num_chunks, group), 1, plan.max_blocks);
    if (kPlain || first + size < count)
      GCOMP_LAUNCH((sdither_merge_kernel<PlainStore>), grid, kThreads, stream, sp, pb, stride, size, first, group, w,
                   from_zero, walkable, d_out, ws.status, PlainStore{});
    else
      GCOMP_LAUNCH((sdither_merge_kernel<Store>), grid, kThreads, stream, sp, pb, stride, size, first, group, w,
                   from_zero, walkable, d_out, ws.status, store);
  }
}

template <class Store = PlainStore>
void sdither_decode_with(const DevicePlan& plan, const Workspace& ws, const uint8_t* d_payloads, size_t stride,
                         int num_payloads, const float* h_weights, DecodeMode mode, float* d_out, cudaStream_t stream,
                         const Store& store = Store{}) {
  if (mode == DecodeMode::kReduce && num_payloads == 0) {
    if (plan.n > 0) launch_zero_sum(plan, ws, d_out, store, stream);
    return;
  }
  const int count = mode == DecodeMode::kOverwrite ? 1 : num_payloads;
  const int batch = gcomp::detail::sdither_merge_batch(plan.chunk, plan.levels);
  if (count >= 2 && batch >= 2 && plan.n > 0)
    sdither_merge_batched(plan, ws, d_payloads, stride, count, batch, h_weights, mode, d_out, stream, store);
  else
    sdither_decode_each(plan, ws, d_payloads, stride, count, h_weights, mode, d_out, stream, store);
}

void sdither_decode(const DevicePlan& plan, const Workspace& ws, const uint8_t* d_payloads, size_t stride,
                    int num_payloads, const float* h_weights, DecodeMode mode, const RngKey*, float* d_out,
                    cudaStream_t stream) {
  sdither_decode_with(plan, ws, d_payloads, stride, num_payloads, h_weights, mode, d_out, stream);
}

void sdither_decode_store(const DevicePlan& plan, const Workspace& ws, const uint8_t* d_payloads, size_t stride,
                          int num_payloads, DecodeMode mode, const RngKey*, const SessionStore& store, float* d_out,
                          cudaStream_t stream) {
  sdither_decode_with(plan, ws, d_payloads, stride, num_payloads, nullptr, mode, d_out, stream, store);
}

/// spherical: payload j decoded with its sender's key (its codebook), keys[j].
template <class Store = PlainStore>
void spherical_decode_with(const DevicePlan& plan, const Workspace& ws, const uint8_t* d_payloads, size_t stride,
                           int num_payloads, const float* h_weights, DecodeMode mode, const RngKey* keys, float* d_out,
                           cudaStream_t stream, const Store& store = Store{}) {
  const SphericalParams pp = spherical_params(plan);
  decode_checked(
      plan, ws, d_payloads, stride, num_payloads, h_weights, mode, d_out,
      grid_for(plan.num_blocks, kThreads, plan.max_blocks), store,
      [&](int, const uint8_t* pj, uint64_t base) {
        GCOMP_LAUNCH(spherical_validate_kernel, grid_for(plan.num_blocks, kThreads, plan.max_blocks), kThreads, stream,
                     pp, pj, base, ws.status);
      },
      [&](int j, const uint8_t* pj, float w, int m, bool from_zero, unsigned grid, bool last) {
        if (last)
          GCOMP_LAUNCH((spherical_decode_kernel<Store>), grid, kThreads, stream, pp, pj, keys[j], w, m, from_zero,
                       d_out, ws.status, store);
        else
          GCOMP_LAUNCH((spherical_decode_kernel<PlainStore>), grid, kThreads, stream, pp, pj, keys[j], w, m, from_zero,
                       d_out, ws.status, PlainStore{});
      },
      stream);
}

void spherical_decode(const DevicePlan& plan, const Workspace& ws, const uint8_t* d_payloads, size_t stride,
                      int num_payloads, const float* h_weights, DecodeMode mode, const RngKey* keys, float* d_out,
                      cudaStream_t stream) {
  spherical_decode_with(plan, ws, d_payloads, stride, num_payloads, h_weights, mode, keys, d_out, stream);
}

void spherical_decode_store(const DevicePlan& plan, const Workspace& ws, const uint8_t* d_payloads, size_t stride,
                            int num_payloads, DecodeMode mode, const RngKey* keys, const SessionStore& store,
                            float* d_out, cudaStream_t stream) {
  spherical_decode_with(plan, ws, d_payloads, stride, num_payloads, nullptr, mode, keys, d_out, stream, store);
}

// ---- plans and workspace parts ------------------------------------------------------------------

/// sdither (§5.2(a)): its dither quantizer, chunk directory and stream sizes from the CPU codec.
void sdither_plan(DevicePlanner& planner, const CodecSpec& spec) {
  DevicePlan& p = planner.plan;
  const DitherOptions q = gcomp::detail::dither_quantizer(spec);
  const SDitherOptions& sd = spec.options<SDitherOptions>();
  p.levels = q.levels;
  p.norm = static_cast<uint32_t>(q.norm);
  p.p = q.p;
  p.nbits = static_cast<int>(gcomp::detail::ceil_log2_u64(uint64_t{p.levels} + 1));
  p.code = sd.code == EliasCode::kDelta ? gcomp::detail::kEliasDelta : gcomp::detail::kEliasGamma;
  p.chunk = sd.chunk;
  p.num_chunks = gcomp::detail::ceil_div(p.n, sd.chunk);
  p.sd_tiles = gcomp::detail::ceil_div(p.n, kSDitherTile);
  // CUB's tile state counts tiles in int (and its sizes in int bytes): far above any n whose
  // record stream T fits the format's u32.
  GCOMP_EXPECTS(p.sd_tiles <= (int64_t{1} << 24), gcompErrorInvalidArgument,
                "DeviceCodec: sdither encodes at most 2^36 elements on the GPU");
  GCOMP_CUDA_TRY(SdTileState::AllocationSize(static_cast<int>(p.sd_tiles), p.sd_state_bytes));
  planner.upload_tables(q.block);
  p.num_scales = p.num_blocks;
  p.loads_view = true;  // the scale pass (load_input_quad) and sdither_encode_kernel (viewed_element)
  // encoded_bits() = 32 (m + 1 + D) + Wbits exactly (integers below 2^53).
  p.worst_bits = static_cast<int64_t>(planner.cpu.encoded_bits()) - 32 * (p.num_blocks + 1 + p.num_chunks);
  p.stream_words = gcomp::detail::ceil_div(p.worst_bits, 32);
  GCOMP_EXPECTS(p.payload_bytes == static_cast<size_t>(4 * (p.num_blocks + 1 + p.num_chunks + p.stream_words)),
                gcompErrorInternal, "DeviceCodec: sdither payload size disagrees with the CPU codec");
}

void sdither_workspace(const DevicePlan& plan, WorkspaceLayout& wl, Carver& c) {
  wl.sd_state = c.take(plan.sd_state_bytes);
  wl.sd_next = c.take(sizeof(unsigned));
}

/// spherical (§5.2(b)): block tables, then beta(len, B) of every distinct block length (host
/// quadrature, the CPU codec's cache) after them.
void spherical_plan(DevicePlanner& planner, const CodecSpec& spec) {
  DevicePlan& p = planner.plan;
  const SphericalOptions& o = spec.options<SphericalOptions>();
  p.bits = o.index_bits;
  p.norm = gcomp::detail::kNormL2;
  p.unscaled = o.unscaled;
  std::vector<int64_t> lens;
  const std::vector<int64_t> blocks = block_offsets(planner.layout, o.dim);
  for (size_t b = 0; b + 1 < blocks.size(); ++b) lens.push_back(blocks[b + 1] - blocks[b]);
  std::sort(lens.begin(), lens.end());
  lens.erase(std::unique(lens.begin(), lens.end()), lens.end());
  std::vector<int64_t> betas(lens.size());
  for (size_t k = 0; k < lens.size(); ++k) {
    const double beta = gcomp::detail::cached_spherical_beta(lens[k], o.index_bits);
    std::memcpy(&betas[k], &beta, sizeof beta);
  }
  const size_t at = planner.upload_tables(o.dim, lens, betas);
  p.num_betas = static_cast<int64_t>(lens.size());
  p.beta_len = planner.tables() + at;
  p.beta_val = reinterpret_cast<const double*>(planner.tables() + at + lens.size());
  p.num_scales = p.num_blocks;
  p.loads_view = true;  // the norm pass (load_input_quad) and spherical_encode_kernel<true>
  p.index_words = gcomp::detail::ceil_div(p.num_blocks * static_cast<int64_t>(o.index_bits), 32);
}

void spherical_workspace(const DevicePlan& plan, WorkspaceLayout& wl, Carver& c) {
  wl.idx = c.take(static_cast<size_t>(plan.num_blocks) * sizeof(int64_t));
}

/// grid (§6.1): the level width and quantum.
void grid_plan(DevicePlanner& planner, const CodecSpec& spec) {
  const GridOptions& o = spec.options<GridOptions>();
  planner.plan.bits = o.level_bits;
  planner.plan.step = o.quantum;
  // The whole-byte widths encode in quads (grid_encode_quads), the others a warp per 32 elements
  // (grid_encode_kernel's view instantiations): every width loads the gradient view.
  planner.plan.loads_view = true;
}

}  // namespace

extern const DeviceCodecEntry kSDitherDevice{.plan = sdither_plan,
                                             .workspace = sdither_workspace,
                                             .encode = sdither_encode,
                                             .decode = sdither_decode,
                                             .decode_store = sdither_decode_store,
                                             .scales = sdither_scales_entry,
                                             .encode_scaled = sdither_encode_scaled};
extern const DeviceCodecEntry kSphericalDevice{.plan = spherical_plan,
                                               .workspace = spherical_workspace,
                                               .encode = spherical_encode,
                                               .decode = spherical_decode,
                                               .decode_store = spherical_decode_store,
                                               .reads_key = true};
extern const DeviceCodecEntry kGridDevice{.plan = grid_plan,
                                          .workspace = nullptr,
                                          .encode = grid_encode_entry,
                                          .decode = grid_decode_entry,
                                          .decode_store = grid_decode_store};

void launch_codebook_normals(const RngKey& key, uint64_t first, int64_t count, double* d_out, cudaStream_t stream) {
  GCOMP_LAUNCH(codebook_normals_kernel, grid_for(count, kThreads, 1024), kThreads, stream, key, first, count, d_out);
}

}  // namespace gcomp::cuda::detail
