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
    for (size_t i = 0; i < bytes; ++i)
      want[static_cast<size_t>(j) * bytes + i] = pattern_byte(j, i);
  }
  EXPECT_TRUE(bytes_equal(recv, want))
      << "allgather on rank " << rank << " of " << num_ranks << ", " << bytes << " bytes per rank"
      << (in_place ? ", in place" : "");
}

inline void check_alltoall(Communicator& comm, size_t bytes, bool in_place) {
  const int num_ranks = comm.size();
  const int rank = comm.rank();
  const auto ranks = static_cast<size_t>(num_ranks);
  std::vector<std::byte> send(ranks * bytes);
  for (int to = 0; to < num_ranks; ++to) {
    for (size_t i = 0; i < bytes; ++i)
      send[static_cast<size_t>(to) * bytes + i] = pair_byte(rank, to, i);
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
    for (size_t i = 0; i < bytes; ++i)
      want[static_cast<size_t>(from) * bytes + i] = pair_byte(from, rank, i);
  }
  EXPECT_TRUE(bytes_equal(recv, want))
      << "alltoall on rank " << rank << " of " << num_ranks << ", " << bytes << " bytes per peer"
      << (in_place ? ", in place" : "");
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
      << "allreduce " << data_type_name(type) << " on rank " << comm.rank()
      << (in_place ? ", in place" : "");
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
  EXPECT_TRUE(bytes_equal(buf, want))
      << "broadcast from root " << root << " on rank " << comm.rank() << ", " << bytes << " bytes";
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
