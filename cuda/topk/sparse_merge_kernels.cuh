// SPDX-License-Identifier: Apache-2.0
// The output pass of the sparse decodes (topk index words, topk index=rice parsed to indices,
// randk's regenerated selection): a "tile merge" that writes each output element once, with the
// Session's step in its store (cuda/fused/decode_store.cuh), instead of zeroing the output and
// scattering each payload into it (docs/performance.md "Passes over memory, per operation").
//
// Before each launch, sparse_tile_starts_kernel (a k-sized pass, one thread per entry) writes each
// payload's per-tile entry offsets (sparse_tile_starts: start[t] = the first entry with index >=
// t * kMergeTile). Then one CTA per tile of kMergeTile elements (grid-stride over the tiles):
//   1. each payload's entry range of the tile from start[t] and start[t + 1] (clamped by
//      sparse_tile_range), and their prefix counts (one warp);
//   2. the tile's sums in shared memory: +0.0f, or the output (accumulate, or a reduce batch after
//      the first);
//   3. the tile's entries of every payload in rounds of kMergeStage: the round's index and value
//      loads all issued at once (a thread per entry, whatever its payload: no chain of dependent
//      global loads per payload), staged in shared memory as (offset in the tile, value), then
//      merged payload after payload in payload order (sparse_merge_staged: the CPU codec's
//      decode_accumulate roundings; the entries of one payload name distinct elements, a barrier
//      between payloads);
//   4. every element of the tile stored once through the Store functor (quads; 16-byte stores when
//      aligned).
// The launches run after every payload's validation and return at once when it failed (the output
// is then untouched). They write nothing out of bounds for any payload bytes all the same: the
// offsets set are those of tiles 0..tiles, an entry range is clamped to [0, k], and a staged index
// outside the tile is skipped.
#pragma once

#include "cuda/common/device_types.cuh"
#include "cuda/fused/decode_store.cuh"
#include "cuda/topk/topk_kernels.cuh"

#include <gcomp/detail/codec_math.hpp>
#include <gcomp/detail/sparse_merge.hpp>

namespace gcomp::cuda::detail {

inline constexpr int kMergeTile = 4096;   ///< output elements per tile (16 KiB of shared sums)
inline constexpr int kMergeStage = 1024;  ///< entries staged per round (8 KiB of shared memory)
static_assert(kMergeTile % (lanes::kQuadElems * kThreads) == 0, "whole quads per thread");
static_assert(kMaxWeights <= 64, "the entry ranges and their prefix counts: two payloads per lane of one warp");

/// Payload j's per-tile entry offsets (tiles + 1 of them) at starts + j (tiles + 1), for `count`
/// payloads, one thread per entry e = 0..k of each (sparse_tile_starts).
template <class Entries>
__global__ void __launch_bounds__(kThreads)
    sparse_tile_starts_kernel(Entries src, int count, int64_t tiles, int64_t* __restrict__ starts,
                              const DeviceStatus* status) {
  if (status_failed(status)) return;
  const int64_t per = src.k + 1;
  for (int64_t g = global_thread(); g < count * per; g += grid_threads()) {
    const int j = static_cast<int>(g / per);
    const int64_t e = g - static_cast<int64_t>(j) * per;
    int64_t* const mine = starts + static_cast<int64_t>(j) * (tiles + 1);
    gcomp::detail::sparse_tile_starts([&](int64_t i) { return src.index(j, i); }, src.k, e, int64_t{kMergeTile}, tiles,
                                      [&](int64_t t) { mine[t] = e; });
  }
}

/// topk's index words: payload j's entry e is (read_packed_index of its index stream, value e).
struct PackedEntries {
  const uint8_t* payloads;
  size_t stride;
  int64_t k;
  int bits;
  __device__ const float* vals(int j) const {
    return reinterpret_cast<const float*>(payloads + static_cast<size_t>(j) * stride);
  }
  __device__ int64_t index(int j, int64_t e) const {
    const auto* packed =
        reinterpret_cast<const uint32_t*>(payloads + static_cast<size_t>(j) * stride + 4 * static_cast<size_t>(k));
    return read_packed_index(packed, e, bits);
  }
};

/// Index lists in the workspace (topk index=rice parsed, randk's selection): payload j's entry e is
/// (idx[j k + e], the value e at byte `vals_offset` of the payload).
struct ListEntries {
  const uint8_t* payloads;
  size_t stride;
  int64_t k;
  size_t vals_offset;
  const int64_t* idx;
  __device__ const float* vals(int j) const {
    return reinterpret_cast<const float*>(payloads + static_cast<size_t>(j) * stride + vals_offset);
  }
  __device__ int64_t index(int j, int64_t e) const { return idx[static_cast<int64_t>(j) * k + e]; }
};

/// The tile merge of `num_payloads` (<= kMaxWeights) payloads, described above. kOverwrite: one
/// payload, out = its decoded values, zeros elsewhere. Otherwise the sums start from +0.0f
/// (start_from_zero) or from out, and payload j adds accumulate(sum, weights.w[j], value).
/// `scale`: the decoded value is the stored value times scale (topk 1, unbiased randk n/k).
/// `starts`: the payloads' per-tile entry offsets (sparse_tile_starts_kernel).
template <class Entries, bool kOverwrite, class Store>
__global__ void __launch_bounds__(kThreads)
    sparse_merge_kernel(Entries src, int64_t n, int num_payloads, const int64_t* __restrict__ starts,
                        WeightList weights, float scale, bool start_from_zero, float* __restrict__ out,
                        const DeviceStatus* status, Store store) {
  __shared__ float tile[kMergeTile];
  __shared__ int32_t stage_off[kMergeStage];
  __shared__ float stage_val[kMergeStage];
  __shared__ int64_t first_entry[kMaxWeights];  ///< payload j's first entry in the tile
  __shared__ int64_t pre[kMaxWeights + 1];      ///< entries of the tile before payload j (sparse_payload_of)
  if (status_failed(status)) return;
  const int tid = static_cast<int>(threadIdx.x);
  const int lane = tid & 31;
  const bool vec = aligned16(out) && store.aligned();
  const int64_t tiles = gcomp::detail::ceil_div(n, int64_t{kMergeTile});
  for (int64_t t = blockIdx.x; t < tiles; t += gridDim.x) {
    const int64_t begin = t * kMergeTile;
    const int64_t len = n - begin < kMergeTile ? n - begin : int64_t{kMergeTile};
    // 1. Each payload's entry range [lo, hi) of the tile; the prefix counts by one warp (two
    //    payloads per lane).
    if (tid < 32) {
      int64_t cnt[2] = {0, 0};
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        const int j = 2 * lane + h;
        if (j < num_payloads) {
          int64_t lo = 0;
          int64_t hi = 0;
          const int64_t* mine = starts + static_cast<int64_t>(j) * (tiles + 1) + t;
          gcomp::detail::sparse_tile_range(mine[0], mine[1], src.k, lo, hi);
          first_entry[j] = lo;
          cnt[h] = hi - lo;
        }
      }
      int64_t incl = cnt[0] + cnt[1];
#pragma unroll
      for (int d = 1; d < 32; d *= 2) {
        const int64_t up = __shfl_up_sync(kFullMask, incl, d);
        if (lane >= d) incl += up;
      }
      const int64_t excl = incl - cnt[0] - cnt[1];
      if (lane == 0) pre[0] = 0;
      if (2 * lane < num_payloads) pre[2 * lane + 1] = excl + cnt[0];
      if (2 * lane + 1 < num_payloads) pre[2 * lane + 2] = incl;
    }
    // 2. The tile's sums from +0.0f or from out.
    for (int64_t q = tid; q * lanes::kQuadElems < len; q += kThreads) {
      const int64_t first = begin + q * lanes::kQuadElems;
      const int live = lanes::quad_live(first, n);
      Quad acc{{0.0f, 0.0f, 0.0f, 0.0f}};
      if (!kOverwrite && !start_from_zero) acc = load_out_quad(out, first, live, vec);
#pragma unroll
      for (int e = 0; e < lanes::kQuadElems; ++e) tile[q * lanes::kQuadElems + e] = acc.v[e];
    }
    __syncthreads();
    // 3. The entries in rounds of kMergeStage: all of a round's loads at once (any payload), then
    //    the round merged payload after payload from shared memory.
    const int64_t total = pre[num_payloads];
    for (int64_t g0 = 0; g0 < total; g0 += kMergeStage) {
      const int64_t g_end = total - g0 < kMergeStage ? total : g0 + kMergeStage;
      for (int64_t g = g0 + tid; g < g_end; g += kThreads) {
        const int j = gcomp::detail::sparse_payload_of(pre, num_payloads, g);
        const int64_t e = first_entry[j] + (g - pre[j]);
        stage_off[g - g0] = gcomp::detail::sparse_stage_offset(src.index(j, e), begin, len);
        stage_val[g - g0] = src.vals(j)[e];
      }
      __syncthreads();
      const int j_last = gcomp::detail::sparse_payload_of(pre, num_payloads, g_end - 1);
      for (int j = gcomp::detail::sparse_payload_of(pre, num_payloads, g0); j <= j_last; ++j) {
        const int64_t a = pre[j] > g0 ? pre[j] : g0;
        const int64_t b = pre[j + 1] < g_end ? pre[j + 1] : g_end;
        const float w = kOverwrite ? 1.0f : weights.w[j];
        for (int64_t g = a + tid; g < b; g += kThreads)
          gcomp::detail::sparse_merge_staged(stage_off[g - g0], stage_val[g - g0], scale, w, kOverwrite, tile);
        __syncthreads();  // payload j's sums before payload j + 1's; the stage before the next round
      }
    }
    // 4. Every element of the tile stored once.
    for (int64_t q = tid; q * lanes::kQuadElems < len; q += kThreads) {
      const int64_t first = begin + q * lanes::kQuadElems;
      const int live = lanes::quad_live(first, n);
      Quad s;
#pragma unroll
      for (int e = 0; e < lanes::kQuadElems; ++e) s.v[e] = tile[q * lanes::kQuadElems + e];
      store(out, first, live, vec, s);
    }
    __syncthreads();  // the tile, the stage and the prefix counts are reused by the next tile
  }
}

}  // namespace gcomp::cuda::detail
