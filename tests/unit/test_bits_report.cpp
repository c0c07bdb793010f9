// SPDX-License-Identifier: Apache-2.0
// Bits-vs-variance report (spec/ALGORITHMS.md §5.2(c)), T17: every codec reports bits/coord,
// declared omega/delta, measured error and both R; R >= 1 against the declared worst case.
#include "common/test_util.hpp"

#include <gcomp/bits_report.hpp>

#include "tools/support/report.hpp"

#include <cmath>
#include <cstdio>

using namespace gcomp;

namespace {

std::vector<std::string> every_codec_spec() {
  std::vector<std::string> specs;
  for (const auto& d : list_codecs()) specs.push_back(d.name);  // defaults
  for (const char* s : {"dither:levels=16,norm=l2,block=512",
                        "dither:levels=1,norm=linf,block=64",
                        "dither:levels=1000,norm=linf",
                        "dither:levels=3,norm=lp,p=3,block=31",
                        "dither:levels=2,norm=l1",
                        "terngrad:clip=2.5",
                        "sign:block=4",
                        "sign:scale=none",
                        "topk:k=32",
                        "topk:ratio=0.5",
                        "topk:k=32,index=rice",
                        "topk:ratio=0.5,index=rice",
                        "randk:k=32",
                        "randk:k=32,unbiased=0",
                        "natdither:levels=5,norm=linf,block=16",
                        "sdither:levels=1,norm=l2,code=delta",
                        "sdither:levels=4,norm=linf",
                        "sdither:levels=32,norm=l2,chunk=64",
                        "sdither:levels=1000,norm=linf,block=16,code=delta",
                        "spherical:block=8,bits=8",
                        "spherical:block=1,bits=1",
                        "spherical:block=2,bits=12",
                        "spherical:block=16,bits=8,unscaled=1",
                        "spherical:block=64,bits=4,unscaled=1"})
    specs.emplace_back(s);
  return specs;
}

TEST(BitsReportTest, T17RatioToTheBoundIsAtLeastOneForEveryCodec) {
  for (int64_t d : {64, 1024}) {
    const auto x = test::gaussian(d, 2024);
    for (const auto& spec : every_codec_spec()) {
      auto c = make_codec(spec, Layout(d));
      const BitsReport r = bits_report(*c, x);
      SCOPED_TRACE(spec + " d=" + std::to_string(d));
      EXPECT_EQ(r.spec, c->spec().canonical());
      EXPECT_GT(r.bits, 0.0);
      EXPECT_LE(r.bits, r.bits_worst);
      EXPECT_DOUBLE_EQ(r.bits_per_coord, r.bits / static_cast<double>(d));
      EXPECT_TRUE(std::isfinite(r.measured));
      EXPECT_GE(r.measured, 0.0);
      // R against the declared worst case: defined unless there is no guarantee or omega = 0.
      const bool has_bound = (r.declared.kind == Guarantee::Kind::kUnbiased && r.declared.omega > 0) ||
                             (r.declared.kind == Guarantee::Kind::kContractive && r.declared.delta < 1);
      EXPECT_EQ(std::isfinite(r.r_declared), has_bound);
      if (has_bound) {
        EXPECT_GE(r.r_declared, 1.0);
      }
      if (r.measured == 0.0) {
        EXPECT_TRUE(std::isnan(r.r_measured));
      }
      // The declared worst case bounds the measured error (unbiased codecs, exact measure).
      if (r.declared.kind == Guarantee::Kind::kUnbiased && r.method == ErrorMeasure::kExact) {
        // fp32 scales on the wire: relative 1e-6 covers their rounding (2^-24 per scale).
        EXPECT_LE(r.measured, r.declared.omega * (1 + 1e-6));
      }
      const std::string json = bits_report_json(r);
      EXPECT_NE(json.find("\"R_declared\": "), std::string::npos);
      EXPECT_NE(json.find("\"bits_per_coord\": "), std::string::npos);
    }
  }
  // B = 16 (2^16 codewords per block) only at d = 64: the encoder is the slow part.
  const auto x = test::gaussian(64, 2024);
  const BitsReport r = bits_report(*make_codec("spherical:block=4,bits=16", Layout(64)), x);
  EXPECT_GE(r.r_declared, 1.0);
}

TEST(BitsReportTest, SpecReferenceValues) {
  // §5.2(b), §5.2(c) reference table (d = 1024). spherical is input-independent and its R does not
  // depend on d when m_b divides d, so its rows run at d = 64 (the encoder is the slow part).
  const auto x = test::gaussian(1024, 1);
  const auto x64 = test::gaussian(64, 1);
  auto report = [&](const char* spec) { return bits_report(*make_codec(spec, Layout(1024)), x); };
  auto report64 = [&](const char* spec) { return bits_report(*make_codec(spec, Layout(64)), x64); };
  const BitsReport s88 = report64("spherical:block=8,bits=8");
  EXPECT_DOUBLE_EQ(s88.bits_per_coord, 5.0);
  EXPECT_NEAR(s88.measured, 0.447, 0.0005);
  EXPECT_NEAR(s88.r_declared, 5.9, 0.05);
  const BitsReport s1612 = report64("spherical:block=16,bits=12");
  EXPECT_DOUBLE_EQ(s1612.bits_per_coord, 2.75);
  EXPECT_NEAR(s1612.lb_declared_bits / 64, 0.645, 0.001);
  EXPECT_NEAR(s1612.r_declared, 4.3, 0.05);
  EXPECT_NEAR(s1612.r_measured, s1612.r_declared, 1e-6 * s1612.r_declared);  // fp32 norms
  const BitsReport s416 = report64("spherical:block=4,bits=16");
  EXPECT_DOUBLE_EQ(s416.bits_per_coord, 12.0);
  EXPECT_NEAR(s416.r_declared, 2.6, 0.05);
  // natural: 9 / (1/2 log2 9) = 5.68 against omega = 1/8.
  EXPECT_NEAR(report("natural").r_declared, 9.0 / (0.5 * std::log2(9.0)), 1e-12);
  // rand-k with k = 32 and a seeded index set: omega = 31 exactly, R = 1088 / (512 log2(32/31)) = 46.4.
  const BitsReport rk = report("randk:k=32");
  EXPECT_DOUBLE_EQ(rk.measured, 31.0);
  EXPECT_NEAR(rk.r_measured, 1088 / (512 * std::log2(32.0 / 31.0)), 1e-9);
  // sdither l2, s = 1 (§5.2(a): 0.31 gamma / 0.30 delta bits/coord at omega 24.4, 50 draws; the
  // spec counts no length word, gcomp adds 32 bits). One message varies (nnz ~ 25 +- 5), so the
  // bits are averaged over 50 keys; tolerance 0.02 bits/coord (about 4 standard errors).
  for (const auto& [spec, want] :
       {std::pair{"sdither:levels=1,norm=l2", 0.31}, std::pair{"sdither:levels=1,norm=l2,code=delta", 0.30}}) {
    double bits = 0;
    for (uint32_t k = 0; k < 50; ++k) {
      BitsReportOptions opt;
      opt.key = RngKey{7, 0, k, 0};
      const BitsReport sd = bits_report(*make_codec(spec, Layout(1024)), x, opt);
      EXPECT_NEAR(sd.measured, 24.4, 1.0);
      EXPECT_LT(sd.bits, sd.bits_worst);
      EXPECT_GT(sd.r_measured, 5.0);
      bits += sd.bits;
    }
    EXPECT_NEAR((bits / 50 - 32) / 1024, want, 0.02) << spec;
  }
  // identity: omega = 0, both R n/a.
  const BitsReport id = report("identity");
  EXPECT_TRUE(std::isnan(id.r_declared));
  EXPECT_TRUE(std::isnan(id.r_measured));
  EXPECT_NE(bits_report_json(id).find("\"R_declared\": null, \"R_measured\": null"), std::string::npos);
  const BitsReportText idt = bits_report_text(id, 2);
  EXPECT_EQ(idt.declared, "omega<=0");
  EXPECT_EQ(idt.r_declared, "n/a");
  EXPECT_EQ(idt.r_measured, "n/a");
  // A contractive codec: its delta, the measured eps with its method, R to the asked precision.
  const BitsReport tk = report("topk:k=8");
  const BitsReportText tkt = bits_report_text(tk, 3);
  EXPECT_EQ(tkt.declared.rfind("delta>=", 0), 0u) << tkt.declared;
  EXPECT_EQ(tkt.measured.rfind("eps=", 0), 0u) << tkt.measured;
  char want[32];
  std::snprintf(want, sizeof want, "%.3f", tk.r_measured);
  EXPECT_EQ(tkt.r_measured, want);
}

TEST(BitsReportTest, RiceCodedTopkIndicesLowerR) {
  // Same selection, same measured error; the index coding alone moves R toward the bound.
  const int64_t d = 65536;
  const auto x = test::gaussian(d, 8);
  const BitsReport plain = bits_report(*make_codec("topk:ratio=0.01", Layout(d)), x);
  const BitsReport rice = bits_report(*make_codec("topk:ratio=0.01,index=rice", Layout(d)), x);
  EXPECT_EQ(rice.measured, plain.measured);
  EXPECT_LT(rice.bits, plain.bits);
  EXPECT_LT(rice.r_measured, plain.r_measured);
  EXPECT_LT(rice.r_declared, plain.r_declared);
  EXPECT_GE(rice.r_declared, 1.0);
}

TEST(BitsReportTest, MeasuresAndArguments) {
  const auto x = test::gaussian(256, 5);
  // Deterministic biased codecs: one draw; randomized biased codecs: Monte Carlo over K draws.
  const BitsReport sign = bits_report(*make_codec("sign", Layout(256)), x);
  EXPECT_EQ(sign.method, ErrorMeasure::kSingleDraw);
  EXPECT_FALSE(sign.measured_is_omega);
  BitsReportOptions opt;
  opt.draws = 8;
  const BitsReport tg = bits_report(*make_codec("terngrad:clip=2.5", Layout(256)), x, opt);
  EXPECT_EQ(tg.method, ErrorMeasure::kMonteCarlo);
  EXPECT_EQ(tg.draws, 8);
  EXPECT_TRUE(std::isnan(tg.r_declared));  // no guarantee
  // The exact dither-family omega-hat agrees with a Monte Carlo average (T2-style, 4%).
  auto c = make_codec("dither:levels=2,norm=linf,block=16", Layout(256));
  const BitsReport ex = bits_report(*c, x);
  EXPECT_EQ(ex.method, ErrorMeasure::kExact);
  double mc = 0;
  std::vector<uint8_t> p(c->encoded_bytes());
  std::vector<float> y(256);
  for (uint32_t k = 0; k < 4000; ++k) {
    c->encode(x, RngKey{3, 0, k, 0}, p);
    c->decode(p, RngKey{3, 0, k, 0}, y);
    mc += test::sq_dist(y, x);
  }
  EXPECT_NEAR(mc / 4000 / test::sq_norm(x) / ex.measured, 1.0, 0.04);
  EXPECT_TRUE(std::isnan(lower_bound_bits(10, 0.0)));
  EXPECT_TRUE(std::isnan(lower_bound_bits(10, 1.0)));
  EXPECT_DOUBLE_EQ(lower_bound_bits(10, 0.25), 10.0);
  EXPECT_THROW(bits_report(*c, std::vector<float>(3)), Error);
  EXPECT_FALSE(bits_report_default_specs().empty());
}

}  // namespace
