// SPDX-License-Identifier: Apache-2.0
// The common setup of spec/ALGORITHMS.md §9.2 on the shipped datasets: data, split, lambda = L0/100,
// x*, and a driver that runs a Session on `local` ranks and records e_k = |x_k - x*|^2 / |x*|^2.
#pragma once

#include <gcomp/comm.hpp>
#include <gcomp/session.hpp>

#include "tools/support/problems.hpp"

#include <cmath>
#include <cstdlib>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

namespace gcomp::test {

/// Datasets run by default (fast tier: mushrooms); GCOMP_DATASETS=all (the `slow` ctest label) runs all five.
inline bool dataset_enabled(const std::string& name) {
  const char* env = std::getenv("GCOMP_DATASETS");
  const std::string list = env ? env : "mushrooms";
  return list == "all" || ("," + list + ",").find("," + name + ",") != std::string::npos;
}

inline std::string slow_tier_reason(const std::string& name) {
  return name + " runs in the slow tier (GCOMP_DATASETS=all, ctest -L slow)";
}

inline std::string dataset_path(const std::string& name) {
  return std::string(GCOMP_SOURCE_DIR) + "/data/libsvm/" + name;
}

/// One dataset's problem with the spec's constants, cached across tests of a binary.
struct Setup {
  Dataset data;
  std::unique_ptr<Problem> problem;
  double L0 = 0, lambda = 0, L = 0, mu = 0;
  std::vector<double> xstar;
  double fstar = 0, xstar_sq = 0;
  double sigma_star_sq = 0;  // (1/n) sum |grad f_i(x*)|^2

  static const Setup& get(const std::string& name, int workers = 10, Loss loss = Loss::kLogistic) {
    static std::mutex mu_;
    static std::map<std::string, std::unique_ptr<Setup>> cache;
    std::lock_guard<std::mutex> lock(mu_);
    const std::string key = name + "/" + std::to_string(workers) + "/" + std::to_string(static_cast<int>(loss));
    auto& slot = cache[key];
    if (!slot) {
      slot = std::make_unique<Setup>();
      Setup& s = *slot;
      s.data = load_libsvm(dataset_path(name));
      Problem unreg(s.data, workers, loss, 0.0);
      s.L0 = unreg.smoothness_without_reg();
      s.lambda = s.L0 / 100.0;
      s.L = s.L0 + s.lambda;
      s.mu = s.lambda;
      s.problem = std::make_unique<Problem>(s.data, workers, loss, s.lambda);
      s.xstar = s.problem->solve();
      s.fstar = s.problem->value(s.xstar);
      for (double v : s.xstar) s.xstar_sq += v * v;
      std::vector<double> g(s.xstar.size());
      for (int i = 0; i < workers; ++i) {
        s.problem->gradient(s.xstar, i, g);
        for (double v : g) s.sigma_star_sq += v * v / workers;
      }
    }
    return *slot;
  }

  [[nodiscard]] double rel_error(const std::vector<double>& x) const {
    double s = 0;
    for (size_t i = 0; i < x.size(); ++i) s += (x[i] - xstar[i]) * (x[i] - xstar[i]);
    return s / xstar_sq;
  }
};

/// Runs `iters` steps of a Session on `workers` local ranks with full local gradients from x0 = 0.
/// Returns e_k for k = 0..iters (e_0 = 1).
inline std::vector<double> run_session(const Setup& s, SessionConfig cfg, int64_t iters) {
  const int P = s.problem->workers();
  const int64_t d = s.problem->dim();
  std::vector<double> errors(static_cast<size_t>(iters) + 1, 0.0);
  run_local(P, [&](Communicator& comm) {
    Session session(comm, Layout(d), cfg);
    std::vector<double> x(static_cast<size_t>(d), 0.0), g(static_cast<size_t>(d));
    if (comm.rank() == 0) errors[0] = s.rel_error(x);
    for (int64_t k = 0; k < iters; ++k) {
      s.problem->gradient(x, comm.rank(), g);
      session.apply(g, x);
      if (comm.rank() == 0) errors[static_cast<size_t>(k) + 1] = s.rel_error(x);
    }
  });
  return errors;
}

inline int64_t first_hit(const std::vector<double>& e, double eps) {
  for (size_t k = 0; k < e.size(); ++k)
    if (e[k] <= eps) return static_cast<int64_t>(k);
  return -1;
}

/// The spec's DIANA budget K_th(eps) for a codec with worst-case omega.
inline int64_t diana_budget(const Setup& s, double omega, double eps) {
  const double n = s.problem->workers();
  const double alpha = 1.0 / (omega + 1.0);
  const double gamma = 1.0 / (s.L * (1.0 + 6.0 * omega / n));
  const double M = 4.0 * omega / (n * alpha);
  const double V0 = 1.0 + M * gamma * gamma * s.sigma_star_sq / s.xstar_sq;
  const double rate = std::min(gamma * s.mu, alpha / 2.0);
  return static_cast<int64_t>(std::ceil(std::log(V0 / eps) / -std::log(1.0 - rate)));
}

inline double diana_gamma(const Setup& s, double omega) {
  return 1.0 / (s.L * (1.0 + 6.0 * omega / s.problem->workers()));
}

}  // namespace gcomp::test
