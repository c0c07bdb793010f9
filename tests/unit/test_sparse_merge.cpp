// SPDX-License-Identifier: Apache-2.0
// The tile merge of the sparse decodes (include/gcomp/detail/sparse_merge.hpp, run by
// cuda/topk/sparse_merge_kernels.cuh): the same functions the kernel calls, run here tile by tile
// over random topk (index words and index=rice) and randk payloads (the per-tile entry offsets of
// the k-sized pass, then the merge of each tile), against the CPU codec's
// decode_reduce (from zeros, and accumulating onto an output) and decode, bit for bit: several P,
// tile sizes that do and do not divide n, k = 1 and k = n, and the entries of a payload merged in
// the kernel's strided order. And an unordered index list: nothing is written outside the tile.
#include "common/test_util.hpp"
#include "host/codecs/registry.hpp"

#include <gcomp/detail/sparse.hpp>
#include <gcomp/detail/sparse_merge.hpp>

#include <algorithm>
#include <cstring>
#include <random>
#include <string>
#include <vector>

using namespace gcomp;
using gcomp::test::bitwise_equal;

namespace {

/// A payload's entries: its k indices in ascending order and its k stored values.
struct Entries {
  std::vector<int64_t> idx;
  std::vector<float> vals;
};

/// randk payloads carry [step, rank] before the values; topk payloads start with them.
size_t values_offset(const std::string& spec) { return spec.rfind("randk", 0) == 0 ? 8 : 0; }

/// The entries of a payload, read through the CPU codec: the stored values from the payload, the
/// indices as the nonzero elements of the decode of the payload with every value set to 1.
Entries entries_of(const Codec& c, const std::string& spec, const std::vector<uint8_t>& payload, int64_t k,
                   const RngKey& key) {
  Entries e;
  const size_t off = values_offset(spec);
  e.vals.resize(static_cast<size_t>(k));
  std::memcpy(e.vals.data(), payload.data() + off, 4 * static_cast<size_t>(k));
  std::vector<uint8_t> marked = payload;
  const std::vector<float> ones(static_cast<size_t>(k), 1.0f);
  std::memcpy(marked.data() + off, ones.data(), 4 * static_cast<size_t>(k));
  const std::vector<float> d = test::decode(c, marked, key);
  for (size_t i = 0; i < d.size(); ++i)
    if (d[i] != 0.0f) e.idx.push_back(static_cast<int64_t>(i));
  return e;
}

/// The per-tile entry offsets of one index list as sparse_tile_starts_kernel writes them: every
/// entry e = 0..k sets the tiles it starts (unset tiles keep `fill`).
std::vector<int64_t> tile_starts(const std::vector<int64_t>& idx, int64_t tile, int64_t tiles, int64_t fill = -7) {
  std::vector<int64_t> starts(static_cast<size_t>(tiles + 1), fill);
  const auto at = [&](int64_t e) { return idx[static_cast<size_t>(e)]; };
  const auto k = static_cast<int64_t>(idx.size());
  for (int64_t e = 0; e <= k; ++e)
    detail::sparse_tile_starts(at, k, e, tile, tiles, [&](int64_t t) {
      ASSERT_GE(t, 0);
      ASSERT_LE(t, tiles);
      starts[static_cast<size_t>(t)] = e;
    });
  return starts;
}

/// The kernel's tile merge on the host: the per-tile entry offsets of each payload, then per tile
/// of `tile` elements the sums from `start` (the output, or zeros), each payload's entries of the
/// tile merged in the kernel's strided order (`threads` lanes, lane after lane), payload after
/// payload.
std::vector<float> tile_merge(int64_t n, int64_t tile, int threads, const std::vector<Entries>& ps,
                              const std::vector<float>& weights, float scale, bool overwrite,
                              const std::vector<float>& start) {
  std::vector<float> out(static_cast<size_t>(n));
  std::vector<float> sums(static_cast<size_t>(tile));
  const int64_t tiles = (n + tile - 1) / tile;
  std::vector<std::vector<int64_t>> starts;
  for (const Entries& p : ps) starts.push_back(tile_starts(p.idx, tile, tiles));
  for (int64_t t = 0; t < tiles; ++t) {
    const int64_t begin = t * tile;
    const int64_t len = std::min(tile, n - begin);
    std::copy(start.begin() + begin, start.begin() + begin + len, sums.begin());
    for (size_t j = 0; j < ps.size(); ++j) {
      const std::vector<int64_t>& idx = ps[j].idx;
      const auto at = [&](int64_t e) { return idx[static_cast<size_t>(e)]; };
      const auto k = static_cast<int64_t>(idx.size());
      int64_t lo = 0;
      int64_t hi = 0;
      detail::sparse_tile_range(starts[j][static_cast<size_t>(t)], starts[j][static_cast<size_t>(t + 1)], k, lo, hi);
      // Strictly increasing indices: every offset set, each the first entry at or past its tile.
      EXPECT_EQ(lo, std::lower_bound(idx.begin(), idx.end(), begin) - idx.begin());
      EXPECT_EQ(hi, std::lower_bound(idx.begin(), idx.end(), begin + len) - idx.begin());
      for (int lane = 0; lane < threads; ++lane)
        detail::sparse_merge_entries(at, ps[j].vals.data(), lo, hi, lane, threads, scale, weights[j], overwrite, begin,
                                     len, sums.data());
    }
    std::copy(sums.begin(), sums.begin() + len, out.begin() + begin);
  }
  return out;
}

std::vector<float> random_vector(int64_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  std::vector<float> x(static_cast<size_t>(n));
  for (float& v : x) v = nd(rng);
  return x;
}

float value_scale(const std::string& spec, int64_t n, int64_t k) {
  return spec.find("unbiased=1") != std::string::npos ? detail::randk_scale(n, k) : 1.0f;
}

TEST(SparseMergeTest, TileMergeEqualsTheCpuDecodeReduceBitForBit) {
  const std::vector<std::string> kinds = {"topk", "topk_rice", "randk_unbiased", "randk"};
  for (const int64_t n : {int64_t{1}, int64_t{5}, int64_t{64}, int64_t{1000}, int64_t{4097}}) {
    for (const std::string& kind : kinds) {
      for (const std::string& kspec : {std::string("k=1"), std::string("k=") + std::to_string(n),
                                       std::string("ratio=0.1"), std::string("ratio=0.5")}) {
        std::string spec;
        if (kind == "topk") spec = "topk:" + kspec;
        if (kind == "topk_rice") spec = "topk:" + kspec + ",index=rice";
        if (kind == "randk_unbiased") spec = "randk:" + kspec + ",unbiased=1";
        if (kind == "randk") spec = "randk:" + kspec + ",unbiased=0";
        const auto codec = make_codec(spec, Layout(n));
        const int64_t k = detail::sparse_k_of(CodecSpec::parse(spec), n);
        const float scale = value_scale(spec, n, k);
        for (const int P : {1, 2, 5}) {
          std::vector<std::vector<uint8_t>> payloads;
          std::vector<RngKey> keys;
          std::vector<Entries> entries;
          std::vector<float> weights;
          for (int j = 0; j < P; ++j) {
            const RngKey key{static_cast<uint64_t>(40 + j), static_cast<uint32_t>(j), 7u, 0u};
            payloads.push_back(test::encode(*codec, random_vector(n, 100u + static_cast<uint32_t>(j)), key));
            keys.push_back(key);
            entries.push_back(entries_of(*codec, spec, payloads.back(), k, key));
            ASSERT_EQ(static_cast<int64_t>(entries.back().idx.size()), k) << spec;
            weights.push_back(j == 0 ? 1.0f : 0.25f * static_cast<float>(j) + 0.1f);
          }
          std::vector<std::span<const uint8_t>> spans(payloads.begin(), payloads.end());
          const std::vector<float> zeros(static_cast<size_t>(n), 0.0f);
          const std::vector<float> start = random_vector(n, 9);
          std::vector<float> want_reduce = zeros;
          codec->decode_reduce(spans, keys, weights, want_reduce);
          std::vector<float> want_acc = start;
          codec->decode_reduce(spans, keys, weights, want_acc);
          const std::vector<float> want_decode = test::decode(*codec, payloads[0], keys[0]);
          for (const int64_t tile : {int64_t{4096}, int64_t{7}, int64_t{64}, n}) {
            for (const int threads : {1, 3, 256}) {
              const std::string what = spec + " n " + std::to_string(n) + " P " + std::to_string(P) + " tile " +
                                       std::to_string(tile) + " threads " + std::to_string(threads);
              EXPECT_TRUE(
                  bitwise_equal(tile_merge(n, tile, threads, entries, weights, scale, false, zeros), want_reduce))
                  << what << " reduce";
              EXPECT_TRUE(bitwise_equal(tile_merge(n, tile, threads, entries, weights, scale, false, start), want_acc))
                  << what << " accumulate";
              EXPECT_TRUE(
                  bitwise_equal(tile_merge(n, tile, threads, {entries[0]}, {1.0f}, scale, true, zeros), want_decode))
                  << what << " overwrite";
            }
          }
        }
      }
    }
  }
}

// An index list that failed validation (unordered, repeated, negative, past n) still sets only
// offsets of tiles 0..tiles, and the merge writes only the tile's own sums: the clamped range and
// the per-entry check keep every write inside it, whatever the offsets hold (unset ones too).
TEST(SparseMergeTest, UnorderedIndicesStayInsideTheTile) {
  const std::vector<int64_t> idx = {90, 3, 17, 17, -5, 64, 200, 40, 1, 63};
  const std::vector<float> vals(idx.size(), 2.0f);
  const auto at = [&](int64_t e) { return idx[static_cast<size_t>(e)]; };
  const auto k = static_cast<int64_t>(idx.size());
  constexpr int64_t kGuard = 8;
  constexpr int64_t kTiles = 4;  // n = 128 in tiles of 32
  for (const int64_t fill : {int64_t{-7}, int64_t{3}, int64_t{1} << 40}) {
    const std::vector<int64_t> starts = tile_starts(idx, 32, kTiles, fill);  // asserts every t in [0, kTiles]
    for (int64_t t = 0; t < kTiles; ++t) {
      const int64_t begin = 32 * t;
      std::vector<float> buf(32 + 2 * kGuard, -1.0f);
      float* tile = buf.data() + kGuard;
      std::fill(tile, tile + 32, 0.0f);
      int64_t lo = 0;
      int64_t hi = 0;
      detail::sparse_tile_range(starts[static_cast<size_t>(t)], starts[static_cast<size_t>(t + 1)], k, lo, hi);
      EXPECT_GE(lo, 0);
      EXPECT_LE(lo, hi);
      EXPECT_LE(hi, k);
      detail::sparse_merge_entries(at, vals.data(), 0, k, 0, 1, 1.0f, 1.0f, false, begin, 32, tile);
      detail::sparse_merge_entries(at, vals.data(), lo, hi, 0, 1, 1.0f, 1.0f, true, begin, 32, tile);
      for (int64_t g = 0; g < kGuard; ++g) {
        EXPECT_EQ(buf[static_cast<size_t>(g)], -1.0f) << "before tile " << begin;
        EXPECT_EQ(buf[static_cast<size_t>(kGuard + 32 + g)], -1.0f) << "after tile " << begin;
      }
    }
  }
}

}  // namespace
