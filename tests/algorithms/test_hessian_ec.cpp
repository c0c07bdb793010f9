// SPDX-License-Identifier: Apache-2.0
// T14 (spec/ALGORITHMS.md §6, §9.2): Hessian-aided error compensation on least squares with a
// deterministic grid quantizer ends within gamma * eps of x*, while no compensation ends >= 10x
// farther away.
#include "algorithms/problem_fixture.hpp"

#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>

using namespace gcomp;
using test::Setup;

namespace {

class HessianEcTest : public testing::TestWithParam<const char*> {
 protected:
  void SetUp() override {
    if (!test::dataset_enabled(GetParam())) GTEST_SKIP() << test::slow_tier_reason(GetParam());
  }
};

/// Final |x - x*| of hessian-ec with the given compensation.
double final_distance(const Setup& s, Compensation comp, double step, int64_t iters) {
  const int64_t d = s.problem->dim();
  // Least squares: the Hessian of f is constant. Form it densely once (d products with unit
  // vectors), so the per-step product costs O(d^2) instead of a pass over all the data.
  std::vector<double> zero(static_cast<size_t>(d), 0.0), unit(static_cast<size_t>(d), 0.0), col(static_cast<size_t>(d));
  std::vector<double> h(static_cast<size_t>(d * d));
  for (int64_t j = 0; j < d; ++j) {
    unit[j] = 1.0;
    s.problem->hessian_product(zero, -1, unit, col);
    unit[j] = 0.0;
    for (int64_t i = 0; i < d; ++i) h[i * d + j] = col[i];
  }
  SessionConfig c;
  c.algorithm = Algorithm::kHessianEc;
  char spec[64];
  std::snprintf(spec, sizeof spec, "grid:step=%.17g,bits=32", step);
  c.codec = spec;
  c.lr = 1.0 / s.L;
  c.compensation = comp;
  c.hessian_product = [&h, d](std::span<const double> v, std::span<double> out) {
    for (int64_t i = 0; i < d; ++i) {
      double acc = 0;
      for (int64_t j = 0; j < d; ++j) acc += h[i * d + j] * v[j];
      out[i] = acc;
    }
  };
  const auto e = test::run_session(s, c, iters);
  return std::sqrt(e.back() * s.xstar_sq);
}

TEST_P(HessianEcTest, T14_HessianAidedEcStaysWithinGammaEps) {
  for (int workers : {1, 10}) {
    const auto& s = Setup::get(GetParam(), workers, Loss::kSquared);
    const int64_t d = s.problem->dim();
    std::vector<double> zero(static_cast<size_t>(d), 0.0), g0(static_cast<size_t>(d));
    s.problem->gradient(zero, -1, g0);
    double ginf = 0;
    for (double v : g0) ginf = std::max(ginf, std::fabs(v));
    for (double c : {1e-2, 1e-3}) {
      const double step = c * ginf;
      const double eps = step * std::sqrt(static_cast<double>(d)) / 2.0;
      const double gamma = 1.0 / s.L;
      const double hessian = final_distance(s, Compensation::kHessian, step, 6000);
      const double none = final_distance(s, Compensation::kNone, step, 6000);
      EXPECT_LE(hessian, gamma * eps) << "n=" << workers << " c=" << c;
      EXPECT_GE(none, 10.0 * hessian) << "n=" << workers << " c=" << c;
      RecordProperty("ratio_n" + std::to_string(workers) + "_c" + std::to_string(c), std::to_string(none / hessian));
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Shipped, HessianEcTest, testing::Values("mushrooms", "phishing", "a9a", "w8a", "madelon"),
                         [](const auto& param_info) { return std::string(param_info.param); });

}  // namespace
