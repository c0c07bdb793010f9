// SPDX-License-Identifier: Apache-2.0
// The double backend (cpu) against the fp32 backend (host-f32), for every algorithm, momentum
// form, server mode and delay mode, within a bound derived from fp32 rounding (docs/algorithms.md
// "Backends"): the same gradients go into both, and every update of every step, and the final
// state, must lie within the bound of an independent model of the algorithm.
//
// The derivation. With identity codecs (sign:scale=none for signsgd-mv) every step is a straight-
// line program of +, - and x on the gradients and the constants (lr, mu, 1 - mu, alpha, 1/P, the
// Hessian's entries). Each backend rounds the result of every operation, fl(a op b) =
// (a op b)(1 + d), |d| <= u = 2^-24 (fp32 operations, and the double backend's rounding of a codec
// input to fp32; a double operation has |d| <= 2^-53 < u); an fp32 backend rounds each constant
// once. Two operations are exact on both backends: the error-feedback residual e = p - C(p) of an
// identity codec (0 in fp32; p - fl32(p) is exact in double by Sterbenz' lemma) and the first add
// of a decode-reduce (0 + x). To first order in u, a computed value is y + sum_i c_i d_i, where the
// sum runs over every rounding on the paths to y and c_i is the derivative of y with respect to
// that rounding's relative error (the rounded value times the derivative of y with respect to it).
// The model below runs each algorithm on affine forms: the value (computed in double) and the
// coefficients c_i of every fp32-level rounding d_i and of every double rounding of the model's own
// arithmetic (|d| <= 2^-53), propagated exactly through the linearised program (affine arithmetic;
// the dropped second-order terms are below 1e-5 of the bound here, covered by a factor 1.001).
// Hence, elementwise, for every update of every step and the final state,
//     |backend - model| <= 1.001 (2^-24 sum |c_i| + 2^-53 sum |c'_j|),
// and |cpu - host_f32| is at most twice the fp32 part. Cancellations (DIANA's h + alpha (g - h),
// the contracting memories) keep sum |c_i| of the order of the number of operations times |y|,
// so over the 25 steps here the bound stays below about 1e-5 of the update's scale: a missing
// momentum term, a wrong constant or another update order exceeds it by orders of magnitude
// (where the previous check allowed 0.5 * (1 + |x|)). signsgd-mv's vote is exact when every
// message's sign is: the model asserts that each worker's value is farther from 0 than its bound.
#include <gcomp/comm.hpp>
#include <gcomp/detail/session_keys.hpp>
#include <gcomp/session.hpp>

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <map>
#include <mutex>
#include <string>
#include <vector>

using namespace gcomp;

namespace {

constexpr int kRanks = 4;
const std::vector<int64_t> kSegments = {20, 17};
constexpr int64_t kDim = 37;
constexpr int kSteps = 25;
constexpr double kLr = 0.05;
constexpr uint64_t kSeed = 23;

/// A number of the model: its value and its first-order error terms (symbol id, coefficient):
/// `a` for fp32-level roundings (|d| <= 2^-24, the backends), `b` for the model's own double
/// roundings (|d| <= 2^-53). Symbols are never shared by unrelated roundings.
struct B {
  double v = 0;
  std::vector<std::pair<int, double>> a, b;
};
using Terms = std::vector<std::pair<int, double>>;

int next_symbol() {
  static int id = 0;
  return ++id;
}
/// x * ca + y * cb, merged by symbol.
Terms combine(const Terms& x, double ca, const Terms& y, double cb) {
  Terms out;
  out.reserve(x.size() + y.size());
  size_t i = 0, j = 0;
  while (i < x.size() || j < y.size()) {
    if (j == y.size() || (i < x.size() && x[i].first < y[j].first)) {
      out.emplace_back(x[i].first, ca * x[i].second);
      ++i;
    } else if (i == x.size() || y[j].first < x[i].first) {
      out.emplace_back(y[j].first, cb * y[j].second);
      ++j;
    } else {
      out.emplace_back(x[i].first, ca * x[i].second + cb * y[j].second);
      ++i;
      ++j;
    }
  }
  return out;
}
/// Adds a new rounding of the value `v` to `t`.
Terms with_rounding(Terms t, double v) {
  if (v != 0) t.emplace_back(next_symbol(), v);
  return t;
}
B input(double x) { return {x, {}, {}}; }                    // an exact input (an fp32 gradient)
B konst(double c) { return {c, with_rounding({}, c), {}}; }  // a constant, rounded once to fp32
B operator+(const B& x, const B& y) {
  const double v = x.v + y.v;
  return {v, with_rounding(combine(x.a, 1, y.a, 1), v), with_rounding(combine(x.b, 1, y.b, 1), v)};
}
B operator-(const B& x, const B& y) {
  const double v = x.v - y.v;
  return {v, with_rounding(combine(x.a, 1, y.a, -1), v), with_rounding(combine(x.b, 1, y.b, -1), v)};
}
B operator*(const B& x, const B& y) {
  const double v = x.v * y.v;
  return {v, with_rounding(combine(x.a, y.v, y.a, x.v), v), with_rounding(combine(x.b, y.v, y.b, x.v), v)};
}
/// A codec's input rounded to fp32 (double backend; exact on an fp32 backend, where d = 0).
B rnd(const B& x) { return {x.v, with_rounding(x.a, x.v), x.b}; }
/// x - y where the difference is exact on both backends (the residual p - C(p) of an identity codec).
B exact_sub(const B& x, const B& y) { return {x.v - y.v, combine(x.a, 1, y.a, -1), combine(x.b, 1, y.b, -1)}; }
/// The first add of a decode-reduce (0 + x): exact.
B exact(const B& x) { return x; }

double abs_sum(const Terms& t) {
  double s = 0;
  for (const auto& [id, c] : t) s += std::fabs(c);
  return s;
}
/// |backend value - model value| may not exceed this.
double bound(const B& x) { return 1.001 * (0x1p-24 * abs_sum(x.a) + 0x1p-53 * abs_sum(x.b)); }

struct Case {
  const char* name;
  Algorithm algo;
  double momentum = 0.0;
  bool nesterov = true;
  ServerMode server = ServerMode::kReplicated;
  Compensation compensation = Compensation::kClassical;
  int delay = 0;
  DelayMode delay_mode = DelayMode::kFixed;
  double alpha = -1.0;
};

const Case kCases[] = {
    {"gd", Algorithm::kGd},
    {"gd_momentum_delay", Algorithm::kGd, 0.5, true, ServerMode::kReplicated, Compensation::kClassical, 2},
    {"compressed_gd_momentum", Algorithm::kCompressedGd, 0.9},
    {"compressed_gd_random_delay", Algorithm::kCompressedGd, 0.0, true, ServerMode::kReplicated,
     Compensation::kClassical, 3, DelayMode::kRandom},
    {"compressed_gd_table_delay", Algorithm::kCompressedGd, 0.5, true, ServerMode::kReplicated,
     Compensation::kClassical, 2, DelayMode::kTable},
    {"signsgd_mv", Algorithm::kSignSgdMv},
    {"signum", Algorithm::kSignSgdMv, 0.9},
    {"ef_sgd", Algorithm::kEfSgd},
    {"ef_sgd_nesterov", Algorithm::kEfSgd, 0.9},
    {"ef_sgd_heavy_ball", Algorithm::kEfSgd, 0.5, false},
    {"diana", Algorithm::kDiana},
    {"diana_momentum_alpha", Algorithm::kDiana, 0.5, true, ServerMode::kReplicated, Compensation::kClassical, 0,
     DelayMode::kFixed, 0.5},
    {"dist_ef_sgdm_replicated", Algorithm::kDistEfSgdm, 0.9},
    {"dist_ef_sgdm_sharded_heavy_ball", Algorithm::kDistEfSgdm, 0.5, false, ServerMode::kSharded},
    {"doublesqueeze_replicated", Algorithm::kDoubleSqueeze},
    {"doublesqueeze_sharded", Algorithm::kDoubleSqueeze, 0.0, true, ServerMode::kSharded},
    {"doublesqueeze_momentum_replicated", Algorithm::kDoubleSqueeze, 0.9},
    {"doublesqueeze_momentum_sharded_heavy_ball", Algorithm::kDoubleSqueeze, 0.5, false, ServerMode::kSharded},
    {"hessian_ec_none", Algorithm::kHessianEc, 0.0, true, ServerMode::kReplicated, Compensation::kNone},
    {"hessian_ec_classical", Algorithm::kHessianEc},
    {"hessian_ec_hessian", Algorithm::kHessianEc, 0.0, true, ServerMode::kReplicated, Compensation::kHessian},
    {"hessian_ec_diagonal", Algorithm::kHessianEc, 0.0, true, ServerMode::kReplicated, Compensation::kDiagonal},
};

constexpr double kHess = 1.375;
double diag_entry(int64_t i) { return 1.375 + 0.01 * static_cast<double>(i % 9); }

/// The delay table of the table cases: rows of kRanks delays in [0, 2], cyclic.
std::vector<int32_t> delay_table() { return {0, 1, 2, 0, 2, 2, 1, 0, 1, 0, 0, 2}; }

/// Gradient of rank r at step k: fp32 values, never near 0, whose sign depends on (r, j) only (so
/// that Signum's momentum keeps that sign exactly on both backends).
double grad(int r, int k, int64_t j) {
  const double sign = ((j * 7 + r * 3) % 5) < 2 ? -1.0 : 1.0;
  const double mag = 0.5 + 0.4 * std::sin(0.37 * static_cast<double>(j + 1) + 1.3 * r + 0.71 * k);
  return static_cast<double>(static_cast<float>(sign * mag));
}

SessionConfig config_of(const Case& c, Backend backend) {
  SessionConfig cfg;
  cfg.algorithm = c.algo;
  cfg.codec = c.algo == Algorithm::kSignSgdMv ? "sign:scale=none" : "identity";
  cfg.server_codec = "identity";
  cfg.lr = kLr;
  cfg.momentum = c.momentum;
  cfg.nesterov = c.nesterov;
  cfg.server = c.server;
  cfg.compensation = c.compensation;
  cfg.delay = c.delay;
  cfg.delay_mode = c.delay_mode;
  if (c.delay_mode == DelayMode::kTable) cfg.delay_table = delay_table();
  cfg.alpha = c.alpha;
  cfg.seed = kSeed;
  cfg.backend = backend;
  cfg.hessian_product = [](std::span<const double> v, std::span<double> out) {
    for (size_t i = 0; i < v.size(); ++i) out[i] = kHess * v[i];
  };
  cfg.hessian_diagonal = [](std::span<double> out) {
    for (size_t i = 0; i < out.size(); ++i) out[i] = diag_entry(static_cast<int64_t>(i));
  };
  return cfg;
}

using State = std::map<std::string, std::vector<double>>;

struct BackendRun {
  std::vector<std::vector<std::vector<double>>> u;  // [step][rank][element]
  std::vector<State> state;                         // per rank, after the last step
};

BackendRun run_backend(const Case& c, Backend backend) {
  BackendRun out;
  out.u.assign(kSteps, std::vector<std::vector<double>>(kRanks));
  out.state.assign(kRanks, {});
  std::mutex m;
  const SessionConfig cfg = config_of(c, backend);
  run_local(kRanks, [&](Communicator& comm) {
    const int r = comm.rank();
    Session s(comm, Layout(kSegments), cfg);
    std::vector<double> g(kDim), u(kDim);
    for (int k = 0; k < kSteps; ++k) {
      for (int64_t j = 0; j < kDim; ++j) g[j] = grad(r, k, j);
      (void)s.step(g, u);
      std::lock_guard<std::mutex> lock(m);
      out.u[k][r] = u;
    }
    std::lock_guard<std::mutex> lock(m);
    for (const auto& [name, v] : s.state()) out.state[r][name] = *v;
  });
  return out;
}

/// The model: every rank's side of the algorithm on B numbers, element by element.
struct Model {
  std::vector<std::vector<std::vector<B>>> u;  // [step][rank][element]
  std::vector<std::map<std::string, std::vector<B>>> state;
};

int delay_of(const Case& c, int k, int r) {
  switch (c.delay_mode) {
    case DelayMode::kFixed: return c.delay;
    case DelayMode::kTable: {
      const std::vector<int32_t> t = delay_table();
      const size_t rows = t.size() / kRanks;
      return t[(static_cast<size_t>(k) % rows) * kRanks + static_cast<size_t>(r)];
    }
    case DelayMode::kRandom:
      return static_cast<int>(detail::random_delay(kSeed, static_cast<uint32_t>(r), static_cast<uint32_t>(k),
                                                   static_cast<uint32_t>(c.delay)));
  }
  return 0;
}

Model run_model(const Case& c) {
  Model out;
  out.u.assign(kSteps, std::vector<std::vector<B>>(kRanks, std::vector<B>(kDim)));
  out.state.assign(kRanks, {});
  const size_t n = kDim;
  const B lr = konst(kLr), mu = konst(c.momentum), one_minus_mu = konst(1.0 - c.momentum), inv_p = konst(1.0 / kRanks);
  const B alpha = konst(c.alpha < 0 ? 1.0 : c.alpha);  // identity: omega = 0, alpha = 1/(omega + 1)
  const bool momentum = c.momentum > 0;
  using Vec = std::vector<B>;
  std::vector<Vec> e(kRanks, Vec(n)), m(kRanks, Vec(n)), hi(kRanks, Vec(n)), v_diana(kRanks, Vec(n));
  Vec h(n), server_err(n);
  auto mean = [&](const std::vector<Vec>& dec, size_t i) {
    B s = exact(dec[0][i]);
    for (int j = 1; j < kRanks; ++j) s = s + dec[static_cast<size_t>(j)][i];
    return inv_p * s;
  };
  for (int k = 0; k < kSteps; ++k) {
    // The gradient each rank consumes at step k (bounded delay: the one given at max(0, k - tau)).
    std::vector<Vec> g(kRanks, Vec(n));
    for (int r = 0; r < kRanks; ++r) {
      const int src = std::max(0, k - delay_of(c, k, r));
      for (size_t i = 0; i < n; ++i) g[r][i] = input(grad(r, src, static_cast<int64_t>(i)));
    }
    std::vector<Vec> dec(kRanks, Vec(n));
    std::vector<Vec> u(kRanks, Vec(n));
    auto set_u_all = [&](const Vec& x) {
      for (int r = 0; r < kRanks; ++r) u[r] = x;
    };
    // Two-way round on messages p_r (identity codecs on both links): the same math, element by
    // element, for the replicated and the sharded server.
    auto two_way = [&](std::vector<Vec>& p) {
      Vec result(n);
      for (int r = 0; r < kRanks; ++r)
        for (size_t i = 0; i < n; ++i) {
          dec[r][i] = rnd(p[r][i]);
          e[r][i] = exact_sub(p[r][i], dec[r][i]);
        }
      for (size_t i = 0; i < n; ++i) {
        const B w = server_err[i] + mean(dec, i);
        const B cdec = rnd(w);
        server_err[i] = exact_sub(w, cdec);
        result[i] = cdec;
      }
      return result;
    };
    switch (c.algo) {
      case Algorithm::kGd:
      case Algorithm::kCompressedGd: {
        for (int r = 0; r < kRanks; ++r)
          for (size_t i = 0; i < n; ++i) dec[r][i] = rnd(g[r][i]);
        Vec x(n);
        for (size_t i = 0; i < n; ++i) {
          const B a = mean(dec, i);
          if (momentum) {
            m[0][i] = mu * m[0][i] + a;
            x[i] = lr * m[0][i];
          } else {
            x[i] = lr * a;
          }
        }
        for (int r = 1; r < kRanks; ++r) m[r] = m[0];
        set_u_all(x);
        break;
      }
      case Algorithm::kSignSgdMv: {
        Vec x(n);
        for (size_t i = 0; i < n; ++i) {
          int votes = 0;
          for (int r = 0; r < kRanks; ++r) {
            B val = g[r][i];
            if (momentum) {
              m[r][i] = mu * m[r][i] + one_minus_mu * g[r][i];
              val = m[r][i];
            }
            // The vote is exact only if the sign is: the value must be farther from 0 than its bound.
            EXPECT_GT(std::fabs(val.v), 2 * bound(val)) << "test setup: a message's sign is not certain";
            votes += val.v < 0 ? -1 : 1;  // sign:scale=none sends 0 as +1
          }
          const double vote = votes > 0 ? 1.0 : (votes < 0 ? -1.0 : 0.0);
          x[i] = lr * input(vote);
        }
        set_u_all(x);
        break;
      }
      case Algorithm::kEfSgd: {
        for (int r = 0; r < kRanks; ++r)
          for (size_t i = 0; i < n; ++i) {
            B d = g[r][i];
            if (momentum) {
              m[r][i] = mu * m[r][i] + g[r][i];
              d = c.nesterov ? g[r][i] + mu * m[r][i] : m[r][i];
            }
            const B p = lr * d + e[r][i];
            dec[r][i] = rnd(p);
            e[r][i] = exact_sub(p, dec[r][i]);
          }
        Vec x(n);
        for (size_t i = 0; i < n; ++i) x[i] = mean(dec, i);
        set_u_all(x);
        break;
      }
      case Algorithm::kDiana: {
        for (int r = 0; r < kRanks; ++r)
          for (size_t i = 0; i < n; ++i) {
            dec[r][i] = rnd(g[r][i] - hi[r][i]);
            hi[r][i] = hi[r][i] + alpha * dec[r][i];
          }
        Vec x(n);
        for (size_t i = 0; i < n; ++i) {
          const B a = mean(dec, i);
          const B t = h[i] + a;
          if (momentum) {
            v_diana[0][i] = mu * v_diana[0][i] + t;
            x[i] = lr * v_diana[0][i];
          } else {
            x[i] = lr * t;
          }
          h[i] = h[i] + alpha * a;
        }
        set_u_all(x);
        break;
      }
      case Algorithm::kDistEfSgdm: {
        std::vector<Vec> p(kRanks, Vec(n));
        for (int r = 0; r < kRanks; ++r)
          for (size_t i = 0; i < n; ++i) {
            m[r][i] = mu * m[r][i] + g[r][i];
            const B d = c.nesterov ? mu * m[r][i] + g[r][i] : m[r][i];
            p[r][i] = e[r][i] + lr * d;
          }
        set_u_all(two_way(p));
        break;
      }
      case Algorithm::kDoubleSqueeze: {
        std::vector<Vec> p(kRanks, Vec(n));
        for (int r = 0; r < kRanks; ++r)
          for (size_t i = 0; i < n; ++i) {
            B d = g[r][i];
            if (momentum) {
              m[r][i] = mu * m[r][i] + g[r][i];
              d = c.nesterov ? g[r][i] + mu * m[r][i] : m[r][i];
            }
            p[r][i] = d + e[r][i];
          }
        const Vec res = two_way(p);
        Vec x(n);
        for (size_t i = 0; i < n; ++i) x[i] = lr * res[i];
        set_u_all(x);
        break;
      }
      case Algorithm::kHessianEc: {
        for (int r = 0; r < kRanks; ++r)
          for (size_t i = 0; i < n; ++i) {
            B v = g[r][i];
            switch (c.compensation) {
              case Compensation::kNone: break;
              case Compensation::kClassical: v = g[r][i] + e[r][i]; break;
              case Compensation::kHessian: {
                const B t = lr * (konst(kHess) * e[r][i]);
                v = g[r][i] + (e[r][i] - t);
                break;
              }
              case Compensation::kDiagonal: {
                const B t = (lr * konst(diag_entry(static_cast<int64_t>(i)))) * e[r][i];
                v = g[r][i] + (e[r][i] - t);
                break;
              }
            }
            dec[r][i] = rnd(v);
            if (c.compensation != Compensation::kNone) e[r][i] = exact_sub(v, dec[r][i]);
          }
        Vec x(n);
        for (size_t i = 0; i < n; ++i) x[i] = lr * mean(dec, i);
        set_u_all(x);
        break;
      }
    }
    out.u[k] = u;
  }
  // Final state, by the Session's names.
  for (int r = 0; r < kRanks; ++r) {
    auto& st = out.state[r];
    const Algorithm a = c.algo;
    if (a == Algorithm::kEfSgd || a == Algorithm::kDistEfSgdm || a == Algorithm::kDoubleSqueeze ||
        a == Algorithm::kHessianEc)
      st["error"] = e[r];
    if (momentum && a != Algorithm::kDiana) st["momentum"] = m[r];
    if (a == Algorithm::kDistEfSgdm) st["momentum"] = m[r];
    if (a == Algorithm::kDiana) {
      st["shift_worker"] = hi[r];
      st["shift_server"] = h;
      if (momentum) st["momentum"] = v_diana[0];
    }
    if (a == Algorithm::kDistEfSgdm || a == Algorithm::kDoubleSqueeze) {
      if (c.server == ServerMode::kSharded) {
        const int64_t b = detail::shard_begin(kDim, kRanks, r), end = detail::shard_begin(kDim, kRanks, r + 1);
        st["server_error"] = Vec(server_err.begin() + b, server_err.begin() + end);
      } else {
        st["server_error"] = server_err;
      }
    }
  }
  return out;
}

/// Every element within its bound; also the largest |got - model| / bound seen (<= 1).
testing::AssertionResult within(const std::vector<double>& got, const std::vector<B>& model, const std::string& what,
                                double* worst) {
  if (got.size() != model.size())
    return testing::AssertionFailure() << what << ": size " << got.size() << " != " << model.size();
  for (size_t i = 0; i < got.size(); ++i) {
    const double diff = std::fabs(got[i] - model[i].v), b = bound(model[i]);
    if (!(diff <= b))
      return testing::AssertionFailure() << what << " element " << i << ": got " << got[i] << ", model " << model[i].v
                                         << ", |diff| = " << diff << " > bound " << b;
    if (b > 0) *worst = std::max(*worst, diff / b);
  }
  return testing::AssertionSuccess();
}

class CrossBackendTest : public testing::TestWithParam<Case> {};

TEST_P(CrossBackendTest, DoubleAndFp32BackendsAgreeWithinTheDerivedRoundingBound) {
  const Case& c = GetParam();
  const Model model = run_model(c);
  const BackendRun cpu = run_backend(c, Backend::kCpu);
  const BackendRun f32 = run_backend(c, Backend::kHostF32);
  double worst_cpu = 0, worst_f32 = 0, max_bound = 0, max_u = 0;
  for (int k = 0; k < kSteps; ++k)
    for (int r = 0; r < kRanks; ++r) {
      const std::string where = std::string("step ") + std::to_string(k) + " rank " + std::to_string(r);
      ASSERT_TRUE(within(cpu.u[k][r], model.u[k][r], "cpu update, " + where, &worst_cpu));
      ASSERT_TRUE(within(f32.u[k][r], model.u[k][r], "host-f32 update, " + where, &worst_f32));
      for (const B& b : model.u[k][r]) {
        max_bound = std::max(max_bound, bound(b));
        max_u = std::max(max_u, std::fabs(b.v));
      }
    }
  for (int r = 0; r < kRanks; ++r) {
    for (const auto& [name, arr] : model.state[r]) {
      SCOPED_TRACE(name);
      ASSERT_EQ(cpu.state[r].count(name), 1u) << "cpu has no state array " << name;
      ASSERT_EQ(f32.state[r].count(name), 1u) << "host-f32 has no state array " << name;
      EXPECT_TRUE(within(cpu.state[r].at(name), arr, "cpu state " + name, &worst_cpu));
      EXPECT_TRUE(within(f32.state[r].at(name), arr, "host-f32 state " + name, &worst_f32));
    }
    // Both backends hold the same arrays (the delay queue holds gradients as given).
    EXPECT_EQ(cpu.state[r].size(), f32.state[r].size());
    for (const auto& [name, arr] : cpu.state[r]) {
      if (name != "delay_queue") {
        EXPECT_EQ(model.state[r].count(name), 1u) << "state array " << name << " not modelled";
      }
    }
  }
  // The bound itself is tight: at most 1e-5 of the largest update of the run.
  EXPECT_LE(max_bound, 1e-5 * max_u);
  std::printf(
      "[ cross ] %-42s max |u| %.3g, max bound %.2e (%.1e of it); largest |diff|/bound: cpu %.3f, host-f32 %.3f\n",
      c.name, max_u, max_bound, max_bound / max_u, worst_cpu, worst_f32);
}

INSTANTIATE_TEST_SUITE_P(AllAlgorithms, CrossBackendTest, testing::ValuesIn(kCases),
                         [](const auto& param_info) { return std::string(param_info.param.name); });

}  // namespace
