// SPDX-License-Identifier: Apache-2.0
// The enum name tables (<gcomp/names.hpp>): names round-trip, unknown names list the valid ones,
// and the configuration digest keeps the server numbering it had before the C and C++ orders met.
#include <gcomp/names.hpp>

#include <gcomp/gcomp.h>

#include <gtest/gtest.h>

#include <set>
#include <string>

namespace {

template <class E>
void expect_round_trip() {
  std::set<std::string> seen;
  for (const auto& e : gcomp::enum_names<E>()) {
    EXPECT_TRUE(seen.insert(e.name).second) << e.name << " named twice";
    EXPECT_EQ(gcomp::parse_enum<E>(e.name), e.value) << e.name;
    EXPECT_STREQ(gcomp::enum_name(e.value), e.name);
    EXPECT_TRUE(gcomp::known_name<E>(e.name));
  }
  EXPECT_FALSE(gcomp::known_name<E>("no-such-name"));
  EXPECT_STREQ(gcomp::enum_name(static_cast<E>(gcomp::enum_count<E>())), "unknown");
  try {
    static_cast<void>(gcomp::parse_enum<E>("no-such-name"));
    ADD_FAILURE() << "no-such-name parsed";
  } catch (const gcomp::Error& err) {
    EXPECT_EQ(err.status(), gcompErrorInvalidArgument);
    const std::string want = std::string("'no-such-name' is not one of the valid ") + gcomp::EnumNames<E>::kWhat +
                             " values: " + gcomp::enum_choices<E>();
    EXPECT_NE(std::string(err.what()).find(want), std::string::npos) << err.what();
  }
}

TEST(EnumNamesTest, EveryTableRoundTrips) {
  expect_round_trip<gcomp::Algorithm>();
  expect_round_trip<gcomp::ServerMode>();
  expect_round_trip<gcomp::Backend>();
  expect_round_trip<gcomp::NonFinitePolicy>();
  expect_round_trip<gcomp::Regularizer>();
  expect_round_trip<gcomp::Compensation>();
  expect_round_trip<gcomp::DelayMode>();
  expect_round_trip<gcomp::GradType>();
  EXPECT_EQ(gcomp::enum_choices<gcomp::ServerMode>(), "replicated, sharded");
  EXPECT_EQ(gcomp::parse_algorithm("dist-ef-sgdm"), gcomp::Algorithm::kDistEfSgdm);
  EXPECT_STREQ(gcomp::backend_name(gcomp::Backend::kHostF32), "host-f32");
}

TEST(EnumNamesTest, CAndCppOrdersAgree) {
  EXPECT_EQ(static_cast<int>(gcomp::ServerMode::kReplicated), gcompServerReplicated);
  EXPECT_EQ(static_cast<int>(gcomp::ServerMode::kSharded), gcompServerSharded);
  EXPECT_EQ(gcomp::enum_count<gcomp::Backend>(), 3);
  EXPECT_EQ(static_cast<int>(gcomp::DelayMode::kRandom), gcompDelayRandom);
}

TEST(EnumNamesTest, DigestKeepsTheServerNumberingOfCheckpoints) {
  // Checkpoints written before the reorder carry digests of "server=0" for sharded and
  // "server=1" for replicated; the canonical text keeps those numbers.
  gcomp::SessionConfig cfg;
  cfg.server = gcomp::ServerMode::kReplicated;
  EXPECT_NE(cfg.canonical().find(";server=1;"), std::string::npos) << cfg.canonical();
  cfg.server = gcomp::ServerMode::kSharded;
  EXPECT_NE(cfg.canonical().find(";server=0;"), std::string::npos) << cfg.canonical();
}

}  // namespace
