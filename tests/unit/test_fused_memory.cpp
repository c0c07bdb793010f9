// SPDX-License-Identifier: Apache-2.0
// The fused memory update (gcomp/detail/fused_memory.hpp) against its definition, and the CPU
// codecs' encode_ef / encode_diana against it, bit for bit, for every codec of the registry (the
// CUDA kernels call the same function; the GPU suites compare them with the CPU byte for byte).
#include <gcomp/detail/fused_memory.hpp>

#include "host/codecs/pieces.hpp"
#include "host/codecs/registry.hpp"

#include <gcomp/codec.hpp>
#include <gcomp/threads.hpp>

#include <gtest/gtest.h>

#include <atomic>
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

// encode_ef_from (the input produced by a source: the scaled sign encodes from it tile by tile,
// the other codecs store it in e first) gives encode_ef's payload and e of the stored input bit
// for bit, for every codec of the registry: on small two-segment layouts and on one of several
// pool pieces (ragged last piece), with plain and with streaming stores, on 1 and 3 threads. A
// non-finite input throws gcompErrorNonFinite and leaves the payload untouched.
TEST(FusedMemoryTest, EncodeEfFromASourceEqualsEncodeEfOfTheStoredInput) {
  const int threads_before = gcomp::cpu_threads();
  // Sign takes every path: {300, 77} has a block off the 32-element grid (stored input); {4160,
  // 100} a block of two tiles (sign: encoded from the source, then the e pass) and with block=4096
  // blocks within one tile, the last one ragged (payload and e in one pass).
  const gcomp::Layout layouts[] = {gcomp::Layout(std::vector<int64_t>{300, 77}),
                                   gcomp::Layout(std::vector<int64_t>{4160, 100}),
                                   gcomp::Layout(3 * (int64_t{1} << 17) + 77)};
  const gcomp::RngKey key{7, 1, 4, 0};
  for (const gcomp::Layout& layout : layouts) {
    const auto n = static_cast<size_t>(layout.num_elems());
    std::vector<float> x(n), y(n), p(n);
    for (size_t i = 0; i < n; ++i) {
      x[i] = std::sin(0.37f * static_cast<float>(i)) * 3.0f;
      y[i] = std::cos(0.011f * static_cast<float>(i)) * 0.5f;
      p[i] = x[i] + y[i];
    }
    const size_t bad = n / 2 + 5;
    for (const int threads : {1, 3}) {
      for (const int64_t stream_from : {int64_t{-1}, int64_t{0}}) {
        gcomp::set_cpu_threads(threads);
        gcomp::detail::set_stream_min_bytes(stream_from);
        for (const gcomp::detail::CodecDescriptor& d : gcomp::detail::codec_registry()) {
          for (const char* options : {"", ":block=4096"}) {
            const std::string spec = std::string(d.name) + (std::string(d.name) == "sign" ? options : "");
            if (std::string(d.name) != "sign" && *options != '\0') continue;
            const auto codec = gcomp::make_codec(gcomp::CodecSpec::parse(spec), layout);
            const std::string where = spec + ", n " + std::to_string(n) + ", " + std::to_string(threads) +
                                      " threads, stream from " + std::to_string(stream_from);
            std::vector<uint8_t> want(codec->encoded_bytes()), got(want.size(), 0xab);
            std::vector<float> e_want(n), e_got(n, -1.0f);
            codec->encode_ef(p, key, want, e_want);
            std::atomic<int> calls{0};
            const gcomp::Codec::Source source = [&](int64_t a, int64_t b, float* dst) {
              ++calls;
              for (int64_t i = a; i < b; ++i) dst[i - a] = x[i] + y[i];
            };
            codec->encode_ef_from(source, key, got, e_got);
            EXPECT_GT(calls, 0) << where;
            ASSERT_EQ(std::memcmp(got.data(), want.data(), want.size()), 0) << where;
            for (size_t i = 0; i < n; ++i) ASSERT_EQ(bits_of(e_got[i]), bits_of(e_want[i])) << where << " " << i;

            std::vector<uint8_t> untouched(want.size(), 0x5c), kept = untouched;
            const gcomp::Codec::Source nan_at_bad = [&](int64_t a, int64_t b, float* dst) {
              for (int64_t i = a; i < b; ++i) dst[i - a] = static_cast<size_t>(i) == bad ? std::nanf("") : x[i] + y[i];
            };
            try {
              codec->encode_ef_from(nan_at_bad, key, kept, e_got);
              ADD_FAILURE() << where << ": a NaN input was encoded";
            } catch (const gcomp::Error& err) {
              EXPECT_EQ(err.status(), gcompErrorNonFinite) << where;
            }
            EXPECT_EQ(kept, untouched) << where << ": the payload changed";
          }
        }
      }
    }
  }
  gcomp::set_cpu_threads(threads_before);
  gcomp::detail::set_stream_min_bytes(-1);
}

}  // namespace
