// SPDX-License-Identifier: Apache-2.0
// mpi backend: one rank per MPI process, host buffers.
//
// Every collective first allgathers a 32-byte descriptor (kind, sequence number, sizes, type,
// operator, root), so that mismatched calls fail on every rank with the same message instead of
// corrupting memory, and then moves the data. Both steps are non-blocking MPI calls polled with
// MPI_Test against the timeout. Data goes through buffers owned by the communicator: when a
// collective times out its request cannot be cancelled, so those buffers (not the caller's) are
// what MPI may still touch, and they are deliberately never freed.
#include "host/comm/comm_internal.hpp"

#include <mpi.h>

#include <algorithm>
#include <atomic>
#include <climits>
#include <cstdlib>
#include <cstring>
#include <mutex>

namespace gcomp {
namespace {

using detail::CollectiveDesc;
using detail::CollectiveKind;

[[noreturn]] void throw_mpi(int code, const char* call, const char* file, int line) {
  char text[MPI_MAX_ERROR_STRING] = {};
  int length = 0;
  if (MPI_Error_string(code, text, &length) != MPI_SUCCESS) length = 0;
  detail::throw_error(gcompErrorMpi, file, line,
                      std::string(call) + " failed: " + std::string(text, static_cast<size_t>(length)));
}

/// Throws gcomp::Error(gcompErrorMpi) naming the call and MPI's error string.
#define GCOMP_MPI_TRY(call)                                                                \
  do {                                                                                     \
    const int gcomp_mpi_rc_ = (call);                                                      \
    if (gcomp_mpi_rc_ != MPI_SUCCESS) throw_mpi(gcomp_mpi_rc_, #call, __FILE__, __LINE__); \
  } while (0)

/// Set when a collective was abandoned (timeout, failed call): its request can never complete, and
/// MPI_Finalize would wait for it forever.
std::atomic<bool> g_abandoned_request{false};

void finalize_owned_mpi() {
  int finalized = 0;
  MPI_Finalized(&finalized);
  // With an abandoned request the process exits without MPI_Finalize: the launcher sees a rank end
  // without finalizing and ends the job, instead of every rank hanging in MPI_Finalize.
  if (!finalized && !g_abandoned_request.load()) MPI_Finalize();
}

void ensure_mpi_initialized() {
  static std::mutex mutex;
  const std::lock_guard lock(mutex);
  int finalized = 0;
  GCOMP_MPI_TRY(MPI_Finalized(&finalized));
  GCOMP_EXPECTS(!finalized, gcompErrorNotSupported, "make_mpi_world: MPI has already been finalized in this process");
  int initialized = 0;
  GCOMP_MPI_TRY(MPI_Initialized(&initialized));
  if (initialized) return;
  int provided = 0;
  GCOMP_MPI_TRY(MPI_Init_thread(nullptr, nullptr, MPI_THREAD_SERIALIZED, &provided));
  GCOMP_EXPECTS(std::atexit(finalize_owned_mpi) == 0, gcompErrorInternal,
                "make_mpi_world: cannot register MPI_Finalize at exit");
}

/// `bytes` contiguous bytes as (count, datatype) with an int count: MPI_BYTE up to INT_MAX bytes,
/// a derived type of extent `bytes` (count 1) above.
class ByteType {
 public:
  explicit ByteType(size_t bytes) {
    if (bytes <= static_cast<size_t>(INT_MAX)) {
      count_ = static_cast<int>(bytes);
      return;
    }
    constexpr size_t kChunk = size_t{1} << 30;
    const size_t chunks = bytes / kChunk;
    const size_t rest = bytes % kChunk;
    GCOMP_EXPECTS(chunks <= static_cast<size_t>(INT_MAX), gcompErrorInvalidArgument,
                  "mpi backend: " + std::to_string(bytes) + " bytes per block is too large");
    MPI_Datatype chunk = MPI_DATATYPE_NULL;
    MPI_Datatype body = MPI_DATATYPE_NULL;
    GCOMP_MPI_TRY(MPI_Type_contiguous(static_cast<int>(kChunk), MPI_BYTE, &chunk));
    GCOMP_MPI_TRY(MPI_Type_contiguous(static_cast<int>(chunks), chunk, &body));
    int lengths[2] = {1, static_cast<int>(rest)};
    MPI_Aint displacements[2] = {0, static_cast<MPI_Aint>(chunks * kChunk)};
    MPI_Datatype types[2] = {body, MPI_BYTE};
    GCOMP_MPI_TRY(MPI_Type_create_struct(rest > 0 ? 2 : 1, lengths, displacements, types, &type_));
    GCOMP_MPI_TRY(MPI_Type_commit(&type_));
    MPI_Type_free(&chunk);
    MPI_Type_free(&body);
    owned_ = true;
    count_ = 1;
  }
  ByteType(const ByteType&) = delete;
  ByteType& operator=(const ByteType&) = delete;
  ~ByteType() {
    if (owned_) MPI_Type_free(&type_);
  }
  [[nodiscard]] int count() const { return count_; }
  [[nodiscard]] MPI_Datatype type() const { return type_; }

 private:
  int count_ = 0;
  MPI_Datatype type_ = MPI_BYTE;
  bool owned_ = false;
};

/// Everything an in-flight MPI request may write to or read from.
struct MpiState {
  MPI_Comm comm = MPI_COMM_NULL;
  CollectiveDesc header;
  std::vector<CollectiveDesc> headers;
  std::vector<std::byte> send;
  std::vector<std::byte> recv;
  // Variable-length collectives: message sizes, and the int counts and displacements of
  // MPI_Iallgatherv / MPI_Ialltoallv (or the requests of the point-to-point form).
  std::vector<uint64_t> sizes_out;
  std::vector<uint64_t> sizes_in;
  std::vector<int> send_counts;
  std::vector<int> send_displs;
  std::vector<int> recv_counts;
  std::vector<int> recv_displs;
  std::vector<MPI_Request> requests;
};

/// Exclusive prefix sums of @p sizes (the packed offsets of the messages), and their total.
size_t pack_offsets(const std::vector<uint64_t>& sizes, std::vector<size_t>& offsets) {
  offsets.resize(sizes.size());
  size_t total = 0;
  for (size_t j = 0; j < sizes.size(); ++j) {
    offsets[j] = total;
    total += static_cast<size_t>(sizes[j]);
  }
  return total;
}

class MpiCommunicator final : public Communicator {
 public:
  explicit MpiCommunicator(int64_t timeout_ms) : timeout_ms_(timeout_ms), state_(std::make_unique<MpiState>()) {
    GCOMP_MPI_TRY(MPI_Comm_rank(MPI_COMM_WORLD, &rank_));
    GCOMP_MPI_TRY(MPI_Comm_size(MPI_COMM_WORLD, &size_));
    MPI_Request request = MPI_REQUEST_NULL;
    GCOMP_MPI_TRY(MPI_Comm_idup(MPI_COMM_WORLD, &state_->comm, &request));
    try {
      wait(&request, nullptr, "MPI_Comm_idup(MPI_COMM_WORLD)");
    } catch (...) {
      // The pending idup still writes the new handle into the state: never free it.
      static_cast<void>(state_.release());
      throw;
    }
    GCOMP_MPI_TRY(MPI_Comm_set_errhandler(state_->comm, MPI_ERRORS_RETURN));
    GCOMP_MPI_TRY(MPI_Comm_rank(state_->comm, &rank_));
    GCOMP_MPI_TRY(MPI_Comm_size(state_->comm, &size_));
    state_->headers.resize(static_cast<size_t>(size_));
    inputs_.resize(static_cast<size_t>(size_));
  }

  ~MpiCommunicator() override {
    if (request_pending_) {
      // An abandoned request may still write into the state when the missing ranks show up.
      static_cast<void>(state_.release());
      return;
    }
    int finalized = 0;
    MPI_Finalized(&finalized);
    if (!finalized && state_->comm != MPI_COMM_NULL) MPI_Comm_free(&state_->comm);
  }

  int rank() const override { return rank_; }
  int size() const override { return size_; }
  const char* backend() const override { return "mpi"; }
  MemorySpace memory_space() const override { return MemorySpace::kHost; }

  void allgather(const void* send, void* recv, size_t bytes_per_rank, Stream) override {
    const size_t total = detail::checked_mul(bytes_per_rank, ranks(), "allgather");
    check_buffer(send, bytes_per_rank, "allgather send");
    check_buffer(recv, total, "allgather recv");
    const CollectiveDesc desc = next_desc(CollectiveKind::kAllgather, bytes_per_rank);
    exchange_headers(desc);
    if (bytes_per_rank == 0) return;
    MpiState& s = *state_;
    stage(s.send, send, bytes_per_rank);
    s.recv.resize(total);
    const ByteType block(bytes_per_rank);
    MPI_Request request = MPI_REQUEST_NULL;
    call(MPI_Iallgather(s.send.data(), block.count(), block.type(), s.recv.data(), block.count(), block.type(), s.comm,
                        &request),
         "MPI_Iallgather");
    wait(&request, &desc, "data exchange");
    if (total > 0) std::memcpy(recv, s.recv.data(), total);
  }

  void alltoall(const void* send, void* recv, size_t bytes_per_peer, Stream) override {
    const size_t total = detail::checked_mul(bytes_per_peer, ranks(), "alltoall");
    check_buffer(send, total, "alltoall send");
    check_buffer(recv, total, "alltoall recv");
    const CollectiveDesc desc = next_desc(CollectiveKind::kAlltoall, bytes_per_peer);
    exchange_headers(desc);
    if (bytes_per_peer == 0) return;
    MpiState& s = *state_;
    stage(s.send, send, total);
    s.recv.resize(total);
    const ByteType block(bytes_per_peer);
    MPI_Request request = MPI_REQUEST_NULL;
    call(MPI_Ialltoall(s.send.data(), block.count(), block.type(), s.recv.data(), block.count(), block.type(), s.comm,
                       &request),
         "MPI_Ialltoall");
    wait(&request, &desc, "data exchange");
    if (total > 0) std::memcpy(recv, s.recv.data(), total);
  }

  void allgatherv(const void* send, size_t send_bytes, void* recv, size_t max_bytes_per_rank, size_t* recv_bytes,
                  Stream) override {
    const size_t total = detail::checked_mul(max_bytes_per_rank, ranks(), "allgatherv");
    check_buffer(send, send_bytes, "allgatherv send");
    check_buffer(recv, total, "allgatherv recv");
    check_buffer(recv_bytes, ranks(), "allgatherv recv_bytes");
    CollectiveDesc desc = next_desc(CollectiveKind::kAllgatherv, max_bytes_per_rank);
    desc.max_send = send_bytes;
    exchange_headers(desc);  // the sizes travel in the descriptors and are checked there
    MpiState& s = *state_;
    s.sizes_in.resize(ranks());
    for (size_t j = 0; j < ranks(); ++j) s.sizes_in[j] = s.headers[j].max_send;
    std::vector<size_t> offsets;
    const size_t packed = pack_offsets(s.sizes_in, offsets);
    if (packed > 0) {
      stage(s.send, send, send_bytes);
      s.recv.resize(packed);
      if (fits_int(packed)) {
        s.recv_counts.resize(ranks());
        s.recv_displs.resize(ranks());
        for (size_t j = 0; j < ranks(); ++j) {
          s.recv_counts[j] = static_cast<int>(s.sizes_in[j]);
          s.recv_displs[j] = static_cast<int>(offsets[j]);
        }
        MPI_Request request = MPI_REQUEST_NULL;
        call(MPI_Iallgatherv(s.send.data(), static_cast<int>(send_bytes), MPI_BYTE, s.recv.data(), s.recv_counts.data(),
                             s.recv_displs.data(), MPI_BYTE, s.comm, &request),
             "MPI_Iallgatherv");
        wait(&request, &desc, "data exchange");
      } else {
        // Above INT_MAX bytes: one message per pair, each as a (count, datatype) of any size.
        s.requests.assign(2 * ranks(), MPI_REQUEST_NULL);
        for (size_t j = 0; j < ranks(); ++j) {
          post_send(s.send.data(), send_bytes, static_cast<int>(j), &s.requests[2 * j]);
          post_recv(s.recv.data() + offsets[j], static_cast<size_t>(s.sizes_in[j]), static_cast<int>(j),
                    &s.requests[2 * j + 1]);
        }
        wait_all(s.requests, &desc);
      }
    }
    auto* out = static_cast<std::byte*>(recv);
    for (size_t j = 0; j < ranks(); ++j) {
      const auto bytes = static_cast<size_t>(s.sizes_in[j]);
      if (bytes > 0) std::memcpy(out + j * max_bytes_per_rank, s.recv.data() + offsets[j], bytes);
      recv_bytes[j] = bytes;
    }
  }

  void alltoallv(const void* send, const size_t* send_bytes, void* recv, size_t max_bytes_per_peer, size_t* recv_bytes,
                 Stream) override {
    const size_t total = detail::checked_mul(max_bytes_per_peer, ranks(), "alltoallv");
    check_buffer(send, total, "alltoallv send");
    check_buffer(recv, total, "alltoallv recv");
    check_buffer(send_bytes, ranks(), "alltoallv send_bytes");
    check_buffer(recv_bytes, ranks(), "alltoallv recv_bytes");
    MpiState& s = *state_;
    s.sizes_out.assign(send_bytes, send_bytes + ranks());
    CollectiveDesc desc = next_desc(CollectiveKind::kAlltoallv, max_bytes_per_peer);
    desc.max_send = *std::max_element(s.sizes_out.begin(), s.sizes_out.end());
    exchange_headers(desc);  // every rank's largest message is within the bound
    // The sizes: one u64 from every rank to every rank.
    s.sizes_in.assign(ranks(), 0);
    MPI_Request request = MPI_REQUEST_NULL;
    call(MPI_Ialltoall(s.sizes_out.data(), 1, MPI_UINT64_T, s.sizes_in.data(), 1, MPI_UINT64_T, s.comm, &request),
         "MPI_Ialltoall");
    wait(&request, &desc, "size exchange");
    for (size_t j = 0; j < ranks(); ++j) {
      if (s.sizes_in[j] > max_bytes_per_peer) {
        // Cannot happen after the descriptor check unless a peer is broken; never write past a slot.
        call(MPI_ERR_OTHER, "alltoallv size exchange (a size above the checked bound)");
      }
    }
    std::vector<size_t> send_offsets;
    std::vector<size_t> recv_offsets;
    const size_t send_packed = pack_offsets(s.sizes_out, send_offsets);
    const size_t recv_packed = pack_offsets(s.sizes_in, recv_offsets);
    s.send.resize(send_packed);
    const auto* in = static_cast<const std::byte*>(send);
    for (size_t j = 0; j < ranks(); ++j) {
      if (s.sizes_out[j] > 0) {
        std::memcpy(s.send.data() + send_offsets[j], in + j * max_bytes_per_peer, static_cast<size_t>(s.sizes_out[j]));
      }
    }
    s.recv.resize(recv_packed);
    if (fits_int(send_packed) && fits_int(recv_packed)) {
      s.send_counts.resize(ranks());
      s.send_displs.resize(ranks());
      s.recv_counts.resize(ranks());
      s.recv_displs.resize(ranks());
      for (size_t j = 0; j < ranks(); ++j) {
        s.send_counts[j] = static_cast<int>(s.sizes_out[j]);
        s.send_displs[j] = static_cast<int>(send_offsets[j]);
        s.recv_counts[j] = static_cast<int>(s.sizes_in[j]);
        s.recv_displs[j] = static_cast<int>(recv_offsets[j]);
      }
      call(MPI_Ialltoallv(s.send.data(), s.send_counts.data(), s.send_displs.data(), MPI_BYTE, s.recv.data(),
                          s.recv_counts.data(), s.recv_displs.data(), MPI_BYTE, s.comm, &request),
           "MPI_Ialltoallv");
      wait(&request, &desc, "data exchange");
    } else {
      s.requests.assign(2 * ranks(), MPI_REQUEST_NULL);
      for (size_t j = 0; j < ranks(); ++j) {
        post_send(s.send.data() + send_offsets[j], static_cast<size_t>(s.sizes_out[j]), static_cast<int>(j),
                  &s.requests[2 * j]);
        post_recv(s.recv.data() + recv_offsets[j], static_cast<size_t>(s.sizes_in[j]), static_cast<int>(j),
                  &s.requests[2 * j + 1]);
      }
      wait_all(s.requests, &desc);
    }
    auto* out = static_cast<std::byte*>(recv);
    for (size_t j = 0; j < ranks(); ++j) {
      const auto bytes = static_cast<size_t>(s.sizes_in[j]);
      if (bytes > 0) std::memcpy(out + j * max_bytes_per_peer, s.recv.data() + recv_offsets[j], bytes);
      recv_bytes[j] = bytes;
    }
  }

  void allreduce(const void* send, void* recv, size_t count, DataType type, ReduceOp op, Stream) override {
    const size_t bytes = detail::checked_mul(count, data_type_bytes(type), "allreduce");
    GCOMP_EXPECTS(op == ReduceOp::kSum || op == ReduceOp::kMax, gcompErrorInvalidArgument,
                  "allreduce: unknown ReduceOp value " + std::to_string(static_cast<int32_t>(op)));
    check_buffer(send, bytes, "allreduce send");
    check_buffer(recv, bytes, "allreduce recv");
    CollectiveDesc desc = next_desc(CollectiveKind::kAllreduce, count);
    desc.type = static_cast<int32_t>(type);
    desc.op = static_cast<int32_t>(op);
    exchange_headers(desc);
    if (count == 0) return;
    // Rank-order reduction: gather every contribution, then reduce 0..P-1 locally.
    MpiState& s = *state_;
    stage(s.send, send, bytes);
    s.recv.resize(detail::checked_mul(bytes, ranks(), "allreduce"));
    const ByteType block(bytes);
    MPI_Request request = MPI_REQUEST_NULL;
    call(MPI_Iallgather(s.send.data(), block.count(), block.type(), s.recv.data(), block.count(), block.type(), s.comm,
                        &request),
         "MPI_Iallgather");
    wait(&request, &desc, "data exchange");
    for (size_t j = 0; j < ranks(); ++j) inputs_[j] = s.recv.data() + j * bytes;
    detail::reduce_rank_order(inputs_.data(), size_, recv, count, type, op);
  }

  void broadcast(void* buf, size_t bytes, int root, Stream) override {
    GCOMP_EXPECTS(root >= 0 && root < size_, gcompErrorInvalidArgument,
                  "broadcast: root " + std::to_string(root) + " outside 0.." + std::to_string(size_ - 1));
    check_buffer(buf, bytes, "broadcast buf");
    CollectiveDesc desc = next_desc(CollectiveKind::kBroadcast, bytes);
    desc.root = root;
    exchange_headers(desc);
    if (bytes == 0) return;
    MpiState& s = *state_;
    if (rank_ == root) {
      stage(s.send, buf, bytes);
    } else {
      s.send.resize(bytes);
    }
    const ByteType block(bytes);
    MPI_Request request = MPI_REQUEST_NULL;
    call(MPI_Ibcast(s.send.data(), block.count(), block.type(), root, s.comm, &request), "MPI_Ibcast");
    wait(&request, &desc, "data exchange");
    if (rank_ != root && bytes > 0) std::memcpy(buf, s.send.data(), bytes);
  }

  void barrier() override { exchange_headers(next_desc(CollectiveKind::kBarrier, 0)); }

  void abort(std::string_view reason) noexcept override {
    // May come from another thread than the one waiting in a collective (which then stops).
    const std::lock_guard lock(reason_mutex_);
    if (aborted_) return;
    try {
      abort_reason_ = "rank " + std::to_string(rank_) + " aborted: " + std::string(reason);
    } catch (...) {
      abort_reason_.clear();
    }
    aborted_ = true;
  }

  bool is_aborted() const noexcept override { return aborted_; }

  /// Largest packed total that the variable-length collectives pass to MPI_Iallgatherv and
  /// MPI_Ialltoallv (int counts and displacements); above it they use point-to-point messages.
  void set_count_limit(size_t limit) { count_limit_ = limit; }

 private:
  size_t ranks() const { return static_cast<size_t>(size_); }

  static void check_buffer(const void* ptr, size_t bytes, const char* what) {
    GCOMP_EXPECTS(ptr != nullptr || bytes == 0, gcompErrorInvalidArgument,
                  std::string(what) + " is null but " + std::to_string(bytes) + " bytes are needed");
  }

  static void stage(std::vector<std::byte>& staging, const void* data, size_t bytes) {
    staging.resize(bytes);
    if (bytes > 0) std::memcpy(staging.data(), data, bytes);  // data may be null when bytes is 0
  }

  [[nodiscard]] bool fits_int(size_t bytes) const { return bytes <= count_limit_; }

  /// Tag of the point-to-point form of the variable-length collectives (on gcomp's own duplicate
  /// of MPI_COMM_WORLD, so no application message can match it).
  static constexpr int kVarlenTag = 7;

  void post_send(const std::byte* data, size_t bytes, int peer, MPI_Request* request) {
    const ByteType type(bytes);
    call(MPI_Isend(data, type.count(), type.type(), peer, kVarlenTag, state_->comm, request), "MPI_Isend");
  }

  void post_recv(std::byte* data, size_t bytes, int peer, MPI_Request* request) {
    const ByteType type(bytes);
    call(MPI_Irecv(data, type.count(), type.type(), peer, kVarlenTag, state_->comm, request), "MPI_Irecv");
  }

  /// wait() for a set of requests (MPI_Testall).
  void wait_all(std::vector<MPI_Request>& requests, const CollectiveDesc* desc) {
    poll_until(
        [&] {
          int done = 0;
          call(MPI_Testall(static_cast<int>(requests.size()), requests.data(), &done, MPI_STATUSES_IGNORE),
               "MPI_Testall");
          return done != 0;
        },
        desc, "data exchange");
  }

  CollectiveDesc next_desc(CollectiveKind kind, size_t bytes) {
    CollectiveDesc desc;
    desc.kind = static_cast<int32_t>(kind);
    desc.seq = seq_++;
    desc.bytes = bytes;
    return desc;
  }

  /// An MPI call that may leave a request behind: on failure the communicator is aborted.
  void call(int rc, const char* what) {
    if (rc == MPI_SUCCESS) return;
    request_pending_ = true;
    g_abandoned_request = true;
    abort(std::string(what) + " failed");
    throw_mpi(rc, what, __FILE__, __LINE__);
  }

  void throw_if_aborted(const CollectiveDesc& desc) const {
    if (!aborted_) return;
    std::string reason;
    {
      const std::lock_guard lock(reason_mutex_);
      reason = abort_reason_;
    }
    GCOMP_FAIL(gcompErrorTimeout, detail::describe(desc) + " on rank " + std::to_string(rank_) +
                                      " (mpi backend): communicator aborted: " + reason);
  }

  void exchange_headers(const CollectiveDesc& desc) {
    throw_if_aborted(desc);
    MpiState& s = *state_;
    s.header = desc;
    MPI_Request request = MPI_REQUEST_NULL;
    call(MPI_Iallgather(&s.header, sizeof(CollectiveDesc), MPI_BYTE, s.headers.data(), sizeof(CollectiveDesc), MPI_BYTE,
                        s.comm, &request),
         "MPI_Iallgather");
    wait(&request, &desc, "descriptor exchange");
    const std::string mismatch = detail::check_descs(s.headers.data(), size_);
    if (!mismatch.empty()) GCOMP_FAIL(gcompErrorMismatch, mismatch);
    if (desc.kind == static_cast<int32_t>(CollectiveKind::kAllgatherv) ||
        desc.kind == static_cast<int32_t>(CollectiveKind::kAlltoallv)) {
      const std::string too_big = detail::check_message_bounds(s.headers.data(), size_);
      if (!too_big.empty()) GCOMP_FAIL(gcompErrorInvalidArgument, too_big);
    }
  }

  /// Polls @p request until it completes; on timeout aborts the communicator and throws.
  void wait(MPI_Request* request, const CollectiveDesc* desc, const char* stage_name) {
    poll_until(
        [&] {
          int done = 0;
          call(MPI_Test(request, &done, MPI_STATUS_IGNORE), "MPI_Test");
          return done != 0;
        },
        desc, stage_name);
  }

  /// Calls @p done until it returns true. On timeout, on abort() from another thread or when the
  /// wait interrupt check fires (Ctrl-C in Python), the request stays pending (its buffers are never
  /// freed), the communicator is aborted, and the caller gets gcompErrorTimeout.
  template <class Done>
  void poll_until(Done&& done, const CollectiveDesc* desc, const char* stage_name) {
    const detail::Deadline deadline(timeout_ms_);
    detail::Backoff backoff;
    auto next_check = detail::Deadline::Clock::now() + detail::kInterruptPoll;
    const std::string what = desc != nullptr ? detail::describe(*desc) : std::string("setup");
    std::string why;
    for (;;) {
      if (done()) return;
      if (deadline.expired()) {
        why = what + " timed out after " + std::to_string(timeout_ms_) + " ms in the " + stage_name +
              " (mpi backend, rank " + std::to_string(rank_) + " of " + std::to_string(size_) +
              "); some rank did not arrive (the mpi backend cannot tell which)";
        break;
      }
      if (aborted_) {  // abort() from another thread
        const std::lock_guard lock(reason_mutex_);
        why = what + " stopped in the " + stage_name + ": " + abort_reason_;
        break;
      }
      if (detail::Deadline::Clock::now() >= next_check) {
        next_check = detail::Deadline::Clock::now() + detail::kInterruptPoll;
        if (detail::wait_interrupted()) {
          why = what + " interrupted in the " + stage_name + " (mpi backend, rank " + std::to_string(rank_) + ")";
          break;
        }
      }
      backoff.pause();
    }
    request_pending_ = true;
    g_abandoned_request = true;
    {
      const std::lock_guard lock(reason_mutex_);
      if (!aborted_) abort_reason_ = why;
      aborted_ = true;
    }
    GCOMP_FAIL(gcompErrorTimeout, why + "; communicator aborted");
  }

  int64_t timeout_ms_;
  std::unique_ptr<MpiState> state_;
  int rank_ = -1;
  int size_ = 0;
  uint64_t seq_ = 0;
  std::atomic<bool> aborted_{false};
  mutable std::mutex reason_mutex_;  // abort_reason_, written by abort() from any thread
  bool request_pending_ = false;
  size_t count_limit_ = static_cast<size_t>(INT_MAX);
  std::string abort_reason_;
  std::vector<const void*> inputs_;
};

}  // namespace

namespace detail {

void mpi_set_count_limit(Communicator& comm, size_t limit) {
  auto* mpi = dynamic_cast<MpiCommunicator*>(&comm);
  GCOMP_EXPECTS(mpi != nullptr, gcompErrorInvalidArgument, "mpi_set_count_limit: not an mpi communicator");
  mpi->set_count_limit(limit);
}

}  // namespace detail

bool mpi_available() noexcept { return true; }

void abort_mpi_job(int exit_code) noexcept {
  int initialized = 0, finalized = 0;
  if (MPI_Initialized(&initialized) != MPI_SUCCESS || initialized == 0) return;
  if (MPI_Finalized(&finalized) != MPI_SUCCESS || finalized != 0) return;
  MPI_Abort(MPI_COMM_WORLD, exit_code);
}

std::unique_ptr<Communicator> make_mpi_world(const MpiOptions& options) {
  const int64_t timeout_ms = resolve_comm_timeout_ms(options.timeout_ms);
  ensure_mpi_initialized();
  return std::make_unique<MpiCommunicator>(timeout_ms);
}

}  // namespace gcomp
