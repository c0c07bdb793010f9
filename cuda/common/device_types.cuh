// SPDX-License-Identifier: Apache-2.0
// Types shared by every kernel: the device status word, the input loader (plain x or the DIANA
// difference g - h), the element -> quantization-block map, and the launch geometry.
#pragma once

#include <gcomp/cuda.hpp>
#include <gcomp/detail/codec_math.hpp>
#include <gcomp/detail/hd.hpp>
#include <gcomp/detail/reduce.hpp>

#include <cuda_runtime.h>

#include <cstdint>

namespace gcomp::cuda::detail {

inline constexpr int kThreads = 256;         ///< threads per CUDA block of every kernel
inline constexpr int kWarpsPerBlock = kThreads / 32;
inline constexpr unsigned kFullMask = 0xffffffffu;
inline constexpr int kMaxWeights = 64;       ///< payloads per decode-reduce launch (weights by value)

static_assert(kThreads == gcomp::detail::kLanes, "one CUDA block per reduction tile (reduce.hpp)");

/// Sets the status word: first error code wins, index is lowered to the smallest reported.
__device__ inline void raise_status(DeviceStatus* st, uint32_t code, uint64_t index) {
  atomicCAS(&st->code, 0u, code);
  atomicMin(reinterpret_cast<unsigned long long*>(&st->index), static_cast<unsigned long long>(index));
}

/// True when an earlier kernel of this call reported a data error (outputs must stay untouched).
__device__ inline bool status_failed(const DeviceStatus* st) {
  return *static_cast<const volatile uint32_t*>(&st->code) != 0u;
}

/// The encoder input: x[i], or x[i] - sub[i] (DIANA delta = g - h, recomputed in every pass with
/// the same single rounding as the CPU's delta buffer).
struct Input {
  const float* x;
  const float* sub;
  __device__ float operator()(int64_t i) const { return sub != nullptr ? x[i] - sub[i] : x[i]; }
};

/// Element -> quantization block. Blocks never cross segments and are uniform inside a segment
/// (the last one of a segment may be short), so the block of i is found from its segment.
struct BlockMap {
  const int64_t* seg_off;     ///< num_segments + 1 offsets (last = n)
  const int64_t* seg_block0;  ///< index of the first block of each segment
  const int64_t* seg_bsize;   ///< block size of each segment (>= 1)
  int64_t num_segments;

  __device__ int64_t block_of(int64_t i) const {
    // Largest s with seg_off[s] <= i: that segment is non-empty and holds i, since seg_off[S] = n > i.
    int64_t lo = 0;
    int64_t hi = num_segments - 1;
    while (lo < hi) {
      const int64_t mid = lo + (hi - lo + 1) / 2;
      if (seg_off[mid] <= i)
        lo = mid;
      else
        hi = mid - 1;
    }
    return seg_block0[lo] + (i - seg_off[lo]) / seg_bsize[lo];
  }
};

/// Weights of up to kMaxWeights payloads, passed by value (no host-to-device copy on the stream).
struct WeightList {
  float w[kMaxWeights];
};

__device__ inline int64_t global_thread() {
  return static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
}
__device__ inline int64_t grid_threads() { return static_cast<int64_t>(gridDim.x) * blockDim.x; }
__device__ inline int64_t global_warp() { return global_thread() / 32; }
__device__ inline int64_t grid_warps() { return grid_threads() / 32; }

/// Blocks for a grid-stride kernel over `work` items of `per_block` items each, capped at
/// `max_blocks` (a multiple of the SM count) and at least `min_blocks`.
inline unsigned grid_for(int64_t work, int64_t per_block, int64_t max_blocks, int64_t min_blocks = 1) {
  if (work <= 0) return 0;
  int64_t g = (work + per_block - 1) / per_block;
  if (g > max_blocks) g = max_blocks;
  if (g < min_blocks) g = min_blocks;
  return static_cast<unsigned>(g);
}

}  // namespace gcomp::cuda::detail
