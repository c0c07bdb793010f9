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
    EXPECT_EQ(defaults.id, d.id);
    EXPECT_EQ(CodecSpec::parse(defaults.canonical()), defaults) << d.name;
    for (const auto& use : d.keys) {
      // Each key given its default value explicitly parses to the same spec (k has no default).
      if (std::string(use.key->name) == "k" || std::string(use.key->name) == "p") continue;
      const std::string text = std::string(d.name) + ":" + use.key->name + "=" + use.key->value_text(defaults);
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
    EXPECT_EQ(codec->spec().id, d.id) << d.name;
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

}  // namespace
