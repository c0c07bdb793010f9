// SPDX-License-Identifier: Apache-2.0
// Exact k-selection on 32-bit keys, shared by topk (spec §4.1) and randk (§4.2).
//
// Keys: topk uses the magnitude bits float_bits(x) & 0x7fffffff (unsigned order = |x| order for
// finite floats); randk uses ~philox_word(key, kStreamSelect, i), so "largest ~key" is "smallest
// key". Both select the k largest keys with ties to the lower index, which is exactly the CPU order
// (topk_before / randk_before in include/gcomp/detail/sparse.hpp).
//
// Steps, all on the device (no host sync):
//  1. radix passes, 8-bit digits from the top (shift 24, 16, 8, 0): a histogram of the digit over
//     the elements whose higher bits equal the prefix found so far (radix_histogram_kernel), then
//     one thread walks the 256 bins from the top and fixes the digit where the running count
//     reaches k_rem (radix_digit_kernel). After 4 passes prefix = T, the k-th largest key, and
//     k_rem = how many elements equal to T are taken (every element with key > T is taken).
//  2. class counts per tile of kSelectTile elements (A: key > T, B: key == T), two CUB exclusive
//     scans over the tiles.
//  3. scatter: a block scan per 256-element round gives each element the number of A and B
//     elements before it; element i is selected iff it is A, or B with fewer than k_rem B before
//     it (the lowest indices win ties); its output slot is a_before + min(b_before, k_rem), so the
//     output is in ascending index order. The same pass writes the payload values and indices and
//     the fused EF/DIANA memory updates, or (randk decode) the decoded values.
// topk_sampled reuses steps 2-3 in "truncate" mode: B = key >= T (a sampled threshold), A empty.
#pragma once

#include "cuda/common/device_types.cuh"
#include "cuda/dispatch/plan.cuh"

#include <gcomp/detail/codec_math.hpp>
#include <gcomp/detail/philox.hpp>

#include <cub/block/block_reduce.cuh>
#include <cub/block/block_scan.cuh>

namespace gcomp::cuda::detail {

inline constexpr int kSelectRounds = static_cast<int>(kSelectTile / kThreads);
static_assert(kSelectTile < 65536, "per-tile class counts are packed in 16 bits");

enum : uint32_t { kSelectExact = 0, kSelectTruncate = 1 };

/// topk key: magnitude bits of the (possibly DIANA-difference) input.
struct MagnitudeKey {
  static constexpr bool kFromValue = true;
  Input in;
  __device__ void prepare(const SelectState&) {}
  __device__ uint32_t operator()(int64_t i) const { return gcomp::detail::float_bits(in(i)) & 0x7fffffffu; }
};

/// randk key: complemented Philox word of the selection stream. The step and rank come from the
/// select state (the encoder's RngKey, or the header of the payload being decoded).
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
};

/// 0: not a candidate, 1: class A (always selected), 2: class B (selected while k_rem lasts).
__device__ inline int classify(uint32_t key, uint32_t threshold, uint32_t mode) {
  if (mode == kSelectExact) return key > threshold ? 1 : (key == threshold ? 2 : 0);
  return key >= threshold ? 2 : 0;
}

/// Resets the state for selecting k. `header`: randk payload ([step, rank]) or nullptr to use
/// (step, rank). One block of kThreads threads.
__global__ void __launch_bounds__(kThreads)
    init_select_kernel(SelectState* s, int64_t k, const uint32_t* header, uint32_t step, uint32_t rank) {
  s->hist[threadIdx.x] = 0;
  if (threadIdx.x == 0) {
    s->prefix = 0;
    s->mode = kSelectExact;
    s->k_rem = k;
    s->step = header != nullptr ? header[0] : step;
    s->rank = header != nullptr ? header[1] : rank;
    s->thr = 0.0f;
    s->round = 0;
    s->done = 0;
    s->count = 0;
  }
}

template <class KeyFn>
__global__ void __launch_bounds__(kThreads)
    radix_histogram_kernel(KeyFn kf, int64_t n, int shift, SelectState* s, DeviceStatus* status, bool report_nonfinite) {
  __shared__ unsigned int counts[256];
  if (s->mode != kSelectExact) return;
  kf.prepare(*s);
  const uint32_t prefix = s->prefix;
  const uint32_t high = shift >= 24 ? 0u : (0xffffffffu << (shift + 8));
  counts[threadIdx.x] = 0;
  __syncthreads();
  for (int64_t i = global_thread(); i < n; i += grid_threads()) {
    const uint32_t key = kf(i);
    if (report_nonfinite && key >= 0x7f800000u) raise_status(status, gcompErrorNonFinite, static_cast<uint64_t>(i));
    if ((key & high) == (prefix & high)) atomicAdd(&counts[(key >> shift) & 0xffu], 1u);
  }
  __syncthreads();
  if (counts[threadIdx.x] != 0) atomicAdd(&s->hist[threadIdx.x], static_cast<unsigned long long>(counts[threadIdx.x]));
}

/// One block of kThreads threads: fixes the digit at `shift` and clears the histogram.
__global__ void __launch_bounds__(kThreads) radix_digit_kernel(SelectState* s, int shift) {
  __shared__ unsigned long long h[256];
  if (s->mode != kSelectExact) return;
  h[threadIdx.x] = s->hist[threadIdx.x];
  s->hist[threadIdx.x] = 0;
  __syncthreads();
  if (threadIdx.x != 0) return;
  const unsigned long long k_rem = static_cast<unsigned long long>(s->k_rem);
  unsigned long long above = 0;
  for (int d = 255; d >= 0; --d) {
    if (above + h[d] >= k_rem) {
      s->prefix |= static_cast<uint32_t>(d) << shift;
      s->k_rem = static_cast<int64_t>(k_rem - above);
      return;
    }
    above += h[d];
  }
}

/// Per-tile counts of class A and class B elements.
template <class KeyFn>
__global__ void __launch_bounds__(kThreads)
    count_tiles_kernel(KeyFn kf, int64_t n, int64_t tiles, const SelectState* s, int64_t* cnt_a, int64_t* cnt_b) {
  using Reduce = cub::BlockReduce<uint32_t, kThreads>;
  __shared__ typename Reduce::TempStorage tmp;
  kf.prepare(*s);
  const uint32_t threshold = s->prefix;
  const uint32_t mode = s->mode;
  for (int64_t t = blockIdx.x; t < tiles; t += gridDim.x) {
    uint32_t packed = 0;
    for (int r = 0; r < kSelectRounds; ++r) {
      const int64_t i = t * kSelectTile + r * kThreads + threadIdx.x;
      if (i < n) {
        const int c = classify(kf(i), threshold, mode);
        packed += c == 1 ? 0x10000u : (c == 2 ? 1u : 0u);
      }
    }
    const uint32_t total = Reduce(tmp).Sum(packed);
    if (threadIdx.x == 0) {
      cnt_a[t] = static_cast<int64_t>(total >> 16);
      cnt_b[t] = static_cast<int64_t>(total & 0xffffu);
    }
    __syncthreads();
  }
}

enum : int { kScatterEncode = 0, kScatterDecodeOverwrite = 1, kScatterDecodeAccumulate = 2 };

struct ScatterArgs {
  int op;              ///< kScatter*
  int fuse;            ///< encode: 0 plain, 1 EF (mem = e), 2 DIANA (mem = h)
  Input in;            ///< encode: the values
  float* vals_out;     ///< encode: payload values (k)
  int64_t* idx_out;    ///< encode: selected indices (k) or nullptr
  uint32_t* hdr_out;   ///< encode: randk payload header or nullptr
  float* mem;
  float alpha;
  float scale;         ///< decoded value = stored value * scale (1 for topk; n/k for unbiased randk)
  const float* vals_in;  ///< decode: payload values
  float weight;        ///< decode accumulate
  float* out;          ///< decode
};

template <class KeyFn>
__global__ void __launch_bounds__(kThreads)
    scatter_selected_kernel(KeyFn kf, int64_t n, int64_t tiles, const SelectState* s, const int64_t* off_a,
                            const int64_t* off_b, ScatterArgs a, const DeviceStatus* status) {
  using gcomp::detail::accumulate;
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
      const int64_t i = t * kSelectTile + r * kThreads + threadIdx.x;
      const bool live = i < n;
      float x = 0.0f;
      int c = 0;
      if (live) {
        uint32_t key;
        if constexpr (KeyFn::kFromValue) {
          x = a.in(i);
          key = gcomp::detail::float_bits(x) & 0x7fffffffu;
        } else {
          key = kf(i);
        }
        c = classify(key, threshold, mode);
      }
      uint32_t before;
      uint32_t round_total;
      Scan(tmp).ExclusiveSum(c == 1 ? 0x10000u : (c == 2 ? 1u : 0u), before, round_total);
      const int64_t a_before = run_a + static_cast<int64_t>(before >> 16);
      const int64_t b_before = run_b + static_cast<int64_t>(before & 0xffffu);
      const bool selected = c == 1 || (c == 2 && b_before < k_rem);
      const int64_t pos = a_before + (b_before < k_rem ? b_before : k_rem);
      if (live) {
        if (a.op == kScatterEncode) {
          if constexpr (!KeyFn::kFromValue) {
            if (selected || a.fuse == 1) x = a.in(i);
          }
          if (selected) {
            a.vals_out[pos] = x;
            if (a.idx_out != nullptr) a.idx_out[pos] = i;
          }
          if (a.fuse == 1) a.mem[i] = selected ? accumulate(x, -1.0f, x * a.scale) : x;
          if (a.fuse == 2 && selected) a.mem[i] = accumulate(a.mem[i], a.alpha, x * a.scale);
        } else if (a.op == kScatterDecodeOverwrite) {
          a.out[i] = selected ? a.vals_in[pos] * a.scale : 0.0f;
        } else if (selected) {
          a.out[i] = accumulate(a.out[i], a.weight, a.vals_in[pos] * a.scale);
        }
      }
      run_a += static_cast<int64_t>(round_total >> 16);
      run_b += static_cast<int64_t>(round_total & 0xffffu);
      __syncthreads();  // tmp is reused by the next round
    }
  }
}

}  // namespace gcomp::cuda::detail
