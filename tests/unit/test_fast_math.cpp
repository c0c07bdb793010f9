// SPDX-License-Identifier: Apache-2.0
// The division-free forms of the element math (dither_quantize_rcp, natdither_quantize_rcp,
// grid_level_rcp: a reciprocal per block and a bracket; dither_quantize_f, natdither_quantize_f,
// grid_level_f: the same in single precision; codec_math.hpp / grid.hpp) give exactly the results of the division
// forms. FastMath.* (default run): random floats over the whole range and
// inputs built to land on or next to a level boundary. FastMathExhaustive.* (label `slow`, see
// tests/unit/CMakeLists.txt): every non-negative float y for several (nu, s, u), and every finite
// float x for several grid steps.
#include <gcomp/detail/codec_math.hpp>
#include <gcomp/detail/grid.hpp>

#include <gtest/gtest.h>

#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <random>
#include <string>
#include <thread>
#include <vector>

using namespace gcomp::detail;

namespace {

/// u values: the 24-bit uniforms of uniform01 (0, tiny, 1/2, a typical value, the largest).
const float kUs[] = {0.0f, 5.9604644775390625e-8f, 0.5f, 0.3183098733425140380859375f, 1.0f - 5.9604644775390625e-8f};

float random_float(std::mt19937_64& rng) {
  // Any finite bit pattern: uniform exponents, so tiny and huge magnitudes are as likely as O(1).
  for (;;) {
    const float f = bits_float(static_cast<uint32_t>(rng()));
    if (is_finite_f(f)) return f;
  }
}

/// Both fast forms (double reciprocal, single precision) against the division.
testing::AssertionResult same_dither(float y, float nu, uint32_t s, float u) {
  const Quantized a = dither_quantize(y, nu, s, u);
  const Quantized b = dither_quantize_rcp(y, nu, 1.0 / static_cast<double>(nu), s, u);
  const Quantized f = dither_quantize_f(y, nu, quantize_recip_f(false, nu, s), s, u);
  if (a.level == b.level && a.negative == b.negative && a.level == f.level && a.negative == f.negative)
    return testing::AssertionSuccess();
  return testing::AssertionFailure() << "dither y=" << y << " nu=" << nu << " s=" << s << " u=" << u << ": " << a.level
                                     << " vs rcp " << b.level << " vs f " << f.level;
}

testing::AssertionResult same_natdither(float y, float nu, uint32_t s, float u) {
  const Quantized a = natdither_quantize(y, nu, s, u);
  const Quantized b = natdither_quantize_rcp(y, nu, 1.0 / static_cast<double>(nu), s, u);
  const Quantized f = natdither_quantize_f(y, nu, quantize_recip_f(true, nu, s), s, u);
  if (a.level == b.level && a.negative == b.negative && a.level == f.level && a.negative == f.negative)
    return testing::AssertionSuccess();
  return testing::AssertionFailure() << "natdither y=" << y << " nu=" << nu << " s=" << s << " u=" << u << ": "
                                     << a.level << " vs rcp " << b.level << " vs f " << f.level;
}

/// Whether the single-precision bracket of dither_quantize_f straddles a level boundary (the
/// division decides), or its range check sends the element to the division.
bool float_path_falls_back(float y, float nu, uint32_t s, float u, bool natural) {
  const float c = quantize_recip_f(natural, nu, s);
  const float q = abs_f(y) * c;
  if (!(q >= kFloatQuotientMin && q <= kFloatQuotientMax)) return y != 0.0f && nu != 0.0f;
  const float d = q * kFloatQuotientSlack;
  return natural ? natdither_level_f(q - d, s, u) != natdither_level_f(q + d, s, u)
                 : dither_level_f(q - d, s, u) != dither_level_f(q + d, s, u);
}

/// Both fast forms of grid_level (double reciprocal, single precision) against the division.
testing::AssertionResult same_grid(float x, double step, uint32_t bits) {
  const int64_t a = grid_level(x, step, bits);
  const int64_t b = grid_level_rcp(x, step, grid_inverse_step(step), bits);
  const int64_t f = grid_level_f(x, step, grid_inverse_step_f(step, bits), bits);
  if (a == b && a == f) return testing::AssertionSuccess();
  return testing::AssertionFailure() << "grid x=" << x << " step=" << step << " bits=" << bits << ": " << a
                                     << " vs rcp " << b << " vs f " << f;
}

/// Whether grid_level_f leaves x to the division (bracket straddling a half-integer, |q| > 2^100,
/// no float reciprocal).
bool grid_float_path_falls_back(float x, double step, uint32_t bits) {
  const float c = grid_inverse_step_f(step, bits);
  const float q = x * c;
  if (c == 0.0f || !(abs_f(q) <= kFloatQuotientMax)) return true;
  const float d = abs_f(q) * kFloatQuotientSlack;
  const float lim = static_cast<float>((int32_t{1} << (bits - 1)) - 1);
  return grid_level_of_f(q - d, lim) != grid_level_of_f(q + d, lim);
}

}  // namespace

TEST(FastMath, RandomFloatsOverTheWholeRange) {
  std::mt19937_64 rng(7);
  const uint32_t levels[] = {1, 2, 3, 4, 7, 15, 16, 127, 255, 1000, 1u << 20};
  for (int i = 0; i < 400000; ++i) {
    const float y = random_float(rng);
    float nu = std::fabs(random_float(rng));
    if (i % 3 == 0) nu = std::fabs(y) * (1.0f + static_cast<float>(rng() % 8) / 8.0f);  // the usual case nu >= |y|
    const uint32_t s = levels[rng() % (sizeof levels / sizeof levels[0])];
    const float u = uniform01(static_cast<uint32_t>(rng()));
    ASSERT_TRUE(same_dither(y, nu, s, u));
    ASSERT_TRUE(same_natdither(y, nu, s, u));
    ASSERT_TRUE(same_natdither(y, nu, 1 + s % 70, u));
  }
  const double steps[] = {0.00390625, 0.001, 0.1, 1.0 / 3.0, 1e-30, 7e20, 1e-250, 1e250, 5e-324, 1e300};
  for (int i = 0; i < 400000; ++i) {
    const float x = random_float(rng);
    const double step =
        steps[rng() % (sizeof steps / sizeof steps[0])] * (1.0 + static_cast<double>(rng() % 1000) / 7.0);
    const uint32_t bits = 2 + static_cast<uint32_t>(rng() % 31);
    ASSERT_TRUE(same_grid(x, step, bits));
  }
}

TEST(FastMath, QuotientsOnAndNextToLevelBoundaries) {
  // y chosen so that s|y|/nu is k + u (a boundary of the level decision) or an integer, then the
  // neighbouring floats: the cases where the reciprocal's bracket straddles the boundary and the
  // division has to decide.
  std::mt19937_64 rng(11);
  int checked = 0;
  for (int t = 0; t < 20000; ++t) {
    const float nu =
        std::ldexp(1.0f + static_cast<float>(rng() % (1u << 23)) * 0x1p-23f, static_cast<int>(rng() % 200) - 100);
    const uint32_t s = 1 + static_cast<uint32_t>(rng() % 16);
    const uint32_t k = static_cast<uint32_t>(rng() % (s + 1));
    for (float u : kUs) {
      for (double target : {static_cast<double>(k) + static_cast<double>(u), static_cast<double>(k)}) {
        float y = static_cast<float>(target * static_cast<double>(nu) / static_cast<double>(s));
        for (int step = 0; step < 3; ++step) y = std::nextafter(y, 0.0f);
        for (int step = 0; step < 7; ++step, y = std::nextafter(y, INFINITY)) {
          ASSERT_TRUE(same_dither(y, nu, s, u));
          ASSERT_TRUE(same_dither(-y, nu, s, u));
          ++checked;
        }
      }
      // natdither boundaries: r = 2^-j and r = 2^-j (1 + u)
      const int j = static_cast<int>(rng() % 12);
      for (double target : {std::ldexp(1.0, -j), std::ldexp(1.0 + static_cast<double>(u), -j - 1)}) {
        float y = static_cast<float>(target * static_cast<double>(nu));
        for (int step = 0; step < 3; ++step) y = std::nextafter(y, 0.0f);
        for (int step = 0; step < 7; ++step, y = std::nextafter(y, INFINITY)) ASSERT_TRUE(same_natdither(y, nu, s, u));
      }
    }
    // grid: x / step on a half-integer (a tie of the rounding) and its neighbours
    const double step = std::ldexp(1.0 + static_cast<double>(rng() % 1000) / 1000.0, static_cast<int>(rng() % 40) - 30);
    const double half = static_cast<double>(static_cast<int64_t>(rng() % 60000) - 30000) + 0.5;
    float x = static_cast<float>(half * step);
    for (int step_i = 0; step_i < 3; ++step_i) x = std::nextafter(x, -INFINITY);
    for (int step_i = 0; step_i < 7; ++step_i, x = std::nextafter(x, INFINITY)) ASSERT_TRUE(same_grid(x, step, 16));
  }
  EXPECT_GT(checked, 1000000);
}

TEST(FastMath, QuotientsWithinTheBracketOfABoundary) {
  // The hard cases: s|y|/nu within 2^-50 (relative) of a decision boundary k + u without being on
  // it, so that the reciprocal's bracket straddles the boundary and the division must decide.
  // With nu = N 2^-23 (N odd, 24 bits) and y = Y 2^-24: r 2^24 = s Y 2^23 / N, which is within
  // 1/64 of an integer t for about 1 in 32 choices of Y; u = (t mod 2^24) 2^-24 puts a boundary
  // there.
  std::mt19937_64 rng(5);
  int straddled = 0, checked = 0;
  for (int t = 0; t < 1000000 && checked < 20000; ++t) {
    const uint64_t n_odd = (1ull << 23) | (rng() & ((1ull << 23) - 1)) | 1u;
    const uint64_t y_int = (1ull << 23) | (rng() & ((1ull << 23) - 1));
    const uint32_t s = (t & 1) ? 1000u : (1u << 20);
    // s Y 2^23 = t N + rem, in 64-bit pieces (s Y < 2^44, the remainder times 2^23 < 2^47).
    const uint64_t a = static_cast<uint64_t>(s) * y_int;
    const uint64_t t_hi = a / n_odd, ra = (a % n_odd) << 23;
    const uint64_t rem = ra % n_odd;
    if (rem == 0 || (rem > n_odd / 64 && rem < n_odd - n_odd / 64)) continue;
    const uint64_t boundary = (t_hi << 23) + ra / n_odd + (rem > n_odd / 2 ? 1 : 0);
    const float u = static_cast<float>(boundary & 0xffffffu) * 5.9604644775390625e-8f;
    const float nu = std::ldexp(static_cast<float>(n_odd), -23);
    const float y = std::ldexp(static_cast<float>(y_int), -24);
    const double q = static_cast<double>(s) * y * (1.0 / static_cast<double>(nu));
    const double d = q * kQuotientSlack;
    straddled += dither_level(q - d, s, u) != dither_level(q + d, s, u);
    ASSERT_TRUE(same_dither(y, nu, s, u));
    ASSERT_TRUE(same_dither(-y, nu, s, u));
    ++checked;
  }
  EXPECT_EQ(checked, 20000);
  EXPECT_GT(straddled, 100) << "the cases should exercise the division fallback";
  std::printf("%d of %d cases straddle a boundary\n", straddled, checked);
}

TEST(FastMath, FloatPathNextToEveryBoundary) {
  // The single-precision path: s|y|/nu on a decision boundary k + u (every u of kUs, and k at the
  // bottom, the middle and the top s of the range, where the clamp r > s acts), on an integer,
  // and on natdither's boundaries 2^-j and 2^-j (1 + u), then 48 floats either side: the float
  // bracket is 2^-20 wide (8 ulps each side), so these cross it, straddle it and leave it.
  std::mt19937_64 rng(17);
  const uint32_t levels[] = {1, 2, 3, 4, 7, 15, 16, 64, 127, 255, 1000, 1024, 4095, 1u << 20, 1u << 24, (1u << 24) + 1};
  int checked = 0, fallbacks = 0;
  for (int t = 0; t < 1500; ++t) {
    // nu over the whole range, tiny (subnormal) and huge ones included
    float nu =
        std::ldexp(1.0f + static_cast<float>(rng() % (1u << 23)) * 0x1p-23f, static_cast<int>(rng() % 280) - 150);
    if (t % 50 == 0) nu = 3.40282347e+38f;
    if (t % 50 == 1) nu = 1.4e-45f;
    const uint32_t s = levels[t % (sizeof levels / sizeof levels[0])];
    const uint32_t ks[] = {0u, s / 2u, s - 1u, s};
    for (float u : kUs) {
      for (uint32_t k : ks) {
        for (double target : {static_cast<double>(k) + static_cast<double>(u), static_cast<double>(k)}) {
          float y = static_cast<float>(target * static_cast<double>(nu) / static_cast<double>(s));
          for (int step = 0; step < 48; ++step) y = std::nextafter(y, 0.0f);
          for (int step = 0; step < 97; ++step, y = std::nextafter(y, INFINITY)) {
            ASSERT_TRUE(same_dither(y, nu, s, u));
            ASSERT_TRUE(same_dither(-y, nu, s, u));
            fallbacks += float_path_falls_back(y, nu, s, u, false);
            ++checked;
          }
        }
      }
      const uint32_t sn = 1 + s % 64;
      const int j = static_cast<int>(rng() % (sn + 2));
      for (double target : {std::ldexp(1.0, -j), std::ldexp(1.0 + static_cast<double>(u), -j - 1)}) {
        float y = static_cast<float>(target * static_cast<double>(nu));
        for (int step = 0; step < 48; ++step) y = std::nextafter(y, 0.0f);
        for (int step = 0; step < 97; ++step, y = std::nextafter(y, INFINITY)) {
          ASSERT_TRUE(same_natdither(y, nu, sn, u));
          ASSERT_TRUE(same_natdither(-y, nu, sn, u));
          fallbacks += float_path_falls_back(y, nu, sn, u, true);
        }
      }
    }
  }
  EXPECT_GT(checked, 1000000);
  EXPECT_GT(fallbacks, 10000) << "the cases should exercise the division fallback";
  std::printf("%d of %d dither cases, plus natdither, fall back\n", fallbacks, checked);
}

TEST(FastMath, FloatPathAtTheEdgesOfItsRange) {
  // q = s|y| c next to 2^-100 and 2^100 (the range check), c without a normal float (huge, tiny,
  // zero, negative, NaN scales), subnormal y, and u at every granularity: the result is the
  // division's whatever path decides.
  const float nus[] = {0.0f, -0.0f,   1.4e-45f,        1.1754942e-38f, 1.17549435e-38f, 2.9e-39f,      1e-30f,  1.0f,
                       0.7f, 3.0e38f, 3.40282347e+38f, 1.7e38f,        -1.0f,           std::nanf(""), INFINITY};
  EXPECT_EQ(quantize_recip_f(false, 0.0f, 4), 0.0f);
  EXPECT_EQ(quantize_recip_f(false, 1e-38f, 1000), 0.0f);       // s/nu overflows
  EXPECT_EQ(quantize_recip_f(true, 3.40282347e+38f, 4), 0.0f);  // 1/nu is subnormal
  EXPECT_EQ(quantize_recip_f(false, std::nanf(""), 4), 0.0f);
  EXPECT_EQ(quantize_recip_f(false, -2.0f, 4), 0.0f);
  EXPECT_EQ(quantize_recip_f(false, 2.0f, (1u << 24) + 1), 0.0f);  // s not exact in float
  EXPECT_EQ(quantize_recip_f(false, 2.0f, 4), 2.0f);
  int checked = 0;
  for (float nu : nus)
    for (uint32_t s : {1u, 3u, 64u, 65u, 1000u, 1u << 20}) {
      const float c = quantize_recip_f(false, nu, s);
      for (float edge : {kFloatQuotientMin, kFloatQuotientMax, 1.0f}) {
        // y with |y| c next to the edge, then its neighbours
        float y = c > 0.0f ? edge / c : edge;
        if (!is_finite_f(y)) y = 3.40282347e+38f;
        for (int step = 0; step < 20; ++step) y = std::nextafter(y, 0.0f);
        for (int step = 0; step < 41; ++step, y = std::nextafter(y, INFINITY)) {
          if (!is_finite_f(y)) break;
          for (float u : kUs) {
            ASSERT_TRUE(same_dither(y, nu, s, u));
            ASSERT_TRUE(same_natdither(y, nu, s, u));
            ++checked;
          }
        }
      }
      for (uint32_t b = 0; b < 4096; b += 7) {  // subnormal y
        const float y = bits_float(b);
        ASSERT_TRUE(same_dither(y, nu, s, 0.5f));
        ASSERT_TRUE(same_natdither(-y, nu, s, 0.0f));
      }
      for (float y : {3.40282347e+38f, -1e38f, 1e30f})  // |y| c overflows to Inf: both ends Inf - Inf
        for (float u : {0.0f, 0.5f}) {
          ASSERT_TRUE(same_dither(y, nu, s, u));
          ASSERT_TRUE(same_natdither(y, nu, s, u));
        }
    }
  // Every u of uniform01 near a boundary: s|y|/nu = 1 + u exactly (nu = 1, s = 1) for the 2^24
  // values of u sampled, the element on the boundary and its neighbours.
  for (uint32_t w = 0; w < (1u << 24); w += 4099) {
    const float u = uniform01(w << 8);
    for (float y : {1.0f + u, std::nextafter(1.0f + u, 0.0f), std::nextafter(1.0f + u, 2.0f)}) {
      ASSERT_TRUE(same_dither(y, 1.0f, 2, u));
      ASSERT_TRUE(same_dither(y * 0.75f, 0.75f, 2, u));
    }
  }
  EXPECT_GT(checked, 1000);
}

TEST(FastMath, GridQuotientsWithinTheBracketOfATie) {
  // x / step within 2^-50 of a half-integer without being one: x = X 2^-23 and step = N 2^-62
  // with N the odd integer nearest X 2^40 / t for an odd t, so that 2 x / step = t (1 + e),
  // |e| < 2^-52.
  std::mt19937_64 rng(13);
  int straddled = 0;
  for (int t = 0; t < 20000; ++t) {
    const uint64_t x_int = (1ull << 23) | (rng() & ((1ull << 23) - 1));
    const uint64_t odd = 1025 + 2 * (rng() % 400);
    uint64_t n = (x_int << 40) / odd;
    n |= 1u;
    const double step = std::ldexp(static_cast<double>(n), -62);
    const float x = std::ldexp(static_cast<float>(x_int), -23);
    const double inv = grid_inverse_step(step);
    const double q = static_cast<double>(x) * inv;
    const double d = q * kQuotientSlack;
    straddled += grid_level_of(q - d, 16) != grid_level_of(q + d, 16);
    ASSERT_TRUE(same_grid(x, step, 16));
    ASSERT_TRUE(same_grid(-x, step, 16));
  }
  EXPECT_GT(straddled, 100) << "the cases should exercise the division fallback";
}

TEST(FastMath, GridFloatPathAtItsEdges) {
  // grid_level_f where its argument is thinnest: quotients on and next to a half-integer (ties,
  // up to |q| near 2^23 where the bracket is widest), levels at the clamp of every width, x
  // subnormal, |q| around 2^100 and 2^-100, steps whose reciprocal is at or beyond the ends of
  // the normal float range, and widths over 24 bits (no float path).
  std::mt19937_64 rng(17);
  int fell_back = 0, fast = 0;
  const auto check = [&](float x, double step, uint32_t bits) {
    if (!is_finite_f(x)) return;  // the domain of grid_level: finite x (encode rejects the others)
    ASSERT_TRUE(same_grid(x, step, bits));
    ASSERT_TRUE(same_grid(-x, step, bits));
    (grid_float_path_falls_back(x, step, bits) ? fell_back : fast) += 1;
  };
  const auto around = [&](double target, double step, uint32_t bits) {
    float x = static_cast<float>(target * step);
    for (int i = 0; i < 4; ++i) x = std::nextafter(x, -INFINITY);
    for (int i = 0; i < 9; ++i, x = std::nextafter(x, INFINITY)) check(x, step, bits);
  };
  for (int t = 0; t < 4000; ++t) {
    const double step =
        std::ldexp(1.0 + static_cast<double>(rng() % 100000) / 100000.0, static_cast<int>(rng() % 80) - 60);
    const uint32_t bits = 2 + static_cast<uint32_t>(rng() % 23);
    const int64_t lim = (int64_t{1} << (bits - 1)) - 1;
    // ties: below, at and above the clamp, and at magnitudes up to 2^23
    const int64_t k = static_cast<int64_t>(rng() % static_cast<uint64_t>(lim + 2));
    around(static_cast<double>(k) + 0.5, step, bits);
    around(static_cast<double>(rng() % (1u << 23)) + 0.5, step, bits);
    around(static_cast<double>(lim), step, bits);
    around(static_cast<double>(lim) + 0.5, step, bits);
    around(static_cast<double>(lim) + 1.0, step, bits);
    // x subnormal (q tiny, or q of order one for a tiny step)
    check(bits_float(1u + static_cast<uint32_t>(rng() % 0x7fffffu)), step, bits);
    check(bits_float(1u + static_cast<uint32_t>(rng() % 0x7fffffu)),
          std::ldexp(1.0 + static_cast<double>(t) / 4000.0, -127), bits);
  }
  // |q| around 2^100 (the end of the fast path) and 2^-100 (where point 6 of grid.hpp applies)
  for (int e : {-100, 100}) {
    for (double step : {1.0, 0.00390625, 1e-10, 3e20}) {
      float x = static_cast<float>(std::ldexp(step, e));
      for (int i = 0; i < 20; ++i) x = std::nextafter(x, 0.0f);
      for (int i = 0; i < 40; ++i, x = std::nextafter(x, INFINITY))
        for (uint32_t bits : {8u, 16u, 24u}) check(x, step, bits);
    }
  }
  // 1 / step at and beyond the ends of the normal float range, and widths over 24 bits
  const double edge_steps[] = {std::ldexp(1.0, 126),
                               std::nextafter(std::ldexp(1.0, 126), 0.0),
                               std::nextafter(std::ldexp(1.0, 126), INFINITY),
                               1.0 / 3.4028234663852886e+38,
                               std::nextafter(1.0 / 3.4028234663852886e+38, 0.0),
                               std::ldexp(1.0, -128),
                               1e-300,
                               1e300};
  for (double step : edge_steps) {
    for (int i = 0; i < 2000; ++i) {
      const float x = random_float(rng);
      for (uint32_t bits : {2u, 8u, 16u, 24u, 25u, 32u}) check(x, step, bits);
    }
    for (uint32_t bits : {8u, 16u, 24u}) around(0.5, step, bits);
  }
  EXPECT_GT(fell_back, 1000) << "the cases should exercise the division fallback";
  EXPECT_GT(fast, 50000) << "and the single-precision path";
}

TEST(FastMath, ExactQuotientsAndPowersOfTwo) {
  // nu a power of two: a/nu is exact, and every boundary is hit exactly by some y.
  for (int e = -140; e <= 120; e += 13) {
    const float nu = std::ldexp(1.0f, e);
    for (uint32_t s : {1u, 2u, 3u, 4u, 8u}) {
      for (uint32_t m = 0; m <= 64 * s; ++m) {
        const float y = std::ldexp(static_cast<float>(m) / 64.0f, e) / static_cast<float>(s);
        for (float u : kUs) {
          ASSERT_TRUE(same_dither(y, nu, s, u));
          ASSERT_TRUE(same_natdither(y, nu, s, u));
        }
      }
    }
  }
}

namespace {

/// Calls check(bits) for every uint32 in [0, limit) on two threads; returns the mismatch count
/// and the first mismatching bits.
template <class Check>
uint64_t sweep(uint64_t limit, Check check, uint32_t* first_bad) {
  std::atomic<uint64_t> bad{0};
  std::atomic<uint32_t> first{0xffffffffu};
  auto run = [&](uint64_t begin, uint64_t end) {
    for (uint64_t b = begin; b < end; ++b)
      if (!check(static_cast<uint32_t>(b))) {
        bad.fetch_add(1);
        uint32_t f = first.load();
        while (b < f && !first.compare_exchange_weak(f, static_cast<uint32_t>(b))) {
        }
      }
  };
  std::thread other(run, limit / 2, limit);
  run(0, limit / 2);
  other.join();
  *first_bad = first.load();
  return bad.load();
}

}  // namespace

TEST(FastMathExhaustive, DitherEveryFloat) {
  struct Case {
    float nu;
    uint32_t s;
    float u;
  };
  const Case cases[] = {{1.0f, 1, 0.5f},     {0.7f, 4, 0.3183098733425140380859375f},
                        {3.3e-20f, 3, 0.0f}, {1.7e30f, 15, 1.0f - 5.9604644775390625e-8f},
                        {0.1f, 255, 0.25f},  {2.3f, 1000, 0.75f}};
  for (const Case& c : cases) {
    const double inv = 1.0 / static_cast<double>(c.nu);
    const float rc = quantize_recip_f(false, c.nu, c.s);
    uint32_t first = 0;
    // Every non-negative finite float y (the level depends on |y|; the sign only sets `negative`).
    const uint64_t bad = sweep(
        0x7f800000ull,
        [&](uint32_t b) {
          const float y = bits_float(b);
          const uint32_t level = dither_quantize(y, c.nu, c.s, c.u).level;
          return level == dither_quantize_rcp(y, c.nu, inv, c.s, c.u).level &&
                 level == dither_quantize_f(y, c.nu, rc, c.s, c.u).level;
        },
        &first);
    EXPECT_EQ(bad, 0u) << "nu=" << c.nu << " s=" << c.s << " u=" << c.u << " first y bits " << first;
  }
}

TEST(FastMathExhaustive, NatDitherEveryFloat) {
  const float nus[] = {1.0f, 0.7f, 2.9e-25f};
  for (float nu : nus)
    for (uint32_t s : {3u, 8u}) {
      const float u = 0.3183098733425140380859375f;
      const double inv = 1.0 / static_cast<double>(nu);
      const float rc = quantize_recip_f(true, nu, s);
      uint32_t first = 0;
      const uint64_t bad = sweep(
          0x7f800000ull,
          [&](uint32_t b) {
            const float y = bits_float(b);
            const uint32_t level = natdither_quantize(y, nu, s, u).level;
            return level == natdither_quantize_rcp(y, nu, inv, s, u).level &&
                   level == natdither_quantize_f(y, nu, rc, s, u).level;
          },
          &first);
      EXPECT_EQ(bad, 0u) << "nu=" << nu << " s=" << s << " first y bits " << first;
    }
}

TEST(FastMathExhaustive, DitherEveryScale) {
  // Every positive finite float nu for fixed y, s, u.
  for (float y : {0.37f, 1.0f}) {
    uint32_t first = 0;
    const uint64_t bad = sweep(
        0x7f800000ull,
        [&](uint32_t b) {
          const float nu = bits_float(b);
          if (nu == 0.0f) return true;
          const uint32_t level = dither_quantize(y, nu, 4, 0.5f).level;
          return level == dither_quantize_rcp(y, nu, 1.0 / static_cast<double>(nu), 4, 0.5f).level &&
                 level == dither_quantize_f(y, nu, quantize_recip_f(false, nu, 4), 4, 0.5f).level;
        },
        &first);
    EXPECT_EQ(bad, 0u) << "y=" << y << " first nu bits " << first;
  }
}

TEST(FastMathExhaustive, GridEveryFloat) {
  for (double step : {0.001, 1.0 / 3.0, 0.00390625 * 1.1, 1e-30}) {
    const double inv = grid_inverse_step(step);
    const float c = grid_inverse_step_f(step, 16);
    uint32_t first = 0;
    const uint64_t bad = sweep(
        0x100000000ull,
        [&](uint32_t b) {
          const float x = bits_float(b);
          if (!is_finite_f(x)) return true;
          const int64_t level = grid_level(x, step, 16);
          return level == grid_level_rcp(x, step, inv, 16) && level == grid_level_f(x, step, c, 16);
        },
        &first);
    EXPECT_EQ(bad, 0u) << "step=" << step << " first x bits " << first;
  }
}
