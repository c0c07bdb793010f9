// SPDX-License-Identifier: Apache-2.0
// The payload validity rules of gcomp/detail/payload_rules.hpp (used by the CPU codecs' validate,
// the CPU decoders and the CUDA kernels): each rule on its edge values, the 32-lane bit-sliced
// plane test and the SIMD natural test against the element rule they stand for, and each codec's
// validate rejecting exactly what a rule rejects.
#include "common/test_util.hpp"

#include "host/codecs/kernels.hpp"

#include <gcomp/codec.hpp>
#include <gcomp/detail/codec_math.hpp>
#include <gcomp/detail/payload_rules.hpp>

#include <cmath>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <vector>

using namespace gcomp;
namespace kernels = gcomp::detail::kernels;
using gcomp::detail::bits_float;

namespace {

class PayloadRulesTest : public testing::Test {
 protected:
  void TearDown() override { kernels::force_target(0); }
};

TEST_F(PayloadRulesTest, ScalesAndValues) {
  using gcomp::detail::scale_ok;
  using gcomp::detail::value_ok;
  const float inf = std::numeric_limits<float>::infinity();
  for (float ok : {0.0f, 1.0f, 1e-45f, 3.4e38f}) EXPECT_TRUE(scale_ok(ok)) << ok;
  for (float bad : {-0.0f, -1.0f, -1e-45f, inf, -inf, std::nanf("")}) EXPECT_FALSE(scale_ok(bad)) << bad;
  EXPECT_FALSE(scale_ok(bits_float(0x7fc00001u)));  // a NaN with a payload
  for (float ok : {0.0f, -0.0f, -3.4e38f, 1e-45f}) EXPECT_TRUE(value_ok(ok)) << ok;
  for (float bad : {inf, -inf, std::nanf(""), bits_float(0xffc00000u)}) EXPECT_FALSE(value_ok(bad)) << bad;
}

TEST_F(PayloadRulesTest, ElementRules) {
  using namespace gcomp::detail;
  EXPECT_TRUE(plane_element_ok(0, false, 1));
  EXPECT_FALSE(plane_element_ok(0, true, 1));
  EXPECT_TRUE(plane_element_ok(3, true, 3));
  EXPECT_FALSE(plane_element_ok(4, false, 3));
  EXPECT_TRUE(natural_code_ok(0, false));
  EXPECT_FALSE(natural_code_ok(0, true));
  EXPECT_TRUE(natural_code_ok(254, true));
  EXPECT_FALSE(natural_code_ok(255, false));
  EXPECT_FALSE(natural_code_ok(255, true));
  for (uint32_t bits : {2u, 8u, 16u, 31u, 32u}) {
    const uint64_t most_negative = uint64_t{1} << (bits - 1);
    EXPECT_FALSE(grid_field_ok(most_negative, bits)) << bits;
    EXPECT_TRUE(grid_field_ok(most_negative - 1, bits)) << bits;  // the largest level
    EXPECT_TRUE(grid_field_ok(most_negative + 1, bits)) << bits;  // the most negative level sent
    EXPECT_TRUE(grid_field_ok(0, bits)) << bits;
  }
  EXPECT_TRUE(sparse_index_ok(0, -1, 1));
  EXPECT_FALSE(sparse_index_ok(1, -1, 1));  // index n
  EXPECT_FALSE(sparse_index_ok(5, 5, 10));  // repeated
  EXPECT_FALSE(sparse_index_ok(4, 5, 10));  // decreasing
  EXPECT_TRUE(sdither_record_ok(1, 1, 0.5f));
  EXPECT_TRUE(sdither_record_ok(4, 4, 0.5f));
  EXPECT_FALSE(sdither_record_ok(5, 4, 0.5f));
  EXPECT_FALSE(sdither_record_ok(0, 4, 0.5f));
  EXPECT_FALSE(sdither_record_ok(1, 4, 0.0f));  // a record in an all-zero block
  EXPECT_TRUE(padding_clear(0xffffffffu, 64));
  EXPECT_TRUE(padding_clear(0x7u, 35));
  EXPECT_FALSE(padding_clear(0x8u, 35));
  EXPECT_FALSE(padding_clear(0x80000000u, 31));
}

// The bit-sliced 32-lane form finds exactly the lanes the element rule rejects, for every plane
// count up to 8 and every s it can hold (level_check off only where every level is <= s).
TEST_F(PayloadRulesTest, PlaneGroupMatchesTheElementRule) {
  using namespace gcomp::detail;
  std::mt19937 rng(7);
  for (int nbits = 1; nbits <= 8; ++nbits) {
    for (uint32_t s = 1; s < (1u << nbits); ++s) {
      if (s < (1u << (nbits - 1))) continue;  // nbits is the width of s: fewer bits would do
      const bool level_check = (uint64_t{1} << nbits) != uint64_t{s} + 1;
      for (int trial = 0; trial < 40; ++trial) {
        uint32_t planes[8] = {};
        const auto sign = static_cast<uint32_t>(rng());
        for (int k = 0; k < nbits; ++k) planes[k] = static_cast<uint32_t>(trial % 4 == 0 ? rng() & rng() : rng());
        uint32_t expect = 0;
        for (int lane = 0; lane < 32; ++lane) {
          uint32_t level = 0;
          for (int k = 0; k < nbits; ++k) level |= ((planes[k] >> lane) & 1u) << k;
          if (!plane_element_ok(level, ((sign >> lane) & 1u) != 0u, s)) expect |= 1u << lane;
        }
        ASSERT_EQ(plane_group_bad_lanes(sign, planes, nbits, s, level_check), expect)
            << "nbits " << nbits << " s " << s << " trial " << trial;
      }
    }
  }
}

// kernels::natural_invalid (Highway SIMD on every target this CPU runs, and the scalar form)
// against natural_code_ok: each of the 256 codes, with and without a sign, in every lane.
TEST_F(PayloadRulesTest, NaturalSimdMatchesTheElementRule) {
  using gcomp::detail::natural_code_ok;
  for (const auto& [target, name] : kernels::available_targets()) {
    kernels::force_target(target);
    for (int lane = 0; lane < 32; lane += 7) {
      for (uint32_t code = 0; code < 256; ++code) {
        for (bool negative : {false, true}) {
          std::vector<uint8_t> codes(64, 1);  // two groups of valid codes, lane of group 1 set
          uint32_t signs[2] = {0xffffffffu, 0u};
          codes[32 + lane] = static_cast<uint8_t>(code);
          if (negative) signs[1] |= 1u << lane;
          ASSERT_EQ(kernels::natural_invalid(codes.data(), signs, 2), !natural_code_ok(code, negative))
              << name << " lane " << lane << " code " << code << " negative " << negative;
        }
      }
    }
  }
}

// A payload breaking one rule in one element is CORRUPT_PAYLOAD, whatever the position.
TEST_F(PayloadRulesTest, ValidateRejectsWhatTheRulesReject) {
  const int64_t n = 1000;
  std::vector<float> x(n);
  std::mt19937 rng(3);
  std::normal_distribution<float> g;
  for (auto& v : x) v = g(rng);
  const RngKey key{1, 0, 0, 0};
  const auto encoded = [&](const Codec& c) {
    std::vector<uint8_t> p(c.encoded_bytes());
    c.encode(x, key, p);
    EXPECT_NO_THROW(c.validate(p));
    return p;
  };
  const auto corrupt = [](const Codec& c, const std::vector<uint8_t>& p, const std::string& what) {
    try {
      c.validate(p);
      ADD_FAILURE() << what << ": accepted";
    } catch (const Error& e) {
      EXPECT_EQ(e.status(), gcompErrorCorruptPayload) << what << ": " << e.what();
    }
  };
  {  // natural: code 255 at element 700 (codes follow the ceil(n/32) sign words)
    const auto c = make_codec(CodecSpec::parse("natural"), Layout(n));
    auto p = encoded(*c);
    p[4 * 32 + 700] = 255;
    corrupt(*c, p, "natural code 255");
  }
  {  // grid: the most negative 16-bit field at element 999
    const auto c = make_codec(CodecSpec::parse("grid:bits=16"), Layout(n));
    auto p = encoded(*c);
    p[2 * 999] = 0x00;
    p[2 * 999 + 1] = 0x80;
    corrupt(*c, p, "grid most negative field");
  }
  {  // top-k: the last index repeated (k = 10, 10-bit indices after the 10 values)
    const auto c = make_codec(CodecSpec::parse("topk:k=10"), Layout(n));
    auto p = encoded(*c);
    uint64_t stream = 0;
    std::memcpy(&stream, p.data() + 40 + 8 * 10 / 8, 4);  // bits 80..111: indices 8 and 9 start at 80, 90
    const uint64_t idx8 = stream & 0x3ffu;
    stream = (stream & ~(uint64_t{0x3ff} << 10)) | (idx8 << 10);
    std::memcpy(p.data() + 40 + 10, &stream, 4);
    corrupt(*c, p, "top-k repeated index");
  }
  {  // dither: a negative scale in block 1
    const auto c = make_codec(CodecSpec::parse("dither:levels=4,block=256"), Layout(n));
    auto p = encoded(*c);
    const float neg = -1.0f;
    std::memcpy(p.data() + 4, &neg, 4);
    corrupt(*c, p, "dither negative scale");
  }
}

}  // namespace
