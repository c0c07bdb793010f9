// SPDX-License-Identifier: Apache-2.0
// Checkpoint sets (include/gcomp/checkpoint.hpp; DESIGN.md §4 "crash during a checkpoint"; issue 18
// #5, #13): a set round-trips; a mixed, partial, other-data or other-world set is refused on every
// rank before any state changes; and fault tests: a process killed in the middle of a save (before
// and after the manifest's commit) or a save that hits a full disk leaves a set that loads whole.
#include "common/forwarding_comm.hpp"

#include <gcomp/checkpoint.hpp>
#include <gcomp/comm.hpp>
#include <gcomp/session.hpp>

#include <gtest/gtest.h>

#include <atomic>
#include <cmath>
#include <csignal>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iterator>
#include <mutex>
#include <string>
#include <vector>

#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

namespace {

using namespace gcomp;
namespace fs = std::filesystem;

constexpr int kRanks = 3;
constexpr int64_t kDim = 29;

void gradient(int r, const std::vector<double>& x, std::vector<double>& g) {
  for (int64_t j = 0; j < kDim; ++j)
    g[static_cast<size_t>(j)] = (x[static_cast<size_t>(j)] - std::sin(0.3 * static_cast<double>(j) + r)) * (1.0 + r);
}

SessionConfig config() {
  SessionConfig cfg;
  cfg.algorithm = Algorithm::kEfSgd;
  cfg.codec = "topk:k=3";
  cfg.lr = 0.1;
  cfg.momentum = 0.5;
  cfg.seed = 11;
  return cfg;
}

/// A communicator that forwards to another and calls `hook(2n)` before its n-th host_allgather
/// (0-based) and `hook(2n + 1)` after it: the fault tests end the process there.
class HookedComm final : public gcomp::test::ForwardingComm {
 public:
  HookedComm(Communicator& inner, std::function<void(int)> hook) : ForwardingComm(inner), hook_(std::move(hook)) {}
  void host_allgather(const void* s, void* r, size_t b) override {
    const int n = calls_++;
    if (hook_) hook_(2 * n);
    inner().host_allgather(s, r, b);
    if (hook_) hook_(2 * n + 1);
  }
  void arm(std::function<void(int)> hook) {
    hook_ = std::move(hook);
    calls_ = 0;
  }

 private:
  std::function<void(int)> hook_;
  int calls_ = 0;
};

class CheckpointSetTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/gcomp-ckset-test.XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
    path_ = dir_ + "/ck";
  }
  void TearDown() override {
    std::error_code ec;
    fs::remove_all(dir_, ec);
  }
  std::vector<std::string> rank_files() const {
    std::vector<std::string> out;
    for (const auto& e : fs::directory_iterator(dir_))
      if (e.path().filename().string().find(".rank") != std::string::npos) out.push_back(e.path().filename().string());
    std::sort(out.begin(), out.end());
    return out;
  }
  /// The file of `rank` in the set `name` (default: the set at path_).
  std::string file_of(int rank, const std::string& name = "ck") const {
    for (const std::string& f : rank_files())
      if (f.rfind(name + ".s", 0) == 0 && f.size() > 6 && f.substr(f.size() - 6) == ".rank" + std::to_string(rank))
        return dir_ + "/" + f;
    return {};
  }

  /// Every rank: a session, `first` steps, save (when save_at_first), `more` steps, save; `hook` is
  /// armed on rank 0 before the second save. Returns the iterates after `first` steps.
  std::vector<std::vector<double>> run(int first, int more, uint64_t digest = 7,
                                       const std::function<void(int)>& hook = nullptr) {
    std::vector<std::vector<double>> at_first(kRanks);
    std::mutex m;
    run_local(kRanks, [&](Communicator& base) {
      HookedComm comm(base, nullptr);
      Session s(comm, Layout(kDim), config());
      std::vector<double> x(kDim, 0.0), g(kDim), it(1, 0.0);
      const Session::Extras extras{{"x", &x}, {"iter", &it}};
      for (int k = 0; k < first; ++k) {
        gradient(comm.rank(), x, g);
        s.apply(g, x);
      }
      it[0] = first;
      save_checkpoint_set(comm, s, path_, extras, digest, comm.rank() == 0 ? "first" : "");
      {
        std::lock_guard lock(m);
        at_first[static_cast<size_t>(comm.rank())] = x;
      }
      for (int k = 0; k < more; ++k) {
        gradient(comm.rank(), x, g);
        s.apply(g, x);
      }
      it[0] = first + more;
      if (comm.rank() == 0 && hook) comm.arm(hook);
      save_checkpoint_set(comm, s, path_, extras, digest, comm.rank() == 0 ? "second" : "");
    });
    return at_first;
  }

  /// Loads the set on every rank; returns each rank's (step, iterate) or the error per rank.
  struct Loaded {
    std::vector<uint64_t> step = std::vector<uint64_t>(kRanks, 0);
    std::vector<std::vector<double>> x = std::vector<std::vector<double>>(kRanks);
    std::vector<std::string> error = std::vector<std::string>(kRanks);
    std::vector<gcompStatus_t> status = std::vector<gcompStatus_t>(kRanks, gcompSuccess);
    std::string app;
  };
  Loaded load(uint64_t digest = 7, int ranks = kRanks) {
    Loaded out;
    std::mutex m;
    run_local(ranks, [&](Communicator& comm) {
      Session s(comm, Layout(kDim), config());
      std::vector<double> x(kDim, -1.0), it(1, -1.0);
      const Session::Extras extras{{"x", &x}, {"iter", &it}};
      const size_t r = static_cast<size_t>(comm.rank());
      try {
        const CheckpointSetInfo info = load_checkpoint_set(comm, s, path_, extras, digest);
        std::lock_guard lock(m);
        if (r == 0) out.app = info.app;
      } catch (const Error& e) {
        std::lock_guard lock(m);
        out.error[r] = e.what();
        out.status[r] = e.status();
      }
      std::lock_guard lock(m);
      out.step[r] = s.step_count();
      out.x[r] = x;
    });
    return out;
  }

  std::string dir_, path_;
};

TEST_F(CheckpointSetTest, RoundTripAndOldFilesRemoved) {
  const auto at_first = run(4, 3);
  EXPECT_EQ(rank_files().size(), static_cast<size_t>(kRanks)) << "the first set's files were not removed";
  const CheckpointSetInfo info = read_checkpoint_set_info(path_);
  EXPECT_EQ(info.step, 7u);
  EXPECT_EQ(info.world, kRanks);
  EXPECT_EQ(info.app, "second");
  const Loaded l = load();
  for (int r = 0; r < kRanks; ++r) {
    EXPECT_EQ(l.error[r], "") << r;
    EXPECT_EQ(l.step[r], 7u);
  }
  EXPECT_EQ(l.app, "second");
  static_cast<void>(at_first);
}

TEST_F(CheckpointSetTest, MixedSetIsRefusedOnEveryRankBeforeAnyStateChanges) {
  // Rank 1's file of an older save (step 2, saved twice: the second save replaced the first) put
  // into a set of step 4, as a crash between the rank files of two saves would leave it.
  path_ = dir_ + "/older";
  run(2, 0);
  const std::string older_one = file_of(1, "older");
  ASSERT_FALSE(older_one.empty());
  path_ = dir_ + "/ck";
  run(2, 2);
  ASSERT_FALSE(file_of(1).empty());
  fs::copy_file(older_one, file_of(1), fs::copy_options::overwrite_existing);
  const Loaded l = load();
  EXPECT_EQ(l.status[1], gcompErrorCorruptPayload) << l.error[1];
  EXPECT_NE(l.error[1].find("mixed"), std::string::npos) << l.error[1];
  for (int r : {0, 2}) {
    EXPECT_NE(l.status[r], gcompSuccess);
    EXPECT_EQ(l.error[r], l.error[1]) << "every rank reports the same message";
  }
  for (int r = 0; r < kRanks; ++r) {
    EXPECT_EQ(l.step[r], 0u) << "rank " << r << " loaded state from a mixed set";
    EXPECT_EQ(l.x[r], std::vector<double>(kDim, -1.0)) << "rank " << r << ": extras changed";
  }
}

TEST_F(CheckpointSetTest, PartialSetIsRefused) {
  run(3, 1);
  fs::remove(file_of(2));
  const Loaded l = load();
  EXPECT_NE(l.error[2].find("partial"), std::string::npos) << l.error[2];
  EXPECT_NE(l.error[0].find("rank 2: "), std::string::npos) << l.error[0];
  EXPECT_NE(l.error[0].find("partial"), std::string::npos) << l.error[0];
  for (int r = 0; r < kRanks; ++r) EXPECT_EQ(l.step[r], 0u);
  // Cut short instead of missing.
  run(3, 1);
  fs::resize_file(file_of(0), fs::file_size(file_of(0)) - 9);
  const Loaded cut = load();
  EXPECT_EQ(cut.status[0], gcompErrorCorruptPayload) << cut.error[0];
}

TEST_F(CheckpointSetTest, OtherDataOrWorldIsRefused) {
  run(2, 1, /*digest=*/1234);
  const Loaded other = load(/*digest=*/999);
  for (int r = 0; r < kRanks; ++r) {
    EXPECT_EQ(other.status[r], gcompErrorMismatch);
    EXPECT_NE(other.error[r].find("other data"), std::string::npos) << other.error[r];
    EXPECT_EQ(other.step[r], 0u);
  }
  const Loaded world = load(1234, 2);
  EXPECT_EQ(world.status[0], gcompErrorMismatch);
  EXPECT_NE(world.error[0].find("world of 3 ranks"), std::string::npos) << world.error[0];
}

/// Runs `body` in a child process; returns its exit status (or 128 + signal).
int in_child(const std::function<void()>& body) {
  const pid_t pid = ::fork();
  if (pid == 0) {
    body();
    _exit(0);
  }
  int status = 0;
  ::waitpid(pid, &status, 0);
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

// A process that dies after every rank wrote its new file but before the manifest was written: the
// previous set (step 3) loads whole; the new files are ignored, and removed by the next save.
TEST_F(CheckpointSetTest, CrashBeforeTheCommitKeepsThePreviousSet) {
  // host_allgather calls of a save: 0 the nonce, 1 "every file written", 2 "committed". Event 3:
  // after call 1 returned, so every rank has written its new file; rank 0 has not written the manifest.
  const int rc = in_child([&] {
    run(3, 2, 7, [](int e) {
      if (e == 3) _exit(9);
    });
  });
  ASSERT_EQ(rc, 9);
  EXPECT_EQ(read_checkpoint_set_info(path_).step, 3u);
  EXPECT_EQ(rank_files().size(), 2u * kRanks) << "the crashed save's files should be on disk (and unused)";
  const Loaded l = load();
  for (int r = 0; r < kRanks; ++r) {
    EXPECT_EQ(l.error[r], "");
    EXPECT_EQ(l.step[r], 3u);
  }
  EXPECT_EQ(l.app, "first");
  run(1, 1);
  EXPECT_EQ(rank_files().size(), static_cast<size_t>(kRanks)) << "stray files of the crashed save were kept";
}

// Killed right after the manifest's rename: the new set (step 5) is committed and loads whole.
TEST_F(CheckpointSetTest, CrashAfterTheCommitGivesTheNewSet) {
  // Event 4: before call 2, after rank 0 renamed the manifest into place.
  const int rc = in_child([&] {
    run(3, 2, 7, [](int e) {
      if (e == 4) _exit(9);
    });
  });
  ASSERT_EQ(rc, 9);
  EXPECT_EQ(read_checkpoint_set_info(path_).step, 5u);
  const Loaded l = load();
  for (int r = 0; r < kRanks; ++r) {
    EXPECT_EQ(l.error[r], "");
    EXPECT_EQ(l.step[r], 5u);
  }
}

// A save that hits a full disk (RLIMIT_FSIZE in the child, SIGXFSZ ignored) fails on every rank and
// leaves the previous set whole, with no new or temporary file.
TEST_F(CheckpointSetTest, FullDiskLeavesThePreviousSet) {
  const int rc = in_child([&] {
    std::signal(SIGXFSZ, SIG_IGN);
    int threw = 0;
    try {
      run(2, 2, 7, [](int n) {
        if (n != 0) return;
        const rlimit lim{64, 64};
        ::setrlimit(RLIMIT_FSIZE, &lim);
      });
    } catch (const Error& e) {
      threw = std::string(e.what()).find("not saved") != std::string::npos ? 3 : 4;
      if (threw == 4) std::fprintf(stderr, "unexpected error: %s\n", e.what());
    }
    _exit(threw);
  });
  EXPECT_EQ(rc, 3) << "3: the second save failed with a message; 0: it claimed success";
  EXPECT_EQ(read_checkpoint_set_info(path_).step, 2u);
  EXPECT_EQ(rank_files().size(), static_cast<size_t>(kRanks));
  for (const auto& e : fs::directory_iterator(dir_))
    EXPECT_EQ(e.path().filename().string().find("gcomp-tmp"), std::string::npos) << e.path();
  const Loaded l = load();
  for (int r = 0; r < kRanks; ++r) EXPECT_EQ(l.step[r], 2u) << l.error[r];
}

}  // namespace
