// SPDX-License-Identifier: Apache-2.0
/// @file sparse_merge.hpp
/// @brief The element math of the sparse decodes' tile merge (cuda/topk/sparse_merge_kernels.cuh):
/// a payload of (index, value) entries with strictly increasing indices (topk's index words, topk
/// index=rice parsed to indices, randk's regenerated selection) merged into the sums of one output
/// tile [begin, begin + len).
///
/// Per element the merge evaluates what the CPU codec's decode_accumulate calls (and the device's
/// former fill-zero and scatter passes) evaluate, in the same order: the decoded value is
/// stored * scale (1 for topk, n/k for unbiased randk), and the sum is accumulate(sum, w, value),
/// payload after payload, from +0.0f or from out; an overwrite stores the value. Elements no entry
/// names keep their sum. The same functions run on the host (tests/unit/test_sparse_merge.cpp
/// against the CPU codec's decode_reduce) and in the kernel.
#pragma once

#include <gcomp/detail/codec_math.hpp>
#include <gcomp/detail/hd.hpp>

namespace gcomp::detail {

/// The first entry e in [0, k) whose index_at(e) is >= i, k when none: a binary search, meaningful
/// for strictly increasing indices. For any list (a payload that failed validation) the result is
/// still in [0, k].
template <class IndexAt>
GCOMP_HD int64_t sparse_lower_bound(const IndexAt& index_at, int64_t k, int64_t i) {
  int64_t lo = 0;
  int64_t hi = k;
  while (lo < hi) {
    const int64_t mid = lo + (hi - lo) / 2;
    if (index_at(mid) < i)
      lo = mid + 1;
    else
      hi = mid;
  }
  return lo;
}

/// One entry merged into the tile sums `tile` of [begin, begin + len): the decoded value
/// stored * scale is stored (overwrite) or added as accumulate(sum, weight, value). An index
/// outside the tile is skipped (only an unordered payload can name one inside its entry range).
GCOMP_HD void sparse_merge_entry(int64_t i, float stored, float scale, float weight, bool overwrite, int64_t begin,
                                 int64_t len, float* tile) {
  const int64_t off = i - begin;
  if (off < 0 || off >= len) return;
  const float v = stored * scale;
  tile[off] = overwrite ? v : accumulate(tile[off], weight, v);
}

/// Entries lo + first, lo + first + step, ... below hi of one payload (values `vals`, indices
/// index_at) merged into the tile: a kernel's thread takes first = its thread index and step = the
/// block size; the host takes first 0 and step 1. Strictly increasing indices name distinct
/// elements, so the entries of one payload may be merged in any order.
template <class IndexAt>
GCOMP_HD void sparse_merge_entries(const IndexAt& index_at, const float* vals, int64_t lo, int64_t hi, int64_t first,
                                   int64_t step, float scale, float weight, bool overwrite, int64_t begin, int64_t len,
                                   float* tile) {
  for (int64_t e = lo + first; e < hi; e += step)
    sparse_merge_entry(index_at(e), vals[e], scale, weight, overwrite, begin, len, tile);
}

}  // namespace gcomp::detail
