// SPDX-License-Identifier: Apache-2.0
// Fault injection (DESIGN.md §4 "a rank dies or stalls", "ranks disagree"): Sessions over the
// local backend with a short collective timeout. A wrapper communicator makes one rank die (throw,
// then its communicator is destroyed) or stall (sleep past the timeout) at a chosen collective of
// a step; other cases pass a gradient of the wrong size or a different configuration. Every rank
// must fail with an exception within the timeout (gcomp::Error on every rank that did not die
// itself), and every rank's Session state and step counter must be as they were before the failed
// step. A watchdog aborts the test binary if a case hangs.
#include <gcomp/comm.hpp>
#include <gcomp/session.hpp>

#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <string>
#include <thread>
#include <utility>
#include <vector>

namespace {

using gcomp::Communicator;
using Clock = std::chrono::steady_clock;

constexpr int kRanks = 3;
// 1 s: long enough that a healthy rank never misses a collective on a loaded 2-core machine (or
// under ASan), short enough to keep the stall tests quick.
constexpr int64_t kTimeoutMs = 1000;
constexpr int kWarmupSteps = 3;
// Allowed time from the start of the failed step until a rank's exception: the collective
// timeout, a stalled rank's sleep, and slack for sanitizer builds on a loaded machine.
constexpr auto kFailWithin = std::chrono::milliseconds(4 * kTimeoutMs + 4000);

/// Aborts the process when a test case runs longer than its deadline (a hang is a failure, and a
/// hung thread cannot be cancelled).
class Watchdog {
 public:
  Watchdog(std::chrono::seconds deadline, std::string what) : what_(std::move(what)) {
    thread_ = std::thread([this, deadline] {
      std::unique_lock<std::mutex> lock(mu_);
      if (!cv_.wait_for(lock, deadline, [this] { return done_; })) {
        std::fprintf(stderr, "watchdog: '%s' still running after %lld s: hang\n", what_.c_str(),
                     static_cast<long long>(deadline.count()));
        std::abort();
      }
    });
  }
  ~Watchdog() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      done_ = true;
    }
    cv_.notify_all();
    thread_.join();
  }
  Watchdog(const Watchdog&) = delete;
  Watchdog& operator=(const Watchdog&) = delete;

 private:
  std::string what_;
  std::mutex mu_;
  std::condition_variable cv_;
  bool done_ = false;
  std::thread thread_;
};

enum class Fault { kNone, kDie, kStall };

/// Forwards to a local communicator; counts the collectives of the current step and, when armed,
/// dies or stalls at the `at`-th one (1-based). Dying throws std::runtime_error and destroys the
/// inner communicator, as a process that exits does.
class FaultyComm final : public Communicator {
 public:
  explicit FaultyComm(std::unique_ptr<Communicator> inner) : inner_(std::move(inner)) {}
  int rank() const override { return rank_; }
  int size() const override { return size_; }
  const char* backend() const override { return "faulty-local"; }
  gcomp::MemorySpace memory_space() const override { return gcomp::MemorySpace::kHost; }

  void allgather(const void* send, void* recv, size_t bytes, gcomp::Stream s) override {
    hook();
    inner_->allgather(send, recv, bytes, s);
  }
  void alltoall(const void* send, void* recv, size_t bytes, gcomp::Stream s) override {
    hook();
    inner_->alltoall(send, recv, bytes, s);
  }
  void allreduce(const void* send, void* recv, size_t count, gcomp::DataType type, gcomp::ReduceOp op,
                 gcomp::Stream s) override {
    hook();
    inner_->allreduce(send, recv, count, type, op, s);
  }
  void broadcast(void* buf, size_t bytes, int root, gcomp::Stream s) override {
    hook();
    inner_->broadcast(buf, bytes, root, s);
  }
  void barrier() override {
    hook();
    inner_->barrier();
  }
  void host_allgather(const void* send, void* recv, size_t bytes) override {
    alive().host_allgather(send, recv, bytes);
  }
  void abort(std::string_view reason) noexcept override {
    if (inner_) inner_->abort(reason);
  }
  bool is_aborted() const noexcept override { return !inner_ || inner_->is_aborted(); }

  /// Starts counting the collectives of a new step.
  void begin_step() { count_ = 0; }
  [[nodiscard]] int collectives_this_step() const { return count_; }
  void arm(Fault fault, int at) {
    fault_ = fault;
    at_ = at;
  }

 private:
  Communicator& alive() {
    if (!inner_) throw std::runtime_error("rank is dead");
    return *inner_;
  }
  void hook() {
    (void)alive();
    ++count_;
    if (fault_ == Fault::kNone || count_ != at_) return;
    const Fault f = std::exchange(fault_, Fault::kNone);
    if (f == Fault::kDie) {
      inner_.reset();
      throw std::runtime_error("injected fault: rank died in collective " + std::to_string(at_));
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(3 * kTimeoutMs));
  }

  std::unique_ptr<Communicator> inner_;
  int rank_ = inner_->rank();
  int size_ = inner_->size();
  int count_ = 0;
  Fault fault_ = Fault::kNone;
  int at_ = 0;
};

struct Case {
  const char* name;
  gcomp::SessionConfig cfg;
};

std::vector<Case> cases() {
  std::vector<Case> out;
  auto add = [&](const char* name, gcomp::Algorithm algo, const char* codec, auto&& tweak) {
    gcomp::SessionConfig c;
    c.algorithm = algo;
    c.codec = codec;
    c.lr = 0.05;
    c.seed = 77;
    tweak(c);
    out.push_back({name, std::move(c)});
  };
  using gcomp::Algorithm;
  auto none = [](gcomp::SessionConfig&) {};
  add("gd_momentum_delay", Algorithm::kGd, "identity", [](gcomp::SessionConfig& c) {
    c.momentum = 0.5;
    c.delay = 2;
  });
  add("compressed_gd_terngrad_shared", Algorithm::kCompressedGd, "terngrad",
      [](gcomp::SessionConfig& c) { c.momentum = 0.5; });
  add("ef_sgd_topk_momentum", Algorithm::kEfSgd, "topk:k=7", [](gcomp::SessionConfig& c) { c.momentum = 0.9; });
  add("diana_dither", Algorithm::kDiana, "dither:levels=2,norm=linf,block=16",
      [](gcomp::SessionConfig& c) { c.momentum = 0.3; });
  add("dist_ef_sgdm_sharded", Algorithm::kDistEfSgdm, "sign:block=8", [](gcomp::SessionConfig& c) {
    c.server_codec = "sign:block=8";
    c.server = gcomp::ServerMode::kSharded;
    c.momentum = 0.9;
  });
  add("doublesqueeze_sharded", Algorithm::kDoubleSqueeze, "dither:levels=3,norm=l2", [](gcomp::SessionConfig& c) {
    c.server_codec = "topk:k=5";
    c.server = gcomp::ServerMode::kSharded;
  });
  add("doublesqueeze_replicated", Algorithm::kDoubleSqueeze, "sign",
      [](gcomp::SessionConfig& c) { c.server_codec = "sign:block=4"; });
  add("hessian_ec_classical", Algorithm::kHessianEc, "sign:block=16",
      [](gcomp::SessionConfig& c) { c.compensation = gcomp::Compensation::kClassical; });
  add("signsgd_mv", Algorithm::kSignSgdMv, "sign:scale=none", none);
  return out;
}

const gcomp::Layout& layout() {
  static const gcomp::Layout l(std::vector<int64_t>{40, 23});
  return l;
}

std::vector<double> gradient(int rank, uint64_t step) {
  std::vector<double> g(static_cast<size_t>(layout().num_elems()));
  for (size_t i = 0; i < g.size(); ++i)
    g[i] = std::sin(0.37 * static_cast<double>(i + 1) + 1.3 * rank + 0.71 * static_cast<double>(step)) *
           (1.0 + 0.1 * static_cast<double>(i % 7));
  return g;
}

using State = std::vector<std::pair<std::string, std::vector<double>>>;

State copy_state(const gcomp::Session& s) {
  State out;
  for (const auto& [name, v] : s.state()) out.emplace_back(name, *v);
  return out;
}

testing::AssertionResult same_state(const State& before, const State& after) {
  if (before.size() != after.size()) return testing::AssertionFailure() << "number of state arrays changed";
  for (size_t a = 0; a < before.size(); ++a) {
    if (before[a].first != after[a].first || before[a].second.size() != after[a].second.size())
      return testing::AssertionFailure() << "state array " << before[a].first << " changed shape";
    for (size_t i = 0; i < before[a].second.size(); ++i)
      if (std::memcmp(&before[a].second[i], &after[a].second[i], sizeof(double)) != 0)
        return testing::AssertionFailure() << "state array '" << before[a].first << "' element " << i << ": before "
                                           << before[a].second[i] << ", after " << after[a].second[i];
  }
  return testing::AssertionSuccess();
}

/// What one rank saw in the failed step.
struct Outcome {
  bool threw = false;
  bool gcomp_error = false;
  std::string what;
  Clock::duration elapsed{};
  bool state_unchanged = true;
  std::string state_diff;
  bool counter_unchanged = true;
};

enum class Kind { kDie, kStall, kWrongSize };

/// Runs kWarmupSteps good steps on every rank, then one step in which rank 1 misbehaves (`kind`,
/// at collective `at` of the step for kDie/kStall). Returns each rank's outcome of that step.
/// `collectives` receives the number of collectives of one good step.
std::vector<Outcome> run_faulty_step(const gcomp::SessionConfig& cfg, Kind kind, int at, int* collectives) {
  auto group = gcomp::make_local_group(kRanks, gcomp::LocalOptions{kTimeoutMs});
  std::vector<std::unique_ptr<FaultyComm>> comms;
  for (auto& c : group) comms.push_back(std::make_unique<FaultyComm>(std::move(c)));
  std::vector<Outcome> outcomes(kRanks);
  std::vector<std::string> setup_errors(kRanks);
  std::vector<int> counts(kRanks, 0);
  std::vector<std::thread> threads;
  for (int r = 0; r < kRanks; ++r) {
    threads.emplace_back([&, r] {
      FaultyComm& comm = *comms[static_cast<size_t>(r)];
      Outcome& out = outcomes[static_cast<size_t>(r)];
      std::optional<gcomp::Session> session;
      try {
        session.emplace(comm, layout(), cfg);
        std::vector<double> u(static_cast<size_t>(layout().num_elems()));
        for (int t = 0; t < kWarmupSteps; ++t) {
          comm.begin_step();
          (void)session->step(gradient(r, static_cast<uint64_t>(t)), u);
        }
        counts[static_cast<size_t>(r)] = comm.collectives_this_step();
      } catch (const std::exception& e) {
        setup_errors[static_cast<size_t>(r)] = e.what();
        comm.abort("setup failed in the test");
        return;
      }
      const State before = copy_state(*session);
      const uint64_t before_k = session->step_count();
      std::vector<double> g = gradient(r, kWarmupSteps);
      std::vector<double> u(g.size(), 0.0);
      comm.begin_step();
      if (r == 1) {
        if (kind == Kind::kDie) comm.arm(Fault::kDie, at);
        if (kind == Kind::kStall) comm.arm(Fault::kStall, at);
        if (kind == Kind::kWrongSize) g.push_back(1.0);
      }
      const auto start = Clock::now();
      try {
        (void)session->step(g, u);
      } catch (const gcomp::Error& e) {
        out.threw = out.gcomp_error = true;
        out.what = e.what();
      } catch (const std::exception& e) {
        out.threw = true;
        out.what = e.what();
      }
      out.elapsed = Clock::now() - start;
      const testing::AssertionResult same = same_state(before, copy_state(*session));
      out.state_unchanged = static_cast<bool>(same);
      if (!same) out.state_diff = same.message();
      out.counter_unchanged = session->step_count() == before_k;
    });
  }
  for (auto& t : threads) t.join();
  for (int r = 0; r < kRanks; ++r)
    EXPECT_EQ(setup_errors[static_cast<size_t>(r)], "") << "rank " << r << " failed before the faulty step";
  if (collectives) *collectives = counts[0];
  return outcomes;
}

void check_outcomes(const std::vector<Outcome>& outcomes, Kind kind, const std::string& label) {
  for (int r = 0; r < kRanks; ++r) {
    const Outcome& o = outcomes[static_cast<size_t>(r)];
    SCOPED_TRACE(label + ", rank " + std::to_string(r));
    EXPECT_TRUE(o.threw) << "the step returned normally";
    if (!(r == 1 && kind == Kind::kDie)) {
      EXPECT_TRUE(o.gcomp_error) << "not a gcomp::Error: " << o.what;
    }
    EXPECT_LT(o.elapsed, kFailWithin) << "failed only after "
                                      << std::chrono::duration_cast<std::chrono::milliseconds>(o.elapsed).count()
                                      << " ms";
    EXPECT_TRUE(o.state_unchanged) << o.state_diff << " (error: " << o.what << ")";
    EXPECT_TRUE(o.counter_unchanged);
  }
}

class SessionFaults : public testing::TestWithParam<size_t> {};

// Rank 1 dies at each collective of the step in turn; every rank fails, no rank's state moves.
TEST_P(SessionFaults, RankDiesAtEveryCollective) {
  const Case c = cases()[GetParam()];
  int collectives = 0;
  {
    const Watchdog wd(std::chrono::seconds(60), c.name);
    (void)run_faulty_step(c.cfg, Kind::kDie, 1, &collectives);
  }
  ASSERT_GE(collectives, 2) << "a step has at least the finiteness check and one exchange";
  for (int at = 1; at <= collectives; ++at) {
    const Watchdog wd(std::chrono::seconds(60), c.name);
    check_outcomes(run_faulty_step(c.cfg, Kind::kDie, at, nullptr), Kind::kDie,
                   std::string(c.name) + " die at collective " + std::to_string(at));
  }
}

// Rank 1 sleeps past the timeout before the last collective of the step.
TEST_P(SessionFaults, RankStallsPastTimeout) {
  const Case c = cases()[GetParam()];
  const Watchdog wd(std::chrono::seconds(60), c.name);
  int collectives = 0;
  (void)run_faulty_step(c.cfg, Kind::kDie, 1, &collectives);
  check_outcomes(run_faulty_step(c.cfg, Kind::kStall, collectives, nullptr), Kind::kStall,
                 std::string(c.name) + " stall at the last collective");
}

// Rank 1 passes a gradient with one element too many.
TEST_P(SessionFaults, WrongGradientSize) {
  const Case c = cases()[GetParam()];
  const Watchdog wd(std::chrono::seconds(60), c.name);
  check_outcomes(run_faulty_step(c.cfg, Kind::kWrongSize, 0, nullptr), Kind::kWrongSize,
                 std::string(c.name) + " wrong gradient size");
}

// DESIGN.md §4 "NaN/Inf in a gradient": with nonfinite=skip the poisoned step is a no-op on every
// rank (u = 0, EF memories, shifts, momentum, delay queue and step counter untouched); with
// nonfinite=error every rank throws gcompErrorNonFinite and the state is untouched as well.
TEST_P(SessionFaults, NonFiniteSkipAndErrorLeaveStateUntouched) {
  const Case c = cases()[GetParam()];
  for (const gcomp::NonFinitePolicy policy : {gcomp::NonFinitePolicy::kSkip, gcomp::NonFinitePolicy::kError}) {
    for (const double poison : {std::nan(""), -HUGE_VAL}) {
      const Watchdog wd(std::chrono::seconds(60), c.name);
      gcomp::SessionConfig cfg = c.cfg;
      cfg.nonfinite = policy;
      std::vector<int> failures(kRanks, 0);
      std::vector<std::string> diffs(kRanks);
      gcomp::run_local(
          kRanks,
          [&](Communicator& comm) {
            const int r = comm.rank();
            gcomp::Session session(comm, layout(), cfg);
            std::vector<double> u(static_cast<size_t>(layout().num_elems()));
            for (int t = 0; t < kWarmupSteps; ++t) (void)session.step(gradient(r, static_cast<uint64_t>(t)), u);
            const State before = copy_state(session);
            std::vector<double> g = gradient(r, kWarmupSteps);
            if (r == 2) g[5] = poison;
            std::fill(u.begin(), u.end(), 9.0);
            try {
              const gcomp::StepStats st = session.step(g, u);
              if (policy != gcomp::NonFinitePolicy::kSkip || !st.skipped || st.step != kWarmupSteps)
                failures[static_cast<size_t>(r)] |= 1;
              for (double v : u)
                if (v != 0.0) failures[static_cast<size_t>(r)] |= 2;
            } catch (const gcomp::Error& e) {
              if (policy != gcomp::NonFinitePolicy::kError || e.status() != gcompErrorNonFinite)
                failures[static_cast<size_t>(r)] |= 4;
            }
            const testing::AssertionResult same = same_state(before, copy_state(session));
            if (!same) {
              failures[static_cast<size_t>(r)] |= 8;
              diffs[static_cast<size_t>(r)] = same.message();
            }
            if (session.step_count() != static_cast<uint64_t>(kWarmupSteps)) failures[static_cast<size_t>(r)] |= 16;
          },
          gcomp::LocalOptions{10000});
      for (int r = 0; r < kRanks; ++r)
        EXPECT_EQ(failures[static_cast<size_t>(r)], 0)
            << c.name << " policy " << (policy == gcomp::NonFinitePolicy::kSkip ? "skip" : "error") << " poison "
            << poison << " rank " << r
            << " (1: not reported as skipped, 2: u not zero, 4: wrong error, 8: state changed, 16: counter moved) "
            << diffs[static_cast<size_t>(r)];
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Algorithms, SessionFaults, testing::Range<size_t>(0, cases().size()),
                         [](const testing::TestParamInfo<size_t>& param_info) {
                           return cases()[param_info.param].name;
                         });

// Rank 1 builds its Session with another codec, or another configuration value: the constructor
// fails with gcompErrorMismatch on every rank, promptly.
TEST(SessionFaultsSetup, ConfigMismatchFailsOnEveryRank) {
  for (int variant = 0; variant < 3; ++variant) {
    const Watchdog wd(std::chrono::seconds(60), "setup mismatch");
    auto group = gcomp::make_local_group(kRanks, gcomp::LocalOptions{kTimeoutMs});
    std::vector<Outcome> outcomes(kRanks);
    std::vector<gcompStatus_t> status(kRanks, gcompSuccess);
    std::vector<std::thread> threads;
    for (int r = 0; r < kRanks; ++r) {
      threads.emplace_back([&, r] {
        gcomp::SessionConfig cfg;
        cfg.algorithm = gcomp::Algorithm::kDiana;
        cfg.codec = "dither:levels=2,norm=linf,block=16";
        if (r == 1 && variant == 0) cfg.codec = "dither:levels=3,norm=linf,block=16";
        if (r == 1 && variant == 1) cfg.lr = 0.2;
        const gcomp::Layout l = (r == 1 && variant == 2) ? gcomp::Layout(std::vector<int64_t>{23, 40}) : layout();
        Outcome& out = outcomes[static_cast<size_t>(r)];
        const auto start = Clock::now();
        try {
          const gcomp::Session session(*group[static_cast<size_t>(r)], l, cfg);
        } catch (const gcomp::Error& e) {
          out.threw = out.gcomp_error = true;
          out.what = e.what();
          status[static_cast<size_t>(r)] = e.status();
        } catch (const std::exception& e) {
          out.threw = true;
          out.what = e.what();
        }
        out.elapsed = Clock::now() - start;
      });
    }
    for (auto& t : threads) t.join();
    for (int r = 0; r < kRanks; ++r) {
      SCOPED_TRACE("variant " + std::to_string(variant) + ", rank " + std::to_string(r));
      const Outcome& o = outcomes[static_cast<size_t>(r)];
      EXPECT_TRUE(o.gcomp_error) << o.what;
      EXPECT_EQ(status[static_cast<size_t>(r)], gcompErrorMismatch) << o.what;
      EXPECT_LT(o.elapsed, kFailWithin);
      EXPECT_EQ(o.what, outcomes[0].what) << "every rank reports the same message";
    }
  }
}

}  // namespace
