// SPDX-License-Identifier: Apache-2.0
// Bootstrap helpers of the nccl backend, host only: launcher variables, TCP rendezvous on
// 127.0.0.1 with threads as ranks, and the shared-file rendezvous.
#include "collective_checks.hpp"
#include "host/comm/rendezvous.hpp"

#include <gtest/gtest.h>

#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <array>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <functional>
#include <thread>
#include <vector>

namespace {

using gcomp::Error;
using gcomp::test::error_of;
using Clock = std::chrono::steady_clock;

constexpr const char* kLoopback = "127.0.0.1";
constexpr size_t kBlobBytes = 128;

/// A port on 127.0.0.1 that was free a moment ago (bind to port 0, read it back, close).
int free_loopback_port() {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  EXPECT_GE(fd, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = 0;
  EXPECT_EQ(::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
  socklen_t len = sizeof(addr);
  EXPECT_EQ(::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len), 0);
  ::close(fd);
  return ntohs(addr.sin_port);
}

std::vector<std::byte> root_blob() {
  std::vector<std::byte> blob(kBlobBytes);
  for (size_t i = 0; i < kBlobBytes; ++i) blob[i] = gcomp::test::pattern_byte(0, i);
  return blob;
}

/// Runs fn(rank) on one thread per rank and returns each rank's error (status gcompSuccess: none).
std::vector<Error> run_ranks(int num_ranks, const std::function<void(int)>& fn) {
  std::vector<Error> errors(static_cast<size_t>(num_ranks), Error(gcompSuccess, ""));
  std::vector<std::thread> threads;
  for (int r = 0; r < num_ranks; ++r) {
    threads.emplace_back([&, r] {
      try {
        fn(r);
      } catch (const Error& e) {
        errors[static_cast<size_t>(r)] = e;
      }
    });
  }
  for (auto& t : threads) t.join();
  return errors;
}

std::string temp_path(const std::string& name) {
  return testing::TempDir() + "gcomp_" + name + "_" + std::to_string(::getpid());
}

TEST(CommRendezvousTest, TcpDeliversRootBlobToEveryRank) {
  constexpr int kRanks = 5;
  const int port = free_loopback_port();
  std::vector<std::vector<std::byte>> blobs(kRanks, std::vector<std::byte>(kBlobBytes));
  blobs[0] = root_blob();
  const auto errors = run_ranks(kRanks, [&](int rank) {
    // Rank 0 starts last: peers must retry until it listens.
    if (rank == 0) std::this_thread::sleep_for(std::chrono::milliseconds(150));
    gcomp::detail::tcp_broadcast_blob(kLoopback, port, rank, kRanks, blobs[static_cast<size_t>(rank)], 10000);
  });
  for (int r = 0; r < kRanks; ++r) {
    EXPECT_EQ(errors[static_cast<size_t>(r)].status(), gcompSuccess) << errors[static_cast<size_t>(r)].what();
    EXPECT_TRUE(gcomp::test::bytes_equal(blobs[static_cast<size_t>(r)], root_blob())) << "rank " << r;
  }
}

TEST(CommRendezvousTest, TcpSingleRankNeedsNoNetwork) {
  std::vector<std::byte> blob = root_blob();
  gcomp::detail::tcp_broadcast_blob(kLoopback, 1, 0, 1, blob, 1000);
  EXPECT_TRUE(gcomp::test::bytes_equal(blob, root_blob()));
}

TEST(CommRendezvousTest, TcpRootTimesOutNamingMissingRanks) {
  const int port = free_loopback_port();
  std::vector<std::vector<std::byte>> blobs(2, std::vector<std::byte>(kBlobBytes));
  const auto start = Clock::now();
  const auto errors = run_ranks(2, [&](int rank) {
    gcomp::detail::tcp_broadcast_blob(kLoopback, port, rank, 4, blobs[static_cast<size_t>(rank)], 300);
  });
  EXPECT_LT(Clock::now() - start, std::chrono::seconds(5));
  EXPECT_EQ(errors[0].status(), gcompErrorTimeout);
  EXPECT_NE(std::string(errors[0].what()).find("waiting for ranks 2,3"), std::string::npos) << errors[0].what();
  EXPECT_EQ(errors[1].status(), gcompSuccess) << errors[1].what();
}

TEST(CommRendezvousTest, TcpPeerTimesOutWithoutRoot) {
  std::vector<std::byte> blob(kBlobBytes);
  const auto start = Clock::now();
  const Error e =
      error_of([&] { gcomp::detail::tcp_broadcast_blob(kLoopback, free_loopback_port(), 1, 2, blob, 200); });
  EXPECT_EQ(e.status(), gcompErrorTimeout);
  EXPECT_NE(std::string(e.what()).find("rank 1 connecting to 127.0.0.1:"), std::string::npos) << e.what();
  EXPECT_LT(Clock::now() - start, std::chrono::seconds(5));
}

TEST(CommRendezvousTest, TcpWorldSizeMismatchFailsBothSides) {
  const int port = free_loopback_port();
  std::vector<std::vector<std::byte>> blobs(2, std::vector<std::byte>(kBlobBytes));
  const auto errors = run_ranks(2, [&](int rank) {
    const int world = rank == 0 ? 2 : 3;
    gcomp::detail::tcp_broadcast_blob(kLoopback, port, rank, world, blobs[static_cast<size_t>(rank)], 5000);
  });
  EXPECT_EQ(errors[0].status(), gcompErrorMismatch) << errors[0].what();
  EXPECT_EQ(errors[1].status(), gcompErrorMismatch) << errors[1].what();
  EXPECT_NE(std::string(errors[0].what()).find("rank 1 has WORLD_SIZE 3 but rank 0 has 2"), std::string::npos)
      << errors[0].what();
}

TEST(CommRendezvousTest, TcpBadArguments) {
  std::vector<std::byte> blob(kBlobBytes);
  EXPECT_EQ(error_of([&] { gcomp::detail::tcp_broadcast_blob("", 5000, 1, 2, blob, 100); }).status(),
            gcompErrorInvalidArgument);
  EXPECT_EQ(error_of([&] { gcomp::detail::tcp_broadcast_blob(kLoopback, 0, 1, 2, blob, 100); }).status(),
            gcompErrorInvalidArgument);
  EXPECT_EQ(error_of([&] { gcomp::detail::tcp_broadcast_blob(kLoopback, 5000, 2, 2, blob, 100); }).status(),
            gcompErrorInvalidArgument);
}

TEST(CommRendezvousTest, FileDeliversRootBlobToEveryRank) {
  constexpr int kRanks = 4;
  const std::string path = temp_path("id_ok");
  std::remove(path.c_str());
  std::vector<std::vector<std::byte>> blobs(kRanks, std::vector<std::byte>(kBlobBytes));
  blobs[0] = root_blob();
  const auto errors = run_ranks(kRanks, [&](int rank) {
    if (rank == 0) std::this_thread::sleep_for(std::chrono::milliseconds(100));
    gcomp::detail::file_broadcast_blob(path, rank, blobs[static_cast<size_t>(rank)], 10000);
  });
  for (int r = 0; r < kRanks; ++r) {
    EXPECT_EQ(errors[static_cast<size_t>(r)].status(), gcompSuccess) << errors[static_cast<size_t>(r)].what();
    EXPECT_TRUE(gcomp::test::bytes_equal(blobs[static_cast<size_t>(r)], root_blob())) << "rank " << r;
  }
  std::remove(path.c_str());
}

TEST(CommRendezvousTest, FileTimesOutWithoutRoot) {
  const std::string path = temp_path("id_missing");
  std::remove(path.c_str());
  std::vector<std::byte> blob(kBlobBytes);
  const Error e = error_of([&] { gcomp::detail::file_broadcast_blob(path, 1, blob, 150); });
  EXPECT_EQ(e.status(), gcompErrorTimeout);
  EXPECT_NE(std::string(e.what()).find("waiting for the id file"), std::string::npos) << e.what();
}

TEST(CommRendezvousTest, FileRejectsForeignOrWrongSizeContent) {
  const std::string path = temp_path("id_bad");
  {
    std::ofstream out(path, std::ios::binary | std::ios::trunc);
    out << "not an id file at all";
  }
  std::vector<std::byte> blob(kBlobBytes);
  EXPECT_EQ(error_of([&] { gcomp::detail::file_broadcast_blob(path, 1, blob, 1000); }).status(),
            gcompErrorCorruptPayload);
  std::vector<std::byte> small(16);
  gcomp::detail::file_broadcast_blob(path, 0, small, 1000);
  EXPECT_EQ(error_of([&] { gcomp::detail::file_broadcast_blob(path, 1, blob, 1000); }).status(), gcompErrorMismatch);
  std::remove(path.c_str());
}

class CommLauncherEnvTest : public testing::Test {
 protected:
  void TearDown() override {
    for (const char* name :
         {"RANK", "WORLD_SIZE", "LOCAL_RANK", "OMPI_COMM_WORLD_LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"}) {
      unsetenv(name);
    }
  }
};

TEST_F(CommLauncherEnvTest, ReadsTorchrunVariables) {
  setenv("RANK", "3", 1);
  setenv("WORLD_SIZE", "8", 1);
  setenv("LOCAL_RANK", "1", 1);
  setenv("MASTER_ADDR", kLoopback, 1);
  setenv("MASTER_PORT", "29500", 1);
  const auto env = gcomp::detail::read_launcher_env();
  EXPECT_EQ(env.rank, 3);
  EXPECT_EQ(env.world_size, 8);
  EXPECT_EQ(env.local_rank, 1);
  EXPECT_EQ(env.master_addr, kLoopback);
  EXPECT_EQ(env.master_port, 29500);
}

TEST_F(CommLauncherEnvTest, UnsetVariablesKeepDefaultsAndMpiLocalRankIsUsed) {
  TearDown();
  setenv("OMPI_COMM_WORLD_LOCAL_RANK", "2", 1);
  const auto env = gcomp::detail::read_launcher_env();
  EXPECT_EQ(env.rank, -1);
  EXPECT_EQ(env.world_size, -1);
  EXPECT_EQ(env.local_rank, 2);
  EXPECT_TRUE(env.master_addr.empty());
  EXPECT_EQ(env.master_port, -1);
}

TEST_F(CommLauncherEnvTest, MalformedVariableIsNamed) {
  setenv("WORLD_SIZE", "four", 1);
  Error e = error_of([] { static_cast<void>(gcomp::detail::read_launcher_env()); });
  EXPECT_EQ(e.status(), gcompErrorInvalidArgument);
  EXPECT_NE(std::string(e.what()).find("WORLD_SIZE"), std::string::npos) << e.what();
  setenv("WORLD_SIZE", "4", 1);
  setenv("MASTER_PORT", "70000", 1);
  e = error_of([] { static_cast<void>(gcomp::detail::read_launcher_env()); });
  EXPECT_NE(std::string(e.what()).find("MASTER_PORT"), std::string::npos) << e.what();
}

}  // namespace
