// SPDX-License-Identifier: Apache-2.0
// topk payload (host/codecs/sparse_codecs.cpp, spec §4.1): k fp32 values, then ceil(k w / 32) words
// of w-bit indices (w = ceil(log2 n)), ascending, packed LSB first by pack_index_word (one thread
// per output word, no atomics). Decode: the validation (one thread per entry); the output is written
// by the tile merge (sparse_merge_kernels.cuh), which reads the index stream in place. And the DGC-style sampled
// threshold (spec §4.4) that feeds the selection of cuda/topk/radix_select.cuh in truncate mode.
#pragma once

#include "cuda/common/device_types.cuh"
#include "cuda/dispatch/plan.cuh"
#include "cuda/topk/radix_select.cuh"

#include <gcomp/detail/codec_math.hpp>
#include <gcomp/detail/payload_rules.hpp>
#include <gcomp/detail/sparse.hpp>

namespace gcomp::cuda::detail {

__global__ void __launch_bounds__(kThreads)
    pack_indices_kernel(const int64_t* idx, int64_t k, int bits, uint32_t* packed, int64_t words,
                        const DeviceStatus* status) {
  if (status_failed(status)) return;
  for (int64_t w = global_thread(); w < words; w += grid_threads())
    packed[w] = gcomp::detail::pack_index_word(idx, k, bits, w);
}

/// Index j of the packed stream (bits <= 50, so a field spans at most 3 words).
__device__ inline int64_t read_packed_index(const uint32_t* packed, int64_t j, int bits) {
  if (bits == 0) return 0;
  const int64_t pos = j * bits;
  int64_t word = pos / 32;
  const int off = static_cast<int>(pos % 32);
  uint64_t v = static_cast<uint64_t>(packed[word]) >> off;
  int have = 32 - off;
  while (have < bits) {
    ++word;
    v |= static_cast<uint64_t>(packed[word]) << have;
    have += 32;
  }
  return static_cast<int64_t>(v & ((uint64_t{1} << bits) - 1u));
}

/// SparseCodec::validate for topk: finite values, indices < n and strictly increasing, zero padding.
__global__ void __launch_bounds__(kThreads) validate_topk_kernel(const uint8_t* payload, int64_t n, int64_t k, int bits,
                                                                 uint64_t index_base, DeviceStatus* status) {
  const float* vals = reinterpret_cast<const float*>(payload);
  const uint32_t* packed = reinterpret_cast<const uint32_t*>(payload + 4 * k);
  for (int64_t j = global_thread(); j < k; j += grid_threads()) {
    const int64_t idx = read_packed_index(packed, j, bits);
    const int64_t prev = j > 0 ? read_packed_index(packed, j - 1, bits) : -1;
    if (!gcomp::detail::value_ok(vals[j]) || !gcomp::detail::sparse_index_ok(idx, prev, n))
      raise_status(status, gcompErrorCorruptPayload, index_base + static_cast<uint64_t>(j));
  }
  const int64_t used = k * bits;
  if (global_thread() == 0 && used % 32 != 0 && !gcomp::detail::padding_clear(packed[used / 32], used))
    raise_status(status, gcompErrorCorruptPayload, index_base + static_cast<uint64_t>(k));
}

// ------------------------------------------------------------------ sampled threshold (§4.4)

/// sample[s] = |x[start + s * stride]| (kView: x is the Session's gradient view, Input::viewed).
template <bool kView>
__global__ void __launch_bounds__(kThreads)
    gather_sample_kernel(Input in, int64_t start, int64_t stride, int64_t count, float* sample) {
  for (int64_t s = global_thread(); s < count; s += grid_threads()) {
    const int64_t i = start + s * stride;
    sample[s] = gcomp::detail::abs_f(kView ? in.viewed(i) : in(i));
  }
}

/// After the selection on the sample: thr = its k_s-th largest magnitude; reset for selecting k.
__global__ void sample_threshold_kernel(SelectState* s, int64_t k) {
  s->thr = gcomp::detail::bits_float(s->prefix);
  s->prefix = 0;
  s->mode = kSelectExact;
  s->k_rem = k;
  s->count = 0;
  s->round = 0;
  s->done = 0;
  for (int r = 0; r < kAdaptRounds; ++r) s->round_count[r] = 0;
}

/// Every adaptation round's pass over x in one (spec §4.4: up to kAdaptRounds rounds, round r with
/// the threshold thr_r = thr lowered r times by 0.8). Per element the key (magnitude bits) is
/// compared with each round's T_r (sampled_round_keys: the truncate mode's T; for finite x and
/// thr_r >= 0, key >= T_r is |x| >= thr_r); per tile of kSelectTile elements the ten counts go to
/// round_cnt (add_round_counts: two 16-bit counts per word, a tile has 2^12 elements), and their
/// totals to s->round_count. A NaN/Inf element reports gcompErrorNonFinite
/// at the smallest such index (each thread keeps its first bad index, in increasing index order,
/// and raises it once); every kernel that writes the payload or the memory runs after this one and
/// returns when the status is set. KeyFn: MagnitudeKey, or ViewMagnitudeKey for the Session's
/// gradient view.
template <class KeyFn>
__global__ void __launch_bounds__(kThreads)
    count_rounds_kernel(Input in, int64_t n, int64_t tiles, SelectState* s, uint32_t* __restrict__ round_cnt,
                        DeviceStatus* status) {
  __shared__ uint32_t warp_sums[kWarpsPerBlock][kRoundWords];
  KeyFn kf{};
  kf.in = in;
  kf.prepare(*s);
  uint32_t thr_key[kAdaptRounds];
  gcomp::detail::sampled_round_keys(s->thr, thr_key);
  const int lane = static_cast<int>(threadIdx.x & 31u);
  const int warp = static_cast<int>(threadIdx.x / 32u);
  unsigned long long block_total[2] = {0, 0};  // thread w < kRoundWords: rounds 2w and 2w + 1
  int64_t bad = -1;
  uint32_t c[kRoundWords] = {};
  for_each_tile_key(
      kf, n, tiles,
      [&](uint32_t key, int64_t i) {
        if (key >= 0x7f800000u && bad < 0) bad = i;
        gcomp::detail::add_round_counts(key, thr_key, c);
      },
      [&](int64_t t) {
#pragma unroll
        for (int w = 0; w < kRoundWords; ++w) c[w] = __reduce_add_sync(kFullMask, c[w]);  // no carry: <= 2^9 per half
        if (lane == 0) {
#pragma unroll
          for (int w = 0; w < kRoundWords; ++w) warp_sums[warp][w] = c[w];
        }
        __syncthreads();
        if (threadIdx.x < static_cast<unsigned>(kRoundWords)) {
          uint32_t sum = 0;  // <= 2^12 per half
          for (int v = 0; v < kWarpsPerBlock; ++v) sum += warp_sums[v][threadIdx.x];
          round_cnt[t * kRoundWords + threadIdx.x] = sum;
          block_total[0] += sum & 0xffffu;
          block_total[1] += sum >> 16;
        }
        __syncthreads();  // warp_sums is reused by the next tile
#pragma unroll
        for (int w = 0; w < kRoundWords; ++w) c[w] = 0;
      });
  if (bad >= 0) raise_status(status, gcompErrorNonFinite, static_cast<uint64_t>(bad));
  if (threadIdx.x < static_cast<unsigned>(kRoundWords)) {
#pragma unroll
    for (int h = 0; h < 2; ++h)
      if (block_total[h] != 0) atomicAdd(&s->round_count[2 * threadIdx.x + h], block_total[h]);
  }
}

/// After count_rounds_kernel: the round that stands (sampled_round: the first with at least 0.8 k
/// elements, else the last), its tile counts as the truncate mode's class B counts (class A empty),
/// and (global thread 0) the state: thr and count of that round, then the mode: between k and
/// 1.3 k elements, the first k of them in index order (truncate mode, T = thr); otherwise the exact
/// top-k (the exact radix passes run next). Every thread reads s->round_count only; thread 0 writes
/// the other fields.
__global__ void __launch_bounds__(kThreads)
    finish_rounds_kernel(SelectState* s, int64_t k, const uint32_t* __restrict__ round_cnt, int64_t tiles,
                         int64_t* __restrict__ cnt_a, int64_t* __restrict__ cnt_b) {
  const int r = gcomp::detail::sampled_round(s->round_count, kAdaptRounds, k);
  for (int64_t t = global_thread(); t < tiles; t += grid_threads()) {
    cnt_a[t] = 0;
    cnt_b[t] = static_cast<int64_t>(gcomp::detail::round_count_of(round_cnt + t * kRoundWords, r));
  }
  if (global_thread() != 0) return;
  const float thr = gcomp::detail::sampled_round_threshold(s->thr, r);
  const unsigned long long count = s->round_count[r];
  s->thr = thr;
  s->count = count;
  s->round = r;
  s->done = 1;
  const double c = static_cast<double>(count);
  const double kd = static_cast<double>(k);
  if (c >= kd && c <= 1.3 * kd) {
    s->mode = kSelectTruncate;
    s->prefix = gcomp::detail::float_bits(thr) & 0x7fffffffu;
  } else {
    s->mode = kSelectExact;
    s->prefix = 0;
  }
  s->k_rem = k;
}

}  // namespace gcomp::cuda::detail
