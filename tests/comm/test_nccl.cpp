// SPDX-License-Identifier: Apache-2.0
// nccl backend on real GPUs (suites start with Gpu; they skip without a CUDA device). One rank per
// device; with several devices the ranks are threads bootstrapped over TCP on 127.0.0.1.
#include "collective_checks.hpp"

#include <gcomp/comm.hpp>

#include <cuda_runtime_api.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <thread>

namespace {

using gcomp::Communicator;
using gcomp::DataType;
using gcomp::NcclBootstrap;
using gcomp::NcclOptions;
using gcomp::ReduceOp;

#define GCOMP_TEST_CUDA(call) ASSERT_EQ((call), cudaSuccess) << #call

int visible_devices(std::string* why) {
  int count = 0;
  const cudaError_t rc = cudaGetDeviceCount(&count);
  if (rc != cudaSuccess) {
    static_cast<void>(cudaGetLastError());
    *why = std::string("cudaGetDeviceCount: ") + cudaGetErrorString(rc);
    return 0;
  }
  if (count == 0) *why = "cudaGetDeviceCount returned 0";
  return count;
}

class GpuCommNcclTest : public testing::Test {
 protected:
  void SetUp() override {
    std::string why;
    devices_ = visible_devices(&why);
    if (devices_ == 0) GTEST_SKIP() << "no CUDA device: " << why;
  }
  int devices_ = 0;
};

/// Device copy of a host vector, freed on scope exit.
class DeviceBytes {
 public:
  explicit DeviceBytes(size_t bytes) : bytes_(bytes) {
    if (bytes_ > 0) {
      EXPECT_EQ(cudaMalloc(&ptr_, bytes_), cudaSuccess);
    }
  }
  DeviceBytes(const DeviceBytes&) = delete;
  DeviceBytes& operator=(const DeviceBytes&) = delete;
  ~DeviceBytes() {
    if (ptr_ != nullptr) static_cast<void>(cudaFree(ptr_));
  }
  void upload(const void* host) const {
    if (bytes_ > 0) {
      EXPECT_EQ(cudaMemcpy(ptr_, host, bytes_, cudaMemcpyHostToDevice), cudaSuccess);
    }
  }
  void download(void* host) const {
    if (bytes_ > 0) {
      EXPECT_EQ(cudaMemcpy(host, ptr_, bytes_, cudaMemcpyDeviceToHost), cudaSuccess);
    }
  }
  [[nodiscard]] void* get() const { return ptr_; }

 private:
  size_t bytes_;
  void* ptr_ = nullptr;
};

/// Every collective on a device communicator, checked against the same expectations as the CPU
/// backends (the allreduce uses integers, whose sum does not depend on NCCL's order).
void exercise(Communicator& comm, cudaStream_t stream) {
  const int num_ranks = comm.size();
  const int rank = comm.rank();
  const auto ranks = static_cast<size_t>(num_ranks);
  constexpr size_t kBytes = 4099;

  std::vector<std::byte> send(kBytes);
  for (size_t i = 0; i < kBytes; ++i) send[i] = gcomp::test::pattern_byte(rank, i);
  const DeviceBytes d_send(kBytes);
  const DeviceBytes d_recv(kBytes * ranks);
  d_send.upload(send.data());
  comm.allgather(d_send.get(), d_recv.get(), kBytes, stream);
  comm.synchronize(stream);
  std::vector<std::byte> got(kBytes * ranks);
  d_recv.download(got.data());
  std::vector<std::byte> want(kBytes * ranks);
  for (size_t j = 0; j < ranks; ++j) {
    for (size_t i = 0; i < kBytes; ++i) want[j * kBytes + i] = gcomp::test::pattern_byte(static_cast<int>(j), i);
  }
  EXPECT_TRUE(gcomp::test::bytes_equal(got, want)) << "allgather, rank " << rank;

  std::vector<std::byte> blocks(kBytes * ranks);
  for (size_t to = 0; to < ranks; ++to) {
    for (size_t i = 0; i < kBytes; ++i) blocks[to * kBytes + i] = gcomp::test::pair_byte(rank, static_cast<int>(to), i);
  }
  const DeviceBytes d_blocks(kBytes * ranks);
  d_blocks.upload(blocks.data());
  comm.alltoall(d_blocks.get(), d_recv.get(), kBytes, stream);
  comm.synchronize(stream);
  d_recv.download(got.data());
  for (size_t from = 0; from < ranks; ++from) {
    for (size_t i = 0; i < kBytes; ++i)
      want[from * kBytes + i] = gcomp::test::pair_byte(static_cast<int>(from), rank, i);
  }
  EXPECT_TRUE(gcomp::test::bytes_equal(got, want)) << "alltoall, rank " << rank;

  constexpr size_t kCount = 1000;
  std::vector<int64_t> values(kCount);
  for (size_t i = 0; i < kCount; ++i) values[i] = gcomp::test::reduce_input<int64_t>(rank, i);
  const DeviceBytes d_values(kCount * sizeof(int64_t));
  d_values.upload(values.data());
  comm.allreduce(d_values.get(), d_values.get(), kCount, DataType::kI64, ReduceOp::kSum, stream);
  comm.synchronize(stream);
  d_values.download(values.data());
  EXPECT_TRUE(gcomp::test::matches_reduce(values, num_ranks, ReduceOp::kSum)) << "rank " << rank;

  const int root = num_ranks - 1;
  std::vector<std::byte> buf(kBytes, std::byte{0xee});
  if (rank == root) buf = std::vector<std::byte>(want.begin(), want.begin() + kBytes);
  d_send.upload(buf.data());
  comm.broadcast(d_send.get(), kBytes, root, stream);
  comm.synchronize(stream);
  d_send.download(buf.data());
  EXPECT_TRUE(gcomp::test::bytes_equal(buf, std::vector<std::byte>(want.begin(), want.begin() + kBytes)))
      << "broadcast, rank " << rank;

  // Variable-length collectives: a different size per rank (and per pair), zeros included;
  // each slot starts with its message and keeps its old bytes after it.
  for (const size_t bound : {size_t{0}, size_t{1}, size_t{4099}}) {
    const size_t mine = gcomp::test::varlen_size(rank, num_ranks, bound);
    std::vector<std::byte> msg(bound, std::byte{0});
    for (size_t i = 0; i < mine; ++i) msg[i] = gcomp::test::pattern_byte(rank, i);
    const DeviceBytes d_msg(bound);
    const DeviceBytes d_slots(bound * ranks);
    std::vector<std::byte> slots(bound * ranks, std::byte{0xee});
    d_msg.upload(msg.data());
    d_slots.upload(slots.data());
    std::vector<size_t> sizes(ranks, 99);
    comm.allgatherv(d_msg.get(), mine, d_slots.get(), bound, sizes.data(), stream);
    comm.synchronize(stream);
    d_slots.download(slots.data());
    std::vector<std::byte> expect(bound * ranks, std::byte{0xee});
    for (size_t j = 0; j < ranks; ++j) {
      const size_t n = gcomp::test::varlen_size(static_cast<int>(j), num_ranks, bound);
      EXPECT_EQ(sizes[j], n) << "allgatherv size of rank " << j;
      for (size_t i = 0; i < n; ++i) expect[j * bound + i] = gcomp::test::pattern_byte(static_cast<int>(j), i);
    }
    EXPECT_TRUE(gcomp::test::bytes_equal(slots, expect)) << "allgatherv, rank " << rank << ", bound " << bound;

    std::vector<std::byte> out(bound * ranks, std::byte{0x5a});
    std::vector<size_t> out_sizes(ranks);
    for (size_t to = 0; to < ranks; ++to) {
      out_sizes[to] = gcomp::test::pair_size(rank, static_cast<int>(to), bound);
      for (size_t i = 0; i < out_sizes[to]; ++i)
        out[to * bound + i] = gcomp::test::pair_byte(rank, static_cast<int>(to), i);
    }
    const DeviceBytes d_out(bound * ranks);
    d_out.upload(out.data());
    std::fill(slots.begin(), slots.end(), std::byte{0xee});
    d_slots.upload(slots.data());
    comm.alltoallv(d_out.get(), out_sizes.data(), d_slots.get(), bound, sizes.data(), stream);
    comm.synchronize(stream);
    d_slots.download(slots.data());
    std::fill(expect.begin(), expect.end(), std::byte{0xee});
    for (size_t from = 0; from < ranks; ++from) {
      const size_t n = gcomp::test::pair_size(static_cast<int>(from), rank, bound);
      EXPECT_EQ(sizes[from], n) << "alltoallv size from rank " << from;
      for (size_t i = 0; i < n; ++i) expect[from * bound + i] = gcomp::test::pair_byte(static_cast<int>(from), rank, i);
    }
    EXPECT_TRUE(gcomp::test::bytes_equal(slots, expect)) << "alltoallv, rank " << rank << ", bound " << bound;
  }
  // A message above the bound fails every rank before any data moves; the communicator stays usable.
  {
    const DeviceBytes d_msg(32);
    const DeviceBytes d_slots(16 * ranks);
    std::vector<size_t> sizes(ranks);
    const gcomp::Error e = gcomp::test::error_of(
        [&] { comm.allgatherv(d_msg.get(), rank == 0 ? 20 : 4, d_slots.get(), 16, sizes.data(), stream); });
    EXPECT_EQ(e.status(), gcompErrorInvalidArgument) << e.what();
    EXPECT_FALSE(comm.is_aborted());
  }

  comm.barrier();
  gcomp::check_agreement(comm, "config", "codec=identity;format=1");
}

TEST_F(GpuCommNcclTest, SingleRankCollectivesWithFileBootstrap) {
  ASSERT_TRUE(gcomp::nccl_available());
  NcclOptions options;
  options.bootstrap = NcclBootstrap::kFile;
  options.rank = 0;
  options.world_size = 1;
  options.device = 0;
  options.timeout_ms = 60000;
  options.id_file = testing::TempDir() + "gcomp_nccl_id_" + std::to_string(::getpid());
  auto comm = gcomp::make_nccl_communicator(options);
  std::remove(options.id_file.c_str());
  EXPECT_STREQ(comm->backend(), "nccl");
  EXPECT_EQ(comm->memory_space(), gcomp::MemorySpace::kDevice);
  cudaStream_t stream = nullptr;
  GCOMP_TEST_CUDA(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
  exercise(*comm, stream);
  GCOMP_TEST_CUDA(cudaStreamDestroy(stream));
}

TEST_F(GpuCommNcclTest, OneRankPerDeviceWithTcpBootstrap) {
  if (devices_ < 2) GTEST_SKIP() << "needs 2 CUDA devices, found " << devices_;
  const int num_ranks = std::min(devices_, 4);
  int port = 0;
  {
    const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof(addr);
    ASSERT_EQ(::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
    ASSERT_EQ(::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len), 0);
    ::close(fd);
    port = ntohs(addr.sin_port);
  }
  std::vector<std::thread> threads;
  for (int r = 0; r < num_ranks; ++r) {
    threads.emplace_back([&, r] {
      try {
        NcclOptions options;
        options.bootstrap = NcclBootstrap::kTcp;
        options.rank = r;
        options.world_size = num_ranks;
        options.device = r;
        options.master_addr = "127.0.0.1";
        options.master_port = port;
        options.timeout_ms = 60000;
        auto comm = gcomp::make_nccl_communicator(options);
        ASSERT_EQ(cudaSetDevice(r), cudaSuccess);
        cudaStream_t stream = nullptr;
        ASSERT_EQ(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking), cudaSuccess);
        exercise(*comm, stream);
        static_cast<void>(cudaStreamDestroy(stream));
      } catch (const std::exception& e) {
        ADD_FAILURE() << "rank " << r << ": " << e.what();
      }
    });
  }
  for (auto& t : threads) t.join();
}

}  // namespace
