// SPDX-License-Identifier: Apache-2.0
// sdither's merged decode-reduce (gcomp/detail/sdither_merge.hpp; the kernel
// cuda/sdither/sdither_merge_kernels.cuh): batches of payloads staged chunk by chunk (one byte per
// element and payload) and summed element by element in payload order equal the CPU codec's
// decode_reduce bit for bit, for several payload counts, batch sizes, levels, norms, blocks, codes
// and chunk edges; on corrupt streams the staging walk reports what the per-payload chunk decode
// reports and writes nothing outside its slice.
#include "common/test_util.hpp"

#include <gcomp/detail/elias.hpp>
#include <gcomp/detail/sdither_decode.hpp>
#include <gcomp/detail/sdither_merge.hpp>

#include <algorithm>
#include <cstring>
#include <random>
#include <span>
#include <string>
#include <vector>

using namespace gcomp;
using gcomp::test::bitwise_equal;

namespace {

/// A payload's parts as the kernels read them (docs/wire-format.md §3.7).
struct View {
  std::vector<uint32_t> words;
  int64_t m = 0;
  int64_t chunks = 0;
  [[nodiscard]] const float* scales() const { return reinterpret_cast<const float*>(words.data()); }
  [[nodiscard]] uint32_t total() const { return words[static_cast<size_t>(m)]; }
  [[nodiscard]] const uint32_t* dir() const { return words.data() + m + 1; }
  [[nodiscard]] const uint32_t* stream() const { return dir() + chunks; }
};

View view_of(const std::vector<uint8_t>& p, int64_t m, int64_t chunks) {
  View v;
  v.words.resize(p.size() / 4);
  std::memcpy(v.words.data(), p.data(), p.size());
  v.m = m;
  v.chunks = chunks;
  return v;
}

/// The merged decode-reduce as the kernel runs it: batches of `batch` payloads; per batch, groups
/// of sdither_merge_group chunks; per group every payload's slice of the group staged chunk by
/// chunk (sdither_stage_chunk into zeroed bytes at j * the group's elements + the chunk's offset in
/// the group), then each element summed over the slices in payload order (sdither_merge_element)
/// from +0.0f (the first batch of a reduce) or from out. Fails the test when a valid payload does
/// not stage.
std::vector<float> merge_like_the_gpu(const Codec& c, const std::vector<std::vector<uint8_t>>& payloads,
                                      const std::vector<float>& weights, std::vector<float> out, bool reduce,
                                      int batch) {
  const SDitherOptions& sp = c.spec().options<SDitherOptions>();
  const int64_t n = c.num_elems();
  const std::vector<int64_t> blocks = block_offsets(c.layout(), sp.block);
  const int64_t m = static_cast<int64_t>(blocks.size()) - 1;
  const int64_t chunks = (n + sp.chunk - 1) / sp.chunk;
  const uint32_t code = sp.code == EliasCode::kDelta ? detail::kEliasDelta : detail::kEliasGamma;
  const auto block_at = [&](int64_t i) {
    return static_cast<int64_t>(std::upper_bound(blocks.begin(), blocks.end(), i) - blocks.begin() - 1);
  };
  std::vector<View> views;
  for (const auto& p : payloads) views.push_back(view_of(p, m, chunks));
  const int count = static_cast<int>(payloads.size());
  for (int first = 0; first < count; first += batch) {
    const int size = std::min(batch, count - first);
    const bool from_zero = reduce && first == 0;
    const int64_t group = detail::sdither_merge_group(sp.chunk, size);
    EXPECT_LE(size * group * sp.chunk, detail::kSdStageBytes);
    EXPECT_LE(size * group, detail::kSdMergeWalkers);
    for (int64_t c0 = 0; c0 < chunks; c0 += group) {
      const int64_t begin = c0 * sp.chunk;
      const int64_t len = std::min(n - begin, group * sp.chunk);
      std::vector<uint8_t> stage(static_cast<size_t>(size * len), 0);
      for (int64_t k = c0; k < std::min(chunks, c0 + group); ++k) {
        const int64_t cbegin = k * sp.chunk;
        const int64_t clen = std::min(n - cbegin, sp.chunk);
        for (int j = 0; j < size; ++j) {
          const View& v = views[static_cast<size_t>(first + j)];
          const uint64_t end = k + 1 < chunks ? v.dir()[k + 1] : v.total();
          const uint32_t st = detail::sdither_stage_chunk(
              v.stream(), v.dir()[k], end, code, sp.levels, cbegin, clen, v.scales(), blocks.data(), block_at(cbegin),
              stage.data() + static_cast<int64_t>(j) * len + (cbegin - begin));
          EXPECT_EQ(st, detail::kSdOk) << "payload " << first + j << " chunk " << k;
        }
      }
      for (int64_t r = 0; r < len; ++r) {
        const int64_t i = begin + r;
        const auto block_of = [&]() { return block_at(i); };
        const auto scale_at = [&](int j, int64_t b) { return views[static_cast<size_t>(first + j)].scales()[b]; };
        const float* w = weights.data() + first;
        out[static_cast<size_t>(i)] =
            detail::sdither_merge_element(from_zero ? 0.0f : out[static_cast<size_t>(i)], stage.data() + r, len, size,
                                          w, block_of, scale_at, sp.levels);
      }
    }
  }
  return out;
}

std::vector<float> input(int64_t n, uint64_t seed) {
  std::vector<float> x = test::gaussian(n, seed);
  for (int64_t i = 0; i < n; ++i) {
    if (i % 7 == 2) x[static_cast<size_t>(i)] = 0.0f;
    if (i % 53 == 9) x[static_cast<size_t>(i)] *= 40.0f;
  }
  return x;
}

}  // namespace

TEST(SDitherMergeTest, BatchSizes) {
  EXPECT_EQ(detail::sdither_merge_batch(4096, 4), 8);
  EXPECT_EQ(detail::sdither_merge_batch(1, 1), 64);
  EXPECT_EQ(detail::sdither_merge_batch(512, 127), 64);
  EXPECT_EQ(detail::sdither_merge_batch(16384, 2), 2);
  EXPECT_EQ(detail::sdither_merge_batch(16385, 2), 0) << "one slice only: the per-payload decode";
  EXPECT_EQ(detail::sdither_merge_batch(64, 128), 0) << "s above a staging byte";
  EXPECT_EQ(detail::sdither_stage_item(127, true), 0xffu);
  EXPECT_EQ(detail::sdither_merge_group(4096, 8), 1);
  EXPECT_EQ(detail::sdither_merge_group(4096, 1), 8);
  EXPECT_EQ(detail::sdither_merge_group(64, 8), 32) << "chunks up to the walkers";
  EXPECT_EQ(detail::sdither_merge_group(64, 64), 4);
  EXPECT_EQ(detail::sdither_merge_group(1, 2), 128);
  EXPECT_EQ(detail::sdither_merge_group(100, 3), 85);
  EXPECT_EQ(detail::sdither_merge_group(16384, 2), 1);
  EXPECT_EQ(detail::sdither_stage_item(1, false), 0x01u);
}

TEST(SDitherMergeTest, MergedBatchesEqualTheCpuDecodeReduceBitForBit) {
  struct Case {
    const char* spec;
    std::vector<int64_t> sizes;
  };
  const std::vector<Case> cases = {
      {"sdither:levels=1,norm=l2", {5000, 0, 1200}},                        // default chunk 4096, n % chunk != 0
      {"sdither:levels=2,norm=linf,block=64,chunk=1", {130, 0, 70}},        // chunk 1
      {"sdither:levels=4,norm=linf,block=100,chunk=64", {1000}},            // chunks and blocks misaligned
      {"sdither:levels=4,norm=l2,block=50,code=delta,chunk=7", {130, 70}},  // delta, short chunks
      {"sdither:levels=1,norm=linf,code=delta,chunk=5000", {333}},          // chunk > n
      {"sdither:levels=127,norm=linf,block=40,chunk=100", {901}},           // the largest staged s
      {"sdither:levels=2,norm=l2,chunk=16384", {20000}},                    // two slices per batch
  };
  for (const Case& cs : cases) {
    const Layout layout(cs.sizes);
    const auto c = make_codec(cs.spec, layout);
    const int64_t n = layout.num_elems();
    const SDitherOptions& sp = c->spec().options<SDitherOptions>();
    const int batch = detail::sdither_merge_batch(sp.chunk, sp.levels);
    ASSERT_GE(batch, 2) << cs.spec;
    for (const int P : {1, 2, 3, 8, 65}) {
      std::vector<std::vector<uint8_t>> payloads;
      std::vector<RngKey> keys;
      std::vector<float> weights;
      for (int j = 0; j < P; ++j) {
        const RngKey key{static_cast<uint64_t>(70 + j), static_cast<uint32_t>(j), 3u, 0u};
        payloads.push_back(test::encode(*c, input(n, 200u + static_cast<uint64_t>(j)), key));
        keys.push_back(key);
        weights.push_back(j % 3 == 0 ? 1.0f : (j % 3 == 1 ? -0.75f : 0.3f + 0.01f * static_cast<float>(j)));
      }
      std::vector<std::span<const uint8_t>> spans(payloads.begin(), payloads.end());
      const std::vector<float> zeros(static_cast<size_t>(n), 0.0f);
      std::vector<float> start = test::gaussian(n, 17);
      start[0] = -0.0f;  // a -0 start element: accumulate(-0, w, +0) is +0
      std::vector<float> want_reduce = zeros;
      c->decode_reduce(spans, keys, weights, want_reduce);
      std::vector<float> want_acc = start;
      c->decode_reduce(spans, keys, weights, want_acc);
      for (const int b : {batch, 2, 3}) {
        if (b > batch) continue;  // the kernel's batches are never larger
        const std::string what = std::string(cs.spec) + " P " + std::to_string(P) + " batch " + std::to_string(b);
        const std::vector<float> poison(static_cast<size_t>(n), 123.0f);  // a reduce does not read out
        EXPECT_TRUE(bitwise_equal(merge_like_the_gpu(*c, payloads, weights, poison, true, b), want_reduce))
            << what << " reduce";
        EXPECT_TRUE(bitwise_equal(merge_like_the_gpu(*c, payloads, weights, start, false, b), want_acc))
            << what << " accumulate";
      }
    }
  }
}

TEST(SDitherMergeTest, StagingWalkReportsWhatTheChunkDecodeReportsAndStaysInItsSlice) {
  // Bit flips in the record stream (the header left valid): per chunk, sdither_stage_chunk returns
  // what sdither_decode_chunk returns, stages exactly the nonzeros it decodes (when it parses), and
  // never writes outside its slice (guard bytes around it).
  std::mt19937_64 rng(20261206);
  int rejected = 0;
  for (const char* spec : {"sdither:levels=4,norm=linf,block=100,chunk=64", "sdither:levels=3,code=delta,chunk=33",
                           "sdither:levels=1,norm=linf,block=8,chunk=16"}) {
    const Layout layout(1000);
    const auto c = make_codec(spec, layout);
    const SDitherOptions& sp = c->spec().options<SDitherOptions>();
    const int64_t n = layout.num_elems();
    const std::vector<int64_t> blocks = block_offsets(layout, sp.block);
    const int64_t m = static_cast<int64_t>(blocks.size()) - 1;
    const int64_t chunks = (n + sp.chunk - 1) / sp.chunk;
    const uint32_t code = sp.code == EliasCode::kDelta ? detail::kEliasDelta : detail::kEliasGamma;
    const auto good = test::encode(*c, input(n, 9), RngKey{5, 2, 0, 0});
    const View gv = view_of(good, m, chunks);
    const size_t stream_word = static_cast<size_t>(m + 1 + chunks);
    const uint32_t total = gv.total();
    ASSERT_GT(total, 64u) << spec;
    for (int t = 0; t < 200; ++t) {
      auto bad = good;
      const int flips = 1 + static_cast<int>(rng() % 3);
      for (int f = 0; f < flips; ++f) {
        const uint64_t bit = rng() % total;  // inside [0, T): the header checks still pass
        bad[4 * stream_word + bit / 8] ^= static_cast<uint8_t>(1u << (bit % 8));
      }
      const View v = view_of(bad, m, chunks);
      for (int64_t k = 0; k < chunks; ++k) {
        const int64_t begin = k * sp.chunk;
        const int64_t len = std::min(n - begin, sp.chunk);
        const int64_t b0 = std::upper_bound(blocks.begin(), blocks.end(), begin) - blocks.begin() - 1;
        const uint64_t end = k + 1 < chunks ? v.dir()[k + 1] : v.total();
        constexpr int64_t kGuard = 16;
        std::vector<uint8_t> slice(static_cast<size_t>(len + 2 * kGuard), 0);
        const uint32_t st = detail::sdither_stage_chunk(v.stream(), v.dir()[k], end, code, sp.levels, begin, len,
                                                        v.scales(), blocks.data(), b0, slice.data() + kGuard);
        std::vector<float> dec(static_cast<size_t>(len), 0.0f);
        const uint32_t want = detail::sdither_decode_chunk(
            v.stream(), v.dir()[k], end, code, sp.levels, begin, len, v.scales(), blocks.data(), b0,
            [&](int64_t i, float x) { dec[static_cast<size_t>(i - begin)] = x; });
        ASSERT_EQ(st, want) << spec << " case " << t << " chunk " << k;
        for (int64_t g = 0; g < kGuard; ++g) {
          ASSERT_EQ(slice[static_cast<size_t>(g)], 0u) << spec << " case " << t << " chunk " << k;
          ASSERT_EQ(slice[static_cast<size_t>(kGuard + len + g)], 0u) << spec << " case " << t << " chunk " << k;
        }
        if (st != detail::kSdOk) {
          ++rejected;
          continue;
        }
        for (int64_t r = 0; r < len; ++r) {
          const int64_t b = std::upper_bound(blocks.begin(), blocks.end(), begin + r) - blocks.begin() - 1;
          const float x = detail::sdither_stage_value(slice[static_cast<size_t>(kGuard + r)], v.scales()[b], sp.levels);
          ASSERT_TRUE(bitwise_equal(std::vector<float>{x}, std::vector<float>{dec[static_cast<size_t>(r)]}))
              << spec << " case " << t << " element " << begin + r;
        }
      }
    }
  }
  EXPECT_GT(rejected, 100);
}
