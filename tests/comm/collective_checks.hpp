// SPDX-License-Identifier: Apache-2.0
/// @file collective_checks.hpp
/// @brief Per-rank checks of each collective against independently computed expectations; shared
/// by the local (threads) and mpi (processes) suites. Every rank calls the same check.
#pragma once

#include "comm_test_util.hpp"

#include <algorithm>

namespace gcomp::test {

inline void check_allgather(Communicator& comm, size_t bytes, bool in_place) {
  const int num_ranks = comm.size();
  const int rank = comm.rank();
  const auto ranks = static_cast<size_t>(num_ranks);
  std::vector<std::byte> send(bytes);
  for (size_t i = 0; i < bytes; ++i) send[i] = pattern_byte(rank, i);
  std::vector<std::byte> recv(ranks * bytes, std::byte{0xee});
  if (in_place) {
    std::copy(send.begin(), send.end(), recv.begin() + static_cast<std::ptrdiff_t>(rank * bytes));
    comm.allgather(recv.data() + static_cast<size_t>(rank) * bytes, recv.data(), bytes, nullptr);
  } else {
    comm.allgather(send.data(), recv.data(), bytes, nullptr);
  }
  std::vector<std::byte> want(ranks * bytes);
  for (int j = 0; j < num_ranks; ++j) {
    for (size_t i = 0; i < bytes; ++i) want[static_cast<size_t>(j) * bytes + i] = pattern_byte(j, i);
  }
  EXPECT_TRUE(bytes_equal(recv, want)) << "allgather on rank " << rank << " of " << num_ranks << ", " << bytes
                                       << " bytes per rank" << (in_place ? ", in place" : "");
}

inline void check_alltoall(Communicator& comm, size_t bytes, bool in_place) {
  const int num_ranks = comm.size();
  const int rank = comm.rank();
  const auto ranks = static_cast<size_t>(num_ranks);
  std::vector<std::byte> send(ranks * bytes);
  for (int to = 0; to < num_ranks; ++to) {
    for (size_t i = 0; i < bytes; ++i) send[static_cast<size_t>(to) * bytes + i] = pair_byte(rank, to, i);
  }
  std::vector<std::byte> recv(ranks * bytes, std::byte{0xee});
  if (in_place) {
    recv = send;
    comm.alltoall(recv.data(), recv.data(), bytes, nullptr);
  } else {
    comm.alltoall(send.data(), recv.data(), bytes, nullptr);
  }
  std::vector<std::byte> want(ranks * bytes);
  for (int from = 0; from < num_ranks; ++from) {
    for (size_t i = 0; i < bytes; ++i) want[static_cast<size_t>(from) * bytes + i] = pair_byte(from, rank, i);
  }
  EXPECT_TRUE(bytes_equal(recv, want)) << "alltoall on rank " << rank << " of " << num_ranks << ", " << bytes
                                       << " bytes per peer" << (in_place ? ", in place" : "");
}

/// Size of rank r's allgatherv message for a bound: differs per rank, 0 and the bound included.
inline size_t varlen_size(int rank, int num_ranks, size_t bound) {
  if (bound == 0) return 0;
  if (rank == num_ranks - 1 && num_ranks > 1) return bound;  // one message exactly at the bound
  return (static_cast<size_t>(rank) * 7919u + bound / 3) % (bound + 1);
}

/// Size of the alltoallv message from `from` to `to`.
inline size_t pair_size(int from, int to, size_t bound) {
  if (bound == 0) return 0;
  return (static_cast<size_t>(from) * 131u + static_cast<size_t>(to) * 17u + bound / 2) % (bound + 1);
}

/// Compares only the message bytes of each slot (`sizes[j]` bytes of slot j).
inline testing::AssertionResult messages_equal(const std::vector<std::byte>& got, const std::vector<std::byte>& want,
                                               size_t bound, const std::vector<size_t>& sizes) {
  for (size_t j = 0; j < sizes.size(); ++j) {
    for (size_t i = 0; i < sizes[j]; ++i) {
      if (got[j * bound + i] != want[j * bound + i]) {
        return testing::AssertionFailure()
               << "slot " << j << " byte " << i << ": got " << std::to_integer<int>(got[j * bound + i]) << ", expected "
               << std::to_integer<int>(want[j * bound + i]);
      }
    }
  }
  return testing::AssertionSuccess();
}

/// allgatherv with a different message size per rank: each slot starts with its rank's message,
/// recv_bytes names every size, and (gcomp backends, `untouched_tails`) the rest of each slot
/// keeps its old bytes.
inline void check_allgatherv(Communicator& comm, size_t bound, bool in_place, bool untouched_tails = true) {
  const int num_ranks = comm.size();
  const int rank = comm.rank();
  const auto ranks = static_cast<size_t>(num_ranks);
  const size_t mine = varlen_size(rank, num_ranks, bound);
  std::vector<std::byte> send(mine);
  for (size_t i = 0; i < mine; ++i) send[i] = pattern_byte(rank, i);
  std::vector<std::byte> recv(ranks * bound, std::byte{0xee});
  std::vector<size_t> sizes(ranks, size_t{12345});
  if (in_place) {
    std::copy(send.begin(), send.end(), recv.begin() + static_cast<std::ptrdiff_t>(rank * bound));
    comm.allgatherv(recv.data() + static_cast<size_t>(rank) * bound, mine, recv.data(), bound, sizes.data(), nullptr);
  } else {
    comm.allgatherv(send.data(), mine, recv.data(), bound, sizes.data(), nullptr);
  }
  std::vector<std::byte> want(ranks * bound, std::byte{0xee});
  for (int j = 0; j < num_ranks; ++j) {
    const size_t n = varlen_size(j, num_ranks, bound);
    EXPECT_EQ(sizes[static_cast<size_t>(j)], n) << "allgatherv size of rank " << j << " on rank " << rank;
    for (size_t i = 0; i < n; ++i) want[static_cast<size_t>(j) * bound + i] = pattern_byte(j, i);
  }
  EXPECT_TRUE(untouched_tails ? bytes_equal(recv, want) : messages_equal(recv, want, bound, sizes))
      << "allgatherv on rank " << rank << " of " << num_ranks << ", bound " << bound << (in_place ? ", in place" : "");
}

/// alltoallv with a different size for every pair (zeros included).
inline void check_alltoallv(Communicator& comm, size_t bound, bool in_place, bool untouched_tails = true) {
  const int num_ranks = comm.size();
  const int rank = comm.rank();
  const auto ranks = static_cast<size_t>(num_ranks);
  std::vector<std::byte> send(ranks * bound, std::byte{0x5a});
  std::vector<size_t> send_sizes(ranks);
  for (int to = 0; to < num_ranks; ++to) {
    send_sizes[static_cast<size_t>(to)] = pair_size(rank, to, bound);
    for (size_t i = 0; i < send_sizes[static_cast<size_t>(to)]; ++i)
      send[static_cast<size_t>(to) * bound + i] = pair_byte(rank, to, i);
  }
  std::vector<std::byte> recv(ranks * bound, std::byte{0xee});
  std::vector<size_t> sizes(ranks, size_t{12345});
  std::vector<std::byte> want(ranks * bound, std::byte{0xee});
  if (in_place) {
    recv = send;
    want = send;
    sizes = send_sizes;  // send_bytes aliasing recv_bytes is allowed
    comm.alltoallv(recv.data(), sizes.data(), recv.data(), bound, sizes.data(), nullptr);
  } else {
    comm.alltoallv(send.data(), send_sizes.data(), recv.data(), bound, sizes.data(), nullptr);
  }
  for (int from = 0; from < num_ranks; ++from) {
    const size_t n = pair_size(from, rank, bound);
    EXPECT_EQ(sizes[static_cast<size_t>(from)], n) << "alltoallv size from rank " << from << " on rank " << rank;
    for (size_t i = 0; i < n; ++i) want[static_cast<size_t>(from) * bound + i] = pair_byte(from, rank, i);
  }
  EXPECT_TRUE(untouched_tails ? bytes_equal(recv, want) : messages_equal(recv, want, bound, sizes))
      << "alltoallv on rank " << rank << " of " << num_ranks << ", bound " << bound << (in_place ? ", in place" : "");
}

template <class T>
void check_allreduce(Communicator& comm, DataType type, size_t count, ReduceOp op, bool in_place) {
  std::vector<T> send(count);
  for (size_t i = 0; i < count; ++i) send[i] = reduce_input<T>(comm.rank(), i);
  std::vector<T> recv(count, T(0));
  if (in_place) {
    recv = send;
    comm.allreduce(recv.data(), recv.data(), count, type, op, nullptr);
  } else {
    comm.allreduce(send.data(), recv.data(), count, type, op, nullptr);
  }
  EXPECT_TRUE(matches_reduce(recv, comm.size(), op))
      << "allreduce " << data_type_name(type) << " on rank " << comm.rank() << (in_place ? ", in place" : "");
}

inline void check_allreduce_all_types(Communicator& comm, size_t count, bool in_place) {
  for (const ReduceOp op : {ReduceOp::kSum, ReduceOp::kMax}) {
    check_allreduce<float>(comm, DataType::kF32, count, op, in_place);
    check_allreduce<double>(comm, DataType::kF64, count, op, in_place);
    check_allreduce<int32_t>(comm, DataType::kI32, count, op, in_place);
    check_allreduce<int64_t>(comm, DataType::kI64, count, op, in_place);
    check_allreduce<uint64_t>(comm, DataType::kU64, count, op, in_place);
  }
}

inline void check_broadcast(Communicator& comm, size_t bytes, int root) {
  std::vector<std::byte> buf(bytes, std::byte{0xee});
  if (comm.rank() == root) {
    for (size_t i = 0; i < bytes; ++i) buf[i] = pattern_byte(root, i);
  }
  comm.broadcast(buf.data(), bytes, root, nullptr);
  std::vector<std::byte> want(bytes);
  for (size_t i = 0; i < bytes; ++i) want[i] = pattern_byte(root, i);
  EXPECT_TRUE(bytes_equal(buf, want)) << "broadcast from root " << root << " on rank " << comm.rank() << ", " << bytes
                                      << " bytes";
}

/// Runs fn and returns the gcomp::Error it throws; a failure if it throws nothing or another type.
template <class Fn>
Error error_of(Fn&& fn) {
  try {
    fn();
  } catch (const Error& e) {
    return e;
  } catch (const std::exception& e) {
    ADD_FAILURE() << "expected gcomp::Error, got std::exception: " << e.what();
    return Error(gcompErrorInternal, e.what());
  }
  ADD_FAILURE() << "expected gcomp::Error, nothing was thrown";
  return Error(gcompSuccess, "");
}

}  // namespace gcomp::test
