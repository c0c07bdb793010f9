// SPDX-License-Identifier: Apache-2.0
// The codec registry (host/codecs/registry.hpp): its entries against what the codecs do.
#include "host/codecs/registry.hpp"

#include <gcomp/codec.hpp>

#include <gtest/gtest.h>

#include <cmath>
#include <set>
#include <string>
#include <vector>

namespace {

using gcomp::CodecId;
using gcomp::CodecSpec;
using gcomp::Guarantee;
using gcomp::Layout;
using gcomp::detail::Bias;
using gcomp::detail::codec_registry;
using gcomp::detail::CodecDescriptor;

TEST(CodecRegistryTest, OneEntryPerWireIdInOrderWithUniqueNames) {
  std::set<std::string> names;
  uint32_t last = 0;
  for (const CodecDescriptor& d : codec_registry()) {
    EXPECT_GT(static_cast<uint32_t>(d.id), last) << d.name;
    last = static_cast<uint32_t>(d.id);
    EXPECT_TRUE(names.insert(d.name).second) << d.name;
    EXPECT_EQ(gcomp::detail::find_codec(d.name), &d);
    EXPECT_EQ(&gcomp::detail::codec_descriptor(d.id), &d);
    ASSERT_NE(d.canonical, nullptr) << d.name;
    ASSERT_NE(d.make_cpu, nullptr) << d.name;
  }
  EXPECT_EQ(codec_registry().size(), 11u);
  EXPECT_EQ(gcomp::list_codecs().size(), codec_registry().size());
}

TEST(CodecRegistryTest, EveryKeyRoundTripsThroughTheCanonicalText) {
  for (const CodecDescriptor& d : codec_registry()) {
    const CodecSpec defaults = CodecSpec::parse(d.name);
    EXPECT_EQ(defaults.id(), d.id);
    EXPECT_EQ(defaults.options().index(), d.defaults.index()) << d.name;
    EXPECT_EQ(defaults, CodecSpec(d.id, d.defaults)) << d.name;
    EXPECT_EQ(CodecSpec::parse(defaults.canonical()), defaults) << d.name;
    for (const auto& use : d.keys) {
      // Each key given its default value explicitly parses to the same spec (k has no default).
      if (std::string(use.key->name) == "k" || std::string(use.key->name) == "p") continue;
      const std::string text =
          std::string(d.name) + ":" + use.key->name + "=" + use.key->value_text(defaults.options());
      EXPECT_EQ(CodecSpec::parse(text), defaults) << text;
    }
  }
}

TEST(CodecRegistryTest, DescriptorClaimsMatchTheCpuCodecs) {
  const Layout layout(std::vector<int64_t>{300, 77});
  std::vector<float> x(static_cast<size_t>(layout.num_elems()));
  for (size_t i = 0; i < x.size(); ++i) x[i] = std::sin(0.37f * static_cast<float>(i)) * 3.0f;
  for (const CodecDescriptor& d : codec_registry()) {
    const auto codec = d.make_cpu(CodecSpec::parse(d.name), layout);
    EXPECT_EQ(codec->spec().id(), d.id) << d.name;
    // Shareable scales: compute_scales is supported exactly when the entry says so.
    std::vector<float> scales(static_cast<size_t>(codec->num_scales()));
    bool computes = true;
    try {
      codec->compute_scales(x, scales);
    } catch (const gcomp::Error& e) {
      EXPECT_EQ(e.status(), gcompErrorNotSupported) << d.name;
      computes = false;
    }
    EXPECT_EQ(computes, d.shareable_scales) << d.name;
    // Bias of the default form against the declared guarantee.
    const Guarantee g = codec->guarantee();
    switch (d.bias) {
      case Bias::kExact: EXPECT_TRUE(g.kind == Guarantee::Kind::kUnbiased && g.omega == 0.0) << d.name; break;
      case Bias::kUnbiased: EXPECT_EQ(g.kind, Guarantee::Kind::kUnbiased) << d.name; break;
      case Bias::kBiased: EXPECT_NE(g.kind, Guarantee::Kind::kUnbiased) << d.name; break;
      case Bias::kByOption: EXPECT_FALSE(d.keys.empty()) << d.name; break;
    }
    // Block scales (GPU plan) only where the payload holds scales.
    if (d.block_scales != nullptr && d.block_scales(codec->spec())) {
      EXPECT_GT(codec->num_scales(), 0) << d.name;
    }
  }
}

TEST(CodecRegistryTest, ListLineComesFromTheKeys) {
  for (const auto& line : gcomp::list_codecs()) {
    const CodecDescriptor* d = gcomp::detail::find_codec(line.name);
    ASSERT_NE(d, nullptr) << line.name;
    if (d->keys.empty()) {
      EXPECT_EQ(line.params, "(none)");
    }
    for (const auto& use : d->keys) {
      EXPECT_NE(line.params.find(std::string(use.key->name) + "="), std::string::npos) << line.params;
    }
    EXPECT_EQ(line.guarantee, d->guarantee);
    EXPECT_EQ(line.bits, d->bits);
  }
  const gcomp::CodecDescription natdither = gcomp::list_codecs()[7];
  EXPECT_EQ(natdither.name, "natdither");
  EXPECT_EQ(natdither.params, "levels=3 norm=l2|linf|l1|lp p=2 block=0");
}

TEST(CodecRegistryTest, EveryCodecNamesItsOwnDeviceEntry) {
  // The device dispatch reads each codec's entry (cuda/dispatch/plan.cuh DeviceCodecEntry) from
  // its descriptor alone: every codec has GPU kernels, each its own entry; none without CUDA.
  std::set<const void*> entries;
  for (const CodecDescriptor& d : codec_registry()) {
#if GCOMP_HAVE_CUDA
    EXPECT_NE(d.device, nullptr) << d.name;
    EXPECT_TRUE(entries.insert(d.device).second) << d.name << " shares another codec's device entry";
#else
    EXPECT_EQ(d.device, nullptr) << d.name;
#endif
  }
}

TEST(CodecRegistryTest, ExampleSpecsParseAndNameTheirCodec) {
  for (const CodecDescriptor& d : codec_registry()) {
    ASSERT_FALSE(d.examples.empty()) << d.name;
    for (const char* text : d.examples) {
      const CodecSpec spec = CodecSpec::parse(text);
      EXPECT_EQ(spec.id(), d.id) << text;
      EXPECT_EQ(CodecSpec::parse(spec.canonical()), spec) << text;
    }
  }
}

// ---- typed options ------------------------------------------------------------------------------

/// The message of the gcomp::Error that f throws (and its status), or "" when it throws none.
template <class F>
std::string error_of(F f, gcompStatus_t want = gcompErrorInvalidArgument) {
  try {
    f();
  } catch (const gcomp::Error& e) {
    EXPECT_EQ(e.status(), want) << e.what();
    return e.what();
  }
  return "";
}

TEST(CodecOptionsTest, ParsedKeysLandInTheirOwnFields) {
  // Keys of one name and two quantities land in two fields of two types.
  const CodecSpec sph = CodecSpec::parse("spherical:block=8,bits=12,unscaled=1");
  EXPECT_EQ(sph.options<gcomp::SphericalOptions>(),
            (gcomp::SphericalOptions{.dim = 8, .index_bits = 12, .unscaled = true}));
  const CodecSpec grid = CodecSpec::parse("grid:step=0.5,bits=8");
  EXPECT_EQ(grid.options<gcomp::GridOptions>(), (gcomp::GridOptions{.quantum = 0.5, .level_bits = 8}));
  const CodecSpec dither = CodecSpec::parse("dither:levels=4,norm=lp,p=3,block=64");
  EXPECT_EQ(dither.options<gcomp::DitherOptions>(),
            (gcomp::DitherOptions{.levels = 4, .norm = gcomp::Norm::kLp, .p = 3.0, .block = 64}));
  EXPECT_EQ(CodecSpec::parse("natdither").options<gcomp::DitherOptions>().levels, 3u);
  EXPECT_EQ(CodecSpec::parse("sign:scale=none,block=4").options<gcomp::SignOptions>(),
            (gcomp::SignOptions{.block = 4, .scaled = false}));
  EXPECT_EQ(CodecSpec::parse("topk:k=7,index=rice").options<gcomp::TopKOptions>(),
            (gcomp::TopKOptions{.k = 7, .ratio = 0.01, .index = gcomp::IndexCode::kRice}));
  EXPECT_EQ(CodecSpec::parse("randk:ratio=0.5,unbiased=0").options<gcomp::RandKOptions>(),
            (gcomp::RandKOptions{.k = 0, .ratio = 0.5, .unbiased = false}));
  EXPECT_EQ(
      CodecSpec::parse("sdither:levels=2,norm=linf,block=9,code=delta,chunk=100").options<gcomp::SDitherOptions>(),
      (gcomp::SDitherOptions{
          .levels = 2, .norm = gcomp::Norm::kLinf, .block = 9, .code = gcomp::EliasCode::kDelta, .chunk = 100}));
  EXPECT_EQ(CodecSpec::parse("terngrad:clip=2.5").options<gcomp::TernGradOptions>().clip, 2.5);
  EXPECT_EQ(CodecSpec::parse("identity").options().index(), CodecSpec::parse("natural").options().index());
}

TEST(CodecOptionsTest, WrongTypeFailsClearly) {
  const CodecSpec dither = CodecSpec::parse("dither:levels=2");
  EXPECT_EQ(dither.options_if<gcomp::SignOptions>(), nullptr);
  ASSERT_NE(dither.options_if<gcomp::DitherOptions>(), nullptr);
  const std::string why = error_of([&] { (void)dither.options<gcomp::SignOptions>(); });
  EXPECT_NE(why.find("dither"), std::string::npos) << why;
  EXPECT_NE(why.find("DitherOptions"), std::string::npos) << why;
  EXPECT_NE(why.find("SignOptions"), std::string::npos) << why;
  const std::string ctor = error_of([] { (void)CodecSpec(CodecId::kSign, gcomp::DitherOptions{}); });
  EXPECT_NE(ctor.find("'sign' takes SignOptions, not DitherOptions"), std::string::npos) << ctor;
}

TEST(CodecOptionsTest, BuiltFromOptionsEqualsParsed) {
  EXPECT_EQ(CodecSpec(CodecId::kSign, gcomp::SignOptions{.block = 64}), CodecSpec::parse("sign:block=64"));
  EXPECT_EQ(CodecSpec(CodecId::kNatDither, gcomp::DitherOptions{.levels = 3}), CodecSpec::parse("natdither"));
  EXPECT_EQ(CodecSpec(CodecId::kGrid, gcomp::GridOptions{.quantum = 0.25, .level_bits = 4}),
            CodecSpec::parse("grid:step=0.25,bits=4"));
  EXPECT_EQ(CodecSpec(CodecId::kSpherical, gcomp::SphericalOptions{.dim = 4, .index_bits = 16}).canonical(),
            "spherical:block=4,bits=16,unscaled=0");
  // The exponent follows the norm as in parsed specs (l_inf stores 0, lp with p = 2 is l2).
  const CodecSpec linf(CodecId::kDither, gcomp::DitherOptions{.norm = gcomp::Norm::kLinf});
  EXPECT_EQ(linf, CodecSpec::parse("dither:norm=linf"));
  EXPECT_EQ(linf.options<gcomp::DitherOptions>().p, 0.0);
  EXPECT_EQ(CodecSpec(CodecId::kDither, gcomp::DitherOptions{.norm = gcomp::Norm::kLp, .p = 2.0}),
            CodecSpec::parse("dither"));
  EXPECT_EQ(CodecSpec(), CodecSpec::parse("identity"));
}

TEST(CodecOptionsTest, BuiltFromOptionsIsCheckedAsParsed) {
  // Ranges and cross-key checks of the parser, quoted with the canonical text.
  std::string why = error_of([] { (void)CodecSpec(CodecId::kDither, gcomp::DitherOptions{.levels = 0}); });
  EXPECT_NE(why.find("levels=0 is out of range"), std::string::npos) << why;
  why = error_of([] { (void)CodecSpec(CodecId::kSpherical, gcomp::SphericalOptions{.dim = 1024, .index_bits = 16}); });
  EXPECT_NE(why.find("work cap"), std::string::npos) << why;
  why = error_of([] { (void)CodecSpec(CodecId::kGrid, gcomp::GridOptions{.quantum = -1.0}); });
  EXPECT_NE(why.find("step must be > 0"), std::string::npos) << why;
  why = error_of([] { (void)CodecSpec(CodecId::kSDither, gcomp::SDitherOptions{.norm = gcomp::Norm::kL1}); });
  EXPECT_NE(why.find("norm=l2 or norm=linf"), std::string::npos) << why;
  why = error_of([] { (void)CodecSpec(CodecId::kDither, gcomp::DitherOptions{.norm = gcomp::Norm::kLp, .p = 0.5}); });
  EXPECT_NE(why.find("p > 1"), std::string::npos) << why;
  // Both k and ratio: the text keeps k only, so the options would not read back.
  why = error_of([] { (void)CodecSpec(CodecId::kTopK, gcomp::TopKOptions{.k = 5, .ratio = 0.5}); });
  EXPECT_NE(why.find("either k or ratio"), std::string::npos) << why;
  EXPECT_EQ(error_of([] { (void)CodecSpec(CodecId::kTopK, gcomp::TopKOptions{.k = 5}); }), "");
}

}  // namespace
