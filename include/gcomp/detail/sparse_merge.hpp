// SPDX-License-Identifier: Apache-2.0
/// @file sparse_merge.hpp
/// @brief The element math of the sparse decodes' tile merge (cuda/topk/sparse_merge_kernels.cuh):
/// a payload of (index, value) entries with strictly increasing indices (topk's index words, topk
/// index=rice parsed to indices, randk's regenerated selection) merged into the sums of one output
/// tile [begin, begin + len): each payload's entries of the tile from per-tile entry offsets (a
/// k-sized pass), the entries of all payloads staged (read at once), then merged into the tile's
/// sums payload after payload.
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

/// The tile of `tile` elements that index i falls in, clamped to [-1, tiles]: -1 for a negative i
/// (only a corrupt list has one).
GCOMP_HD int64_t sparse_tile_of(int64_t i, int64_t tile, int64_t tiles) {
  if (i < 0) return -1;
  const int64_t t = i / tile;
  return t < tiles ? t : tiles;
}

/// The per-tile entry offsets of one payload, entry by entry (a k-sized pass: one thread per entry
/// on the device): start[t] is the first entry whose index is >= t * tile (k when none), for
/// t = 0..tiles, so the entries of tile t are [start[t], start[t + 1]). Entry e (0 <= e <= k; e = k
/// stands for an index past every tile) is the start of the tiles t with
/// tile_of(index(e - 1)) < t <= tile_of(index(e)) (index(-1) = -1), and calls set(t) for each:
/// for strictly increasing indices every t in [0, tiles] is set exactly once. For any list only
/// tiles in [0, tiles] are set (an unordered list leaves some unset; the merge clamps what it
/// reads).
template <class IndexAt, class Set>
GCOMP_HD void sparse_tile_starts(const IndexAt& index_at, int64_t k, int64_t e, int64_t tile, int64_t tiles,
                                 const Set& set) {
  const int64_t prev = e > 0 ? sparse_tile_of(index_at(e - 1), tile, tiles) : -1;
  const int64_t mine = e < k ? sparse_tile_of(index_at(e), tile, tiles) : tiles;
  for (int64_t t = prev + 1; t <= mine; ++t) set(t);
}

/// Entry range [lo, hi) of a tile from the starts of it and of the next tile, clamped to [0, k]
/// and lo <= hi whatever was stored (a list that failed validation).
GCOMP_HD void sparse_tile_range(int64_t start, int64_t next, int64_t k, int64_t& lo, int64_t& hi) {
  lo = start < 0 ? 0 : (start > k ? k : start);
  hi = next < lo ? lo : (next > k ? k : next);
}

/// The entries of a tile of `count` payloads, numbered g = 0, 1, ... payload after payload:
/// pre[j] is the number before payload j (pre[0] = 0, non-decreasing, pre[count] the total).
/// Entry g < pre[count] belongs to the last payload j with pre[j] <= g (a payload without entries
/// in the tile is skipped), as its entry lo_j + g - pre[j].
GCOMP_HD int sparse_payload_of(const int64_t* pre, int count, int64_t g) {
  int lo = 0;
  int hi = count - 1;
  while (lo < hi) {
    const int mid = (lo + hi + 1) / 2;
    if (pre[mid] <= g)
      lo = mid;
    else
      hi = mid - 1;
  }
  return lo;
}

/// A staged entry's place in the tile [begin, begin + len): index i - begin, or -1 outside the
/// tile (only an unordered payload has an index there inside its entry range).
GCOMP_HD int32_t sparse_stage_offset(int64_t i, int64_t begin, int64_t len) {
  const int64_t off = i - begin;
  return off >= 0 && off < len ? static_cast<int32_t>(off) : -1;
}

/// One staged entry merged into the tile sums: the decoded value stored * scale is stored
/// (overwrite) or added as accumulate(sum, weight, value); an offset of -1 is skipped. Strictly
/// increasing indices make the entries of one payload name distinct elements, so they may be
/// merged in any order (a kernel's threads at once); payloads go one after another.
GCOMP_HD void sparse_merge_staged(int32_t off, float stored, float scale, float weight, bool overwrite, float* tile) {
  if (off < 0) return;
  const float v = stored * scale;
  tile[off] = overwrite ? v : accumulate(tile[off], weight, v);
}

}  // namespace gcomp::detail
