// SPDX-License-Identifier: Apache-2.0
// The tile merge of the sparse decodes (include/gcomp/detail/sparse_merge.hpp, run by
// cuda/topk/sparse_merge_kernels.cuh): the same functions the kernel calls, run here tile by tile
// over random topk (index words and index=rice) and randk payloads (the per-tile entry offsets of
// the k-sized pass, the entry ranges and their prefix counts, the staged rounds merged payload
// after payload), against the CPU codec's decode_reduce (from zeros, and accumulating onto an
// output) and decode, bit for bit: several P, tile sizes that do and do not divide n, k = 1 and
// k = n, stage rounds of 1, 5 and 1024 entries, and each payload's staged entries merged in the
// kernel's strided order. And an unordered index list: nothing is written outside the tile.
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
/// of `tile` elements the sums from `start` (the output, or zeros), the entry ranges and their
/// prefix counts, and the tile's entries in rounds of `stage`: staged (offset in the tile, value),
/// then merged payload after payload, each payload's staged entries in the kernel's strided order
/// (`threads` lanes, lane after lane).
std::vector<float> tile_merge(int64_t n, int64_t tile, int threads, int64_t stage, const std::vector<Entries>& ps,
                              const std::vector<float>& weights, float scale, bool overwrite,
                              const std::vector<float>& start) {
  std::vector<float> out(static_cast<size_t>(n));
  std::vector<float> sums(static_cast<size_t>(tile));
  const int64_t tiles = (n + tile - 1) / tile;
  const auto count = static_cast<int>(ps.size());
  std::vector<std::vector<int64_t>> starts;
  for (const Entries& p : ps) starts.push_back(tile_starts(p.idx, tile, tiles));
  std::vector<int32_t> stage_off(static_cast<size_t>(stage));
  std::vector<float> stage_val(static_cast<size_t>(stage));
  for (int64_t t = 0; t < tiles; ++t) {
    const int64_t begin = t * tile;
    const int64_t len = std::min(tile, n - begin);
    std::copy(start.begin() + begin, start.begin() + begin + len, sums.begin());
    std::vector<int64_t> first(ps.size());
    std::vector<int64_t> pre(ps.size() + 1, 0);
    for (size_t j = 0; j < ps.size(); ++j) {
      const std::vector<int64_t>& idx = ps[j].idx;
      const auto k = static_cast<int64_t>(idx.size());
      int64_t lo = 0;
      int64_t hi = 0;
      detail::sparse_tile_range(starts[j][static_cast<size_t>(t)], starts[j][static_cast<size_t>(t + 1)], k, lo, hi);
      // Strictly increasing indices: every offset set, each the first entry at or past its tile.
      EXPECT_EQ(lo, std::lower_bound(idx.begin(), idx.end(), begin) - idx.begin());
      EXPECT_EQ(hi, std::lower_bound(idx.begin(), idx.end(), begin + len) - idx.begin());
      first[j] = lo;
      pre[j + 1] = pre[j] + (hi - lo);
    }
    const int64_t total = pre[ps.size()];
    for (int64_t g0 = 0; g0 < total; g0 += stage) {
      const int64_t g_end = std::min(total, g0 + stage);
      for (int64_t g = g0; g < g_end; ++g) {
        const auto J = static_cast<size_t>(detail::sparse_payload_of(pre.data(), count, g));
        const auto e = static_cast<size_t>(first[J] + (g - pre[J]));
        stage_off[static_cast<size_t>(g - g0)] = detail::sparse_stage_offset(ps[J].idx[e], begin, len);
        stage_val[static_cast<size_t>(g - g0)] = ps[J].vals[e];
      }
      const int j_last = detail::sparse_payload_of(pre.data(), count, g_end - 1);
      for (int j = detail::sparse_payload_of(pre.data(), count, g0); j <= j_last; ++j) {
        const auto J = static_cast<size_t>(j);
        const int64_t a = std::max(pre[J], g0);
        const int64_t b = std::min(pre[J + 1], g_end);
        for (int lane = 0; lane < threads; ++lane)
          for (int64_t g = a + lane; g < b; g += threads)
            detail::sparse_merge_staged(stage_off[static_cast<size_t>(g - g0)], stage_val[static_cast<size_t>(g - g0)],
                                        scale, weights[J], overwrite, sums.data());
      }
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
            for (const auto& [threads, stage] : {std::pair{1, int64_t{1024}}, std::pair{3, int64_t{5}},
                                                 std::pair{256, int64_t{1024}}, std::pair{256, int64_t{1}}}) {
              const std::string what = spec + " n " + std::to_string(n) + " P " + std::to_string(P) + " tile " +
                                       std::to_string(tile) + " threads " + std::to_string(threads) + " stage " +
                                       std::to_string(stage);
              EXPECT_TRUE(bitwise_equal(tile_merge(n, tile, threads, stage, entries, weights, scale, false, zeros),
                                        want_reduce))
                  << what << " reduce";
              EXPECT_TRUE(
                  bitwise_equal(tile_merge(n, tile, threads, stage, entries, weights, scale, false, start), want_acc))
                  << what << " accumulate";
              EXPECT_TRUE(bitwise_equal(tile_merge(n, tile, threads, stage, {entries[0]}, {1.0f}, scale, true, zeros),
                                        want_decode))
                  << what << " overwrite";
            }
          }
        }
      }
    }
  }
}

// An index list that failed validation (unordered, repeated, negative, past n) still sets only
// offsets of tiles 0..tiles; whatever the offsets hold (unset ones too), the ranges are clamped to
// [0, k], and staging and merging the range writes only the tile's own sums (an index outside the
// tile is staged as -1 and skipped).
TEST(SparseMergeTest, UnorderedIndicesStayInsideTheTile) {
  const std::vector<int64_t> idx = {90, 3, 17, 17, -5, 64, 200, 40, 1, 63};
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
      for (const bool overwrite : {false, true})
        for (int64_t e = overwrite ? lo : 0; e < (overwrite ? hi : k); ++e) {
          const int32_t off = detail::sparse_stage_offset(idx[static_cast<size_t>(e)], begin, 32);
          EXPECT_GE(off, -1);
          EXPECT_LT(off, 32);
          detail::sparse_merge_staged(off, 2.0f, 1.0f, 1.0f, overwrite, tile);
        }
      for (int64_t g = 0; g < kGuard; ++g) {
        EXPECT_EQ(buf[static_cast<size_t>(g)], -1.0f) << "before tile " << begin;
        EXPECT_EQ(buf[static_cast<size_t>(kGuard + 32 + g)], -1.0f) << "after tile " << begin;
      }
    }
  }
}

// The payload of an entry of the tile: empty payloads (no entries in the tile) are skipped.
TEST(SparseMergeTest, PayloadOfAnEntrySkipsEmptyPayloads) {
  const std::vector<int64_t> pre = {0, 2, 2, 2, 5, 5, 6};  // counts 2, 0, 0, 3, 0, 1
  const std::vector<int> want = {0, 0, 3, 3, 3, 5};
  for (int64_t g = 0; g < 6; ++g)
    EXPECT_EQ(detail::sparse_payload_of(pre.data(), 6, g), want[static_cast<size_t>(g)]) << g;
  const std::vector<int64_t> one = {0, 4};
  for (int64_t g = 0; g < 4; ++g) EXPECT_EQ(detail::sparse_payload_of(one.data(), 1, g), 0);
}

}  // namespace
