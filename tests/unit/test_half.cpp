// SPDX-License-Identifier: Apache-2.0
// bfloat16 / fp16 gradient widening: exact for every one of the 65536 bit patterns; the Session's
// gradient view (grad_source.hpp) loads the same floats as the widened / zeroed copy.
#include <gcomp/detail/grad_source.hpp>
#include <gcomp/detail/half.hpp>

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <vector>

using namespace gcomp::detail;

TEST(HalfTest, Fp16ToFloatIsExactForEveryBitPattern) {
  for (uint32_t h = 0; h < 65536; ++h) {
    _Float16 ref;
    const uint16_t bits = static_cast<uint16_t>(h);
    std::memcpy(&ref, &bits, 2);
    const float want = static_cast<float>(ref);
    const float got = f16_to_float(bits);
    if (std::isnan(want)) {
      EXPECT_TRUE(std::isnan(got)) << std::hex << h;
      EXPECT_EQ(std::signbit(got), std::signbit(want)) << std::hex << h;
    } else {
      EXPECT_EQ(float_bits(got), float_bits(want)) << std::hex << h << ": " << got << " vs " << want;
    }
  }
}

TEST(HalfTest, Bf16ToFloatKeepsTheUpperHalf) {
  for (uint32_t h = 0; h < 65536; ++h) EXPECT_EQ(float_bits(bf16_to_float(static_cast<uint16_t>(h))), h << 16);
  EXPECT_EQ(bf16_to_float(0x3f80), 1.0f);
  EXPECT_EQ(bf16_to_float(0xc000), -2.0f);
  EXPECT_TRUE(std::isinf(bf16_to_float(0x7f80)));
}

// The Session's gradient view (gcomp/detail/grad_source.hpp): what the cuda kernels load for a bf16 /
// f16 gradient and with nonfinite = zero must be, bit for bit, the copy the host backends (and the
// device without the view) store first: widened exactly, then zero_nonfinite_f.
namespace {

uint32_t widened_then_zeroed(uint32_t raw, uint32_t src) {
  float v = 0.0f;
  if ((src & kSrcTypeMask) == kSrcBF16)
    v = bf16_to_float(static_cast<uint16_t>(raw));
  else if ((src & kSrcTypeMask) == kSrcF16)
    v = f16_to_float(static_cast<uint16_t>(raw));
  else
    v = bits_float(raw);
  return float_bits((src & kSrcZero) != 0 ? zero_nonfinite_f(v) : v);
}

}  // namespace

TEST(GradSourceTest, SixteenBitGradientsLoadAsTheirWidenedCopyForEveryBitPattern) {
  std::vector<uint16_t> all(65536);
  for (uint32_t h = 0; h < 65536; ++h) all[h] = static_cast<uint16_t>(h);
  for (uint32_t type : {kSrcBF16, kSrcF16})
    for (uint32_t zero : {0u, kSrcZero}) {
      const uint32_t src = type | zero;
      EXPECT_EQ(src_bytes(src), 2u);
      for (uint32_t h = 0; h < 65536; ++h) {
        const uint32_t want = widened_then_zeroed(h, src);
        ASSERT_EQ(float_bits(src_value(h, src)), want) << std::hex << "src " << src << " pattern " << h;
        ASSERT_EQ(float_bits(load_src(all.data(), src, static_cast<int64_t>(h))), want)
            << std::hex << "src " << src << " pattern " << h;
        // Without zeroing NaN and Inf stay as widened (sign and payload bits kept); with it every
        // non-finite pattern is +0 and every finite one (-0 and subnormals included) keeps its bits.
        const float wide =
            type == kSrcBF16 ? bf16_to_float(static_cast<uint16_t>(h)) : f16_to_float(static_cast<uint16_t>(h));
        if (zero == 0u)
          ASSERT_EQ(want, float_bits(wide)) << std::hex << h;
        else
          ASSERT_EQ(want, is_finite_f(wide) ? float_bits(wide) : 0u) << std::hex << h;
      }
    }
  // A few named patterns: bf16 and f16 +-Inf, NaN, -0, the smallest subnormals.
  EXPECT_EQ(float_bits(src_value(0xff80u, kSrcBF16 | kSrcZero)), 0u);           // bf16 -Inf -> +0
  EXPECT_EQ(float_bits(src_value(0xffc1u, kSrcBF16 | kSrcZero)), 0u);           // bf16 -NaN -> +0
  EXPECT_EQ(float_bits(src_value(0xffc1u, kSrcBF16)), 0xffc10000u);             // kept as widened
  EXPECT_EQ(float_bits(src_value(0x8000u, kSrcBF16 | kSrcZero)), 0x80000000u);  // -0 kept
  EXPECT_EQ(float_bits(src_value(0x0001u, kSrcBF16 | kSrcZero)), 0x00010000u);  // subnormal kept
  EXPECT_EQ(float_bits(src_value(0x7c00u, kSrcF16 | kSrcZero)), 0u);            // f16 +Inf -> +0
  EXPECT_EQ(float_bits(src_value(0xfe01u, kSrcF16 | kSrcZero)), 0u);            // f16 -NaN -> +0
  EXPECT_EQ(src_value(0x0001u, kSrcF16 | kSrcZero), std::ldexp(1.0f, -24));     // f16 subnormal, exact
  EXPECT_EQ(float_bits(src_value(0x8001u, kSrcF16)), float_bits(-std::ldexp(1.0f, -24)));
}

// The cuda kernels' vector load of a bf16 / f16 quad (cuda/common/device_types.cuh load_view_quad):
// four consecutive elements read as one little-endian 64-bit word, element j's bits taken by
// src_raw_in_word, give load_src's float of that element, for every pattern in every lane
// position (the other lanes holding other patterns), with and without kSrcZero.
TEST(GradSourceTest, SixteenBitQuadWordsLoadAsTheirElements) {
  for (uint32_t type : {kSrcBF16, kSrcF16})
    for (uint32_t zero : {0u, kSrcZero}) {
      const uint32_t src = type | zero;
      for (int j = 0; j < 4; ++j)
        for (uint32_t h = 0; h < 65536; ++h) {
          uint16_t quad[4];
          for (int l = 0; l < 4; ++l)  // the other lanes: patterns that differ from h and from each other
            quad[l] = static_cast<uint16_t>(l == j ? h : (h * 40503u + 0x9e37u * static_cast<uint32_t>(l + 1)));
          uint64_t word = 0;
          std::memcpy(&word, quad, sizeof word);  // what an 8-byte load of the quad holds
          for (int l = 0; l < 4; ++l) {
            ASSERT_EQ(src_raw_in_word(word, l), quad[l]) << std::hex << "lane " << l << " pattern " << h;
            ASSERT_EQ(float_bits(src_value(src_raw_in_word(word, l), src)), float_bits(load_src(quad, src, l)))
                << std::hex << "src " << src << " lane " << l << " pattern " << quad[l];
          }
          ASSERT_EQ(float_bits(src_value(src_raw_in_word(word, j), src)), widened_then_zeroed(h, src))
              << std::hex << "src " << src << " lane " << j << " pattern " << h;
        }
    }
}

TEST(GradSourceTest, Fp32ZeroOnLoadIsZeroNonfinite) {
  const std::vector<uint32_t> named = {
      0x00000000u, 0x80000000u,               // +-0
      0x7f800000u, 0xff800000u,               // +-Inf
      0x7fc00000u, 0xffc00000u,               // quiet NaN, negative
      0x7f800001u, 0xff812345u, 0x7fffffffu,  // signaling NaN, payloads
      0x00000001u, 0x807fffffu, 0x007fffffu,  // subnormals (smallest, largest, negative)
      0x00800000u, 0x7f7fffffu, 0xff7fffffu,  // smallest normal, +-FLT_MAX
      0x3f800000u, 0xbf800000u};
  std::vector<float> x;
  for (uint32_t b : named) x.push_back(bits_float(b));
  EXPECT_EQ(src_bytes(kSrcF32), 4u);
  EXPECT_EQ(src_bytes(kSrcF32 | kSrcZero), 4u);
  for (size_t i = 0; i < named.size(); ++i) {
    const auto I = static_cast<int64_t>(i);
    const uint32_t b = named[i];
    const bool finite = (b & 0x7f800000u) != 0x7f800000u;
    EXPECT_EQ(float_bits(load_src(x.data(), kSrcF32 | kSrcZero, I)), finite ? b : 0u) << std::hex << b;
    EXPECT_EQ(float_bits(load_src(x.data(), kSrcF32 | kSrcZero, I)), float_bits(zero_nonfinite_f(x[i])))
        << std::hex << b;
    EXPECT_EQ(float_bits(load_src(x.data(), kSrcF32, I)), b) << std::hex << b;  // plain: every bit kept
  }
  // A sweep of the fp32 patterns (every 65521st, both signs and every exponent).
  for (uint64_t u = 0; u < (uint64_t{1} << 32); u += 65521) {
    const auto b = static_cast<uint32_t>(u);
    ASSERT_EQ(float_bits(src_value(b, kSrcF32 | kSrcZero)), widened_then_zeroed(b, kSrcF32 | kSrcZero))
        << std::hex << b;
    ASSERT_EQ(float_bits(src_value(b, kSrcF32)), b) << std::hex << b;
  }
}
