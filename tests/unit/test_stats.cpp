// SPDX-License-Identifier: Apache-2.0
// Statistical conformance with spec/ALGORITHMS.md §9.2: T1 (unbiasedness), T2 (dithering variance),
// T3 (worst-case omega), T4 (scaled-sign error), T5 (natural compression), T16 (message sizes).
// Seeds are fixed, so every run draws the same bits; the thresholds are the spec's.
#include "common/test_util.hpp"
#include "host/codecs/registry.hpp"

#include <gcomp/detail/sparse.hpp>

#include <cmath>

using namespace gcomp;

namespace {

constexpr int kDraws = 20000;

/// Exact E|C(x) - x|^2 of an unbiased codec for input x, from the operator's definition,
/// using the scales the codec itself put on the wire (independent of the payload bits).
double exact_variance(const Codec& c, const std::vector<float>& x) {
  const CodecSpec& s = c.spec();
  const int64_t n = c.num_elems();
  std::vector<uint8_t> p = test::encode(c, x, RngKey{});
  double v = 0;
  if (s.id() == CodecId::kDither || s.id() == CodecId::kTernGrad || s.id() == CodecId::kNatDither) {
    const DitherOptions q = detail::dither_quantizer(s);  // terngrad: one level, one block per segment
    const auto blocks = block_offsets(c.layout(), q.block);
    for (size_t b = 0; b + 1 < blocks.size(); ++b) {
      float nu;
      std::memcpy(&nu, p.data() + 4 * b, 4);
      if (nu == 0) continue;
      for (int64_t i = blocks[b]; i < blocks[b + 1]; ++i) {
        if (s.id() == CodecId::kNatDither) {
          const double r = std::fabs(static_cast<double>(x[i])) / nu;
          const double first = std::ldexp(1.0, 1 - static_cast<int>(q.levels));
          double lo = 0, hi = first;
          if (r >= first) {
            lo = std::ldexp(1.0, static_cast<int>(std::floor(std::log2(r))));
            hi = 2 * lo;
          }
          if (r < 1.0) v += static_cast<double>(nu) * nu * (hi - r) * (r - lo);
        } else {
          const double r = std::min<double>(q.levels, q.levels * std::fabs(static_cast<double>(x[i])) / nu);
          const double tau = r - std::floor(r);
          v += (static_cast<double>(nu) / q.levels) * (static_cast<double>(nu) / q.levels) * tau * (1 - tau);
        }
      }
    }
  } else if (s.id() == CodecId::kRandK) {
    const double k = static_cast<double>(detail::sparse_k_of(s, n));
    v = (static_cast<double>(n) / k - 1.0) * test::sq_norm(x);
  } else if (s.id() == CodecId::kNatural) {
    for (float t : x) {
      if (t == 0) continue;
      const double a = std::ldexp(1.0, static_cast<int>(std::floor(std::log2(std::fabs(static_cast<double>(t))))));
      const double at = std::fabs(static_cast<double>(t));
      v += (2 * a - at) * (at - a);
    }
  }
  return v;
}

struct MonteCarlo {
  std::vector<double> mean;
  double mean_sq_err = 0;  // average |C(x) - x|^2 over the draws
};

MonteCarlo monte_carlo(const Codec& c, const std::vector<float>& x, int draws, uint64_t seed) {
  MonteCarlo mc;
  mc.mean.assign(x.size(), 0.0);
  std::vector<uint8_t> p(c.encoded_bytes());
  std::vector<float> y(x.size());
  for (int k = 0; k < draws; ++k) {
    RngKey key{seed, 0, static_cast<uint32_t>(k), 0};
    c.encode(x, key, p);
    c.decode(p, key, y);
    double e = 0;
    for (size_t i = 0; i < x.size(); ++i) {
      mc.mean[i] += y[i];
      const double d = static_cast<double>(y[i]) - x[i];
      e += d * d;
    }
    mc.mean_sq_err += e;
  }
  for (double& m : mc.mean) m /= draws;
  mc.mean_sq_err /= draws;
  return mc;
}

class UnbiasedTest : public testing::TestWithParam<std::tuple<const char*, int64_t>> {};

// T1: |mean - x|^2 <= 5 V / K, V the exact variance; and the measured variance agrees with V.
TEST_P(UnbiasedTest, MeanConvergesToInputAndVarianceMatches) {
  const auto [spec, d] = GetParam();
  auto c = make_codec(spec, Layout(d));
  const std::vector<float> x = test::gaussian(d, 1000 + static_cast<uint64_t>(d));
  const double v = exact_variance(*c, x);
  ASSERT_GT(v, 0.0);
  const int draws = d > 256 ? kDraws / 4 : kDraws;
  const MonteCarlo mc = monte_carlo(*c, x, draws, 77);
  double bias = 0;
  for (size_t i = 0; i < x.size(); ++i) bias += (mc.mean[i] - x[i]) * (mc.mean[i] - x[i]);
  EXPECT_LE(bias, 5.0 * v / draws) << spec << " d=" << d;
  // T2-style check of the measured variance; 4% covers 6 standard errors at these draw counts.
  EXPECT_NEAR(mc.mean_sq_err / v, 1.0, 0.04) << spec << " d=" << d;
  // The declared omega bounds the exact variance for this input.
  EXPECT_LE(v, c->guarantee().omega * test::sq_norm(x) * (1 + 1e-9)) << spec;
}

INSTANTIATE_TEST_SUITE_P(
    T1, UnbiasedTest,
    testing::Combine(testing::Values("dither:levels=1,norm=l2", "dither:levels=4,norm=l2,block=16",
                                     "dither:levels=1,norm=linf,block=10", "dither:levels=2,norm=lp,p=3,block=16",
                                     "dither:levels=3,norm=l1", "terngrad", "randk:k=8", "randk:ratio=0.25", "natural",
                                     "natdither:levels=3,norm=linf", "natdither:levels=2,norm=l2,block=16"),
                     testing::Values(int64_t{64}, int64_t{1024})),
    [](const auto& param_info) {
      std::string s = std::get<0>(param_info.param);
      for (char& ch : s)
        if (!isalnum(static_cast<unsigned char>(ch))) ch = '_';
      return s + "_d" + std::to_string(std::get<1>(param_info.param));
    });

// T2: dithering variance vs §2.2 within 3% at K = 20000 (s in {1,2,4}, p in {2, inf}, blocks 10/16, d = 64).
TEST(DitherVarianceTest, MatchesExactFormula) {
  for (const char* spec :
       {"dither:levels=1,norm=l2,block=10", "dither:levels=2,norm=l2,block=16", "dither:levels=4,norm=linf,block=10",
        "dither:levels=1,norm=linf,block=16", "dither:levels=4,norm=l2"}) {
    auto c = make_codec(spec, Layout(64));
    const auto x = test::gaussian(64, 5);
    const double v = exact_variance(*c, x);
    const MonteCarlo mc = monte_carlo(*c, x, kDraws, 11);
    EXPECT_NEAR(mc.mean_sq_err / v, 1.0, 0.03) << spec;
  }
}

// T3: worst-case omega for s = 1 is attained exactly.
TEST(WorstCaseOmegaTest, L2AllOnesAndLinfSpike) {
  for (int64_t d : {16, 64, 256, 1024}) {
    const double sd = std::sqrt(static_cast<double>(d));
    auto l2 = make_codec("dither:levels=1,norm=l2", Layout(d));
    std::vector<float> ones(d, 1.0f);
    EXPECT_NEAR(exact_variance(*l2, ones) / test::sq_norm(ones), sd - 1.0, 1e-12 * sd);
    EXPECT_NEAR(l2->guarantee().omega, sd - 1.0, 1e-12 * sd);

    auto li = make_codec("dither:levels=1,norm=linf", Layout(d));
    std::vector<float> spike(d, static_cast<float>(1.0 / (1.0 + sd)));
    spike[0] = 1.0f;
    EXPECT_NEAR(exact_variance(*li, spike) / test::sq_norm(spike), (sd - 1.0) / 2.0, 1e-12 * sd);
    EXPECT_NEAR(li->guarantee().omega, (sd - 1.0) / 2.0, 1e-12 * sd);
  }
  // The Monte Carlo estimate of the codec agrees with the exact worst case (d = 64: omega_2 = 7).
  auto l2 = make_codec("dither:levels=1,norm=l2", Layout(64));
  std::vector<float> ones(64, 1.0f);
  EXPECT_NEAR(monte_carlo(*l2, ones, kDraws, 3).mean_sq_err / 64.0, 7.0, 0.03 * 7.0);
}

// T4: scaled-sign error sum_B (|x_B|^2 - |x_B|_1^2 / d_B) with zeros mapped to +1, 1e-12 relative.
TEST(ScaledSignTest, ExactError) {
  for (const char* spec : {"sign", "sign:block=16", "sign:block=4", "sign:block=1000"}) {
    for (int64_t d : {64, 1024, 1000}) {
      auto c = make_codec(spec, Layout(d));
      auto x = test::gaussian(d, 9);
      for (int64_t i = 0; i < d; i += 7) x[i] = 0.0f;
      const auto y = test::decode(*c, test::encode(*c, x, RngKey{}), RngKey{});
      const auto blocks = block_offsets(c->layout(), c->spec().options<SignOptions>().block);
      double formula = 0;
      for (size_t b = 0; b + 1 < blocks.size(); ++b) {
        double l1 = 0, l2 = 0;
        for (int64_t i = blocks[b]; i < blocks[b + 1]; ++i) {
          l1 += std::fabs(static_cast<double>(x[i]));
          l2 += static_cast<double>(x[i]) * x[i];
        }
        formula += l2 - l1 * l1 / static_cast<double>(blocks[b + 1] - blocks[b]);
      }
      EXPECT_NEAR(test::sq_dist(y, x) / formula, 1.0, 1e-12) << spec << " d=" << d;
      for (int64_t i = 0; i < d; i += 7) EXPECT_GT(y[i], 0.0f) << "zero maps to +1";
    }
  }
  // Worst case delta = 1/b: a 1-sparse block.
  auto c = make_codec("sign:block=16", Layout(16));
  std::vector<float> x(16, 0.0f);
  x[3] = 2.0f;
  const auto y = test::decode(*c, test::encode(*c, x, RngKey{}), RngKey{});
  EXPECT_NEAR(test::sq_dist(y, x) / test::sq_norm(x), 1.0 - 1.0 / 16.0, 1e-12);
  EXPECT_DOUBLE_EQ(c->guarantee().delta, 1.0 / 16.0);
}

// T5: natural compression: omega = 1/8 at 4/3 and <= 1/8 for any input.
TEST(NaturalTest, OmegaIsOneEighthAtFourThirdsAndBoundedElsewhere) {
  auto c = make_codec("natural", Layout(1024));
  std::vector<float> x(1024, 4.0f / 3.0f);
  for (int i = 1; i < 1024; i += 2) x[i] = -x[i] * 1024.0f;  // every binade behaves the same
  EXPECT_NEAR(exact_variance(*c, x) / test::sq_norm(x), 0.125, 1e-12);
  EXPECT_NEAR(monte_carlo(*c, x, kDraws / 4, 21).mean_sq_err / test::sq_norm(x), 0.125, 0.03 * 0.125);
  for (uint64_t seed = 0; seed < 20; ++seed) {
    auto g = test::gaussian(1024, seed);
    for (auto& v : g) v *= std::ldexp(1.0f, static_cast<int>(seed) - 10);
    EXPECT_LE(exact_variance(*c, g) / test::sq_norm(g), 0.125 + 1e-15);
  }
  EXPECT_EQ(c->guarantee().omega, 0.125);
}

// T16: message sizes, exact.
TEST(MessageSizeTest, SpecFormulas) {
  for (int64_t d : {1, 31, 64, 1000, 1024, 4097}) {
    const double dd = static_cast<double>(d);
    for (int64_t b : {4, 16, 512}) {
      const double m = std::ceil(dd / static_cast<double>(b));
      EXPECT_EQ(make_codec("dither:levels=1,block=" + std::to_string(b), Layout(d))->encoded_bits(), 2 * dd + 32 * m);
      for (uint32_t s : {2u, 3u, 4u, 7u, 8u, 100u}) {
        const double bits = std::ceil(std::log2(s + 1.0));
        EXPECT_EQ(
            make_codec("dither:levels=" + std::to_string(s) + ",block=" + std::to_string(b), Layout(d))->encoded_bits(),
            32 * m + dd * (1 + bits));
      }
      EXPECT_EQ(make_codec("sign:block=" + std::to_string(b), Layout(d))->encoded_bits(), dd + 32 * m);
    }
    EXPECT_EQ(make_codec("terngrad", Layout(std::vector<int64_t>{d, 3, d}))->encoded_bits(), 2 * (2 * dd + 3) + 32 * 3);
    for (int64_t k : {1, 5, 31}) {
      const int64_t kk = std::min(k, d);
      EXPECT_EQ(make_codec("topk:k=" + std::to_string(k), Layout(d))->encoded_bits(),
                static_cast<double>(kk) * (32 + std::ceil(std::log2(dd))));
      EXPECT_EQ(make_codec("randk:k=" + std::to_string(k), Layout(d))->encoded_bits(),
                32.0 * static_cast<double>(kk) + 64);
    }
    EXPECT_EQ(make_codec("natural", Layout(d))->encoded_bits(), 9 * dd);
    EXPECT_EQ(make_codec("identity", Layout(d))->encoded_bits(), 32 * dd);
    EXPECT_EQ(make_codec("grid:step=0.5,bits=11", Layout(d))->encoded_bits(), 11 * dd);
    EXPECT_EQ(make_codec("grid:step=0.5,bits=11", Layout(d))->encoded_bytes(),
              static_cast<size_t>(4 * std::ceil(11 * dd / 32)));
    // Bytes: the bits rounded up to whole 32-bit words per part (bit planes pad the last group).
    auto dense = make_codec("dither:levels=1,block=16", Layout(d));
    EXPECT_EQ(dense->encoded_bytes(), static_cast<size_t>(4 * std::ceil(dd / 16) + 8 * std::ceil(dd / 32)));
  }
  EXPECT_EQ(make_codec("topk:ratio=0.001", Layout(100))->encoded_bits(), 1.0 * (32 + 7));  // k = max(1, floor)
}

}  // namespace
