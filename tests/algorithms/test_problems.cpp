// SPDX-License-Identifier: Apache-2.0
// The loader and problem constants against the reference table of spec/ALGORITHMS.md §9.2.
#include "algorithms/problem_fixture.hpp"

#include <gtest/gtest.h>

#include <fstream>

using namespace gcomp;

namespace {

struct Reference {
  const char* name;
  int64_t rows, dim;
  double L0, fstar, xstar_sq;
};

const Reference kRefs[] = {
    {"mushrooms", 8124, 113, 3.89606, 0.2512346591, 4.59846},
    {"a9a", 32561, 124, 1.82721, 0.3915584869, 3.91205},
    {"w8a", 49749, 301, 1.19630, 0.1552484405, 6.58890},
    {"phishing", 11055, 69, 0.417460, 0.4472534330, 48.7608},
    {"madelon", 2000, 501, 2.98108e7, 0.6923578239, 5.14794e-9},
};

class ProblemReferenceTest : public testing::TestWithParam<Reference> {};

TEST_P(ProblemReferenceTest, MatchesSpecTable) {
  const Reference& r = GetParam();
  const auto& s = test::Setup::get(r.name);
  EXPECT_EQ(s.data.rows, r.rows);
  EXPECT_EQ(s.data.cols, r.dim);
  EXPECT_NEAR(s.L0 / r.L0, 1.0, 2e-5);
  EXPECT_NEAR(s.fstar, r.fstar, 1e-9);
  EXPECT_NEAR(s.xstar_sq / r.xstar_sq, 1.0, 2e-5);
  std::vector<double> g(s.xstar.size());
  s.problem->gradient(s.xstar, -1, g);
  double gn = 0;
  for (double v : g) gn += v * v;
  EXPECT_LT(std::sqrt(gn), 1e-12);
}

INSTANTIATE_TEST_SUITE_P(Shipped, ProblemReferenceTest, testing::ValuesIn(kRefs),
                         [](const auto& param_info) { return std::string(param_info.param.name); });

TEST(LibsvmTest, MalformedFilesNameTheLine) {
  const std::string path = testing::TempDir() + "/bad.svm";
  auto expect_error = [&](const std::string& text, const std::string& needle) {
    std::ofstream(path) << text;
    try {
      (void)load_libsvm(path);
      ADD_FAILURE() << "accepted: " << text;
    } catch (const Error& e) {
      EXPECT_EQ(e.status(), gcompErrorInvalidArgument);
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
    }
  };
  expect_error("1 1:0.5\nx 2:1\n", ":2: the line does not start with a numeric label");
  expect_error("1 2:0.5 1:1\n", ":1: indices must be >= 1 and increasing");
  expect_error("1 2:abc\n", "bad value for index 2");
  expect_error("1 2\n", "expected index:value");
  expect_error("1 1:1\n2 1:1\n3 1:1\n", "3 distinct labels");
  expect_error("", "no data rows");
  try {
    (void)load_libsvm(path + ".missing");
    ADD_FAILURE();
  } catch (const Error& e) {
    EXPECT_EQ(e.status(), gcompErrorIo);
  }
  std::ofstream(path) << "0 1:1 3:2\n\n1 2:1\n";
  const Dataset d = load_libsvm(path, 5, true);
  EXPECT_EQ(d.rows, 2);
  EXPECT_EQ(d.cols, 6);
  EXPECT_EQ(d.label[0], -1.0);
  EXPECT_EQ(d.label[1], 1.0);
  EXPECT_EQ(d.row_ptr[1], 3);  // two features and the bias
}

}  // namespace
