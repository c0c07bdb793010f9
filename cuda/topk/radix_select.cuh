// SPDX-License-Identifier: Apache-2.0
// Exact k-selection on 32-bit keys, shared by topk (spec §4.1) and randk (§4.2).
//
// Keys: topk uses the magnitude bits float_bits(x) & 0x7fffffff (unsigned order = |x| order for
// finite floats); randk uses ~philox_word(key, kStreamSelect, i), so "largest ~key" is "smallest
// key". Both select the k largest keys with ties to the lower index, which is exactly the CPU order
// (topk_before / randk_before in include/gcomp/detail/sparse.hpp).
//
// Steps, all on the device (no host sync), with at most three passes over the n elements:
//  1. pass 1 (radix_histogram_kernel, 12 bits): a histogram of the top 12 key bits; one CUDA
//     block fixes the digit d1 where the running count from the top reaches k (radix_digit_kernel).
//     The elements of bin d1 are the candidates. If they fit the candidate buffer (n / 16 + 4096;
//     always for randk, whose keys are uniform, and for any spread-out gradient), the candidate path
//     follows, else the full path:
//  2. pass 2, candidate path (compact_candidates_kernel): per tile of kSelectTile elements the
//     count of class A (top 12 bits > d1: every such element is selected), and the candidates'
//     (key, index) compacted into the buffer (warp-aggregated atomics, any order). The remaining
//     20 bits of T come from two 10-bit digit passes over the candidates alone
//     (candidate_histogram_kernel); then each candidate with key > T adds to its tile's class A
//     count, each with key == T to its tile's class B count (candidate_tile_counts_kernel).
//     Full path instead: three digit passes over the n elements (8, 8 and 4 bits, the elements
//     whose higher bits equal the prefix), then count_tiles_kernel counts A (key > T) and B
//     (key == T) per tile.
//     After either: T = the k-th largest key, k_rem = how many elements equal to T are taken.
//  3. two CUB exclusive scans over the tiles' counts; pass 3 (scatter_selected_kernel): a block
//     scan per round of 4 kThreads elements gives each element the number of A and B elements
//     before it; element i is selected iff it is A, or B with fewer than k_rem B before it (the
//     lowest indices win ties); its output slot is a_before + min(b_before, k_rem), so the output
//     is in ascending index order. The same pass writes the payload values and indices and the
//     fused EF/DIANA memory updates, or (randk decode) the selected indices for the tile merge.
// Elements go by quads (cuda/common/lanes.hpp): one 16-byte load of x, or one Philox block for
// the 4 random-k keys. topk_sampled selects on its sample with four 8-bit passes (the sample is
// small) and reuses step 3 in "truncate" mode: B = key >= T (a sampled threshold), A empty.
#pragma once

#include "cuda/common/device_types.cuh"
#include "cuda/dispatch/plan.cuh"

#include <gcomp/detail/codec_math.hpp>
#include <gcomp/detail/philox.hpp>

#include <cub/block/block_reduce.cuh>
#include <cub/block/block_scan.cuh>

namespace gcomp::cuda::detail {

inline constexpr int kSelectRounds = static_cast<int>(kSelectTile / (kThreads * lanes::kQuadElems));
static_assert(kSelectTile < 65536, "per-tile class counts are packed in 16 bits");

enum : uint32_t { kSelectExact = 0, kSelectTruncate = 1 };

/// topk key: magnitude bits of the (possibly DIANA-difference) input. keys4: the keys of the quad
/// first .. first + 3 (cuda/common/lanes.hpp) from one 16-byte load, and the values.
struct MagnitudeKey {
  static constexpr bool kFromValue = true;
  Input in;
  bool vec = false;
  __device__ void prepare(const SelectState&) { vec = in.aligned16(); }
  __device__ uint32_t operator()(int64_t i) const { return gcomp::detail::float_bits(in(i)) & 0x7fffffffu; }
  __device__ void keys4(int64_t first, int live, uint32_t (&k)[lanes::kQuadElems], Quad& x) const {
    x = load_quad(in, first, live, vec);
#pragma unroll
    for (int j = 0; j < lanes::kQuadElems; ++j) k[j] = gcomp::detail::float_bits(x.v[j]) & 0x7fffffffu;
  }
};

/// MagnitudeKey of the Session's gradient view (Input::src not kSrcF32: bf16 / f16 elements
/// widened, and/or NaN/Inf loaded as +0, as they load): the keys and values of the widened /
/// zeroed copy, so every pass of the selection sees that copy's floats (keys4: load_view_quad, one
/// 8-byte load per quad of an 8-byte aligned bf16 / f16 view). Its own instantiations of the
/// selection kernels, so the fp32 ones keep their code.
struct ViewMagnitudeKey : MagnitudeKey {
  __device__ uint32_t operator()(int64_t i) const { return gcomp::detail::float_bits(in.viewed(i)) & 0x7fffffffu; }
  __device__ void keys4(int64_t first, int live, uint32_t (&k)[lanes::kQuadElems], Quad& x) const {
    x = load_view_quad(in, first, live);
#pragma unroll
    for (int j = 0; j < lanes::kQuadElems; ++j) k[j] = gcomp::detail::float_bits(x.v[j]) & 0x7fffffffu;
  }
};

/// randk key: complemented Philox word of the selection stream. The step and rank come from the
/// select state (the encoder's RngKey, or the header of the payload being decoded). keys4: the four
/// keys of a quad from its one Philox block (the words of elements 4q .. 4q + 3); no value is read.
struct RandomKey {
  static constexpr bool kFromValue = false;
  gcomp::detail::RngKey key;
  __device__ void prepare(const SelectState& s) {
    key.step = s.step;
    key.rank = s.rank;
  }
  __device__ uint32_t operator()(int64_t i) const {
    return ~gcomp::detail::philox_word(key, gcomp::detail::kStreamSelect, static_cast<uint64_t>(i));
  }
  __device__ void keys4(int64_t first, int, uint32_t (&k)[lanes::kQuadElems], Quad&) const {
    const gcomp::detail::Philox4x32 r = gcomp::detail::philox_block(key, gcomp::detail::kStreamSelect,
                                                                    static_cast<uint64_t>(first) / lanes::kQuadElems);
#pragma unroll
    for (int j = 0; j < lanes::kQuadElems; ++j) k[j] = ~r.v[j];
  }
};

/// 0: not a candidate, 1: class A (always selected), 2: class B (selected while k_rem lasts).
__device__ inline int classify(uint32_t key, uint32_t threshold, uint32_t mode) {
  if (mode == kSelectExact) return key > threshold ? 1 : (key == threshold ? 2 : 0);
  return key >= threshold ? 2 : 0;
}

enum : uint32_t { kPathCandidates = 0, kPathFull = 1 };

/// When a kernel of one selection path runs: always, or only on that path (the other path's
/// kernels return at once, so both can be enqueued without a host decision).
enum : int { kRunAlways = 0, kRunCandidates = 1, kRunFull = 2 };

__device__ inline bool path_skips(const SelectState* s, int run) {
  return (run == kRunCandidates && s->path != kPathCandidates) || (run == kRunFull && s->path != kPathFull);
}

/// Resets the state for selecting k and clears the histogram. `header`: randk payload ([step,
/// rank]) or nullptr to use (step, rank). One block of kThreads threads.
__global__ void __launch_bounds__(kThreads) init_select_kernel(SelectState* s, unsigned long long* hist, int64_t k,
                                                               const uint32_t* header, uint32_t step, uint32_t rank) {
  for (int b = static_cast<int>(threadIdx.x); b < kSelectBins; b += kThreads) hist[b] = 0;
  if (threadIdx.x == 0) {
    s->prefix = 0;
    s->mode = kSelectExact;
    s->k_rem = k;
    s->step = header != nullptr ? header[0] : step;
    s->rank = header != nullptr ? header[1] : rank;
    s->thr = 0.0f;
    s->round = 0;
    s->done = 0;
    s->path = kPathFull;
    s->count = 0;
    s->candidates = 0;
  }
}

/// The mask of the key bits above a digit of `bits` bits at `shift`.
__device__ inline uint32_t high_mask(int shift, int bits) {
  return shift + bits >= 32 ? 0u : (0xffffffffu << (shift + bits));
}

/// A histogram of the digit (bits `bits` at `shift`) over the n elements whose bits above it equal
/// the prefix found so far (a pass over the input; per-block counters in shared memory, one 64-bit
/// atomic per nonzero bin per block).
template <class KeyFn>
__global__ void __launch_bounds__(kThreads)
    radix_histogram_kernel(KeyFn kf, int64_t n, int shift, int bits, SelectState* s, unsigned long long* hist,
                           DeviceStatus* status, bool report_nonfinite, int run) {
  __shared__ unsigned int counts[kSelectBins];
  if (s->mode != kSelectExact || path_skips(s, run)) return;
  kf.prepare(*s);
  const uint32_t prefix = s->prefix;
  const uint32_t high = high_mask(shift, bits);
  const uint32_t digit = (1u << bits) - 1u;
  const int bins = 1 << bits;
  for (int b = static_cast<int>(threadIdx.x); b < bins; b += kThreads) counts[b] = 0;
  __syncthreads();
  // Warp-uniform loop (the lanes' quads are consecutive): equal digits of a warp are added with one
  // shared-memory atomic (__match_any_sync), which matters where gradients crowd a few bins.
  const int lane = static_cast<int>(threadIdx.x & 31u);
  const int64_t quads = gcomp::detail::ceil_div(n, int64_t{lanes::kQuadElems});
  for (int64_t q0 = global_warp() * 32; q0 < quads; q0 += grid_warps() * 32) {
    const int64_t first = (q0 + lane) * lanes::kQuadElems;
    const int live = lanes::quad_live(first, n);
    uint32_t keys[lanes::kQuadElems] = {0u, 0u, 0u, 0u};
    Quad x;
    if (live > 0) kf.keys4(first, live, keys, x);
#pragma unroll
    for (int j = 0; j < lanes::kQuadElems; ++j) {
      const bool live_j = j < live;
      if (live_j && report_nonfinite && keys[j] >= 0x7f800000u)
        raise_status(status, gcompErrorNonFinite, static_cast<uint64_t>(first + j));
      const uint32_t bin = live_j && (keys[j] & high) == (prefix & high) ? (keys[j] >> shift) & digit : 0xffffffffu;
      const unsigned same = __match_any_sync(kFullMask, bin);
      if (bin != 0xffffffffu && lane == __ffs(static_cast<int>(same)) - 1) atomicAdd(&counts[bin], __popc(same));
    }
  }
  __syncthreads();
  for (int b = static_cast<int>(threadIdx.x); b < bins; b += kThreads)
    if (counts[b] != 0) atomicAdd(&hist[b], static_cast<unsigned long long>(counts[b]));
}

/// One block of kThreads threads: fixes the digit (bits `bits` at `shift`) where the running count
/// from the top reaches k_rem, and clears the histogram. `cand_cap` > 0 (the first 12-bit digit of
/// an exact selection): chooses the path, candidates when the digit's bin fits the buffer.
__global__ void __launch_bounds__(kThreads)
    radix_digit_kernel(SelectState* s, unsigned long long* hist, int shift, int bits, int64_t cand_cap, int run) {
  using Scan = cub::BlockScan<unsigned long long, kThreads>;
  __shared__ typename Scan::TempStorage tmp;
  __shared__ unsigned long long bin_count;
  if (s->mode != kSelectExact || path_skips(s, run)) return;
  if (threadIdx.x == 0) bin_count = ~0ull;
  const int bins = 1 << bits;
  const int per = (bins + kThreads - 1) / kThreads;  // bins per thread, from the top
  const int top = bins - 1 - static_cast<int>(threadIdx.x) * per;
  unsigned long long mine = 0;
  for (int j = 0; j < per; ++j)
    if (top - j >= 0) mine += hist[top - j];
  unsigned long long above;
  Scan(tmp).ExclusiveSum(mine, above);
  const unsigned long long k_rem = static_cast<unsigned long long>(s->k_rem);
  __syncthreads();
  if (above < k_rem && above + mine >= k_rem) {  // one thread: the digit is in its bins
    unsigned long long run_above = above;
    for (int j = 0; j < per; ++j) {
      const int d = top - j;
      if (d < 0) break;
      const unsigned long long h = hist[d];
      if (run_above + h >= k_rem) {
        s->prefix |= static_cast<uint32_t>(d) << shift;
        s->k_rem = static_cast<int64_t>(k_rem - run_above);
        bin_count = h;
        break;
      }
      run_above += h;
    }
  }
  __syncthreads();
  if (threadIdx.x == 0 && cand_cap > 0)
    s->path = bin_count <= static_cast<unsigned long long>(cand_cap) ? kPathCandidates : kPathFull;
  for (int b = static_cast<int>(threadIdx.x); b < bins; b += kThreads) hist[b] = 0;
}

/// Pass 2 of the candidate path, one CUDA block per tile: cnt_a[t] = the tile's elements above the
/// first digit's bin (class A, all selected), cnt_b[t] = 0; the bin's elements (the candidates)
/// are appended to (cand_key, cand_idx) with one atomic per warp and key slot.
template <class KeyFn>
__global__ void __launch_bounds__(kThreads)
    compact_candidates_kernel(KeyFn kf, int64_t n, int64_t tiles, SelectState* s, int64_t* cnt_a, int64_t* cnt_b,
                              uint32_t* cand_key, int64_t* cand_idx) {
  using Reduce = cub::BlockReduce<uint32_t, kThreads>;
  __shared__ typename Reduce::TempStorage tmp;
  if (s->mode != kSelectExact || s->path != kPathCandidates) return;
  kf.prepare(*s);
  const uint32_t d1 = s->prefix >> 20;
  const int lane = static_cast<int>(threadIdx.x & 31u);
  for (int64_t t = blockIdx.x; t < tiles; t += gridDim.x) {
    uint32_t above = 0;
    for (int r = 0; r < kSelectRounds; ++r) {
      const int64_t first = t * kSelectTile + (r * kThreads + static_cast<int64_t>(threadIdx.x)) * lanes::kQuadElems;
      const int live = lanes::quad_live(first, n);
      uint32_t keys[lanes::kQuadElems] = {0u, 0u, 0u, 0u};
      Quad x;
      if (live > 0) kf.keys4(first, live, keys, x);
#pragma unroll
      for (int j = 0; j < lanes::kQuadElems; ++j) {
        const bool live_j = j < live;
        const uint32_t top = keys[j] >> 20;
        if (live_j && top > d1) ++above;
        const bool cand = live_j && top == d1;
        const uint32_t ballot = __ballot_sync(kFullMask, cand);  // warp-uniform: every lane reaches it
        if (ballot == 0u) continue;
        unsigned long long base = 0;
        const int leader = __ffs(static_cast<int>(ballot)) - 1;
        if (lane == leader) base = atomicAdd(&s->candidates, static_cast<unsigned long long>(__popc(ballot)));
        base = __shfl_sync(kFullMask, base, leader);
        if (cand) {
          const unsigned long long slot = base + static_cast<unsigned long long>(__popc(ballot & ((1u << lane) - 1u)));
          cand_key[slot] = keys[j];
          cand_idx[slot] = first + j;
        }
      }
    }
    const uint32_t total = Reduce(tmp).Sum(above);
    if (threadIdx.x == 0) {
      cnt_a[t] = static_cast<int64_t>(total);
      cnt_b[t] = 0;
    }
    __syncthreads();
  }
}

/// A histogram of the digit (bits `bits` at `shift`) over the candidates whose bits above it equal
/// the prefix (candidate path only).
__global__ void __launch_bounds__(kThreads) candidate_histogram_kernel(SelectState* s, unsigned long long* hist,
                                                                       const uint32_t* cand_key, int shift, int bits) {
  __shared__ unsigned int counts[kSelectBins];
  if (s->mode != kSelectExact || s->path != kPathCandidates) return;
  const uint32_t prefix = s->prefix;
  const uint32_t high = high_mask(shift, bits);
  const uint32_t digit = (1u << bits) - 1u;
  const int bins = 1 << bits;
  for (int b = static_cast<int>(threadIdx.x); b < bins; b += kThreads) counts[b] = 0;
  __syncthreads();
  const auto count = static_cast<int64_t>(s->candidates);
  for (int64_t c = global_thread(); c < count; c += grid_threads()) {
    const uint32_t key = cand_key[c];
    if ((key & high) == (prefix & high)) atomicAdd(&counts[(key >> shift) & digit], 1u);
  }
  __syncthreads();
  for (int b = static_cast<int>(threadIdx.x); b < bins; b += kThreads)
    if (counts[b] != 0) atomicAdd(&hist[b], static_cast<unsigned long long>(counts[b]));
}

/// The candidates' part of the class counts (candidate path, T known): key > T adds to its tile's
/// class A count, key == T to its class B count.
__global__ void __launch_bounds__(kThreads)
    candidate_tile_counts_kernel(const SelectState* s, const uint32_t* cand_key, const int64_t* cand_idx,
                                 int64_t* cnt_a, int64_t* cnt_b) {
  if (s->mode != kSelectExact || s->path != kPathCandidates) return;
  const uint32_t threshold = s->prefix;
  const auto count = static_cast<int64_t>(s->candidates);
  for (int64_t c = global_thread(); c < count; c += grid_threads()) {
    const uint32_t key = cand_key[c];
    const int64_t tile = cand_idx[c] / kSelectTile;
    if (key > threshold) atomicAdd(reinterpret_cast<unsigned long long*>(cnt_a + tile), 1ull);
    if (key == threshold) atomicAdd(reinterpret_cast<unsigned long long*>(cnt_b + tile), 1ull);
  }
}

/// The selection's tile walk: tiles t = blockIdx.x, blockIdx.x + gridDim.x, ... of kSelectTile
/// elements, each kSelectRounds rounds of a quad per thread (elements t * kSelectTile +
/// r * 4 kThreads + 4 threadIdx.x + j, in increasing order for each thread). Every thread calls
/// `per_key(key, i)` for each of its elements of the tile, then `end_tile(t)` (every thread of the
/// block: it may synchronize the block).
template <class KeyFn, class PerKey, class EndTile>
__device__ void for_each_tile_key(const KeyFn& kf, int64_t n, int64_t tiles, PerKey&& per_key, EndTile&& end_tile) {
  for (int64_t t = blockIdx.x; t < tiles; t += gridDim.x) {
    for (int r = 0; r < kSelectRounds; ++r) {
      const int64_t first = t * kSelectTile + (r * kThreads + static_cast<int64_t>(threadIdx.x)) * lanes::kQuadElems;
      const int live = lanes::quad_live(first, n);
      if (live == 0) continue;
      uint32_t keys[lanes::kQuadElems];
      Quad x;
      kf.keys4(first, live, keys, x);
#pragma unroll
      for (int j = 0; j < lanes::kQuadElems; ++j)
        if (j < live) per_key(keys[j], first + j);
    }
    end_tile(t);
  }
}

/// for_each_tile_key with a 32-bit sum per tile: `per_key(key, i)` returns what element i adds to
/// the thread's tile value; thread 0 gets `per_tile(t, sum)` with the block's sum. `tmp` is reused
/// from tile to tile (a __syncthreads after each).
template <class KeyFn, class PerKey, class PerTile>
__device__ void select_tile_sums(const KeyFn& kf, int64_t n, int64_t tiles,
                                 typename cub::BlockReduce<uint32_t, kThreads>::TempStorage& tmp, PerKey&& per_key,
                                 PerTile&& per_tile) {
  uint32_t sum = 0;
  for_each_tile_key(
      kf, n, tiles, [&](uint32_t key, int64_t i) { sum += per_key(key, i); },
      [&](int64_t t) {
        const uint32_t total = cub::BlockReduce<uint32_t, kThreads>(tmp).Sum(sum);
        if (threadIdx.x == 0) per_tile(t, total);
        __syncthreads();
        sum = 0;
      });
}

/// Per-tile counts of class A and class B elements (exact selection, full path), by
/// select_tile_sums. Truncate mode (topk_sampled) has its tile counts from count_rounds_kernel
/// already (finish_rounds_kernel).
template <class KeyFn>
__global__ void __launch_bounds__(kThreads) count_tiles_kernel(KeyFn kf, int64_t n, int64_t tiles, const SelectState* s,
                                                               int64_t* cnt_a, int64_t* cnt_b, int run) {
  __shared__ typename cub::BlockReduce<uint32_t, kThreads>::TempStorage tmp;
  if (s->mode != kSelectExact || path_skips(s, run)) return;
  kf.prepare(*s);
  const uint32_t threshold = s->prefix;
  const uint32_t mode = s->mode;
  select_tile_sums(
      kf, n, tiles, tmp,
      [&](uint32_t key, int64_t) {
        const int c = classify(key, threshold, mode);
        return c == 1 ? 0x10000u : (c == 2 ? 1u : 0u);  // a tile has at most 2^12 elements
      },
      [&](int64_t t, uint32_t total) {
        cnt_a[t] = static_cast<int64_t>(total >> 16);
        cnt_b[t] = static_cast<int64_t>(total & 0xffffu);
      });
}

/// What scatter_kernel writes: the encoded records (and the fused memory), or (randk decode) the
/// selected indices in ascending order, for the tile merge (cuda/topk/sparse_merge_kernels.cuh).
enum class ScatterOp : int { kEncode = 0, kDecodeIndices = 1 };

struct ScatterArgs {
  ScatterOp op;                  ///< what the pass writes
  gcomp::detail::FuseMode fuse;  ///< encode: what the memory update is (fused_memory.hpp)
  Input in;                      ///< encode: the values
  float* vals_out;               ///< encode: payload values (k)
  int64_t* idx_out;              ///< encode: selected indices (k) or nullptr; kDecodeIndices: the k indices
  uint32_t* hdr_out;             ///< encode: randk payload header or nullptr
  float* mem;
  float alpha;
  float scale;  ///< encode: decoded value = stored value * scale (1 for topk; n/k for unbiased randk)
  /// encode with FuseMode::kEF of a key that does not read the values (randk): the pass reads every
  /// value, so it reports a non-finite one (gcompErrorNonFinite at its index) instead of a check
  /// pass before it; the payload and the memory are then unspecified (DevicePlan::fold_check).
  bool check;
  /// encode with FuseMode::kDiana into a separate memory array: every element of it written (the
  /// unselected ones h = in.y), where the in-place update writes the selected elements only.
  bool full_memory;
};

/// kViewIn: the encode's input a.in is the Session's gradient view (randk: its selected elements,
/// and with EF all, are loaded by Input::viewed; topk's values come from its keys4).
template <class KeyFn, bool kViewIn = false>
__global__ void __launch_bounds__(kThreads)
    scatter_selected_kernel(KeyFn kf, int64_t n, int64_t tiles, const SelectState* s, const int64_t* off_a,
                            const int64_t* off_b, ScatterArgs a, DeviceStatus* status) {
  using Scan = cub::BlockScan<uint32_t, kThreads>;
  __shared__ typename Scan::TempStorage tmp;
  if (status_failed(status)) return;
  kf.prepare(*s);
  const uint32_t threshold = s->prefix;
  const uint32_t mode = s->mode;
  const int64_t k_rem = s->k_rem;
  if (a.hdr_out != nullptr && blockIdx.x == 0 && threadIdx.x == 0) {
    a.hdr_out[0] = s->step;
    a.hdr_out[1] = s->rank;
  }
  for (int64_t t = blockIdx.x; t < tiles; t += gridDim.x) {
    int64_t run_a = off_a[t];
    int64_t run_b = off_b[t];
    for (int r = 0; r < kSelectRounds; ++r) {
      const int64_t first = t * kSelectTile + (r * kThreads + static_cast<int64_t>(threadIdx.x)) * lanes::kQuadElems;
      const int live = lanes::quad_live(first, n);
      uint32_t keys[lanes::kQuadElems] = {0u, 0u, 0u, 0u};
      Quad x{{0.0f, 0.0f, 0.0f, 0.0f}};
      int cls[lanes::kQuadElems] = {0, 0, 0, 0};
      uint32_t mine = 0;
      if (live > 0) {
        kf.keys4(first, live, keys, x);
#pragma unroll
        for (int j = 0; j < lanes::kQuadElems; ++j) {
          cls[j] = j < live ? classify(keys[j], threshold, mode) : 0;
          mine += cls[j] == 1 ? 0x10000u : (cls[j] == 2 ? 1u : 0u);
        }
      }
      uint32_t before;
      uint32_t round_total;
      Scan(tmp).ExclusiveSum(mine, before, round_total);
      int64_t a_before = run_a + static_cast<int64_t>(before >> 16);
      int64_t b_before = run_b + static_cast<int64_t>(before & 0xffffu);
#pragma unroll
      for (int j = 0; j < lanes::kQuadElems; ++j) {
        if (j >= live) continue;
        const int64_t i = first + j;
        const int c = cls[j];
        const bool selected = c == 1 || (c == 2 && b_before < k_rem);
        const int64_t pos = a_before + (b_before < k_rem ? b_before : k_rem);
        if (a.op == ScatterOp::kEncode) {
          float v = x.v[j];
          if constexpr (!KeyFn::kFromValue) {
            if (selected || a.fuse == gcomp::detail::FuseMode::kEF)
              v = kViewIn ? viewed_element(a.in.x, a.in.y, a.in.a, a.in.b, a.in.src, i) : a.in(i);
            if (a.check && !gcomp::detail::is_finite_f(v)) raise_status(status, gcompErrorNonFinite, i);
          }
          if (selected) {
            a.vals_out[pos] = v;
            if (a.idx_out != nullptr) a.idx_out[pos] = i;
          }
          using gcomp::detail::FuseMode;
          if (a.fuse == FuseMode::kEF) a.mem[i] = selected ? fused_memory(a.fuse, v, a.alpha, v * a.scale) : v;
          if (a.fuse == FuseMode::kDiana && (selected || a.full_memory))
            a.mem[i] = selected ? fused_memory(a.fuse, a.in.y[i], a.alpha, v * a.scale) : a.in.y[i];
        } else if (selected) {  // kDecodeIndices
          a.idx_out[pos] = i;
        }
        if (c == 1) ++a_before;
        if (c == 2) ++b_before;
      }
      run_a += static_cast<int64_t>(round_total >> 16);
      run_b += static_cast<int64_t>(round_total & 0xffffu);
      __syncthreads();  // tmp is reused by the next round
    }
  }
}

}  // namespace gcomp::cuda::detail
