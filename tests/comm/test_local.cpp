// SPDX-License-Identifier: Apache-2.0
// local backend: every collective against independent expectations for P in {1,2,3,4,7}, in-place
// variants, rank-order determinism, and the fault paths (timeout, a failing or exiting rank,
// mismatched calls, abort).
#include "common/forwarding_comm.hpp"

#include "collective_checks.hpp"

#include <gcomp/comm.hpp>

#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

namespace {

using gcomp::Communicator;
using gcomp::DataType;
using gcomp::Error;
using gcomp::LocalOptions;
using gcomp::ReduceOp;
using gcomp::run_local;
using gcomp::test::error_of;
using Clock = std::chrono::steady_clock;

int64_t elapsed_ms(Clock::time_point start) {
  return std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - start).count();
}

/// The rank that never joins a collective: waits until `peers` others have failed in it, then its
/// own allgather fails at once (TIMEOUT: the communicator is aborted); returns that error.
Error join_after_the_abort(Communicator& comm, const std::atomic<int>& failed, int peers) {
  const auto wait_start = Clock::now();
  while (failed.load() < peers && elapsed_ms(wait_start) < 10000)
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  EXPECT_TRUE(comm.is_aborted());
  std::vector<std::byte> send(4), recv(4 * static_cast<size_t>(comm.size()));
  const auto start = Clock::now();
  const Error e = error_of([&] { comm.allgather(send.data(), recv.data(), 4, nullptr); });
  EXPECT_EQ(e.status(), gcompErrorTimeout);
  EXPECT_LT(elapsed_ms(start), 100);
  return e;
}

/// A rank whose peer never joins: its allgather fails with TIMEOUT after about timeout_ms;
/// returns the message.
std::string allgather_times_out(Communicator& comm, int64_t timeout_ms) {
  std::vector<std::byte> send(4), recv(4 * static_cast<size_t>(comm.size()));
  const auto start = Clock::now();
  const Error e = error_of([&] { comm.allgather(send.data(), recv.data(), 4, nullptr); });
  const int64_t took = elapsed_ms(start);
  EXPECT_EQ(e.status(), gcompErrorTimeout) << e.what();
  EXPECT_GE(took, timeout_ms - 20);
  EXPECT_LT(took, 5000);
  return e.what();
}

/// Short timeout for the correctness suites: a bug shows up as a failure, not a hung ctest.
const LocalOptions kTestOptions{20000};

class CommLocalTest : public testing::TestWithParam<int> {};

TEST_P(CommLocalTest, IdentityAndBackend) {
  const int num_ranks = GetParam();
  std::atomic<int> rank_sum{0};
  run_local(
      num_ranks,
      [&](Communicator& comm) {
        EXPECT_EQ(comm.size(), num_ranks);
        EXPECT_STREQ(comm.backend(), "local");
        EXPECT_EQ(comm.memory_space(), gcomp::MemorySpace::kHost);
        EXPECT_FALSE(comm.is_aborted());
        rank_sum += comm.rank();
      },
      kTestOptions);
  EXPECT_EQ(rank_sum.load(), num_ranks * (num_ranks - 1) / 2);
}

TEST_P(CommLocalTest, Allgather) {
  run_local(
      GetParam(),
      [](Communicator& comm) {
        for (const size_t bytes : {size_t{0}, size_t{1}, size_t{33}, size_t{4099}}) {
          gcomp::test::check_allgather(comm, bytes, false);
          gcomp::test::check_allgather(comm, bytes, true);
        }
      },
      kTestOptions);
}

TEST_P(CommLocalTest, Alltoall) {
  run_local(
      GetParam(),
      [](Communicator& comm) {
        for (const size_t bytes : {size_t{0}, size_t{1}, size_t{7}, size_t{1000}}) {
          gcomp::test::check_alltoall(comm, bytes, false);
          gcomp::test::check_alltoall(comm, bytes, true);
        }
      },
      kTestOptions);
}

TEST_P(CommLocalTest, AllgathervDifferentSizesPerRank) {
  run_local(
      GetParam(),
      [](Communicator& comm) {
        for (const size_t bound : {size_t{0}, size_t{1}, size_t{33}, size_t{4099}}) {
          gcomp::test::check_allgatherv(comm, bound, false);
          gcomp::test::check_allgatherv(comm, bound, true);
        }
      },
      kTestOptions);
}

TEST_P(CommLocalTest, AlltoallvDifferentSizesPerPair) {
  run_local(
      GetParam(),
      [](Communicator& comm) {
        for (const size_t bound : {size_t{0}, size_t{1}, size_t{7}, size_t{1000}}) {
          gcomp::test::check_alltoallv(comm, bound, false);
          gcomp::test::check_alltoallv(comm, bound, true);
        }
      },
      kTestOptions);
}

/// Forwards the fixed-size collectives only, so allgatherv/alltoallv run the base class's generic
/// form (sizes by host_allgather, messages at the full slot size).
class FixedOnlyComm final : public gcomp::test::ForwardingComm {
 public:
  explicit FixedOnlyComm(Communicator& inner) : ForwardingComm(inner) {}
  const char* backend() const override { return "fixed-only"; }
  /// Communicator's own host_allgather (over allgather), as before this double forwarded it.
  void host_allgather(const void* s, void* r, size_t b) override { Communicator::host_allgather(s, r, b); }
};

TEST_P(CommLocalTest, GenericVariableLengthCollectives) {
  run_local(
      GetParam(),
      [](Communicator& inner) {
        FixedOnlyComm comm(inner);
        for (const size_t bound : {size_t{0}, size_t{1}, size_t{33}, size_t{1000}}) {
          gcomp::test::check_allgatherv(comm, bound, false, false);
          gcomp::test::check_allgatherv(comm, bound, true, false);
          gcomp::test::check_alltoallv(comm, bound, false, false);
          gcomp::test::check_alltoallv(comm, bound, true, false);
        }
        // The same bound checks as the backends: one rank above the bound fails every rank.
        const size_t mine = comm.rank() == 0 ? 9 : 2;
        std::vector<std::byte> send(mine);
        std::vector<std::byte> recv(8 * static_cast<size_t>(comm.size()));
        std::vector<size_t> sizes(static_cast<size_t>(comm.size()));
        const Error e = error_of([&] { comm.allgatherv(send.data(), mine, recv.data(), 8, sizes.data(), nullptr); });
        EXPECT_EQ(e.status(), gcompErrorInvalidArgument) << e.what();
        EXPECT_NE(std::string(e.what()).find("rank 0 sends 9 bytes"), std::string::npos) << e.what();
      },
      kTestOptions);
}

TEST_P(CommLocalTest, AllreduceEveryTypeAndOp) {
  run_local(
      GetParam(),
      [](Communicator& comm) {
        for (const size_t count : {size_t{0}, size_t{1}, size_t{31}, size_t{1025}}) {
          gcomp::test::check_allreduce_all_types(comm, count, false);
          gcomp::test::check_allreduce_all_types(comm, count, true);
        }
      },
      kTestOptions);
}

TEST_P(CommLocalTest, BroadcastFromEveryRoot) {
  const int num_ranks = GetParam();
  run_local(
      num_ranks,
      [&](Communicator& comm) {
        for (int root = 0; root < num_ranks; ++root) {
          for (const size_t bytes : {size_t{0}, size_t{1}, size_t{100003}}) {
            gcomp::test::check_broadcast(comm, bytes, root);
          }
        }
      },
      kTestOptions);
}

TEST_P(CommLocalTest, BarrierSeparatesPhases) {
  const int num_ranks = GetParam();
  std::atomic<int> entered{0};
  run_local(
      num_ranks,
      [&](Communicator& comm) {
        for (int round = 1; round <= 20; ++round) {
          ++entered;
          comm.barrier();
          EXPECT_GE(entered.load(), round * num_ranks) << "rank " << comm.rank() << " round " << round;
          comm.barrier();
        }
      },
      kTestOptions);
}

TEST_P(CommLocalTest, LargeBuffers) {
  run_local(
      GetParam(),
      [](Communicator& comm) {
        gcomp::test::check_allgather(comm, size_t{1} << 20, false);
        gcomp::test::check_alltoall(comm, size_t{1} << 18, true);
        gcomp::test::check_allreduce<float>(comm, DataType::kF32, size_t{1} << 18, ReduceOp::kSum, true);
      },
      kTestOptions);
}

TEST_P(CommLocalTest, ManyMixedCollectives) {
  const int num_ranks = GetParam();
  run_local(
      num_ranks,
      [&](Communicator& comm) {
        for (int i = 0; i < 100; ++i) {
          gcomp::test::check_allgather(comm, static_cast<size_t>(i % 5), (i & 1) != 0);
          gcomp::test::check_allgatherv(comm, static_cast<size_t>(i % 7), (i & 2) != 0);
          gcomp::test::check_alltoallv(comm, static_cast<size_t>(i % 3), (i & 1) != 0);
          gcomp::test::check_broadcast(comm, 3, i % num_ranks);
          gcomp::test::check_allreduce<int64_t>(comm, DataType::kI64, 2, ReduceOp::kSum, false);
        }
      },
      kTestOptions);
}

INSTANTIATE_TEST_SUITE_P(Ranks, CommLocalTest, testing::Values(1, 2, 3, 4, 7),
                         [](const testing::TestParamInfo<int>& param_info) {
                           return "P" + std::to_string(param_info.param);
                         });

TEST(CommLocalDeterminismTest, FloatSumIsRankOrderedAndBitIdentical) {
  constexpr int kRanks = 7;
  constexpr size_t kCount = 4096;
  // The inputs must make the order visible, or the check below proves nothing.
  size_t order_sensitive = 0;
  for (size_t i = 0; i < kCount; ++i) {
    float forward = gcomp::test::reduce_input<float>(0, i);
    for (int r = 1; r < kRanks; ++r) forward += gcomp::test::reduce_input<float>(r, i);
    float backward = gcomp::test::reduce_input<float>(kRanks - 1, i);
    for (int r = kRanks - 2; r >= 0; --r) backward += gcomp::test::reduce_input<float>(r, i);
    if (forward != backward) ++order_sensitive;
  }
  ASSERT_GT(order_sensitive, kCount / 20) << "test data is not order-sensitive";

  std::vector<std::vector<float>> results(kRanks);
  run_local(
      kRanks,
      [&](Communicator& comm) {
        std::vector<float> send(kCount);
        for (size_t i = 0; i < kCount; ++i) send[i] = gcomp::test::reduce_input<float>(comm.rank(), i);
        std::vector<float> first(kCount);
        comm.allreduce(send.data(), first.data(), kCount, DataType::kF32, ReduceOp::kSum, nullptr);
        EXPECT_TRUE(gcomp::test::matches_reduce(first, kRanks, ReduceOp::kSum));
        for (int repeat = 0; repeat < 5; ++repeat) {
          // Stagger the ranks so that arrival order differs between repeats.
          std::this_thread::sleep_for(std::chrono::microseconds(((comm.rank() + repeat) % kRanks) * 200));
          std::vector<float> again(kCount);
          comm.allreduce(send.data(), again.data(), kCount, DataType::kF32, ReduceOp::kSum, nullptr);
          EXPECT_EQ(std::memcmp(first.data(), again.data(), kCount * sizeof(float)), 0);
        }
        results[static_cast<size_t>(comm.rank())] = first;
      },
      kTestOptions);
  for (int r = 1; r < kRanks; ++r) {
    EXPECT_EQ(std::memcmp(results[0].data(), results[static_cast<size_t>(r)].data(), kCount * sizeof(float)), 0)
        << "rank " << r << " differs from rank 0";
  }
}

TEST(CommLocalFaultTest, RankSkippingCollectiveTimesOut) {
  constexpr int kRanks = 3;
  constexpr int64_t kTimeoutMs = 200;
  std::atomic<int> failed{0};
  std::mutex mutex;
  std::vector<std::string> messages;
  run_local(
      kRanks,
      [&](Communicator& comm) {
        if (comm.rank() == 2) {
          const Error e = join_after_the_abort(comm, failed, kRanks - 1);
          EXPECT_NE(std::string(e.what()).find("aborted"), std::string::npos) << e.what();
          return;
        }
        const std::string m = allgather_times_out(comm, kTimeoutMs);
        {
          const std::lock_guard lock(mutex);
          messages.push_back(m);
        }
        ++failed;
      },
      LocalOptions{kTimeoutMs});
  ASSERT_EQ(messages.size(), 2u);
  for (const std::string& m : messages) {
    EXPECT_NE(m.find("allgather #0"), std::string::npos) << m;
    EXPECT_NE(m.find("did not arrive: 2"), std::string::npos) << m;
  }
}

// Two ranks: where the machine has two hardware threads or more, a waiting rank spins before it
// sleeps. A peer that comes late (the spin ends, the sleeping wait takes over) or never (the
// timeout, after the spin) behaves as with any wait: right results, then TIMEOUT naming the rank.
TEST(CommLocalFaultTest, TwoRanksLatePeerAndMissingPeer) {
  constexpr int64_t kTimeoutMs = 200;
  std::atomic<int> failed{0};
  std::vector<int64_t> sums(2, 0);
  std::string message;
  run_local(
      2,
      [&](Communicator& comm) {
        const int r = comm.rank();
        int64_t sum = 0;
        for (int i = 0; i < 40; ++i) {
          // Either rank late by 0-3 ms, more than a spin lasts; sometimes both on time.
          if ((i % 2) == r) std::this_thread::sleep_for(std::chrono::microseconds(1000 * (i % 4)));
          const int64_t mine = 10 * i + r;
          int64_t got = 0;
          comm.allreduce(&mine, &got, 1, DataType::kI64, ReduceOp::kSum, nullptr);
          EXPECT_EQ(got, 20 * i + 1) << "allreduce " << i;
          sum += got;
        }
        sums[static_cast<size_t>(r)] = sum;
        if (r == 1) {  // never joins the allgather; its call after the abort fails at once
          join_after_the_abort(comm, failed, 1);
          return;
        }
        message = allgather_times_out(comm, kTimeoutMs);
        ++failed;
      },
      LocalOptions{kTimeoutMs});
  EXPECT_EQ(sums, std::vector<int64_t>(2, 40 * 39 * 10 + 40));
  EXPECT_NE(message.find("allgather #40"), std::string::npos) << message;
  EXPECT_NE(message.find("did not arrive: 1"), std::string::npos) << message;
}

TEST(CommLocalFaultTest, ThrowingRankMakesPeersFailFast) {
  constexpr int kRanks = 4;
  std::mutex mutex;
  std::vector<Error> peer_errors;
  const auto start = Clock::now();
  try {
    run_local(
        kRanks,
        [&](Communicator& comm) {
          if (comm.rank() == 1) throw std::runtime_error("boom on rank 1");
          std::vector<std::byte> send(8);
          std::vector<std::byte> recv(8 * kRanks);
          try {
            comm.allgather(send.data(), recv.data(), 8, nullptr);
          } catch (const Error& e) {
            const std::lock_guard lock(mutex);
            peer_errors.push_back(e);
            throw;
          }
        },
        LocalOptions{60000});
    ADD_FAILURE() << "run_local did not rethrow";
  } catch (const std::runtime_error& e) {
    // The original error wins over the peers' secondary timeout errors.
    EXPECT_EQ(dynamic_cast<const Error*>(&e), nullptr) << e.what();
    EXPECT_STREQ(e.what(), "boom on rank 1");
  }
  EXPECT_LT(elapsed_ms(start), 5000);
  ASSERT_EQ(peer_errors.size(), 3u);
  for (const Error& e : peer_errors) {
    EXPECT_EQ(e.status(), gcompErrorTimeout);
    EXPECT_NE(std::string(e.what()).find("boom on rank 1"), std::string::npos) << e.what();
  }
}

TEST(CommLocalFaultTest, ExitedRankMakesPeersFailFast) {
  constexpr int kRanks = 3;
  const auto start = Clock::now();
  const Error e = error_of([&] {
    run_local(
        kRanks,
        [&](Communicator& comm) {
          if (comm.rank() == 0) return;  // leaves without joining the barrier
          comm.barrier();
        },
        LocalOptions{60000});
  });
  EXPECT_EQ(e.status(), gcompErrorTimeout);
  EXPECT_NE(std::string(e.what()).find("rank 0 exited without joining it"), std::string::npos) << e.what();
  EXPECT_NE(std::string(e.what()).find("barrier #0"), std::string::npos) << e.what();
  EXPECT_LT(elapsed_ms(start), 5000);
}

TEST(CommLocalFaultTest, DestroyedCommunicatorCountsAsExited) {
  auto comms = gcomp::make_local_group(2, LocalOptions{60000});
  comms[1].reset();
  const auto start = Clock::now();
  const Error e = error_of([&] { comms[0]->barrier(); });
  EXPECT_EQ(e.status(), gcompErrorTimeout);
  EXPECT_NE(std::string(e.what()).find("rank 1 exited"), std::string::npos) << e.what();
  EXPECT_LT(elapsed_ms(start), 1000);
}

TEST(CommLocalFaultTest, AbortFailsWaitersAndLaterCalls) {
  auto comms = gcomp::make_local_group(3, LocalOptions{60000});
  std::thread waiter([&] {
    const Error e = error_of([&] { comms[1]->barrier(); });
    EXPECT_EQ(e.status(), gcompErrorTimeout);
    EXPECT_NE(std::string(e.what()).find("operator stop"), std::string::npos) << e.what();
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  comms[0]->abort("operator stop");
  waiter.join();
  for (const auto& comm : comms) EXPECT_TRUE(comm->is_aborted());
  const Error e = error_of([&] { comms[2]->broadcast(nullptr, 0, 0, nullptr); });
  EXPECT_EQ(e.status(), gcompErrorTimeout);
  size_t sizes[3] = {};
  const Error ev = error_of([&] { comms[2]->allgatherv(nullptr, 0, nullptr, 0, sizes, nullptr); });
  EXPECT_EQ(ev.status(), gcompErrorTimeout);
  EXPECT_NE(std::string(ev.what()).find("allgatherv #1"), std::string::npos) << ev.what();
  EXPECT_NE(std::string(e.what()).find("rank 0 aborted: operator stop"), std::string::npos) << e.what();
}

TEST(CommLocalFaultTest, SizeMismatchFailsEveryRankWithSameMessage) {
  constexpr int kRanks = 3;
  std::vector<std::string> messages(kRanks);
  run_local(
      kRanks,
      [&](Communicator& comm) {
        const size_t bytes = comm.rank() == 1 ? 8 : 16;
        std::vector<std::byte> send(bytes);
        std::vector<std::byte> recv(bytes * kRanks);
        const Error e = error_of([&] { comm.allgather(send.data(), recv.data(), bytes, nullptr); });
        EXPECT_EQ(e.status(), gcompErrorMismatch);
        messages[static_cast<size_t>(comm.rank())] = e.what();
        // A mismatch leaves the communicator usable.
        EXPECT_FALSE(comm.is_aborted());
        gcomp::test::check_allgather(comm, 16, false);
      },
      kTestOptions);
  EXPECT_EQ(messages[0], messages[1]);
  EXPECT_EQ(messages[0], messages[2]);
  EXPECT_NE(messages[0].find("ranks 1 differ from rank 0"), std::string::npos) << messages[0];
  EXPECT_NE(messages[0].find("rank 0: allgather #0 (16 bytes per rank) vs rank 1: allgather #0 "
                             "(8 bytes per rank)"),
            std::string::npos)
      << messages[0];
}

TEST(CommLocalFaultTest, MessageAboveTheBoundFailsEveryRankBeforeAnyDataMoves) {
  constexpr int kRanks = 3;
  constexpr size_t kBound = 16;
  std::vector<std::string> messages(kRanks);
  run_local(
      kRanks,
      [&](Communicator& comm) {
        // Rank 1 sends more than the bound: every rank fails, nobody's receive buffer is written.
        const size_t mine = comm.rank() == 1 ? kBound + 5 : 4;
        std::vector<std::byte> send(mine, std::byte{0x11});
        std::vector<std::byte> recv(kBound * kRanks, std::byte{0xee});
        std::vector<size_t> sizes(kRanks, 99);
        const Error e =
            error_of([&] { comm.allgatherv(send.data(), mine, recv.data(), kBound, sizes.data(), nullptr); });
        EXPECT_EQ(e.status(), gcompErrorInvalidArgument) << e.what();
        messages[static_cast<size_t>(comm.rank())] = e.what();
        EXPECT_TRUE(std::all_of(recv.begin(), recv.end(), [](std::byte b) { return b == std::byte{0xee}; }));
        EXPECT_TRUE(std::all_of(sizes.begin(), sizes.end(), [](size_t v) { return v == 99; }));
        EXPECT_FALSE(comm.is_aborted());
        // alltoallv: rank 2's message to rank 0 is too large.
        std::vector<size_t> out(kRanks, 3);
        if (comm.rank() == 2) out[0] = kBound + 1;
        std::vector<std::byte> blocks(kBound * kRanks);
        const Error e2 =
            error_of([&] { comm.alltoallv(blocks.data(), out.data(), recv.data(), kBound, sizes.data(), nullptr); });
        EXPECT_EQ(e2.status(), gcompErrorInvalidArgument) << e2.what();
        EXPECT_NE(std::string(e2.what()).find("rank 2 sends 17 bytes"), std::string::npos) << e2.what();
        EXPECT_TRUE(std::all_of(recv.begin(), recv.end(), [](std::byte b) { return b == std::byte{0xee}; }));
        gcomp::test::check_allgatherv(comm, 40, false);
      },
      kTestOptions);
  EXPECT_EQ(messages[0], messages[1]);
  EXPECT_EQ(messages[0], messages[2]);
  EXPECT_NE(messages[0].find("allgatherv #0 (at most 16 bytes per rank): message above the bound "
                             "(rank 1 sends 21 bytes)"),
            std::string::npos)
      << messages[0];
}

TEST(CommLocalFaultTest, DifferentBoundsMismatch) {
  constexpr int kRanks = 3;
  std::vector<std::string> messages(kRanks);
  run_local(
      kRanks,
      [&](Communicator& comm) {
        const size_t bound = comm.rank() == 2 ? 8 : 16;
        std::vector<std::byte> send(4);
        std::vector<std::byte> recv(16 * kRanks);
        std::vector<size_t> sizes(kRanks);
        const Error e = error_of([&] { comm.allgatherv(send.data(), 4, recv.data(), bound, sizes.data(), nullptr); });
        EXPECT_EQ(e.status(), gcompErrorMismatch);
        messages[static_cast<size_t>(comm.rank())] = e.what();
        EXPECT_FALSE(comm.is_aborted());
      },
      kTestOptions);
  EXPECT_EQ(messages[0], messages[1]);
  EXPECT_EQ(messages[0], messages[2]);
  EXPECT_NE(messages[0].find("rank 0: allgatherv #0 (at most 16 bytes per rank) vs rank 2: "
                             "allgatherv #0 (at most 8 bytes per rank)"),
            std::string::npos)
      << messages[0];
}

TEST(CommLocalFaultTest, RankSkippingAlltoallvTimesOut) {
  constexpr int kRanks = 3;
  constexpr int64_t kTimeoutMs = 200;
  std::atomic<int> failed{0};
  run_local(
      kRanks,
      [&](Communicator& comm) {
        if (comm.rank() == 0) {
          const auto wait_start = Clock::now();
          while (failed.load() < kRanks - 1 && elapsed_ms(wait_start) < 10000) {
            std::this_thread::sleep_for(std::chrono::milliseconds(5));
          }
          EXPECT_TRUE(comm.is_aborted());
          return;
        }
        std::vector<std::byte> send(8 * kRanks);
        std::vector<std::byte> recv(8 * kRanks);
        std::vector<size_t> sizes(kRanks, 5);
        const auto start = Clock::now();
        const Error e =
            error_of([&] { comm.alltoallv(send.data(), sizes.data(), recv.data(), 8, sizes.data(), nullptr); });
        EXPECT_EQ(e.status(), gcompErrorTimeout) << e.what();
        EXPECT_GE(elapsed_ms(start), kTimeoutMs - 20);
        EXPECT_NE(std::string(e.what()).find("alltoallv #0"), std::string::npos) << e.what();
        EXPECT_NE(std::string(e.what()).find("did not arrive: 0"), std::string::npos) << e.what();
        ++failed;
      },
      LocalOptions{kTimeoutMs});
}

TEST(CommLocalFaultTest, DifferentCollectivesMismatch) {
  run_local(
      2,
      [&](Communicator& comm) {
        std::vector<double> data(4, 1.0);
        const Error e = error_of([&] {
          if (comm.rank() == 0) {
            comm.broadcast(data.data(), 32, 0, nullptr);
          } else {
            comm.allreduce(data.data(), data.data(), 4, DataType::kF64, ReduceOp::kMax, nullptr);
          }
        });
        EXPECT_EQ(e.status(), gcompErrorMismatch);
        EXPECT_NE(std::string(e.what()).find("broadcast #0 (32 bytes from root 0) vs rank 1: "
                                             "allreduce #0 (4 x f64, max)"),
                  std::string::npos)
            << e.what();
      },
      kTestOptions);
}

TEST(CommLocalFaultTest, RunLocalPrefersFirstNonTimeoutError) {
  const Error e = error_of([&] {
    run_local(
        3,
        [&](Communicator& comm) {
          if (comm.rank() == 2) {
            std::this_thread::sleep_for(std::chrono::milliseconds(30));
            GCOMP_FAIL(gcompErrorInvalidArgument, "bad input on rank 2");
          }
          comm.barrier();
        },
        LocalOptions{60000});
  });
  EXPECT_EQ(e.status(), gcompErrorInvalidArgument);
  EXPECT_NE(std::string(e.what()).find("bad input on rank 2"), std::string::npos) << e.what();
}

TEST(CommLocalFaultTest, InvalidArguments) {
  EXPECT_EQ(error_of([] { static_cast<void>(gcomp::make_local_group(0)); }).status(), gcompErrorInvalidArgument);
  EXPECT_EQ(error_of([] { static_cast<void>(gcomp::make_local_group(2, LocalOptions{-5})); }).status(),
            gcompErrorInvalidArgument);
  run_local(
      2,
      [](Communicator& comm) {
        std::vector<std::byte> buf(4);
        EXPECT_EQ(error_of([&] { comm.broadcast(buf.data(), 4, 2, nullptr); }).status(), gcompErrorInvalidArgument);
        EXPECT_EQ(error_of([&] { comm.allgather(nullptr, buf.data(), 1, nullptr); }).status(),
                  gcompErrorInvalidArgument);
        // Argument errors are local and leave the communicator usable.
        gcomp::test::check_broadcast(comm, 4, 1);
      },
      kTestOptions);
}

TEST(CommTimeoutTest, ResolutionOrder) {
  ASSERT_EQ(unsetenv("GCOMP_COMM_TIMEOUT_MS"), 0);
  EXPECT_EQ(gcomp::resolve_comm_timeout_ms(0), gcomp::kDefaultCommTimeoutMs);
  EXPECT_EQ(gcomp::resolve_comm_timeout_ms(250), 250);
  ASSERT_EQ(setenv("GCOMP_COMM_TIMEOUT_MS", "1234", 1), 0);
  EXPECT_EQ(gcomp::resolve_comm_timeout_ms(0), 1234);
  EXPECT_EQ(gcomp::resolve_comm_timeout_ms(250), 250);
  for (const char* bad : {"abc", "-5", "0", "12ms"}) {
    ASSERT_EQ(setenv("GCOMP_COMM_TIMEOUT_MS", bad, 1), 0);
    EXPECT_EQ(error_of([] { static_cast<void>(gcomp::resolve_comm_timeout_ms(0)); }).status(),
              gcompErrorInvalidArgument)
        << bad;
  }
  ASSERT_EQ(unsetenv("GCOMP_COMM_TIMEOUT_MS"), 0);
  EXPECT_EQ(error_of([] { static_cast<void>(gcomp::resolve_comm_timeout_ms(-1)); }).status(),
            gcompErrorInvalidArgument);
}

TEST(CommBackendsTest, UnavailableBackendsSayWhy) {
  if (!gcomp::nccl_available()) {
    const Error e = error_of([] { static_cast<void>(gcomp::make_nccl_communicator()); });
    EXPECT_EQ(e.status(), gcompErrorNotSupported);
    EXPECT_NE(std::string(e.what()).find("no nccl backend"), std::string::npos) << e.what();
  }
  if (!gcomp::mpi_available()) {
    const Error e = error_of([] { static_cast<void>(gcomp::make_mpi_world()); });
    EXPECT_EQ(e.status(), gcompErrorNotSupported);
  }
  EXPECT_EQ(gcomp::data_type_bytes(DataType::kF32), 4u);
  EXPECT_EQ(gcomp::data_type_bytes(DataType::kU64), 8u);
  EXPECT_STREQ(gcomp::data_type_name(DataType::kI64), "i64");
  EXPECT_STREQ(gcomp::reduce_op_name(ReduceOp::kMax), "max");
}

}  // namespace
