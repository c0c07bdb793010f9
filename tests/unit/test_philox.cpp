// SPDX-License-Identifier: Apache-2.0
// Philox4x32-10 known-answer tests (Random123 kat_vectors) and gcomp's stream layout.
#include <gcomp/detail/codec_math.hpp>
#include <gcomp/detail/philox.hpp>
#include <gcomp/detail/detmath.hpp>

#include <gtest/gtest.h>

#include <cmath>
#include <set>

using namespace gcomp::detail;

namespace {

struct Kat {
  Philox4x32 ctr;
  uint32_t k0, k1;
  Philox4x32 expected;
};

// Published Random123 known-answer vectors for philox4x32 with 10 rounds.
const Kat kKats[] = {
    {{{0u, 0u, 0u, 0u}}, 0u, 0u, {{0x6627e8d5u, 0xe169c58du, 0xbc57ac4cu, 0x9b00dbd8u}}},
    {{{0xffffffffu, 0xffffffffu, 0xffffffffu, 0xffffffffu}},
     0xffffffffu,
     0xffffffffu,
     {{0x408f276du, 0x41c83b0eu, 0xa20bc7c6u, 0x6d5451fdu}}},
    {{{0x243f6a88u, 0x85a308d3u, 0x13198a2eu, 0x03707344u}},
     0xa4093822u,
     0x299f31d0u,
     {{0xd16cfe09u, 0x94fdccebu, 0x5001e420u, 0x24126ea1u}}},
};

}  // namespace

TEST(PhiloxTest, KnownAnswerVectors) {
  for (const Kat& k : kKats) {
    const Philox4x32 out = philox4x32_10(k.ctr, k.k0, k.k1);
    for (int i = 0; i < 4; ++i) EXPECT_EQ(out.v[i], k.expected.v[i]) << "word " << i;
  }
}

TEST(PhiloxTest, StreamsAreDistinctAndLayoutFree) {
  RngKey key{12345, 3, 7, 0};
  // The word of an element is the same whether drawn alone or as part of its group of 4.
  for (uint64_t i = 0; i < 64; ++i)
    EXPECT_EQ(philox_word(key, kStreamElement, i), philox_block(key, kStreamElement, i / 4).v[i % 4]);
  // Changing any of seed, rank, step, stream or the downlink offset changes the bits.
  std::set<uint32_t> seen;
  seen.insert(philox_word(key, kStreamElement, 5));
  RngKey k2 = key;
  k2.seed = 12346;
  seen.insert(philox_word(k2, kStreamElement, 5));
  RngKey k3 = key;
  k3.rank = 4;
  seen.insert(philox_word(k3, kStreamElement, 5));
  RngKey k4 = key;
  k4.step = 8;
  seen.insert(philox_word(k4, kStreamElement, 5));
  seen.insert(philox_word(key, kStreamSelect, 5));
  RngKey k5 = key;
  k5.stream_offset = kStreamDownlink;
  seen.insert(philox_word(k5, kStreamElement, 5));
  RngKey k6 = key;
  k6.seed = 12345ull | (1ull << 40);
  seen.insert(philox_word(k6, kStreamElement, 5));
  EXPECT_EQ(seen.size(), 7u);
}

TEST(PhiloxTest, GroupFormsEqualTheElementFunctionsWordByWord) {
  // One block per group of four gives, element by element, what the element functions give with
  // philox_word: the group API changes no payload bit.
  const RngKey key{0x0123456789abcdefull, 5, 11, kStreamDownlink};
  const float ys[] = {0.0f, -0.0f, 1.0f, -1.0f, 0.3f, -0.7f, 2.5f, -1e-30f, 3e38f, -5e-45f, 0.125f, -0.999f};
  const float nus[] = {0.0f, 1.0f, 2.5f, 1e-30f, 3e38f, 0.5f};
  for (uint64_t q = 0; q < 64; ++q) {
    const Philox4x32 r = philox_block(key, kStreamElement, q);
    for (uint32_t levels : {1u, 3u, 4u, 7u, 1000u}) {
      float y[4], nu[4];
      for (int j = 0; j < 4; ++j) {
        y[j] = ys[(q + 3 * j) % (sizeof ys / sizeof ys[0])];
        nu[j] = nus[(q + j) % (sizeof nus / sizeof nus[0])];
        if (nu[j] != 0.0f && abs_f(y[j]) > nu[j]) nu[j] = abs_f(y[j]);
      }
      Quantized d[4], nd[4];
      uint32_t codes[4];
      dither_quantize4(y, nu, levels, r, d);
      natdither_quantize4(y, nu, levels, r, nd);
      natural_codes4(y, r, codes);
      for (int j = 0; j < 4; ++j) {
        const uint32_t w = philox_word(key, kStreamElement, 4 * q + static_cast<uint64_t>(j));
        const Quantized de = dither_quantize(y[j], nu[j], levels, uniform01(w));
        const Quantized ne = natdither_quantize(y[j], nu[j], levels, uniform01(w));
        EXPECT_EQ(d[j].level, de.level);
        EXPECT_EQ(d[j].negative, de.negative);
        EXPECT_EQ(nd[j].level, ne.level);
        EXPECT_EQ(nd[j].negative, ne.negative);
        EXPECT_EQ(codes[j], natural_exponent_code(y[j], w));
      }
    }
  }
}

TEST(PhiloxTest, UniformIsInUnitIntervalAndExact) {
  EXPECT_EQ(uniform01(0u), 0.0f);
  EXPECT_LT(uniform01(0xffffffffu), 1.0f);
  EXPECT_EQ(uniform01(0xffffffffu), 1.0f - 5.9604644775390625e-8f);
  // Mean and variance over many draws: U[0,1) has mean 1/2, variance 1/12. With N = 2^18 draws the
  // standard error of the mean is 5.6e-4; 6 sigma bounds give a false-failure rate below 1e-8.
  const int kN = 1 << 18;
  double sum = 0, sq = 0;
  RngKey key{99, 0, 0, 0};
  for (int i = 0; i < kN; ++i) {
    const double u = uniform01(philox_word(key, kStreamElement, static_cast<uint64_t>(i)));
    sum += u;
    sq += u * u;
  }
  const double mean = sum / kN;
  EXPECT_NEAR(mean, 0.5, 6 * std::sqrt(1.0 / 12.0 / kN));
  EXPECT_NEAR(sq / kN - mean * mean, 1.0 / 12.0, 2e-3);
}

TEST(DetMathTest, MatchesLibmClosely) {
  for (double x : {1e-300, 1e-40, 0.001, 0.5, 0.7071, 1.0, 1.5, 2.0, 3.14159, 1e10, 1e300}) {
    EXPECT_NEAR(det_log(x), std::log(x), 1e-15 * std::max(1.0, std::fabs(std::log(x)))) << x;
  }
  for (double y : {-700.0, -20.0, -1.0, -1e-5, 0.0, 1e-5, 0.5, 1.0, 10.0, 300.0, 709.0}) {
    EXPECT_NEAR(det_exp(y) / std::exp(y), 1.0, 4e-15) << y;
  }
  for (double p : {1.5, 3.0, 2.5, 7.0}) {
    for (double x : {1e-20, 0.3, 1.0, 7.5, 1e15})
      EXPECT_NEAR(det_pow(x, p) / std::pow(x, p), 1.0, 1e-13) << x << "^" << p;
  }
  EXPECT_EQ(det_pow(0.0, 3.0), 0.0);
}
