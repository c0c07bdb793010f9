// SPDX-License-Identifier: Apache-2.0
// mpi backend, run by ctest as `mpiexec -np 4 gcomp_mpi_tests`. Every rank runs every test and
// asserts; after each test the ranks' failure flags are gathered so that rank 0's report names the
// ranks that failed, and the exit status sums failed tests over all ranks (nonzero on every rank
// when any rank failed).
#include "collective_checks.hpp"

#include <gcomp/comm.hpp>

#include <gtest/gtest.h>
#include <mpi.h>

#include "host/comm/comm_internal.hpp"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <thread>

namespace {

using gcomp::Communicator;
using gcomp::DataType;
using gcomp::Error;
using gcomp::MpiOptions;
using gcomp::ReduceOp;
using gcomp::test::error_of;
using Clock = std::chrono::steady_clock;

int world_rank() {
  int rank = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  return rank;
}

int world_size() {
  int size = 0;
  MPI_Comm_size(MPI_COMM_WORLD, &size);
  return size;
}

/// Every test gets a fresh communicator; TearDown reports other ranks' failures on rank 0.
class CommMpiTest : public testing::Test {
 protected:
  void SetUp() override { comm_ = gcomp::make_mpi_world(MpiOptions{20000}); }

  void TearDown() override {
    comm_.reset();
    const int mine = HasFailure() ? 1 : 0;
    std::vector<int> all(static_cast<size_t>(world_size()));
    MPI_Allgather(&mine, 1, MPI_INT, all.data(), 1, MPI_INT, MPI_COMM_WORLD);
    if (world_rank() != 0) return;
    for (size_t r = 1; r < all.size(); ++r) {
      if (all[r] != 0) ADD_FAILURE() << "this test failed on rank " << r << " (see its output)";
    }
  }

  std::unique_ptr<Communicator> comm_;
};

/// Whether all ranks hold the same message (compared by digest over MPI_COMM_WORLD).
bool same_on_all_ranks(const std::string& message) {
  const uint64_t digest = gcomp::fnv1a64(message);
  std::vector<uint64_t> all(static_cast<size_t>(world_size()));
  MPI_Allgather(&digest, 1, MPI_UINT64_T, all.data(), 1, MPI_UINT64_T, MPI_COMM_WORLD);
  for (const uint64_t d : all) {
    if (d != digest) return false;
  }
  return true;
}

TEST_F(CommMpiTest, IdentityAndBackend) {
  EXPECT_TRUE(gcomp::mpi_available());
  EXPECT_EQ(comm_->rank(), world_rank());
  EXPECT_EQ(comm_->size(), world_size());
  EXPECT_STREQ(comm_->backend(), "mpi");
  EXPECT_EQ(comm_->memory_space(), gcomp::MemorySpace::kHost);
}

TEST_F(CommMpiTest, Allgather) {
  for (const size_t bytes : {size_t{0}, size_t{1}, size_t{33}, size_t{100003}}) {
    gcomp::test::check_allgather(*comm_, bytes, false);
    gcomp::test::check_allgather(*comm_, bytes, true);
  }
}

TEST_F(CommMpiTest, Alltoall) {
  for (const size_t bytes : {size_t{0}, size_t{1}, size_t{7}, size_t{50001}}) {
    gcomp::test::check_alltoall(*comm_, bytes, false);
    gcomp::test::check_alltoall(*comm_, bytes, true);
  }
}

TEST_F(CommMpiTest, AllgathervDifferentSizesPerRank) {
  for (const size_t bound : {size_t{0}, size_t{1}, size_t{33}, size_t{100003}}) {
    gcomp::test::check_allgatherv(*comm_, bound, false);
    gcomp::test::check_allgatherv(*comm_, bound, true);
  }
}

TEST_F(CommMpiTest, AlltoallvDifferentSizesPerPair) {
  for (const size_t bound : {size_t{0}, size_t{1}, size_t{7}, size_t{50001}}) {
    gcomp::test::check_alltoallv(*comm_, bound, false);
    gcomp::test::check_alltoallv(*comm_, bound, true);
  }
}

TEST_F(CommMpiTest, VariableLengthPointToPointForm) {
  // The form used above INT_MAX packed bytes (one message per pair), run here on small buffers.
  gcomp::detail::mpi_set_count_limit(*comm_, 0);
  for (const size_t bound : {size_t{1}, size_t{33}, size_t{5001}}) {
    gcomp::test::check_allgatherv(*comm_, bound, false);
    gcomp::test::check_allgatherv(*comm_, bound, true);
    gcomp::test::check_alltoallv(*comm_, bound, false);
    gcomp::test::check_alltoallv(*comm_, bound, true);
  }
}

TEST_F(CommMpiTest, MessageAboveTheBoundFailsEveryRankWithSameMessage) {
  constexpr size_t kBound = 16;
  const auto ranks = static_cast<size_t>(comm_->size());
  const size_t mine = comm_->rank() == comm_->size() - 1 ? kBound + 1 : 3;
  std::vector<std::byte> send(mine);
  std::vector<std::byte> recv(kBound * ranks, std::byte{0xee});
  std::vector<size_t> sizes(ranks, 99);
  const Error e = error_of([&] { comm_->allgatherv(send.data(), mine, recv.data(), kBound, sizes.data(), nullptr); });
  EXPECT_EQ(e.status(), gcompErrorInvalidArgument) << e.what();
  EXPECT_TRUE(same_on_all_ranks(e.what())) << e.what();
  EXPECT_NE(std::string(e.what()).find("sends 17 bytes"), std::string::npos) << e.what();
  EXPECT_TRUE(std::all_of(recv.begin(), recv.end(), [](std::byte b) { return b == std::byte{0xee}; }));
  EXPECT_TRUE(std::all_of(sizes.begin(), sizes.end(), [](size_t v) { return v == 99; }));
  std::vector<size_t> out(ranks, 2);
  if (comm_->rank() == 0) out[ranks - 1] = kBound + 3;
  std::vector<std::byte> blocks(kBound * ranks);
  const Error e2 =
      error_of([&] { comm_->alltoallv(blocks.data(), out.data(), recv.data(), kBound, sizes.data(), nullptr); });
  EXPECT_EQ(e2.status(), gcompErrorInvalidArgument) << e2.what();
  EXPECT_TRUE(same_on_all_ranks(e2.what())) << e2.what();
  EXPECT_NE(std::string(e2.what()).find("rank 0 sends 19 bytes"), std::string::npos) << e2.what();
  EXPECT_FALSE(comm_->is_aborted());
  gcomp::test::check_alltoallv(*comm_, 20, false);
}

TEST_F(CommMpiTest, AllreduceEveryTypeAndOpInRankOrder) {
  for (const size_t count : {size_t{0}, size_t{1}, size_t{31}, size_t{4099}}) {
    gcomp::test::check_allreduce_all_types(*comm_, count, false);
    gcomp::test::check_allreduce_all_types(*comm_, count, true);
  }
}

TEST_F(CommMpiTest, BroadcastFromEveryRoot) {
  for (int root = 0; root < comm_->size(); ++root) {
    for (const size_t bytes : {size_t{0}, size_t{1}, size_t{100003}}) {
      gcomp::test::check_broadcast(*comm_, bytes, root);
    }
  }
}

TEST_F(CommMpiTest, BarrierAndLargeBuffers) {
  for (int i = 0; i < 10; ++i) comm_->barrier();
  gcomp::test::check_allgather(*comm_, size_t{1} << 20, false);
  gcomp::test::check_allreduce<float>(*comm_, DataType::kF32, size_t{1} << 18, ReduceOp::kSum, true);
}

TEST_F(CommMpiTest, AgreementPassesAndFailsWithSameMessage) {
  gcomp::check_agreement(*comm_, "config", "codec=dither:levels=4;algo=ef;format=1");
  const std::string text = comm_->rank() == 2 ? "dither:levels=2" : "dither:levels=4";
  const Error e = error_of([&] { gcomp::check_agreement(*comm_, "codec spec", text); });
  EXPECT_EQ(e.status(), gcompErrorMismatch);
  EXPECT_TRUE(same_on_all_ranks(e.what())) << e.what();
  if (comm_->size() > 2) {
    EXPECT_NE(std::string(e.what()).find("rank 0: \"dither:levels=4\" vs rank 2: \"dither:levels=2\""),
              std::string::npos)
        << e.what();
  }
}

TEST_F(CommMpiTest, SizeMismatchFailsEveryRankWithSameMessage) {
  const size_t bytes = comm_->rank() == 1 ? 8 : 16;
  std::vector<std::byte> send(bytes);
  std::vector<std::byte> recv(bytes * static_cast<size_t>(comm_->size()));
  const Error e = error_of([&] { comm_->allgather(send.data(), recv.data(), bytes, nullptr); });
  if (comm_->size() > 1) {
    EXPECT_EQ(e.status(), gcompErrorMismatch) << e.what();
    EXPECT_TRUE(same_on_all_ranks(e.what())) << e.what();
    EXPECT_NE(std::string(e.what()).find("vs rank 1: allgather #0 (8 bytes per rank)"), std::string::npos) << e.what();
  }
  // The descriptor exchange caught it before any data moved: the communicator still works.
  EXPECT_FALSE(comm_->is_aborted());
  gcomp::test::check_allgather(*comm_, 16, false);
}

TEST_F(CommMpiTest, SkippedCollectiveTimesOutAndAborts) {
  constexpr int64_t kTimeoutMs = 300;
  const int last = comm_->size() - 1;
  if (last == 0) GTEST_SKIP() << "needs at least 2 ranks";
  auto comm = gcomp::make_mpi_world(MpiOptions{kTimeoutMs});
  std::vector<std::byte> send(8);
  std::vector<std::byte> recv(8 * static_cast<size_t>(comm->size()));
  if (comm->rank() != last) {
    const auto start = Clock::now();
    const Error e = error_of([&] { comm->allgather(send.data(), recv.data(), 8, nullptr); });
    const auto took = std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - start);
    EXPECT_EQ(e.status(), gcompErrorTimeout) << e.what();
    EXPECT_NE(std::string(e.what()).find("allgather #0"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("timed out after 300 ms"), std::string::npos) << e.what();
    EXPECT_GE(took.count(), kTimeoutMs - 20);
    EXPECT_LT(took.count(), 10000);
    EXPECT_TRUE(comm->is_aborted());
    const auto again = Clock::now();
    const Error later = error_of([&] { comm->barrier(); });
    EXPECT_EQ(later.status(), gcompErrorTimeout);
    EXPECT_NE(std::string(later.what()).find("communicator aborted"), std::string::npos) << later.what();
    EXPECT_LT(Clock::now() - again, std::chrono::milliseconds(100));
  }
  // The last rank never joins; everyone continues on MPI_COMM_WORLD and the fixture's fresh
  // communicator, which the abandoned request does not touch.
  comm.reset();
  MPI_Barrier(MPI_COMM_WORLD);
  gcomp::test::check_allgather(*comm_, 5, false);
}

TEST_F(CommMpiTest, SkippedAllgathervTimesOutAndAborts) {
  constexpr int64_t kTimeoutMs = 300;
  if (comm_->size() < 2) GTEST_SKIP() << "needs at least 2 ranks";
  auto comm = gcomp::make_mpi_world(MpiOptions{kTimeoutMs});
  std::vector<std::byte> send(8);
  std::vector<std::byte> recv(8 * static_cast<size_t>(comm->size()));
  std::vector<size_t> sizes(static_cast<size_t>(comm->size()));
  if (comm->rank() != 0) {
    const Error e = error_of([&] { comm->allgatherv(send.data(), 5, recv.data(), 8, sizes.data(), nullptr); });
    EXPECT_EQ(e.status(), gcompErrorTimeout) << e.what();
    EXPECT_NE(std::string(e.what()).find("allgatherv #0 (at most 8 bytes per rank) timed out after 300 ms"),
              std::string::npos)
        << e.what();
    EXPECT_TRUE(comm->is_aborted());
    const Error later =
        error_of([&] { comm->alltoallv(recv.data(), sizes.data(), recv.data(), 2, sizes.data(), nullptr); });
    EXPECT_EQ(later.status(), gcompErrorTimeout);
    EXPECT_NE(std::string(later.what()).find("communicator aborted"), std::string::npos) << later.what();
  }
  comm.reset();
  MPI_Barrier(MPI_COMM_WORLD);
  gcomp::test::check_allgatherv(*comm_, 5, false);
}

// set_wait_interrupt_check (issue 18 #15): a rank waiting for peers that do not come stops when the
// check says so (Ctrl-C in Python), long before the 60 s timeout; the communicator is aborted.
TEST_F(CommMpiTest, InterruptCheckStopsAWaitingCollective) {
  const int last = comm_->size() - 1;
  if (last == 0) GTEST_SKIP() << "needs at least 2 ranks";
  static std::atomic<int64_t> stop_at_ms{0};
  stop_at_ms = std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now().time_since_epoch()).count() + 300;
  gcomp::set_wait_interrupt_check([] {
    return std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now().time_since_epoch()).count() >= stop_at_ms;
  });
  auto comm = gcomp::make_mpi_world(MpiOptions{60000});
  std::vector<std::byte> send(8), recv(8 * static_cast<size_t>(comm->size()));
  if (comm->rank() != last) {
    const auto start = Clock::now();
    const Error e = error_of([&] { comm->allgather(send.data(), recv.data(), 8, nullptr); });
    const auto took = std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - start);
    EXPECT_EQ(e.status(), gcompErrorTimeout) << e.what();
    EXPECT_NE(std::string(e.what()).find("interrupted"), std::string::npos) << e.what();
    EXPECT_LT(took.count(), 10000);
    EXPECT_TRUE(comm->is_aborted());
  }
  gcomp::set_wait_interrupt_check(nullptr);
  comm.reset();
  MPI_Barrier(MPI_COMM_WORLD);
  gcomp::test::check_allgather(*comm_, 5, false);
}

/// On ranks other than 0: prints only failures, prefixed with the rank.
class RankFailurePrinter : public testing::EmptyTestEventListener {
 public:
  explicit RankFailurePrinter(int rank) : rank_(rank) {}
  void OnTestPartResult(const testing::TestPartResult& result) override {
    if (!result.failed()) return;
    std::fprintf(stderr, "[rank %d] %s:%d: Failure\n%s\n", rank_,
                 result.file_name() != nullptr ? result.file_name() : "?", result.line_number(), result.summary());
  }

 private:
  int rank_;
};

}  // namespace

int main(int argc, char** argv) {
  int provided = 0;
  MPI_Init_thread(&argc, &argv, MPI_THREAD_SERIALIZED, &provided);
  testing::InitGoogleTest(&argc, argv);
  const int rank = world_rank();
  if (rank != 0) {
    testing::TestEventListeners& listeners = testing::UnitTest::GetInstance()->listeners();
    delete listeners.Release(listeners.default_result_printer());
    listeners.Append(new RankFailurePrinter(rank));
  }
  const int run_status = RUN_ALL_TESTS();
  int failed = testing::UnitTest::GetInstance()->failed_test_count();
  if (run_status != 0 && failed == 0) failed = 1;
  int total = 0;
  MPI_Allreduce(&failed, &total, 1, MPI_INT, MPI_SUM, MPI_COMM_WORLD);
  if (rank == 0) {
    std::printf("[gcomp mpi] %d failed test(s) summed over %d ranks\n", total, world_size());
  }
  MPI_Finalize();
  return total > 0 ? 1 : 0;
}
