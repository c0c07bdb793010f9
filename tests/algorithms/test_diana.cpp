// SPDX-License-Identifier: Apache-2.0
// DIANA and its no-memory baselines on the shipped datasets (spec/ALGORITHMS.md §9.2 T6-T10).
#include "algorithms/problem_fixture.hpp"

#include <gtest/gtest.h>

#include <algorithm>

using namespace gcomp;
using test::Setup;

namespace {

std::string spec_of(const char* norm, int block) {
  return std::string("dither:levels=1,norm=") + norm + ",block=" + std::to_string(block);
}

double omega_of(const std::string& spec, int64_t d) { return make_codec(spec, Layout(d))->guarantee().omega; }

SessionConfig diana(const Setup& s, const std::string& codec, uint64_t seed) {
  SessionConfig c;
  c.algorithm = Algorithm::kDiana;
  c.codec = codec;
  c.seed = seed;
  c.lr = test::diana_gamma(s, omega_of(codec, s.problem->dim()));
  return c;
}

double median(std::vector<double> v) {
  std::nth_element(v.begin(), v.begin() + static_cast<std::ptrdiff_t>(v.size() / 2), v.end());
  return v[v.size() / 2];
}

class DianaTest : public testing::TestWithParam<const char*> {
 protected:
  void SetUp() override {
    if (!test::dataset_enabled(GetParam())) GTEST_SKIP() << test::slow_tier_reason(GetParam());
  }
};

// T6: l_inf, s = 1, whole vector: e <= 1e-10 at K_th(1e-10) for every seed.
// T9: the no-memory baseline (compressed-gd, same gamma) stalls: median e over [K/2, K] >= 1e-5.
TEST_P(DianaTest, T6_T9_ExactOptimumVersusNoMemoryStall) {
  const auto& s = Setup::get(GetParam());
  const std::string codec = spec_of("linf", 0);
  const int64_t budget = test::diana_budget(s, omega_of(codec, s.problem->dim()), 1e-10);
  for (uint64_t seed : {1u, 2u}) {
    const auto e = test::run_session(s, diana(s, codec, seed), budget);
    EXPECT_LE(e.back(), 1e-10) << GetParam() << " seed " << seed << " K_th " << budget;
  }
  for (const char* norm : {"linf", "l2"}) {
    const std::string c = spec_of(norm, 0);
    SessionConfig base = diana(s, c, 1);
    base.algorithm = Algorithm::kCompressedGd;
    const int64_t k = test::diana_budget(s, omega_of(c, s.problem->dim()), 1e-10);
    const auto e = test::run_session(s, base, k);
    EXPECT_GE(median(std::vector<double>(e.begin() + static_cast<std::ptrdiff_t>(k / 2), e.end())), 1e-5)
        << GetParam() << " " << norm << ": compressed-gd without memory should stall";
  }
}

// T7: l_inf beats l2 for the whole vector, b = 16 and b = 4; both reach 1e-10 within K_th.
// T8: smaller blocks converge faster: K_hit(b=4) < K_hit(b=16) < K_hit(whole), for l_inf and l2.
TEST_P(DianaTest, T7_T8_NormAndBlockSize) {
  const auto& s = Setup::get(GetParam());
  const int64_t d = s.problem->dim();
  std::map<std::string, int64_t> hit;
  for (const char* norm : {"linf", "l2"}) {
    for (int b : {0, 16, 4}) {
      const std::string c = spec_of(norm, b);
      const int64_t budget = test::diana_budget(s, omega_of(c, d), 1e-10);
      const auto e = test::run_session(s, diana(s, c, 1), budget);
      hit[c] = test::first_hit(e, 1e-10);
      EXPECT_GE(hit[c], 0) << c << " did not reach 1e-10 within K_th = " << budget;
    }
  }
  for (int b : {0, 16, 4}) EXPECT_LT(hit[spec_of("linf", b)], hit[spec_of("l2", b)]) << "block " << b;
  for (const char* norm : {"linf", "l2"}) {
    EXPECT_LT(hit[spec_of(norm, 4)], hit[spec_of(norm, 16)]) << norm;
    EXPECT_LT(hit[spec_of(norm, 16)], hit[spec_of(norm, 0)]) << norm;
  }
}

// T10: prox-DIANA with R = lambda1 |x|_1 reaches the prox-GD solution and its exact support; the
// no-memory prox variant stays >= 1e-5 away.
TEST_P(DianaTest, T10_ProxDianaFindsTheExactSupport) {
  const auto& s = Setup::get(GetParam());
  const int64_t d = s.problem->dim();
  std::vector<double> zero(static_cast<size_t>(d), 0.0), g0(static_cast<size_t>(d));
  s.problem->gradient(zero, -1, g0);
  double ginf = 0;
  for (double v : g0) ginf = std::max(ginf, std::fabs(v));
  for (double rho : {0.01, 0.03}) {
    const double l1 = rho * ginf;
    // Reference x_R*: prox-GD with step 1/L until the iterate stops changing.
    std::vector<double> x(static_cast<size_t>(d), 0.0), g(static_cast<size_t>(d)), prev;
    for (int it = 0; it < 100000; ++it) {
      prev = x;
      s.problem->gradient(x, -1, g);
      for (int64_t j = 0; j < d; ++j) x[j] -= g[j] / s.L;
      apply_prox(Regularizer::kL1, l1 / s.L, x);
      if (x == prev) break;
    }
    double xr_sq = 0;
    for (double v : x) xr_sq += v * v;
    const std::string codec = spec_of("linf", 0);
    SessionConfig c = diana(s, codec, 1);
    c.prox = Regularizer::kL1;
    c.prox_lambda = l1;
    const int64_t budget = test::diana_budget(s, omega_of(codec, d), 1e-10);
    // Run and compare against x_R* instead of x*.
    auto run = [&](SessionConfig cfg) {
      std::vector<double> final_x(static_cast<size_t>(d));
      run_local(s.problem->workers(), [&](Communicator& comm) {
        Session session(comm, Layout(d), cfg);
        std::vector<double> xi(static_cast<size_t>(d), 0.0), gi(static_cast<size_t>(d));
        for (int64_t k = 0; k < budget; ++k) {
          s.problem->gradient(xi, comm.rank(), gi);
          session.apply(gi, xi);
        }
        if (comm.rank() == 0) final_x = xi;
      });
      double err = 0;
      for (int64_t j = 0; j < d; ++j) err += (final_x[j] - x[j]) * (final_x[j] - x[j]);
      return std::make_pair(err / xr_sq, final_x);
    };
    const auto [err, xd] = run(c);
    EXPECT_LE(err, 1e-10) << GetParam() << " rho " << rho;
    int64_t support = 0;
    for (int64_t j = 0; j < d; ++j) {
      EXPECT_EQ(xd[j] != 0.0, x[j] != 0.0) << "coordinate " << j << " rho " << rho;
      support += x[j] != 0.0;
    }
    EXPECT_GT(support, 0);
    EXPECT_LT(support, d);
    SessionConfig nomem = c;
    nomem.algorithm = Algorithm::kCompressedGd;
    EXPECT_GE(run(nomem).first, 1e-5) << GetParam() << " rho " << rho;
  }
}

INSTANTIATE_TEST_SUITE_P(Shipped, DianaTest, testing::Values("mushrooms", "phishing", "a9a", "w8a", "madelon"),
                         [](const auto& param_info) { return std::string(param_info.param); });

}  // namespace
