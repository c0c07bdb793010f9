// SPDX-License-Identifier: Apache-2.0
// Codec spec parsing: defaults, canonical text, and errors that name the bad part.
#include <gcomp/codec.hpp>

#include <gtest/gtest.h>

using gcomp::CodecSpec;

namespace {

std::string error_of(const std::string& text) {
  try {
    (void)CodecSpec::parse(text);
  } catch (const gcomp::Error& e) {
    EXPECT_EQ(e.status(), gcompErrorInvalidArgument);
    return e.what();
  }
  ADD_FAILURE() << "'" << text << "' parsed without error";
  return {};
}

}  // namespace

TEST(CodecSpecTest, DefaultsAndCanonicalText) {
  EXPECT_EQ(CodecSpec::parse("identity").canonical(), "identity");
  EXPECT_EQ(CodecSpec::parse("dither").canonical(), "dither:levels=1,norm=l2,block=0");
  EXPECT_EQ(CodecSpec::parse("dither:levels=4,norm=l2,block=512").canonical(), "dither:levels=4,norm=l2,block=512");
  EXPECT_EQ(CodecSpec::parse(" dither : norm=inf , levels=2 ").canonical(), "dither:levels=2,norm=linf,block=0");
  EXPECT_EQ(CodecSpec::parse("dither:norm=lp,p=3").canonical(), "dither:levels=1,norm=lp,p=3,block=0");
  EXPECT_EQ(CodecSpec::parse("dither:norm=lp,p=2").canonical(), "dither:levels=1,norm=l2,block=0");
  EXPECT_EQ(CodecSpec::parse("terngrad:clip=2.5").canonical(), "terngrad:clip=2.5");
  EXPECT_EQ(CodecSpec::parse("terngrad").canonical(), "terngrad:clip=0");
  EXPECT_EQ(CodecSpec::parse("sign:block=4096").canonical(), "sign:block=4096,scale=l1");
  EXPECT_EQ(CodecSpec::parse("sign:scale=none").canonical(), "sign:block=0,scale=none");
  EXPECT_EQ(CodecSpec::parse("topk:ratio=0.01").canonical(), "topk:ratio=0.01");
  EXPECT_EQ(CodecSpec::parse("topk:k=7").canonical(), "topk:k=7");
  EXPECT_EQ(CodecSpec::parse("randk:k=1000,unbiased=1").canonical(), "randk:k=1000,unbiased=1");
  EXPECT_EQ(CodecSpec::parse("natural").canonical(), "natural");
  EXPECT_EQ(CodecSpec::parse("grid:step=0.5").canonical(), "grid:step=0.5,bits=16");
  EXPECT_EQ(CodecSpec::parse("grid:bits=32,step=1e-3").canonical(), "grid:step=0.001,bits=32");
  EXPECT_EQ(CodecSpec::parse("natdither:levels=4,norm=linf").canonical(), "natdither:levels=4,norm=linf,block=0");
  EXPECT_EQ(CodecSpec::parse("sdither").canonical(), "sdither:levels=1,norm=l2,block=0,code=gamma,chunk=4096");
  EXPECT_EQ(CodecSpec::parse("sdither:code=delta,levels=4,norm=inf,chunk=64").canonical(),
            "sdither:levels=4,norm=linf,block=0,code=delta,chunk=64");
  EXPECT_EQ(CodecSpec::parse("spherical").canonical(), "spherical:block=16,bits=8,unscaled=0");
  EXPECT_EQ(CodecSpec::parse("spherical:bits=12,unscaled=1").canonical(), "spherical:block=16,bits=12,unscaled=1");
}

TEST(CodecSpecTest, CanonicalRoundTrips) {
  for (const char* s :
       {"dither:levels=7,norm=lp,p=2.5,block=33", "terngrad:clip=1.75", "randk:ratio=0.125,unbiased=0",
        "sign:block=16,scale=none", "natdither:levels=2,norm=l1,block=4",
        "sdither:levels=3,norm=l2,block=33,code=delta,chunk=100", "spherical:block=4,bits=16,unscaled=0"}) {
    const CodecSpec a = CodecSpec::parse(s);
    EXPECT_EQ(CodecSpec::parse(a.canonical()), a) << s;
    EXPECT_EQ(a.canonical(), s);
  }
}

TEST(CodecSpecTest, ErrorsNameTheBadPartAndListValidOnes) {
  EXPECT_NE(error_of("qsgd").find("valid codecs: identity, dither, terngrad"), std::string::npos);
  EXPECT_NE(error_of("dither:level=4").find("unknown key 'level' for dither; valid keys: levels,norm,p,block"),
            std::string::npos);
  EXPECT_NE(error_of("dither:levels=0").find("levels=0 is out of range"), std::string::npos);
  EXPECT_NE(error_of("dither:levels=x").find("not an integer"), std::string::npos);
  EXPECT_NE(error_of("dither:norm=l3").find("not one of l1, l2, linf, lp"), std::string::npos);
  EXPECT_NE(error_of("dither:norm=lp").find("needs p"), std::string::npos);
  EXPECT_NE(error_of("dither:p=3").find("only valid with norm=lp"), std::string::npos);
  EXPECT_NE(error_of("dither:norm=lp,p=0.5").find("p must be > 1"), std::string::npos);
  EXPECT_NE(error_of("topk:k=5,ratio=0.1").find("either k or ratio"), std::string::npos);
  EXPECT_NE(error_of("topk:ratio=1.5").find("ratio must be in (0, 1]"), std::string::npos);
  EXPECT_NE(error_of("topk:ratio=nan").find("not a finite number"), std::string::npos);
  EXPECT_NE(error_of("randk:unbiased=2").find("must be 0 or 1"), std::string::npos);
  EXPECT_NE(error_of("identity:x=1").find("valid keys: (none)"), std::string::npos);
  EXPECT_NE(error_of("sign:block").find("is not key=value"), std::string::npos);
  EXPECT_NE(error_of("sign:block=1,,").find("empty parameter"), std::string::npos);
  EXPECT_NE(error_of("sign:block=1,block=2").find("given twice"), std::string::npos);
  EXPECT_NE(error_of("terngrad:clip=-1").find("clip must be >= 0"), std::string::npos);
  EXPECT_EQ(CodecSpec::parse("grid").canonical(), "grid:step=0.00390625,bits=16");
  EXPECT_NE(error_of("grid:step=0").find("step must be > 0"), std::string::npos);
  EXPECT_NE(error_of("grid:step=1,bits=33").find("out of range"), std::string::npos);
  EXPECT_NE(error_of("sdither:norm=l1").find("sdither supports norm=l2 or norm=linf"), std::string::npos);
  EXPECT_NE(error_of("sdither:code=rice").find("not one of gamma, delta"), std::string::npos);
  EXPECT_NE(error_of("sdither:chunk=0").find("chunk=0 is out of range"), std::string::npos);
  EXPECT_NE(error_of("spherical:bits=17").find("bits=17 is out of range [1, 16]"), std::string::npos);
  EXPECT_NE(error_of("spherical:block=0").find("block=0 is out of range"), std::string::npos);
  EXPECT_NE(error_of("spherical:bits=16,block=128").find("exceeds the encoder work cap 2^22"), std::string::npos);
  EXPECT_NE(error_of("spherical:levels=2").find("valid keys: block,bits,unscaled"), std::string::npos);
}

TEST(CodecSpecTest, ListCoversEveryCodec) {
  const auto list = gcomp::list_codecs();
  ASSERT_EQ(list.size(), 11u);
  for (const auto& d : list) EXPECT_NO_THROW((void)CodecSpec::parse(d.name)) << d.name;
}
