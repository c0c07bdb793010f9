// SPDX-License-Identifier: Apache-2.0
// The one Session engine behind every backend (docs/algorithms.md "Backends"): behaviours that
// were written twice before and drifted, now checked on the double (cpu) and fp32 (host-f32)
// backends alike: a step that fails after its last collective (a peer's payload that does not
// decode) leaves the state untouched; nonfinite = zero runs no agreement round.
#include "algorithms/session_cases.hpp"

#include <gcomp/comm.hpp>
#include <gcomp/session.hpp>

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <mutex>
#include <string>
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
class CorruptingComm final : public Communicator {
 public:
  explicit CorruptingComm(Communicator& inner) : in_(inner) {}
  void arm(int at) {
    at_ = at;
    count_ = allreduces_ = 0;
  }
  int count() const { return count_; }
  int allreduces() const { return allreduces_; }
  int rank() const override { return in_.rank(); }
  int size() const override { return in_.size(); }
  const char* backend() const override { return in_.backend(); }
  MemorySpace memory_space() const override { return in_.memory_space(); }
  void allgather(const void* s, void* r, size_t b, Stream st) override {
    in_.allgather(s, r, b, st);
    hit(static_cast<uint8_t*>(r) + b * static_cast<size_t>((rank() + 1) % size()), b);
  }
  void alltoall(const void* s, void* r, size_t b, Stream st) override {
    in_.alltoall(s, r, b, st);
    hit(static_cast<uint8_t*>(r) + b * static_cast<size_t>((rank() + 1) % size()), b);
  }
  void allreduce(const void* s, void* r, size_t c, DataType t, ReduceOp o, Stream st) override {
    ++allreduces_;
    in_.allreduce(s, r, c, t, o, st);
    hit(static_cast<uint8_t*>(r), c * (t == DataType::kF32 || t == DataType::kI32 ? 4u : 8u));
  }
  void broadcast(void* b, size_t n, int root, Stream st) override { in_.broadcast(b, n, root, st); }
  void barrier() override { in_.barrier(); }
  void host_allgather(const void* s, void* r, size_t b) override { in_.host_allgather(s, r, b); }
  void abort(std::string_view why) noexcept override { in_.abort(why); }
  bool is_aborted() const noexcept override { return in_.is_aborted(); }

 private:
  void hit(uint8_t* p, size_t bytes) {
    if (count_++ == at_) std::memset(p, 0xff, bytes);
  }
  Communicator& in_;
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
        ok[comm.rank()] = !t || (copy_state(s) == before && s.step_count() == 4u && u == std::vector<double>(kDim, 3.0));
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
  // error/skip agree first: one allreduce of the flag.
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
    const int want_reduces = policy == NonFinitePolicy::kZero ? 0 : 1;
    EXPECT_EQ(reduces, std::vector<int>(kRanks, want_reduces)) << static_cast<int>(policy);
    EXPECT_EQ(total, std::vector<int>(kRanks, want_reduces + 1)) << static_cast<int>(policy);
    for (int r = 1; r < kRanks; ++r) EXPECT_EQ(std::memcmp(updates[r].data(), updates[0].data(), kDim * sizeof(double)), 0);
    for (double v : updates[0]) EXPECT_TRUE(std::isfinite(v));
  }
}

INSTANTIATE_TEST_SUITE_P(Backends, EngineBackendTest, testing::Values(Backend::kCpu, Backend::kHostF32),
                         [](const auto& param_info) { return std::string(param_info.param == Backend::kCpu ? "cpu" : "host_f32"); });

}  // namespace
