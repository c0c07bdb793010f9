// SPDX-License-Identifier: Apache-2.0
// Session mechanics on a small synthetic problem: every algorithm runs and agrees across ranks,
// determinism, checkpoint/resume bit-identity, corrupted checkpoints, non-finite policies,
// sharded vs replicated server, configuration agreement, bad arguments.
#include "common/test_util.hpp"

#include <gcomp/comm.hpp>
#include <gcomp/session.hpp>
#include <gcomp/detail/half.hpp>

#include <gtest/gtest.h>

#include <atomic>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <mutex>

#include <unistd.h>

using namespace gcomp;

namespace {

constexpr int kRanks = 4;
constexpr int64_t kDim = 37;

/// Worker r's gradient of f_r(x) = 0.5 |x - c_r|^2 * (1 + r/4): heterogeneous, strongly convex.
void gradient(int r, const std::vector<double>& x, std::vector<double>& g) {
  for (int64_t j = 0; j < kDim; ++j) {
    const double c = std::sin(0.7 * static_cast<double>(j) + r) * static_cast<double>(1 + (j % 5));
    g[j] = (x[j] - c) * (1.0 + r / 4.0);
  }
}

struct Trajectory {
  std::vector<std::vector<double>> x;  // per rank, final iterate
  std::vector<StepStats> stats;        // rank 0, per step
};

Trajectory run(const SessionConfig& cfg, int steps, const std::vector<int64_t>& segments = {kDim},
               const std::function<void(int, int, std::vector<double>&)>& poison = nullptr) {
  Trajectory t;
  t.x.assign(kRanks, std::vector<double>(kDim, 0.0));
  std::mutex m;
  run_local(kRanks, [&](Communicator& comm) {
    Session s(comm, Layout(segments), cfg);
    std::vector<double> x(kDim, 0.0), g(kDim);
    for (int k = 0; k < steps; ++k) {
      gradient(comm.rank(), x, g);
      if (poison) poison(comm.rank(), k, g);
      const StepStats st = s.apply(g, x);
      if (comm.rank() == 0) t.stats.push_back(st);
    }
    std::lock_guard<std::mutex> lock(m);
    t.x[comm.rank()] = x;
  });
  return t;
}

SessionConfig config(Algorithm a, const char* codec, const char* server = "identity") {
  SessionConfig c;
  c.algorithm = a;
  c.codec = codec;
  c.server_codec = server;
  c.lr = 0.05;
  c.seed = 11;
  if (a == Algorithm::kDistEfSgdm) c.momentum = 0.5;
  return c;
}

struct AlgoCase {
  Algorithm algo;
  const char* codec;
  const char* server;
};

const AlgoCase kCases[] = {
    {Algorithm::kGd, "identity", "identity"},
    {Algorithm::kCompressedGd, "dither:levels=2,norm=l2,block=8", "identity"},
    {Algorithm::kCompressedGd, "terngrad", "identity"},
    {Algorithm::kSignSgdMv, "sign:scale=none", "identity"},
    {Algorithm::kEfSgd, "topk:k=5", "identity"},
    {Algorithm::kDiana, "dither:levels=1,norm=linf,block=8", "identity"},
    {Algorithm::kDistEfSgdm, "sign:block=8", "sign:block=8"},
    {Algorithm::kDoubleSqueeze, "randk:k=9", "natural"},
    {Algorithm::kHessianEc, "natural", "identity"},
};

class SessionAlgoTest : public testing::TestWithParam<AlgoCase> {
 protected:
  SessionConfig cfg() const {
    SessionConfig c = config(GetParam().algo, GetParam().codec, GetParam().server);
    if (c.algorithm == Algorithm::kHessianEc) {
      c.compensation = Compensation::kClassical;
    }
    return c;
  }
};

TEST_P(SessionAlgoTest, RanksAgreeAndRunsAreDeterministic) {
  const auto a = run(cfg(), 60);
  for (int r = 1; r < kRanks; ++r) EXPECT_TRUE(a.x[r] == a.x[0]) << "rank " << r << " diverged";
  const auto b = run(cfg(), 60);
  EXPECT_TRUE(a.x[0] == b.x[0]);
  for (double v : a.x[0]) EXPECT_TRUE(std::isfinite(v));
  SessionConfig other = cfg();
  other.seed = 12;
  if (make_codec(other.codec, Layout(kDim))->randomized()) {
    EXPECT_FALSE(run(other, 60).x[0] == a.x[0]);
  }
  EXPECT_GT(a.stats.back().bytes_up, 0u);
  EXPECT_EQ(a.stats.back().step, 60u);
}

TEST_P(SessionAlgoTest, CheckpointResumeIsBitIdentical) {
  const std::string dir = testing::TempDir();
  const SessionConfig c = cfg();
  const auto full = run(c, 40);
  std::vector<std::vector<double>> resumed(kRanks);
  std::mutex m;
  for (int phase = 0; phase < 2; ++phase) {
    run_local(kRanks, [&](Communicator& comm) {
      Session s(comm, Layout(kDim), c);
      std::vector<double> x(kDim, 0.0), g(kDim);
      // Per test: ctest runs the parameterised cases as parallel processes.
      const std::string path = dir + "/ckpt." + std::to_string(::getpid()) + ".rank" + std::to_string(comm.rank());
      const Session::Extras extras{{"x", &x}};
      if (phase == 1) {
        s.load(path, extras);
        EXPECT_EQ(s.step_count(), 20u);
      }
      for (int k = 0; k < 20; ++k) {
        gradient(comm.rank(), x, g);
        s.apply(g, x);
      }
      if (phase == 0) s.save(path, extras);
      std::lock_guard<std::mutex> lock(m);
      resumed[comm.rank()] = x;
    });
  }
  for (int r = 0; r < kRanks; ++r) EXPECT_TRUE(resumed[r] == full.x[r]) << "rank " << r;
}

INSTANTIATE_TEST_SUITE_P(AllAlgorithms, SessionAlgoTest, testing::ValuesIn(kCases), [](const auto& param_info) {
  std::string s = std::string(algorithm_name(param_info.param.algo)) + "_" + param_info.param.codec;
  for (char& ch : s)
    if (!isalnum(static_cast<unsigned char>(ch))) ch = '_';
  return s;
});

TEST(SessionTest, CorruptOrForeignCheckpointsAreRejectedAndStateUntouched) {
  const std::string dir = testing::TempDir();
  const SessionConfig c = config(Algorithm::kDiana, "dither:levels=1,norm=linf");
  run_local(2, [&](Communicator& comm) {
    Session s(comm, Layout(kDim), c);
    std::vector<double> x(kDim, 1.0), g(kDim);
    gradient(comm.rank(), x, g);
    s.apply(g, x);
    const std::string path = dir + "/bad." + std::to_string(::getpid()) + ".rank" + std::to_string(comm.rank());
    s.save(path);
    std::ifstream in(path, std::ios::binary);
    std::vector<char> bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    auto snapshot = [&] {
      std::vector<std::vector<double>> v;
      for (const auto& [name, arr] : s.state()) v.push_back(*arr);
      return v;
    };
    const auto before = snapshot();
    auto expect_fail = [&](const std::vector<char>& content, gcompStatus_t want, const char* what) {
      const std::string p = path + ".variant";
      std::ofstream(p, std::ios::binary).write(content.data(), static_cast<std::streamsize>(content.size()));
      try {
        s.load(p);
        ADD_FAILURE() << what << " accepted";
      } catch (const Error& e) {
        EXPECT_EQ(e.status(), want) << what << ": " << e.what();
      }
      EXPECT_EQ(snapshot(), before) << what;
      EXPECT_EQ(s.step_count(), 1u);
    };
    auto flipped = bytes;
    flipped[bytes.size() / 2] ^= 4;
    expect_fail(flipped, gcompErrorCorruptPayload, "flipped bit");
    expect_fail(std::vector<char>(bytes.begin(), bytes.end() - 9), gcompErrorCorruptPayload, "truncated");
    expect_fail({}, gcompErrorCorruptPayload, "empty");
    try {
      s.load(path + ".missing");
      ADD_FAILURE();
    } catch (const Error& e) {
      EXPECT_EQ(e.status(), gcompErrorIo);
    }
    // A checkpoint from another configuration (other lr) or another rank.
    SessionConfig other = c;
    other.lr = 0.5;
    Session s2(comm, Layout(kDim), other);
    try {
      s2.load(path);
      ADD_FAILURE();
    } catch (const Error& e) {
      EXPECT_EQ(e.status(), gcompErrorMismatch);
    }
    try {
      s.load(dir + "/bad." + std::to_string(::getpid()) + ".rank" + std::to_string(1 - comm.rank()));
      ADD_FAILURE();
    } catch (const Error& e) {
      EXPECT_EQ(e.status(), gcompErrorMismatch);
      EXPECT_NE(std::string(e.what()).find("belongs to rank"), std::string::npos);
    }
  });
}

TEST(SessionTest, NonFinitePolicies) {
  auto poison = [](int rank, int step, std::vector<double>& g) {
    if (rank == 2 && step == 5) g[3] = std::numeric_limits<double>::quiet_NaN();
  };
  for (const AlgoCase& ac : kCases) {
    SessionConfig c = config(ac.algo, ac.codec, ac.server);
    if (c.algorithm == Algorithm::kHessianEc) c.compensation = Compensation::kClassical;
    // error: every rank throws at step 5, state untouched (the step counter stays at 5).
    c.nonfinite = NonFinitePolicy::kError;
    std::atomic<int> throws{0};
    run_local(kRanks, [&](Communicator& comm) {
      Session s(comm, Layout(kDim), c);
      std::vector<double> x(kDim, 0.0), g(kDim);
      for (int k = 0; k < 10; ++k) {
        gradient(comm.rank(), x, g);
        poison(comm.rank(), k, g);
        try {
          s.apply(g, x);
        } catch (const Error& e) {
          EXPECT_EQ(e.status(), gcompErrorNonFinite);
          EXPECT_EQ(k, 5);
          EXPECT_EQ(s.step_count(), 5u);
          ++throws;
          break;
        }
      }
    });
    EXPECT_EQ(throws.load(), kRanks) << algorithm_name(ac.algo);
    // skip: the poisoned step is a no-op; the run equals one where that step never happened.
    c.nonfinite = NonFinitePolicy::kSkip;
    const auto skipped = run(c, 11, {kDim}, poison);
    EXPECT_TRUE(skipped.stats[5].skipped);
    EXPECT_EQ(skipped.stats.back().step, 10u);
    c.nonfinite = NonFinitePolicy::kError;
    const auto clean = run(c, 10);
    EXPECT_TRUE(skipped.x[0] == clean.x[0]) << algorithm_name(ac.algo);
    // zero: runs on, with the entry zeroed.
    c.nonfinite = NonFinitePolicy::kZero;
    const auto zeroed = run(c, 11, {kDim}, poison);
    for (double v : zeroed.x[0]) EXPECT_TRUE(std::isfinite(v));
    EXPECT_EQ(zeroed.stats.back().step, 11u);
  }
}

TEST(SessionTest, ShardedServerMatchesStructureAndConverges) {
  for (Algorithm a : {Algorithm::kDistEfSgdm, Algorithm::kDoubleSqueeze}) {
    SessionConfig c = config(a, "sign:block=4", "sign:block=4");
    c.server = ServerMode::kSharded;
    const auto t = run(c, 200, {20, 17});
    for (int r = 1; r < kRanks; ++r) EXPECT_TRUE(t.x[r] == t.x[0]);
    // Reaches the neighbourhood of the optimum that two-way EF with scaled sign reaches (the T12
    // plateau bound of spec §9.2 is 5e-2).
    std::vector<double> xs(kDim, 0.0);
    double wsum = 0;
    for (int r = 0; r < kRanks; ++r) wsum += 1.0 + r / 4.0;
    for (int64_t j = 0; j < kDim; ++j) {
      for (int r = 0; r < kRanks; ++r)
        xs[j] += (1.0 + r / 4.0) * std::sin(0.7 * static_cast<double>(j) + r) * static_cast<double>(1 + (j % 5));
      xs[j] /= wsum;
    }
    double err = 0, norm = 0;
    for (int64_t j = 0; j < kDim; ++j) {
      err += (t.x[0][j] - xs[j]) * (t.x[0][j] - xs[j]);
      norm += xs[j] * xs[j];
    }
    EXPECT_LT(err / norm, 5e-2) << algorithm_name(a);
    EXPECT_GT(t.stats.back().bytes_down, 0u);
    // With identity codecs the sharded server is exact: it equals uncompressed momentum SGD.
    SessionConfig ident = config(a, "identity", "identity");
    ident.server = ServerMode::kSharded;
    SessionConfig repl = ident;
    repl.server = ServerMode::kReplicated;
    const auto ts = run(ident, 50, {20, 17});
    const auto tr = run(repl, 50, {20, 17});
    for (int64_t j = 0; j < kDim; ++j) EXPECT_NEAR(ts.x[0][j], tr.x[0][j], 1e-12);
  }
}

TEST(SessionTest, RanksMustAgreeOnTheConfiguration) {
  std::atomic<int> mismatches{0};
  run_local(3, [&](Communicator& comm) {
    SessionConfig c = config(Algorithm::kDiana, comm.rank() == 1 ? "dither:levels=2" : "dither:levels=1");
    try {
      Session s(comm, Layout(kDim), c);
    } catch (const Error& e) {
      EXPECT_EQ(e.status(), gcompErrorMismatch);
      ++mismatches;
    }
  });
  EXPECT_EQ(mismatches.load(), 3);
}

TEST(SessionTest, BadArguments) {
  run_local(1, [&](Communicator& comm) {
    SessionConfig c = config(Algorithm::kSignSgdMv, "sign");
    EXPECT_THROW(Session(comm, Layout(kDim), c), Error);  // needs scale=none
    c = config(Algorithm::kHessianEc, "natural");
    EXPECT_THROW(Session(comm, Layout(kDim), c), Error);  // needs hessian_product
    c = config(Algorithm::kDiana, "topk:k=3");
    EXPECT_THROW(Session(comm, Layout(kDim), c), Error);  // alpha=auto needs an unbiased codec
    c.alpha = 0.5;
    Session ok(comm, Layout(kDim), c);
    std::vector<double> g(kDim - 1), u(kDim);
    EXPECT_THROW(ok.step(g, u), Error);
    EXPECT_THROW(parse_algorithm("adam"), Error);
  });
}

TEST(SessionTest, TernGradSharesTheMaxScale) {
  SessionConfig c = config(Algorithm::kCompressedGd, "terngrad");
  std::vector<std::vector<double>> updates(kRanks);
  std::mutex m;
  run_local(kRanks, [&](Communicator& comm) {
    Session s(comm, Layout(kDim), c);
    std::vector<double> g(kDim), u(kDim), x(kDim, 0.0);
    gradient(comm.rank(), x, g);
    s.step(g, u);
    std::lock_guard<std::mutex> lock(m);
    updates[comm.rank()] = u;
  });
  // Every nonzero of u is lr * (an integer) * s / P with the one shared scale s = max_r |g_r|_inf.
  double smax = 0;
  std::vector<double> x(kDim, 0.0), g(kDim);
  for (int r = 0; r < kRanks; ++r) {
    gradient(r, x, g);
    for (double v : g) smax = std::max(smax, std::fabs(v));
  }
  const double unit = c.lr * static_cast<double>(static_cast<float>(smax)) / kRanks;
  for (double v : updates[0]) EXPECT_NEAR(v / unit, std::round(v / unit), 1e-5);
}

}  // namespace

namespace {

TEST(SessionTest, SixteenBitGradientsEqualTheirWidenedValues) {
  // bf16 and fp16 gradients are widened exactly; the state stays in double, so a step on 16-bit
  // input equals a step on the widened values bit for bit.
  const SessionConfig c = config(Algorithm::kDiana, "dither:levels=1,norm=linf,block=8");
  run_local(2, [&](Communicator& comm) {
    Session a(comm, Layout(kDim), c), b(comm, Layout(kDim), c), f(comm, Layout(kDim), c), h(comm, Layout(kDim), c);
    std::vector<double> x(kDim, 0.0), g(kDim), wide(kDim), ua(kDim), ub(kDim), uf(kDim), uh(kDim), wide16(kDim);
    std::vector<uint16_t> bf(kDim), hf(kDim);
    for (int k = 0; k < 5; ++k) {
      gradient(comm.rank(), x, g);
      for (int64_t j = 0; j < kDim; ++j) {
        uint32_t bits;
        const float v = static_cast<float>(g[j]);
        std::memcpy(&bits, &v, 4);
        bf[j] = static_cast<uint16_t>(bits >> 16);
        wide[j] = static_cast<double>(detail::bf16_to_float(bf[j]));
        const _Float16 half = static_cast<_Float16>(v);
        std::memcpy(&hf[j], &half, 2);
        wide16[j] = static_cast<double>(static_cast<float>(half));
      }
      b.step_bf16(bf, ub);
      a.step(wide, ua);
      EXPECT_TRUE(ua == ub) << "step " << k;
      f.step_f16(hf, uf);
      h.step(wide16, uh);
      EXPECT_TRUE(uf == uh) << "step " << k;
      for (int64_t j = 0; j < kDim; ++j) x[j] -= ua[j];
    }
    EXPECT_EQ(f.step_count(), 5u);
  });
}

}  // namespace
