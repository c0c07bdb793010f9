// SPDX-License-Identifier: Apache-2.0
// The one Session engine behind every backend (docs/algorithms.md "Backends"): behaviours that
// were written twice before and drifted, now checked on the double (cpu) and fp32 (host-f32)
// backends alike: a step that fails after its last collective (a peer's payload that does not
// decode) leaves the state untouched; nonfinite = zero runs no agreement round. And the algorithm
// fixes of issue 14: momentum is never silently ignored (every algorithm has a momentum form but
// hessian-ec, which rejects it); delays per (step, worker) from a table or a seeded random draw.
#include "common/forwarding_comm.hpp"

#include "algorithms/session_cases.hpp"
#include "host/codecs/pieces.hpp"

#include <gcomp/comm.hpp>
#include <gcomp/detail/session_keys.hpp>
#include <gcomp/session.hpp>

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <functional>
#include <limits>
#include <map>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

using namespace gcomp;

namespace {

constexpr int kRanks = 3;
const std::vector<int64_t> kSegments = {23, 1, 40};
constexpr int64_t kDim = 64;

void gradient(int r, int k, std::vector<double>& g) {
  for (int64_t j = 0; j < kDim; ++j)
    g[j] = std::sin(0.37 * static_cast<double>(j + 1) + 1.3 * r + 0.71 * k) * (1.0 + 0.1 * static_cast<double>(j % 7));
}

/// Forwards to a local communicator. Counts the collectives of each kind; when armed, overwrites
/// what collective number `at` delivered with 0xff bytes: the slot of the next rank (allgather,
/// alltoall) or the whole result (allreduce), as a peer that sent garbage would.
class CorruptingComm final : public gcomp::test::ForwardingComm {
 public:
  explicit CorruptingComm(Communicator& inner) : ForwardingComm(inner) {}
  void arm(int at) {
    at_ = at;
    count_ = allreduces_ = 0;
  }
  int count() const { return count_; }
  int allreduces() const { return allreduces_; }
  void allgather(const void* s, void* r, size_t b, Stream st) override {
    inner().allgather(s, r, b, st);
    hit(static_cast<uint8_t*>(r) + b * static_cast<size_t>((rank() + 1) % size()), b);
  }
  void alltoall(const void* s, void* r, size_t b, Stream st) override {
    inner().alltoall(s, r, b, st);
    hit(static_cast<uint8_t*>(r) + b * static_cast<size_t>((rank() + 1) % size()), b);
  }
  void allreduce(const void* s, void* r, size_t c, DataType t, ReduceOp o, Stream st) override {
    ++allreduces_;
    inner().allreduce(s, r, c, t, o, st);
    hit(static_cast<uint8_t*>(r), c * (t == DataType::kF32 || t == DataType::kI32 ? 4u : 8u));
  }

 private:
  void hit(uint8_t* p, size_t bytes) {
    if (count_++ == at_) std::memset(p, 0xff, bytes);
  }
  int at_ = -1;
  int count_ = 0;
  int allreduces_ = 0;
};

using State = std::vector<std::pair<std::string, std::vector<double>>>;
State copy_state(const Session& s) {
  State out;
  for (const auto& [name, v] : s.state()) out.emplace_back(name, *v);
  return out;
}

class EngineBackendTest : public testing::TestWithParam<Backend> {};

TEST_P(EngineBackendTest, AStepThatFailsAfterItsLastCollectiveLeavesStateUntouched) {
  // Every case, every collective of a step: the garbage makes the step throw (a payload that does
  // not validate, a non-finite agreement flag, a bad shared scale) or, where it happens to be
  // valid bytes, run. A throwing step must leave every state array, the step counter and the
  // update as they were, also when it throws after writing memories (EF, DIANA: the peer's payload
  // is decoded after the own one).
  for (const test::SessionCase& sc : test::kSessionCases) {
    SCOPED_TRACE(sc.name);
    const SessionConfig cfg = test::session_case_config(sc, GetParam());
    int per_step = 0;
    run_local(kRanks, [&](Communicator& inner) {
      CorruptingComm comm(inner);
      Session s(comm, Layout(kSegments), cfg);
      std::vector<double> g(kDim), u(kDim);
      gradient(comm.rank(), 0, g);
      comm.arm(-1);
      (void)s.step(g, u);
      if (comm.rank() == 0) per_step = comm.count();
    });
    ASSERT_GT(per_step, 0);
    int payload_failures = 0;
    for (int at = 0; at < per_step; ++at) {
      std::vector<int> ok(kRanks, 0), threw(kRanks, 0);
      run_local(kRanks, [&](Communicator& inner) {
        CorruptingComm comm(inner);
        Session s(comm, Layout(kSegments), cfg);
        std::vector<double> g(kDim), u(kDim), x(kDim, 0.0);
        for (int k = 0; k < 4; ++k) {
          gradient(comm.rank(), k, g);
          s.apply(g, x);
        }
        const State before = copy_state(s);
        gradient(comm.rank(), 4, g);
        std::fill(u.begin(), u.end(), 3.0);
        comm.arm(at);
        bool t = false;
        try {
          (void)s.step(g, u);
        } catch (const Error& e) {
          t = true;
          (void)e;
        }
        threw[comm.rank()] = t;
        ok[comm.rank()] =
            !t || (copy_state(s) == before && s.step_count() == 4u && u == std::vector<double>(kDim, 3.0));
        // The failure is local to the corrupted rank's view; a healthy peer may have run on. Only
        // what this rank saw is checked here.
      });
      EXPECT_EQ(ok, std::vector<int>(kRanks, 1)) << "corrupted collective " << at << " of " << per_step;
      if (threw[0] != 0) ++payload_failures;
    }
    EXPECT_GT(payload_failures, 0) << "no corruption was detected";
  }
}

TEST_P(EngineBackendTest, NonFiniteZeroRunsNoAgreementRound) {
  // nonfinite = zero: every rank runs the step whatever the others hold, so a step of gd with the
  // identity codec is one allgather and nothing else (the cpu backend used to add an allreduce).
  // error/skip: the cpu backend agrees first (one allreduce of the flag); host-f32 agrees on the
  // status words of the allgather (late agreement: no collective of its own).
  for (NonFinitePolicy policy : {NonFinitePolicy::kZero, NonFinitePolicy::kError, NonFinitePolicy::kSkip}) {
    SessionConfig cfg = test::session_case_config(test::session_case("gd"), GetParam());
    cfg.nonfinite = policy;
    std::vector<int> reduces(kRanks, -1), total(kRanks, -1);
    std::vector<std::vector<double>> updates(kRanks);
    std::mutex m;
    run_local(kRanks, [&](Communicator& inner) {
      CorruptingComm comm(inner);
      Session s(comm, Layout(kSegments), cfg);
      std::vector<double> g(kDim), u(kDim);
      gradient(comm.rank(), 0, g);
      if (comm.rank() == 1 && policy == NonFinitePolicy::kZero) g[5] = std::nan("");
      comm.arm(-1);
      (void)s.step(g, u);
      std::lock_guard<std::mutex> lock(m);
      reduces[comm.rank()] = comm.allreduces();
      total[comm.rank()] = comm.count();
      updates[comm.rank()] = u;
    });
    const int want_reduces = policy == NonFinitePolicy::kZero || GetParam() == Backend::kHostF32 ? 0 : 1;
    EXPECT_EQ(reduces, std::vector<int>(kRanks, want_reduces)) << static_cast<int>(policy);
    EXPECT_EQ(total, std::vector<int>(kRanks, want_reduces + 1)) << static_cast<int>(policy);
    for (int r = 1; r < kRanks; ++r)
      EXPECT_EQ(std::memcmp(updates[r].data(), updates[0].data(), kDim * sizeof(double)), 0);
    for (double v : updates[0]) EXPECT_TRUE(std::isfinite(v));
  }
}

// A NaN or Inf in one rank's gradient is every rank's verdict under error and skip, for every
// case: the same status and message on every rank ("this rank" on the poisoned one, "another rank"
// on the others), or a skipped step with u = 0 everywhere; the state, the step counter and (error)
// the update untouched, so that the run that then gets the good gradient of that step ends bit for
// bit where a run that never saw the poisoned one ends. And the collectives per step: on host-f32
// (fp32 host state, no delay, not hessian-ec) the agreement rides on the status words of the
// step's first exchange, so a step makes no allreduce but TernGrad's shared scale, and a poisoned
// step stops after that first exchange; the cpu backend (and host-f32 with a delay or hessian-ec)
// scans the gradient first and agrees with one allreduce, after which a poisoned step stops.
TEST_P(EngineBackendTest, ANonFiniteGradientIsEveryRanksVerdict) {
  constexpr int kSteps = 4, kBad = 2;
  for (const test::SessionCase& sc : test::kSessionCases) {
    const SessionConfig base = test::session_case_config(sc, GetParam());
    const bool late = GetParam() == Backend::kHostF32 && sc.delay == 0 && sc.algo != Algorithm::kHessianEc;
    const bool shared_scale = sc.algo == Algorithm::kCompressedGd && std::string_view(sc.codec).starts_with("terngrad");
    // The clean run: the state after kSteps steps and the collectives of a step.
    std::vector<State> clean(kRanks);
    std::vector<int> good_count(kRanks, -1), good_reduces(kRanks, -1);
    run_local(kRanks, [&](Communicator& inner) {
      CorruptingComm comm(inner);
      Session s(comm, Layout(kSegments), base);
      std::vector<double> g(kDim), u(kDim), x(kDim, 0.0);
      for (int k = 0; k < kSteps; ++k) {
        gradient(comm.rank(), k, g);
        comm.arm(-1);
        s.apply(g, x);
        if (k == kBad) {
          good_count[comm.rank()] = comm.count();
          good_reduces[comm.rank()] = comm.allreduces();
        }
      }
      clean[comm.rank()] = copy_state(s);
    });
    for (NonFinitePolicy policy : {NonFinitePolicy::kError, NonFinitePolicy::kSkip}) {
      for (int bad_rank : {0, 2}) {
        SCOPED_TRACE(std::string(sc.name) + (policy == NonFinitePolicy::kError ? " error" : " skip") +
                     ", poisoned rank " + std::to_string(bad_rank));
        SessionConfig cfg = base;
        cfg.nonfinite = policy;
        std::vector<int> status(kRanks, -1), skipped(kRanks, -1), untouched(kRanks, 0), bad_count(kRanks, -1),
            bad_reduces(kRanks, -1);
        std::vector<std::string> what(kRanks);
        std::vector<State> end(kRanks);
        std::vector<uint64_t> steps(kRanks, 0);
        run_local(kRanks, [&](Communicator& inner) {
          const int r = inner.rank();
          CorruptingComm comm(inner);
          Session s(comm, Layout(kSegments), cfg);
          std::vector<double> g(kDim), u(kDim), x(kDim, 0.0);
          for (int k = 0; k < kSteps; ++k) {
            gradient(r, k, g);
            if (k == kBad) {
              std::vector<double> bad = g;
              if (r == bad_rank) {
                bad[7] = std::nan("");
                bad[40] = -std::numeric_limits<double>::infinity();
              }
              const State before = copy_state(s);
              std::fill(u.begin(), u.end(), 3.0);
              comm.arm(-1);
              try {
                const StepStats st = s.step(bad, u);
                status[r] = gcompSuccess;
                skipped[r] = st.skipped ? 1 : 0;
              } catch (const Error& e) {
                status[r] = e.status();
                what[r] = e.what();
              }
              bad_count[r] = comm.count();
              bad_reduces[r] = comm.allreduces();
              const std::vector<double> want_u(kDim, policy == NonFinitePolicy::kError ? 3.0 : 0.0);
              untouched[r] = copy_state(s) == before && s.step_count() == static_cast<uint64_t>(kBad) && u == want_u;
            }
            s.apply(g, x);  // the good gradient of step k
          }
          end[r] = copy_state(s);
          steps[r] = s.step_count();
        });
        for (int r = 0; r < kRanks; ++r) {
          SCOPED_TRACE("rank " + std::to_string(r));
          EXPECT_EQ(untouched[r], 1) << "state, step counter or update changed";
          EXPECT_EQ(steps[r], static_cast<uint64_t>(kSteps));
          EXPECT_TRUE(end[r] == clean[r]) << "the run does not end where the clean run ends";
          if (policy == NonFinitePolicy::kError) {
            EXPECT_EQ(status[r], gcompErrorNonFinite) << what[r];
            const std::string want = std::string("non-finite gradient on ") +
                                     (r == bad_rank ? "this rank" : "another rank") + " at step " +
                                     std::to_string(kBad) + "; state unchanged";
            EXPECT_NE(what[r].find(want), std::string::npos) << what[r];
          } else {
            EXPECT_EQ(status[r], gcompSuccess) << what[r];
            EXPECT_EQ(skipped[r], 1);
          }
          // Collectives: a good step of a late-agreement case makes no allreduce of its own.
          const int scale_reduces = shared_scale ? 1 : 0;
          EXPECT_EQ(good_reduces[r], late ? scale_reduces : 1 + scale_reduces);
          if (late) {
            // The poisoned step runs up to its first exchange (and the shared scale before it).
            EXPECT_EQ(bad_reduces[r], scale_reduces);
            EXPECT_EQ(bad_count[r], scale_reduces + 1);
          } else {
            EXPECT_EQ(bad_reduces[r], 1);  // the agreement; the step stops there
            EXPECT_EQ(bad_count[r], 1);
          }
        }
      }
    }
  }
}

// Issue 18 #3: a failure of one rank's own part of a step (its encode) used to leave that rank
// out of the collective its peers then waited in: the failed rank got NON_FINITE from the codec,
// its peers MISMATCH, and every later step MISMATCH or TIMEOUT. Now the failure travels in the
// status word of the rank's messages, so every rank reaches the same verdict at the same step and
// the later steps run. Two inputs on rank 0 only: a finite double of 1e39 (beyond fp32, the
// messages' precision: non-finite for every policy) and values of 3e38 (finite in fp32; l2 and l1
// block norms and sums overflow fp32), under every policy and every case.
TEST_P(EngineBackendTest, OneRanksFailureIsEveryRanksVerdict) {
  for (const test::SessionCase& sc : test::kSessionCases) {
    for (NonFinitePolicy policy : {NonFinitePolicy::kError, NonFinitePolicy::kSkip, NonFinitePolicy::kZero}) {
      for (int input = 0; input < 2; ++input) {
        SCOPED_TRACE(std::string(sc.name) + " policy " + std::to_string(static_cast<int>(policy)) + " input " +
                     std::to_string(input));
        SessionConfig cfg = test::session_case_config(sc, GetParam());
        cfg.nonfinite = policy;
        constexpr int kSteps = 6, kBad = 2;
        std::vector<std::vector<int>> status(kRanks, std::vector<int>(kSteps, -1));
        std::vector<std::vector<int>> skipped(kRanks, std::vector<int>(kSteps, 0));
        std::vector<int> finite(kRanks, 1);
        LocalOptions opt;
        opt.timeout_ms = 20000;
        run_local(
            kRanks,
            [&](Communicator& comm) {
              Session s(comm, Layout(kSegments), cfg);
              std::vector<double> g(kDim), u(kDim);
              for (int k = 0; k < kSteps; ++k) {
                gradient(comm.rank(), k, g);
                if (k == kBad && comm.rank() == 0 && input == 0) g[5] = 1e39;
                if (k == kBad && comm.rank() == 0 && input == 1) std::fill(g.begin(), g.end(), 3e38);
                try {
                  const StepStats st = s.step(g, u);
                  status[comm.rank()][k] = gcompSuccess;
                  skipped[comm.rank()][k] = st.skipped ? 1 : 0;
                  for (double v : u) finite[comm.rank()] &= (input == 1 || std::isfinite(v)) ? 1 : 0;
                } catch (const Error& e) {
                  status[comm.rank()][k] = e.status();
                }
              }
            },
            opt);
        for (int r = 1; r < kRanks; ++r) {
          EXPECT_EQ(status[r], status[0]) << "rank " << r << " reached another verdict than rank 0";
          EXPECT_EQ(skipped[r], skipped[0]) << "rank " << r;
        }
        for (int r = 0; r < kRanks; ++r)
          for (int k = 0; k < kSteps; ++k) {
            EXPECT_NE(status[r][k], gcompErrorMismatch) << "rank " << r << " step " << k;
            EXPECT_NE(status[r][k], gcompErrorTimeout) << "rank " << r << " step " << k;
          }
        if (input == 0) {  // 1e39: the policy's verdict, then every later step runs
          const int want = policy == NonFinitePolicy::kError ? gcompErrorNonFinite : gcompSuccess;
          EXPECT_EQ(status[0], (std::vector<int>{0, 0, want, 0, 0, 0}));
          EXPECT_EQ(skipped[0][kBad], policy == NonFinitePolicy::kSkip ? 1 : 0);
          EXPECT_EQ(finite, std::vector<int>(kRanks, 1)) << "an update was not finite";
        } else {
          for (int k = 0; k < kBad; ++k) EXPECT_EQ(status[0][k], gcompSuccess);
          for (int k = kBad + 1; k < kSteps && status[0][kBad] != gcompSuccess; ++k)  // a failed step changes
            EXPECT_EQ(status[0][k], gcompSuccess) << "step " << k;                    // nothing: the next run
        }
      }
    }
  }
}

TEST_P(EngineBackendTest, MomentumIsNeverSilentlyIgnored) {
  // Before, signsgd-mv, doublesqueeze and hessian-ec ran the same steps for every momentum (while
  // gcomp-train's --lr auto still scaled the step by 1 - mu). Now every algorithm's updates change
  // with the momentum (signsgd-mv: Signum), except hessian-ec, which refuses it at setup.
  struct MomentumCase {
    Algorithm algo;
    const char* codec;
  };
  const MomentumCase cases[] = {
      {Algorithm::kGd, "identity"},
      {Algorithm::kCompressedGd, "dither:levels=2"},
      {Algorithm::kSignSgdMv, "sign:scale=none"},
      {Algorithm::kEfSgd, "sign:block=8"},
      {Algorithm::kDiana, "dither:levels=1,norm=linf"},
      {Algorithm::kDistEfSgdm, "sign:block=8"},
      {Algorithm::kDoubleSqueeze, "sign:block=8"},
  };
  for (const MomentumCase& mc : cases) {
    SCOPED_TRACE(algorithm_name(mc.algo));
    std::vector<std::vector<double>> last(2);
    for (int m = 0; m < 2; ++m) {
      SessionConfig cfg;
      cfg.algorithm = mc.algo;
      cfg.codec = mc.codec;
      cfg.server_codec = "sign";
      cfg.momentum = m == 0 ? 0.0 : 0.9;
      cfg.lr = 0.05;
      cfg.seed = 5;
      cfg.backend = GetParam();
      std::mutex mu;
      run_local(kRanks, [&](Communicator& comm) {
        Session s(comm, Layout(kSegments), cfg);
        std::vector<double> g(kDim), x(kDim, 0.0);
        for (int k = 0; k < 4; ++k) {
          gradient(comm.rank(), k, g);
          s.apply(g, x);
        }
        std::lock_guard<std::mutex> lock(mu);
        if (comm.rank() == 0) last[m] = x;
      });
    }
    EXPECT_NE(last[0], last[1]) << "momentum 0.9 gave the iterates of momentum 0";
  }
  SessionConfig cfg = test::session_case_config(test::session_case("hessian_ec_classical"), GetParam());
  cfg.momentum = 0.5;
  run_local(1, [&](Communicator& comm) {
    try {
      Session s(comm, Layout(kSegments), cfg);
      ADD_FAILURE() << "hessian-ec accepted momentum";
    } catch (const Error& e) {
      EXPECT_EQ(e.status(), gcompErrorInvalidArgument);
      EXPECT_NE(std::string(e.what()).find("momentum"), std::string::npos) << e.what();
    }
  });
}

/// Each rank's gradient at step k is the marker 16 k + rank (exact in fp32), so gd with the
/// identity codec and lr 1 returns u_k = fp32(1/P) * sum_i (16 (k - tau_k^i) + i) exactly.
std::vector<std::vector<double>> marker_updates(const SessionConfig& cfg, int steps) {
  std::vector<std::vector<double>> u(static_cast<size_t>(steps));
  std::mutex m;
  run_local(kRanks, [&](Communicator& comm) {
    Session s(comm, Layout(kDim), cfg);
    std::vector<double> g(kDim), out(kDim);
    for (int k = 0; k < steps; ++k) {
      std::fill(g.begin(), g.end(), 16.0 * k + comm.rank());
      (void)s.step(g, out);
      std::lock_guard<std::mutex> lock(m);
      if (comm.rank() == 0) u[static_cast<size_t>(k)] = out;
    }
  });
  return u;
}

TEST_P(EngineBackendTest, DelaysPerStepAndWorker) {
  constexpr int kSteps = 40;
  SessionConfig cfg;
  cfg.algorithm = Algorithm::kGd;
  cfg.lr = 1.0;
  cfg.seed = 31;
  cfg.backend = GetParam();
  auto expect_consumed = [&](const SessionConfig& c, const std::function<int(int, int)>& tau, const char* what) {
    const auto u = marker_updates(c, kSteps);
    for (int k = 0; k < kSteps; ++k) {
      double sum = 0;
      for (int i = 0; i < kRanks; ++i) sum += 16.0 * std::max(0, k - tau(k, i)) + i;
      const double want = static_cast<double>(static_cast<float>(1.0 / kRanks)) * sum;
      for (double v : u[static_cast<size_t>(k)]) ASSERT_NEAR(v, want, 1e-5 * std::fabs(want)) << what << ": step " << k;
    }
  };
  // A table: row k mod R holds each worker's delay at step k.
  cfg.delay = 3;
  cfg.delay_mode = DelayMode::kTable;
  cfg.delay_table = {0, 3, 1, 2, 2, 0, 3, 1, 1, 1, 0, 3};  // 4 rows of 3 ranks
  expect_consumed(
      cfg, [&](int k, int i) { return cfg.delay_table[static_cast<size_t>((k % 4) * kRanks + i)]; }, "table");
  // A seeded random bounded delay: every worker and step draws its own from (seed, worker, step).
  cfg.delay_mode = DelayMode::kRandom;
  cfg.delay_table.clear();
  expect_consumed(
      cfg,
      [&](int k, int i) {
        return static_cast<int>(detail::random_delay(31, static_cast<uint32_t>(i), static_cast<uint32_t>(k), 3));
      },
      "random");
  // Fixed delay, and a table whose every entry is that delay: the same updates bit for bit.
  cfg.delay_mode = DelayMode::kFixed;
  const auto fixed = marker_updates(cfg, kSteps);
  cfg.delay_mode = DelayMode::kTable;
  cfg.delay_table.assign(2 * kRanks, 3);
  EXPECT_EQ(marker_updates(cfg, kSteps), fixed);
}

TEST(SessionDelayTest, RandomDelaysAreUniformPerWorkerAndSeeded) {
  // 2000 draws per worker with bound 4: each value's count within 5 standard deviations of 400
  // (deterministic: fixed seeds), different sequences for different workers and seeds.
  constexpr uint32_t kBound = 4, kDraws = 2000;
  std::vector<std::vector<uint32_t>> seq(3);
  for (uint32_t w = 0; w < 3; ++w) {
    std::map<uint32_t, int> count;
    for (uint32_t k = 0; k < kDraws; ++k) {
      const uint32_t d = detail::random_delay(99, w, k, kBound);
      ASSERT_LE(d, kBound);
      ++count[d];
      seq[w].push_back(d);
    }
    const double mean = kDraws / 5.0, sd = std::sqrt(kDraws * 0.2 * 0.8);
    for (uint32_t v = 0; v <= kBound; ++v) EXPECT_NEAR(count[v], mean, 5 * sd) << "worker " << w << " value " << v;
  }
  EXPECT_NE(seq[0], seq[1]);
  EXPECT_NE(seq[1], seq[2]);
  EXPECT_NE(detail::random_delay(99, 0, 7, 1000), detail::random_delay(100, 0, 7, 1000));
  EXPECT_EQ(detail::random_delay(99, 0, 7, 0), 0u);
}

TEST(SessionDelayTest, BadSchedulesAreRejectedAndTheDefaultDigestStays) {
  auto expect_invalid = [](const SessionConfig& c, const char* part) {
    run_local(2, [&](Communicator& comm) {
      try {
        Session s(comm, Layout(kDim), c);
        ADD_FAILURE() << "accepted, expected an error naming " << part;
      } catch (const Error& e) {
        EXPECT_EQ(e.status(), gcompErrorInvalidArgument);
        EXPECT_NE(std::string(e.what()).find(part), std::string::npos) << e.what();
      }
    });
  };
  SessionConfig c;
  c.delay = 2;
  c.delay_mode = DelayMode::kTable;
  c.delay_table = {0, 1, 2};  // not whole rows of 2 ranks
  expect_invalid(c, "whole rows");
  c.delay_table = {0, 3};  // above the bound
  expect_invalid(c, "delay_table[1]");
  c.delay_table = {0, -1};
  expect_invalid(c, "delay_table[1]");
  c.delay_table.clear();
  expect_invalid(c, "whole rows");
  c.delay_mode = DelayMode::kFixed;
  c.delay_table = {1, 1};
  expect_invalid(c, "not table");
  // The schedule is part of the agreement and the checkpoint digest; configurations without one
  // keep the digest they had before delay modes existed.
  SessionConfig d;
  EXPECT_EQ(d.canonical().find("delay_mode"), std::string::npos);
  d.delay = 2;
  d.delay_mode = DelayMode::kRandom;
  EXPECT_NE(d.canonical().find("delay_mode=random"), std::string::npos);
  SessionConfig t = d;
  t.delay_mode = DelayMode::kTable;
  t.delay_table = {0, 1};
  SessionConfig t2 = t;
  t2.delay_table = {1, 0};
  EXPECT_NE(t.canonical(), t2.canonical());
}

// The host writes large outputs (decode-reduce, the downlink decode, p~ of the sharded server, the
// EF memory) through an L1 scratch with streaming stores from stream_min_bytes() on. Forced for
// every output here: the updates and the state are bit for bit those of plain stores.
TEST_P(EngineBackendTest, StreamedOutputsChangeNoBit) {
  auto run = [&](const SessionConfig& cfg, std::vector<std::vector<double>>& out) {
    out.assign(kRanks, {});
    std::mutex m;
    run_local(kRanks, [&](Communicator& comm) {
      Session s(comm, Layout(kSegments), cfg);
      std::vector<double> g(kDim), u(kDim), all;
      for (int k = 0; k < 4; ++k) {
        gradient(comm.rank(), k, g);
        (void)s.step(g, u);
        all.insert(all.end(), u.begin(), u.end());
      }
      for (const auto& [name, v] : s.state()) all.insert(all.end(), v->begin(), v->end());
      std::lock_guard<std::mutex> lock(m);
      out[comm.rank()] = all;
    });
  };
  struct Restore {
    ~Restore() { detail::set_stream_min_bytes(-1); }
  } restore;
  for (const test::SessionCase& sc : test::kSessionCases) {
    SCOPED_TRACE(sc.name);
    const SessionConfig cfg = test::session_case_config(sc, GetParam());
    std::vector<std::vector<double>> plain, streamed;
    detail::set_stream_min_bytes(int64_t{1} << 40);
    run(cfg, plain);
    detail::set_stream_min_bytes(0);
    run(cfg, streamed);
    for (int r = 0; r < kRanks; ++r) {
      ASSERT_EQ(plain[r].size(), streamed[r].size());
      EXPECT_EQ(std::memcmp(plain[r].data(), streamed[r].data(), plain[r].size() * sizeof(double)), 0) << "rank " << r;
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Backends, EngineBackendTest, testing::Values(Backend::kCpu, Backend::kHostF32),
                         [](const auto& param_info) {
                           return std::string(param_info.param == Backend::kCpu ? "cpu" : "host_f32");
                         });

}  // namespace
