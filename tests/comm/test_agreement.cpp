// SPDX-License-Identifier: Apache-2.0
// check_agreement: FNV-1a digest, pass when texts agree, and the same message on every rank when
// they do not.
#include "collective_checks.hpp"

#include <gcomp/comm.hpp>

#include <gtest/gtest.h>

#include <string>
#include <vector>

namespace {

using gcomp::Communicator;
using gcomp::Error;
using gcomp::test::error_of;

const gcomp::LocalOptions kTestOptions{20000};

TEST(CommAgreementTest, Fnv1aKnownAnswers) {
  // Reference values of the 64-bit FNV-1a test suite (Fowler, Noll, Vo).
  EXPECT_EQ(gcomp::fnv1a64(""), 0xcbf29ce484222325ULL);
  EXPECT_EQ(gcomp::fnv1a64("a"), 0xaf63dc4c8601ec8cULL);
  EXPECT_EQ(gcomp::fnv1a64("foobar"), 0x85944171f73967e8ULL);
}

TEST(CommAgreementTest, PassesWhenAllRanksAgree) {
  for (const int num_ranks : {1, 2, 4, 7}) {
    gcomp::run_local(
        num_ranks,
        [](Communicator& comm) {
          gcomp::check_agreement(comm, "config", "codec=dither:levels=4;layout=3x1024;algo=ef;format=1");
          gcomp::check_agreement(comm, "empty config", "");
          EXPECT_FALSE(comm.is_aborted());
        },
        kTestOptions);
  }
}

/// Runs check_agreement with texts[rank] on every rank; returns each rank's error message.
std::vector<std::string> disagreement_messages(const std::vector<std::string>& texts) {
  const int num_ranks = static_cast<int>(texts.size());
  std::vector<std::string> messages(texts.size());
  gcomp::run_local(
      num_ranks,
      [&](Communicator& comm) {
        const auto rank = static_cast<size_t>(comm.rank());
        const Error e = error_of([&] { gcomp::check_agreement(comm, "codec spec", texts[rank]); });
        EXPECT_EQ(e.status(), gcompErrorMismatch) << "rank " << rank << ": " << e.what();
        messages[rank] = e.what();
      },
      kTestOptions);
  return messages;
}

TEST(CommAgreementTest, OneDifferingRankFailsEveryRankWithSameMessage) {
  const auto messages =
      disagreement_messages({"dither:levels=4", "dither:levels=4", "dither:levels=2", "dither:levels=4"});
  for (size_t r = 1; r < messages.size(); ++r) EXPECT_EQ(messages[r], messages[0]) << "rank " << r;
  EXPECT_NE(messages[0].find("codec spec differs across ranks"), std::string::npos) << messages[0];
  EXPECT_NE(messages[0].find("rank 0: \"dither:levels=4\" vs rank 2: \"dither:levels=2\""), std::string::npos)
      << messages[0];
  EXPECT_NE(messages[0].find("1 of 4 ranks differ from rank 0: 2"), std::string::npos) << messages[0];
}

TEST(CommAgreementTest, SeveralGroupsAndLengthsAreAllShown) {
  const auto messages =
      disagreement_messages({"sign:block=4096", "", "topk:ratio=0.01", "sign:block=4096", "topk:ratio=0.01"});
  for (size_t r = 1; r < messages.size(); ++r) EXPECT_EQ(messages[r], messages[0]) << "rank " << r;
  EXPECT_NE(messages[0].find("rank 0: \"sign:block=4096\" vs rank 1: \"\""), std::string::npos) << messages[0];
  EXPECT_NE(messages[0].find("rank 0: \"sign:block=4096\" vs ranks 2,4: \"topk:ratio=0.01\""), std::string::npos)
      << messages[0];
  EXPECT_NE(messages[0].find("3 of 5 ranks differ from rank 0: 1,2,4"), std::string::npos) << messages[0];
}

TEST(CommAgreementTest, LongTextsAreTruncatedInTheMessage) {
  const std::string long_a(1000, 'a');
  std::string long_b = long_a;
  long_b.back() = 'b';
  const auto messages = disagreement_messages({long_a, long_b});
  EXPECT_EQ(messages[0], messages[1]);
  EXPECT_NE(messages[0].find("...\" (1000 bytes)"), std::string::npos) << messages[0];
  EXPECT_LT(messages[0].size(), 1000u);
}

}  // namespace
