// SPDX-License-Identifier: Apache-2.0
// spherical (spec/ALGORITHMS.md §5.2(b), docs/wire-format.md §3.8) and the portable sin/cos of
// detmath.hpp: accuracy against the C library, beta(m, B) against closed forms and the spec's
// reference values, the codebook and argmax against an independent std:: implementation, counter
// injectivity, determinism, T1 unbiasedness, omega = 1/beta^2 - 1 by Monte Carlo, T16 sizes.
#include "common/test_util.hpp"

#include <gcomp/detail/detmath.hpp>
#include <gcomp/detail/spherical.hpp>

#include <algorithm>
#include <random>
#include <set>
#include <tuple>

using namespace gcomp;
using gcomp::test::bitwise_equal;

namespace {

// ------------------------------------------------------------------------------ sin and cos

TEST(DetMathTest, SinCosRelativeErrorBelow1e15) {
  // Tolerance: relative 1e-15 (the header's claim); the C library is within 1 ulp (1.1e-16).
  std::mt19937_64 rng(7);
  std::uniform_real_distribution<double> wide(-1e4, 1e4), narrow(-4.0, 4.0);
  double worst = 0;
  auto check = [&](double x) {
    double s, c;
    detail::det_sincos(x, s, c);
    const double es = std::fabs(s - std::sin(x)) / std::fabs(std::sin(x));
    const double ec = std::fabs(c - std::cos(x)) / std::fabs(std::cos(x));
    worst = std::max({worst, es, ec});
    EXPECT_LT(es, 1e-15) << "sin " << x;
    EXPECT_LT(ec, 1e-15) << "cos " << x;
    EXPECT_EQ(detail::det_sin(x), s);
    EXPECT_EQ(detail::det_cos(x), c);
  };
  for (int i = 0; i < 20000; ++i) check(wide(rng));
  for (int i = 0; i < 20000; ++i) check(narrow(rng));
  // Nearest doubles to multiples of pi/2, where sin or cos is tiny: the reduction must be exact.
  for (int k = -2000; k <= 2000; ++k) {
    const double x = static_cast<double>(k) * 1.5707963267948966;
    if (k != 0) check(x);
    check(std::nextafter(x, 1e9));
  }
  for (double x : {1e-300, 1e-8, 0.7853981633974483, 0.7853981633974484, 2.356194490192345, 800000.0}) {
    check(x);
    check(-x);
  }
  RecordProperty("worst_relative_error", std::to_string(worst));
}

TEST(DetMathTest, SinCosTurnsMatchLongDouble) {
  // sin(2 pi t), cos(2 pi t) for Box-Muller angles t = w 2^-32: relative 1e-15 with an absolute
  // floor of 4e-19 (the long double reference's own argument rounding at the zeros).
  std::mt19937_64 rng(8);
  const long double two_pi = 6.283185307179586476925286766559L;
  for (int i = 0; i < 40000; ++i) {
    const double t = static_cast<double>(static_cast<uint32_t>(rng())) * 0x1.0p-32;
    double s, c;
    detail::det_sincos_turns(t, s, c);
    const long double rs = std::sin(two_pi * t), rc = std::cos(two_pi * t);
    EXPECT_LE(std::fabs(static_cast<long double>(s) - rs), 1e-15L * std::fabs(rs) + 4e-19L) << t;
    EXPECT_LE(std::fabs(static_cast<long double>(c) - rc), 1e-15L * std::fabs(rc) + 4e-19L) << t;
  }
  double s, c;
  detail::det_sincos_turns(0.25, s, c);
  EXPECT_EQ(s, 1.0);
  EXPECT_EQ(c, 0.0);
  detail::det_sincos_turns(0.5, s, c);
  EXPECT_EQ(s, 0.0);
  EXPECT_EQ(c, -1.0);
}

// ------------------------------------------------------------------------------------- beta

TEST(SphericalBetaTest, CoordinateCdfClosedForms) {
  // F for m = 2 (arcsine law), 3 (uniform, Archimedes), 4 (semicircle); absolute 1e-14.
  const double pi = 3.141592653589793;
  for (double t = -1.0; t <= 1.0; t += 1.0 / 256) {
    EXPECT_NEAR(detail::sphere_coord_cdf(2, t), 0.5 + std::asin(t) / pi, 1e-14) << t;
    EXPECT_NEAR(detail::sphere_coord_cdf(3, t), 0.5 * (1 + t), 1e-14) << t;
    EXPECT_NEAR(detail::sphere_coord_cdf(4, t), 0.5 + (t * std::sqrt(1 - t * t) + std::asin(t)) / pi, 1e-14) << t;
  }
  // m = 16 against Simpson on the density c (1 - t^2)^((m-3)/2); absolute 1e-10.
  const int m = 16;
  const double norm = std::tgamma(m / 2.0) / (std::sqrt(pi) * std::tgamma((m - 1) / 2.0));
  for (double t : {-0.9, -0.5, -0.1, 0.0, 0.3, 0.77}) {
    const int steps = 20000;
    const double h = (t + 1.0) / steps;
    double sum = 0;
    for (int i = 0; i <= steps; ++i) {
      const double u = -1.0 + i * h;
      const double w = (i == 0 || i == steps) ? 1 : (i % 2 ? 4 : 2);
      sum += w * std::pow(1 - u * u, (m - 3) / 2.0);
    }
    EXPECT_NEAR(detail::sphere_coord_cdf(m, t), norm * sum * h / 3, 1e-10) << t;
  }
  EXPECT_NEAR(detail::det_lgamma(0.5), std::lgamma(0.5), 1e-14);
  EXPECT_NEAR(detail::det_lgamma(7.5), std::lgamma(7.5), 1e-13);
  EXPECT_NEAR(detail::det_lgamma(1234.5), std::lgamma(1234.5), 1e-10);
}

TEST(SphericalBetaTest, ReferenceValuesAndClosedForms) {
  // §5.2(b) table (3 digits as printed): beta(8,8) = 0.831, beta(16,12) = 0.769, beta(4,16) = 0.9992.
  EXPECT_NEAR(detail::spherical_beta(8, 8), 0.831, 0.0005);
  EXPECT_NEAR(detail::spherical_beta(16, 12), 0.769, 0.0005);
  EXPECT_NEAR(detail::spherical_beta(4, 16), 0.9992, 0.00005);
  EXPECT_NEAR(1 / std::pow(detail::spherical_beta(8, 8), 2) - 1, 0.447, 0.0005);
  EXPECT_NEAR(1 / std::pow(detail::spherical_beta(16, 12), 2) - 1, 0.692, 0.0005);
  // m = 3: F is uniform, so beta = 1 - 2/(N + 1) exactly (N = 2^B); m = 1: 1 - 2^(1-N).
  for (uint32_t b : {1u, 2u, 4u, 8u, 12u}) {
    const double n = std::ldexp(1.0, static_cast<int>(b));
    EXPECT_NEAR(detail::spherical_beta(3, b), 1 - 2 / (n + 1), 1e-12) << b;
    EXPECT_EQ(detail::spherical_beta(1, b), 1 - std::ldexp(1.0, 1 - static_cast<int>(n))) << b;
  }
  // m = 2, B = 1: 1 - int F^2 dt with the arcsine CDF F = 1/2 + asin(t)/pi, by a midpoint rule.
  double ref = 0;
  for (int i = 0; i < 200000; ++i) {
    const double t = -1 + (i + 0.5) * 1e-5;
    const double f = 0.5 + std::asin(t) / 3.141592653589793;
    ref += f * f * 1e-5;
  }
  EXPECT_NEAR(detail::spherical_beta(2, 1), 1 - ref, 1e-6);
  // beta decreases in m and increases in B.
  EXPECT_GT(detail::spherical_beta(8, 8), detail::spherical_beta(16, 8));
  EXPECT_GT(detail::spherical_beta(16, 12), detail::spherical_beta(16, 8));
}

// ---------------------------------------------------------------------- codebook and argmax

/// Independent normal: Philox words (KAT-tested in test_philox.cpp) through std::log/std::cos in
/// long double.
double ref_normal(const RngKey& key, uint64_t t) {
  const auto w = detail::philox_block(key, detail::kStreamCodebook, t >> 2);
  const uint32_t p = static_cast<uint32_t>(t & 2);
  const long double u1 = (static_cast<long double>(w.v[p]) + 0.5L) / 4294967296.0L;
  const long double u2 = static_cast<long double>(w.v[p + 1]) / 4294967296.0L;
  const long double r = std::sqrt(-2.0L * std::log(u1));
  const long double a = 6.283185307179586476925286766559L * u2;
  return static_cast<double>((t & 1) ? r * std::sin(a) : r * std::cos(a));
}

uint32_t payload_index(const std::vector<uint8_t>& p, int64_t m, int64_t l, uint32_t bits) {
  uint32_t v = 0;
  for (uint32_t k = 0; k < bits; ++k) {
    const uint64_t pos = static_cast<uint64_t>(l) * bits + k;
    v |= ((p[4 * static_cast<size_t>(m) + pos / 8] >> (pos % 8)) & 1u) << k;
  }
  return v;
}

TEST(SphericalCodebookTest, ArgmaxAndDecodeMatchAnIndependentModel) {
  // Tolerances: scores relative 1e-12 (double vs long double normals); decoded values relative
  // 2e-7 (one f32 rounding of a 1e-12-accurate double).
  for (const char* spec :
       {"spherical:block=8,bits=6", "spherical:block=5,bits=3", "spherical:block=3,bits=1,unscaled=1"}) {
    const Layout layout(std::vector<int64_t>{21, 0, 7, 1, 18});
    auto c = make_codec(spec, layout);
    const SphericalOptions& s = c->spec().options<SphericalOptions>();
    auto x = test::gaussian(layout.num_elems(), 12);
    x[7] = x[8] = x[9] = x[10] = x[11] = 0.0f;  // a zero block in some layouts
    const RngKey key{0xabcdef12345ull, 2, 11, 0};
    const auto p = test::encode(*c, x, key);
    const auto y = test::decode(*c, p, key);
    const auto blocks = block_offsets(layout, s.dim);
    const int64_t m = static_cast<int64_t>(blocks.size()) - 1;
    for (int64_t l = 0; l < m; ++l) {
      const int64_t start = blocks[l], len = blocks[l + 1] - start;
      float nu;
      std::memcpy(&nu, p.data() + 4 * l, 4);
      const uint32_t jstar = payload_index(p, m, l, s.index_bits);
      if (nu == 0.0f) {
        EXPECT_EQ(jstar, 0u);
        for (int64_t k = 0; k < len; ++k) EXPECT_EQ(y[static_cast<size_t>(start + k)], 0.0f);
        continue;
      }
      std::vector<double> score(size_t{1} << s.index_bits);
      for (uint64_t j = 0; j < score.size(); ++j) {
        double dot = 0, n2 = 0;
        for (int64_t k = 0; k < len; ++k) {
          const double g = ref_normal(key, (static_cast<uint64_t>(start) << s.index_bits) +
                                               j * static_cast<uint64_t>(len) + static_cast<uint64_t>(k));
          dot += g * x[static_cast<size_t>(start + k)];
          n2 += g * g;
        }
        score[j] = dot / std::sqrt(n2);
      }
      const double best = *std::max_element(score.begin(), score.end());
      EXPECT_GE(score[jstar], best - 1e-12 * std::fabs(best)) << spec << " block " << l;
      for (uint32_t j = 0; j < jstar; ++j) EXPECT_LT(score[j], score[jstar] + 1e-12 * std::fabs(best)) << "tie rule";
      double n2 = 0;
      std::vector<double> g(static_cast<size_t>(len));
      for (int64_t k = 0; k < len; ++k) {
        g[static_cast<size_t>(k)] =
            ref_normal(key, (static_cast<uint64_t>(start) << s.index_bits) +
                                uint64_t{jstar} * static_cast<uint64_t>(len) + static_cast<uint64_t>(k));
        n2 += g[static_cast<size_t>(k)] * g[static_cast<size_t>(k)];
      }
      const double factor = s.unscaled ? nu : nu / detail::spherical_beta(len, s.index_bits);
      for (int64_t k = 0; k < len; ++k) {
        const double want = factor * g[static_cast<size_t>(k)] / std::sqrt(n2);
        EXPECT_NEAR(y[static_cast<size_t>(start + k)], want, 2e-7 * std::fabs(want) + 1e-30) << spec << " block " << l;
      }
    }
  }
}

TEST(SphericalCodebookTest, CounterIsInjectiveOverAMessage) {
  for (const auto& [block, bits] : {std::pair{8, 3}, std::pair{3, 5}, std::pair{1, 2}}) {
    const Layout layout(std::vector<int64_t>{5, 0, 40, 1, 33});
    const auto blocks = block_offsets(layout, block);
    std::set<uint64_t> seen;
    uint64_t count = 0;
    for (size_t l = 0; l + 1 < blocks.size(); ++l) {
      const uint64_t len = static_cast<uint64_t>(blocks[l + 1] - blocks[l]);
      for (uint64_t j = 0; j < (uint64_t{1} << bits); ++j)
        for (uint64_t k = 0; k < len; ++k, ++count)
          seen.insert(detail::codebook_index(static_cast<uint64_t>(blocks[l]), static_cast<uint32_t>(bits), j, len, k));
    }
    EXPECT_EQ(seen.size(), count);
    EXPECT_LT(*seen.rbegin(), static_cast<uint64_t>(layout.num_elems()) << bits);
  }
}

TEST(SphericalCodebookTest, RegenerationIsDeterministicAndFreshPerKey) {
  auto c = make_codec("spherical:block=4,bits=5", Layout(256));
  const auto x = test::gaussian(256, 3);
  const RngKey key{42, 1, 7, 0};
  const auto p = test::encode(*c, x, key);
  EXPECT_EQ(p, test::encode(*c, x, key));
  const auto y = test::decode(*c, p, key);
  EXPECT_TRUE(bitwise_equal(y, test::decode(*c, p, key)));
  // decode_accumulate regenerates the same codewords.
  std::vector<float> acc(256, 1.0f), want(256);
  for (size_t i = 0; i < 256; ++i) want[i] = 1.0f + 0.5f * y[i];
  c->decode_accumulate(p, key, 0.5f, acc);
  EXPECT_TRUE(bitwise_equal(acc, want));
  // Another seed, rank, step or stream offset draws another codebook (64 indices of 5 bits).
  for (RngKey other : {RngKey{43, 1, 7, 0}, RngKey{42, 2, 7, 0}, RngKey{42, 1, 8, 0}, RngKey{42, 1, 7, 8}}) {
    EXPECT_NE(test::encode(*c, x, other), p);
    EXPECT_NE(test::decode(*c, p, other), y);  // the receiver must use the sender's key
  }
}

// ------------------------------------------------------------------------------ statistics

/// Monte Carlo of |C(x) - x|^2 and of the mean, over `draws` steps.
struct Mc {
  std::vector<double> mean;
  double err = 0, err_se = 0;
};

Mc monte_carlo(const Codec& c, const std::vector<float>& x, int draws) {
  Mc r;
  r.mean.assign(x.size(), 0.0);
  std::vector<uint8_t> p(c.encoded_bytes());
  std::vector<float> y(x.size());
  double s1 = 0, s2 = 0;
  for (int k = 0; k < draws; ++k) {
    const RngKey key{91, 0, static_cast<uint32_t>(k), 0};
    c.encode(x, key, p);
    c.decode(p, key, y);
    const double e = test::sq_dist(y, x);
    s1 += e;
    s2 += e * e;
    for (size_t i = 0; i < x.size(); ++i) r.mean[i] += y[i];
  }
  for (double& v : r.mean) v /= draws;
  r.err = s1 / draws;
  r.err_se = std::sqrt(std::max(0.0, s2 / draws - r.err * r.err) / draws);
  return r;
}

TEST(SphericalStatsTest, T1Unbiased) {
  // |mean - x|^2 <= 5 V / K, V = sum_l (1/beta_l^2 - 1) |x_l|^2 (exact for every input).
  for (const auto& [spec, d, draws] : {std::tuple{"spherical:block=8,bits=4", int64_t{64}, 20000},
                                       std::tuple{"spherical:block=16,bits=3", int64_t{1024}, 2000}}) {
    auto c = make_codec(spec, Layout(d));
    const auto x = test::gaussian(d, 500 + static_cast<uint64_t>(d));
    double v = 0;
    const auto blocks = block_offsets(c->layout(), c->spec().options<SphericalOptions>().dim);
    for (size_t l = 0; l + 1 < blocks.size(); ++l) {
      double nn = 0;
      for (int64_t i = blocks[l]; i < blocks[l + 1]; ++i)
        nn += static_cast<double>(x[static_cast<size_t>(i)]) * x[static_cast<size_t>(i)];
      const double beta =
          detail::spherical_beta(blocks[l + 1] - blocks[l], c->spec().options<SphericalOptions>().index_bits);
      v += (1 / (beta * beta) - 1) * nn;
    }
    const Mc mc = monte_carlo(*c, x, draws);
    double bias = 0;
    for (size_t i = 0; i < x.size(); ++i) bias += (mc.mean[i] - x[i]) * (mc.mean[i] - x[i]);
    EXPECT_LE(bias, 5 * v / draws) << spec;
  }
}

TEST(SphericalStatsTest, OmegaIsOneOverBetaSquaredMinusOne) {
  // Monte Carlo of E|C(x) - x|^2 / |x|^2 at (m_b, B) = (8, 8) and (16, 8), d = 64, K = 1000 draws.
  // Tolerance: 5 standard errors of the sample mean (false-failure rate < 1e-6); the test also
  // requires the standard error to be below 5% of omega so that it has power.
  for (const auto& [spec, m, b] :
       {std::tuple{"spherical:block=8,bits=8", 8, 8u}, std::tuple{"spherical:block=16,bits=8", 16, 8u}}) {
    auto c = make_codec(spec, Layout(64));
    const double beta = detail::spherical_beta(m, b);
    const double omega = 1 / (beta * beta) - 1;
    EXPECT_NEAR(c->guarantee().omega, omega, 1e-15);
    const auto x = test::gaussian(64, 77);
    const double xx = test::sq_norm(x);
    const Mc mc = monte_carlo(*c, x, 1000);
    EXPECT_NEAR(mc.err / xx, omega, 5 * mc.err_se / xx) << spec;
    EXPECT_LT(mc.err_se / xx, 0.05 * omega) << spec;
  }
  // unscaled: E|C(x) - x|^2 = 2 (1 - beta) |x|^2, declared contractive delta = 2 beta - 1.
  auto c = make_codec("spherical:block=8,bits=8,unscaled=1", Layout(64));
  const double beta = detail::spherical_beta(8, 8);
  EXPECT_EQ(c->guarantee().kind, Guarantee::Kind::kContractive);
  EXPECT_NEAR(c->guarantee().delta, 2 * beta - 1, 1e-15);
  const auto x = test::gaussian(64, 78);
  const Mc mc = monte_carlo(*c, x, 1000);
  EXPECT_NEAR(mc.err / test::sq_norm(x), 2 * (1 - beta), 5 * mc.err_se / test::sq_norm(x));
  // beta <= 1/2: no guarantee for unscaled.
  EXPECT_EQ(make_codec("spherical:block=64,bits=4,unscaled=1", Layout(64))->guarantee().kind, Guarantee::Kind::kNone);
}

TEST(SphericalStatsTest, T16SizesAndGuaranteeUseTheLongestBlock) {
  for (const auto& segs : {std::vector<int64_t>{1}, std::vector<int64_t>{31}, std::vector<int64_t>{64},
                           std::vector<int64_t>{1000}, std::vector<int64_t>{17, 0, 5, 33}}) {
    for (const auto& [block, bits] : {std::pair{16, 8}, std::pair{8, 8}, std::pair{4, 16}, std::pair{5, 3}}) {
      const Layout layout(segs);
      auto c = make_codec("spherical:block=" + std::to_string(block) + ",bits=" + std::to_string(bits), layout);
      const auto blocks = block_offsets(layout, block);
      const double m = static_cast<double>(blocks.size() - 1);
      EXPECT_EQ(c->encoded_bits(), m * (bits + 32));
      EXPECT_EQ(c->encoded_bytes(), static_cast<size_t>(4 * m + 4 * std::ceil(m * bits / 32)));
      int64_t longest = 0;
      for (size_t l = 0; l + 1 < blocks.size(); ++l) longest = std::max(longest, blocks[l + 1] - blocks[l]);
      const double beta = detail::spherical_beta(longest, static_cast<uint32_t>(bits));
      EXPECT_DOUBLE_EQ(c->guarantee().omega, 1 / (beta * beta) - 1);
    }
  }
}

TEST(SphericalFormatTest, MalformedPayloadsAreRejected) {
  auto c = make_codec("spherical:block=4,bits=3", Layout(10));  // 3 blocks, 9 index bits
  std::vector<float> x(10, 0.0f);
  x[0] = 1.0f;
  const auto good = test::encode(*c, x, RngKey{});
  std::vector<float> out(10, 3.0f);
  auto reject = [&](std::vector<uint8_t> bad, const std::string& what) {
    try {
      c->decode(bad, RngKey{}, out);
      ADD_FAILURE() << what << " accepted";
    } catch (const Error& e) {
      EXPECT_EQ(e.status(), gcompErrorCorruptPayload);
      EXPECT_NE(std::string(e.what()).find(what), std::string::npos) << e.what();
    }
    EXPECT_TRUE(std::all_of(out.begin(), out.end(), [](float v) { return v == 3.0f; }));
  };
  auto bad = good;
  bad[12] |= 0x08;  // index of block 1 (zero norm) becomes nonzero
  reject(bad, "norm 0 and a nonzero index");
  bad = good;
  bad[13] |= 0x02;  // bit 9: after the last index
  reject(bad, "padding bits set");
  bad = good;
  const float neg0 = -0.0f;
  std::memcpy(bad.data() + 4, &neg0, 4);
  reject(bad, "negative or not finite");
}

}  // namespace
