// SPDX-License-Identifier: Apache-2.0
// bfloat16 / fp16 gradient widening: exact for every one of the 65536 bit patterns.
#include <gcomp/detail/half.hpp>

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>

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
