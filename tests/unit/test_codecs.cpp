// SPDX-License-Identifier: Apache-2.0
// Per-codec behaviour over edge sizes and layouts: sizes, determinism, decoded values against an
// independent model of each operator, accumulate/EF/DIANA identities, bad input.
#include "common/test_util.hpp"
#include "host/codecs/pieces.hpp"
#include "host/codecs/registry.hpp"

#include <gcomp/detail/hd.hpp>
#include <gcomp/detail/philox.hpp>
#include <gcomp/detail/sparse.hpp>
#include <gcomp/detail/spherical.hpp>
#include <gcomp/detail/varlen.hpp>
#include <gcomp/threads.hpp>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <functional>
#include <memory>
#include <string>
#include <limits>
#include <map>
#include <numeric>
#include <tuple>

using namespace gcomp;
using gcomp::test::bitwise_equal;
using gcomp::test::bytes_equal;

namespace {

const char* const kSpecs[] = {
    "identity",
    "dither",
    "dither:levels=4,norm=l2,block=16",
    "dither:levels=1,norm=linf,block=33",
    "dither:levels=3,norm=lp,p=3,block=31",
    "dither:levels=2,norm=l1",
    "terngrad",
    "terngrad:clip=2.5",
    "sign",
    "sign:block=32",
    "sign:block=7,scale=none",
    "topk:ratio=0.1",
    "topk:k=5",
    "topk:ratio=0.1,index=rice",
    "topk:k=5,index=rice",
    "randk:ratio=0.25",
    "randk:k=3,unbiased=0",
    "natural",
    "natdither:levels=3,norm=l2,block=32",
    "natdither:levels=5,norm=linf",
    "sdither",
    "sdither:levels=4,norm=linf,block=16,code=delta,chunk=32",
    "sdither:levels=3,norm=l2,block=33,chunk=7",
    "spherical:block=8,bits=4",
    "spherical:block=5,bits=3,unscaled=1",
    "grid:step=0.25,bits=4",
    "grid:step=0.001",
};

std::vector<std::vector<int64_t>> layouts() {
  return {{0}, {1}, {31}, {32}, {33}, {15}, {16}, {17}, {4095}, {4097}, {10000}, {5, 0, 40, 1, 33}, {64, 64, 7}};
}

std::string name_of(const std::vector<int64_t>& segs) {
  std::string s;
  for (auto v : segs) s += (s.empty() ? "" : "_") + std::to_string(v);
  return s;
}

/// Input with zeros, ties and a wide dynamic range, finite.
std::vector<float> make_input(int64_t n, uint64_t seed) {
  std::vector<float> x = gcomp::test::gaussian(n, seed);
  for (int64_t i = 0; i < n; ++i) {
    if (i % 11 == 3) x[i] = 0.0f;
    if (i % 13 == 5) x[i] = 0.75f;  // ties in magnitude
    if (i % 17 == 7) x[i] = -0.75f;
    if (i % 29 == 1) x[i] *= 1e-30f;
  }
  return x;
}

class CodecTest : public testing::TestWithParam<std::tuple<const char*, std::vector<int64_t>>> {
 protected:
  void SetUp() override {
    spec_ = CodecSpec::parse(std::get<0>(GetParam()));
    layout_ = Layout(std::get<1>(GetParam()));
    codec_ = make_codec(spec_, layout_);
    x_ = make_input(layout_.num_elems(), 42);
  }
  CodecSpec spec_;
  Layout layout_;
  std::unique_ptr<Codec> codec_;
  std::vector<float> x_;
  RngKey key_{0x1234567890abcdefull, 2, 9, 0};
};

TEST_P(CodecTest, DeterministicForOneKey) {
  const auto a = test::encode(*codec_, x_, key_);
  const auto b = test::encode(*codec_, x_, key_);
  EXPECT_TRUE(bytes_equal(a, b));
  EXPECT_EQ(a.size(), codec_->encoded_bytes());
  EXPECT_GE(8.0 * static_cast<double>(a.size()), codec_->encoded_bits());
  EXPECT_LT(8.0 * static_cast<double>(a.size()) - codec_->encoded_bits(), 32.0 * 33 + 64);
}

TEST_P(CodecTest, RankChangesRandomBits) {
  if (!codec_->randomized() || layout_.num_elems() < 64) GTEST_SKIP() << "deterministic codec or too few elements";
  RngKey other = key_;
  other.rank = 3;
  EXPECT_NE(test::encode(*codec_, x_, key_), test::encode(*codec_, x_, other));
  other = key_;
  other.step = 10;
  EXPECT_NE(test::encode(*codec_, x_, key_), test::encode(*codec_, x_, other));
}

TEST_P(CodecTest, DecodedValuesFollowTheOperator) {
  const auto p = test::encode(*codec_, x_, key_);
  const auto y = test::decode(*codec_, p, key_);
  const int64_t n = layout_.num_elems();
  // The payload's blocks: quantization blocks of the dither family and sign, codebook blocks of
  // spherical (terngrad: one per segment).
  int64_t block = 0;
  if (const auto* o = spec_.options_if<DitherOptions>()) block = o->block;
  if (const auto* o = spec_.options_if<SDitherOptions>()) block = o->block;
  if (const auto* o = spec_.options_if<SignOptions>()) block = o->block;
  if (const auto* o = spec_.options_if<SphericalOptions>()) block = o->dim;
  const auto blocks = block_offsets(layout_, block);
  switch (spec_.id()) {
    case CodecId::kIdentity: EXPECT_TRUE(bitwise_equal(x_, y)); break;
    case CodecId::kDither:
    case CodecId::kTernGrad:
    case CodecId::kNatDither:
    case CodecId::kSDither: {
      const DitherOptions q = detail::dither_quantizer(spec_);
      const double clip = spec_.id() == CodecId::kTernGrad ? spec_.options<TernGradOptions>().clip : 0.0;
      for (size_t b = 0; b + 1 < blocks.size(); ++b) {
        // Independent norm in plain double arithmetic; the codec's fixed-order norm must agree.
        double l1 = 0, l2 = 0, li = 0, lp = 0;
        for (int64_t i = blocks[b]; i < blocks[b + 1]; ++i) {
          const double a = std::fabs(static_cast<double>(x_[i]));
          l1 += a;
          l2 += a * a;
          li = std::max(li, a);
          lp += std::pow(a, q.p);
        }
        double nu = q.norm == Norm::kL1     ? l1
                    : q.norm == Norm::kL2   ? std::sqrt(l2)
                    : q.norm == Norm::kLinf ? li
                                            : std::pow(lp, 1.0 / q.p);
        if (spec_.id() == CodecId::kTernGrad) nu = li;
        float scale;
        std::memcpy(&scale, p.data() + 4 * b, 4);
        if (spec_.id() == CodecId::kTernGrad && clip > 0) {
          EXPECT_LE(scale, static_cast<float>(li));
          nu = scale;
        } else {
          EXPECT_NEAR(scale, nu, 1e-6 * nu + 1e-37) << "block " << b;
        }
        for (int64_t i = blocks[b]; i < blocks[b + 1]; ++i) {
          if (x_[i] == 0.0f || scale == 0.0f) {
            EXPECT_EQ(y[i], 0.0f) << i;
            continue;
          }
          if (y[i] != 0.0f) {
            EXPECT_EQ(std::signbit(y[i]), std::signbit(x_[i])) << i;
          }
          const double r = std::fabs(static_cast<double>(x_[i])) / scale;  // in units of the scale
          const double v = std::fabs(static_cast<double>(y[i])) / scale;
          if (spec_.id() == CodecId::kNatDither) {
            // v is 0 or a power of two 2^(j-s), adjacent to r.
            const double lo_level = std::ldexp(1.0, 1 - static_cast<int>(q.levels));
            if (r >= lo_level) {
              const double lo = std::ldexp(1.0, static_cast<int>(std::floor(std::log2(r))));
              EXPECT_TRUE(std::fabs(v - lo) <= 1e-6 * lo || std::fabs(v - 2 * lo) <= 2e-6 * lo) << i;
            } else {
              EXPECT_TRUE(v == 0.0 || std::fabs(v - lo_level) <= 1e-6 * lo_level) << i;
            }
          } else {
            const double s = q.levels;
            const double level = v * s;
            EXPECT_NEAR(level, std::round(level), 1e-4) << i;
            const double rs = std::min(r * s, s);
            EXPECT_TRUE(std::round(level) == std::floor(rs) || std::round(level) == std::ceil(rs) ||
                        std::fabs(rs - std::round(level)) < 1e-5)
                << i << ": level " << level << " for r*s " << rs;
          }
        }
      }
      break;
    }
    case CodecId::kSign: {
      for (size_t b = 0; b + 1 < blocks.size(); ++b) {
        double l1 = 0;
        for (int64_t i = blocks[b]; i < blocks[b + 1]; ++i) l1 += std::fabs(static_cast<double>(x_[i]));
        const double scale =
            spec_.options<SignOptions>().scaled ? l1 / static_cast<double>(blocks[b + 1] - blocks[b]) : 1.0;
        for (int64_t i = blocks[b]; i < blocks[b + 1]; ++i) {
          EXPECT_NEAR(std::fabs(y[i]), scale, 1e-6 * scale) << i;
          EXPECT_EQ(y[i] < 0, x_[i] < 0) << i;
        }
      }
      break;
    }
    case CodecId::kTopK: {
      const int64_t k = static_cast<int64_t>(std::count_if(y.begin(), y.end(), [](float v) { return v != 0.0f; }));
      EXPECT_LE(k, codec_->encoded_bits() > 0 ? n : 0);
      // Every kept element is >= every dropped element in |x|; kept values are exact; ties kept by lower index.
      std::vector<int64_t> order(static_cast<size_t>(n));
      std::iota(order.begin(), order.end(), 0);
      std::stable_sort(order.begin(), order.end(),
                       [&](int64_t a, int64_t b) { return std::fabs(x_[a]) > std::fabs(x_[b]); });
      const int64_t want_k = detail::sparse_k_of(spec_, n);
      for (int64_t j = 0; j < n; ++j) {
        const int64_t i = order[j];
        if (j < want_k)
          EXPECT_EQ(y[i], x_[i]) << "rank " << j << " index " << i;
        else
          EXPECT_EQ(y[i], 0.0f) << "rank " << j << " index " << i;
      }
      break;
    }
    case CodecId::kRandK: {
      const int64_t want_k = detail::sparse_k_of(spec_, n);
      const float sc = spec_.options<RandKOptions>().unbiased ? detail::randk_scale(n, want_k) : 1.0f;
      int64_t kept = 0;
      for (int64_t i = 0; i < n; ++i) {
        if (y[i] != 0.0f) {
          ++kept;
          EXPECT_EQ(y[i], x_[i] * sc) << i;
        }
      }
      EXPECT_LE(kept, want_k);
      break;
    }
    case CodecId::kSpherical: {
      // Each block decodes to a multiple of a unit vector: |y_l| = nu / beta (unscaled: nu), with
      // nu the l2 norm on the wire (checked against an independent double norm).
      std::map<int64_t, double> betas;
      for (size_t b = 0; b + 1 < blocks.size(); ++b) {
        double l2 = 0, yy = 0;
        for (int64_t i = blocks[b]; i < blocks[b + 1]; ++i) {
          l2 += static_cast<double>(x_[i]) * x_[i];
          yy += static_cast<double>(y[i]) * y[i];
        }
        float nu;
        std::memcpy(&nu, p.data() + 4 * b, 4);
        EXPECT_NEAR(nu, std::sqrt(l2), 1e-6 * std::sqrt(l2) + 1e-37) << "block " << b;
        if (nu == 0.0f) {
          EXPECT_EQ(yy, 0.0) << "block " << b;
          continue;
        }
        const int64_t len = blocks[b + 1] - blocks[b];
        if (!betas.count(len)) betas[len] = detail::spherical_beta(len, spec_.options<SphericalOptions>().index_bits);
        const double beta = betas[len];
        const double want = spec_.options<SphericalOptions>().unscaled ? nu : nu / beta;
        EXPECT_NEAR(std::sqrt(yy), want, 1e-6 * want) << "block " << b;
      }
      break;
    }
    case CodecId::kGrid: {
      // Nearest grid point step * rint(x / step), saturated at +-(2^(bits-1) - 1) steps.
      const GridOptions& g = spec_.options<GridOptions>();
      const double lim = static_cast<double>((int64_t{1} << (g.level_bits - 1)) - 1) * g.quantum;
      for (int64_t i = 0; i < n; ++i) {
        const double x = x_[i];
        const double want = std::max(-lim, std::min(lim, g.quantum * std::nearbyint(x / g.quantum)));
        EXPECT_NEAR(y[i], want, 1e-6 * std::fabs(want)) << i << ": " << x_[i];
        if (std::fabs(x) <= lim) {
          EXPECT_LE(std::fabs(y[i] - x), g.quantum / 2 * (1 + 1e-6)) << i;
        }
      }
      break;
    }
    case CodecId::kNatural:
      for (int64_t i = 0; i < n; ++i) {
        if (x_[i] == 0.0f) {
          EXPECT_EQ(y[i], 0.0f);
          continue;
        }
        const double a = std::fabs(static_cast<double>(x_[i]));
        const double lo = std::ldexp(1.0, static_cast<int>(std::floor(std::log2(a))));
        const double v = std::fabs(static_cast<double>(y[i]));
        EXPECT_TRUE(v == lo || v == 2 * lo) << i << ": " << x_[i] << " -> " << y[i];
        EXPECT_EQ(std::signbit(y[i]), std::signbit(x_[i]));
      }
      break;
  }
}

TEST_P(CodecTest, DecodeAccumulateIsOutPlusWeightTimesDecode) {
  const auto p = test::encode(*codec_, x_, key_);
  const auto y = test::decode(*codec_, p, key_);
  std::vector<float> out = make_input(layout_.num_elems(), 7);
  std::vector<float> expect = out;
  for (size_t i = 0; i < out.size(); ++i) expect[i] = expect[i] + 0.3f * y[i];
  codec_->decode_accumulate(p, key_, 0.3f, out);
  EXPECT_TRUE(bitwise_equal(out, expect));
}

TEST_P(CodecTest, ErrorFeedbackAndDianaPasses) {
  // EF: e = p - decode(C(p)), also in place.
  std::vector<uint8_t> payload(codec_->encoded_bytes());
  std::vector<float> e(x_.size());
  codec_->encode_ef(x_, key_, payload, e);
  const auto y = test::decode(*codec_, payload, key_);
  std::vector<float> expect(x_.size());
  for (size_t i = 0; i < x_.size(); ++i) expect[i] = x_[i] - y[i];
  EXPECT_TRUE(bitwise_equal(e, expect));
  std::vector<float> inplace = x_;
  codec_->encode_ef(inplace, key_, payload, inplace);
  EXPECT_TRUE(bitwise_equal(inplace, expect));
  // DIANA: delta = g - h, h += alpha * decode(Q(delta)).
  std::vector<float> h = make_input(layout_.num_elems(), 5);
  std::vector<float> h0 = h, delta(x_.size()), d2(x_.size());
  codec_->encode_diana(x_, h, 0.25f, key_, payload, delta);
  for (size_t i = 0; i < x_.size(); ++i) d2[i] = x_[i] - h0[i];
  const auto q = test::decode(*codec_, test::encode(*codec_, d2, key_), key_);
  for (size_t i = 0; i < x_.size(); ++i) h0[i] = h0[i] + 0.25f * q[i];
  EXPECT_TRUE(bitwise_equal(h, h0));
}

TEST_P(CodecTest, NonFiniteInputIsRejectedAndPayloadUntouched) {
  if (layout_.num_elems() == 0) GTEST_SKIP() << "no element to poison";
  for (float bad : {std::numeric_limits<float>::quiet_NaN(), std::numeric_limits<float>::infinity(),
                    -std::numeric_limits<float>::infinity()}) {
    std::vector<float> x = x_;
    x[x.size() / 2] = bad;
    std::vector<uint8_t> payload(codec_->encoded_bytes(), 0xA5);
    try {
      codec_->encode(x, key_, payload);
      ADD_FAILURE() << "accepted " << bad;
    } catch (const Error& err) {
      EXPECT_EQ(err.status(), gcompErrorNonFinite) << err.what();
      EXPECT_NE(std::string(err.what()).find("non-finite"), std::string::npos);
    }
    EXPECT_TRUE(std::all_of(payload.begin(), payload.end(), [](uint8_t v) { return v == 0xA5; }));
  }
}

TEST_P(CodecTest, MalformedPayloadsAreRejectedAndOutputUntouched) {
  auto p = test::encode(*codec_, x_, key_);
  std::vector<float> out(x_.size(), 3.0f);
  auto expect_reject = [&](const std::vector<uint8_t>& bad, const char* what) {
    try {
      codec_->decode(bad, key_, out);
      ADD_FAILURE() << what << " accepted";
    } catch (const Error& err) {
      EXPECT_EQ(err.status(), gcompErrorCorruptPayload) << what;
    }
    EXPECT_TRUE(std::all_of(out.begin(), out.end(), [](float v) { return v == 3.0f; })) << what;
  };
  auto trunc = p;
  if (!trunc.empty()) {
    trunc.pop_back();
    expect_reject(trunc, "truncated");
  }
  auto longer = p;
  longer.push_back(0);
  expect_reject(longer, "trailing byte");
  if (codec_->num_scales() > 0) {
    auto neg = p;
    const float minus = -1.0f;
    std::memcpy(neg.data(), &minus, 4);
    expect_reject(neg, "negative scale");
    const float nan = std::numeric_limits<float>::quiet_NaN();
    std::memcpy(neg.data(), &nan, 4);
    expect_reject(neg, "NaN scale");
  }
}

namespace {

/// The device's view of the size rule (include/gcomp/detail/varlen.hpp), built from the public
/// codec API as DeviceCodec builds it.
detail::VarlenLayout varlen_of(const Codec& c) {
  detail::VarlenLayout v;
  v.full_bytes = c.encoded_bytes();
  if (!c.variable_length()) return v;
  v.variable = true;
  v.length_offset = c.length_prefix_bytes() - 4;
  v.stream_offset = c.used_bytes_for_length(0);
  v.worst_bits = static_cast<uint64_t>(c.encoded_bits()) - 8 * v.stream_offset;
  return v;
}

/// Whether the CPU codec accepts a payload (its size rule and its content).
bool cpu_size_ok(const Codec& c, const std::vector<uint8_t>& p) {
  try {
    c.validate(p);
    return true;
  } catch (const Error&) {
    return false;
  }
}

}  // namespace

TEST_P(CodecTest, ShortPayloadsCarryTheMessageAndLyingLengthsAreRejected) {
  // docs/wire-format.md §6: a variable-length payload travels as its first used_bytes() bytes;
  // a fixed-size one only whole.
  const auto p = test::encode(*codec_, x_, key_);
  const size_t used = codec_->used_bytes(p);
  EXPECT_LE(used, p.size());
  EXPECT_GE(used, codec_->length_prefix_bytes() <= p.size() ? codec_->length_prefix_bytes() : p.size());
  std::vector<float> out(x_.size(), 3.0f);
  auto expect_reject = [&](const std::vector<uint8_t>& bad, const std::string& what) {
    try {
      codec_->decode(bad, key_, out);
      ADD_FAILURE() << what << " accepted";
    } catch (const Error& err) {
      EXPECT_EQ(err.status(), gcompErrorCorruptPayload) << what;
    }
    EXPECT_THROW(codec_->validate(bad), Error) << what;
    EXPECT_TRUE(std::all_of(out.begin(), out.end(), [](float v) { return v == 3.0f; })) << what;
  };
  if (!codec_->variable_length()) {
    EXPECT_EQ(used, p.size());
    EXPECT_EQ(codec_->length_prefix_bytes(), p.size());
    if (p.size() >= 4) expect_reject(std::vector<uint8_t>(p.begin(), p.end() - 4), "fixed-size payload cut by 4 bytes");
    return;
  }
  // Every byte after the used ones is padding.
  EXPECT_TRUE(std::all_of(p.begin() + static_cast<std::ptrdiff_t>(used), p.end(), [](uint8_t b) { return b == 0; }));
  const std::vector<uint8_t> shorter(p.begin(), p.begin() + static_cast<std::ptrdiff_t>(used));
  EXPECT_NO_THROW(codec_->validate(shorter));
  EXPECT_EQ(codec_->used_bytes(shorter), used);
  EXPECT_EQ(codec_->payload_bits(shorter), codec_->payload_bits(p));
  EXPECT_TRUE(bitwise_equal(test::decode(*codec_, shorter, key_), test::decode(*codec_, p, key_)));
  std::vector<float> acc(x_.size(), 0.5f), acc_full(x_.size(), 0.5f);
  codec_->decode_accumulate(shorter, key_, 0.25f, acc);
  codec_->decode_accumulate(p, key_, 0.25f, acc_full);
  EXPECT_TRUE(bitwise_equal(acc, acc_full));
  // Content that needs more bytes than present (cut), and bytes the content does not account for.
  if (used >= 4)
    expect_reject(std::vector<uint8_t>(shorter.begin(), shorter.end() - 4), "short payload cut by 4 bytes");
  if (used + 4 < p.size()) {
    auto padded = shorter;
    padded.insert(padded.end(), 4, uint8_t{0});
    expect_reject(padded, "short payload with 4 extra zero bytes");
  }
  expect_reject(std::vector<uint8_t>(shorter.begin(), shorter.begin() + static_cast<std::ptrdiff_t>(std::min(
                                                                            used, codec_->length_prefix_bytes() - 1))),
                "payload that ends before its length field");
  // Lying length fields: T one word more (the content claims bytes that are not there) or, when
  // possible, one word less (bytes the claimed content does not use).
  const size_t t_at = codec_->length_prefix_bytes() - 4;
  uint32_t t = 0;
  std::memcpy(&t, shorter.data() + t_at, 4);
  auto more = shorter;
  const uint32_t t_more = t + 32;
  std::memcpy(more.data() + t_at, &t_more, 4);
  expect_reject(more, "length field 32 bits above the message");
  if (t >= 32) {
    auto less = shorter;
    const uint32_t t_less = t - 32;
    std::memcpy(less.data() + t_at, &t_less, 4);
    expect_reject(less, "length field 32 bits below the message");
  }
  auto huge = shorter;
  const uint32_t t_huge = 0xffffffffu;
  std::memcpy(huge.data() + t_at, &t_huge, 4);
  expect_reject(huge, "length field above the worst case");
  EXPECT_THROW((void)codec_->used_bytes(huge), Error);
  EXPECT_THROW((void)codec_->used_bytes_for_length(t_huge), Error);
  EXPECT_EQ(codec_->used_bytes_for_length(t), used);
  // The device's size check (varlen_size_ok) agrees with the codec on every size around the
  // message, for the true length field and for lying ones.
  const detail::VarlenLayout v = varlen_of(*codec_);
  EXPECT_EQ(detail::varlen_used_bytes(v, v.worst_bits), p.size());
  for (const uint32_t t_try : {t, t + 1, t + 32, t >= 32 ? t - 32 : 0u, t_huge, static_cast<uint32_t>(v.worst_bits)}) {
    auto q = p;  // full payload with this length field
    std::memcpy(q.data() + t_at, &t_try, 4);
    for (size_t size : {used - (used >= 4 ? 4 : 0), used, used + 4, codec_->length_prefix_bytes() - 1, p.size()}) {
      if (size > p.size()) continue;
      std::vector<uint8_t> sized(q.begin(), q.begin() + static_cast<std::ptrdiff_t>(size));
      const bool device_ok = detail::varlen_size_ok(v, sized.data(), size);
      // The CPU validates the content as well: compare on sizes where the content is the message.
      if (device_ok && t_try == t) {
        EXPECT_TRUE(cpu_size_ok(*codec_, sized)) << "T=" << t_try << " size=" << size;
      }
      if (!device_ok) {
        EXPECT_FALSE(cpu_size_ok(*codec_, sized)) << "T=" << t_try << " size=" << size;
      }
    }
  }
}

TEST_P(CodecTest, ZeroVectorDecodesToZero) {
  std::vector<float> z(x_.size(), 0.0f);
  const auto y = test::decode(*codec_, test::encode(*codec_, z, key_), key_);
  for (size_t i = 0; i < y.size(); ++i) {
    if (spec_.id() == CodecId::kSign && !spec_.options<SignOptions>().scaled) {
      EXPECT_EQ(y[i], 1.0f);  // plain sign: zero maps to +1
    } else {
      EXPECT_EQ(y[i], 0.0f) << i;
    }
  }
}

INSTANTIATE_TEST_SUITE_P(AllCodecs, CodecTest,
                         testing::Combine(testing::ValuesIn(kSpecs), testing::ValuesIn(layouts())),
                         [](const auto& param_info) {
                           std::string s = std::get<0>(param_info.param);
                           for (char& c : s)
                             if (!isalnum(static_cast<unsigned char>(c))) c = '_';
                           return s + "_n" + name_of(std::get<1>(param_info.param));
                         });

TEST(CodecEdgeTest, DitherSingleNonzeroAndConstantVectorAreExact) {
  // §2.6: a single nonzero gives level s deterministically; l_inf reproduces a constant vector.
  for (const char* s : {"dither:levels=1,norm=l2", "dither:levels=5,norm=l2", "dither:levels=3,norm=linf",
                        "dither:levels=2,norm=lp,p=3", "natdither:levels=3"}) {
    auto c = make_codec(s, Layout(100));
    std::vector<float> x(100, 0.0f);
    x[37] = -3.25f;
    for (uint32_t step = 0; step < 20; ++step) {
      RngKey key{7, 0, step, 0};
      EXPECT_TRUE(bitwise_equal(test::decode(*c, test::encode(*c, x, key), key), x)) << s;
    }
  }
  auto c = make_codec("dither:levels=3,norm=linf,block=10", Layout(95));
  std::vector<float> x(95, 0.1f);
  RngKey key{1, 0, 0, 0};
  EXPECT_TRUE(bitwise_equal(test::decode(*c, test::encode(*c, x, key), key), x));
}

TEST(CodecEdgeTest, BlocksNeverCrossSegments) {
  // Two segments with very different magnitudes: with a per-segment block each gets its own scale.
  auto c = make_codec("sign:block=0", Layout(std::vector<int64_t>{3, 2}));
  std::vector<float> x{1.0f, -2.0f, 3.0f, 100.0f, -300.0f};
  const auto y = test::decode(*c, test::encode(*c, x, RngKey{}), RngKey{});
  EXPECT_TRUE(bitwise_equal(y, {2.0f, -2.0f, 2.0f, 200.0f, -200.0f}));
  EXPECT_EQ(c->num_scales(), 2);
  auto d = make_codec("dither:block=4", Layout(std::vector<int64_t>{6, 5}));
  EXPECT_EQ(d->num_scales(), 4);  // 4+2 | 4+1
}

TEST(CodecEdgeTest, TopKTiesGoToLowerIndex) {
  auto c = make_codec("topk:k=3", Layout(8));
  std::vector<float> x{1, -2, 2, 0.5, -2, 2, 1, 2};
  const auto y = test::decode(*c, test::encode(*c, x, RngKey{}), RngKey{});
  EXPECT_TRUE(bitwise_equal(y, {0, -2, 2, 0, -2, 0, 0, 0}));
}

// topk and randk select with O(k) scratch when k <= n/8 and with a full index sort above: both
// must give the set of a plain sort on (key, index) for every k around the switch.
TEST(CodecEdgeTest, SparseSelectionMatchesAFullSortOnBothSidesOfTheBoundedPath) {
  const int64_t n = 1000;
  std::vector<float> x(n);
  for (int64_t i = 0; i < n; ++i)
    x[i] = static_cast<float>(1 + (i * 37) % 11) * (i % 3 == 0 ? -0.5f : 0.5f);  // ties, no zeros
  const RngKey key{77, 3, 5, 0};
  // The selected indices are the nonzeros of the decoded vector (x has no zeros).
  const auto selected = [&](const std::string& spec) {
    auto c = make_codec(spec, Layout(n));
    const auto y = test::decode(*c, test::encode(*c, x, key), key);
    std::vector<int64_t> idx;
    for (int64_t i = 0; i < n; ++i)
      if (y[i] != 0.0f) idx.push_back(i);
    return idx;
  };
  for (int64_t k : {int64_t{1}, int64_t{2}, int64_t{124}, int64_t{125}, int64_t{126}, int64_t{500}, n - 1, n}) {
    std::vector<int64_t> order(static_cast<size_t>(n));
    std::iota(order.begin(), order.end(), 0);
    std::sort(order.begin(), order.end(), [&](int64_t a, int64_t b) {
      return detail::topk_before(detail::float_bits(x[a]), a, detail::float_bits(x[b]), b);
    });
    std::vector<int64_t> want(order.begin(), order.begin() + k);
    std::sort(want.begin(), want.end());
    EXPECT_EQ(selected("topk:k=" + std::to_string(k)), want) << "topk k=" << k;

    std::iota(order.begin(), order.end(), 0);
    std::sort(order.begin(), order.end(), [&](int64_t a, int64_t b) {
      return detail::randk_before(detail::philox_word(key, detail::kStreamSelect, static_cast<uint64_t>(a)), a,
                                  detail::philox_word(key, detail::kStreamSelect, static_cast<uint64_t>(b)), b);
    });
    want.assign(order.begin(), order.begin() + k);
    std::sort(want.begin(), want.end());
    EXPECT_EQ(selected("randk:unbiased=0,k=" + std::to_string(k)), want) << "randk k=" << k;
  }
}

// From k = 65536 on, the index unpacking and the scatter of a decode run in ranges of the
// selection on the pool: the decoded vector still holds x at exactly the selected indices (those
// of a plain sort on (key, index)) and zero elsewhere, and decode_accumulate adds w x there.
TEST(CodecEdgeTest, SparseDecodeOfLargeKOnThePoolKeepsTheSelection) {
  const int64_t n = (int64_t{1} << 18) + 12345;
  std::vector<float> x(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i)
    x[i] = static_cast<float>(1 + (i * 7919) % 1000) * (i % 3 == 0 ? -0.25f : 0.25f);  // ties, no zeros
  const RngKey key{91, 2, 7, 0};
  set_cpu_threads(3);
  for (const bool random : {false, true}) {
    const int64_t k = random ? 70001 : 100003;
    std::vector<uint32_t> keys(static_cast<size_t>(n));
    for (int64_t i = 0; i < n; ++i)
      keys[i] =
          random ? detail::philox_word(key, detail::kStreamSelect, static_cast<uint64_t>(i)) : detail::float_bits(x[i]);
    std::vector<int64_t> order(static_cast<size_t>(n));
    std::iota(order.begin(), order.end(), 0);
    std::sort(order.begin(), order.end(), [&](int64_t a, int64_t b) {
      return random ? detail::randk_before(keys[a], a, keys[b], b) : detail::topk_before(keys[a], a, keys[b], b);
    });
    std::vector<uint8_t> want(static_cast<size_t>(n), 0);
    for (int64_t j = 0; j < k; ++j) want[static_cast<size_t>(order[j])] = 1;
    const std::string spec = (random ? "randk:unbiased=0,k=" : "topk:k=") + std::to_string(k);
    auto c = make_codec(spec, Layout(n));
    const auto payload = test::encode(*c, x, key);
    const auto y = test::decode(*c, payload, key);
    std::vector<float> acc(static_cast<size_t>(n), 1.0f);
    c->decode_accumulate(payload, key, 0.5f, acc);
    int64_t mismatches = 0;
    for (int64_t i = 0; i < n; ++i) {
      const float expect = want[i] ? x[i] : 0.0f;
      if (detail::float_bits(y[i]) != detail::float_bits(expect)) ++mismatches;
      if (acc[i] != (want[i] ? 1.0f + 0.5f * x[i] : 1.0f)) ++mismatches;
    }
    EXPECT_EQ(mismatches, 0) << spec;
  }
  set_cpu_threads(0);
}

TEST(CodecEdgeTest, SparseDecodeReduceOnThePoolEqualsThePayloadsInOrder) {
  // Large-k payloads are checked in pool tasks and written by output pieces, all payloads of a
  // piece in order: each element must get exactly the serial sums, for every thread count, with
  // and without streaming stores (overwrite). Three ranks with different inputs and weights.
  const int64_t n = (int64_t{1} << 18) + 12345;
  const RngKey key{17, 0, 3, 0};
  for (const char* spec : {"topk:k=100003", "topk:k=300", "randk:k=70001", "topk:k=100003,index=rice"}) {
    auto c = make_codec(spec, Layout(n));
    std::vector<std::vector<uint8_t>> payloads;
    std::vector<RngKey> keys;
    std::vector<std::vector<float>> decoded;
    for (uint32_t r = 0; r < 3; ++r) {
      std::vector<float> x(static_cast<size_t>(n));
      for (int64_t i = 0; i < n; ++i)
        x[i] = static_cast<float>(1 + (i * (7919 + 2 * r)) % 1000) * (i % 3 == r ? -0.25f : 0.125f);
      keys.push_back(RngKey{key.seed, r, key.step, 0});
      payloads.push_back(test::encode(*c, x, keys.back()));
      set_cpu_threads(1);
      decoded.push_back(test::decode(*c, payloads.back(), keys.back()));
    }
    const std::vector<float> weights{0.5f, -1.25f, 3.0f};
    std::vector<float> want(static_cast<size_t>(n));
    for (int64_t i = 0; i < n; ++i) {
      want[i] = 1.0f + static_cast<float>(i % 7);
      for (size_t q = 0; q < 3; ++q)
        if (decoded[q][i] != 0.0f) want[i] = want[i] + weights[q] * decoded[q][i];
    }
    const std::vector<std::span<const uint8_t>> spans(payloads.begin(), payloads.end());
    for (const int threads : {1, 2, 3}) {
      set_cpu_threads(threads);
      std::vector<float> out(static_cast<size_t>(n));
      for (int64_t i = 0; i < n; ++i) out[i] = 1.0f + static_cast<float>(i % 7);
      c->decode_reduce(spans, keys, weights, out);
      EXPECT_TRUE(test::bitwise_equal(out, want)) << spec << " threads=" << threads;
      for (const int64_t stream_from : {int64_t{-1}, int64_t{0}}) {
        detail::set_stream_min_bytes(stream_from);
        std::vector<float> y(static_cast<size_t>(n), 7.0f);
        c->decode(payloads[1], keys[1], y);
        EXPECT_TRUE(test::bitwise_equal(y, decoded[1])) << spec << " threads=" << threads << " stream=" << stream_from;
      }
      detail::set_stream_min_bytes(-1);
    }
  }
  set_cpu_threads(0);
}

TEST(CodecEdgeTest, SparseChecksOnThePoolReportTheFirstErrorOfTheSerialOrder) {
  // The checks of all payloads of a decode_reduce run as pool tasks (ranges of values, then of
  // indices, payload by payload); the error reported is the one the serial walk meets first, and
  // the output is untouched.
  const int64_t n = (int64_t{1} << 18) + 12345;
  const int64_t k = 100003;
  auto c = make_codec("topk:k=" + std::to_string(k), Layout(n));
  const int bits = static_cast<int>(detail::ceil_log2_u64(static_cast<uint64_t>(n)));
  std::vector<float> x(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) x[i] = static_cast<float>(1 + (i * 7919) % 1000) * 0.25f;
  const RngKey key{5, 0, 1, 0};
  const std::vector<uint8_t> good = test::encode(*c, x, key);
  const int64_t words = (k * bits + 31) / 32;
  // Index j of a payload set to v (the LSB-first fields after the k values).
  const auto set_index = [&](std::vector<uint8_t>& p, int64_t j, int64_t v) {
    std::vector<int64_t> idx(static_cast<size_t>(k));
    std::vector<uint32_t> w(static_cast<size_t>(words));
    std::memcpy(w.data(), p.data() + 4 * k, 4 * w.size());
    for (int64_t i = 0; i < k; ++i) idx[i] = static_cast<int64_t>(detail::read_packed_field(w.data(), i, bits));
    idx[j] = v;
    for (int64_t i = 0; i < words; ++i) w[i] = detail::pack_index_word(idx.data(), k, bits, i);
    std::memcpy(p.data() + 4 * k, w.data(), 4 * w.size());
  };
  const auto nan_value = [&](std::vector<uint8_t>& p, int64_t j) {
    const float v = std::numeric_limits<float>::quiet_NaN();
    std::memcpy(p.data() + 4 * j, &v, 4);
  };
  struct Case {
    const char* what;
    std::function<void(std::vector<std::vector<uint8_t>>&)> spoil;
    std::string needle;
  };
  ASSERT_NE((k * bits) % 32, 0);  // the last index word has padding bits
  const std::vector<Case> cases{
      {"a value late, an index early",
       [&](auto& ps) {
         nan_value(ps[1], 90000);
         set_index(ps[1], 20, 0);
       },
       "payload 1: corrupt topk payload: value 90000 is not finite"},
      {"disorder early, out of range late",
       [&](auto& ps) {
         set_index(ps[1], 20000, 1);
         set_index(ps[1], 90000, n);
       },
       "payload 1: corrupt topk payload: indices are not strictly increasing"},
      {"out of range early, disorder late",
       [&](auto& ps) {
         set_index(ps[1], 20000, n + 3);
         set_index(ps[1], 90000, 1);
       },
       "payload 1: corrupt topk payload: index " + std::to_string(n + 3) + " out of range"},
      {"content of 1 before the size of 2",
       [&](auto& ps) {
         set_index(ps[1], 99999, 0);
         ps[2].pop_back();
       },
       "payload 1: corrupt topk payload: indices are not strictly increasing"},
      {"content of 0 before the size of 2",
       [&](auto& ps) {
         ps[2].pop_back();
         set_index(ps[0], 0, n);
       },
       "payload 0: corrupt topk payload: index " + std::to_string(n) + " out of range"},
      {"the size of 2 after clean 0 and 1", [&](auto& ps) { ps[2].pop_back(); },
       "payload 2: corrupt topk payload: size is"},
      {"padding", [&](auto& ps) { ps[2][4 * k + 4 * (words - 1) + 3] |= 0x80; },
       "payload 2: corrupt topk payload: padding bits set after the last index"},
  };
  for (const int threads : {1, 2, 3}) {
    set_cpu_threads(threads);
    for (const Case& t : cases) {
      std::vector<std::vector<uint8_t>> ps(3, good);
      t.spoil(ps);
      const std::vector<std::span<const uint8_t>> spans(ps.begin(), ps.end());
      const std::vector<RngKey> keys(3, key);
      const std::vector<float> weights(3, 1.0f);
      std::vector<float> out(static_cast<size_t>(n), 2.5f);
      try {
        c->decode_reduce(spans, keys, weights, out);
        ADD_FAILURE() << t.what << ": no error";
      } catch (const Error& e) {
        EXPECT_EQ(e.status(), gcompErrorCorruptPayload) << t.what;
        EXPECT_NE(std::string(e.what()).find(t.needle), std::string::npos) << t.what << ": " << e.what();
      }
      EXPECT_TRUE(std::all_of(out.begin(), out.end(), [](float v) { return v == 2.5f; })) << t.what;
    }
  }
  set_cpu_threads(0);
}

TEST(CodecEdgeTest, RandKSelectsExactlyKDistinctIndicesAndDependsOnTheKey) {
  auto c = make_codec("randk:k=10,unbiased=0", Layout(1000));
  std::vector<float> x(1000);
  for (int i = 0; i < 1000; ++i) x[i] = static_cast<float>(i + 1);
  RngKey a{5, 0, 0, 0}, b{5, 1, 0, 0};
  const auto ya = test::decode(*c, test::encode(*c, x, a), a);
  const auto yb = test::decode(*c, test::encode(*c, x, b), b);
  EXPECT_EQ(std::count_if(ya.begin(), ya.end(), [](float v) { return v != 0; }), 10);
  EXPECT_NE(ya, yb);
  // The receiver regenerates the indices from the seed; a receiver with another seed gets others.
  const auto p = test::encode(*c, x, a);
  RngKey wrong_seed = a;
  wrong_seed.seed = 6;
  EXPECT_NE(test::decode(*c, p, wrong_seed), ya);
}

TEST(CodecEdgeTest, NaturalCompressionEdgeCases) {
  auto c = make_codec("natural", Layout(6));
  const float maxf = std::numeric_limits<float>::max();
  const float sub = std::numeric_limits<float>::denorm_min() * 3;
  std::vector<float> x{maxf, -maxf, sub, 1.0f, -0.0f, std::ldexp(1.0f, -126)};
  for (uint32_t step = 0; step < 50; ++step) {
    RngKey key{3, 0, step, 0};
    const auto y = test::decode(*c, test::encode(*c, x, key), key);
    EXPECT_EQ(y[0], std::ldexp(1.0f, 127));  // clamped instead of overflowing to Inf
    EXPECT_EQ(y[1], -std::ldexp(1.0f, 127));
    EXPECT_TRUE(y[2] == 0.0f || y[2] == std::ldexp(1.0f, -126));
    EXPECT_EQ(y[3], 1.0f);  // powers of two are exact
    EXPECT_EQ(y[4], 0.0f);
    EXPECT_EQ(y[5], std::ldexp(1.0f, -126));
  }
}

TEST(CodecEdgeTest, SharedScalesForTernGrad) {
  auto c = make_codec("terngrad", Layout(std::vector<int64_t>{10, 10}));
  std::vector<float> x = test::gaussian(20, 3);
  std::vector<float> own(2);
  c->compute_scales(x, own);
  std::vector<float> shared{own[0] * 2, own[1] * 3};
  std::vector<uint8_t> p(c->encoded_bytes());
  c->encode_with_scales(x, shared, RngKey{}, p);
  const auto y = test::decode(*c, p, RngKey{});
  for (int i = 0; i < 20; ++i) EXPECT_TRUE(y[i] == 0.0f || std::fabs(y[i]) == shared[i / 10]) << i;
  std::vector<float> bad{-1.0f, 1.0f};
  EXPECT_THROW(c->encode_with_scales(x, bad, RngKey{}, p), Error);
  EXPECT_THROW(make_codec("topk", Layout(3))->compute_scales(x, own), Error);
}

// The CPU contract that DeviceCodec::compute_scales / encode_with_scales mirror (tests/gpu): which
// codecs share scales, the status of each error and their order (non-finite input before a bad
// scale), -0 accepted as a scale, and the payload untouched on error.
TEST(CodecEdgeTest, SharedScaleContractMirroredByTheDevice) {
  const Layout layout(std::vector<int64_t>{40, 0, 25});
  const std::vector<float> x = test::gaussian(65, 4);
  for (const char* spec : {"terngrad", "terngrad:clip=2.5", "dither:levels=3,norm=linf,block=16",
                           "natdither:levels=2,norm=l2,block=8", "sdither:levels=2,norm=l2,block=16,chunk=7"}) {
    auto c = make_codec(spec, layout);
    ASSERT_GT(c->num_scales(), 0) << spec;
    std::vector<float> scales(static_cast<size_t>(c->num_scales()));
    c->compute_scales(x, scales);
    // Sharing one's own scales is plain encode.
    std::vector<uint8_t> p(c->encoded_bytes()), q(c->encoded_bytes());
    c->encode_with_scales(x, scales, RngKey{5, 1, 2, 0}, p);
    c->encode(x, RngKey{5, 1, 2, 0}, q);
    EXPECT_EQ(p, q) << spec;
    auto expect_status = [&](const std::vector<float>& xx, const std::vector<float>& ss, gcompStatus_t want) {
      std::vector<uint8_t> out(c->encoded_bytes(), 0xab);
      try {
        c->encode_with_scales(xx, ss, RngKey{}, out);
        ADD_FAILURE() << spec << ": accepted";
      } catch (const Error& e) {
        EXPECT_EQ(e.status(), want) << spec << ": " << e.what();
      }
      for (uint8_t b : out) ASSERT_EQ(b, 0xab) << spec << ": payload written on error";
    };
    std::vector<float> bad = scales;
    bad.back() = -1.0f;
    expect_status(x, bad, gcompErrorInvalidArgument);
    bad.back() = std::numeric_limits<float>::infinity();
    expect_status(x, bad, gcompErrorInvalidArgument);
    std::vector<float> nan_x = x;
    nan_x[30] = std::numeric_limits<float>::quiet_NaN();
    expect_status(nan_x, bad, gcompErrorNonFinite);  // the input is checked first
    std::vector<float> keep = scales;
    try {
      c->compute_scales(nan_x, keep);
      ADD_FAILURE() << spec << ": compute_scales accepted a NaN";
    } catch (const Error& e) {
      EXPECT_EQ(e.status(), gcompErrorNonFinite) << spec;
    }
    std::vector<float> negzero = scales;
    negzero[0] = -0.0f;
    std::vector<uint8_t> out(c->encoded_bytes());
    EXPECT_NO_THROW(c->encode_with_scales(x, negzero, RngKey{}, out)) << spec;
  }
  for (const char* spec :
       {"sign", "sign:scale=none", "topk:k=3", "randk:k=3", "natural", "identity", "spherical", "grid"}) {
    auto c = make_codec(spec, layout);
    std::vector<float> scales(static_cast<size_t>(std::max<int64_t>(c->num_scales(), 1)));
    try {
      c->compute_scales(x, scales);
      ADD_FAILURE() << spec << ": compute_scales accepted";
    } catch (const Error& e) {
      EXPECT_EQ(e.status(), gcompErrorNotSupported) << spec;
      EXPECT_NE(std::string(e.what()).find("has no shareable scales"), std::string::npos) << e.what();
    }
  }
}

TEST(CodecEdgeTest, ArgumentErrors) {
  auto c = make_codec("dither", Layout(10));
  std::vector<float> x(9);
  std::vector<uint8_t> p(c->encoded_bytes());
  try {
    c->encode(x, RngKey{}, p);
    ADD_FAILURE();
  } catch (const Error& e) {
    EXPECT_EQ(e.status(), gcompErrorInvalidArgument);
  }
  std::vector<float> x10(10);
  std::vector<uint8_t> small(c->encoded_bytes() - 1);
  try {
    c->encode(x10, RngKey{}, small);
    ADD_FAILURE();
  } catch (const Error& e) {
    EXPECT_EQ(e.status(), gcompErrorWorkspaceTooSmall);
  }
  EXPECT_THROW(Layout(std::vector<int64_t>{3, -1}), Error);
}

// Dense bit-plane validation over a payload of two pool pieces and a partial last group: a sign
// bit on a zero level, a level above s and a padding bit are each found wherever they are, the
// first bad group is the one named, and a clean payload passes.
TEST(DensePlaneValidation, FindsEveryKindOfBadGroupAnywhere) {
  const int64_t n = 65536 + 4000 + 13;  // two pieces; the last group holds 13 lanes
  std::vector<float> x(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) x[i] = static_cast<float>(std::sin(0.37 * static_cast<double>(i)));
  for (const char* spec : {"dither:levels=4,block=512", "terngrad", "natdither:levels=3"}) {
    const auto codec = make_codec(spec, Layout(n));
    const RngKey key{5, 0, 1, 0};
    const std::vector<uint8_t> clean = test::encode(*codec, x, key);
    EXPECT_NO_THROW(codec->validate(clean)) << spec;
    const std::vector<float> decoded = test::decode(*codec, clean, key);
    const size_t scale_bytes = 4 * static_cast<size_t>(codec->num_scales());
    const int64_t groups = (n + 31) / 32;
    const int words = static_cast<int>((clean.size() - scale_bytes) / (4 * static_cast<size_t>(groups)));
    const int nbits = words - 1;
    const uint32_t levels = std::string(spec).rfind("terngrad", 0) == 0
                                ? 1u
                                : (std::string(spec).find("=4") != std::string::npos ? 4u : 3u);
    auto word = [&](std::vector<uint8_t>& p, int64_t g, int k) -> uint8_t* {
      return p.data() + scale_bytes + 4 * (g * words + k);
    };
    auto set_bit = [&](std::vector<uint8_t>& p, int64_t g, int k, int lane) {
      uint32_t w;
      std::memcpy(&w, word(p, g, k), 4);
      w |= 1u << lane;
      std::memcpy(word(p, g, k), &w, 4);
    };
    auto rejected = [&](const std::vector<uint8_t>& p, const std::string& needle) {
      try {
        codec->validate(p);
      } catch (const Error& e) {
        EXPECT_EQ(e.status(), gcompErrorCorruptPayload);
        EXPECT_NE(std::string(e.what()).find(needle), std::string::npos)
            << spec << ": " << e.what() << " (want " << needle << ")";
        return;
      }
      ADD_FAILURE() << spec << ": accepted, want " << needle;
    };
    // a zero level in a group of the second piece and one of the first
    auto zero_lane = [&](int64_t from) {
      for (int64_t i = from; i < n; ++i)
        if (decoded[i] == 0.0f) return i;
      return int64_t{-1};
    };
    const int64_t z2 = zero_lane(65536 + 96), z1 = zero_lane(1000);
    ASSERT_GE(z2, 0);
    ASSERT_LT(z1, 65536);
    {
      auto p = clean;
      set_bit(p, z2 / 32, 0, static_cast<int>(z2 % 32));
      rejected(p, "sign bit set on a zero level in group " + std::to_string(z2 / 32));
      set_bit(p, z1 / 32, 0, static_cast<int>(z1 % 32));  // an earlier bad group is the one named
      rejected(p, "sign bit set on a zero level in group " + std::to_string(z1 / 32));
    }
    if ((uint32_t{1} << nbits) != levels + 1) {  // a level above s: every plane bit of one lane
      auto p = clean;
      const int64_t e = 65536 + 777;
      for (int k = 1; k <= nbits; ++k) set_bit(p, e / 32, k, static_cast<int>(e % 32));
      rejected(p, "level above " + std::to_string(levels) + " at element " + std::to_string(e));
    }
    {
      auto p = clean;
      set_bit(p, groups - 1, nbits, 20);  // lane 20 of a 13-lane group
      rejected(p, "padding bits set in the last group");
    }
  }
}

// grid: the most negative field (-2^(bits-1), never written by the encoder) is rejected wherever it
// is, naming the first such element, for byte-sized fields (checked on the raw bytes) and others.
TEST(GridValidation, MostNegativeFieldIsFoundAnywhere) {
  const int64_t n = 65536 + 4000 + 13;
  std::vector<float> x(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) x[i] = static_cast<float>(std::sin(0.37 * static_cast<double>(i)));
  for (const int bits : {16, 8, 4}) {
    const auto codec = make_codec("grid:step=0.25,bits=" + std::to_string(bits), Layout(n));
    const RngKey key{5, 0, 1, 0};
    const std::vector<uint8_t> clean = test::encode(*codec, x, key);
    EXPECT_NO_THROW(codec->validate(clean)) << bits;
    auto poison = [&](std::vector<uint8_t>& p, int64_t i) {  // field i := 1 followed by zeros (LSB first)
      for (int b = 0; b < bits; ++b) {
        const int64_t bit = i * bits + b;
        const uint8_t m = static_cast<uint8_t>(1u << (bit % 8));
        if (b == bits - 1)
          p[static_cast<size_t>(bit / 8)] |= m;
        else
          p[static_cast<size_t>(bit / 8)] &= static_cast<uint8_t>(~m);
      }
    };
    auto named = [&](const std::vector<uint8_t>& p) -> std::string {
      try {
        codec->validate(p);
      } catch (const Error& e) {
        EXPECT_EQ(e.status(), gcompErrorCorruptPayload);
        return e.what();
      }
      return "accepted";
    };
    auto p = clean;
    poison(p, 65536 + 2049);
    EXPECT_NE(named(p).find("level out of range at element " + std::to_string(65536 + 2049)), std::string::npos)
        << bits << ": " << named(p);
    poison(p, 31);
    EXPECT_NE(named(p).find("level out of range at element 31"), std::string::npos) << bits << ": " << named(p);
  }
}

}  // namespace

// Issue 18 #11: finite input never decodes to +-Inf, a finite input is never reported as
// non-finite, and an l_p norm never underflows to an all-zero output silently. Each codec either
// gives a clear error (not NON_FINITE) or decodes to finite values; where the answer is exact
// (the largest magnitude of a linf block at one level is its own scale), to that value.
TEST(CodecRange, FiniteInputNearFltMaxDecodesFiniteOrIsRefused) {
  const std::vector<float> x = {3.4e38f, -3.4e38f, 1.0f, 2.0f, 3.4e38f, 0.0f, 0.0f, 1.0f};
  std::vector<std::string> specs(std::begin(kSpecs), std::end(kSpecs));
  for (const char* s :
       {"spherical:block=1,bits=1", "grid:step=2e38,bits=4", "randk:k=4,unbiased=1", "randk:k=8,unbiased=1",
        "dither:norm=linf,levels=1", "natdither:norm=linf", "dither:norm=lp,p=1000"})
    specs.emplace_back(s);
  for (uint64_t seed = 0; seed < 8; ++seed)
    for (const std::string& spec : specs) {
      SCOPED_TRACE(spec + " seed " + std::to_string(seed));
      std::unique_ptr<Codec> c;
      try {
        c = make_codec(spec, Layout(static_cast<int64_t>(x.size())));
      } catch (const Error& e) {  // a spec whose levels decode beyond fp32 is refused at parse time
        EXPECT_EQ(e.status(), gcompErrorInvalidArgument) << e.what();
        continue;
      }
      const RngKey key{seed, 1, 2, 0};
      std::vector<uint8_t> p(c->encoded_bytes(), 0xab);
      try {
        c->encode(x, key, p);
      } catch (const Error& e) {
        EXPECT_EQ(e.status(), gcompErrorInvalidArgument) << e.what();
        EXPECT_EQ(std::string(e.what()).find("non-finite"), std::string::npos) << e.what();
        EXPECT_TRUE(std::all_of(p.begin(), p.end(), [](uint8_t b) { return b == 0xab; })) << "payload changed";
        continue;
      }
      std::vector<float> y(x.size());
      c->decode(std::span<const uint8_t>(p.data(), c->encoded_bytes()), key, y);
      for (size_t i = 0; i < y.size(); ++i) EXPECT_TRUE(std::isfinite(y[i])) << "element " << i << " = " << y[i];
      if (spec == "dither:norm=linf,levels=1" || spec == "natdither:norm=linf") {
        EXPECT_EQ(y[0], 3.4e38f);  // |x_i| = the block's scale: level s with probability 1
        EXPECT_EQ(y[1], -3.4e38f);
        EXPECT_EQ(y[4], 3.4e38f);
      }
    }
}

TEST(CodecRange, LpNormUnderflowIsRefused) {
  std::vector<float> x = gcomp::test::gaussian(64, 3);
  for (float& v : x) v *= 0.1f;
  auto c = make_codec("dither:norm=lp,p=1000", Layout(int64_t{64}));
  std::vector<uint8_t> p(c->encoded_bytes());
  try {
    c->encode(x, RngKey{1, 0, 0, 0}, p);
    std::vector<float> y(x.size());
    c->decode(p, RngKey{1, 0, 0, 0}, y);
    EXPECT_TRUE(std::any_of(y.begin(), y.end(), [](float v) { return v != 0.0f; })) << "all-zero output, no error";
  } catch (const Error& e) {
    EXPECT_EQ(e.status(), gcompErrorInvalidArgument);
    EXPECT_NE(std::string(e.what()).find("underflows"), std::string::npos) << e.what();
  }
}

TEST(CodecRange, PayloadsThatDecodeToInfAreCorrupt) {
  // CRC-valid random-k payloads of finite values: value * n/k beyond fp32.
  auto r = make_codec("randk:k=2,unbiased=1", Layout(int64_t{8}));  // n/k = 4
  std::vector<float> x = {1, 2, 3, 4, 5, 6, 7, 8};
  std::vector<uint8_t> p(r->encoded_bytes());
  r->encode(x, RngKey{1, 0, 0, 0}, p);
  const float big = 1e38f;
  std::memcpy(p.data() + 8, &big, 4);
  try {
    r->validate(p);
    ADD_FAILURE() << "a random-k value of 1e38 * 4 was accepted";
  } catch (const Error& e) {
    EXPECT_EQ(e.status(), gcompErrorCorruptPayload);
  }
  // Spherical: a block norm whose norm / beta is beyond fp32.
  auto s = make_codec("spherical:block=1,bits=1", Layout(int64_t{4}));
  std::vector<uint8_t> q(s->encoded_bytes());
  s->encode(std::vector<float>{1, -2, 3, 4}, RngKey{1, 0, 0, 0}, q);
  const float fmax = std::numeric_limits<float>::max();
  std::memcpy(q.data(), &fmax, 4);
  try {
    s->validate(q);
    ADD_FAILURE() << "a spherical norm of FLT_MAX / beta was accepted";
  } catch (const Error& e) {
    EXPECT_EQ(e.status(), gcompErrorCorruptPayload);
  }
}
