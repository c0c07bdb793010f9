// SPDX-License-Identifier: Apache-2.0
// The C ABI (gcomp.h) against the C++ API: codec plans give the same payload bytes and decodes as
// gcomp::Codec, sessions over C communicator handles give bitwise the C++ Session's updates, and
// every bad input returns its exact status, a last-error text naming the bad argument (thread-local
// and per handle) and untouched outputs. Exceptions never cross the ABI (bad_alloc ->
// gcompErrorOutOfMemory, a foreign exception -> gcompErrorInternal).
#include "common/test_util.hpp"

#include <gcomp/comm.hpp>
#include <gcomp/detail/half.hpp>
#include <gcomp/gcomp.h>
#include <gcomp/session.hpp>
#include <gcomp/wire.hpp>

#include <gtest/gtest.h>

#include <cmath>
#include <cstddef>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <limits>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

using namespace gcomp;

namespace {

/// status == expected and the thread-local last error contains `needle`.
testing::AssertionResult failed_with(gcompStatus_t st, gcompStatus_t expected, const std::string& needle) {
  const std::string last = gcompGetLastError();
  if (st != expected)
    return testing::AssertionFailure() << "status " << st << " (" << gcompGetErrorString(st) << "), expected "
                                       << expected << " (" << gcompGetErrorString(expected)
                                       << "); last error: " << last;
  if (last.find(needle) == std::string::npos)
    return testing::AssertionFailure() << "last error \"" << last << "\" does not mention \"" << needle << "\"";
  return testing::AssertionSuccess();
}

#define EXPECT_FAIL(call, expected, needle) EXPECT_TRUE(failed_with((call), (expected), (needle)))
#define ASSERT_OK(call)                                                   \
  do {                                                                    \
    const gcompStatus_t st_ = (call);                                     \
    ASSERT_EQ(st_, gcompSuccess) << #call << ": " << gcompGetLastError(); \
  } while (0)

/// RAII for test handles.
struct PlanHolder {
  gcompPlan_t plan = nullptr;
  ~PlanHolder() { EXPECT_EQ(gcompPlanDestroy(plan), gcompSuccess); }
};

gcompCodecConfig_t codec_config(const char* spec, uint64_t seed) {
  gcompCodecConfig_t c = GCOMP_CODEC_CONFIG_INITIALIZER;
  c.codec_spec = spec;
  c.seed = seed;
  return c;
}

bool doubles_equal(const std::vector<double>& a, const std::vector<double>& b) {
  return a.size() == b.size() && (a.empty() || std::memcmp(a.data(), b.data(), a.size() * sizeof(double)) == 0);
}

// ------------------------------------------------------------------------------------------------
// Versions, strings, configs

TEST(CapiVersion, GetVersionEqualsHeader) {
  EXPECT_EQ(gcompGetVersion(), GCOMP_VERSION_CODE);
  EXPECT_STREQ(gcompGetErrorString(gcompErrorOutOfMemory), "out of memory");
  EXPECT_STREQ(gcompGetErrorString(static_cast<gcompStatus_t>(77)), "unknown status");
}

TEST(CapiConfig, SessionConfigsOfOlderHeadersAndBadDelayFields) {
  // A config built with the header before the delay schedule (size up to `backend`) or before
  // `backend` is accepted and gets the defaults; a bad delay_mode or table length is rejected.
  gcompComm_t comm = nullptr;
  ASSERT_EQ(gcompCommCreateLocalGroup(1, 60000, &comm), gcompSuccess);
  const int64_t seg = 8;
  for (size_t size : {offsetof(gcompSessionConfig_t, delay_mode), offsetof(gcompSessionConfig_t, backend)}) {
    gcompSessionConfig_t c = GCOMP_SESSION_CONFIG_INITIALIZER;
    c.size = size;
    c.delay_mode = static_cast<gcompDelayMode_t>(3);  // beyond `size`: never read
    gcompSession_t s = nullptr;
    EXPECT_EQ(gcompSessionCreate(&s, comm, &c, &seg, 1), gcompSuccess) << size << ": " << gcompGetLastError();
    EXPECT_EQ(gcompSessionDestroy(s), gcompSuccess);
  }
  gcompSessionConfig_t c = GCOMP_SESSION_CONFIG_INITIALIZER;
  c.delay_mode = static_cast<gcompDelayMode_t>(3);
  gcompSession_t s = nullptr;
  EXPECT_EQ(gcompSessionCreate(&s, comm, &c, &seg, 1), gcompErrorInvalidArgument);
  EXPECT_NE(std::string(gcompGetLastError()).find("delay_mode"), std::string::npos) << gcompGetLastError();
  c.delay_mode = gcompDelayTable;
  c.delay_table_len = 4;  // with a NULL table
  EXPECT_EQ(gcompSessionCreate(&s, comm, &c, &seg, 1), gcompErrorInvalidArgument);
  const int32_t table[] = {0, 2};
  c.delay_table = table;
  c.delay_table_len = 2;
  c.delay = 1;  // entry 2 is above the bound
  EXPECT_EQ(gcompSessionCreate(&s, comm, &c, &seg, 1), gcompErrorInvalidArgument);
  EXPECT_NE(std::string(gcompGetLastError()).find("delay_table[1]"), std::string::npos) << gcompGetLastError();
  c.delay = 2;
  EXPECT_EQ(gcompSessionCreate(&s, comm, &c, &seg, 1), gcompSuccess) << gcompGetLastError();
  EXPECT_EQ(gcompSessionDestroy(s), gcompSuccess);
  EXPECT_EQ(gcompCommDestroy(comm), gcompSuccess);
}

TEST(CapiConfig, SessionInitializerEqualsCppDefaults) {
  const gcompSessionConfig_t c = GCOMP_SESSION_CONFIG_INITIALIZER;
  const SessionConfig d;
  EXPECT_EQ(c.size, sizeof(gcompSessionConfig_t));
  EXPECT_EQ(c.magic, GCOMP_SESSION_CONFIG_MAGIC);
  EXPECT_EQ(c.version, static_cast<uint32_t>(GCOMP_VERSION_CODE));
  EXPECT_STREQ(c.algorithm, algorithm_name(d.algorithm));
  EXPECT_EQ(c.codec_spec, d.codec);
  EXPECT_EQ(c.server_codec_spec, d.server_codec);
  EXPECT_EQ(c.lr, d.lr);
  EXPECT_EQ(c.alpha, d.alpha);
  EXPECT_EQ(c.momentum, d.momentum);
  EXPECT_EQ(c.nesterov != 0, d.nesterov);
  EXPECT_EQ(c.delay, d.delay);
  EXPECT_EQ(c.seed, d.seed);
  EXPECT_EQ(static_cast<int>(c.nonfinite), static_cast<int>(d.nonfinite));
  EXPECT_EQ(c.server == gcompServerSharded, d.server == ServerMode::kSharded);
  EXPECT_EQ(static_cast<int>(c.prox), static_cast<int>(d.prox));
  EXPECT_EQ(c.prox_lambda, d.prox_lambda);
  EXPECT_EQ(c.tie_to_zero != 0, d.tie_to_zero);
  EXPECT_EQ(c.shared_scale != 0, d.shared_scale);
  EXPECT_EQ(static_cast<int>(c.compensation), static_cast<int>(d.compensation));
  EXPECT_EQ(c.hessian_product, nullptr);
  EXPECT_EQ(c.hessian_diagonal, nullptr);
  EXPECT_EQ(static_cast<int>(c.delay_mode), static_cast<int>(d.delay_mode));
  EXPECT_EQ(c.delay_table, nullptr);
  EXPECT_EQ(c.delay_table_len, 0);
}

TEST(CapiConfig, WrongSizeMagicVersionRejected) {
  const int64_t n = 10;
  gcompPlan_t plan = nullptr;
  gcompCodecConfig_t c = codec_config("identity", 0);
  c.size = sizeof(gcompCodecConfig_t) - 8;
  EXPECT_FAIL(gcompPlanCreate(&plan, &c, &n, 1), gcompErrorInvalidArgument, "config->size");
  c = codec_config("identity", 0);
  c.magic = GCOMP_SESSION_CONFIG_MAGIC;  // a session config's magic
  EXPECT_FAIL(gcompPlanCreate(&plan, &c, &n, 1), gcompErrorInvalidArgument, "config->magic");
  c = codec_config("identity", 0);
  c.version = GCOMP_VERSION_CODE + 1;
  EXPECT_FAIL(gcompPlanCreate(&plan, &c, &n, 1), gcompErrorInvalidArgument, "config->version");
  c.version = 0;
  EXPECT_FAIL(gcompPlanCreate(&plan, &c, &n, 1), gcompErrorInvalidArgument, "config->version");
  gcompCodecConfig_t garbage;
  std::memset(&garbage, 0xA5, sizeof garbage);
  EXPECT_FAIL(gcompPlanCreate(&plan, &garbage, &n, 1), gcompErrorInvalidArgument, "GCOMP_CODEC_CONFIG_INITIALIZER");
  c = codec_config(nullptr, 0);
  EXPECT_FAIL(gcompPlanCreate(&plan, &c, &n, 1), gcompErrorInvalidArgument, "config->codec_spec");
  EXPECT_EQ(plan, nullptr);

  gcompComm_t comm = nullptr;
  ASSERT_OK(gcompCommCreateLocalGroup(1, 0, &comm));
  gcompSession_t s = nullptr;
  gcompSessionConfig_t sc = GCOMP_SESSION_CONFIG_INITIALIZER;
  sc.size = 0;
  EXPECT_FAIL(gcompSessionCreate(&s, comm, &sc, &n, 1), gcompErrorInvalidArgument, "config->size");
  sc = GCOMP_SESSION_CONFIG_INITIALIZER;
  sc.magic = GCOMP_CODEC_CONFIG_MAGIC;
  EXPECT_FAIL(gcompSessionCreate(&s, comm, &sc, &n, 1), gcompErrorInvalidArgument, "config->magic");
  sc = GCOMP_SESSION_CONFIG_INITIALIZER;
  sc.version = 99;
  EXPECT_FAIL(gcompSessionCreate(&s, comm, &sc, &n, 1), gcompErrorInvalidArgument, "config->version");
  EXPECT_EQ(s, nullptr);
  EXPECT_EQ(gcompCommDestroy(comm), gcompSuccess);
}

// ------------------------------------------------------------------------------------------------
// Plans

struct PlanCase {
  const char* spec;
  std::vector<int64_t> segments;
};

class CapiPlanRoundTrip : public testing::TestWithParam<PlanCase> {};

TEST_P(CapiPlanRoundTrip, BytesAndDecodeEqualCppApi) {
  const PlanCase& pc = GetParam();
  const uint64_t seed = 0x1234;
  const Layout layout(pc.segments);
  const auto codec = make_codec(pc.spec, layout);
  const auto x = test::gaussian(layout.num_elems(), 11);

  PlanHolder h;
  const gcompCodecConfig_t cfg = codec_config(pc.spec, seed);
  ASSERT_OK(gcompPlanCreate(&h.plan, &cfg, pc.segments.data(), static_cast<int>(pc.segments.size())));
  size_t bytes = 0;
  int64_t n = -1;
  double bits = 0;
  ASSERT_OK(gcompPlanEncodedBytes(h.plan, &bytes));
  ASSERT_OK(gcompPlanNumElems(h.plan, &n));
  ASSERT_OK(gcompPlanEncodedBits(h.plan, &bits));
  EXPECT_EQ(bytes, codec->encoded_bytes());
  EXPECT_EQ(n, layout.num_elems());
  EXPECT_EQ(bits, codec->encoded_bits());
  gcompGuaranteeKind_t kind{};
  double omega = -1, delta = -1;
  ASSERT_OK(gcompPlanGuarantee(h.plan, &kind, &omega, &delta));
  const Guarantee g = codec->guarantee();
  EXPECT_EQ(kind == gcompGuaranteeUnbiased, g.kind == Guarantee::Kind::kUnbiased);
  EXPECT_EQ(kind == gcompGuaranteeContractive, g.kind == Guarantee::Kind::kContractive);
  if (kind == gcompGuaranteeUnbiased) {
    EXPECT_EQ(omega, g.omega);
  }
  if (kind == gcompGuaranteeContractive) {
    EXPECT_EQ(delta, g.delta);
  }

  for (uint32_t rank : {0u, 3u}) {
    const uint32_t step = 17 + rank;
    const RngKey key{seed, rank, step, 0};
    std::vector<uint8_t> payload(bytes + 5, 0xCD);  // larger buffers are fine; the tail is untouched
    ASSERT_OK(gcompEncode(h.plan, x.data(), rank, step, payload.data(), payload.size()));
    const std::vector<uint8_t> want = test::encode(*codec, x, key);
    EXPECT_TRUE(
        test::bytes_equal(std::vector<uint8_t>(payload.begin(), payload.begin() + static_cast<long>(bytes)), want));
    for (size_t i = bytes; i < payload.size(); ++i) EXPECT_EQ(payload[i], 0xCD);

    std::vector<float> out(x.size(), 1.0f);
    ASSERT_OK(gcompDecode(h.plan, payload.data(), bytes, rank, step, out.data()));
    EXPECT_TRUE(test::bitwise_equal(out, test::decode(*codec, want, key)));

    std::vector<float> acc(x.size(), 0.5f), acc_want(x.size(), 0.5f);
    ASSERT_OK(gcompDecodeAccumulate(h.plan, payload.data(), bytes, rank, step, 0.25f, acc.data()));
    codec->decode_accumulate(want, key, 0.25f, acc_want);
    EXPECT_TRUE(test::bitwise_equal(acc, acc_want));

    // Framing equals gcomp::frame_payload, and parsing finds the raw payload again.
    size_t framed_bytes = 0;
    ASSERT_OK(gcompPlanFramedBytes(h.plan, &framed_bytes));
    std::vector<uint8_t> framed(framed_bytes);
    ASSERT_OK(gcompFramePayload(h.plan, payload.data(), bytes, rank, step, framed.data(), framed.size()));
    EXPECT_TRUE(test::bytes_equal(framed, frame_payload(*codec, key, want)));
    uint32_t r = 99, s = 99;
    size_t off = 0;
    ASSERT_OK(gcompParseFrame(h.plan, framed.data(), framed.size(), &r, &s, &off));
    EXPECT_EQ(r, rank);
    EXPECT_EQ(s, step);
    ASSERT_LE(off + bytes, framed.size());
    if (bytes > 0) {
      EXPECT_EQ(std::memcmp(framed.data() + off, want.data(), bytes), 0);
    }
  }
}

INSTANTIATE_TEST_SUITE_P(
    Codecs, CapiPlanRoundTrip,
    testing::Values(PlanCase{"identity", {33}}, PlanCase{"dither:levels=4,norm=linf,block=256", {300, 1, 700}},
                    PlanCase{"topk:ratio=0.1,index=rice", {50, 50}}, PlanCase{"sdither:levels=2", {64, 3}},
                    PlanCase{"dither:levels=2,norm=l2", {31, 32, 33}}, PlanCase{"terngrad", {100, 57}},
                    PlanCase{"sign:block=64", {129}}, PlanCase{"topk:ratio=0.1", {50, 50}},
                    PlanCase{"randk:k=7", {40, 0, 13}}, PlanCase{"natural", {65}}, PlanCase{"identity", {0}}),
    [](const testing::TestParamInfo<PlanCase>& p) { return "case" + std::to_string(p.index); });

TEST(CapiPlan, ShortPayloadsOfVariableLengthCodecs) {
  // docs/wire-format.md §6: the used bytes of an sdither or index=rice topk payload decode, frame
  // and parse like the full payload.
  const int64_t segs[2] = {300, 41};
  const Layout layout(std::vector<int64_t>{300, 41});
  auto x = test::gaussian(341, 3);
  for (size_t i = 20; i < 120; ++i) x[i] += 50.0f;  // top-k in one run: a short index stream
  for (const char* spec : {"sdither:levels=2,chunk=16", "topk:k=60,index=rice", "dither"}) {
    SCOPED_TRACE(spec);
    const auto codec = make_codec(spec, layout);
    PlanHolder h;
    const gcompCodecConfig_t cfg = codec_config(spec, 7);
    ASSERT_OK(gcompPlanCreate(&h.plan, &cfg, segs, 2));
    size_t bytes = 0;
    ASSERT_OK(gcompPlanEncodedBytes(h.plan, &bytes));
    std::vector<uint8_t> payload(bytes);
    ASSERT_OK(gcompEncode(h.plan, x.data(), 1, 4, payload.data(), bytes));
    size_t used = 0;
    ASSERT_OK(gcompPayloadUsedBytes(h.plan, payload.data(), bytes, &used));
    EXPECT_EQ(used, codec->used_bytes(payload));
    size_t again = 0;
    ASSERT_OK(gcompPayloadUsedBytes(h.plan, payload.data(), used, &again));
    EXPECT_EQ(again, used);
    if (!codec->variable_length()) {
      EXPECT_EQ(used, bytes);
      EXPECT_FAIL(gcompDecode(h.plan, payload.data(), bytes - 4, 1, 4, x.data()), gcompErrorCorruptPayload, "size");
      continue;
    }
    ASSERT_LT(used, bytes);
    std::vector<float> full(x.size()), short_out(x.size());
    ASSERT_OK(gcompDecode(h.plan, payload.data(), bytes, 1, 4, full.data()));
    ASSERT_OK(gcompDecode(h.plan, payload.data(), used, 1, 4, short_out.data()));
    EXPECT_TRUE(test::bitwise_equal(short_out, full));
    // One word cut: rejected, output untouched.
    std::vector<float> untouched(x.size(), 9.0f);
    EXPECT_FAIL(gcompDecode(h.plan, payload.data(), used - 4, 1, 4, untouched.data()), gcompErrorCorruptPayload,
                "length field");
    EXPECT_TRUE(std::all_of(untouched.begin(), untouched.end(), [](float v) { return v == 9.0f; }));
    EXPECT_FAIL(gcompPayloadUsedBytes(h.plan, payload.data(), codec->length_prefix_bytes() - 1, &again),
                gcompErrorCorruptPayload, "payload_bytes");
    size_t framed_bytes = 0;
    ASSERT_OK(gcompPlanFramedBytes(h.plan, &framed_bytes));
    std::vector<uint8_t> framed(framed_bytes);
    ASSERT_OK(gcompFramePayload(h.plan, payload.data(), used, 1, 4, framed.data(), framed.size()));
    const size_t frame_size = framed_bytes - (bytes - used);
    uint32_t r = 0, st = 0;
    size_t off = 0;
    ASSERT_OK(gcompParseFrame(h.plan, framed.data(), frame_size, &r, &st, &off));
    EXPECT_EQ(off + used, frame_size);
    std::vector<float> from_frame(x.size());
    ASSERT_OK(gcompDecode(h.plan, framed.data() + off, frame_size - off, r, st, from_frame.data()));
    EXPECT_TRUE(test::bitwise_equal(from_frame, full));
  }
}

class CapiPlanErrors : public testing::Test {
 protected:
  void SetUp() override {
    const gcompCodecConfig_t cfg = codec_config("dither:levels=4,norm=linf,block=16", 3);
    ASSERT_OK(gcompPlanCreate(&h_.plan, &cfg, segs_, 2));
    ASSERT_OK(gcompPlanEncodedBytes(h_.plan, &bytes_));
    x_ = test::gaussian(n_, 5);
    payload_.assign(bytes_, 0);
    ASSERT_OK(gcompEncode(h_.plan, x_.data(), 1, 2, payload_.data(), bytes_));
  }
  const int64_t segs_[2] = {40, 60};
  const int64_t n_ = 100;
  PlanHolder h_;
  size_t bytes_ = 0;
  std::vector<float> x_;
  std::vector<uint8_t> payload_;
};

TEST_F(CapiPlanErrors, NullArgumentsNamed) {
  size_t sz = 7;
  int64_t n = 7;
  double d = 7;
  gcompGuaranteeKind_t kind = gcompGuaranteeNone;
  EXPECT_FAIL(gcompPlanEncodedBytes(nullptr, &sz), gcompErrorInvalidArgument, "argument plan is NULL");
  EXPECT_FAIL(gcompPlanEncodedBytes(h_.plan, nullptr), gcompErrorInvalidArgument, "payload_bytes");
  EXPECT_FAIL(gcompPlanNumElems(h_.plan, nullptr), gcompErrorInvalidArgument, "num_elems");
  EXPECT_FAIL(gcompPlanEncodedBits(h_.plan, nullptr), gcompErrorInvalidArgument, "bits");
  EXPECT_FAIL(gcompPlanGuarantee(h_.plan, &kind, nullptr, &d), gcompErrorInvalidArgument, "omega");
  EXPECT_FAIL(gcompPlanFramedBytes(h_.plan, nullptr), gcompErrorInvalidArgument, "framed_bytes");
  EXPECT_EQ(sz, 7u);
  EXPECT_EQ(n, 7);
  EXPECT_EQ(d, 7.0);

  std::vector<uint8_t> out_payload(bytes_, 0xEE);
  EXPECT_FAIL(gcompEncode(h_.plan, nullptr, 0, 0, out_payload.data(), bytes_), gcompErrorInvalidArgument, "h_x");
  EXPECT_FAIL(gcompEncode(h_.plan, x_.data(), 0, 0, nullptr, bytes_), gcompErrorInvalidArgument, "h_payload");
  EXPECT_FAIL(gcompEncode(nullptr, x_.data(), 0, 0, out_payload.data(), bytes_), gcompErrorInvalidArgument, "plan");
  EXPECT_EQ(out_payload, std::vector<uint8_t>(bytes_, 0xEE));

  std::vector<float> out(x_.size(), -3.0f);
  EXPECT_FAIL(gcompDecode(h_.plan, nullptr, bytes_, 1, 2, out.data()), gcompErrorInvalidArgument, "h_payload");
  EXPECT_FAIL(gcompDecodeAccumulate(h_.plan, payload_.data(), bytes_, 1, 2, 1.0f, nullptr), gcompErrorInvalidArgument,
              "h_out");
  EXPECT_EQ(out, std::vector<float>(x_.size(), -3.0f));

  uint32_t r = 5, s = 5;
  size_t off = 5;
  EXPECT_FAIL(gcompParseFrame(h_.plan, payload_.data(), bytes_, nullptr, &s, &off), gcompErrorInvalidArgument, "rank");
  EXPECT_FAIL(gcompParseFrame(h_.plan, nullptr, bytes_, &r, &s, &off), gcompErrorInvalidArgument, "h_framed");
  EXPECT_EQ(r, 5u);
  EXPECT_EQ(off, 5u);
}

TEST_F(CapiPlanErrors, SizesAndDataErrorsLeaveOutputsUntouched) {
  std::vector<uint8_t> out_payload(bytes_, 0xEE);
  EXPECT_FAIL(gcompEncode(h_.plan, x_.data(), 0, 0, out_payload.data(), bytes_ - 1), gcompErrorWorkspaceTooSmall,
              "payload_bytes");
  std::vector<float> bad = x_;
  bad[77] = std::numeric_limits<float>::infinity();
  EXPECT_FAIL(gcompEncode(h_.plan, bad.data(), 0, 0, out_payload.data(), bytes_), gcompErrorNonFinite, "gcompEncode");
  EXPECT_EQ(out_payload, std::vector<uint8_t>(bytes_, 0xEE));

  std::vector<float> out(x_.size(), -3.0f);
  EXPECT_FAIL(gcompDecode(h_.plan, payload_.data(), bytes_ - 4, 1, 2, out.data()), gcompErrorCorruptPayload,
              "expected " + std::to_string(bytes_));
  EXPECT_FAIL(gcompDecodeAccumulate(h_.plan, payload_.data(), bytes_ + 4, 1, 2, 1.0f, out.data()),
              gcompErrorCorruptPayload, "gcompDecodeAccumulate");
  EXPECT_EQ(out, std::vector<float>(x_.size(), -3.0f));

  // Overlap: decoding into the payload's own memory is refused.
  std::vector<uint8_t> big(bytes_ + x_.size() * sizeof(float));
  std::memcpy(big.data(), payload_.data(), bytes_);
  EXPECT_FAIL(gcompDecode(h_.plan, big.data(), bytes_, 1, 2, reinterpret_cast<float*>(big.data())),
              gcompErrorInvalidArgument, "overlap");
  EXPECT_FAIL(gcompEncode(h_.plan, reinterpret_cast<const float*>(big.data()), 1, 2, big.data() + 8, bytes_),
              gcompErrorInvalidArgument, "overlap");
}

TEST_F(CapiPlanErrors, FrameErrors) {
  size_t framed_bytes = 0;
  ASSERT_OK(gcompPlanFramedBytes(h_.plan, &framed_bytes));
  std::vector<uint8_t> framed(framed_bytes, 0x11);
  EXPECT_FAIL(gcompFramePayload(h_.plan, payload_.data(), bytes_, 1, 2, framed.data(), framed_bytes - 1),
              gcompErrorWorkspaceTooSmall, "framed_bytes");
  EXPECT_FAIL(gcompFramePayload(h_.plan, payload_.data(), bytes_ - 1, 1, 2, framed.data(), framed_bytes),
              gcompErrorInvalidArgument, "payload_bytes");
  EXPECT_EQ(framed, std::vector<uint8_t>(framed_bytes, 0x11));
  ASSERT_OK(gcompFramePayload(h_.plan, payload_.data(), bytes_, 1, 2, framed.data(), framed_bytes));

  uint32_t r = 0, s = 0;
  size_t off = 0;
  std::vector<uint8_t> corrupt = framed;
  corrupt[framed_bytes / 2] ^= 0x40;
  EXPECT_FAIL(gcompParseFrame(h_.plan, corrupt.data(), corrupt.size(), &r, &s, &off), gcompErrorCorruptPayload,
              "corrupt");
  EXPECT_FAIL(gcompParseFrame(h_.plan, framed.data(), framed.size() - 1, &r, &s, &off), gcompErrorCorruptPayload,
              "corrupt");
  EXPECT_EQ(off, 0u);

  // The same frame against a plan with another seed or layout: a mismatch, not a decode.
  PlanHolder other;
  const gcompCodecConfig_t cfg = codec_config("dither:levels=4,norm=linf,block=16", 4);
  ASSERT_OK(gcompPlanCreate(&other.plan, &cfg, segs_, 2));
  EXPECT_FAIL(gcompParseFrame(other.plan, framed.data(), framed.size(), &r, &s, &off), gcompErrorMismatch, "seed");
  PlanHolder third;
  const gcompCodecConfig_t cfg3 = codec_config("dither:levels=4,norm=linf,block=16", 3);
  ASSERT_OK(gcompPlanCreate(&third.plan, &cfg3, &n_, 1));
  EXPECT_FAIL(gcompParseFrame(third.plan, framed.data(), framed.size(), &r, &s, &off), gcompErrorMismatch, "layout");
}

TEST(CapiPlan, CreateRejectsBadLayoutAndSpec) {
  gcompPlan_t plan = nullptr;
  const gcompCodecConfig_t cfg = codec_config("dither:levels=4", 0);
  const int64_t neg[2] = {5, -1};
  EXPECT_FAIL(gcompPlanCreate(&plan, &cfg, neg, 2), gcompErrorInvalidArgument, "segment_elems[1]");
  EXPECT_FAIL(gcompPlanCreate(&plan, &cfg, neg, -1), gcompErrorInvalidArgument, "num_segments");
  EXPECT_FAIL(gcompPlanCreate(&plan, nullptr, neg, 1), gcompErrorInvalidArgument, "config");
  const gcompCodecConfig_t bad = codec_config("dither:levls=4", 0);
  EXPECT_FAIL(gcompPlanCreate(&plan, &bad, neg, 1), gcompErrorInvalidArgument, "levls");
  EXPECT_EQ(plan, nullptr);
}

TEST(CapiErrors, PerHandleAndThreadLocal) {
  const int64_t n = 8;
  PlanHolder a, b;
  const gcompCodecConfig_t cfg = codec_config("identity", 0);
  ASSERT_OK(gcompPlanCreate(&a.plan, &cfg, &n, 1));
  ASSERT_OK(gcompPlanCreate(&b.plan, &cfg, &n, 1));
  EXPECT_STREQ(gcompPlanGetLastError(a.plan), "");
  EXPECT_FAIL(gcompPlanEncodedBytes(a.plan, nullptr), gcompErrorInvalidArgument, "payload_bytes");
  EXPECT_NE(std::string(gcompPlanGetLastError(a.plan)).find("gcompPlanEncodedBytes"), std::string::npos);
  EXPECT_STREQ(gcompPlanGetLastError(b.plan), "");
  // Success leaves the texts as they were.
  size_t sz = 0;
  ASSERT_OK(gcompPlanEncodedBytes(a.plan, &sz));
  EXPECT_NE(std::string(gcompGetLastError()).find("payload_bytes"), std::string::npos);

  // Another thread's failure does not change this thread's text, and starts from "".
  const std::string mine = gcompGetLastError();
  std::string theirs_before, theirs_after;
  std::thread t([&] {
    theirs_before = gcompGetLastError();
    int64_t* null_out = nullptr;
    EXPECT_EQ(gcompPlanNumElems(b.plan, null_out), gcompErrorInvalidArgument);
    theirs_after = gcompGetLastError();
  });
  t.join();
  EXPECT_EQ(theirs_before, "");
  EXPECT_NE(theirs_after.find("num_elems"), std::string::npos);
  EXPECT_EQ(std::string(gcompGetLastError()), mine);
  EXPECT_NE(std::string(gcompPlanGetLastError(b.plan)).find("num_elems"), std::string::npos);
}

TEST(CapiErrors, WrongHandleKindRejected) {
  gcompComm_t comm = nullptr;
  ASSERT_OK(gcompCommCreateLocalGroup(1, 0, &comm));
  size_t sz = 0;
  // A communicator passed where a plan is expected (a caller bug a C compiler lets through).
  EXPECT_FAIL(gcompPlanEncodedBytes(reinterpret_cast<gcompPlan_t>(comm), &sz), gcompErrorInvalidArgument,
              "not a live gcompPlan_t");
  EXPECT_FAIL(gcompPlanDestroy(reinterpret_cast<gcompPlan_t>(comm)), gcompErrorInvalidArgument, "gcompPlan_t");
  EXPECT_STREQ(gcompPlanGetLastError(reinterpret_cast<gcompPlan_t>(comm)), "");
  EXPECT_EQ(gcompCommDestroy(comm), gcompSuccess);
}

TEST(CapiErrors, BadAllocBecomesOutOfMemory) {
  // 2^49 elements: the plan itself is only sizes, but its frame cannot be allocated in host memory.
  const int64_t huge = int64_t{1} << 49;
  PlanHolder h;
  const gcompCodecConfig_t cfg = codec_config("identity", 0);
  ASSERT_OK(gcompPlanCreate(&h.plan, &cfg, &huge, 1));
  size_t bytes = 0;
  ASSERT_OK(gcompPlanEncodedBytes(h.plan, &bytes));
  EXPECT_EQ(bytes, static_cast<size_t>(huge) * 4);
  size_t framed = 123;
  EXPECT_FAIL(gcompPlanFramedBytes(h.plan, &framed), gcompErrorOutOfMemory, "out of host memory");
  EXPECT_EQ(framed, 123u);
}

// ------------------------------------------------------------------------------------------------
// Communicators

TEST(CapiComm, LocalGroupRanksAndErrors) {
  gcompComm_t comms[3] = {nullptr, nullptr, nullptr};
  EXPECT_FAIL(gcompCommCreateLocalGroup(0, 0, comms), gcompErrorInvalidArgument, "num_ranks");
  EXPECT_FAIL(gcompCommCreateLocalGroup(3, -1, comms), gcompErrorInvalidArgument, "timeout_ms");
  EXPECT_FAIL(gcompCommCreateLocalGroup(3, 0, nullptr), gcompErrorInvalidArgument, "comms_out");
  EXPECT_EQ(comms[0], nullptr);
  ASSERT_OK(gcompCommCreateLocalGroup(3, 1000, comms));
  for (int r = 0; r < 3; ++r) {
    int rank = -1, size = -1;
    ASSERT_OK(gcompCommRank(comms[r], &rank));
    ASSERT_OK(gcompCommSize(comms[r], &size));
    EXPECT_EQ(rank, r);
    EXPECT_EQ(size, 3);
  }
  int dummy = 0;
  EXPECT_FAIL(gcompCommRank(comms[0], nullptr), gcompErrorInvalidArgument, "rank");
  EXPECT_FAIL(gcompCommSize(nullptr, &dummy), gcompErrorInvalidArgument, "comm");
  ASSERT_OK(gcompCommAbort(comms[1], "test abort"));
  ASSERT_OK(gcompCommAbort(comms[1], nullptr));
  for (gcompComm_t c : comms) EXPECT_EQ(gcompCommDestroy(c), gcompSuccess);
}

TEST(CapiComm, MpiWithoutMpiIsNotSupported) {
  if (mpi_available()) GTEST_SKIP() << "built with MPI: gcompCommCreateMpi is exercised under mpiexec only";
  gcompComm_t comm = nullptr;
  EXPECT_FAIL(gcompCommCreateMpi(0, &comm), gcompErrorNotSupported, "without MPI");
  EXPECT_EQ(comm, nullptr);
}

// ------------------------------------------------------------------------------------------------
// Sessions: C handles vs the C++ Session, bitwise

constexpr int kRanks = 2;
const std::vector<int64_t> kSegments = {19, 45};
constexpr int64_t kDim = 64;
constexpr int kSteps = 6;

void gradient(int r, int step, const std::vector<double>& x, std::vector<double>& g) {
  for (int64_t j = 0; j < kDim; ++j)
    g[j] = (x[j] - std::sin(0.3 * static_cast<double>(j) + r)) * (1.0 + 0.25 * r) + 0.01 * step;
}

enum class Mode { kApply, kStep, kStepF32, kStepBF16, kStepF16, kStepWidenedBF16, kStepWidenedF16 };

/// 16-bit test gradients: bfloat16 by truncating the float, fp16 by truncating its mantissa (the
/// values here are normal in both formats). Any bit pattern is a valid input; the C ABI must widen
/// exactly, which the comparison with gcompSessionStep on detail::*_to_float checks.
uint16_t bf16_bits(double v) {
  const auto f = static_cast<float>(v);
  uint32_t b = 0;
  std::memcpy(&b, &f, sizeof b);
  return static_cast<uint16_t>(b >> 16);
}

uint16_t f16_bits(double v) {
  const auto f = static_cast<float>(v);
  uint32_t b = 0;
  std::memcpy(&b, &f, sizeof b);
  const uint32_t sign = (b >> 16) & 0x8000u;
  int32_t exp = static_cast<int32_t>((b >> 23) & 0xffu) - 127 + 15;
  if (f == 0.0f || exp < 1) return static_cast<uint16_t>(sign);  // tiny values: signed zero
  if (exp > 30) exp = 30;
  return static_cast<uint16_t>(sign | (static_cast<uint32_t>(exp) << 10) | ((b >> 13) & 0x3ffu));
}

bool is_16bit(Mode m) {
  return m == Mode::kStepBF16 || m == Mode::kStepF16 || m == Mode::kStepWidenedBF16 || m == Mode::kStepWidenedF16;
}

struct Run {
  std::vector<std::vector<std::vector<double>>> out;  // [rank][step] -> x (apply) or update (step)
  std::vector<std::vector<StepStats>> stats;          // [rank][step]
};

Run run_cpp(const SessionConfig& cfg, Mode mode) {
  Run res;
  res.out.assign(kRanks, {});
  res.stats.assign(kRanks, {});
  run_local(kRanks, [&](Communicator& comm) {
    const int r = comm.rank();
    Session s(comm, Layout(kSegments), cfg);
    std::vector<double> x(kDim, 0.0), g(kDim), u(kDim);
    for (int k = 0; k < kSteps; ++k) {
      gradient(r, k, x, g);
      StepStats st;
      if (mode == Mode::kApply) {
        st = s.apply(g, x);
        res.out[r].push_back(x);
      } else if (mode == Mode::kStep) {
        st = s.step(g, u);
        res.out[r].push_back(u);
        for (int64_t j = 0; j < kDim; ++j) x[j] -= u[j];
      } else {
        std::vector<float> gf(g.begin(), g.end()), uf(kDim);
        st = s.step(std::span<const float>(gf), std::span<float>(uf));
        res.out[r].emplace_back(uf.begin(), uf.end());
        for (int64_t j = 0; j < kDim; ++j) x[j] -= static_cast<double>(uf[j]);
      }
      res.stats[r].push_back(st);
    }
  });
  return res;
}

/// The same loop through the C ABI: one thread per rank of a C local group.
Run run_c(const gcompSessionConfig_t& cfg, Mode mode, bool in_place = false) {
  Run res;
  res.out.assign(kRanks, {});
  res.stats.assign(kRanks, {});
  gcompComm_t comms[kRanks] = {};
  EXPECT_EQ(gcompCommCreateLocalGroup(kRanks, 60000, comms), gcompSuccess) << gcompGetLastError();
  std::vector<std::thread> threads;
  for (int r = 0; r < kRanks; ++r) {
    threads.emplace_back([&, r] {
      gcompSession_t s = nullptr;
      const gcompStatus_t created =
          gcompSessionCreate(&s, comms[r], &cfg, kSegments.data(), static_cast<int>(kSegments.size()));
      if (created != gcompSuccess) {
        ADD_FAILURE() << "rank " << r << ": " << gcompGetLastError();
        EXPECT_EQ(gcompCommAbort(comms[r], "create failed"), gcompSuccess);
        return;
      }
      std::vector<double> x(kDim, 0.0), g(kDim), u(kDim);
      for (int k = 0; k < kSteps; ++k) {
        gradient(r, k, x, g);
        gcompStepStats_t st = GCOMP_STEP_STATS_INITIALIZER;
        gcompStatus_t status = gcompSuccess;
        if (mode == Mode::kApply) {
          status = gcompSessionApply(s, g.data(), x.data(), &st);
          res.out[r].push_back(x);
        } else if (mode == Mode::kStep) {
          if (in_place) {
            u = g;
            status = gcompSessionStep(s, u.data(), u.data(), &st);
          } else {
            status = gcompSessionStep(s, g.data(), u.data(), &st);
          }
          res.out[r].push_back(u);
          for (int64_t j = 0; j < kDim; ++j) x[j] -= u[j];
        } else if (is_16bit(mode)) {
          // 16-bit gradients through gcompSessionStepBF16/F16, or their exact widening through
          // gcompSessionStep: the updates must be equal bit for bit.
          const bool bf = mode == Mode::kStepBF16 || mode == Mode::kStepWidenedBF16;
          std::vector<uint16_t> bits(kDim);
          for (int64_t j = 0; j < kDim; ++j) bits[j] = bf ? bf16_bits(g[j]) : f16_bits(g[j]);
          if (mode == Mode::kStepBF16 || mode == Mode::kStepF16) {
            auto* fn = bf ? gcompSessionStepBF16 : gcompSessionStepF16;
            if (in_place) {
              // The gradient's bits at the start of the update's memory (allowed to overlap).
              alignas(double) unsigned char buf[kDim * sizeof(double)];
              std::memcpy(buf, bits.data(), bits.size() * sizeof(uint16_t));
              status = fn(s, reinterpret_cast<const uint16_t*>(buf), reinterpret_cast<double*>(buf), &st);
              std::memcpy(u.data(), buf, sizeof buf);
            } else {
              status = fn(s, bits.data(), u.data(), &st);
            }
          } else {
            std::vector<double> wide(kDim);
            for (int64_t j = 0; j < kDim; ++j)
              wide[j] = static_cast<double>(bf ? detail::bf16_to_float(bits[j]) : detail::f16_to_float(bits[j]));
            status = gcompSessionStep(s, wide.data(), u.data(), &st);
          }
          res.out[r].push_back(u);
          for (int64_t j = 0; j < kDim; ++j) x[j] -= u[j];
        } else {
          std::vector<float> gf(g.begin(), g.end()), uf(kDim);
          status = gcompSessionStepF32(s, gf.data(), uf.data(), &st);
          res.out[r].emplace_back(uf.begin(), uf.end());
          for (int64_t j = 0; j < kDim; ++j) x[j] -= static_cast<double>(uf[j]);
        }
        EXPECT_EQ(status, gcompSuccess) << "rank " << r << " step " << k << ": " << gcompSessionGetLastError(s);
        StepStats cs;
        cs.step = st.step;
        cs.skipped = st.skipped != 0;
        cs.bytes_up = st.bytes_up;
        cs.bytes_down = st.bytes_down;
        cs.bytes_received = st.bytes_received;
        cs.bits_per_element_up = st.bits_per_element_up;
        cs.bits_per_element_down = st.bits_per_element_down;
        res.stats[r].push_back(cs);
      }
      EXPECT_EQ(gcompSessionDestroy(s), gcompSuccess);
    });
  }
  for (auto& t : threads) t.join();
  for (gcompComm_t c : comms) EXPECT_EQ(gcompCommDestroy(c), gcompSuccess);
  return res;
}

void expect_same(const Run& c, const Run& cpp) {
  for (int r = 0; r < kRanks; ++r) {
    ASSERT_EQ(c.out[r].size(), cpp.out[r].size());
    for (size_t k = 0; k < c.out[r].size(); ++k)
      EXPECT_TRUE(doubles_equal(c.out[r][k], cpp.out[r][k])) << "rank " << r << " step " << k;
    for (size_t k = 0; k < c.stats[r].size(); ++k) {
      const StepStats &a = c.stats[r][k], &b = cpp.stats[r][k];
      EXPECT_EQ(a.step, b.step);
      EXPECT_EQ(a.skipped, b.skipped);
      EXPECT_EQ(a.bytes_up, b.bytes_up);
      EXPECT_EQ(a.bytes_down, b.bytes_down);
      EXPECT_EQ(a.bytes_received, b.bytes_received);
      EXPECT_EQ(a.bits_per_element_up, b.bits_per_element_up);
      EXPECT_EQ(a.bits_per_element_down, b.bits_per_element_down);
    }
  }
  // Every rank holds the same result.
  for (size_t k = 0; k < c.out[0].size(); ++k) EXPECT_TRUE(doubles_equal(c.out[0][k], c.out[1][k]));
}

struct SessionCase {
  const char* algorithm;
  const char* codec;
  const char* server_codec;
  double momentum;
  gcompServerMode_t server;
  gcompProx_t prox;
  int delay;
  gcompDelayMode_t delay_mode = gcompDelayFixed;
};

// Delays of the table case: rows of kRanks (2) delays in [0, 3], repeating.
const int32_t kDelayTable[] = {0, 3, 1, 0, 3, 2};

class CapiSessionEqualsCpp : public testing::TestWithParam<SessionCase> {
 protected:
  gcompSessionConfig_t c_config() const {
    const SessionCase& sc = GetParam();
    gcompSessionConfig_t c = GCOMP_SESSION_CONFIG_INITIALIZER;
    c.algorithm = sc.algorithm;
    c.codec_spec = sc.codec;
    c.server_codec_spec = sc.server_codec;
    c.lr = 0.3;
    c.momentum = sc.momentum;
    c.server = sc.server;
    c.prox = sc.prox;
    c.prox_lambda = sc.prox == gcompProxNone ? 0.0 : 0.05;
    c.delay = sc.delay;
    c.delay_mode = sc.delay_mode;
    if (sc.delay_mode == gcompDelayTable) {
      c.delay_table = kDelayTable;
      c.delay_table_len = 6;
    }
    c.seed = 99;
    return c;
  }
  SessionConfig cpp_config() const {
    const SessionCase& sc = GetParam();
    SessionConfig c;
    c.algorithm = parse_algorithm(sc.algorithm);
    c.codec = sc.codec;
    c.server_codec = sc.server_codec;
    c.lr = 0.3;
    c.momentum = sc.momentum;
    c.server = sc.server == gcompServerSharded ? ServerMode::kSharded : ServerMode::kReplicated;
    c.prox = sc.prox == gcompProxL1 ? Regularizer::kL1 : sc.prox == gcompProxL2 ? Regularizer::kL2 : Regularizer::kNone;
    c.prox_lambda = sc.prox == gcompProxNone ? 0.0 : 0.05;
    c.delay = sc.delay;
    c.delay_mode = static_cast<DelayMode>(sc.delay_mode);
    if (sc.delay_mode == gcompDelayTable) c.delay_table.assign(kDelayTable, kDelayTable + 6);
    c.seed = 99;
    return c;
  }
};

TEST_P(CapiSessionEqualsCpp, Apply) {
  expect_same(run_c(c_config(), Mode::kApply), run_cpp(cpp_config(), Mode::kApply));
}
TEST_P(CapiSessionEqualsCpp, Step) { expect_same(run_c(c_config(), Mode::kStep), run_cpp(cpp_config(), Mode::kStep)); }
TEST_P(CapiSessionEqualsCpp, StepInPlace) {
  expect_same(run_c(c_config(), Mode::kStep, true), run_cpp(cpp_config(), Mode::kStep));
}
TEST_P(CapiSessionEqualsCpp, StepF32) {
  expect_same(run_c(c_config(), Mode::kStepF32), run_cpp(cpp_config(), Mode::kStepF32));
}
TEST_P(CapiSessionEqualsCpp, StepBF16EqualsStepOnWidenedValues) {
  expect_same(run_c(c_config(), Mode::kStepBF16), run_c(c_config(), Mode::kStepWidenedBF16));
  expect_same(run_c(c_config(), Mode::kStepBF16, true), run_c(c_config(), Mode::kStepWidenedBF16));
}
TEST_P(CapiSessionEqualsCpp, StepF16EqualsStepOnWidenedValues) {
  expect_same(run_c(c_config(), Mode::kStepF16), run_c(c_config(), Mode::kStepWidenedF16));
  expect_same(run_c(c_config(), Mode::kStepF16, true), run_c(c_config(), Mode::kStepWidenedF16));
}

INSTANTIATE_TEST_SUITE_P(
    Algorithms, CapiSessionEqualsCpp,
    testing::Values(SessionCase{"diana", "dither:levels=4,norm=linf,block=16", "identity", 0.0, gcompServerReplicated,
                                gcompProxL1, 0},
                    SessionCase{"ef-sgd", "topk:ratio=0.2", "identity", 0.5, gcompServerReplicated, gcompProxNone, 0},
                    SessionCase{"dist-ef-sgdm", "sign:block=8", "sign", 0.9, gcompServerSharded, gcompProxNone, 0},
                    SessionCase{"compressed-gd", "terngrad", "identity", 0.0, gcompServerReplicated, gcompProxNone, 2},
                    SessionCase{"signsgd-mv", "sign:scale=none", "identity", 0.9, gcompServerReplicated, gcompProxNone,
                                0},
                    SessionCase{"doublesqueeze", "sign:block=8", "sign", 0.5, gcompServerReplicated, gcompProxNone, 3,
                                gcompDelayTable},
                    SessionCase{"ef-sgd", "sign:block=8", "identity", 0.0, gcompServerReplicated, gcompProxNone, 3,
                                gcompDelayRandom}),
    [](const testing::TestParamInfo<SessionCase>& p) { return "case" + std::to_string(p.index); });

// hessian-ec through C callbacks equals the C++ Session with the same std::function.
gcompStatus_t hessian_product_c(const double* v, double* out, int64_t n, void* user) {
  const double scale = *static_cast<const double*>(user);
  for (int64_t i = 0; i < n; ++i) out[i] = scale * v[i] * (1.0 + 0.01 * static_cast<double>(i));
  return gcompSuccess;
}

gcompStatus_t hessian_product_fails(const double*, double*, int64_t, void*) { return gcompErrorNotSupported; }

gcompStatus_t hessian_product_throws(const double*, double*, int64_t, void*) {
  throw std::runtime_error("callback threw");
}

TEST(CapiSessionHessian, CallbackEqualsCpp) {
  double scale = 0.5;
  gcompSessionConfig_t c = GCOMP_SESSION_CONFIG_INITIALIZER;
  c.algorithm = "hessian-ec";
  c.codec_spec = "dither:levels=2,norm=l2";
  c.compensation = gcompCompensationHessian;
  c.hessian_product = hessian_product_c;
  c.hessian_user_data = &scale;
  SessionConfig cpp;
  cpp.algorithm = Algorithm::kHessianEc;
  cpp.codec = "dither:levels=2,norm=l2";
  cpp.compensation = Compensation::kHessian;
  cpp.hessian_product = [&](std::span<const double> v, std::span<double> out) {
    ASSERT_EQ(hessian_product_c(v.data(), out.data(), static_cast<int64_t>(v.size()), &scale), gcompSuccess);
  };
  expect_same(run_c(c, Mode::kApply), run_cpp(cpp, Mode::kApply));
}

class CapiSessionErrors : public testing::Test {
 protected:
  void SetUp() override { ASSERT_OK(gcompCommCreateLocalGroup(1, 60000, &comm_)); }
  void TearDown() override {
    EXPECT_EQ(gcompSessionDestroy(s_), gcompSuccess);
    EXPECT_EQ(gcompCommDestroy(comm_), gcompSuccess);
  }
  void create(const gcompSessionConfig_t& cfg) { ASSERT_OK(gcompSessionCreate(&s_, comm_, &cfg, &n_, 1)); }
  gcompComm_t comm_ = nullptr;
  gcompSession_t s_ = nullptr;
  const int64_t n_ = 10;
};

TEST_F(CapiSessionErrors, CreateArguments) {
  gcompSessionConfig_t cfg = GCOMP_SESSION_CONFIG_INITIALIZER;
  EXPECT_FAIL(gcompSessionCreate(nullptr, comm_, &cfg, &n_, 1), gcompErrorInvalidArgument, "argument session");
  EXPECT_FAIL(gcompSessionCreate(&s_, nullptr, &cfg, &n_, 1), gcompErrorInvalidArgument, "argument comm");
  EXPECT_FAIL(gcompSessionCreate(&s_, comm_, nullptr, &n_, 1), gcompErrorInvalidArgument, "argument config");
  EXPECT_FAIL(gcompSessionCreate(&s_, comm_, &cfg, nullptr, 1), gcompErrorInvalidArgument, "segment_elems");
  cfg.algorithm = nullptr;
  EXPECT_FAIL(gcompSessionCreate(&s_, comm_, &cfg, &n_, 1), gcompErrorInvalidArgument, "config->algorithm");
  cfg.algorithm = "adam";
  EXPECT_FAIL(gcompSessionCreate(&s_, comm_, &cfg, &n_, 1), gcompErrorInvalidArgument,
              "is not one of the valid algorithm values: gd, compressed-gd,");
  cfg = GCOMP_SESSION_CONFIG_INITIALIZER;
  cfg.server_codec_spec = nullptr;
  EXPECT_FAIL(gcompSessionCreate(&s_, comm_, &cfg, &n_, 1), gcompErrorInvalidArgument, "config->server_codec_spec");
  cfg = GCOMP_SESSION_CONFIG_INITIALIZER;
  cfg.nonfinite = static_cast<gcompNonFinitePolicy_t>(3);
  EXPECT_FAIL(gcompSessionCreate(&s_, comm_, &cfg, &n_, 1), gcompErrorInvalidArgument, "config->nonfinite");
  cfg = GCOMP_SESSION_CONFIG_INITIALIZER;
  cfg.prox = static_cast<gcompProx_t>(3);
  EXPECT_FAIL(gcompSessionCreate(&s_, comm_, &cfg, &n_, 1), gcompErrorInvalidArgument, "config->prox");
  cfg = GCOMP_SESSION_CONFIG_INITIALIZER;
  cfg.algorithm = "hessian-ec";
  EXPECT_FAIL(gcompSessionCreate(&s_, comm_, &cfg, &n_, 1), gcompErrorInvalidArgument, "hessian_product");
  EXPECT_EQ(s_, nullptr);
}

TEST_F(CapiSessionErrors, StepArgumentsAndNonFinite) {
  gcompSessionConfig_t cfg = GCOMP_SESSION_CONFIG_INITIALIZER;
  cfg.algorithm = "ef-sgd";
  cfg.codec_spec = "topk:k=3";
  create(cfg);
  std::vector<double> g(10, 0.5), u(10, 9.0), x(10, 9.0);
  std::vector<float> gf(10, 0.5f), uf(10, 9.0f);
  gcompStepStats_t st = GCOMP_STEP_STATS_INITIALIZER;
  EXPECT_FAIL(gcompSessionStep(nullptr, g.data(), u.data(), &st), gcompErrorInvalidArgument, "argument session");
  EXPECT_FAIL(gcompSessionStep(s_, nullptr, u.data(), &st), gcompErrorInvalidArgument, "h_grad");
  EXPECT_FAIL(gcompSessionStep(s_, g.data(), nullptr, &st), gcompErrorInvalidArgument, "h_update");
  EXPECT_FAIL(gcompSessionStepF32(s_, gf.data(), nullptr, &st), gcompErrorInvalidArgument, "h_update");
  EXPECT_FAIL(gcompSessionApply(s_, g.data(), nullptr, &st), gcompErrorInvalidArgument, "h_x");
  st.size = sizeof(gcompStepStats_t) + 8;
  EXPECT_FAIL(gcompSessionStep(s_, g.data(), u.data(), &st), gcompErrorInvalidArgument, "stats->size");
  EXPECT_EQ(st.step, 0u);
  st.size = sizeof(gcompStepStats_t);
  g[4] = std::nan("");
  gf[4] = std::numeric_limits<float>::quiet_NaN();
  EXPECT_FAIL(gcompSessionStep(s_, g.data(), u.data(), &st), gcompErrorNonFinite, "non-finite");
  EXPECT_FAIL(gcompSessionStepF32(s_, gf.data(), uf.data(), &st), gcompErrorNonFinite, "non-finite");
  EXPECT_FAIL(gcompSessionApply(s_, g.data(), x.data(), &st), gcompErrorNonFinite, "non-finite");
  EXPECT_NE(std::string(gcompSessionGetLastError(s_)).find("gcompSessionApply"), std::string::npos);
  EXPECT_EQ(u, std::vector<double>(10, 9.0));
  EXPECT_EQ(x, std::vector<double>(10, 9.0));
  EXPECT_EQ(uf, std::vector<float>(10, 9.0f));
  EXPECT_EQ(st.step, 0u);
  uint64_t steps = 7;
  ASSERT_OK(gcompSessionStepCount(s_, &steps));
  EXPECT_EQ(steps, 0u);
  int64_t n = 0;
  ASSERT_OK(gcompSessionNumElems(s_, &n));
  EXPECT_EQ(n, 10);
  EXPECT_FAIL(gcompSessionNumElems(s_, nullptr), gcompErrorInvalidArgument, "num_elems");
  // Stats are optional.
  g[4] = 0.0;
  ASSERT_OK(gcompSessionStep(s_, g.data(), u.data(), nullptr));
}

TEST_F(CapiSessionErrors, Step16BitArgumentsAndNonFinite) {
  gcompSessionConfig_t cfg = GCOMP_SESSION_CONFIG_INITIALIZER;
  cfg.algorithm = "diana";
  cfg.codec_spec = "dither:levels=1,norm=linf";
  create(cfg);
  using StepFn = gcompStatus_t (*)(gcompSession_t, const uint16_t*, double*, gcompStepStats_t*);
  const struct {
    StepFn fn;
    const char* name;
    uint16_t one, nan, inf;
  } cases[] = {{gcompSessionStepBF16, "gcompSessionStepBF16", 0x3f80, 0x7fc0, 0xff80},
               {gcompSessionStepF16, "gcompSessionStepF16", 0x3c00, 0x7e00, 0xfc00}};
  for (const auto& c : cases) {
    SCOPED_TRACE(c.name);
    std::vector<uint16_t> g(10, c.one);
    std::vector<double> u(10, 9.0);
    gcompStepStats_t st = GCOMP_STEP_STATS_INITIALIZER;
    EXPECT_FAIL(c.fn(nullptr, g.data(), u.data(), &st), gcompErrorInvalidArgument, "argument session");
    EXPECT_FAIL(c.fn(s_, nullptr, u.data(), &st), gcompErrorInvalidArgument, "h_grad");
    EXPECT_FAIL(c.fn(s_, g.data(), nullptr, &st), gcompErrorInvalidArgument, "h_update");
    st.size = sizeof(gcompStepStats_t) - 8;
    EXPECT_FAIL(c.fn(s_, g.data(), u.data(), &st), gcompErrorInvalidArgument, "stats->size");
    st.size = sizeof(gcompStepStats_t);
    for (const uint16_t bad : {c.nan, c.inf}) {
      g[3] = bad;
      EXPECT_FAIL(c.fn(s_, g.data(), u.data(), &st), gcompErrorNonFinite, "non-finite");
      EXPECT_NE(std::string(gcompSessionGetLastError(s_)).find(c.name), std::string::npos);
    }
    EXPECT_EQ(u, std::vector<double>(10, 9.0));
    EXPECT_EQ(st.step, 0u);
    uint64_t steps = 7;
    ASSERT_OK(gcompSessionStepCount(s_, &steps));
    EXPECT_EQ(steps, 0u);
  }
  // One valid step each: 1.0 in both formats gives the update of gcompSessionStep on 1.0.
  gcompComm_t c2 = nullptr;
  gcompSession_t ref = nullptr;
  ASSERT_OK(gcompCommCreateLocalGroup(1, 60000, &c2));
  ASSERT_OK(gcompSessionCreate(&ref, c2, &cfg, &n_, 1));
  const std::vector<double> ones(10, 1.0);
  for (const auto& c : cases) {
    std::vector<uint16_t> g(10, c.one);
    std::vector<double> u(10), want(10);
    gcompStepStats_t st = GCOMP_STEP_STATS_INITIALIZER;
    ASSERT_OK(c.fn(s_, g.data(), u.data(), &st));
    ASSERT_OK(gcompSessionStep(ref, ones.data(), want.data(), nullptr));
    EXPECT_TRUE(doubles_equal(u, want)) << c.name;
    EXPECT_GT(st.step, 0u);
    EXPECT_GT(st.bytes_up, 0u);
  }
  EXPECT_EQ(gcompSessionDestroy(ref), gcompSuccess);
  EXPECT_EQ(gcompCommDestroy(c2), gcompSuccess);
}

TEST_F(CapiSessionErrors, CallbackStatusAndExceptions) {
  gcompSessionConfig_t cfg = GCOMP_SESSION_CONFIG_INITIALIZER;
  cfg.algorithm = "hessian-ec";
  cfg.hessian_product = hessian_product_fails;
  create(cfg);
  std::vector<double> g(10, 0.5), u(10, 9.0);
  EXPECT_FAIL(gcompSessionStep(s_, g.data(), u.data(), nullptr), gcompErrorNotSupported, "hessian_product callback");
  EXPECT_EQ(u, std::vector<double>(10, 9.0));

  // An exception from a (misbehaving C++) callback is caught at the boundary.
  gcompSession_t s2 = nullptr;
  gcompComm_t c2 = nullptr;
  ASSERT_OK(gcompCommCreateLocalGroup(1, 60000, &c2));
  cfg.hessian_product = hessian_product_throws;
  ASSERT_OK(gcompSessionCreate(&s2, c2, &cfg, &n_, 1));
  EXPECT_FAIL(gcompSessionStep(s2, g.data(), u.data(), nullptr), gcompErrorInternal, "callback threw");
  EXPECT_EQ(gcompSessionDestroy(s2), gcompSuccess);
  EXPECT_EQ(gcompCommDestroy(c2), gcompSuccess);
}

TEST_F(CapiSessionErrors, SaveLoadResumesBitIdentically) {
  gcompSessionConfig_t cfg = GCOMP_SESSION_CONFIG_INITIALIZER;
  cfg.algorithm = "diana";
  cfg.codec_spec = "dither:levels=2,norm=l2";
  cfg.momentum = 0.5;
  create(cfg);
  const std::string dir =
      testing::TempDir() + "/gcomp_capi_ckpt_" + std::to_string(::testing::UnitTest::GetInstance()->random_seed());
  std::filesystem::create_directories(dir);
  const std::string path = dir + "/rank0.ckpt";
  std::vector<double> x(10, 0.0), g(10);
  auto grad = [&](int k) {
    for (int i = 0; i < 10; ++i) g[i] = x[i] - std::cos(i + 0.1 * k);
  };
  for (int k = 0; k < 3; ++k) {
    grad(k);
    ASSERT_OK(gcompSessionApply(s_, g.data(), x.data(), nullptr));
  }
  ASSERT_OK(gcompSessionSave(s_, path.c_str()));
  const std::vector<double> x_saved = x;
  std::vector<std::vector<double>> first;
  for (int k = 3; k < 6; ++k) {
    grad(k);
    ASSERT_OK(gcompSessionApply(s_, g.data(), x.data(), nullptr));
    first.push_back(x);
  }
  ASSERT_OK(gcompSessionLoad(s_, path.c_str()));
  uint64_t steps = 0;
  ASSERT_OK(gcompSessionStepCount(s_, &steps));
  EXPECT_EQ(steps, 3u);
  x = x_saved;
  for (int k = 3; k < 6; ++k) {
    grad(k);
    ASSERT_OK(gcompSessionApply(s_, g.data(), x.data(), nullptr));
    EXPECT_TRUE(doubles_equal(x, first[static_cast<size_t>(k - 3)])) << "step " << k;
  }

  EXPECT_FAIL(gcompSessionSave(s_, nullptr), gcompErrorInvalidArgument, "path");
  EXPECT_FAIL(gcompSessionLoad(s_, nullptr), gcompErrorInvalidArgument, "path");
  EXPECT_FAIL(gcompSessionLoad(s_, (dir + "/missing.ckpt").c_str()), gcompErrorIo, "missing.ckpt");
  {
    std::fstream f(path, std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(40);
    f.put('\x7f');
  }
  EXPECT_FAIL(gcompSessionLoad(s_, path.c_str()), gcompErrorCorruptPayload, "rank0.ckpt");
  ASSERT_OK(gcompSessionStepCount(s_, &steps));
  EXPECT_EQ(steps, 6u);
  std::filesystem::remove_all(dir);
}

TEST(CapiSessionMismatch, RanksDisagreeOnCodec) {
  gcompComm_t comms[2] = {};
  ASSERT_OK(gcompCommCreateLocalGroup(2, 60000, comms));
  gcompStatus_t status[2] = {gcompSuccess, gcompSuccess};
  std::string text[2];
  std::vector<std::thread> threads;
  const int64_t n = 16;
  for (int r = 0; r < 2; ++r) {
    threads.emplace_back([&, r] {
      gcompSessionConfig_t cfg = GCOMP_SESSION_CONFIG_INITIALIZER;
      cfg.algorithm = "compressed-gd";
      cfg.codec_spec = r == 0 ? "dither:levels=4" : "dither:levels=2";
      gcompSession_t s = nullptr;
      status[r] = gcompSessionCreate(&s, comms[r], &cfg, &n, 1);
      text[r] = gcompGetLastError();
      EXPECT_EQ(s, nullptr);
    });
  }
  for (auto& t : threads) t.join();
  for (int r = 0; r < 2; ++r) {
    EXPECT_EQ(status[r], gcompErrorMismatch) << text[r];
    EXPECT_NE(text[r].find("levels=2"), std::string::npos) << text[r];
  }
  for (gcompComm_t c : comms) EXPECT_EQ(gcompCommDestroy(c), gcompSuccess);
}

TEST(CapiSessionLifetime, CommDestroyedBeforeSession) {
  gcompComm_t comm = nullptr;
  ASSERT_OK(gcompCommCreateLocalGroup(1, 60000, &comm));
  gcompSessionConfig_t cfg = GCOMP_SESSION_CONFIG_INITIALIZER;
  const int64_t n = 4;
  gcompSession_t s = nullptr;
  ASSERT_OK(gcompSessionCreate(&s, comm, &cfg, &n, 1));
  EXPECT_EQ(gcompCommDestroy(comm), gcompSuccess);
  std::vector<double> g = {1, 2, 3, 4}, u(4);
  ASSERT_OK(gcompSessionStep(s, g.data(), u.data(), nullptr));
  EXPECT_EQ(u[3], 0.1 * 4);
  EXPECT_EQ(gcompSessionDestroy(s), gcompSuccess);
}

}  // namespace
