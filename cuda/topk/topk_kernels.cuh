// SPDX-License-Identifier: Apache-2.0
// topk payload (host/codecs/sparse_codecs.cpp, spec §4.1): k fp32 values, then ceil(k w / 32) words
// of w-bit indices (w = ceil(log2 n)), ascending, packed LSB first by pack_index_word (one thread
// per output word, no atomics). Decode: one thread per entry. And the DGC-style sampled threshold
// (spec §4.4) that feeds the selection of cuda/topk/radix_select.cuh in truncate mode.
#pragma once

#include "cuda/common/device_types.cuh"
#include "cuda/dispatch/plan.cuh"
#include "cuda/topk/radix_select.cuh"

#include <gcomp/detail/codec_math.hpp>
#include <gcomp/detail/payload_rules.hpp>
#include <gcomp/detail/sparse.hpp>

#include <cub/block/block_reduce.cuh>

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

/// out[idx_j] = v_j (overwrite, out zeroed before) or out[idx_j] + weight * v_j. The payload was
/// validated, so the indices are distinct and in range.
__global__ void __launch_bounds__(kThreads)
    scatter_topk_kernel(const uint8_t* payload, int64_t k, int bits, float weight, int overwrite, float* out,
                        const DeviceStatus* status) {
  if (status_failed(status)) return;
  const float* vals = reinterpret_cast<const float*>(payload);
  const uint32_t* packed = reinterpret_cast<const uint32_t*>(payload + 4 * k);
  for (int64_t j = global_thread(); j < k; j += grid_threads()) {
    const int64_t idx = read_packed_index(packed, j, bits);
    const float v = vals[j] * 1.0f;
    out[idx] = overwrite != 0 ? v : gcomp::detail::accumulate(out[idx], weight, v);
  }
}

// ------------------------------------------------------------------ sampled threshold (§4.4)

/// sample[s] = |x[start + s * stride]|.
__global__ void __launch_bounds__(kThreads)
    gather_sample_kernel(Input in, int64_t start, int64_t stride, int64_t count, float* sample) {
  for (int64_t s = global_thread(); s < count; s += grid_threads())
    sample[s] = gcomp::detail::abs_f(in(start + s * stride));
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
}

/// One adaptation round's pass over x (skipped once the adaptation is done): the count of
/// |x| >= thr into s->count, and per tile of kSelectTile elements the same count into cnt_b[t]
/// (cnt_a[t] = 0), as count_tiles_kernel tiles and counts class B in truncate mode (key >= T with
/// T = float_bits(thr) & 0x7fffffff, finalize_sampled_kernel's T; for finite x and thr >= 0 this is
/// |x| >= thr). The last round that runs leaves the tile counts of the final threshold, so truncate
/// mode needs no count pass of its own. kReport (the first round, which always runs): a NaN/Inf
/// element reports gcompErrorNonFinite at the smallest such index, as check_finite_kernel did in a
/// pass of its own before (each thread keeps its first bad index, in increasing index order, and
/// raises it once); every kernel that writes the payload or the memory runs after this one and
/// returns when the status is set.
template <bool kReport>
__global__ void __launch_bounds__(kThreads) count_above_kernel(Input in, int64_t n, int64_t tiles, SelectState* s,
                                                               int64_t* cnt_a, int64_t* cnt_b, DeviceStatus* status) {
  __shared__ typename cub::BlockReduce<uint32_t, kThreads>::TempStorage tmp;
  if (s->done != 0) return;
  MagnitudeKey kf{in};
  kf.prepare(*s);
  const uint32_t threshold = gcomp::detail::float_bits(s->thr) & 0x7fffffffu;
  unsigned long long block_total = 0;
  [[maybe_unused]] int64_t bad = -1;
  select_tile_sums(
      kf, n, tiles, tmp,
      [&](uint32_t key, int64_t i) {
        if constexpr (kReport) {
          if (key >= 0x7f800000u && bad < 0) bad = i;
        }
        return key >= threshold ? 1u : 0u;
      },
      [&](int64_t t, uint32_t total) {
        cnt_a[t] = 0;
        cnt_b[t] = static_cast<int64_t>(total);
        block_total += total;
      });
  if constexpr (kReport) {
    if (bad >= 0) raise_status(status, gcompErrorNonFinite, static_cast<uint64_t>(bad));
  }
  if (threadIdx.x == 0 && block_total != 0) atomicAdd(&s->count, block_total);
}

/// One adaptation round (one thread): fewer than 0.8 k candidates lowers thr by 0.8 (except in the
/// last round); otherwise the adaptation stops.
__global__ void adapt_threshold_kernel(SelectState* s, int64_t k, int last_round) {
  if (s->done != 0) return;
  if (static_cast<double>(s->count) < 0.8 * static_cast<double>(k) && last_round == 0) {
    s->thr = s->thr * 0.8f;
    s->count = 0;
    s->round += 1;
  } else {
    s->done = 1;
  }
}

/// Chooses the final selection: between k and 1.3 k candidates, the first k candidates in index
/// order (truncate mode, T = thr); otherwise the exact top-k (the exact radix passes run next).
__global__ void finalize_sampled_kernel(SelectState* s, int64_t k) {
  const double c = static_cast<double>(s->count);
  const double kd = static_cast<double>(k);
  if (c >= kd && c <= 1.3 * kd) {
    s->mode = kSelectTruncate;
    s->prefix = gcomp::detail::float_bits(s->thr) & 0x7fffffffu;
  } else {
    s->mode = kSelectExact;
    s->prefix = 0;
  }
  s->k_rem = k;
}

}  // namespace gcomp::cuda::detail
