// SPDX-License-Identifier: Apache-2.0
// topk with index=rice (docs/wire-format.md §3.4.1, host/codecs/sparse_codecs.cpp): the k values
// as for plain topk, then T, the group directory and the Rice-coded index gaps, written and parsed
// with the GCOMP_HD code of include/gcomp/detail/rice.hpp, so the payload bytes equal the CPU's.
//
// Encode, after the selection left the k indices in ascending order in ws.idx:
//   1. rice_len_kernel: the code length of each gap (one thread per index);
//   2. cub::DeviceScan::ExclusiveSum of the lengths: each code's first stream bit (and T);
//   3. rice_zero_kernel zeroes the W stream words; rice_write_kernel writes every code with
//      atomicOr through write_rice_with (OR commutes: the words do not depend on the order of the
//      atomics), the directory entry of every 1024th code, and T.
// Every kernel returns at once when the selection reported a non-finite input (payload untouched).
//
// Decode, per payload, first for every payload (validation), then again per batch of the tile merge:
//   rice_check_kernel: T <= Wbits, the directory non-decreasing and <= T, zero bits from T on,
//     finite values (grid-stride);
//   rice_group_sum_kernel: one thread per group of 1024 codes runs rice_walk_group (the CPU's
//     parser) from its directory entry to the next, indices relative to the group start; the sum
//     of its gaps goes to ws.rice_len[g];
//   cub::DeviceScan::ExclusiveSum over the groups: the index before each group;
//   rice_total_kernel: the last index below n;
//   rice_indices_kernel (merge batches only): each group parses again from its base and writes
//     its indices into the batch's index list, which the tile merge (sparse_merge_kernels.cuh)
//     reads with the payload's values.
#pragma once

#include "cuda/common/device_types.cuh"
#include "cuda/dispatch/plan.cuh"

#include <gcomp/detail/codec_math.hpp>
#include <gcomp/detail/rice.hpp>

namespace gcomp::cuda::detail {

/// Payload parts of index=rice (4-byte aligned: the payload is).
struct RiceView {
  const float* vals;
  const uint32_t* total;  ///< T
  const uint32_t* dir;    ///< D entries
  const uint32_t* words;  ///< W stream words
};

__device__ inline RiceView rice_view(const DevicePlan& p, const uint8_t* payload) {
  const auto* w = reinterpret_cast<const uint32_t*>(payload);
  return RiceView{reinterpret_cast<const float*>(payload), w + p.k, w + p.k + 1, w + p.k + 1 + p.rice_dir};
}

/// Start and end bit of group g (of rice_dir + 1 groups).
__device__ inline void rice_group_range(const DevicePlan& p, const RiceView& v, uint32_t total, int64_t g,
                                        uint64_t& begin, uint64_t& end) {
  begin = g == 0 ? 0u : v.dir[g - 1];
  end = g < p.rice_dir ? v.dir[g] : total;
}

/// Codes in group g.
__device__ inline int64_t rice_group_count(const DevicePlan& p, int64_t g) {
  const int64_t first = g * gcomp::detail::kRiceGroup;
  const int64_t left = p.k - first;
  return left < gcomp::detail::kRiceGroup ? left : gcomp::detail::kRiceGroup;
}

// ------------------------------------------------------------------------------------- encode

__global__ void __launch_bounds__(kThreads)
    rice_len_kernel(const DevicePlan p, const int64_t* idx, int64_t* len, const DeviceStatus* status) {
  if (status_failed(status)) return;
  for (int64_t j = global_thread(); j < p.k; j += grid_threads()) {
    const int64_t prev = j > 0 ? idx[j - 1] : -1;
    len[j] = static_cast<int64_t>(gcomp::detail::rice_len(static_cast<uint64_t>(idx[j] - prev), p.rice_b));
  }
}

__global__ void __launch_bounds__(kThreads)
    rice_zero_kernel(const DevicePlan p, uint8_t* payload, const DeviceStatus* status) {
  if (status_failed(status)) return;
  uint32_t* words = reinterpret_cast<uint32_t*>(payload) + p.k + 1 + p.rice_dir;
  for (int64_t w = global_thread(); w < p.rice_words; w += grid_threads()) words[w] = 0u;
}

__global__ void __launch_bounds__(kThreads)
    rice_write_kernel(const DevicePlan p, const int64_t* idx, const int64_t* len, const int64_t* off, uint8_t* payload,
                      const DeviceStatus* status) {
  if (status_failed(status)) return;
  uint32_t* base = reinterpret_cast<uint32_t*>(payload);
  uint32_t* dir = base + p.k + 1;
  uint32_t* words = dir + p.rice_dir;
  const auto atomic_or = [words](uint64_t w, uint32_t bits) {
    if (bits != 0u) atomicOr(words + w, bits);
  };
  for (int64_t j = global_thread(); j < p.k; j += grid_threads()) {
    const int64_t prev = j > 0 ? idx[j - 1] : -1;
    const uint64_t pos = static_cast<uint64_t>(off[j]);
    gcomp::detail::write_rice_with(atomic_or, pos, static_cast<uint64_t>(idx[j] - prev), p.rice_b);
    if (j > 0 && j % gcomp::detail::kRiceGroup == 0)
      dir[j / gcomp::detail::kRiceGroup - 1] = static_cast<uint32_t>(pos);
    if (j == p.k - 1) base[p.k] = static_cast<uint32_t>(pos + static_cast<uint64_t>(len[j]));
  }
}

// ------------------------------------------------------------------------------------- decode

/// Header, directory, padding and value checks of one payload. `base` is the payload number << 40.
__global__ void __launch_bounds__(kThreads)
    rice_check_kernel(const DevicePlan p, const uint8_t* payload, uint64_t base, DeviceStatus* status) {
  const RiceView v = rice_view(p, payload);
  const uint32_t total = *v.total;
  const int64_t t = global_thread();
  if (total > static_cast<uint64_t>(p.rice_worst_bits)) {
    if (t == 0) raise_status(status, gcompErrorCorruptPayload, base + static_cast<uint64_t>(p.k));
    return;
  }
  if (t == 0 && p.k == 0 && total != 0u) raise_status(status, gcompErrorCorruptPayload, base);
  for (int64_t j = t; j < p.k; j += grid_threads())
    if (!gcomp::detail::is_finite_f(v.vals[j]))
      raise_status(status, gcompErrorCorruptPayload, base + static_cast<uint64_t>(j));
  for (int64_t d = t; d < p.rice_dir; d += grid_threads()) {
    const uint32_t prev = d > 0 ? v.dir[d - 1] : 0u;
    if (v.dir[d] < prev || v.dir[d] > total)
      raise_status(status, gcompErrorCorruptPayload, base + static_cast<uint64_t>(p.k));
  }
  const int64_t first_word = static_cast<int64_t>(total / 32u);
  for (int64_t w = first_word + t; w < p.rice_words; w += grid_threads()) {
    const uint32_t keep = (w == first_word && total % 32u != 0u) ? ((1u << (total % 32u)) - 1u) : 0u;
    if ((v.words[w] & ~keep) != 0u) raise_status(status, gcompErrorCorruptPayload, base + static_cast<uint64_t>(p.k));
  }
}

/// Parses each group (indices relative to the group start) and stores the sum of its gaps.
__global__ void __launch_bounds__(kThreads) rice_group_sum_kernel(const DevicePlan p, const uint8_t* payload,
                                                                  uint64_t base, int64_t* sums, DeviceStatus* status) {
  const RiceView v = rice_view(p, payload);
  const uint32_t total = *v.total;
  if (total > static_cast<uint64_t>(p.rice_worst_bits)) return;  // reported by rice_check_kernel
  const int64_t groups = p.rice_dir + (p.k > 0 ? 1 : 0);
  for (int64_t g = global_thread(); g < groups; g += grid_threads()) {
    uint64_t begin = 0;
    uint64_t end = 0;
    rice_group_range(p, v, total, g, begin, end);
    int64_t last = -1;
    uint32_t st = gcomp::detail::kRiceWrongEnd;
    if (begin <= end && end <= total)
      st = gcomp::detail::rice_walk_group(v.words, begin, end, p.rice_b, p.n, rice_group_count(p, g), -1, last,
                                          [](int64_t, int64_t) {});
    sums[g] = st == gcomp::detail::kRiceOk ? last + 1 : 0;
    if (st != gcomp::detail::kRiceOk)
      raise_status(status, gcompErrorCorruptPayload, base + static_cast<uint64_t>(g * gcomp::detail::kRiceGroup));
  }
}

/// After the exclusive scan of the group sums: the message's last index must be below n.
__global__ void rice_total_kernel(const DevicePlan p, const int64_t* sums, const int64_t* before, uint64_t base,
                                  DeviceStatus* status) {
  const int64_t groups = p.rice_dir + (p.k > 0 ? 1 : 0);
  if (groups == 0 || status_failed(status)) return;
  if (before[groups - 1] + sums[groups - 1] > p.n)
    raise_status(status, gcompErrorCorruptPayload, base + static_cast<uint64_t>(p.k - 1));
}

/// The payload's k indices, in order, into idx (the tile merge's index list,
/// cuda/topk/sparse_merge_kernels.cuh). Runs only on payloads that passed the checks above (status
/// clear), so every group parses.
__global__ void __launch_bounds__(kThreads)
    rice_indices_kernel(const DevicePlan p, const uint8_t* payload, const int64_t* before, int64_t* idx,
                        const DeviceStatus* status) {
  if (status_failed(status)) return;
  const RiceView v = rice_view(p, payload);
  const uint32_t total = *v.total;
  const int64_t groups = p.rice_dir + (p.k > 0 ? 1 : 0);
  for (int64_t g = global_thread(); g < groups; g += grid_threads()) {
    uint64_t begin = 0;
    uint64_t end = 0;
    rice_group_range(p, v, total, g, begin, end);
    const int64_t first = g * gcomp::detail::kRiceGroup;
    int64_t last = 0;
    gcomp::detail::rice_walk_group(v.words, begin, end, p.rice_b, p.n, rice_group_count(p, g), before[g] - 1, last,
                                   [&](int64_t j, int64_t i) { idx[first + j] = i; });
  }
}

}  // namespace gcomp::cuda::detail
