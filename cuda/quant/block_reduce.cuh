// SPDX-License-Identifier: Apache-2.0
// Per-block scales in the fixed order of include/gcomp/detail/reduce.hpp, bit-identical to the
// host's block_reduce (host/codecs/internal.hpp):
//  phase 1 (reduce_tiles_kernel): one CUDA block of kLanes = 256 threads per tile of 4096
//    elements; thread l accumulates elements l, l + 256, ... of the tile sequentially in double;
//    the 256 lane values are combined by the halving tree s = 128, ..., 1 (shared memory down to
//    s = 32, then warp shuffles: at each step lane i < s combines lanes i and i + s, exactly the
//    host's tree_combine_pow2 on 256 values);
//  phase 2 (combine_tiles_kernel): one warp per quantization block runs the halving tree over the
//    block's tile values padded to a power of two with the identity (padded slots are combined as
//    op.combine(v, identity), the same expression the host evaluates), then lane 0 finishes the
//    scale (norms.hpp) and reports a non-finite scale in the status word.
#pragma once

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

template <class Op, class OpOfBlock>
__global__ void __launch_bounds__(kThreads)
    reduce_tiles_kernel(Input in, OpOfBlock op_of_block, const int64_t* tile_begin, const int64_t* tile_block,
                        const int64_t* blocks, int64_t num_tiles, double* tile_vals) {
  __shared__ double lanes[kThreads];
  const int lane = static_cast<int>(threadIdx.x);
  for (int64_t t = blockIdx.x; t < num_tiles; t += gridDim.x) {
    const int64_t b = tile_block[t];
    const int64_t begin = tile_begin[t];
    const int64_t rest = blocks[b + 1] - begin;
    const int64_t len = rest < gcomp::detail::kTileElems ? rest : gcomp::detail::kTileElems;
    const Op op = op_of_block(b);
    double acc = op.identity();
    for (int64_t j = lane; j < len; j += kThreads) acc = op.combine(acc, op.term(in(begin + j)));
    lanes[lane] = acc;
    __syncthreads();
    for (int s = kThreads / 2; s >= 32; s /= 2) {
      if (lane < s) lanes[lane] = op.combine(lanes[lane], lanes[lane + s]);
      __syncthreads();
    }
    if (lane < 32) {
      double v = lanes[lane];
      for (int s = 16; s >= 1; s /= 2) {
        const double other = __shfl_down_sync(kFullMask, v, static_cast<unsigned>(s));
        if (lane < s) v = op.combine(v, other);
      }
      if (lane == 0) tile_vals[t] = v;
    }
    __syncthreads();  // lanes[] is reused by the next tile
  }
}

/// What phase 2 does with a block's reduced value.
enum class Finish : int {
  kNorm,       ///< scale = finish_norm(norm, r, p)
  kMeanAbs,    ///< scale = finish_mean_abs(r, len)          (scaled sign)
  kMax,        ///< scale = (float) r                         (terngrad without clip)
  kStoreMax,   ///< aux_f = (float) r                         (terngrad with clip, step 1)
  kStoreMean,  ///< aux_d = r / len                           (step 2)
  kTernClip,   ///< scale = terngrad_scale(aux_f, r, len, clip) unless aux_f is not finite (step 3)
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
    case Finish::kStoreMax: f.aux_f[b] = static_cast<float>(r); return;
    case Finish::kStoreMean: f.aux_d[b] = r / static_cast<double>(len); return;
    default: {
      const float mx = f.aux_f[b];
      scale = is_finite_f(mx) ? terngrad_scale(mx, r, len, f.clip) : mx;
    }
  }
  f.scales[b] = scale;
  if (!is_finite_f(scale)) raise_status(f.status, gcompErrorNonFinite, static_cast<uint64_t>(first));
}

template <class Op>
__global__ void __launch_bounds__(kThreads)
    combine_tiles_kernel(Op op, const int64_t* block_tile, const int64_t* blocks, int64_t num_blocks,
                         double* tile_vals, FinishArgs fin) {
  const int lane = static_cast<int>(threadIdx.x & 31u);
  for (int64_t b = global_warp(); b < num_blocks; b += grid_warps()) {
    double* v = tile_vals + block_tile[b];
    const int64_t tiles = block_tile[b + 1] - block_tile[b];
    const int64_t padded = gcomp::detail::next_pow2(tiles);
    for (int64_t s = padded / 2; s >= 1; s /= 2) {
      // Level s writes v[0, s) and reads v[i] (its own slot) and v[i + s] >= s: no lane reads a
      // slot another lane writes in the same level.
      for (int64_t i = lane; i < s && i < tiles; i += 32)
        v[i] = op.combine(v[i], i + s < tiles ? v[i + s] : op.identity());
      __syncwarp();
    }
    if (lane == 0) {
      const double r = tiles > 0 ? v[0] : op.identity();
      finish_block(fin, b, r, blocks[b], blocks[b + 1] - blocks[b]);
    }
    __syncwarp();
  }
}

}  // namespace gcomp::cuda::detail
