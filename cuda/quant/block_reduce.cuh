// SPDX-License-Identifier: Apache-2.0
// Per-block scales in the fixed order of include/gcomp/detail/reduce.hpp, bit-identical to the
// host's block_reduce (host/codecs/internal.hpp), as a two-level tree:
//  phase 1 (reduce_tiles_kernel): one warp per tile of 4096 elements. The warp stands for the 256
//    lanes of the order: thread t holds lanes 4t .. 4t + 3 and 128 + 4t .. 128 + 4t + 3, so that each
//    256-element round of the tile is two 16-byte loads per thread; lane l accumulates elements
//    l, l + 256, ... sequentially in double. The halving tree s = 128 .. 1 is then: s = 128 in
//    registers, s = 64 .. 4 by __shfl_down_sync (16, 8, 4, 2, 1 threads apart), s = 2, 1 in
//    registers; at every step lane i < s combines lanes i and i + s, exactly tree_combine_pow2 on
//    256 values. A tile that is its block's only tile (every block up to 4096 elements) finishes
//    its scale right there; no second phase runs for it. For the max of |x| (AbsMaxOp), whose
//    result does not depend on the order, the warp takes the integer max of the magnitude bits
//    instead (a NaN's bits exceed +Inf's, and both give +Inf, as AbsMaxOp::term does).
//  phase 2 (combine_blocks_kernel), only for blocks of more than one tile: one CUDA block of 256
//    threads per such block runs the halving tree over its T tile values padded to P = 2^ceil(log2
//    T) with the identity: for P > 256, thread i first runs the levels s >= 256 on its own tiles
//    i, i + 256, ... (they only combine tiles of one residue mod 256), then the 256 results run the
//    levels s = 128 .. 1 in shared memory. A padded slot contributes op.identity() through the same
//    op.combine(v, identity) the host evaluates. Thread 0 finishes the scale (norms.hpp) and reports
//    a non-finite scale in the status word.
#pragma once

#include <type_traits>

#include "cuda/common/device_types.cuh"

#include <gcomp/detail/norms.hpp>
#include <gcomp/detail/reduce.hpp>

namespace gcomp::cuda::detail {

/// Every block uses the same op (the op carries no per-block data).
template <class Op>
struct SameOp {
  Op op;
  __device__ Op operator()(int64_t) const { return op; }
};

/// The centered sum of squares needs the mean of its own block (terngrad clipping, §3.1).
struct CenteredOpOfBlock {
  const double* mean;
  __device__ gcomp::detail::CenteredSquareSumOp operator()(int64_t block) const {
    return gcomp::detail::CenteredSquareSumOp{mean[block]};
  }
};

/// What phase 2 does with a block's reduced value.
enum class Finish : int {
  kNorm,       ///< scale = finish_norm(norm, r, p)
  kMeanAbs,    ///< scale = finish_mean_abs(r, len)          (scaled sign)
  kMax,        ///< scale = (float) r                         (terngrad without clip)
  kStoreMean,  ///< aux_d = r / len  (terngrad with clip, step 1; aux_f = max |x| in the same pass)
  kTernClip,   ///< scale = terngrad_scale(aux_f, r, len, clip) unless aux_f is not finite (step 2)
};

struct FinishArgs {
  Finish kind;
  uint32_t norm;
  double p;
  double clip;
  float* scales;
  float* aux_f;
  double* aux_d;
  DeviceStatus* status;
};

__device__ inline void finish_block(const FinishArgs& f, int64_t b, double r, int64_t first, int64_t len) {
  using namespace gcomp::detail;
  float scale;
  switch (f.kind) {
    case Finish::kNorm: scale = finish_norm(f.norm, r, f.p); break;
    case Finish::kMeanAbs: scale = finish_mean_abs(r, len); break;
    case Finish::kMax: scale = static_cast<float>(r); break;
    case Finish::kStoreMean: f.aux_d[b] = r / static_cast<double>(len); return;
    default: {
      const float mx = f.aux_f[b];
      scale = is_finite_f(mx) ? terngrad_scale(mx, r, len, f.clip) : mx;
    }
  }
  f.scales[b] = scale;
  if (!is_finite_f(scale)) raise_status(f.status, gcompErrorNonFinite, static_cast<uint64_t>(first));
}

/// Whether the reduction's result depends on the order of the combines (max does not).
template <class Op>
inline constexpr bool kOrderFree = false;
template <>
inline constexpr bool kOrderFree<gcomp::detail::AbsMaxOp> = true;

/// Folds a tile's max |x| (magnitude bits, NaN and Inf as +Inf's bits) into block b's entry of
/// fin.aux_f, which holds float bits zeroed before the pass: for non-negative floats the order of
/// the bits as unsigned integers is the order of the values, so the atomic max is the block's max
/// |x| in any order of the tiles: the float max of |x| over the block, +Inf if any is NaN or Inf (as
/// AbsMaxOp's reduction gives it).
__device__ inline void fold_block_max(const FinishArgs& fin, int64_t b, uint32_t mx) {
  atomicMax(reinterpret_cast<unsigned int*>(fin.aux_f) + b, mx < 0x7f800000u ? mx : 0x7f800000u);
}

/// One warp per tile (see the top of this file). `fin` finishes the blocks made of one tile.
/// kWithMax (an ordered Op only): the same pass also takes the max |x| of each block into fin.aux_f
/// (fold_block_max; the caller zeroes aux_f first), so terngrad's clip reads x for its mean and its
/// max once.
template <class Op, class OpOfBlock, bool kWithMax = false>
__global__ void __launch_bounds__(kThreads)
    reduce_tiles_kernel(Input in, OpOfBlock op_of_block, const int64_t* __restrict__ tile_begin,
                        const int64_t* __restrict__ tile_block, const int64_t* __restrict__ blocks,
                        const int64_t* __restrict__ block_tile, int64_t num_tiles, double* __restrict__ tile_vals,
                        FinishArgs fin) {
  const int t = static_cast<int>(threadIdx.x & 31u);
  for (int64_t tile = global_warp(); tile < num_tiles; tile += grid_warps()) {
    const int64_t b = tile_block[tile];
    const int64_t begin = tile_begin[tile];
    const int64_t rest = blocks[b + 1] - begin;
    const int64_t len = rest < gcomp::detail::kTileElems ? rest : gcomp::detail::kTileElems;
    const bool vec = in.aligned16() && begin % lanes::kQuadElems == 0;
    const Op op = op_of_block(b);
    double v;
    if constexpr (kOrderFree<Op>) {
      uint32_t mx = 0;
      const auto quad = [&](int64_t e, auto whole) {
        constexpr bool kWhole = decltype(whole)::value;
        const int live = kWhole ? lanes::kQuadElems : lanes::quad_live(e, len);
        const Quad x = load_input_quad(in, begin + e, live, kWhole);
#pragma unroll
        for (int j = 0; j < lanes::kQuadElems; ++j)
          if (j < live) mx = max(mx, gcomp::detail::float_bits(x.v[j]) & 0x7fffffffu);
      };
      const int64_t whole = vec ? len / lanes::kQuadElems * lanes::kQuadElems : 0;  // whole quads
      int64_t e = lanes::kQuadElems * t;
      for (; e < whole; e += 32 * lanes::kQuadElems) quad(e, std::true_type{});
      for (; e < len; e += 32 * lanes::kQuadElems) quad(e, std::false_type{});
      mx = __reduce_max_sync(kFullMask, mx);
      v = mx >= 0x7f800000u ? gcomp::detail::bits_double(0x7ff0000000000000ull)
                            : static_cast<double>(gcomp::detail::bits_float(mx));
    } else {
      static_assert(!kWithMax || !kOrderFree<Op>, "kWithMax rides on an ordered reduction");
      double acc[2][lanes::kQuadElems];
      uint32_t mx = 0;  // kWithMax: max of the magnitude bits
#pragma unroll
      for (int j = 0; j < lanes::kQuadElems; ++j) acc[0][j] = acc[1][j] = op.identity();
      const auto round_of = [&](int64_t round, auto whole) {
        constexpr bool kWhole = decltype(whole)::value;
#pragma unroll
        for (int h = 0; h < 2; ++h) {
          const int64_t e = round + 128 * h + lanes::kQuadElems * t;
          const int live = kWhole ? lanes::kQuadElems : lanes::quad_live(e, len);
          const Quad x = load_input_quad(in, begin + e, live, kWhole);
#pragma unroll
          for (int j = 0; j < lanes::kQuadElems; ++j) {
            if (j < live) acc[h][j] = op.combine(acc[h][j], op.term(x.v[j]));
            if (kWithMax && j < live) mx = max(mx, gcomp::detail::float_bits(x.v[j]) & 0x7fffffffu);
          }
        }
      };
      // Whole 256-element rounds of an aligned tile: 16-byte loads only; then the element path.
      const int64_t whole = vec ? len / gcomp::detail::kLanes * gcomp::detail::kLanes : 0;
      for (int64_t round = 0; round < whole; round += gcomp::detail::kLanes) round_of(round, std::true_type{});
      for (int64_t round = whole; round < len; round += gcomp::detail::kLanes) round_of(round, std::false_type{});
      double lane[lanes::kQuadElems];
#pragma unroll
      for (int j = 0; j < lanes::kQuadElems; ++j) lane[j] = op.combine(acc[0][j], acc[1][j]);  // s = 128
#pragma unroll
      for (int d = 16; d >= 1; d /= 2) {  // s = 64 .. 4: lanes 4t + j and 4(t + d) + j
#pragma unroll
        for (int j = 0; j < lanes::kQuadElems; ++j) {
          const double other = __shfl_down_sync(kFullMask, lane[j], static_cast<unsigned>(d));
          if (t < d) lane[j] = op.combine(lane[j], other);
        }
      }
      lane[0] = op.combine(lane[0], lane[2]);  // s = 2
      lane[1] = op.combine(lane[1], lane[3]);
      v = op.combine(lane[0], lane[1]);  // s = 1
      if constexpr (kWithMax) {
        mx = __reduce_max_sync(kFullMask, mx);
        if (t == 0) fold_block_max(fin, b, mx);
      }
    }
    if (t == 0) {
      if (block_tile[b + 1] - block_tile[b] == 1)
        finish_block(fin, b, v, blocks[b], blocks[b + 1] - blocks[b]);
      else
        tile_vals[tile] = v;
    }
  }
}

/// Phase 2 for the blocks of more than one tile (`multi`: their indices), one CUDA block each.
template <class Op>
__global__ void __launch_bounds__(kThreads)
    combine_blocks_kernel(Op op, const int64_t* __restrict__ multi, int64_t count,
                          const int64_t* __restrict__ block_tile, const int64_t* __restrict__ blocks, double* tile_vals,
                          FinishArgs fin) {
  __shared__ double lanes_v[kThreads];
  const int i = static_cast<int>(threadIdx.x);
  for (int64_t idx = blockIdx.x; idx < count; idx += gridDim.x) {
    const int64_t b = multi[idx];
    double* v = tile_vals + block_tile[b];
    const int64_t tiles = block_tile[b + 1] - block_tile[b];
    const int64_t padded = gcomp::detail::next_pow2(tiles);
    int64_t width = padded;  // the tree's live width after the levels s >= 256
    if (padded > kThreads) {
      // Levels s = padded/2 .. 256 touch only tiles of one residue mod 256: thread i runs them on
      // its own tiles, in place (slots below padded/2 < tiles always exist).
      for (int64_t s = padded / 2; s >= kThreads; s /= 2)
        for (int64_t k = i; k < s; k += kThreads) v[k] = op.combine(v[k], k + s < tiles ? v[k + s] : op.identity());
      width = kThreads;
    }
    lanes_v[i] = i < width ? (i < tiles ? v[i] : op.identity()) : op.identity();
    __syncthreads();
    for (int s = static_cast<int>(width / 2); s >= 1; s /= 2) {
      if (i < s) lanes_v[i] = op.combine(lanes_v[i], lanes_v[i + s]);
      __syncthreads();
    }
    if (i == 0) finish_block(fin, b, tiles > 0 ? lanes_v[0] : op.identity(), blocks[b], blocks[b + 1] - blocks[b]);
    __syncthreads();  // lanes_v is reused by the next block
  }
}

}  // namespace gcomp::cuda::detail
