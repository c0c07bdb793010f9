// SPDX-License-Identifier: Apache-2.0
// GPU codecs against their oracle, the CPU reference codecs (STYLE.md §8): for every codec, size
// and seed, the GPU payload is byte-identical to the CPU payload and every decode flavour (decode,
// decode_accumulate, decode_reduce of 3 payloads, fused EF and DIANA) is bit-identical. Every call
// runs on a non-default stream with a workspace of exactly workspace_bytes(). Without a device
// every test skips with a one-line reason.
#include "common/test_util.hpp"
#include "cuda/dispatch/device_codec_access.hpp"
#include "gpu/gpu_test_util.hpp"
#include "host/codecs/registry.hpp"

#include <gcomp/codec.hpp>
#include <gcomp/cuda.hpp>
#include <gcomp/detail/grad_source.hpp>
#include <gcomp/detail/half.hpp>
#include <gcomp/detail/philox.hpp>
#include <gcomp/detail/session_math.hpp>
#include <gcomp/detail/sparse.hpp>
#include <gcomp/detail/spherical.hpp>

#include <algorithm>
#include <cctype>
#include <chrono>
#include <cmath>
#include <cstring>
#include <functional>
#include <limits>
#include <memory>
#include <span>
#include <string>
#include <thread>
#include <tuple>
#include <vector>

namespace gcomp::test {
namespace {

const std::vector<std::string> kSpecs = {
    "dither:levels=1,norm=l2",
    "dither:levels=4,norm=l2,block=512",
    "dither:levels=3,norm=linf,block=100",
    "dither:levels=2,norm=lp,p=3,block=1000",
    "dither:levels=7,norm=l1,block=33",
    "terngrad",
    "terngrad:clip=2.5",
    "natdither:levels=3,norm=l2,block=256",
    "sign",
    "sign:block=64",
    "sign:block=4096,scale=none",
    "topk:k=100",
    "topk:ratio=0.01",
    "topk:k=100,index=rice",
    "topk:ratio=0.01,index=rice",
    "topk:ratio=0.3,index=rice",
    "randk:k=50,unbiased=1",
    "randk:ratio=0.05,unbiased=0",
    "natural",
    "identity",
    "sdither:levels=1,norm=l2",
    "sdither:levels=4,norm=linf,block=512,code=delta,chunk=1000",
    "sdither:levels=3,norm=l2,block=100,chunk=33",
    "sdither:levels=2,norm=linf,block=64,chunk=1",
    "spherical:block=16,bits=3",
    "spherical:block=5,bits=2,unscaled=1",
    "grid:step=0.01,bits=6",
    "grid:step=0.25,bits=2",
    "grid:step=1e-6,bits=32",
    "grid",
    "grid:step=0.05,bits=8",
    "grid:step=0.001,bits=25",
};

/// Codecs too slow on the CPU oracle for a million elements (2^B codebook normals per element).
const std::vector<std::string> kSmallSpecs = {
    "spherical",
    "spherical:block=4,bits=12",
    "spherical:block=33,bits=6,unscaled=1",
};

/// Layouts: single segments of the edge sizes, and one multi-segment layout with an empty segment.
const std::vector<std::vector<int64_t>> kLayouts = {
    {1}, {31}, {32}, {33}, {4095}, {4097}, {1000003}, {5, 0, 4097, 31, 100000},
};
const std::vector<std::vector<int64_t>> kSmallLayouts = {{1}, {31}, {33}, {4097}, {5, 0, 40, 17, 300}};

const std::vector<uint64_t> kSeeds = {0x1234abcdull, 0x9e3779b97f4a7c15ull};

/// Gaussian data with exact zeros, negative zeros and repeated magnitudes (top-k ties).
std::vector<float> test_input(int64_t n, uint64_t seed) {
  std::vector<float> x = gaussian(n, seed);
  for (int64_t i = 0; i < n; ++i) {
    if (i % 13 == 0) x[i] = 0.0f;
    if (i % 19 == 0) x[i] = -0.0f;
    if (i % 17 == 0) x[i] = (i % 34 == 0) ? 0.5f : -0.5f;
  }
  return x;
}

RngKey key_for(uint64_t seed, uint32_t rank) { return RngKey{seed, rank, 7u + rank, 0u}; }

std::string layout_name(const std::vector<int64_t>& segs) {
  std::string s;
  for (int64_t v : segs) s += (s.empty() ? "" : "_") + std::to_string(v);
  return s;
}

std::string sanitize(const std::string& s) {
  std::string out;
  for (char c : s) out += std::isalnum(static_cast<unsigned char>(c)) ? c : '_';
  return out;
}

using CodecParam = std::tuple<std::string, std::vector<int64_t>, uint64_t>;

class GpuCodecs : public GpuParamFixture<CodecParam> {
 protected:
  void SetUp() override {
    GpuParamFixture<CodecParam>::SetUp();
    if (IsSkipped()) return;
    const auto& [spec, segs, seed] = GetParam();
    layout_ = Layout(segs);
    cpu_ = make_codec(spec, layout_);
    gpu_ = std::make_unique<cuda::DeviceCodec>(spec, layout_);
    seed_ = seed;
    n_ = layout_.num_elems();
    ws_ = std::make_unique<DeviceBuffer<uint8_t>>(gpu_->workspace_bytes(), stream_);
  }

  void expect_ok() {
    uint64_t index = 0;
    const gcompStatus_t st = cuda::read_status(ws_->get(), stream_, &index);
    EXPECT_EQ(st, gcompSuccess) << "device status index " << index;
  }

  Layout layout_;
  std::unique_ptr<Codec> cpu_;
  std::unique_ptr<cuda::DeviceCodec> gpu_;
  std::unique_ptr<DeviceBuffer<uint8_t>> ws_;
  uint64_t seed_ = 0;
  int64_t n_ = 0;
};

TEST_P(GpuCodecs, SizesMatchCpu) {
  EXPECT_EQ(gpu_->encoded_bytes(), cpu_->encoded_bytes());
  EXPECT_GE(gpu_->workspace_bytes(), sizeof(cuda::DeviceStatus));
}

TEST_P(GpuCodecs, EncodeMatchesCpuBytes) {
  const std::vector<float> x = test_input(n_, seed_);
  const RngKey key = key_for(seed_, 1);
  const std::vector<uint8_t> want = encode(*cpu_, x, key);
  DeviceBuffer<float> d_x(x, stream_);
  DeviceBuffer<uint8_t> d_payload(gpu_->encoded_bytes(), stream_);
  gpu_->encode(d_x.get(), key, d_payload.get(), ws_->get(), gpu_->workspace_bytes(), stream_);
  expect_ok();
  EXPECT_TRUE(bytes_equal(d_payload.download(), want));
}

TEST_P(GpuCodecs, DecodeMatchesCpuBits) {
  const std::vector<float> x = test_input(n_, seed_);
  const RngKey key = key_for(seed_, 2);
  const std::vector<uint8_t> payload = encode(*cpu_, x, key);
  DeviceBuffer<uint8_t> d_payload(payload, stream_);

  DeviceBuffer<float> d_out(static_cast<size_t>(n_), stream_);
  d_out.fill_bytes(0x7f);
  gpu_->decode(d_payload.get(), key, d_out.get(), ws_->get(), gpu_->workspace_bytes(), stream_);
  expect_ok();
  EXPECT_TRUE(bitwise_equal(d_out.download(), decode(*cpu_, payload, key)));

  std::vector<float> base = test_input(n_, seed_ + 99);
  const float weight = 0.37f;
  d_out.upload(base);
  gpu_->decode_accumulate(d_payload.get(), key, weight, d_out.get(), ws_->get(), gpu_->workspace_bytes(), stream_);
  expect_ok();
  cpu_->decode_accumulate(payload, key, weight, base);
  EXPECT_TRUE(bitwise_equal(d_out.download(), base));
}

TEST_P(GpuCodecs, DecodeReduceOfThreePayloadsMatchesCpu) {
  constexpr int kP = 3;
  const size_t bytes = cpu_->encoded_bytes();
  const size_t stride = bytes + 12;  // not tight: exercises the stride
  std::vector<uint8_t> packed(stride * kP, 0);
  std::vector<std::vector<uint8_t>> payloads;
  for (int j = 0; j < kP; ++j) {
    payloads.push_back(encode(*cpu_, test_input(n_, seed_ + 10 * j), key_for(seed_, static_cast<uint32_t>(j))));
    std::memcpy(packed.data() + stride * j, payloads.back().data(), bytes);
  }
  DeviceBuffer<uint8_t> d_payloads(packed, stream_);
  DeviceBuffer<float> d_out(static_cast<size_t>(n_), stream_);
  // Payload j is decoded with its own sender's key, on the CPU and on the device.
  std::vector<RngKey> keys;
  for (int j = 0; j < kP; ++j) keys.push_back(key_for(seed_, static_cast<uint32_t>(j)));
  for (const bool weighted : {true, false}) {
    const std::vector<float> weights = {0.5f, -1.25f, 2.0f};
    std::vector<float> want(static_cast<size_t>(n_), 0.0f);
    for (int j = 0; j < kP; ++j) cpu_->decode_accumulate(payloads[j], keys[j], weighted ? weights[j] : 1.0f, want);
    d_out.fill_bytes(0x7f);
    gpu_->decode_reduce(d_payloads.get(), stride, kP, weighted ? weights.data() : nullptr, keys.data(), d_out.get(),
                        ws_->get(), gpu_->workspace_bytes(), stream_);
    expect_ok();
    EXPECT_TRUE(bitwise_equal(d_out.download(), want)) << (weighted ? "weighted" : "unit weights");
  }
  // The oracle notices a key mix-up where the key matters: spherical codebooks depend on the
  // sender's rank and step, so rank 0's key for every payload decodes other values.
  if (cpu_->spec().id() == CodecId::kSpherical && n_ >= 31) {
    std::vector<float> right(static_cast<size_t>(n_), 0.0f), wrong(static_cast<size_t>(n_), 0.0f);
    for (int j = 0; j < kP; ++j) {
      cpu_->decode_accumulate(payloads[j], keys[j], 1.0f, right);
      cpu_->decode_accumulate(payloads[j], keys[0], 1.0f, wrong);
    }
    EXPECT_FALSE(bitwise_equal(right, wrong)) << "the keys do not matter to this case: it cannot catch a mix-up";
  }
}

TEST_P(GpuCodecs, ErrorFeedbackMatchesCpu) {
  const std::vector<float> p = test_input(n_, seed_ + 1);
  const RngKey key = key_for(seed_, 3);
  std::vector<uint8_t> want_payload(cpu_->encoded_bytes());
  std::vector<float> want_e(p.size());
  cpu_->encode_ef(p, key, want_payload, want_e);

  DeviceBuffer<float> d_p(p, stream_);
  DeviceBuffer<float> d_e(p.size(), stream_);
  DeviceBuffer<uint8_t> d_payload(gpu_->encoded_bytes(), stream_);
  gpu_->encode_ef(d_p.get(), d_e.get(), key, d_payload.get(), ws_->get(), gpu_->workspace_bytes(), stream_);
  expect_ok();
  EXPECT_TRUE(bytes_equal(d_payload.download(), want_payload));
  EXPECT_TRUE(bitwise_equal(d_e.download(), want_e));

  // In place: the memory is the input.
  gpu_->encode_ef(d_p.get(), d_p.get(), key, d_payload.get(), ws_->get(), gpu_->workspace_bytes(), stream_);
  expect_ok();
  EXPECT_TRUE(bytes_equal(d_payload.download(), want_payload));
  EXPECT_TRUE(bitwise_equal(d_p.download(), want_e)) << "in place";
}

TEST_P(GpuCodecs, DianaMatchesCpu) {
  const std::vector<float> g = test_input(n_, seed_ + 2);
  std::vector<float> h = test_input(n_, seed_ + 3);
  for (float& v : h) v *= 0.25f;
  const float alpha = 0.3f;
  const RngKey key = key_for(seed_, 4);
  DeviceBuffer<float> d_g(g, stream_);
  DeviceBuffer<float> d_h(h, stream_);
  std::vector<uint8_t> want_payload(cpu_->encoded_bytes());
  std::vector<float> delta(g.size());
  cpu_->encode_diana(g, h, alpha, key, want_payload, delta);

  DeviceBuffer<uint8_t> d_payload(gpu_->encoded_bytes(), stream_);
  gpu_->encode_diana(d_g.get(), d_h.get(), alpha, key, d_payload.get(), ws_->get(), gpu_->workspace_bytes(), stream_);
  expect_ok();
  EXPECT_TRUE(bytes_equal(d_payload.download(), want_payload));
  EXPECT_TRUE(bitwise_equal(d_h.download(), h));
}

// The Session's EF encode of p = a x + b y formed as the kernels load it (DeviceCodecAccess::
// encode_ef_lincomb: no lincomb pass, p never stored) against the stored p of lincomb_f (the bits
// of the Session's lincomb()) encoded by the CPU codec's encode_ef: the same payload and memory,
// for a product and a difference form (b = 1 with a = lr; a = 1 with b = -0.75), through the
// vector and the element loads (the layouts' odd sizes). y holds subnormals, and x and y signed
// zeros (test_input), whose sums and products must round as the stored p did.
TEST_P(GpuCodecs, LincombErrorFeedbackMatchesTheStoredInput) {
  const std::vector<float> x = test_input(n_, seed_ + 11);
  std::vector<float> y = test_input(n_, seed_ + 12);
  for (int64_t i = 0; i < n_; i += 23) y[i] = (i % 46 == 0 ? 1.0f : -1.0f) * std::numeric_limits<float>::denorm_min();
  DeviceBuffer<float> d_x(x, stream_);
  DeviceBuffer<float> d_y(y, stream_);
  DeviceBuffer<float> d_e(x.size(), stream_);
  DeviceBuffer<uint8_t> d_payload(gpu_->encoded_bytes(), stream_);
  const float forms[2][2] = {{0.05f, 1.0f}, {1.0f, -0.75f}};
  for (const auto& ab : forms) {
    const float a = ab[0], b = ab[1];
    std::vector<float> p(x.size());
    for (size_t i = 0; i < p.size(); ++i) p[i] = detail::lincomb_f(a, x[i], b, y[i]);
    const RngKey key = key_for(seed_, 5);
    std::vector<uint8_t> want_payload(cpu_->encoded_bytes());
    std::vector<float> want_e(p.size());
    cpu_->encode_ef(p, key, want_payload, want_e);
    d_e.fill_bytes(0xff);  // NaN: every element must be written
    cuda::detail::DeviceCodecAccess::encode_ef_lincomb(*gpu_, a, d_x.get(), b, d_y.get(), d_e.get(), key,
                                                       d_payload.get(), ws_->get(), gpu_->workspace_bytes(), stream_);
    expect_ok();
    EXPECT_TRUE(bytes_equal(d_payload.download(), want_payload)) << "a = " << a << ", b = " << b;
    EXPECT_TRUE(bitwise_equal(d_e.download(), want_e)) << "a = " << a << ", b = " << b;
  }
  EXPECT_TRUE(bitwise_equal(d_x.download(), x));
  EXPECT_TRUE(bitwise_equal(d_y.download(), y));
  if (n_ > 0) {  // e must not alias an operand
    EXPECT_THROW(cuda::detail::DeviceCodecAccess::encode_ef_lincomb(*gpu_, 1.0f, d_x.get(), 1.0f, d_y.get(), d_y.get(),
                                                                    key_for(seed_, 5), d_payload.get(), ws_->get(),
                                                                    gpu_->workspace_bytes(), stream_),
                 Error);
  }
}

// The Session's EF and DIANA encodes into a second buffer have no check pass before the fused
// encode (DevicePlan::fold_check): on a finite input they equal the checked calls (the CPU codec's
// encode_ef and encode_diana bytes); a NaN or Inf input is still reported as gcompErrorNonFinite,
// by the encode pass itself (or the scale pass), and the next call succeeds.
TEST_P(GpuCodecs, SessionEncodesWithoutACheckPassMatchAndReportNonFinite) {
  std::vector<float> p = test_input(n_, seed_ + 31);
  std::vector<float> h = test_input(n_, seed_ + 32);
  for (float& v : h) v *= 0.5f;
  const RngKey key = key_for(seed_, 6);
  DeviceBuffer<float> d_p(p, stream_);
  DeviceBuffer<float> d_h(h, stream_);
  DeviceBuffer<float> d_out(p.size(), stream_);
  DeviceBuffer<uint8_t> d_payload(gpu_->encoded_bytes(), stream_);
  std::vector<uint8_t> want_payload(cpu_->encoded_bytes());
  std::vector<float> want(p.size());
  cpu_->encode_ef(p, key, want_payload, want);
  d_out.fill_bytes(0xff);
  cuda::detail::DeviceCodecAccess::encode_ef_unchecked(*gpu_, d_p.get(), d_out.get(), key, d_payload.get(), ws_->get(),
                                                       gpu_->workspace_bytes(), stream_);
  expect_ok();
  EXPECT_TRUE(bytes_equal(d_payload.download(), want_payload)) << "encode_ef";
  EXPECT_TRUE(bitwise_equal(d_out.download(), want)) << "encode_ef";
  const float alpha = 0.3f;
  std::vector<float> h_new = h;
  std::vector<float> delta(p.size());
  cpu_->encode_diana(p, h_new, alpha, key, want_payload, delta);
  cuda::detail::DeviceCodecAccess::encode_diana(*gpu_, d_p.get(), d_h.get(), d_out.get(), alpha, key, d_payload.get(),
                                                ws_->get(), gpu_->workspace_bytes(), stream_);
  expect_ok();
  EXPECT_TRUE(bytes_equal(d_payload.download(), want_payload)) << "encode_diana";
  EXPECT_TRUE(bitwise_equal(d_out.download(), h_new)) << "encode_diana";
  if (n_ == 0) return;
  for (const float bad : {std::numeric_limits<float>::quiet_NaN(), std::numeric_limits<float>::infinity()}) {
    std::vector<float> q = p;
    q[static_cast<size_t>(n_ / 2)] = bad;
    d_p.upload(q);
    cuda::detail::DeviceCodecAccess::encode_ef_unchecked(*gpu_, d_p.get(), d_out.get(), key, d_payload.get(),
                                                         ws_->get(), gpu_->workspace_bytes(), stream_);
    EXPECT_EQ(cuda::read_status(ws_->get(), stream_), gcompErrorNonFinite) << "encode_ef, " << bad;
    cuda::detail::DeviceCodecAccess::encode_diana(*gpu_, d_p.get(), d_h.get(), d_out.get(), alpha, key, d_payload.get(),
                                                  ws_->get(), gpu_->workspace_bytes(), stream_);
    EXPECT_EQ(cuda::read_status(ws_->get(), stream_), gcompErrorNonFinite) << "encode_diana, " << bad;
  }
  d_p.upload(p);
  cuda::detail::DeviceCodecAccess::encode_ef_unchecked(*gpu_, d_p.get(), d_out.get(), key, d_payload.get(), ws_->get(),
                                                       gpu_->workspace_bytes(), stream_);
  expect_ok();
  EXPECT_THROW(cuda::detail::DeviceCodecAccess::encode_ef_unchecked(*gpu_, d_p.get(), d_p.get(), key, d_payload.get(),
                                                                    ws_->get(), gpu_->workspace_bytes(), stream_),
               Error);  // e must not alias p
}

// The Session's DIANA encode into a second buffer (DeviceCodecAccess::encode_diana with h_out !=
// h: the dense codecs write every element of h_out in their encode pass, topk and randk copy h
// first) equals the in-place call (DianaMatchesCpu: the CPU codec's encode_diana): the same
// payload, h_out the updated memory everywhere (it starts as NaN), h untouched.
TEST_P(GpuCodecs, DianaIntoASecondBufferMatchesInPlace) {
  const std::vector<float> g = test_input(n_, seed_ + 2);
  std::vector<float> h = test_input(n_, seed_ + 3);
  for (float& v : h) v *= 0.25f;
  const std::vector<float> h0 = h;
  const float alpha = 0.3f;
  const RngKey key = key_for(seed_, 4);
  std::vector<uint8_t> want_payload(cpu_->encoded_bytes());
  std::vector<float> delta(g.size());
  cpu_->encode_diana(g, h, alpha, key, want_payload, delta);

  DeviceBuffer<float> d_g(g, stream_);
  DeviceBuffer<float> d_h(h0, stream_);
  DeviceBuffer<float> d_h_out(g.size(), stream_);
  d_h_out.fill_bytes(0xff);
  DeviceBuffer<uint8_t> d_payload(gpu_->encoded_bytes(), stream_);
  cuda::detail::DeviceCodecAccess::encode_diana(*gpu_, d_g.get(), d_h.get(), d_h_out.get(), alpha, key, d_payload.get(),
                                                ws_->get(), gpu_->workspace_bytes(), stream_);
  expect_ok();
  EXPECT_TRUE(bytes_equal(d_payload.download(), want_payload));
  EXPECT_TRUE(bitwise_equal(d_h_out.download(), h));
  EXPECT_TRUE(bitwise_equal(d_h.download(), h0)) << "h written";
}

/// x rounded to a 16-bit type (kSrcBF16: the high half of its bits; kSrcF16: truncated, tiny
/// values to a signed zero, large ones to the largest finite), every 97th element a subnormal of
/// that type, and with `bad` every 61st (from index 3) and the last a NaN or an Inf of either sign
/// (the last one in the tail quad where n is not a multiple of 4: the element loads' zeroing).
std::vector<uint16_t> view_bits(const std::vector<float>& x, uint32_t type, bool bad) {
  std::vector<uint16_t> bits(x.size());
  const bool bf = type == detail::kSrcBF16;
  for (size_t i = 0; i < x.size(); ++i) {
    const uint32_t f = detail::float_bits(x[i]);
    const auto sign = static_cast<uint16_t>((f >> 16) & 0x8000u);
    uint16_t v = 0;
    if (bf) {
      v = static_cast<uint16_t>(f >> 16);
    } else {
      const int e = static_cast<int>((f >> 23) & 0xffu) - 127 + 15;
      v = e >= 31  ? static_cast<uint16_t>(sign | 0x7bffu)
          : e <= 0 ? sign
                   : static_cast<uint16_t>(sign | (static_cast<uint32_t>(e) << 10) | ((f & 0x7fffffu) >> 13));
    }
    if (i % 97 == 5) v = static_cast<uint16_t>(sign | (1u + i % (bf ? 0x7fu : 0x3ffu)));
    if (bad && (i % 61 == 3 || i + 1 == x.size())) {
      const uint32_t kind = static_cast<uint32_t>(i / 61) % 4;  // NaN, -NaN, +Inf, -Inf
      const uint16_t nan = bf ? 0x7fc1u : 0x7e01u, inf = bf ? 0x7f80u : 0x7c00u;
      v = static_cast<uint16_t>((kind == 1 || kind == 3 ? 0x8000u : 0u) | (kind < 2 ? nan : inf));
    }
    bits[i] = v;
  }
  return bits;
}

// The Session's gradient view as an encoder's x (DeviceCodecAccess with a Source of bf16 / f16
// elements, with and without kSrcZero, at an address that is 2-byte aligned only: every quad loads
// element by element; and at one 8-byte but not 16-byte aligned: the whole quads of the quad
// kernels and topk's passes take one 8-byte load each, the tail quad and the unaligned blocks'
// quads element loads, the NaN/Inf elements in both), for every codec
// that loads views: each encode form (encode; topk_sampled, whose sample also reads NaN/Inf
// elements; the EF of p = a x + b y; DIANA into a second buffer) equals the same call on the
// widened (and zeroed) fp32 copy, the payload and memory bit for bit; a NaN/Inf element without
// kSrcZero is gcompErrorNonFinite at the same index as the copy's, with kSrcZero it loads as +0.
TEST_P(GpuCodecs, GradientViewsEqualTheWidenedCopy) {
  using cuda::detail::DeviceCodecAccess;
  using cuda::detail::Source;
  if (!DeviceCodecAccess::loads_views(*gpu_)) GTEST_SKIP() << gpu_->spec().name() << " loads no gradient view";
  const auto nz = static_cast<size_t>(n_);
  const std::vector<float> x = test_input(n_, seed_ + 40), y = test_input(n_, seed_ + 41);
  std::vector<float> h = test_input(n_, seed_ + 42);
  for (float& v : h) v *= 0.25f;
  const RngKey key = key_for(seed_, 3);
  DeviceBuffer<uint16_t> d_bits(nz + 4, stream_);
  DeviceBuffer<float> d_wide(nz, stream_), d_y(y, stream_), d_h(h, stream_), d_mem(nz, stream_);
  DeviceBuffer<uint8_t> d_payload(gpu_->encoded_bytes(), stream_);
  struct Outcome {
    gcompStatus_t status = gcompSuccess;
    uint64_t index = 0;
    std::vector<uint8_t> payload;
    std::vector<float> mem;
  };
  enum Form { kEncode, kSampled, kEfLincomb, kDiana };
  const auto run = [&](Form form, const Source& in) {
    d_payload.fill_bytes(0);
    d_mem.fill_bytes(0xff);
    const size_t wsb = gpu_->workspace_bytes();
    switch (form) {
      case kEncode:
      case kSampled:
        DeviceCodecAccess::encode(*gpu_, in, key, d_payload.get(), ws_->get(), wsb, stream_, form == kSampled);
        break;
      case kEfLincomb:
        DeviceCodecAccess::encode_ef_lincomb(*gpu_, 1.0f, in, -0.75f, d_y.get(), d_mem.get(), key, d_payload.get(),
                                             ws_->get(), wsb, stream_);
        break;
      case kDiana:
        DeviceCodecAccess::encode_diana(*gpu_, in, d_h.get(), d_mem.get(), 0.3f, key, d_payload.get(), ws_->get(), wsb,
                                        stream_);
        break;
    }
    Outcome o;
    o.status = cuda::read_status(ws_->get(), stream_, &o.index);
    if (o.status == gcompSuccess) {
      o.payload = d_payload.download();
      o.mem = d_mem.download();
    }
    return o;
  };
  for (const uint32_t type : {detail::kSrcBF16, detail::kSrcF16}) {
    for (const bool bad : {false, true}) {
      for (const bool zero : {false, true}) {
        if (zero && !bad) continue;
        const std::vector<uint16_t> bits = view_bits(x, type, bad);
        std::vector<float> wide(nz);
        bool any_bad = false;
        for (size_t i = 0; i < nz; ++i) {
          wide[i] = type == detail::kSrcBF16 ? detail::bf16_to_float(bits[i]) : detail::f16_to_float(bits[i]);
          any_bad = any_bad || !std::isfinite(wide[i]);
          if (zero) wide[i] = detail::zero_nonfinite_f(wide[i]);
        }
        d_wide.upload(wide);
        // The view starts at element 1 (2-byte aligned only) or 4 (8-byte aligned, not 16).
        for (const size_t offset : {size_t{1}, size_t{4}}) {
          std::vector<uint16_t> shifted(nz + 4, 0);
          std::copy(bits.begin(), bits.end(), shifted.begin() + static_cast<std::ptrdiff_t>(offset));
          d_bits.upload(shifted);
          const Source view(d_bits.get() + offset, type | (zero ? detail::kSrcZero : 0u));
          for (const Form form : {kEncode, kSampled, kEfLincomb, kDiana}) {
            if (form == kSampled && gpu_->spec().id() != CodecId::kTopK) continue;
            const std::string what = std::string(type == detail::kSrcBF16 ? "bf16" : "f16") +
                                     (bad ? " nonfinite" : "") + (zero ? " zero" : "") + " offset " +
                                     std::to_string(offset) + " form " + std::to_string(static_cast<int>(form));
            const Outcome want = run(form, Source(d_wide.get()));
            const Outcome got = run(form, view);
            EXPECT_EQ(want.status, bad && any_bad && !zero ? gcompErrorNonFinite : gcompSuccess) << what;
            EXPECT_EQ(got.status, want.status) << what;
            if (want.status != gcompSuccess) {
              EXPECT_EQ(got.index, want.index) << what;
              continue;
            }
            EXPECT_TRUE(bytes_equal(got.payload, want.payload)) << what;
            if (form == kEfLincomb || form == kDiana) {
              EXPECT_TRUE(bitwise_equal(got.mem, want.mem)) << what;
            }
          }
        }
      }
    }
  }
}

std::vector<CodecParam> all_params(const std::vector<std::string>& specs,
                                   const std::vector<std::vector<int64_t>>& layouts) {
  std::vector<CodecParam> out;
  for (const auto& s : specs)
    for (const auto& l : layouts)
      for (uint64_t seed : kSeeds) out.emplace_back(s, l, seed);
  return out;
}

/// Codecs whose CPU codec has compute_scales / encode_with_scales.
bool shareable(const Codec& c) {
  const CodecId id = c.spec().id();
  return id == CodecId::kDither || id == CodecId::kTernGrad || id == CodecId::kNatDither || id == CodecId::kSDither;
}

// TernGrad scaler sharing on the device: the scales of x and of a second rank's y, their max, and
// the encode with the max. Oracle: the CPU codec's compute_scales / encode_with_scales.
TEST_P(GpuCodecs, SharedScalesMatchCpuBytes) {
  EXPECT_EQ(gpu_->num_scales(), cpu_->num_scales());
  const std::vector<float> x = test_input(n_, seed_), y = test_input(n_, seed_ + 5);
  DeviceBuffer<float> d_x(x, stream_);
  DeviceBuffer<float> d_scales(static_cast<size_t>(std::max<int64_t>(gpu_->num_scales(), 1)), stream_);
  if (!shareable(*cpu_)) {
    try {
      gpu_->compute_scales(d_x.get(), d_scales.get(), ws_->get(), gpu_->workspace_bytes(), stream_);
      ADD_FAILURE() << "compute_scales accepted a codec without shareable scales";
    } catch (const Error& e) {
      EXPECT_EQ(e.status(), gcompErrorNotSupported) << e.what();
    }
    return;
  }
  const auto m = static_cast<size_t>(cpu_->num_scales());
  std::vector<float> sx(m), sy(m), smax(m);
  cpu_->compute_scales(x, sx);
  cpu_->compute_scales(y, sy);
  for (size_t b = 0; b < m; ++b) smax[b] = std::max(sx[b], sy[b]);
  const RngKey key = key_for(seed_, 3);
  std::vector<uint8_t> want(cpu_->encoded_bytes());
  cpu_->encode_with_scales(x, smax, key, want);

  gpu_->compute_scales(d_x.get(), d_scales.get(), ws_->get(), gpu_->workspace_bytes(), stream_);
  expect_ok();
  std::vector<float> got = d_scales.download();
  got.resize(m);
  EXPECT_TRUE(bitwise_equal(got, sx));
  std::vector<float> padded = smax;
  padded.resize(d_scales.size(), 0.0f);
  d_scales.upload(padded);
  DeviceBuffer<uint8_t> d_payload(gpu_->encoded_bytes(), stream_);
  gpu_->encode_with_scales(d_x.get(), d_scales.get(), key, d_payload.get(), ws_->get(), gpu_->workspace_bytes(),
                           stream_);
  expect_ok();
  EXPECT_TRUE(bytes_equal(d_payload.download(), want));
  // The Session's calls (no non-finite pass over x): the same scales and payload.
  cuda::detail::DeviceCodecAccess::compute_shared_scales(*gpu_, d_x.get(), d_scales.get(), ws_->get(),
                                                         gpu_->workspace_bytes(), stream_);
  expect_ok();
  got = d_scales.download();
  got.resize(m);
  EXPECT_TRUE(bitwise_equal(got, sx));
  d_scales.upload(padded);
  d_payload.fill_bytes(0);
  cuda::detail::DeviceCodecAccess::encode_with_shared_scales(*gpu_, d_x.get(), d_scales.get(), key, d_payload.get(),
                                                             ws_->get(), gpu_->workspace_bytes(), stream_);
  expect_ok();
  EXPECT_TRUE(bytes_equal(d_payload.download(), want));
}

std::string param_name(const testing::TestParamInfo<CodecParam>& p) {
  return sanitize(std::get<0>(p.param)) + "_n" + layout_name(std::get<1>(p.param)) + "_s" +
         std::to_string(p.index % kSeeds.size());
}

INSTANTIATE_TEST_SUITE_P(AllCodecs, GpuCodecs, testing::ValuesIn(all_params(kSpecs, kLayouts)), param_name);
INSTANTIATE_TEST_SUITE_P(SmallLayouts, GpuCodecs, testing::ValuesIn(all_params(kSmallSpecs, kSmallLayouts)),
                         param_name);

// ------------------------------------------------------------------------- non-parameterized

class GpuCodecBehaviour : public GpuFixture {};

TEST_F(GpuCodecBehaviour, GraphCaptureAndReplayOfEncode) {
  for (const std::string spec : {"dither:levels=4,block=512", "topk:ratio=0.01", "randk:k=77",
                                 "sdither:levels=2,block=512,chunk=700", "spherical:block=8,bits=4", "grid:bits=9"}) {
    const Layout layout({4097, 70000});
    const auto cpu = make_codec(spec, layout);
    cuda::DeviceCodec gpu(spec, layout);
    const std::vector<float> x = test_input(layout.num_elems(), 5);
    const RngKey key = key_for(5, 1);
    DeviceBuffer<float> d_x(x, stream_);
    DeviceBuffer<uint8_t> d_payload(gpu.encoded_bytes(), stream_);
    DeviceBuffer<uint8_t> ws(gpu.workspace_bytes(), stream_);

    cudaGraph_t graph = nullptr;
    cudaGraphExec_t exec = nullptr;
    GCOMP_TEST_CUDA(cudaStreamBeginCapture(stream_, cudaStreamCaptureModeThreadLocal));
    gpu.encode(d_x.get(), key, d_payload.get(), ws.get(), gpu.workspace_bytes(), stream_);
    GCOMP_TEST_CUDA(cudaStreamEndCapture(stream_, &graph));
    GCOMP_TEST_CUDA(cudaGraphInstantiate(&exec, graph, 0));
    const std::vector<uint8_t> want = encode(*cpu, x, key);
    for (int replay = 0; replay < 2; ++replay) {
      d_payload.fill_bytes(0);
      GCOMP_TEST_CUDA(cudaGraphLaunch(exec, stream_));
      EXPECT_EQ(cuda::read_status(ws.get(), stream_), gcompSuccess);
      EXPECT_TRUE(bytes_equal(d_payload.download(), want)) << spec << " replay " << replay;
    }
    GCOMP_TEST_CUDA(cudaGraphExecDestroy(exec));
    GCOMP_TEST_CUDA(cudaGraphDestroy(graph));
  }
}

TEST_F(GpuCodecBehaviour, NonFiniteInputSetsStatusAndLeavesOutputsUntouched) {
  for (const std::string& spec : kSpecs) {
    for (const float bad : {std::numeric_limits<float>::quiet_NaN(), -std::numeric_limits<float>::infinity()}) {
      const Layout layout({3000, 5000});
      cuda::DeviceCodec gpu(spec, layout);
      std::vector<float> x = test_input(layout.num_elems(), 11);
      x[4321] = bad;
      DeviceBuffer<float> d_x(x, stream_);
      DeviceBuffer<float> d_e(x.size(), stream_);
      d_e.fill_bytes(0x5a);
      DeviceBuffer<uint8_t> d_payload(gpu.encoded_bytes(), stream_);
      d_payload.fill_bytes(0xab);
      DeviceBuffer<uint8_t> ws(gpu.workspace_bytes(), stream_);
      gpu.encode_ef(d_x.get(), d_e.get(), key_for(11, 0), d_payload.get(), ws.get(), gpu.workspace_bytes(), stream_);
      uint64_t index = 0;
      EXPECT_EQ(cuda::read_status(ws.get(), stream_, &index), gcompErrorNonFinite) << spec;
      EXPECT_LE(index, 4321u) << spec;
      for (uint8_t b : d_payload.download()) ASSERT_EQ(b, 0xab) << spec << ": payload written on error";
      for (float v : d_e.download()) {
        uint32_t u;
        std::memcpy(&u, &v, 4);
        ASSERT_EQ(u, 0x5a5a5a5au) << spec << ": memory written on error";
      }
      // The plain encode reports it too (one-pass codecs may have written part of the payload).
      gpu.encode(d_x.get(), key_for(11, 0), d_payload.get(), ws.get(), gpu.workspace_bytes(), stream_);
      EXPECT_EQ(cuda::read_status(ws.get(), stream_, &index), gcompErrorNonFinite) << spec << " (encode)";
      EXPECT_LE(index, 4321u) << spec;
      const std::string name(gpu.spec().name());
      if (name != "sign" && name != "natural" && name != "identity" && name != "grid") {
        for (uint8_t b : d_payload.download()) ASSERT_EQ(b, 0xab) << spec << ": payload written on error";
      } else if (name == "sign" && gpu.spec().options<SignOptions>().scaled) {
        for (uint8_t b : d_payload.download()) ASSERT_EQ(b, 0xab) << spec << ": payload written on error";
      }
      // The status is reset by the next call.
      x[4321] = 1.0f;
      d_x.upload(x);
      gpu.encode(d_x.get(), key_for(11, 0), d_payload.get(), ws.get(), gpu.workspace_bytes(), stream_);
      EXPECT_EQ(cuda::read_status(ws.get(), stream_), gcompSuccess) << spec;
    }
  }
}

TEST_F(GpuCodecBehaviour, SharedScaleErrorsSetStatusAndLeaveOutputsUntouched) {
  for (const std::string spec : {"terngrad", "terngrad:clip=2.5", "dither:levels=3,norm=linf,block=100",
                                 "sdither:levels=2,norm=l2,block=64,chunk=100"}) {
    const Layout layout({3000, 5000});
    cuda::DeviceCodec gpu(spec, layout);
    const auto m = static_cast<size_t>(gpu.num_scales());
    std::vector<float> x = test_input(layout.num_elems(), 12);
    DeviceBuffer<float> d_x(x, stream_);
    DeviceBuffer<float> d_scales(m, stream_);
    DeviceBuffer<uint8_t> d_payload(gpu.encoded_bytes(), stream_);
    DeviceBuffer<uint8_t> ws(gpu.workspace_bytes(), stream_);
    const RngKey key = key_for(12, 0);
    auto payload_untouched = [&] {
      for (uint8_t b : d_payload.download())
        if (b != 0xab) return false;
      return true;
    };
    // Good scales, then a negative one: gcompErrorInvalidArgument at its block's first element.
    gpu.compute_scales(d_x.get(), d_scales.get(), ws.get(), gpu.workspace_bytes(), stream_);
    EXPECT_EQ(cuda::read_status(ws.get(), stream_), gcompSuccess) << spec;
    std::vector<float> scales = d_scales.download();
    const size_t bad_block = m - 1;
    scales[bad_block] = -1.0f;
    d_scales.upload(scales);
    d_payload.fill_bytes(0xab);
    gpu.encode_with_scales(d_x.get(), d_scales.get(), key, d_payload.get(), ws.get(), gpu.workspace_bytes(), stream_);
    uint64_t index = 0;
    EXPECT_EQ(cuda::read_status(ws.get(), stream_, &index), gcompErrorInvalidArgument) << spec;
    EXPECT_EQ(index, block_offsets(layout, detail::dither_quantizer(gpu.spec()).block)[bad_block]) << spec;
    EXPECT_TRUE(payload_untouched()) << spec << ": payload written with a negative scale";
    // Non-finite input: gcompErrorNonFinite first (before the scale check), payload untouched;
    // compute_scales leaves the scales untouched.
    x[4321] = std::numeric_limits<float>::quiet_NaN();
    d_x.upload(x);
    gpu.encode_with_scales(d_x.get(), d_scales.get(), key, d_payload.get(), ws.get(), gpu.workspace_bytes(), stream_);
    EXPECT_EQ(cuda::read_status(ws.get(), stream_, &index), gcompErrorNonFinite) << spec;
    EXPECT_LE(index, 4321u) << spec;
    EXPECT_TRUE(payload_untouched()) << spec << ": payload written with a non-finite input";
    gpu.compute_scales(d_x.get(), d_scales.get(), ws.get(), gpu.workspace_bytes(), stream_);
    EXPECT_EQ(cuda::read_status(ws.get(), stream_), gcompErrorNonFinite) << spec;
    EXPECT_TRUE(bitwise_equal(d_scales.download(), scales)) << spec << ": scales written on error";
  }
  // The Session's sharing (DeviceCodecAccess): a non-finite input fails its compute_shared_scales
  // (gcompErrorNonFinite) with every scale +Inf, so the max over the ranks is +Inf, and
  // encode_with_shared_scales, which has no pass of its own over x, fails on that max with
  // gcompErrorNonFinite and leaves the payload untouched; so does any rank's encode with it.
  for (const std::string spec :
       {"terngrad", "terngrad:clip=2.5", "dither:levels=3,norm=linf,block=100", "dither:levels=2,norm=l1,block=64",
        "dither:levels=2,norm=lp,p=3,block=64", "natdither:levels=3,norm=l2,block=256",
        "sdither:levels=2,norm=l2,block=64,chunk=100"}) {
    const Layout layout({3000, 5000});
    cuda::DeviceCodec gpu(spec, layout);
    const auto m = static_cast<size_t>(gpu.num_scales());
    for (const float bad : {std::numeric_limits<float>::quiet_NaN(), std::numeric_limits<float>::infinity(),
                            -std::numeric_limits<float>::infinity()}) {
      std::vector<float> x = test_input(layout.num_elems(), 13);
      const std::vector<float> other = test_input(layout.num_elems(), 14);  // a finite rank
      x[6543] = bad;
      DeviceBuffer<float> d_x(x, stream_);
      DeviceBuffer<float> d_other(other, stream_);
      DeviceBuffer<float> d_scales(m, stream_), d_other_scales(m, stream_);
      DeviceBuffer<uint8_t> d_payload(gpu.encoded_bytes(), stream_);
      DeviceBuffer<uint8_t> ws(gpu.workspace_bytes(), stream_);
      using cuda::detail::DeviceCodecAccess;
      DeviceCodecAccess::compute_shared_scales(gpu, d_x.get(), d_scales.get(), ws.get(), gpu.workspace_bytes(),
                                               stream_);
      EXPECT_EQ(cuda::read_status(ws.get(), stream_), gcompErrorNonFinite) << spec << ", " << bad;
      std::vector<float> scales = d_scales.download();
      for (size_t b = 0; b < m; ++b) EXPECT_TRUE(std::isinf(scales[b]) && scales[b] > 0.0f) << spec << ", " << b;
      DeviceCodecAccess::compute_shared_scales(gpu, d_other.get(), d_other_scales.get(), ws.get(),
                                               gpu.workspace_bytes(), stream_);
      EXPECT_EQ(cuda::read_status(ws.get(), stream_), gcompSuccess) << spec;
      std::vector<float> other_scales = d_other_scales.download();
      for (size_t b = 0; b < m; ++b) scales[b] = std::max(scales[b], other_scales[b]);  // the allreduce max
      d_scales.upload(scales);
      for (const DeviceBuffer<float>* input : {&d_x, &d_other}) {
        d_payload.fill_bytes(0xab);
        DeviceCodecAccess::encode_with_shared_scales(gpu, input->get(), d_scales.get(), key_for(13, 0), d_payload.get(),
                                                     ws.get(), gpu.workspace_bytes(), stream_);
        EXPECT_EQ(cuda::read_status(ws.get(), stream_), gcompErrorNonFinite) << spec;
        bool untouched = true;
        for (uint8_t v : d_payload.download()) untouched = untouched && v == 0xab;
        EXPECT_TRUE(untouched) << spec << ": payload written with a non-finite shared scale";
      }
    }
  }
  // Codecs without shareable scales refuse, as the CPU codec does.
  cuda::DeviceCodec sign("sign", Layout(100));
  DeviceBuffer<float> d_x(std::vector<float>(100, 1.0f), stream_);
  DeviceBuffer<float> d_s(1, stream_);
  DeviceBuffer<uint8_t> d_p(sign.encoded_bytes(), stream_);
  DeviceBuffer<uint8_t> ws(sign.workspace_bytes(), stream_);
  EXPECT_THROW(sign.encode_with_scales(d_x.get(), d_s.get(), key_for(1, 0), d_p.get(), ws.get(), sign.workspace_bytes(),
                                       stream_),
               Error);
}

// The one-pass decoders (dense planes, sign, natural, identity, grid) validate as they decode: the status
// reports the corrupt payload and its position; their output is unspecified (DeviceCodec::decode).
// topk and randk validate first and leave the output untouched (the tile merge returns at once).
TEST_F(GpuCodecBehaviour, CorruptPayloadSetsStatus) {
  const Layout layout(1000);
  for (const std::string spec : {"dither:levels=4,block=100", "sign:block=64", "topk:k=10", "topk:k=10,index=rice",
                                 "randk:k=10", "natural", "identity", "grid:bits=16", "grid:step=0.5,bits=5"}) {
    const auto cpu = make_codec(spec, layout);
    cuda::DeviceCodec gpu(spec, layout);
    std::vector<uint8_t> payload = encode(*cpu, test_input(1000, 3), key_for(3, 0));
    if (spec.rfind("topk", 0) == 0 || spec.rfind("randk", 0) == 0) {
      const float nan = std::numeric_limits<float>::quiet_NaN();
      std::memcpy(payload.data() + (spec.rfind("randk", 0) == 0 ? 8 : 0), &nan, 4);  // a non-finite value
    } else if (spec == "natural") {
      payload[4 * 32 + 5] = 255;  // exponent code 255
    } else if (spec == "identity") {
      const float inf = std::numeric_limits<float>::infinity();
      std::memcpy(payload.data() + 40, &inf, 4);
    } else if (spec == "grid:bits=16") {
      payload[2 * 300] = 0x00;  // field 300 = 0x8000 = -2^15
      payload[2 * 300 + 1] = 0x80;
    } else if (spec == "grid:step=0.5,bits=5") {
      payload[0] = static_cast<uint8_t>((payload[0] & ~0x1fu) | 0x10u);  // field 0 = -2^4
    } else {
      const float neg = -1.0f;
      std::memcpy(payload.data(), &neg, 4);  // a negative scale
    }
    EXPECT_THROW(cpu->validate(payload), Error) << spec;
    DeviceBuffer<uint8_t> d_payload(payload, stream_);
    DeviceBuffer<float> d_out(1000, stream_);
    d_out.fill_bytes(0x33);
    DeviceBuffer<uint8_t> ws(gpu.workspace_bytes(), stream_);
    gpu.decode(d_payload.get(), RngKey{}, d_out.get(), ws.get(), gpu.workspace_bytes(), stream_);
    EXPECT_EQ(cuda::read_status(ws.get(), stream_), gcompErrorCorruptPayload) << spec;
    if (spec.rfind("topk", 0) == 0 || spec.rfind("randk", 0) == 0) {
      for (float v : d_out.download()) {
        uint32_t u;
        std::memcpy(&u, &v, 4);
        ASSERT_EQ(u, 0x33333333u) << spec << ": output written on error";
      }
    }
    // decode_reduce of a good payload and the corrupt one: the status names payload 1.
    std::vector<uint8_t> both = encode(*cpu, test_input(1000, 4), key_for(4, 0));
    both.insert(both.end(), payload.begin(), payload.end());
    DeviceBuffer<uint8_t> d_both(both, stream_);
    const std::vector<RngKey> keys = {key_for(4, 0), RngKey{}};
    uint64_t index = 0;
    gpu.decode_reduce(d_both.get(), payload.size(), 2, nullptr, keys.data(), d_out.get(), ws.get(),
                      gpu.workspace_bytes(), stream_);
    EXPECT_EQ(cuda::read_status(ws.get(), stream_, &index), gcompErrorCorruptPayload) << spec;
    EXPECT_EQ(index >> 40, 1u) << spec;
    // A good payload decodes after it (the status is reset per call).
    gpu.decode(d_both.get(), RngKey{}, d_out.get(), ws.get(), gpu.workspace_bytes(), stream_);
    EXPECT_EQ(cuda::read_status(ws.get(), stream_), gcompSuccess) << spec;
  }
}

TEST_F(GpuCodecBehaviour, WorkspaceAndArgumentChecks) {
  cuda::DeviceCodec gpu("dither:levels=2,block=128", Layout(5000));
  DeviceBuffer<float> d_x(5000, stream_);
  DeviceBuffer<uint8_t> d_payload(gpu.encoded_bytes(), stream_);
  DeviceBuffer<uint8_t> ws(gpu.workspace_bytes(), stream_);
  try {
    gpu.encode(d_x.get(), RngKey{}, d_payload.get(), ws.get(), gpu.workspace_bytes() - 1, stream_);
    ADD_FAILURE() << "a workspace one byte short was accepted";
  } catch (const Error& e) {
    EXPECT_EQ(e.status(), gcompErrorWorkspaceTooSmall);
  }
  try {
    gpu.encode(nullptr, RngKey{}, d_payload.get(), ws.get(), gpu.workspace_bytes(), stream_);
    ADD_FAILURE() << "a null input was accepted";
  } catch (const Error& e) {
    EXPECT_EQ(e.status(), gcompErrorInvalidArgument);
  }
  try {
    gpu.topk_sampled(d_x.get(), RngKey{}, d_payload.get(), ws.get(), gpu.workspace_bytes(), stream_);
    ADD_FAILURE() << "topk_sampled on a dither codec was accepted";
  } catch (const Error& e) {
    EXPECT_EQ(e.status(), gcompErrorNotSupported);
  }
  for (const char* spec : {"sdither", "spherical", "grid"}) {
    EXPECT_NO_THROW({ const cuda::DeviceCodec codec(spec, Layout(100)); }) << spec;
  }
  // decode_reduce needs one key per payload where the decode reads keys (randk, spherical).
  for (const char* spec : {"randk:k=10", "spherical:block=8,bits=3", "sign", "topk:k=10"}) {
    const cuda::DeviceCodec codec(spec, Layout(100));
    DeviceBuffer<uint8_t> d_payloads(2 * codec.encoded_bytes() + 8, stream_);
    d_payloads.fill_bytes(0);
    DeviceBuffer<float> d_out(100, stream_);
    DeviceBuffer<uint8_t> w(codec.workspace_bytes(), stream_);
    const bool reads = codec.decode_reads_key();
    EXPECT_EQ(reads, std::string(spec).rfind("randk", 0) == 0 || std::string(spec).rfind("spherical", 0) == 0) << spec;
    try {
      codec.decode_reduce(d_payloads.get(), codec.encoded_bytes(), 2, nullptr, nullptr, d_out.get(), w.get(),
                          codec.workspace_bytes(), stream_);
      EXPECT_FALSE(reads) << spec << ": decode_reduce without keys was accepted";
    } catch (const Error& e) {
      EXPECT_TRUE(reads) << spec << ": " << e.what();
      EXPECT_EQ(e.status(), gcompErrorInvalidArgument) << spec;
    }
    sync();
  }
}

// An empty layout (n = 0): the payload bytes equal the CPU codec's (randk: the 8-byte header of
// step and rank; sdither: T = 0; every other codec: no bytes), for encode, EF and DIANA, and the
// decodes write nothing and report success.
TEST_F(GpuCodecBehaviour, EmptyLayoutPayloadsMatchCpu) {
  for (const std::vector<int64_t>& segs : {std::vector<int64_t>{0}, std::vector<int64_t>{0, 0}}) {
    const Layout layout(segs);
    for (const std::string& spec : kSpecs) {
      const auto cpu = make_codec(spec, layout);
      cuda::DeviceCodec gpu(spec, layout);
      ASSERT_EQ(gpu.encoded_bytes(), cpu->encoded_bytes()) << spec;
      const RngKey key = key_for(3, 2);
      std::vector<uint8_t> want(cpu->encoded_bytes(), 0xab);
      cpu->encode(std::span<const float>(), key, want);
      DeviceBuffer<uint8_t> ws(gpu.workspace_bytes(), stream_);
      DeviceBuffer<uint8_t> d_payload(std::max<size_t>(gpu.encoded_bytes(), 1), stream_);
      for (int op = 0; op < 3; ++op) {
        d_payload.fill_bytes(0xab);
        DeviceBuffer<float> none(0, stream_), h(0, stream_);
        if (op == 0) gpu.encode(none.get(), key, d_payload.get(), ws.get(), gpu.workspace_bytes(), stream_);
        if (op == 1) gpu.encode_ef(none.get(), h.get(), key, d_payload.get(), ws.get(), gpu.workspace_bytes(), stream_);
        if (op == 2)
          gpu.encode_diana(none.get(), h.get(), 0.5f, key, d_payload.get(), ws.get(), gpu.workspace_bytes(), stream_);
        EXPECT_EQ(cuda::read_status(ws.get(), stream_), gcompSuccess) << spec << " op " << op;
        std::vector<uint8_t> got = d_payload.download();
        got.resize(want.size());
        EXPECT_TRUE(bytes_equal(got, want)) << spec << " op " << op << " (" << segs.size() << " segments)";
      }
      const size_t stride = std::max<size_t>(4, (want.size() + 3) / 4 * 4);
      std::vector<uint8_t> three(3 * stride, 0);
      for (size_t j = 0; j < 3; ++j) std::copy(want.begin(), want.end(), three.begin() + static_cast<long>(j * stride));
      DeviceBuffer<uint8_t> d_three(three, stream_);
      const std::vector<RngKey> keys = {key, key, key};
      DeviceBuffer<float> out(0, stream_);
      gpu.decode(d_three.get(), key, out.get(), ws.get(), gpu.workspace_bytes(), stream_);
      EXPECT_EQ(cuda::read_status(ws.get(), stream_), gcompSuccess) << spec << " decode";
      gpu.decode_reduce(d_three.get(), stride, 3, nullptr, keys.data(), out.get(), ws.get(), gpu.workspace_bytes(),
                        stream_);
      EXPECT_EQ(cuda::read_status(ws.get(), stream_), gcompSuccess) << spec << " decode_reduce";
    }
  }
}

// The test helpers are ordered with the stream the codec calls run on (gpu_test_util.hpp): work
// already on the stream (here a host callback that holds the stream for 200 ms, then a device
// memset) completes before a helper's fill, upload or download. Helpers on the legacy default
// stream would not wait for a non-blocking stream: their bytes would land first and be
// overwritten, and the download would read the bytes from before the memset.
void CUDART_CB hold_stream(void*) { std::this_thread::sleep_for(std::chrono::milliseconds(200)); }

TEST_F(GpuCodecBehaviour, TestHelpersAreOrderedWithTheStream) {
  DeviceBuffer<uint8_t> buf(1 << 20, stream_);
  buf.fill_bytes(0x11);
  // fill: after the stream's memset
  GCOMP_TEST_CUDA(cudaLaunchHostFunc(stream_, hold_stream, nullptr));
  GCOMP_TEST_CUDA(cudaMemsetAsync(buf.get(), 0xaa, buf.bytes(), stream_));
  buf.fill_bytes(0x55);
  for (uint8_t b : buf.download()) ASSERT_EQ(b, 0x55) << "fill_bytes landed before earlier work on the stream";
  // upload: after the stream's memset
  GCOMP_TEST_CUDA(cudaLaunchHostFunc(stream_, hold_stream, nullptr));
  GCOMP_TEST_CUDA(cudaMemsetAsync(buf.get(), 0xaa, buf.bytes(), stream_));
  buf.upload(std::vector<uint8_t>(buf.size(), 0x66));
  for (uint8_t b : buf.download()) ASSERT_EQ(b, 0x66) << "upload landed before earlier work on the stream";
  // download: sees the stream's memset
  GCOMP_TEST_CUDA(cudaLaunchHostFunc(stream_, hold_stream, nullptr));
  GCOMP_TEST_CUDA(cudaMemsetAsync(buf.get(), 0x77, buf.bytes(), stream_));
  for (uint8_t b : buf.download()) ASSERT_EQ(b, 0x77) << "download read before earlier work on the stream";
}

/// A payload with one corruption (applied to a copy of a valid payload).
struct Corruption {
  const char* what;
  std::vector<uint8_t> payload;
  uint64_t index;  ///< the status index of a decode: the offending block's or chunk's first element, or n
};

uint32_t load_word(const std::vector<uint8_t>& p, size_t word) {
  uint32_t v;
  std::memcpy(&v, p.data() + 4 * word, 4);
  return v;
}
void store_word(std::vector<uint8_t>& p, size_t word, uint32_t v) { std::memcpy(p.data() + 4 * word, &v, 4); }

// sdither is a one-pass decoder (a header kernel, then one walk per chunk that validates as it
// writes): every corruption sets the status with the payload's number, and the output is then
// unspecified (DeviceCodec::decode); the next call with a good payload decodes it exactly.
TEST_F(GpuCodecBehaviour, CorruptSditherStreamsSetStatus) {
  // n = 1000, 10 blocks of 100, 16 chunks of 64: words 0-9 scales, 10 T, 11-26 directory, 27.. stream.
  const Layout layout(1000);
  const std::string spec = "sdither:levels=4,norm=linf,block=100,chunk=64";
  const auto cpu = make_codec(spec, layout);
  cuda::DeviceCodec gpu(spec, layout);
  const std::vector<float> x = test_input(1000, 8);
  const std::vector<uint8_t> good = encode(*cpu, x, key_for(8, 0));
  const size_t kT = 10, kDir = 11, kStream = 27;
  const size_t words = good.size() / 4;
  const uint32_t total = load_word(good, kT);
  ASSERT_GT(total, 64u);
  ASSERT_LT(kStream + (total + 31) / 32, words) << "the test needs padding words";
  ASSERT_LT(load_word(good, kDir + 1), load_word(good, kDir + 2));
  ASSERT_GT(load_word(good, kDir + 1), 0u) << "chunk 0 needs records (it then starts at stream bit 0)";
  ASSERT_LT(load_word(good, kDir + 15), total) << "chunk 15 needs records (the last record is then in it)";

  // The first nonzero of block 0 (elements 0-99) lies in chunk first_nz / 64.
  const std::vector<float> good_values = decode(*cpu, good, RngKey{});
  uint64_t first_nz = 0;
  while (first_nz < 100 && good_values[first_nz] == 0.0f) ++first_nz;
  ASSERT_LT(first_nz, 100u) << "the test needs a nonzero in block 0";

  std::vector<Corruption> cases;
  auto add = [&](const char* what, uint64_t index, auto&& edit) {
    std::vector<uint8_t> p = good;
    edit(p);
    cases.push_back({what, p, index});
  };
  add("total bits beyond the worst case", 1000, [&](auto& p) { store_word(p, kT, 0xffffffffu); });
  add("chunk 0 not at bit 0", 0, [&](auto& p) { store_word(p, kDir, 1u); });
  add("decreasing chunk offsets", 128, [&](auto& p) { store_word(p, kDir + 2, load_word(p, kDir + 1) - 1u); });
  add("chunk offset beyond T", 960, [&](auto& p) { store_word(p, kDir + 15, total + 1u); });
  add("padding bit set", 1000, [&](auto& p) { store_word(p, words - 1, 0x80000000u); });
  add("over-long gap prefix", 0, [&](auto& p) { store_word(p, kStream, 0u); });
  add("nonzero in a zero-scale block", first_nz / 64 * 64, [&](auto& p) { store_word(p, 0, 0u); });
  add("negative zero scale", 300, [&](auto& p) { store_word(p, 3, 0x80000000u); });
  add("record cut short by T", 960, [&](auto& p) {
    // Drop the last bit of the stream: its last record loses its level code (and the padding
    // rule no longer sees the dropped bit only if it was 0, so clear it as well).
    const uint32_t t = total - 1u;
    store_word(p, kT, t);
    const size_t w = kStream + t / 32;
    store_word(p, w, load_word(p, w) & ~(1u << (t % 32)));
  });

  DeviceBuffer<uint8_t> ws(gpu.workspace_bytes(), stream_);
  for (const Corruption& c : cases) {
    EXPECT_THROW(cpu->validate(c.payload), Error) << c.what << ": the CPU accepts it";
    DeviceBuffer<uint8_t> d_payload(c.payload, stream_);
    DeviceBuffer<float> d_out(1000, stream_);
    d_out.fill_bytes(0x33);
    gpu.decode(d_payload.get(), RngKey{}, d_out.get(), ws.get(), gpu.workspace_bytes(), stream_);
    EXPECT_EQ(cuda::read_status(ws.get(), stream_), gcompErrorCorruptPayload) << c.what;
    gpu.decode_accumulate(d_payload.get(), RngKey{}, 0.5f, d_out.get(), ws.get(), gpu.workspace_bytes(), stream_);
    EXPECT_EQ(cuda::read_status(ws.get(), stream_), gcompErrorCorruptPayload) << c.what;
    // decode_reduce: a good payload, then the corrupt one (rank 1): the status names payload 1.
    std::vector<uint8_t> both = good;
    both.insert(both.end(), c.payload.begin(), c.payload.end());
    DeviceBuffer<uint8_t> d_both(both, stream_);
    uint64_t index = 0;
    gpu.decode_reduce(d_both.get(), good.size(), 2, nullptr, nullptr, d_out.get(), ws.get(), gpu.workspace_bytes(),
                      stream_);
    EXPECT_EQ(cuda::read_status(ws.get(), stream_, &index), gcompErrorCorruptPayload) << c.what;
    EXPECT_EQ(index >> 40, 1u) << c.what << ": the status names payload 1";
    // The corrupt payload first (rank 0), then a good one: the status names payload 0, at the
    // same position as a plain decode reports.
    uint64_t single = 0;
    gpu.decode(d_payload.get(), RngKey{}, d_out.get(), ws.get(), gpu.workspace_bytes(), stream_);
    EXPECT_EQ(cuda::read_status(ws.get(), stream_, &single), gcompErrorCorruptPayload) << c.what;
    EXPECT_EQ(single, c.index) << c.what;
    std::vector<uint8_t> first = c.payload;
    first.insert(first.end(), good.begin(), good.end());
    DeviceBuffer<uint8_t> d_first(first, stream_);
    gpu.decode_reduce(d_first.get(), good.size(), 2, nullptr, nullptr, d_out.get(), ws.get(), gpu.workspace_bytes(),
                      stream_);
    EXPECT_EQ(cuda::read_status(ws.get(), stream_, &index), gcompErrorCorruptPayload) << c.what;
    EXPECT_EQ(index, single) << c.what << ": the status names payload 0 at the decode's position";
  }
  // The good payload still decodes (the status is reset per call).
  DeviceBuffer<uint8_t> d_good(good, stream_);
  DeviceBuffer<float> d_out(1000, stream_);
  gpu.decode(d_good.get(), RngKey{}, d_out.get(), ws.get(), gpu.workspace_bytes(), stream_);
  EXPECT_EQ(cuda::read_status(ws.get(), stream_), gcompSuccess);
  EXPECT_TRUE(bitwise_equal(d_out.download(), decode(*cpu, good, RngKey{})));
}

// sdither's decode_reduce of two or more payloads is the merged walk (cuda/sdither/
// sdither_merge_kernels.cuh: batches of sdither_merge_batch payloads, the output read and written
// once per batch): equal to the CPU codec's decode_reduce bit for bit for one payload (the
// per-payload walk), one batch, a batch and a bit, and several batches; levels 1/2/4/127, l2 and
// linf, blocks, gamma and delta, chunk 1, chunks not dividing n, a chunk above n, the largest
// merged chunk (two slices), and one above it and s = 200 (the per-payload walk again).
TEST_F(GpuCodecBehaviour, SditherMergedDecodeReduceMatchesCpu) {
  struct Case {
    const char* spec;
    std::vector<int64_t> sizes;
  };
  const std::vector<Case> cases = {
      {"sdither:levels=1,norm=l2", {9000, 0, 1200}},
      {"sdither:levels=2,norm=linf,block=64,chunk=1", {130, 0, 70}},
      {"sdither:levels=4,norm=linf,block=100,chunk=64", {1000}},
      {"sdither:levels=4,norm=l2,block=50,code=delta,chunk=7", {1300, 700}},
      {"sdither:levels=1,norm=linf,code=delta,chunk=5000", {333}},
      {"sdither:levels=127,norm=linf,block=40,chunk=100", {901}},
      {"sdither:levels=2,norm=l2,chunk=16384", {40000}},
      {"sdither:levels=2,norm=l2,chunk=16385", {40000}},
      {"sdither:levels=200,norm=linf,block=64,chunk=64", {3000}},  // s above a staging byte: per payload
  };
  for (const Case& cs : cases) {
    const Layout layout(cs.sizes);
    const int64_t n = layout.num_elems();
    const auto cpu = make_codec(cs.spec, layout);
    cuda::DeviceCodec gpu(cs.spec, layout);
    const size_t bytes = cpu->encoded_bytes();
    const size_t stride = bytes + 8;
    DeviceBuffer<uint8_t> ws(gpu.workspace_bytes(), stream_);
    for (const int P : {1, 2, 3, 9, 130}) {
      std::vector<uint8_t> packed(stride * static_cast<size_t>(P), 0);
      std::vector<std::vector<uint8_t>> payloads;
      std::vector<RngKey> keys;
      std::vector<float> weights;
      for (int j = 0; j < P; ++j) {
        keys.push_back(key_for(31, static_cast<uint32_t>(j)));
        payloads.push_back(encode(*cpu, test_input(n, 40 + static_cast<uint64_t>(j)), keys.back()));
        std::memcpy(packed.data() + stride * static_cast<size_t>(j), payloads.back().data(), bytes);
        weights.push_back(j % 3 == 0 ? 1.0f : (j % 3 == 1 ? -0.75f : 0.3f + 0.01f * static_cast<float>(j)));
      }
      std::vector<std::span<const uint8_t>> spans(payloads.begin(), payloads.end());
      DeviceBuffer<uint8_t> d_payloads(packed, stream_);
      DeviceBuffer<float> d_out(static_cast<size_t>(n), stream_);
      for (const bool weighted : {true, false}) {
        const std::vector<float> w = weighted ? weights : std::vector<float>(static_cast<size_t>(P), 1.0f);
        std::vector<float> want(static_cast<size_t>(n), 0.0f);
        cpu->decode_reduce(spans, keys, w, want);
        d_out.fill_bytes(0x7f);
        gpu.decode_reduce(d_payloads.get(), stride, P, weighted ? weights.data() : nullptr, keys.data(), d_out.get(),
                          ws.get(), gpu.workspace_bytes(), stream_);
        EXPECT_EQ(cuda::read_status(ws.get(), stream_), gcompSuccess) << cs.spec << " P " << P;
        EXPECT_TRUE(bitwise_equal(d_out.download(), want))
            << cs.spec << " P " << P << (weighted ? " weighted" : " unit weights");
      }
    }
  }
}

// The merged decode-reduce reports the status index of the per-payload decode across batches
// (chunk 64: 64 payloads a batch, so 130 payloads are batches of 64, 64 and 2): the first corrupt
// payload in rank order, at its walk's or its header's position, whichever of a corrupt stream
// and a corrupt header comes first; the payloads after a failed header are not walked.
TEST_F(GpuCodecBehaviour, SditherMergedDecodeReduceNamesTheFirstCorruptPayload) {
  const Layout layout(1000);
  const std::string spec = "sdither:levels=4,norm=linf,block=100,chunk=64";
  const auto cpu = make_codec(spec, layout);
  cuda::DeviceCodec gpu(spec, layout);
  const size_t bytes = cpu->encoded_bytes();
  const size_t kT = 10, kDir = 11, kStream = 27;  // 10 scales, T, 16 chunk offsets, the stream
  DeviceBuffer<uint8_t> ws(gpu.workspace_bytes(), stream_);
  std::vector<std::vector<uint8_t>> good;
  for (int j = 0; j < 130; ++j)
    good.push_back(encode(*cpu, test_input(1000, 60 + static_cast<uint64_t>(j)), key_for(9, 0)));
  ASSERT_GT(load_word(good[0], kDir + 1), 0u) << "chunk 0 needs records";
  const auto walk_bad = [&](std::vector<uint8_t> p) {  // an over-long gap prefix at stream bit 0
    store_word(p, kStream, 0u);
    return p;
  };
  const auto header_bad = [&](std::vector<uint8_t> p) {  // T beyond the worst case: index n
    store_word(p, kT, 0xffffffffu);
    return p;
  };
  // The index a plain decode reports for payload j with a corrupt stream, as payload j.
  const auto walk_index = [&](int j) {
    DeviceBuffer<uint8_t> d_p(walk_bad(good[static_cast<size_t>(j)]), stream_);
    DeviceBuffer<float> d_out(1000, stream_);
    uint64_t index = 0;
    gpu.decode(d_p.get(), RngKey{}, d_out.get(), ws.get(), gpu.workspace_bytes(), stream_);
    EXPECT_EQ(cuda::read_status(ws.get(), stream_, &index), gcompErrorCorruptPayload) << "payload " << j;
    return (static_cast<uint64_t>(j) << 40) + index;
  };
  const auto header_index = [](int j) { return (static_cast<uint64_t>(j) << 40) + 1000; };
  struct Scenario {
    int count;
    std::vector<std::pair<int, bool>> bad;  ///< (payload, header corrupt rather than the stream)
    uint64_t index;
  };
  const std::vector<Scenario> scenarios = {
      {9, {{3, false}}, walk_index(3)},
      {9, {{3, false}, {5, true}}, walk_index(3)},
      {9, {{3, true}, {5, false}}, header_index(3)},
      {130, {{70, false}, {100, true}}, walk_index(70)},
      {130, {{66, true}, {100, false}}, header_index(66)},
      {130, {{129, false}}, walk_index(129)},
      {130, {{10, true}, {129, false}}, header_index(10)},
  };
  for (const Scenario& sc : scenarios) {
    std::vector<uint8_t> packed;
    for (int j = 0; j < sc.count; ++j) {
      std::vector<uint8_t> p = good[static_cast<size_t>(j)];
      for (const auto& [at, header] : sc.bad)
        if (at == j) p = header ? header_bad(p) : walk_bad(p);
      packed.insert(packed.end(), p.begin(), p.end());
    }
    DeviceBuffer<uint8_t> d_packed(packed, stream_);
    DeviceBuffer<float> d_out(1000, stream_);
    uint64_t index = 0;
    gpu.decode_reduce(d_packed.get(), bytes, sc.count, nullptr, nullptr, d_out.get(), ws.get(), gpu.workspace_bytes(),
                      stream_);
    EXPECT_EQ(cuda::read_status(ws.get(), stream_, &index), gcompErrorCorruptPayload) << sc.count;
    EXPECT_EQ(index, sc.index) << "P " << sc.count << ": payload " << (index >> 40) << " position "
                               << (index & ((uint64_t{1} << 40) - 1));
  }
  // Then the good payloads reduce exactly (the status and the walkable word are reset per call).
  std::vector<uint8_t> packed;
  std::vector<std::span<const uint8_t>> spans;
  for (const auto& p : good) {
    packed.insert(packed.end(), p.begin(), p.end());
    spans.emplace_back(p);
  }
  DeviceBuffer<uint8_t> d_packed(packed, stream_);
  DeviceBuffer<float> d_out(1000, stream_);
  gpu.decode_reduce(d_packed.get(), bytes, 130, nullptr, nullptr, d_out.get(), ws.get(), gpu.workspace_bytes(),
                    stream_);
  EXPECT_EQ(cuda::read_status(ws.get(), stream_), gcompSuccess);
  std::vector<float> want(1000, 0.0f);
  const std::vector<RngKey> keys(130, RngKey{});
  const std::vector<float> ones(130, 1.0f);
  cpu->decode_reduce(spans, keys, ones, want);
  EXPECT_TRUE(bitwise_equal(d_out.download(), want));
}

// spherical validates first and leaves the output untouched; grid (a one-pass decoder) reports the
// corruption, its output is unspecified (DeviceCodec::decode).
TEST_F(GpuCodecBehaviour, CorruptSphericalAndGridPayloadsAreRejected) {
  const Layout layout({50, 0, 77});
  for (const std::string spec : {"spherical:block=8,bits=5", "grid:step=0.5,bits=3"}) {
    const auto cpu = make_codec(spec, layout);
    cuda::DeviceCodec gpu(spec, layout);
    std::vector<float> x = test_input(layout.num_elems(), 4);
    for (int i = 0; i < 8; ++i) x[static_cast<size_t>(i)] = 0.0f;  // spherical: block 0 has norm 0
    const std::vector<uint8_t> good = encode(*cpu, x, key_for(4, 0));
    std::vector<std::vector<uint8_t>> bad;
    if (spec.rfind("spherical", 0) == 0) {
      std::vector<uint8_t> p = good;
      store_word(p, 1, 0xbf800000u);  // norm -1
      bad.push_back(p);
      p = good;
      const size_t index_word = 17;  // 17 blocks of norms, then the indices: block 0's index is bits 0..4
      store_word(p, index_word, load_word(p, index_word) | 1u);
      bad.push_back(p);
      p = good;
      store_word(p, p.size() / 4 - 1, load_word(p, p.size() / 4 - 1) | 0x80000000u);  // padding (17 x 5 bits)
      bad.push_back(p);
    } else {
      std::vector<uint8_t> p = good;
      store_word(p, 0, (load_word(p, 0) & ~7u) | 4u);  // level -4 = -2^(B-1)
      bad.push_back(p);
      p = good;
      store_word(p, p.size() / 4 - 1, load_word(p, p.size() / 4 - 1) | 0x80000000u);  // padding (127 x 3 bits)
      bad.push_back(p);
    }
    DeviceBuffer<uint8_t> ws(gpu.workspace_bytes(), stream_);
    for (size_t k = 0; k < bad.size(); ++k) {
      EXPECT_THROW(cpu->validate(bad[k]), Error) << spec << " case " << k;
      DeviceBuffer<uint8_t> d_payload(bad[k], stream_);
      DeviceBuffer<float> d_out(static_cast<size_t>(layout.num_elems()), stream_);
      d_out.fill_bytes(0x33);
      gpu.decode(d_payload.get(), key_for(4, 0), d_out.get(), ws.get(), gpu.workspace_bytes(), stream_);
      EXPECT_EQ(cuda::read_status(ws.get(), stream_), gcompErrorCorruptPayload) << spec << " case " << k;
      if (spec.rfind("grid", 0) == 0) continue;  // one-pass decoder: the output is unspecified
      for (float v : d_out.download()) {
        uint32_t u;
        std::memcpy(&u, &v, 4);
        ASSERT_EQ(u, 0x33333333u) << spec << " case " << k << ": output written on error";
      }
    }
  }
}

TEST_F(GpuCodecBehaviour, CodebookRegenerationMatchesCpuBits) {
  struct Range {
    uint64_t first;
    int64_t count;
  };
  const std::vector<Range> ranges = {
      {0, 4099}, {12345677, 1001}, {(uint64_t{1} << 50) - 4096, 4096}, {uint64_t{1} << 33, 513}};
  const std::vector<RngKey> keys = {RngKey{0, 0, 0, 0}, RngKey{0x9e3779b97f4a7c15ull, 3, 1234, 0},
                                    RngKey{42, 7, 0xffffffffu, detail::kStreamDownlink}};
  for (const RngKey& key : keys) {
    for (const Range& r : ranges) {
      DeviceBuffer<double> d_out(static_cast<size_t>(r.count), stream_);
      cuda::codebook_normals(key, r.first, r.count, d_out.get(), stream_);
      sync();
      const std::vector<double> got = d_out.download();
      for (int64_t i = 0; i < r.count; ++i) {
        const double want = detail::codebook_normal(key, r.first + static_cast<uint64_t>(i));
        ASSERT_EQ(std::memcmp(&got[static_cast<size_t>(i)], &want, sizeof want), 0)
            << "codebook index " << r.first + static_cast<uint64_t>(i) << " (seed " << key.seed << "): GPU "
            << got[static_cast<size_t>(i)] << ", CPU " << want;
      }
    }
  }
}

/// Reads index j of a topk payload (w-bit LSB-first stream after the k values).
int64_t topk_index(const std::vector<uint8_t>& payload, int64_t k, int bits, int64_t j) {
  uint64_t v = 0;
  for (int b = 0; b < bits; ++b) {
    const int64_t pos = k * 32 + j * bits + b;
    v |= static_cast<uint64_t>((payload[static_cast<size_t>(pos / 8)] >> (pos % 8)) & 1u) << b;
  }
  return static_cast<int64_t>(v);
}

TEST_F(GpuCodecBehaviour, SampledTopkIsAValidPayloadWithExactlyK) {
  for (const int64_t n : {int64_t{1000}, int64_t{100003}, int64_t{1} << 20}) {
    for (const std::string spec : {"topk:ratio=0.001", "topk:ratio=0.01", "topk:k=1"}) {
      const Layout layout(n);
      const auto cpu = make_codec(spec, layout);
      cuda::DeviceCodec gpu(spec, layout);
      const std::vector<float> x = test_input(n, 21);
      DeviceBuffer<float> d_x(x, stream_);
      DeviceBuffer<uint8_t> d_payload(gpu.encoded_bytes(), stream_);
      DeviceBuffer<uint8_t> ws(gpu.workspace_bytes(), stream_);
      gpu.topk_sampled(d_x.get(), key_for(21, 0), d_payload.get(), ws.get(), gpu.workspace_bytes(), stream_);
      ASSERT_EQ(cuda::read_status(ws.get(), stream_), gcompSuccess);
      const std::vector<uint8_t> payload = d_payload.download();
      EXPECT_NO_THROW(cpu->validate(payload)) << spec << " n=" << n;  // k entries, ascending, finite
      const int64_t k = detail::sparse_k_of(cpu->spec(), n);
      const int bits = static_cast<int>(detail::ceil_log2_u64(static_cast<uint64_t>(n)));
      for (int64_t j = 0; j < k; ++j) {
        const int64_t idx = topk_index(payload, k, bits, j);
        float v;
        std::memcpy(&v, payload.data() + 4 * j, 4);
        ASSERT_EQ(std::memcmp(&v, &x[idx], 4), 0) << spec << ": value " << j << " is not x[" << idx << "]";
      }
    }
  }
}

/// topk_sampled's strided sample as the device draws it (spec §4.4: the DGC stride, the start
/// philox_word(key, kStreamSelect, 0) mod stride), written here from the spec.
struct SampleGrid {
  int64_t start = 0, stride = 1, count = 0;
};
SampleGrid sample_grid(int64_t n, int64_t k, const RngKey& key) {
  const double nd = static_cast<double>(n);
  const double rho = static_cast<double>(k) / nd;
  const double target = std::max(std::ceil(0.01 * nd), std::ceil(2.0 / rho));
  SampleGrid g;
  if (nd > std::ceil(2.0 / rho)) {
    g.stride = static_cast<int64_t>(std::ceil(nd / target / 32.0)) * 32 + 1;
    while (g.stride > 8 && nd / static_cast<double>(g.stride) < target) g.stride -= 8;
    g.stride = std::clamp<int64_t>(g.stride, 1, n);
  }
  g.start = static_cast<int64_t>(detail::philox_word(key, detail::kStreamSelect, 0) % static_cast<uint64_t>(g.stride));
  g.count = (n - g.start + g.stride - 1) / g.stride;
  return g;
}

/// Host reference of DeviceCodec::topk_sampled (spec §4.4, docs/gpu.md): thr = the k_s-th largest
/// sampled magnitude, k_s = clamp(ceil(k / n * count), 1, count); up to 10 rounds lowering thr by
/// 0.8 (a float product) while fewer than 0.8 k elements have |x| >= thr, the last never lowered;
/// then the first k of them in index order when between k and 1.3 k pass, else the exact top-k
/// (`exact`: the CPU codec's payload). `rounds`: the lowerings; `truncated`: which of the two.
std::vector<uint8_t> sampled_topk_reference(const std::vector<float>& x, int64_t k, const RngKey& key,
                                            const std::vector<uint8_t>& exact, int* rounds, bool* truncated) {
  const auto n = static_cast<int64_t>(x.size());
  const SampleGrid g = sample_grid(n, k, key);
  const auto ks = std::clamp<int64_t>(
      static_cast<int64_t>(std::ceil(static_cast<double>(k) / static_cast<double>(n) * static_cast<double>(g.count))),
      1, g.count);
  std::vector<float> sample;
  for (int64_t s = 0; s < g.count; ++s) sample.push_back(std::fabs(x[static_cast<size_t>(g.start + s * g.stride)]));
  std::sort(sample.begin(), sample.end(), std::greater<>());
  float thr = sample[static_cast<size_t>(ks - 1)];
  const auto passing = [&](float t) {
    return static_cast<int64_t>(std::count_if(x.begin(), x.end(), [&](float v) { return std::fabs(v) >= t; }));
  };
  int64_t c = passing(thr);
  *rounds = 0;
  while (*rounds < 9 && static_cast<double>(c) < 0.8 * static_cast<double>(k)) {
    thr = thr * 0.8f;
    ++*rounds;
    c = passing(thr);
  }
  *truncated = c >= k && static_cast<double>(c) <= 1.3 * static_cast<double>(k);
  if (!*truncated) return exact;
  std::vector<int64_t> idx;
  for (int64_t i = 0; i < n && static_cast<int64_t>(idx.size()) < k; ++i)
    if (std::fabs(x[static_cast<size_t>(i)]) >= thr) idx.push_back(i);
  std::vector<uint8_t> payload(exact.size(), 0);  // k values, then the w-bit indices LSB first
  for (int64_t j = 0; j < k; ++j)
    std::memcpy(payload.data() + 4 * j, &x[static_cast<size_t>(idx[static_cast<size_t>(j)])], 4);
  const int bits = static_cast<int>(detail::ceil_log2_u64(static_cast<uint64_t>(n)));
  for (int64_t w = 0; w < (k * bits + 31) / 32; ++w) {
    const uint32_t word = detail::pack_index_word(idx.data(), k, bits, w);
    std::memcpy(payload.data() + 4 * (k + w), &word, 4);
  }
  return payload;
}

/// Magnitudes uniform in [0, 1) with random signs; with `lift` > 0 the sampled positions of `key`
/// hold +-lift instead, so that the sample's threshold is lift and the adaptation lowers it until
/// lift 0.8^r drops into the uniform part.
std::vector<float> sampled_topk_input(int64_t n, int64_t k, const RngKey& key, float lift, uint64_t seed) {
  std::vector<float> x(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) {
    const uint32_t w = detail::philox_word(RngKey{seed, 0, 0, 0}, 0, static_cast<uint64_t>(i));
    const float m = static_cast<float>(w >> 8) * 0x1p-24f;
    x[static_cast<size_t>(i)] = (w & 1u) ? -m : m;
  }
  if (lift > 0.0f) {
    const SampleGrid g = sample_grid(n, k, key);
    for (int64_t i = g.start; i < n; i += g.stride) x[static_cast<size_t>(i)] = (i % 2 == 0) ? lift : -lift;
  }
  return x;
}

// topk_sampled's bytes against the host reference: the first threshold holding (no lift), and a
// sample that overstates it so that 3 lowerings end in the truncate mode, 3 end in the exact
// fallback (too many pass), and all 9 end in the exact fallback (too few pass). The adaptation's
// rounds are counted in one pass over x (count_rounds_kernel), so these are what checks its round
// choice and tile counts against the rounds run one after another.
TEST_F(GpuCodecBehaviour, SampledTopkEqualsTheHostReference) {
  struct Case {
    float lift;
    int rounds;
    bool truncated;
  };
  // Uniform magnitudes below 1, k = 5 % of n, the sample 1 %: lift 0.8^3 = 0.952 leaves 1 % + 4.8 %
  // passing, between k and 1.3 k; lift 1.7 passes only the sample until 1.7 0.8^3 = 0.87 (14 %).
  const Case cases[] = {{0.0f, -1, false}, {0.952f / 0.512f, 3, true}, {1.7f, 3, false}, {1e6f, 9, false}};
  for (const int64_t n : {int64_t{100003}, int64_t{1} << 20}) {
    for (const Case& c : cases) {
      const std::string spec = "topk:ratio=0.05";
      const Layout layout(n);
      const auto cpu = make_codec(spec, layout);
      cuda::DeviceCodec gpu(spec, layout);
      const int64_t k = detail::sparse_k_of(cpu->spec(), n);
      const RngKey key = key_for(23, 0);
      const std::vector<float> x = sampled_topk_input(n, k, key, c.lift, 23);
      int rounds = 0;
      bool truncated = false;
      const std::vector<uint8_t> want = sampled_topk_reference(x, k, key, encode(*cpu, x, key), &rounds, &truncated);
      const std::string at = "n=" + std::to_string(n) + " lift=" + std::to_string(c.lift);
      if (c.rounds >= 0) {  // the input does what it is for
        EXPECT_EQ(rounds, c.rounds) << at;
        EXPECT_EQ(truncated, c.truncated) << at;
      }
      DeviceBuffer<float> d_x(x, stream_);
      DeviceBuffer<uint8_t> d_payload(gpu.encoded_bytes(), stream_);
      DeviceBuffer<uint8_t> ws(gpu.workspace_bytes(), stream_);
      gpu.topk_sampled(d_x.get(), key, d_payload.get(), ws.get(), gpu.workspace_bytes(), stream_);
      ASSERT_EQ(cuda::read_status(ws.get(), stream_), gcompSuccess) << at;
      const std::vector<uint8_t> got = d_payload.download();
      ASSERT_EQ(got.size(), want.size()) << at;
      EXPECT_TRUE(got == want) << at << ": rounds " << rounds << ", " << (truncated ? "truncate" : "exact")
                               << " mode: the payload differs from the reference";
    }
  }
}

// topk_sampled checks finiteness in its first count pass over x (no check_finite pass of its own):
// the smallest bad index is reported, the payload stays untouched, and the next call succeeds.
TEST_F(GpuCodecBehaviour, SampledTopkNonFiniteInputSetsStatusAndLeavesThePayloadUntouched) {
  for (const int64_t n : {int64_t{100003}, int64_t{1} << 20}) {
    for (const float bad : {std::numeric_limits<float>::quiet_NaN(), -std::numeric_limits<float>::infinity()}) {
      const std::string spec = "topk:ratio=0.01";
      cuda::DeviceCodec gpu(spec, Layout(n));
      std::vector<float> x = test_input(n, 22);
      x[77777] = bad;
      x[4321] = bad;
      DeviceBuffer<float> d_x(x, stream_);
      DeviceBuffer<uint8_t> d_payload(gpu.encoded_bytes(), stream_);
      d_payload.fill_bytes(0xab);
      DeviceBuffer<uint8_t> ws(gpu.workspace_bytes(), stream_);
      gpu.topk_sampled(d_x.get(), key_for(22, 0), d_payload.get(), ws.get(), gpu.workspace_bytes(), stream_);
      uint64_t index = 0;
      EXPECT_EQ(cuda::read_status(ws.get(), stream_, &index), gcompErrorNonFinite) << "n=" << n;
      EXPECT_EQ(index, 4321u) << "n=" << n;
      for (uint8_t b : d_payload.download()) ASSERT_EQ(b, 0xab) << "n=" << n << ": payload written on error";
      x[77777] = 1.0f;
      x[4321] = -2.0f;
      d_x.upload(x);
      gpu.topk_sampled(d_x.get(), key_for(22, 0), d_payload.get(), ws.get(), gpu.workspace_bytes(), stream_);
      EXPECT_EQ(cuda::read_status(ws.get(), stream_), gcompSuccess) << "n=" << n;
    }
  }
}

// Corruptions the one-pass decoders must each see (DensePlaneCodec / SignCodec / NaturalCodec
// validate), also in the last, partly filled group of 32 (n = 1001).
TEST_F(GpuCodecBehaviour, OnePassDecodersSeeEveryCorruption) {
  const Layout layout(1001);
  struct Case {
    std::string spec;
    std::string what;
    std::function<void(std::vector<uint8_t>&)> edit;
  };
  const std::vector<Case> cases = {
      {"dither:levels=4,block=512", "negative zero scale", [](auto& p) { store_word(p, 1, 0x80000000u); }},
      {"dither:levels=4,block=512", "padding bit in the last group", [](auto& p) { p[p.size() - 1] |= 0x80; }},
      {"dither:levels=4,block=512", "sign on a zero level",
       [](auto& p) {
         for (size_t w = 0; w < 4; ++w) store_word(p, 2 + w, 0);  // group 0: all levels 0
         store_word(p, 2, 1u);                                    // sign of element 0
       }},
      {"dither:levels=5,block=512", "level above levels",
       [](auto& p) {
         store_word(p, 2 + 1, 0xffffffffu);
         store_word(p, 2 + 2, 0xffffffffu);
         store_word(p, 2 + 3, 0xffffffffu);
       }},
      {"sign:block=64", "padding bit of the last word", [](auto& p) { p[p.size() - 1] |= 0x80; }},
      {"natural", "code 255", [](auto& p) { p[4 * 32 + 7] = 255; }},
      {"natural", "nonzero padding byte", [](auto& p) { p[p.size() - 1] = 1; }},
      {"identity", "infinite value", [](auto& p) { store_word(p, 1000, 0x7f800000u); }},
      {"grid:bits=8", "field -128 in the last quad", [](auto& p) { p[1000] = 0x80; }},
      {"grid:bits=8", "padding byte", [](auto& p) { p[p.size() - 1] = 1; }},
      {"grid:bits=16", "field -2^15 of the last element",
       [](auto& p) {
         p[2 * 1000] = 0x00;
         p[2 * 1000 + 1] = 0x80;
       }},
      {"grid:bits=16", "padding bits of the last word", [](auto& p) { p[p.size() - 1] = 0x40; }},
      {"grid:step=1e-6,bits=32", "field -2^31", [](auto& p) { store_word(p, 517, 0x80000000u); }},
      {"grid:step=0.5,bits=3", "field -4 in the last quad",
       [](auto& p) {
         uint32_t w = load_word(p, 1000 * 3 / 32);  // field 1000 at bits 3000 .. 3002
         w = (w & ~(7u << (3000 % 32))) | (4u << (3000 % 32));
         store_word(p, 1000 * 3 / 32, w);
       }},
      {"grid:step=0.5,bits=3", "padding bit",
       [](auto& p) { store_word(p, p.size() / 4 - 1, load_word(p, p.size() / 4 - 1) | 0x80000000u); }},
  };
  for (const Case& c : cases) {
    const auto cpu = make_codec(c.spec, layout);
    cuda::DeviceCodec gpu(c.spec, layout);
    std::vector<uint8_t> payload = encode(*cpu, test_input(1001, 6), key_for(6, 0));
    c.edit(payload);
    EXPECT_THROW(cpu->validate(payload), Error) << c.spec << ": " << c.what << ": the CPU accepts it";
    DeviceBuffer<uint8_t> d_payload(payload, stream_);
    DeviceBuffer<float> d_out(1001, stream_);
    DeviceBuffer<uint8_t> ws(gpu.workspace_bytes(), stream_);
    gpu.decode(d_payload.get(), RngKey{}, d_out.get(), ws.get(), gpu.workspace_bytes(), stream_);
    EXPECT_EQ(cuda::read_status(ws.get(), stream_), gcompErrorCorruptPayload) << c.spec << ": " << c.what;
  }
}

// ------------------------------------------- the cuda Session's fused decode stores

// DeviceCodecAccess (cuda/dispatch/session_decode.hpp): the Session step in the decoders' final
// store (the quad decoders', sdither's chunk walk, spherical's block loop: the last launch's)
// against decode_reduce / decode followed by the separate steps, with the host's
// element math (gcomp/detail/session_math.hpp, checked against the host-f32 calls by
// tests/unit/test_session_math.cpp), bit for bit. 2 payloads: sums of two signs tie (the vote's
// tie rule); 130 payloads: three launches of at most 64 (the step in the last only); the output
// arrays 16-byte aligned and not (element loads and stores).
const std::vector<std::string> kStoreSpecs = {
    "dither:levels=2,norm=l2,block=8",
    "terngrad",
    "natdither:levels=3,norm=l2,block=256",
    "sign:block=64",
    "sign:scale=none",
    "natural",
    "identity",
    "grid:step=0.01,bits=6",
    "grid:step=0.05,bits=8",
    "grid:step=1e-6,bits=32",
    // The tile merge's store (cuda/topk/sparse_merge_kernels.cuh): index words read in place,
    // index=rice and randk through index lists in batches (P = 130: several launches).
    "topk:ratio=0.3",
    "topk:k=7,index=rice",
    "randk:k=50,unbiased=1",
    "randk:ratio=0.2,unbiased=0",
    // The last payload's launch of the sdither chunk walk and the spherical block loop.
    "sdither:levels=1,norm=l2",
    "sdither:levels=2,norm=linf,block=8",
    "spherical:block=8,bits=4",
};
const std::vector<std::vector<int64_t>> kStoreLayouts = {{1}, {33}, {4097}, {5, 0, 4097, 31}};

using StoreParam = std::tuple<std::string, std::vector<int64_t>, int>;

class GpuSessionStores : public GpuParamFixture<StoreParam> {};

TEST_P(GpuSessionStores, FusedStoresEqualDecodeReduceThenTheSeparateSteps) {
  using cuda::detail::DeviceCodecAccess;
  using cuda::detail::SessionStep;
  using cuda::detail::StoreKind;
  namespace m = gcomp::detail;
  const auto& [spec, segs, P] = GetParam();
  const Layout layout(segs);
  const int64_t n = layout.num_elems();
  const auto N = static_cast<size_t>(n);
  const auto cpu = make_codec(spec, layout);
  cuda::DeviceCodec gpu(spec, layout);
  ASSERT_TRUE(DeviceCodecAccess::has_decode_store(gpu)) << spec;
  DeviceBuffer<uint8_t> ws(gpu.workspace_bytes(), stream_);
  const auto expect_ok = [&](const char* what) {
    uint64_t index = 0;
    EXPECT_EQ(cuda::read_status(ws.get(), stream_, &index), gcompSuccess) << spec << " " << what << " at " << index;
  };

  // P payloads (five distinct messages, repeated), a stride that is not tight.
  const size_t bytes = cpu->encoded_bytes();
  const size_t stride = (bytes + 3) / 4 * 4 + 8;
  std::vector<uint8_t> packed(stride * static_cast<size_t>(P), 0);
  std::vector<RngKey> keys;
  for (int j = 0; j < P; ++j) {
    const RngKey key = key_for(61, static_cast<uint32_t>(j % 5));
    const std::vector<uint8_t> pay = encode(*cpu, test_input(n, 70 + j % 5), key);
    std::memcpy(packed.data() + stride * static_cast<size_t>(j), pay.data(), bytes);
    keys.push_back(key);
  }
  DeviceBuffer<uint8_t> d_payloads(packed, stream_);
  DeviceBuffer<float> d_acc(N, stream_);
  gpu.decode_reduce(d_payloads.get(), stride, P, nullptr, keys.data(), d_acc.get(), ws.get(), gpu.workspace_bytes(),
                    stream_);
  expect_ok("decode_reduce");
  const std::vector<float> sum = d_acc.download();
  // The sum itself, and a weighted reduce, against the CPU codec's decode_accumulate in payload
  // order (P = 130 crosses the launches' batches).
  {
    std::vector<float> weights;
    for (int j = 0; j < P; ++j) weights.push_back(0.25f * static_cast<float>(j % 7) - 0.5f);
    for (const bool weighted : {false, true}) {
      std::vector<float> want(N, 0.0f);
      for (int j = 0; j < P; ++j) {
        const std::vector<uint8_t> pay(
            packed.begin() + static_cast<std::ptrdiff_t>(stride * static_cast<size_t>(j)),
            packed.begin() + static_cast<std::ptrdiff_t>(stride * static_cast<size_t>(j) + bytes));
        cpu->decode_accumulate(pay, keys[static_cast<size_t>(j)], weighted ? weights[static_cast<size_t>(j)] : 1.0f,
                               want);
      }
      if (!weighted) {
        EXPECT_TRUE(bitwise_equal(sum, want)) << spec << " decode_reduce";
        continue;
      }
      DeviceBuffer<float> d_weighted(N, stream_);
      d_weighted.fill_bytes(0x7f);
      gpu.decode_reduce(d_payloads.get(), stride, P, weights.data(), keys.data(), d_weighted.get(), ws.get(),
                        gpu.workspace_bytes(), stream_);
      expect_ok("weighted decode_reduce");
      EXPECT_TRUE(bitwise_equal(d_weighted.download(), want)) << spec << " weighted decode_reduce";
    }
  }

  std::vector<float> y = test_input(n, 91);
  for (float& v : y) v *= 0.125f;
  const float a = static_cast<float>(1.0 / static_cast<double>(P));
  const float lr = 0.05f, alpha = 0.3f;
  // The step's arrays at an element offset of 0 (16-byte aligned) and 1 (not).
  DeviceBuffer<float> d_y(N + 1, stream_), d_u(N + 1, stream_), d_w(N + 1, stream_);
  for (const size_t off : {size_t{0}, size_t{1}}) {
    std::vector<float> y_off(N + 1, 0.0f);
    std::copy(y.begin(), y.end(), y_off.begin() + static_cast<std::ptrdiff_t>(off));
    d_y.upload(y_off);
    const auto run = [&](SessionStep st, int count) {
      d_acc.fill_bytes(0x7f);
      d_u.fill_bytes(0x7f);
      d_w.fill_bytes(0x7f);
      DeviceCodecAccess::decode_reduce_store(gpu, d_payloads.get(), stride, count, nullptr, keys.data(), d_acc.get(),
                                             st, ws.get(), gpu.workspace_bytes(), stream_);
      expect_ok("decode_reduce_store");
    };
    const auto part = [&](const DeviceBuffer<float>& b) {
      std::vector<float> v = b.download();
      return std::vector<float>(v.begin() + static_cast<std::ptrdiff_t>(off),
                                v.begin() + static_cast<std::ptrdiff_t>(off + N));
    };
    std::vector<float> want(N), want2(N);
    SessionStep st;
    st.y = d_y.get() + off;
    st.u = d_u.get() + off;
    st.w = d_w.get() + off;
    st.a = a;
    st.b = lr;
    st.alpha = alpha;

    st.kind = StoreKind::kScale;  // acc = a sum
    run(st, P);
    for (size_t i = 0; i < N; ++i) want[i] = m::mul_rn(a, sum[i]);
    EXPECT_TRUE(bitwise_equal(d_acc.download(), want)) << spec << " scale, offset " << off;

    st.kind = StoreKind::kScaleTwice;  // u = lr (a sum), and b = 1
    for (const float b : {lr, 1.0f}) {
      st.b = b;
      run(st, P);
      for (size_t i = 0; i < N; ++i) want[i] = m::mul_rn(b, m::mul_rn(a, sum[i]));
      EXPECT_TRUE(bitwise_equal(part(d_u), want)) << spec << " scale twice, b " << b << ", offset " << off;
    }
    st.b = lr;

    st.kind = StoreKind::kMeanAdd;  // w = y + a sum
    run(st, P);
    for (size_t i = 0; i < N; ++i) want[i] = m::lincomb_f(1.0f, y[i], 1.0f, m::mul_rn(a, sum[i]));
    EXPECT_TRUE(bitwise_equal(part(d_w), want)) << spec << " mean add, offset " << off;

    st.kind = StoreKind::kVote;  // u = lr vote(sum)
    for (const bool tie : {false, true}) {
      st.tie_to_zero = tie;
      run(st, P);
      for (size_t i = 0; i < N; ++i) want[i] = m::vote_f(sum[i], lr, tie);
      EXPECT_TRUE(bitwise_equal(part(d_u), want)) << spec << " vote, tie " << tie << ", offset " << off;
    }

    st.kind = StoreKind::kDiana;  // g = y + a sum; u = lr g or g; w = y + alpha (a sum)
    for (const bool scale_u : {true, false}) {
      st.scale_u = scale_u;
      run(st, P);
      for (size_t i = 0; i < N; ++i) {
        const float mean = m::mul_rn(a, sum[i]);
        const float g = m::lincomb_f(1.0f, y[i], 1.0f, mean);
        want[i] = scale_u ? m::mul_rn(lr, g) : g;
        want2[i] = m::lincomb_f(1.0f, y[i], alpha, mean);
      }
      EXPECT_TRUE(bitwise_equal(part(d_u), want)) << spec << " diana g, scale_u " << scale_u << ", offset " << off;
      EXPECT_TRUE(bitwise_equal(part(d_w), want2)) << spec << " diana h_out, offset " << off;
    }

    st.kind = StoreKind::kMeanAdd;  // a reduce of no payload: the step on a zero sum
    run(st, 0);
    for (size_t i = 0; i < N; ++i) want[i] = m::lincomb_f(1.0f, y[i], 1.0f, m::mul_rn(a, 0.0f));
    EXPECT_TRUE(bitwise_equal(part(d_w), want)) << spec << " mean add of no payload, offset " << off;
  }

  // decode_store: one message decoded and scaled (a full received message: the size rule first).
  DeviceBuffer<float> d_dec(N, stream_), d_out(N + 1, stream_);
  gpu.decode(d_payloads.get(), keys[0], d_dec.get(), ws.get(), gpu.workspace_bytes(), stream_);
  expect_ok("decode");
  const std::vector<float> dec = d_dec.download();
  std::vector<float> want(N);
  for (size_t i = 0; i < N; ++i) want[i] = m::mul_rn(lr, dec[i]);
  SessionStep st;
  st.kind = StoreKind::kScale;
  st.a = lr;
  DeviceBuffer<uint64_t> d_size(std::vector<uint64_t>{bytes}, stream_);
  for (const size_t off : {size_t{0}, size_t{1}}) {
    for (const bool received : {false, true}) {
      d_out.fill_bytes(0x7f);
      DeviceCodecAccess::decode_store(gpu, d_payloads.get(), received ? d_size.get() : nullptr, keys[0],
                                      d_out.get() + off, st, ws.get(), gpu.workspace_bytes(), stream_);
      expect_ok("decode_store");
      std::vector<float> got = d_out.download();
      got = std::vector<float>(got.begin() + static_cast<std::ptrdiff_t>(off),
                               got.begin() + static_cast<std::ptrdiff_t>(off + N));
      EXPECT_TRUE(bitwise_equal(got, want)) << spec << " decode and scale, offset " << off << ", received " << received;
    }
  }
}

// A corrupt payload among many: the fused store reports it as decode_reduce does (the outputs are
// then unspecified; the Session fails the step and keeps its state).
TEST_P(GpuSessionStores, CorruptPayloadSetsStatus) {
  using cuda::detail::DeviceCodecAccess;
  using cuda::detail::SessionStep;
  using cuda::detail::StoreKind;
  const auto& [spec, segs, P] = GetParam();
  const bool sparse = spec.rfind("topk", 0) == 0 || spec.rfind("randk", 0) == 0;
  if (spec != "sign:block=64" && spec != "natural" && !sparse)
    GTEST_SKIP() << "one corruption per decoder family is enough";
  if (segs.size() != 1 || segs[0] % 32 == 0) GTEST_SKIP() << "one segment with padding after its last element";
  const Layout layout(segs);
  const int64_t n = layout.num_elems();
  const auto cpu = make_codec(spec, layout);
  cuda::DeviceCodec gpu(spec, layout);
  DeviceBuffer<uint8_t> ws(gpu.workspace_bytes(), stream_);
  const size_t bytes = cpu->encoded_bytes();
  const size_t stride = (bytes + 3) / 4 * 4;
  std::vector<uint8_t> packed(stride * static_cast<size_t>(P), 0);
  for (int j = 0; j < P; ++j) {
    const std::vector<uint8_t> pay = encode(*cpu, test_input(n, 5), key_for(5, 0));
    std::memcpy(packed.data() + stride * static_cast<size_t>(j), pay.data(), bytes);
  }
  const int bad = P - 1;  // in the last launch
  if (sparse) {           // a NaN value (randk's values after its 8-byte header)
    const float nan = std::numeric_limits<float>::quiet_NaN();
    std::memcpy(packed.data() + stride * static_cast<size_t>(bad) + (spec.rfind("randk", 0) == 0 ? 8 : 0), &nan, 4);
  } else {
    packed[stride * static_cast<size_t>(bad) + bytes - 1] = 0xff;  // padding / code 255
  }
  std::vector<uint8_t> last(packed.begin() + static_cast<std::ptrdiff_t>(stride * static_cast<size_t>(bad)),
                            packed.begin() + static_cast<std::ptrdiff_t>(stride * static_cast<size_t>(bad) + bytes));
  EXPECT_THROW(cpu->validate(last), Error) << spec;
  DeviceBuffer<uint8_t> d_payloads(packed, stream_);
  DeviceBuffer<float> d_acc(static_cast<size_t>(n), stream_), d_u(static_cast<size_t>(n), stream_);
  std::vector<RngKey> keys(static_cast<size_t>(P), key_for(5, 0));
  SessionStep st;
  st.kind = StoreKind::kVote;
  st.u = d_u.get();
  DeviceCodecAccess::decode_reduce_store(gpu, d_payloads.get(), stride, P, nullptr, keys.data(), d_acc.get(), st,
                                         ws.get(), gpu.workspace_bytes(), stream_);
  uint64_t index = 0;
  EXPECT_EQ(cuda::read_status(ws.get(), stream_, &index), gcompErrorCorruptPayload) << spec;
  EXPECT_EQ(index >> 40, static_cast<uint64_t>(bad)) << spec;
}

INSTANTIATE_TEST_SUITE_P(FusedStoreCodecs, GpuSessionStores,
                         testing::Combine(testing::ValuesIn(kStoreSpecs), testing::ValuesIn(kStoreLayouts),
                                          testing::Values(2, 3, 130)),
                         [](const testing::TestParamInfo<StoreParam>& p) {
                           return sanitize(std::get<0>(p.param)) + "_n" + layout_name(std::get<1>(p.param)) + "_p" +
                                  std::to_string(std::get<2>(p.param));
                         });

// Every device codec has a fused store: the Session runs no separate pass after a decode.
TEST_F(GpuCodecBehaviour, EveryCodecHasAFusedStore) {
  for (const char* spec :
       {"topk:k=5", "randk:k=5", "topk:k=5,index=rice", "sdither:levels=1,norm=l2", "spherical:block=8,bits=4"})
    EXPECT_TRUE(cuda::detail::DeviceCodecAccess::has_decode_store(cuda::DeviceCodec(spec, Layout(100)))) << spec;
  for (const std::string& spec : kStoreSpecs)
    EXPECT_TRUE(cuda::detail::DeviceCodecAccess::has_decode_store(cuda::DeviceCodec(spec, Layout(100)))) << spec;
}

}  // namespace
}  // namespace gcomp::test
