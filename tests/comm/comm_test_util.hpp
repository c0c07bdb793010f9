// SPDX-License-Identifier: Apache-2.0
/// @file comm_test_util.hpp
/// @brief Independent expectations for communicator tests: per-rank test data and a sequential
/// rank-order reduction written from the contract in comm.hpp, not from the backends' code.
#pragma once

#include <gcomp/comm.hpp>

#include <gtest/gtest.h>

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>
#include <type_traits>
#include <vector>

namespace gcomp::test {

/// Byte i of rank r's contribution (distinct per rank and position).
inline std::byte pattern_byte(int rank, size_t i) {
  return static_cast<std::byte>((static_cast<size_t>(rank) * 131u + i * 7u + (i >> 8)) & 0xffu);
}

/// Byte i of the block that rank `from` sends to rank `to` in an alltoall.
inline std::byte pair_byte(int from, int to, size_t i) {
  return static_cast<std::byte>((static_cast<size_t>(from) * 37u + static_cast<size_t>(to) * 11u + i * 3u + 1u) &
                                0xffu);
}

/// Element i of rank r's allreduce input, with magnitudes that make float sums order-sensitive.
template <class T>
T reduce_input(int rank, size_t i) {
  const uint64_t h = (static_cast<uint64_t>(rank) + 1u) * 0x9e3779b97f4a7c15ULL ^
                     (static_cast<uint64_t>(i) + 7u) * 0xbf58476d1ce4e5b9ULL;
  const uint64_t mixed = (h ^ (h >> 29)) * 0x94d049bb133111ebULL;
  if constexpr (std::is_floating_point_v<T>) {
    static const T kScales[] = {T(1e-3), T(1), T(3e3), T(1e8)};
    const T unit = static_cast<T>(static_cast<double>(mixed >> 11) / 9007199254740992.0);  // [0,1)
    const T sign = (mixed & 1u) != 0u ? T(-1) : T(1);
    return sign * unit * kScales[(mixed >> 1) & 3u];
  } else if constexpr (std::is_signed_v<T>) {
    return static_cast<T>(static_cast<std::make_unsigned_t<T>>(mixed));
  } else {
    return static_cast<T>(mixed);
  }
}

/// Sequential fold over ranks 0..P-1, as documented for local and mpi.
template <class T>
T expected_reduce(int num_ranks, size_t i, ReduceOp op) {
  T acc = reduce_input<T>(0, i);
  for (int r = 1; r < num_ranks; ++r) {
    const T v = reduce_input<T>(r, i);
    if (op == ReduceOp::kMax) {
      acc = v > acc ? v : acc;
    } else if constexpr (std::is_floating_point_v<T>) {
      acc = acc + v;
    } else {
      using U = std::make_unsigned_t<T>;
      acc = static_cast<T>(static_cast<U>(static_cast<U>(acc) + static_cast<U>(v)));
    }
  }
  return acc;
}

/// Bitwise comparison of a typed result against expected_reduce; reports the first mismatch.
template <class T>
testing::AssertionResult matches_reduce(const std::vector<T>& got, int num_ranks, ReduceOp op) {
  for (size_t i = 0; i < got.size(); ++i) {
    const T want = expected_reduce<T>(num_ranks, i, op);
    if (std::memcmp(&got[i], &want, sizeof(T)) != 0) {
      return testing::AssertionFailure() << "element " << i << " of " << got.size() << ": got " << got[i]
                                         << ", expected " << want << " (P=" << num_ranks << ", " << reduce_op_name(op)
                                         << ")";
    }
  }
  return testing::AssertionSuccess();
}

/// First differing byte of two buffers, for diagnosable failures.
inline testing::AssertionResult bytes_equal(const std::vector<std::byte>& got, const std::vector<std::byte>& want) {
  if (got.size() != want.size()) {
    return testing::AssertionFailure() << "size " << got.size() << " vs " << want.size();
  }
  for (size_t i = 0; i < got.size(); ++i) {
    if (got[i] != want[i]) {
      return testing::AssertionFailure() << "byte " << i << " of " << got.size() << ": got "
                                         << std::to_integer<int>(got[i]) << ", expected "
                                         << std::to_integer<int>(want[i]);
    }
  }
  return testing::AssertionSuccess();
}

}  // namespace gcomp::test
