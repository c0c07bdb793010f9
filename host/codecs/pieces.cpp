// SPDX-License-Identifier: Apache-2.0
#include "host/codecs/pieces.hpp"

#include <gcomp/detail/reduce.hpp>

#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <limits>

namespace gcomp::detail {

namespace {

template <class Op>
double combine_tiles(const Op& op, const double* tiles, int64_t count, std::vector<double>& scratch) {
  if (count == 1) return tiles[0];
  scratch.assign(static_cast<size_t>(next_pow2(count)), op.identity());
  std::copy(tiles, tiles + count, scratch.begin());
  return tree_combine_pow2(op, scratch.data(), static_cast<int64_t>(scratch.size()));
}

}  // namespace

std::vector<double> reduce_blocks(const std::vector<int64_t>& blocks, const float* x, kernels::ReduceOp op,
                                  std::span<const double> means,
                                  const std::function<void(int64_t, int64_t, const float*)>* on_tile,
                                  const ElementSource* source) {
  const int64_t num_blocks = static_cast<int64_t>(blocks.size()) - 1;
  std::vector<double> out(static_cast<size_t>(std::max<int64_t>(num_blocks, 0)));
  if (num_blocks <= 0) return out;
  // Tiles of every block, numbered block by block.
  std::vector<int64_t> first_tile(static_cast<size_t>(num_blocks) + 1, 0);
  for (int64_t b = 0; b < num_blocks; ++b)
    first_tile[b + 1] = first_tile[b] + ceil_div(blocks[b + 1] - blocks[b], kTileElems);
  const int64_t tiles = first_tile[num_blocks];
  std::vector<double> tile_values(static_cast<size_t>(tiles));
  // Tasks of about kPieceElems elements: runs of consecutive tiles.
  const int64_t per_task = std::max<int64_t>(1, kPieceElems / kTileElems);
  const int64_t n = blocks[num_blocks] - blocks[0];
  auto task = [&](int64_t t) {
    alignas(64) float produced[kTileElems];  // the tile of a source
    const int64_t t0 = t * per_task, t1 = std::min(tiles, t0 + per_task);
    int64_t b =
        static_cast<int64_t>(std::upper_bound(first_tile.begin(), first_tile.end(), t0) - first_tile.begin()) - 1;
    for (int64_t k = t0; k < t1; ++k) {
      while (k >= first_tile[b + 1]) ++b;
      const int64_t begin = blocks[b] + (k - first_tile[b]) * kTileElems;
      const int64_t len = std::min(kTileElems, blocks[b + 1] - begin);
      if (source != nullptr) (*source)(begin, begin + len, produced);
      const float* data = source != nullptr ? produced : x + begin;
      tile_values[static_cast<size_t>(k)] = kernels::reduce_tile(op, data, len, means.empty() ? 0.0 : means[b]);
      if (on_tile != nullptr) (*on_tile)(begin, begin + len, data);
    }
  };
  const int64_t tasks = ceil_div(tiles, per_task);
  if (n < kParallelMinElems)
    for (int64_t t = 0; t < tasks; ++t) task(t);
  else
    parallel_for(tasks, task);
  std::vector<double> scratch;
  for (int64_t b = 0; b < num_blocks; ++b) {
    const double* tv = tile_values.data() + first_tile[b];
    const int64_t count = first_tile[b + 1] - first_tile[b];
    out[b] = op == kernels::ReduceOp::kAbsMax ? combine_tiles(AbsMaxOp{}, tv, count, scratch)
                                              : combine_tiles(SumOp{}, tv, count, scratch);
  }
  return out;
}

namespace {
std::atomic<int64_t> g_stream_min_bytes{-1};
}  // namespace

int64_t stream_min_bytes() {
  const int64_t forced = g_stream_min_bytes.load(std::memory_order_relaxed);
  if (forced >= 0) return forced;
  static const int64_t by_cache = [] {
    const long l2 = sysconf(_SC_LEVEL2_CACHE_SIZE);
    const int64_t bytes = l2 > 0 ? 4 * static_cast<int64_t>(l2) : int64_t{8} << 20;
    return std::clamp<int64_t>(bytes, int64_t{4} << 20, int64_t{64} << 20);
  }();
  return by_cache;
}

void set_stream_min_bytes(int64_t bytes) {
  g_stream_min_bytes.store(bytes < 0 ? -1 : bytes, std::memory_order_relaxed);
}

int64_t find_nonfinite_parallel(const float* x, int64_t n) {
  if (n < kParallelMinElems) return kernels::find_nonfinite(x, n);
  std::vector<int64_t> first(static_cast<size_t>(num_pieces(n)), -1);
  for_each_piece(n, [&](int64_t begin, int64_t end) {
    const int64_t i = kernels::find_nonfinite(x + begin, end - begin);
    first[static_cast<size_t>(begin / kPieceElems)] = i < 0 ? -1 : begin + i;
  });
  for (int64_t i : first)
    if (i >= 0) return i;
  return -1;
}

}  // namespace gcomp::detail
