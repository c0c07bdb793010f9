// SPDX-License-Identifier: Apache-2.0
// CPU twins of the GPU kernels' quad layout (cuda/common/lanes.hpp): the lane functions the kernels
// call, run here on a simulated warp (32 lanes in lockstep, __shfl_xor_sync replaced by reading the
// partner lane's value), must give the CPU codecs' payload bytes and decoded values. This checks
// the kernels' packing and indexing logic on every machine; the GPU suites check the kernels
// themselves against the same CPU codecs when a device is present.
#include "common/test_util.hpp"
#include "cuda/common/lanes.hpp"
#include "host/codecs/internal.hpp"
#include "host/codecs/registry.hpp"

#include <gcomp/codec.hpp>
#include <gcomp/detail/codec_math.hpp>
#include <gcomp/detail/grid.hpp>
#include <gcomp/detail/payload_rules.hpp>
#include <gcomp/detail/philox.hpp>
#include <gcomp/detail/reduce.hpp>
#include <gcomp/detail/sparse.hpp>

#include <gtest/gtest.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <functional>
#include <limits>
#include <string>
#include <vector>

namespace gcomp::test {
namespace {

namespace lanes = cuda::lanes;
constexpr int kWarp = 32;

/// transpose_nibbles of the kernels on a simulated warp: the 3 exchange stages.
void sim_transpose(std::array<uint32_t, kWarp>& x) {
  for (int d = 4; d >= 1; d /= 2) {
    const std::array<uint32_t, kWarp> before = x;
    for (int l = 0; l < kWarp; ++l) x[l] = lanes::transpose_stage(before[l], before[l ^ d], l, d);
  }
}

/// gather_nibbles of the kernels: the OR of the 8 lanes' placed nibbles of each group.
std::array<uint32_t, kWarp> sim_gather(const std::array<uint32_t, kWarp>& nib) {
  std::array<uint32_t, kWarp> x{};
  for (int l = 0; l < kWarp; ++l) x[l] = lanes::nibble_at(nib[l], l);
  for (int d = 1; d <= 4; d *= 2) {
    const std::array<uint32_t, kWarp> before = x;
    for (int l = 0; l < kWarp; ++l) x[l] = before[l] | before[l ^ d];
  }
  return x;
}

TEST(QuadLayoutTwin, NibbleTransposeGivesThePlaneWords) {
  uint64_t state = 0x1234;
  auto next = [&] {
    state = state * 6364136223846793005ull + 1442695040888963407ull;
    return static_cast<uint32_t>(state >> 33);
  };
  for (int planes : {1, 2, 4, 8, 9, 17, 22}) {
    uint32_t level[kWarp][4];
    bool negative[kWarp][4];
    for (auto& lv : level)
      for (uint32_t& v : lv) v = next() & ((1u << (planes > 1 ? planes - 1 : 1)) - 1u);
    for (auto& ng : negative)
      for (bool& v : ng) v = (next() & 1u) != 0u;
    for (int first = 0; first < planes; first += lanes::kPlanesPerPass) {
      std::array<uint32_t, kWarp> x{};
      for (int l = 0; l < kWarp; ++l) x[l] = lanes::plane_nibbles(level[l], negative[l], first, planes);
      sim_transpose(x);
      for (int l = 0; l < kWarp; ++l) {
        const int m = l % 8, g = l / 8, plane = first + m;
        if (plane >= planes) continue;
        uint32_t want = 0;
        for (int e = 0; e < 32; ++e) {
          const int lane = 8 * g + e / 4, j = e % 4;
          const uint32_t bit = plane == 0 ? (negative[lane][j] ? 1u : 0u) : (level[lane][j] >> (plane - 1)) & 1u;
          want |= bit << e;
        }
        ASSERT_EQ(x[l], want) << "planes " << planes << " plane " << plane << " group " << g;
      }
    }
  }
}

/// The device's block tables (DeviceCodec::Impl::upload_tables) for a layout and block size.
struct Tables {
  std::vector<int64_t> seg_off, seg_block0, seg_bsize, blocks;
};
Tables tables_of(const Layout& layout, int64_t block) {
  Tables t;
  int64_t running = 0;
  for (size_t s = 0; s < layout.segments().size(); ++s) {
    const int64_t len = layout.segments()[s];
    t.seg_off.push_back(layout.segment_offset(s));
    t.seg_block0.push_back(running);
    t.seg_bsize.push_back(len == 0 ? 1 : (block > 0 ? block : len));
    running += len == 0 ? 0 : (len + t.seg_bsize.back() - 1) / t.seg_bsize.back();
  }
  t.seg_off.push_back(layout.num_elems());
  t.blocks = block_offsets(layout, block);
  return t;
}

/// quantize_planes_kernel<natural, 0> on a simulated warp, span after span, with the scales the
/// scale pass computes (the CPU codec's compute_scales, bit-identical to the device's).
std::vector<uint8_t> sim_dense_encode(const Codec& cpu, const std::vector<float>& x, const RngKey& key) {
  const DitherOptions spec = detail::dither_quantizer(cpu.spec());  // terngrad: one level, one block per segment
  const Layout& layout = cpu.layout();
  const int64_t n = layout.num_elems();
  const bool natural = cpu.spec().id() == CodecId::kNatDither;
  const int nbits = static_cast<int>(detail::ceil_log2_u64(uint64_t{spec.levels} + 1));
  const int words = detail::group_words(nbits);
  const Tables t = tables_of(layout, spec.block);
  std::vector<float> scales(static_cast<size_t>(cpu.num_scales()));
  cpu.compute_scales(x, scales);
  std::vector<uint8_t> payload(cpu.encoded_bytes(), 0xab);
  std::memcpy(payload.data(), scales.data(), scales.size() * 4);
  const int64_t num_groups = (n + 31) / 32;
  for (int64_t s = 0; s < (n + 127) / 128; ++s) {
    uint32_t level[kWarp][4];
    bool negative[kWarp][4];
    for (int l = 0; l < kWarp; ++l) {
      const int64_t first = s * lanes::kSpanElems + 4 * l;
      const int live = lanes::quad_live(first, n);
      float y[4] = {0, 0, 0, 0}, nu[4] = {0, 0, 0, 0};
      for (int j = 0; j < live; ++j) y[j] = x[static_cast<size_t>(first + j)];
      for (int j = 0; j < 4; ++j) level[l][j] = 0, negative[l][j] = false;
      if (live == 0) continue;
      int64_t block[4];
      lanes::quad_blocks(lanes::block_of(t.seg_off.data(), t.seg_block0.data(), t.seg_bsize.data(),
                                         static_cast<int64_t>(layout.segments().size()), first),
                         t.blocks.data(), first, live, block);
      for (int j = 0; j < 4; ++j) nu[j] = scales[static_cast<size_t>(block[j])];
      const detail::Philox4x32 r = detail::philox_block(key, detail::kStreamElement, static_cast<uint64_t>(first) / 4);
      if (natural)
        lanes::quantize_quad<true>(y, nu, spec.levels, r, live, level[l], negative[l]);
      else
        lanes::quantize_quad<false>(y, nu, spec.levels, r, live, level[l], negative[l]);
    }
    for (int c = 0; c < words; c += lanes::kPlanesPerPass) {
      std::array<uint32_t, kWarp> w{};
      for (int l = 0; l < kWarp; ++l) w[l] = lanes::plane_nibbles(level[l], negative[l], c, words);
      sim_transpose(w);
      for (int l = 0; l < kWarp; ++l) {
        const int64_t group = (s * lanes::kSpanElems + 4 * l) / 32;
        if (c + l % 8 < words && group < num_groups)
          std::memcpy(payload.data() + 4 * (cpu.num_scales() + group * words + c + l % 8), &w[l], 4);
      }
    }
  }
  return payload;
}

/// DenseQuadDecoder on the simulated warp (its level extraction and padding check).
std::vector<float> sim_dense_decode(const Codec& cpu, const std::vector<uint8_t>& payload, bool* padding_ok) {
  const DitherOptions spec = detail::dither_quantizer(cpu.spec());  // terngrad: one level, one block per segment
  const Layout& layout = cpu.layout();
  const int64_t n = layout.num_elems();
  const bool natural = cpu.spec().id() == CodecId::kNatDither;
  const int nbits = static_cast<int>(detail::ceil_log2_u64(uint64_t{spec.levels} + 1));
  const int words = detail::group_words(nbits);
  const Tables t = tables_of(layout, spec.block);
  std::vector<float> out(static_cast<size_t>(n));
  *padding_ok = true;
  for (int64_t first = 0; first < (n + 127) / 128 * 128; first += 4) {
    const int lane = static_cast<int>((first / 4) % 32);
    const int live = lanes::quad_live(first, n);
    const int64_t group = first / 32;
    if (group >= (n + 31) / 32) continue;
    std::vector<uint32_t> w(static_cast<size_t>(words));
    std::memcpy(w.data(), payload.data() + 4 * (cpu.num_scales() + group * words), 4 * w.size());
    uint32_t level[4];
    const uint32_t signs = lanes::nibble_of(w[0], lane);
    const uint32_t any = signs | lanes::quad_levels(w.data() + 1, nbits, lane, level);
    if ((any & (0xfu & ~((1u << live) - 1u))) != 0u) *padding_ok = false;
    if (live == 0) continue;
    int64_t block[4];
    lanes::quad_blocks(lanes::block_of(t.seg_off.data(), t.seg_block0.data(), t.seg_bsize.data(),
                                       static_cast<int64_t>(layout.segments().size()), first),
                       t.blocks.data(), first, live, block);
    for (int j = 0; j < live; ++j) {
      float scale;
      std::memcpy(&scale, payload.data() + 4 * block[j], 4);
      const bool neg = ((signs >> j) & 1u) != 0u;
      out[static_cast<size_t>(first + j)] = natural ? detail::natdither_value(level[j], neg, scale, spec.levels)
                                                    : detail::dither_value(level[j], neg, scale, spec.levels);
    }
  }
  return out;
}

std::vector<float> input_of(int64_t n, uint64_t seed) {
  std::vector<float> x = gaussian(n, seed);
  for (int64_t i = 0; i < n; ++i) {
    if (i % 13 == 0) x[static_cast<size_t>(i)] = 0.0f;
    if (i % 19 == 0) x[static_cast<size_t>(i)] = -0.0f;
  }
  return x;
}

const std::vector<std::vector<int64_t>> kLayouts = {{1},   {31},  {33},   {127},
                                                    {128}, {129}, {4097}, {5, 0, 4097, 31, 300}};

TEST(QuadLayoutTwin, DenseQuadEncodeAndDecodeEqualTheCpuCodec) {
  for (const char* spec :
       {"dither:levels=1,norm=l2", "dither:levels=4,norm=l2,block=512", "dither:levels=3,norm=linf,block=3",
        "dither:levels=7,norm=l1,block=33", "dither:levels=1000,norm=l2,block=100",
        "dither:levels=200000,norm=linf,block=1", "terngrad", "terngrad:clip=2.5",
        "natdither:levels=3,norm=l2,block=256", "natdither:levels=9,norm=linf,block=2"}) {
    for (const auto& segs : kLayouts) {
      const Layout layout(segs);
      const auto cpu = make_codec(spec, layout);
      const std::vector<float> x = input_of(layout.num_elems(), 77);
      const RngKey key{0x9e3779b97f4a7c15ull, 3, 11, 0};
      std::vector<uint8_t> want(cpu->encoded_bytes(), 0xab);
      cpu->encode(x, key, want);
      const std::vector<uint8_t> got = sim_dense_encode(*cpu, x, key);
      ASSERT_TRUE(bytes_equal(got, want)) << spec << " n=" << layout.num_elems();
      bool padding_ok = false;
      const std::vector<float> dec = sim_dense_decode(*cpu, want, &padding_ok);
      EXPECT_TRUE(padding_ok) << spec;
      EXPECT_TRUE(bitwise_equal(dec, decode(*cpu, want, key))) << spec << " n=" << layout.num_elems();
    }
  }
}

TEST(QuadLayoutTwin, DenseQuadDecodeSeesPaddingBits) {
  const Layout layout(33);
  const auto cpu = make_codec("dither:levels=4,norm=l2,block=512", layout);
  std::vector<uint8_t> p = encode(*cpu, input_of(33, 5), RngKey{});
  bool ok = false;
  (void)sim_dense_decode(*cpu, p, &ok);
  ASSERT_TRUE(ok);
  // group 1 holds element 32 only: bit 1 of its level plane 0 belongs to the padding.
  const size_t word = 4 * (1 + 1 * 4 + 1);
  p[word] |= 0x2;
  (void)sim_dense_decode(*cpu, p, &ok);
  EXPECT_FALSE(ok);
}

TEST(QuadLayoutTwin, SignAndNaturalQuadEncodesEqualTheCpuCodec) {
  for (const auto& segs : kLayouts) {
    const Layout layout(segs);
    const int64_t n = layout.num_elems();
    const std::vector<float> x = input_of(n, 91);
    const RngKey key{42, 1, 2, 0};
    // plain sign: the OR of the lanes' nibbles.
    const auto sign = make_codec("sign:scale=none", layout);
    std::vector<uint8_t> got_sign(sign->encoded_bytes(), 0);
    // natural: sign words, then each quad's 4 codes as one little-endian word.
    const auto nat = make_codec("natural", layout);
    std::vector<uint8_t> got_nat(nat->encoded_bytes(), 0);
    const int64_t words = (n + 31) / 32;
    for (int64_t s = 0; s < (n + 127) / 128; ++s) {
      std::array<uint32_t, kWarp> nib_sign{}, nib_nat{};
      for (int l = 0; l < kWarp; ++l) {
        const int64_t first = s * 128 + 4 * l;
        const int live = lanes::quad_live(first, n);
        float y[4] = {0, 0, 0, 0};
        for (int j = 0; j < live; ++j) y[j] = x[static_cast<size_t>(first + j)];
        uint32_t code[4] = {0, 0, 0, 0};
        if (live > 0)
          detail::natural_codes4(y, detail::philox_block(key, detail::kStreamElement, static_cast<uint64_t>(first) / 4),
                                 code);
        for (int j = 0; j < 4; ++j) {
          if (j >= live) {
            code[j] = 0;
            continue;
          }
          if (detail::is_negative_f(y[j])) nib_sign[l] |= 1u << j;
          if (code[j] != 0u && y[j] < 0.0f) nib_nat[l] |= 1u << j;
        }
        if (live > 0) {
          const uint32_t cw = code[0] | (code[1] << 8) | (code[2] << 16) | (code[3] << 24);
          std::memcpy(got_nat.data() + 4 * words + first, &cw, 4);
        }
      }
      const std::array<uint32_t, kWarp> ws = sim_gather(nib_sign), wn = sim_gather(nib_nat);
      for (int l = 0; l < kWarp; l += 8) {
        const int64_t w = (s * 128 + 4 * l) / 32;
        if (w >= words) continue;
        std::memcpy(got_sign.data() + 4 * w, &ws[l], 4);
        std::memcpy(got_nat.data() + 4 * w, &wn[l], 4);
      }
    }
    EXPECT_TRUE(bytes_equal(got_sign, encode(*sign, x, key))) << "sign n=" << n;
    EXPECT_TRUE(bytes_equal(got_nat, encode(*nat, x, key))) << "natural n=" << n;
  }
}

TEST(QuadLayoutTwin, QuadBlocksFollowShortBlocks) {
  for (int64_t block : {1, 2, 3, 5, 33}) {
    const Layout layout({7, 0, 13, 1, 40});
    const Tables t = tables_of(layout, block);
    const int64_t n = layout.num_elems();
    for (int64_t first = 0; first < n; first += 4) {
      int64_t b[4];
      const int live = lanes::quad_live(first, n);
      lanes::quad_blocks(lanes::block_of(t.seg_off.data(), t.seg_block0.data(), t.seg_bsize.data(),
                                         static_cast<int64_t>(layout.segments().size()), first),
                         t.blocks.data(), first, live, b);
      for (int j = 0; j < live; ++j) {
        const int64_t i = first + j;
        ASSERT_TRUE(t.blocks[static_cast<size_t>(b[j])] <= i && i < t.blocks[static_cast<size_t>(b[j]) + 1])
            << "block " << block << " element " << i;
      }
    }
  }
}

/// reduce_tiles_kernel's warp on one tile (cuda/quant/block_reduce.cuh): thread t holds lanes
/// 4t + j and 128 + 4t + j; the tree s = 128 in registers, s = 64 .. 4 across threads 16 .. 1
/// apart, s = 2, 1 in registers.
template <class Op>
double sim_tile(const Op& op, const float* x, int64_t len) {
  double acc[32][2][4];
  for (auto& t : acc)
    for (auto& h : t)
      for (double& v : h) v = op.identity();
  for (int64_t round = 0; round < len; round += 256)
    for (int h = 0; h < 2; ++h)
      for (int t = 0; t < 32; ++t)
        for (int j = 0; j < 4; ++j) {
          const int64_t e = round + 128 * h + 4 * t + j;
          if (e < len) acc[t][h][j] = op.combine(acc[t][h][j], op.term(x[e]));
        }
  double lane[32][4];
  for (int t = 0; t < 32; ++t)
    for (int j = 0; j < 4; ++j) lane[t][j] = op.combine(acc[t][0][j], acc[t][1][j]);
  for (int d = 16; d >= 1; d /= 2) {
    double before[32][4];
    std::memcpy(before, lane, sizeof lane);
    for (int t = 0; t < d; ++t)
      for (int j = 0; j < 4; ++j) lane[t][j] = op.combine(before[t][j], before[t + d][j]);
  }
  return op.combine(op.combine(lane[0][0], lane[0][2]), op.combine(lane[0][1], lane[0][3]));
}

/// Both phases for one block: the tile values, then (more than one tile) combine_blocks_kernel's
/// per-thread levels s >= 256 and its 256-lane tree.
template <class Op>
double sim_block(const Op& op, const float* x, int64_t len) {
  std::vector<double> v;
  for (int64_t b = 0; b < len; b += detail::kTileElems)
    v.push_back(sim_tile(op, x + b, std::min(len - b, detail::kTileElems)));
  const auto tiles = static_cast<int64_t>(v.size());
  if (tiles == 1) return v[0];
  const int64_t padded = detail::next_pow2(tiles);
  int64_t width = padded;
  if (padded > 256) {
    for (int i = 0; i < 256; ++i)
      for (int64_t s = padded / 2; s >= 256; s /= 2)
        for (int64_t k = i; k < s; k += 256) v[k] = op.combine(v[k], k + s < tiles ? v[k + s] : op.identity());
    width = 256;
  }
  std::vector<double> lanes_v(256);
  for (int i = 0; i < 256; ++i) lanes_v[i] = i < width ? (i < tiles ? v[i] : op.identity()) : op.identity();
  for (int64_t s = width / 2; s >= 1; s /= 2)
    for (int64_t i = 0; i < s; ++i) lanes_v[i] = op.combine(lanes_v[i], lanes_v[i + s]);
  return lanes_v[0];
}

TEST(QuadLayoutTwin, BlockReduceWarpTreeEqualsTheFixedOrder) {
  const std::vector<float> x = gaussian((int64_t{1} << 20) + 5 * 4096 + 77, 3);
  for (int64_t len :
       {int64_t{1}, int64_t{3}, int64_t{33}, int64_t{129}, int64_t{255}, int64_t{256}, int64_t{257}, int64_t{4095},
        int64_t{4096}, int64_t{4097}, int64_t{3 * 4096 + 1}, int64_t{300000}, static_cast<int64_t>(x.size())}) {
    const auto check = [&](const auto& op, const char* name) {
      const double want = detail::block_reduce(op, x.data(), len), got = sim_block(op, x.data(), len);
      EXPECT_EQ(std::memcmp(&want, &got, sizeof want), 0) << name << " len " << len << ": " << want << " vs " << got;
    };
    check(detail::SquareSumOp{}, "square sum");
    check(detail::AbsSumOp{}, "abs sum");
    check(detail::SumOp{}, "sum");
    check(detail::PowSumOp{3.0}, "pow sum");
    check(detail::AbsMaxOp{}, "abs max");
  }
}

/// radix_digit_kernel: 256 threads own bins from the top (`per` each); the one whose range holds
/// the crossing walks its bins. Returns the digit's bin count; updates prefix and k_rem.
uint64_t sim_digit(std::vector<uint64_t>& hist, int shift, int bits, uint32_t& prefix, int64_t& k_rem) {
  const int bins = 1 << bits, per = (bins + 255) / 256;
  std::vector<uint64_t> mine(256, 0);
  for (int t = 0; t < 256; ++t)
    for (int j = 0; j < per; ++j)
      if (bins - 1 - t * per - j >= 0) mine[t] += hist[static_cast<size_t>(bins - 1 - t * per - j)];
  uint64_t above = 0, bin_count = ~0ull;
  const auto kr = static_cast<uint64_t>(k_rem);
  for (int t = 0; t < 256; ++t) {
    if (above < kr && above + mine[t] >= kr) {
      uint64_t run = above;
      for (int j = 0; j < per; ++j) {
        const int d = bins - 1 - t * per - j;
        if (d < 0) break;
        if (run + hist[static_cast<size_t>(d)] >= kr) {
          prefix |= static_cast<uint32_t>(d) << shift;
          k_rem = static_cast<int64_t>(kr - run);
          bin_count = hist[static_cast<size_t>(d)];
          break;
        }
        run += hist[static_cast<size_t>(d)];
      }
    }
    above += mine[t];
  }
  std::fill(hist.begin(), hist.end(), 0);
  return bin_count;
}

/// The selection of cuda/topk/radix_select.cuh on the host: pass 1 (12 bits), the candidate path
/// (candidates compacted in any order: here reversed) or the full path, the per-tile class counts,
/// and the scatter's order (tiles, rounds of quads, ties to the lower index). Returns the selected
/// indices in output order and which path ran.
std::vector<int64_t> sim_select(const std::vector<uint32_t>& keys, int64_t k, int64_t cap, bool* candidate_path) {
  const auto n = static_cast<int64_t>(keys.size());
  std::vector<uint64_t> hist(4096, 0);
  uint32_t prefix = 0;
  int64_t k_rem = k;
  const auto digit_pass = [&](const std::vector<int64_t>& over, int shift, int bits) {
    const uint32_t high = shift + bits >= 32 ? 0u : (0xffffffffu << (shift + bits));
    for (int64_t i : over)
      if ((keys[static_cast<size_t>(i)] & high) == (prefix & high))
        ++hist[(keys[static_cast<size_t>(i)] >> shift) & ((1u << bits) - 1u)];
    return sim_digit(hist, shift, bits, prefix, k_rem);
  };
  std::vector<int64_t> all(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) all[static_cast<size_t>(i)] = i;
  const uint64_t bin = digit_pass(all, 20, 12);
  *candidate_path = bin <= static_cast<uint64_t>(cap);
  const int64_t tiles = (n + 4095) / 4096;
  std::vector<int64_t> cnt_a(static_cast<size_t>(tiles), 0), cnt_b(static_cast<size_t>(tiles), 0);
  if (*candidate_path) {
    const uint32_t d1 = prefix >> 20;
    std::vector<int64_t> cand;
    for (int64_t i = 0; i < n; ++i) {
      const uint32_t top = keys[static_cast<size_t>(i)] >> 20;
      if (top > d1) ++cnt_a[static_cast<size_t>(i / 4096)];
      if (top == d1) cand.push_back(i);
    }
    std::reverse(cand.begin(), cand.end());  // the atomics' order is arbitrary
    digit_pass(cand, 10, 10);
    digit_pass(cand, 0, 10);
    for (int64_t i : cand) {
      if (keys[static_cast<size_t>(i)] > prefix) ++cnt_a[static_cast<size_t>(i / 4096)];
      if (keys[static_cast<size_t>(i)] == prefix) ++cnt_b[static_cast<size_t>(i / 4096)];
    }
  } else {
    digit_pass(all, 12, 8);
    digit_pass(all, 4, 8);
    digit_pass(all, 0, 4);
    for (int64_t i = 0; i < n; ++i) {
      if (keys[static_cast<size_t>(i)] > prefix) ++cnt_a[static_cast<size_t>(i / 4096)];
      if (keys[static_cast<size_t>(i)] == prefix) ++cnt_b[static_cast<size_t>(i / 4096)];
    }
  }
  std::vector<int64_t> out(static_cast<size_t>(k), -1);
  int64_t off_a = 0, off_b = 0;
  for (int64_t t = 0; t < tiles; ++t) {
    int64_t a_before = off_a, b_before = off_b;
    for (int64_t i = t * 4096; i < std::min(n, (t + 1) * 4096); ++i) {  // rounds of quads: index order
      const uint32_t key = keys[static_cast<size_t>(i)];
      const int c = key > prefix ? 1 : (key == prefix ? 2 : 0);
      const bool selected = c == 1 || (c == 2 && b_before < k_rem);
      const int64_t pos = a_before + std::min(b_before, k_rem);
      if (selected) {
        EXPECT_LT(pos, k);
        if (pos < k) {
          out[static_cast<size_t>(pos)] = i;
        }
      }
      if (c == 1) ++a_before;
      if (c == 2) ++b_before;
    }
    off_a += cnt_a[static_cast<size_t>(t)];
    off_b += cnt_b[static_cast<size_t>(t)];
  }
  return out;
}

TEST(QuadLayoutTwin, ThreePassSelectionEqualsTheCpuCodec) {
  for (const int64_t n : {int64_t{1}, int64_t{5}, int64_t{4096}, int64_t{4097}, int64_t{100003}, int64_t{1} << 18}) {
    std::vector<float> x = input_of(n, 13);
    for (int64_t i = 0; i < n; ++i)
      if (i % 17 == 0) x[static_cast<size_t>(i)] = (i % 34 == 0) ? 0.5f : -0.5f;  // ties
    for (const char* spec :
         {"topk:k=1", "topk:ratio=0.01", "topk:ratio=0.3", "randk:k=50,unbiased=1", "randk:ratio=0.05,unbiased=0"}) {
      const Layout layout(n);
      const auto cpu = make_codec(spec, layout);
      const bool topk = cpu->spec().id() == CodecId::kTopK;
      const int64_t k = detail::sparse_k_of(cpu->spec(), n);
      const RngKey key{0x51, 2, 9, 0};
      std::vector<uint32_t> keys(static_cast<size_t>(n));
      for (int64_t i = 0; i < n; ++i)
        keys[static_cast<size_t>(i)] = topk
                                           ? detail::float_bits(x[static_cast<size_t>(i)]) & 0x7fffffffu
                                           : ~detail::philox_word(key, detail::kStreamSelect, static_cast<uint64_t>(i));
      for (const int64_t cap : {std::min<int64_t>(n, n / 16 + 4096), int64_t{0}}) {  // candidate path, full path
        bool candidate_path = false;
        const std::vector<int64_t> idx = sim_select(keys, k, cap, &candidate_path);
        if (cap == 0) {
          EXPECT_FALSE(candidate_path);
        }
        std::vector<uint8_t> got(cpu->encoded_bytes(), 0);
        if (topk) {
          for (int64_t j = 0; j < k; ++j)
            std::memcpy(got.data() + 4 * j, &x[static_cast<size_t>(idx[static_cast<size_t>(j)])], 4);
          const int bits = static_cast<int>(detail::ceil_log2_u64(static_cast<uint64_t>(n)));
          for (int64_t w = 0; w < (k * bits + 31) / 32; ++w) {
            const uint32_t word = detail::pack_index_word(idx.data(), k, bits, w);
            std::memcpy(got.data() + 4 * k + 4 * w, &word, 4);
          }
        } else {
          std::memcpy(got.data(), &key.step, 4);
          std::memcpy(got.data() + 4, &key.rank, 4);
          for (int64_t j = 0; j < k; ++j)
            std::memcpy(got.data() + 8 + 4 * j, &x[static_cast<size_t>(idx[static_cast<size_t>(j)])], 4);
        }
        EXPECT_TRUE(bytes_equal(got, encode(*cpu, x, key))) << spec << " n=" << n << " cap=" << cap;
      }
    }
  }
  // All magnitudes equal: the first bin holds every element, more than the buffer: the full path.
  std::vector<uint32_t> same(100000, 0x3f800000u);
  bool candidate_path = true;
  const std::vector<int64_t> idx = sim_select(same, 1000, 100000 / 16 + 4096, &candidate_path);
  EXPECT_FALSE(candidate_path);
  for (int64_t j = 0; j < 1000; ++j) ASSERT_EQ(idx[static_cast<size_t>(j)], j) << "ties go to the lower index";
}

// ------------------------------------------------------------------------------------------ grid

/// Inputs for the grid twins: gaussian values times `scale`, zeros of both signs, values at and
/// next to the half-integers of the step (where grid_level_f takes its division fallback), the
/// saturation bounds and beyond (huge values of both signs), and subnormals.
std::vector<float> grid_input(int64_t n, double step, uint32_t bits, uint64_t seed) {
  std::vector<float> x = gaussian(n, seed);
  const double lim = static_cast<double>((int64_t{1} << (bits - 1)) - 1);
  for (int64_t i = 0; i < n; ++i) {
    float& v = x[static_cast<size_t>(i)];
    const double k = std::floor(static_cast<double>(v) * std::min(lim, 1000.0));
    switch (i % 11) {
      case 0: v = 0.0f; break;
      case 1: v = -0.0f; break;
      case 2: v = static_cast<float>((k + 0.5) * step); break;  // a tie (exact when representable)
      case 3: v = std::nextafter(static_cast<float>((k + 0.5) * step), 1e30f); break;
      case 4: v = std::nextafter(static_cast<float>((k + 0.5) * step), -1e30f); break;
      case 5: v = (i % 2 == 0 ? 1.0f : -1.0f) * 3.0e38f; break;
      case 6: v = static_cast<float>((i % 2 == 0 ? lim : -lim) * step); break;
      case 7: v = static_cast<float>((i % 2 == 0 ? lim + 0.5 : -lim - 0.5) * step); break;
      case 8: v = (i % 2 == 0 ? 1.0f : -1.0f) * 1.0e-44f; break;
      default: v = static_cast<float>(static_cast<double>(v) * step * std::min(lim, 300.0)); break;
    }
  }
  return x;
}

uint32_t load_word(const std::vector<uint8_t>& p, int64_t w) {
  uint32_t v;
  std::memcpy(&v, p.data() + 4 * w, 4);
  return v;
}

/// The device's level function of a width (GridParams: grid_level_f for B <= 24, grid_level_rcp above).
int64_t grid_level_device(float x, double step, uint32_t bits) {
  if (bits <= detail::kGridFloatMaxBits)
    return detail::grid_level_f(x, step, detail::grid_inverse_step_f(step, bits), bits);
  return detail::grid_level_rcp(x, step, detail::grid_inverse_step(step), bits);
}

/// grid_encode_quads_kernel<kBytes> on the host, quad after quad: the payload words, every one of
/// them written (the buffer starts as 0xab bytes).
template <int kBytes>
std::vector<uint8_t> sim_grid_encode_quads(const std::vector<float>& x, double step) {
  const uint32_t bits = 8u * kBytes;
  const auto n = static_cast<int64_t>(x.size());
  const int64_t words = (n * bits + 31) / 32;
  std::vector<uint32_t> payload(static_cast<size_t>(words), 0xabababab);
  for (int64_t q = 0; q < (n + 3) / 4; ++q) {
    const int64_t first = 4 * q;
    const int live = lanes::quad_live(first, n);
    float v[4] = {0, 0, 0, 0};
    for (int j = 0; j < live; ++j) v[j] = x[static_cast<size_t>(first + j)];
    int64_t level[4];
    lanes::grid_quad_levels(
        v, live, [&](float e) { return grid_level_device(e, step, bits); }, level);
    uint32_t w[kBytes];
    lanes::grid_pack_quad<kBytes>(level, w);
    for (int k = 0; k < kBytes; ++k)
      if (q * kBytes + k < words) payload[static_cast<size_t>(q * kBytes + k)] = w[k];
  }
  std::vector<uint8_t> bytes(4 * payload.size());
  if (!payload.empty()) std::memcpy(bytes.data(), payload.data(), bytes.size());
  return bytes;
}

/// GridQuadDecoder<kBytes> on the host for every quad of the spans of n (those past n included):
/// the decoded values, and the smallest index it reports (n for the padding; -1: none).
template <int kBytes>
std::vector<float> sim_grid_decode_quads(const std::vector<uint8_t>& bytes, int64_t n, uint32_t bits, double step,
                                         int64_t* bad_index) {
  // The words in a heap buffer of exactly the payload's size (a read past it is a sanitizer error).
  std::vector<uint32_t> words(bytes.size() / 4);
  if (!words.empty()) std::memcpy(words.data(), bytes.data(), bytes.size());
  const auto num_words = static_cast<int64_t>(words.size());
  std::vector<float> out(static_cast<size_t>(n), -7.0f);
  *bad_index = -1;
  const auto report = [&](int64_t i) { *bad_index = *bad_index < 0 ? i : std::min(*bad_index, i); };
  for (int64_t first = 0; first < (n + 127) / 128 * 128; first += 4) {
    const int live = lanes::quad_live(first, n);
    if (live == 0) continue;
    uint32_t field[4];
    if constexpr (kBytes == 0) {
      lanes::grid_read_quad(words.data(), first, live, bits, field);
    } else {
      const int64_t w0 = first / 4 * kBytes;
      uint32_t w[kBytes];
      for (int k = 0; k < kBytes; ++k) w[k] = w0 + k < num_words ? words[static_cast<size_t>(w0 + k)] : 0u;
      lanes::grid_unpack_quad<kBytes>(w, field);
    }
    float v[4] = {0, 0, 0, 0};
    const int bad = lanes::grid_quad_values(field, live, bits, step, v);
    if (bad >= 0) report(first + bad);
    if (lanes::grid_checks_padding(first, live, n) &&
        !detail::padding_clear(words[static_cast<size_t>(num_words - 1)], n * static_cast<int64_t>(bits)))
      report(n);
    for (int j = 0; j < live; ++j) out[static_cast<size_t>(first + j)] = v[j];
  }
  return out;
}

std::vector<float> sim_grid_decode(const std::vector<uint8_t>& bytes, int64_t n, uint32_t bits, double step,
                                   bool whole_bytes, int64_t* bad_index) {
  if (whole_bytes && bits == 8) return sim_grid_decode_quads<1>(bytes, n, bits, step, bad_index);
  if (whole_bytes && bits == 16) return sim_grid_decode_quads<2>(bytes, n, bits, step, bad_index);
  if (whole_bytes && bits == 32) return sim_grid_decode_quads<4>(bytes, n, bits, step, bad_index);
  return sim_grid_decode_quads<0>(bytes, n, bits, step, bad_index);
}

struct GridCase {
  uint32_t bits;
  double step;
};
const std::vector<GridCase> kGridCases = {{8, 0.5},    {8, 0.01},  {16, 0.00390625}, {16, 1e-4}, {16, 3.0}, {32, 1e-6},
                                          {32, 0.125}, {2, 0.25},  {3, 0.5},         {5, 0.1},   {6, 0.01}, {7, 1.0},
                                          {9, 0.01},   {12, 1e-3}, {24, 1e-5},       {25, 1e-6}, {31, 1e-7}};
const std::vector<int64_t> kGridSizes = {1, 2, 3, 4, 5, 6, 7, 31, 32, 33, 127, 129, 1001, 4099};

std::string grid_spec(const GridCase& c) {
  char buf[96];
  std::snprintf(buf, sizeof buf, "grid:step=%.17g,bits=%u", c.step, c.bits);
  return buf;
}

// topk_sampled's adaptation (spec §4.4), as count_rounds_kernel and finish_rounds_kernel run it:
// the ten rounds' counts in one pass (sampled_round_keys, add_round_counts per tile of 4096 keys,
// round_count_of), then the round that stands (sampled_round, sampled_round_threshold). It must
// give what the rounds run one after another give: the threshold lowered by 0.8 while fewer than
// 0.8 k elements have |x| >= thr (float compares here), at most 10 rounds, the last one never
// lowered, and the per-tile counts of that round's threshold.
TEST(QuadLayoutTwin, SampledTopkRoundsInOnePassEqualTheRoundByRound) {
  constexpr int kRounds = 10;
  constexpr int64_t kTile = 4096;
  int cases = 0, several_rounds = 0, last_round = 0;
  for (const int64_t n : {int64_t{1}, int64_t{4095}, int64_t{4097}, int64_t{3} * 4096 + 5, int64_t{1} << 16}) {
    std::vector<float> x = input_of(n, 29);
    for (int64_t i = 0; i < n; i += 13) x[static_cast<size_t>(i)] = (i % 26 == 0) ? -0.0f : 0.25f;  // zeros, ties
    std::vector<float> mag(x.size());
    for (size_t i = 0; i < x.size(); ++i) mag[i] = std::fabs(x[i]);
    std::vector<float> sorted = mag;
    std::sort(sorted.begin(), sorted.end(), std::greater<>());
    for (const int64_t k : {int64_t{1}, std::max<int64_t>(1, n / 100), std::max<int64_t>(1, n / 3)}) {
      // Thresholds: the k-th magnitude, well above it (several rounds), above every |x| (the last
      // round), zero, the largest float.
      for (const float thr0 : {sorted[static_cast<size_t>(k - 1)], 3.0f * sorted[static_cast<size_t>(k - 1)],
                               8.0f * sorted[0] + 1.0f, 0.0f, std::numeric_limits<float>::max()}) {
        // Round by round.
        float thr = thr0;
        int round = 0;
        auto count_at = [&](float t) {
          return static_cast<uint64_t>(std::count_if(mag.begin(), mag.end(), [&](float m) { return m >= t; }));
        };
        uint64_t count = count_at(thr);
        while (round + 1 < kRounds && static_cast<double>(count) < 0.8 * static_cast<double>(k)) {
          thr = thr * 0.8f;
          ++round;
          count = count_at(thr);
        }
        // One pass.
        uint32_t keys[kRounds];
        detail::sampled_round_keys(thr0, keys);
        const int64_t tiles = (n + kTile - 1) / kTile;
        std::vector<std::array<uint32_t, kRounds / 2>> words(static_cast<size_t>(tiles));
        unsigned long long totals[kRounds] = {};
        for (int64_t t = 0; t < tiles; ++t) {
          uint32_t w[kRounds / 2] = {};
          for (int64_t i = t * kTile; i < std::min(n, (t + 1) * kTile); ++i)
            detail::add_round_counts(detail::float_bits(x[static_cast<size_t>(i)]) & 0x7fffffffu, keys, w);
          std::copy(std::begin(w), std::end(w), words[static_cast<size_t>(t)].begin());
          for (int r = 0; r < kRounds; ++r) totals[r] += detail::round_count_of(w, r);
        }
        const int r = detail::sampled_round(totals, kRounds, k);
        const float thr_r = detail::sampled_round_threshold(thr0, r);
        const std::string at = "n=" + std::to_string(n) + " k=" + std::to_string(k) + " thr0=" + std::to_string(thr0);
        ASSERT_EQ(r, round) << at;
        ASSERT_EQ(detail::float_bits(thr_r), detail::float_bits(thr)) << at;
        ASSERT_EQ(totals[r], count) << at;
        for (int64_t t = 0; t < tiles; ++t) {
          uint64_t want = 0;
          for (int64_t i = t * kTile; i < std::min(n, (t + 1) * kTile); ++i) want += mag[static_cast<size_t>(i)] >= thr;
          ASSERT_EQ(detail::round_count_of(words[static_cast<size_t>(t)].data(), r), want) << at << " tile " << t;
        }
        ++cases;
        several_rounds += round >= 2 && round + 1 < kRounds;
        last_round += round + 1 == kRounds;
      }
    }
  }
  EXPECT_GT(several_rounds, 0) << "no case stopped after two or more lowerings";
  EXPECT_GT(last_round, 0) << "no case reached the last round";
  EXPECT_EQ(cases, 5 * 3 * 5);
}

TEST(QuadLayoutTwin, GridQuadEncodeEqualsTheCpuCodec) {
  for (const GridCase& c : kGridCases) {
    for (const int64_t n : kGridSizes) {
      const auto cpu = make_codec(grid_spec(c), Layout(n));
      const std::vector<float> x = grid_input(n, c.step, c.bits, 1234 + static_cast<uint64_t>(n));
      std::vector<uint8_t> want(cpu->encoded_bytes(), 0xcd);
      cpu->encode(x, RngKey{}, want);
      // The level function every device encoder uses, through the CPU's packing (the warp kernel
      // of the other widths assembles the same words, with pack_index_word's shifts).
      std::vector<int64_t> fields(static_cast<size_t>(n));
      for (int64_t i = 0; i < n; ++i)
        fields[static_cast<size_t>(i)] =
            lanes::grid_field(grid_level_device(x[static_cast<size_t>(i)], c.step, c.bits), c.bits);
      const int64_t num_words = (n * c.bits + 31) / 32;
      for (int64_t w = 0; w < num_words; ++w)
        ASSERT_EQ(detail::pack_index_word(fields.data(), n, static_cast<int>(c.bits), w), load_word(want, w))
            << grid_spec(c) << " n=" << n << " word " << w;
      std::vector<uint8_t> got;
      if (c.bits == 8) got = sim_grid_encode_quads<1>(x, c.step);
      if (c.bits == 16) got = sim_grid_encode_quads<2>(x, c.step);
      if (c.bits == 32) got = sim_grid_encode_quads<4>(x, c.step);
      if (!got.empty()) {
        ASSERT_TRUE(bytes_equal(got, want)) << grid_spec(c) << " n=" << n;
      }
    }
  }
}

// The inputs above reach grid_level_f's division fallback (an element next to a half-integer of
// the step), so the twins compare that path too; saturated and subnormal inputs are there as well.
TEST(QuadLayoutTwin, GridInputsReachTheFallbackAndTheBounds) {
  for (const GridCase& c : kGridCases) {
    if (c.bits > detail::kGridFloatMaxBits) continue;
    const float cf = detail::grid_inverse_step_f(c.step, c.bits);
    ASSERT_NE(cf, 0.0f) << grid_spec(c);
    const std::vector<float> x = grid_input(4099, c.step, c.bits, 5);
    int fallback = 0, saturated = 0;
    const int64_t lim = (int64_t{1} << (c.bits - 1)) - 1;
    for (float v : x) {
      const float q = v * cf;
      const float d = detail::abs_f(q) * detail::kFloatQuotientSlack;
      const float limf = static_cast<float>(lim);
      if (!(detail::abs_f(q) <= detail::kFloatQuotientMax) ||
          detail::grid_level_of_f(q - d, limf) != detail::grid_level_of_f(q + d, limf))
        ++fallback;
      const int64_t l = detail::grid_level(v, c.step, c.bits);
      if (l == lim || l == -lim) ++saturated;
    }
    EXPECT_GT(fallback, 0) << grid_spec(c);
    EXPECT_GT(saturated, 0) << grid_spec(c);
  }
}

TEST(QuadLayoutTwin, GridQuadDecodeEqualsTheCpuCodec) {
  for (const GridCase& c : kGridCases) {
    for (const int64_t n : kGridSizes) {
      const auto cpu = make_codec(grid_spec(c), Layout(n));
      const std::vector<float> x = grid_input(n, c.step, c.bits, 99 + static_cast<uint64_t>(n));
      const std::vector<uint8_t> p = encode(*cpu, x, RngKey{});
      const std::vector<float> want = decode(*cpu, p, RngKey{});
      for (const bool whole_bytes : {true, false}) {
        int64_t bad = 0;
        const std::vector<float> got = sim_grid_decode(p, n, c.bits, c.step, whole_bytes, &bad);
        EXPECT_EQ(bad, -1) << grid_spec(c) << " n=" << n;
        ASSERT_TRUE(bitwise_equal(got, want)) << grid_spec(c) << " n=" << n << " whole_bytes=" << whole_bytes;
      }
    }
  }
}

/// Sets field i of a B-bit payload to `field`.
void set_grid_field(std::vector<uint8_t>& p, int64_t i, uint32_t bits, uint32_t field) {
  for (uint32_t b = 0; b < bits; ++b) {
    const int64_t pos = i * bits + b;
    auto& byte = p[static_cast<size_t>(pos / 8)];
    byte = static_cast<uint8_t>((byte & ~(1u << (pos % 8))) | (((field >> b) & 1u) << (pos % 8)));
  }
}

// A field of -2^(B-1) anywhere (first, inside, the last element) and a set padding bit: the
// one-pass decoder reports each at its position (the padding at n), as GridCodec::validate rejects it.
TEST(QuadLayoutTwin, GridQuadDecodeSeesEveryCorruption) {
  for (const GridCase& c : kGridCases) {
    for (const int64_t n : kGridSizes) {
      const auto cpu = make_codec(grid_spec(c), Layout(n));
      const std::vector<uint8_t> good = encode(*cpu, grid_input(n, c.step, c.bits, 7), RngKey{});
      std::vector<std::pair<std::vector<uint8_t>, int64_t>> bad;
      for (const int64_t i : {int64_t{0}, n / 2, n - 1}) {
        std::vector<uint8_t> p = good;
        set_grid_field(p, i, c.bits, 1u << (c.bits - 1));
        bad.emplace_back(p, i);
      }
      if ((n * c.bits) % 32 != 0) {
        std::vector<uint8_t> p = good;
        p[p.size() - 1] |= 0x80;  // the last bit of the last word: padding
        bad.emplace_back(p, n);
      }
      for (const auto& [p, where] : bad) {
        EXPECT_THROW(cpu->validate(p), Error) << grid_spec(c) << " n=" << n << " at " << where;
        for (const bool whole_bytes : {true, false}) {
          int64_t index = -1;
          (void)sim_grid_decode(p, n, c.bits, c.step, whole_bytes, &index);
          EXPECT_EQ(index, where) << grid_spec(c) << " n=" << n << " whole_bytes=" << whole_bytes;
        }
      }
    }
  }
}

}  // namespace
}  // namespace gcomp::test
