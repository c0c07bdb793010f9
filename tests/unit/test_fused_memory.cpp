// SPDX-License-Identifier: Apache-2.0
// The fused memory update (gcomp/detail/fused_memory.hpp) against its definition, and the CPU
// codecs' encode_ef / encode_diana against it, bit for bit, for every codec of the registry (the
// CUDA kernels call the same function; the GPU suites compare them with the CPU byte for byte).
#include <gcomp/detail/fused_memory.hpp>

#include "host/codecs/registry.hpp"

#include <gcomp/codec.hpp>

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <vector>

namespace {

using gcomp::detail::fused_memory;
using gcomp::detail::FuseMode;

uint32_t bits_of(float v) {
  uint32_t u;
  std::memcpy(&u, &v, 4);
  return u;
}

TEST(FusedMemoryTest, MatchesTheDefinitions) {
  const float values[] = {0.0f, -0.0f, 1.5f, -3.25f, 1e-30f, 3e38f, 0.1f};
  for (float x : values) {
    for (float v : values) {
      for (float alpha : {0.5f, 0.125f, 1.0f}) {
        // EF: e = p - C(p) exactly (the weight -1 makes the product exact); alpha plays no part.
        EXPECT_EQ(bits_of(fused_memory(FuseMode::kEF, x, alpha, v)), bits_of(x - v)) << x << " " << v;
        // DIANA: h + alpha v, the product rounded first (no contraction).
        const float prod = alpha * v;
        EXPECT_EQ(bits_of(fused_memory(FuseMode::kDiana, x, alpha, v)), bits_of(x + prod)) << x << " " << v;
      }
    }
  }
}

TEST(FusedMemoryTest, CpuCodecsUpdateTheMemoryByIt) {
  const gcomp::Layout layout(std::vector<int64_t>{300, 77});
  const auto n = static_cast<size_t>(layout.num_elems());
  std::vector<float> p(n), h0(n);
  for (size_t i = 0; i < n; ++i) {
    p[i] = std::sin(0.37f * static_cast<float>(i)) * 3.0f;
    h0[i] = std::cos(0.11f * static_cast<float>(i));
  }
  const gcomp::RngKey key{7, 1, 4, 0};
  const float alpha = 0.375f;
  for (const gcomp::detail::CodecDescriptor& d : gcomp::detail::codec_registry()) {
    const auto codec = gcomp::make_codec(gcomp::CodecSpec::parse(d.name), layout);
    std::vector<uint8_t> payload(codec->encoded_bytes());
    std::vector<float> e(n), decoded(n);
    codec->encode_ef(p, key, payload, e);
    codec->decode(payload, key, decoded);
    for (size_t i = 0; i < n; ++i) {
      ASSERT_EQ(bits_of(e[i]), bits_of(fused_memory(FuseMode::kEF, p[i], alpha, decoded[i]))) << d.name << " " << i;
    }
    std::vector<float> h = h0, delta(n);
    codec->encode_diana(p, h, alpha, key, payload, delta);
    codec->decode(payload, key, decoded);
    for (size_t i = 0; i < n; ++i) {
      ASSERT_EQ(bits_of(h[i]), bits_of(fused_memory(FuseMode::kDiana, h0[i], alpha, decoded[i]))) << d.name << " " << i;
    }
  }
}

}  // namespace
