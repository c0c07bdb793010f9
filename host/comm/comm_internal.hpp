// SPDX-License-Identifier: Apache-2.0
/// @file comm_internal.hpp
/// @brief Helpers shared by the communicator backends: collective descriptors and their
/// cross-rank validation, rank-order reduction, deadlines and polling back-off.
#pragma once

#include <gcomp/comm.hpp>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace gcomp::detail {

/// Kind of a collective, as recorded in a CollectiveDesc.
enum class CollectiveKind : int32_t {
  kAllgather = 1,
  kAlltoall = 2,
  kAllreduce = 3,
  kBroadcast = 4,
  kBarrier = 5,
  kAllgatherv = 6,
  kAlltoallv = 7,
};

/// What one rank asked for in one collective. Fixed layout: the mpi backend exchanges it as bytes
/// (all ranks run the same build, so no byte-order conversion).
struct CollectiveDesc {
  int32_t kind = 0;       ///< CollectiveKind
  int32_t type = -1;      ///< DataType (allreduce) or -1
  int32_t op = -1;        ///< ReduceOp (allreduce) or -1
  int32_t root = -1;      ///< broadcast root or -1
  uint64_t seq = 0;       ///< per-communicator sequence number, starting at 0
  uint64_t bytes = 0;     ///< bytes per rank/peer (allgather, alltoall, broadcast), the bound (allgatherv,
                          ///< alltoallv) or count (allreduce)
  uint64_t max_send = 0;  ///< allgatherv: this rank's message size; alltoallv: its largest message
};
static_assert(sizeof(CollectiveDesc) == 40, "CollectiveDesc is exchanged as 40 bytes");

/// Name of a collective kind ("allgather", ...).
[[nodiscard]] const char* collective_name(int32_t kind) noexcept;

/// "allgather #7 (64 bytes per rank)" and similar.
[[nodiscard]] std::string describe(const CollectiveDesc& desc);

/// Compares the descriptors of all ranks. Returns "" when they all equal descs[0], else a message
/// that is identical on every rank: which ranks differ and what each asked for.
[[nodiscard]] std::string check_descs(const CollectiveDesc* descs, int num_ranks);

/// For allgatherv/alltoallv descriptors that passed check_descs (same bound everywhere): "" when
/// no rank's max_send exceeds the bound, else a message, identical on every rank, naming the ranks
/// and their sizes.
[[nodiscard]] std::string check_message_bounds(const CollectiveDesc* descs, int num_ranks);

/// mpi backend only (tests): the largest packed message total that allgatherv/alltoallv hand to
/// MPI_Iallgatherv/MPI_Ialltoallv (default INT_MAX, their int counts); above it they send one
/// point-to-point message per pair. Lowering it runs that form on small buffers.
/// @throws gcomp::Error(gcompErrorInvalidArgument) when @p comm is not an mpi communicator.
void mpi_set_count_limit(Communicator& comm, size_t limit);

/// "0,2,5" for a list of ranks.
[[nodiscard]] std::string join_ranks(const std::vector<int>& ranks);

/// out[i] = op(...op(inputs[0][i], inputs[1][i])..., inputs[n-1][i]) for i < count. @p out may
/// equal an input pointer exactly (element-wise: every input is read before out[i] is written),
/// but must not partially overlap one.
void reduce_rank_order(const void* const* inputs, int num_inputs, void* out, size_t count, DataType type, ReduceOp op);

/// True when [a, a + a_bytes) and [b, b + b_bytes) share a byte.
[[nodiscard]] bool ranges_overlap(const void* a, size_t a_bytes, const void* b, size_t b_bytes) noexcept;

/// a * b, throwing gcompErrorInvalidArgument naming @p what on size_t overflow.
[[nodiscard]] size_t checked_mul(size_t a, size_t b, const char* what);

/// Point in time after which a wait gives up.
class Deadline {
 public:
  using Clock = std::chrono::steady_clock;
  explicit Deadline(int64_t timeout_ms) : when_(Clock::now() + std::chrono::milliseconds(timeout_ms)) {}
  [[nodiscard]] bool expired() const { return Clock::now() >= when_; }
  [[nodiscard]] Clock::time_point when() const { return when_; }

 private:
  Clock::time_point when_;
};

/// How often a blocking wait calls the WaitInterruptCheck (set_wait_interrupt_check).
inline constexpr std::chrono::milliseconds kInterruptPoll{50};

/// True when a WaitInterruptCheck is installed.
[[nodiscard]] bool interrupt_check_installed() noexcept;
/// Calls the installed WaitInterruptCheck (false when none): true means stop waiting.
[[nodiscard]] bool wait_interrupted();

/// Polling back-off: yields for the first polls, then sleeps with a growing period (up to 1 ms),
/// so that oversubscribed ranks leave the CPU to the peers they wait for.
class Backoff {
 public:
  void pause();

 private:
  int polls_ = 0;
};

}  // namespace gcomp::detail
