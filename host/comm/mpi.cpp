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
  detail::throw_error(
      gcompErrorMpi, file, line,
      std::string(call) + " failed: " + std::string(text, static_cast<size_t>(length)));
}

/// Throws gcomp::Error(gcompErrorMpi) naming the call and MPI's error string.
#define GCOMP_MPI_TRY(call)                                                                \
  do {                                                                                     \
    const int gcomp_mpi_rc_ = (call);                                                      \
    if (gcomp_mpi_rc_ != MPI_SUCCESS) throw_mpi(gcomp_mpi_rc_, #call, __FILE__, __LINE__); \
  } while (0)

void finalize_owned_mpi() {
  int finalized = 0;
  MPI_Finalized(&finalized);
  if (!finalized) MPI_Finalize();
}

void ensure_mpi_initialized() {
  static std::mutex mutex;
  const std::lock_guard lock(mutex);
  int finalized = 0;
  GCOMP_MPI_TRY(MPI_Finalized(&finalized));
  GCOMP_EXPECTS(!finalized, gcompErrorNotSupported,
                "make_mpi_world: MPI has already been finalized in this process");
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
};

class MpiCommunicator final : public Communicator {
 public:
  explicit MpiCommunicator(int64_t timeout_ms)
      : timeout_ms_(timeout_ms), state_(std::make_unique<MpiState>()) {
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
    call(MPI_Iallgather(s.send.data(), block.count(), block.type(), s.recv.data(), block.count(),
                        block.type(), s.comm, &request),
         "MPI_Iallgather");
    wait(&request, &desc, "data exchange");
    std::memcpy(recv, s.recv.data(), total);
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
    call(MPI_Ialltoall(s.send.data(), block.count(), block.type(), s.recv.data(), block.count(),
                       block.type(), s.comm, &request),
         "MPI_Ialltoall");
    wait(&request, &desc, "data exchange");
    std::memcpy(recv, s.recv.data(), total);
  }

  void allreduce(const void* send, void* recv, size_t count, DataType type, ReduceOp op,
                 Stream) override {
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
    call(MPI_Iallgather(s.send.data(), block.count(), block.type(), s.recv.data(), block.count(),
                        block.type(), s.comm, &request),
         "MPI_Iallgather");
    wait(&request, &desc, "data exchange");
    for (size_t j = 0; j < ranks(); ++j) inputs_[j] = s.recv.data() + j * bytes;
    detail::reduce_rank_order(inputs_.data(), size_, recv, count, type, op);
  }

  void broadcast(void* buf, size_t bytes, int root, Stream) override {
    GCOMP_EXPECTS(
        root >= 0 && root < size_, gcompErrorInvalidArgument,
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
    call(MPI_Ibcast(s.send.data(), block.count(), block.type(), root, s.comm, &request),
         "MPI_Ibcast");
    wait(&request, &desc, "data exchange");
    if (rank_ != root) std::memcpy(buf, s.send.data(), bytes);
  }

  void barrier() override { exchange_headers(next_desc(CollectiveKind::kBarrier, 0)); }

  void abort(std::string_view reason) noexcept override {
    if (aborted_) return;
    aborted_ = true;
    try {
      abort_reason_ = "rank " + std::to_string(rank_) + " aborted: " + std::string(reason);
    } catch (...) {
      abort_reason_.clear();
    }
  }

  bool is_aborted() const noexcept override { return aborted_; }

 private:
  size_t ranks() const { return static_cast<size_t>(size_); }

  static void check_buffer(const void* ptr, size_t bytes, const char* what) {
    GCOMP_EXPECTS(
        ptr != nullptr || bytes == 0, gcompErrorInvalidArgument,
        std::string(what) + " is null but " + std::to_string(bytes) + " bytes are needed");
  }

  static void stage(std::vector<std::byte>& staging, const void* data, size_t bytes) {
    staging.resize(bytes);
    std::memcpy(staging.data(), data, bytes);
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
    abort(std::string(what) + " failed");
    throw_mpi(rc, what, __FILE__, __LINE__);
  }

  void throw_if_aborted(const CollectiveDesc& desc) const {
    if (!aborted_) return;
    GCOMP_FAIL(gcompErrorTimeout, detail::describe(desc) + " on rank " + std::to_string(rank_) +
                                      " (mpi backend): communicator aborted: " + abort_reason_);
  }

  void exchange_headers(const CollectiveDesc& desc) {
    throw_if_aborted(desc);
    MpiState& s = *state_;
    s.header = desc;
    MPI_Request request = MPI_REQUEST_NULL;
    call(MPI_Iallgather(&s.header, sizeof(CollectiveDesc), MPI_BYTE, s.headers.data(),
                        sizeof(CollectiveDesc), MPI_BYTE, s.comm, &request),
         "MPI_Iallgather");
    wait(&request, &desc, "descriptor exchange");
    const std::string mismatch = detail::check_descs(s.headers.data(), size_);
    if (!mismatch.empty()) GCOMP_FAIL(gcompErrorMismatch, mismatch);
  }

  /// Polls @p request until it completes; on timeout aborts the communicator and throws.
  void wait(MPI_Request* request, const CollectiveDesc* desc, const char* stage_name) {
    const detail::Deadline deadline(timeout_ms_);
    detail::Backoff backoff;
    for (;;) {
      int done = 0;
      call(MPI_Test(request, &done, MPI_STATUS_IGNORE), "MPI_Test");
      if (done) return;
      if (deadline.expired()) break;
      backoff.pause();
    }
    request_pending_ = true;
    const std::string what = desc != nullptr ? detail::describe(*desc) : std::string("setup");
    aborted_ = true;
    abort_reason_ = what + " timed out after " + std::to_string(timeout_ms_) + " ms in the " +
                    stage_name + " (mpi backend, rank " + std::to_string(rank_) + " of " +
                    std::to_string(size_) +
                    "); some rank did not arrive (the mpi backend cannot tell which)";
    GCOMP_FAIL(gcompErrorTimeout, abort_reason_ + "; communicator aborted");
  }

  int64_t timeout_ms_;
  std::unique_ptr<MpiState> state_;
  int rank_ = -1;
  int size_ = 0;
  uint64_t seq_ = 0;
  bool aborted_ = false;
  bool request_pending_ = false;
  std::string abort_reason_;
  std::vector<const void*> inputs_;
};

}  // namespace

bool mpi_available() noexcept { return true; }

std::unique_ptr<Communicator> make_mpi_world(const MpiOptions& options) {
  const int64_t timeout_ms = resolve_comm_timeout_ms(options.timeout_ms);
  ensure_mpi_initialized();
  return std::make_unique<MpiCommunicator>(timeout_ms);
}

}  // namespace gcomp
