// SPDX-License-Identifier: Apache-2.0
// nccl backend: one rank per GPU, device buffers, collectives enqueued on the caller's stream.
//
// The NCCL communicator is non-blocking (ncclConfig_t::blocking = 0): every NCCL call may return
// ncclInProgress, and the host then polls ncclCommGetAsyncError against the timeout, aborting the
// communicator (ncclCommAbort) when it expires. Collectives are enqueue-only, so a peer that never
// joins is detected where the host waits: at setup, in barrier(), synchronize() and
// host_allgather().
//
// NCCL itself is loaded at run time (nccl_loader.hpp): every NCCL call goes through the NcclApi
// table, which make_nccl_communicator() resolves before anything else, so a missing or unusable
// NCCL is reported (gcompErrorNotSupported) before any rendezvous or device check.
#include "host/comm/comm_internal.hpp"
#include "host/comm/nccl_loader.hpp"
#include "host/comm/rendezvous.hpp"
#include "host/common/env.hpp"

#include <cuda_runtime_api.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <span>

namespace gcomp {
namespace {

using detail::CollectiveDesc;
using detail::CollectiveKind;

[[noreturn]] void throw_cuda(cudaError_t code, const char* call, const char* file, int line) {
  static_cast<void>(cudaGetLastError());  // clear a non-sticky error so it is not reported twice
  detail::throw_error(gcompErrorCuda, file, line,
                      std::string(call) + " failed: " + cudaGetErrorName(code) + ": " + cudaGetErrorString(code));
}

[[noreturn]] void throw_nccl(const detail::NcclApi& nccl, ncclResult_t code, const char* call, const char* file,
                             int line) {
  detail::throw_error(gcompErrorNccl, file, line, std::string(call) + " failed: " + nccl.GetErrorString(code));
}

/// Throws gcomp::Error(gcompErrorCuda) naming the call and the CUDA error.
#define GCOMP_CUDA_TRY(call)                                                                  \
  do {                                                                                        \
    const cudaError_t gcomp_cuda_rc_ = (call);                                                \
    if (gcomp_cuda_rc_ != cudaSuccess) throw_cuda(gcomp_cuda_rc_, #call, __FILE__, __LINE__); \
  } while (0)

/// Throws gcomp::Error(gcompErrorNccl) naming the call and the NCCL error (setup calls only;
/// communicator calls go through NcclCommunicator::check). @p api is the NcclApi the call used.
#define GCOMP_NCCL_TRY(api, call)                                   \
  do {                                                              \
    const ncclResult_t gcomp_nccl_rc_ = (call);                     \
    if (gcomp_nccl_rc_ != ncclSuccess) {                            \
      throw_nccl((api), gcomp_nccl_rc_, #call, __FILE__, __LINE__); \
    }                                                               \
  } while (0)

/// Makes `device` current for its lifetime and restores the previous device after.
class DeviceGuard {
 public:
  explicit DeviceGuard(int device) {
    GCOMP_CUDA_TRY(cudaGetDevice(&previous_));
    if (previous_ != device) GCOMP_CUDA_TRY(cudaSetDevice(device));
  }
  DeviceGuard(const DeviceGuard&) = delete;
  DeviceGuard& operator=(const DeviceGuard&) = delete;
  ~DeviceGuard() { static_cast<void>(cudaSetDevice(previous_)); }

 private:
  int previous_ = 0;
};

/// Device allocation freed on scope exit.
class DeviceBuffer {
 public:
  explicit DeviceBuffer(size_t bytes) {
    if (bytes > 0) GCOMP_CUDA_TRY(cudaMalloc(&ptr_, bytes));
  }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  ~DeviceBuffer() {
    if (ptr_ != nullptr) static_cast<void>(cudaFree(ptr_));
  }
  [[nodiscard]] void* get() const { return ptr_; }

 private:
  void* ptr_ = nullptr;
};

ncclDataType_t nccl_type(DataType type) {
  switch (type) {
    case DataType::kF32: return ncclFloat32;
    case DataType::kF64: return ncclFloat64;
    case DataType::kI32: return ncclInt32;
    case DataType::kI64: return ncclInt64;
    case DataType::kU64: return ncclUint64;
  }
  GCOMP_FAIL(gcompErrorInvalidArgument,
             "allreduce: unknown DataType value " + std::to_string(static_cast<int32_t>(type)));
}

ncclRedOp_t nccl_op(ReduceOp op) {
  switch (op) {
    case ReduceOp::kSum: return ncclSum;
    case ReduceOp::kMax: return ncclMax;
  }
  GCOMP_FAIL(gcompErrorInvalidArgument,
             "allreduce: unknown ReduceOp value " + std::to_string(static_cast<int32_t>(op)));
}

class NcclCommunicator final : public Communicator {
 public:
  NcclCommunicator(const detail::NcclApi& nccl, int rank, int world_size, int device, const ncclUniqueId& id,
                   int64_t timeout_ms)
      : nccl_(&nccl), rank_(rank), size_(world_size), device_(device), timeout_ms_(timeout_ms) {
    const DeviceGuard guard(device_);
    try {
      ncclConfig_t config = NCCL_CONFIG_INITIALIZER;
      config.blocking = 0;
      ncclUniqueId id_copy = id;
      check(nccl_->CommInitRankConfig(&comm_, size_, id_copy, rank_, &config), "setup", "ncclCommInitRankConfig");
      GCOMP_CUDA_TRY(cudaStreamCreateWithFlags(&internal_stream_, cudaStreamNonBlocking));
      GCOMP_CUDA_TRY(cudaMalloc(&d_barrier_word_, sizeof(int32_t)));
      GCOMP_CUDA_TRY(cudaMemset(d_barrier_word_, 0, sizeof(int32_t)));
      // Control block of the variable-length collectives, sized once: own descriptor, every
      // rank's descriptor, the sizes sent to and received from each peer.
      GCOMP_CUDA_TRY(cudaMalloc(&d_ctl_, ctl_bytes()));
      GCOMP_CUDA_TRY(cudaMallocHost(&h_ctl_, ctl_bytes()));
    } catch (...) {
      release();
      throw;
    }
  }

  ~NcclCommunicator() override {
    try {
      const DeviceGuard guard(device_);
      if (comm_ != nullptr) {
        // Flush outstanding work, bounded by the timeout; abort when it does not finish.
        ncclResult_t state = nccl_->CommFinalize(comm_);
        const detail::Deadline deadline(timeout_ms_);
        detail::Backoff backoff;
        while (state == ncclInProgress && !deadline.expired()) {
          backoff.pause();
          if (nccl_->CommGetAsyncError(comm_, &state) != ncclSuccess) break;
        }
        if (state == ncclSuccess) {
          static_cast<void>(nccl_->CommDestroy(comm_));
          comm_ = nullptr;
        }
      }
      release();
    } catch (...) {
      // cudaGetDevice failed: the context is gone; nothing more can be released.
    }
  }

  int rank() const override { return rank_; }
  int size() const override { return size_; }
  const char* backend() const override { return "nccl"; }
  MemorySpace memory_space() const override { return MemorySpace::kDevice; }

  void allgather(const void* send, void* recv, size_t bytes_per_rank, Stream stream) override {
    const CollectiveDesc desc = next_desc(CollectiveKind::kAllgather, bytes_per_rank);
    check_buffers(desc, send, bytes_per_rank, recv, detail::checked_mul(bytes_per_rank, ranks(), "allgather"));
    const DeviceGuard guard(device_);
    check(nccl_->AllGather(send, recv, bytes_per_rank, ncclUint8, comm_, stream), desc, "ncclAllGather");
  }

  void alltoall(const void* send, void* recv, size_t bytes_per_peer, Stream stream) override {
    const CollectiveDesc desc = next_desc(CollectiveKind::kAlltoall, bytes_per_peer);
    const size_t total = detail::checked_mul(bytes_per_peer, ranks(), "alltoall");
    check_buffers(desc, send, total, recv, total);
    GCOMP_EXPECTS(!detail::ranges_overlap(send, total, recv, total), gcompErrorInvalidArgument,
                  detail::describe(desc) + ": the nccl backend needs disjoint send and recv buffers");
    const DeviceGuard guard(device_);
    const auto* src = static_cast<const std::byte*>(send);
    auto* dst = static_cast<std::byte*>(recv);
    GCOMP_NCCL_TRY(*nccl_, nccl_->GroupStart());
    for (int peer = 0; peer < size_; ++peer) {
      const size_t offset = static_cast<size_t>(peer) * bytes_per_peer;
      const ncclResult_t sent = nccl_->Send(src + offset, bytes_per_peer, ncclUint8, peer, comm_, stream);
      const ncclResult_t received = nccl_->Recv(dst + offset, bytes_per_peer, ncclUint8, peer, comm_, stream);
      if (sent != ncclSuccess || received != ncclSuccess) {
        static_cast<void>(nccl_->GroupEnd());
        check(sent != ncclSuccess ? sent : received, desc, "ncclSend/ncclRecv");
      }
    }
    check(nccl_->GroupEnd(), desc, "ncclGroupEnd");
  }

  void allgatherv(const void* send, size_t send_bytes, void* recv, size_t max_bytes_per_rank, size_t* recv_bytes,
                  Stream stream) override {
    CollectiveDesc desc = next_desc(CollectiveKind::kAllgatherv, max_bytes_per_rank);
    desc.max_send = send_bytes;
    check_buffers(desc, send, send_bytes, recv, detail::checked_mul(max_bytes_per_rank, ranks(), "allgatherv"));
    GCOMP_EXPECTS(recv_bytes != nullptr, gcompErrorInvalidArgument, detail::describe(desc) + ": recv_bytes is null");
    const DeviceGuard guard(device_);
    for (size_t j = 0; j < ranks(); ++j) h_sizes_out()[j] = send_bytes;
    exchange_sizes(desc, stream);
    const auto* src = static_cast<const std::byte*>(send);
    auto* dst = static_cast<std::byte*>(recv);
    const bool in_place = src == dst + static_cast<size_t>(rank_) * max_bytes_per_rank;
    GCOMP_NCCL_TRY(*nccl_, nccl_->GroupStart());
    for (int peer = 0; peer < size_; ++peer) {
      const size_t in_bytes = h_sizes_in()[peer];
      if (peer == rank_ && in_place) continue;
      ncclResult_t sent = ncclSuccess;
      ncclResult_t received = ncclSuccess;
      if (send_bytes > 0) sent = nccl_->Send(src, send_bytes, ncclUint8, peer, comm_, stream);
      if (in_bytes > 0 && sent == ncclSuccess) {
        received =
            nccl_->Recv(dst + static_cast<size_t>(peer) * max_bytes_per_rank, in_bytes, ncclUint8, peer, comm_, stream);
      }
      if (sent != ncclSuccess || received != ncclSuccess) {
        static_cast<void>(nccl_->GroupEnd());
        check(sent != ncclSuccess ? sent : received, desc, "ncclSend/ncclRecv");
      }
    }
    check(nccl_->GroupEnd(), desc, "ncclGroupEnd");
    for (size_t j = 0; j < ranks(); ++j) recv_bytes[j] = h_sizes_in()[j];
  }

  void alltoallv(const void* send, const size_t* send_bytes, void* recv, size_t max_bytes_per_peer, size_t* recv_bytes,
                 Stream stream) override {
    CollectiveDesc desc = next_desc(CollectiveKind::kAlltoallv, max_bytes_per_peer);
    const size_t total = detail::checked_mul(max_bytes_per_peer, ranks(), "alltoallv");
    check_buffers(desc, send, total, recv, total);
    GCOMP_EXPECTS(send_bytes != nullptr && recv_bytes != nullptr, gcompErrorInvalidArgument,
                  detail::describe(desc) + ": send_bytes or recv_bytes is null");
    GCOMP_EXPECTS(!detail::ranges_overlap(send, total, recv, total), gcompErrorInvalidArgument,
                  detail::describe(desc) + ": the nccl backend needs disjoint send and recv buffers");
    const DeviceGuard guard(device_);
    for (size_t j = 0; j < ranks(); ++j) {
      h_sizes_out()[j] = send_bytes[j];
      desc.max_send = std::max<uint64_t>(desc.max_send, send_bytes[j]);
    }
    exchange_sizes(desc, stream);
    const auto* src = static_cast<const std::byte*>(send);
    auto* dst = static_cast<std::byte*>(recv);
    GCOMP_NCCL_TRY(*nccl_, nccl_->GroupStart());
    for (int peer = 0; peer < size_; ++peer) {
      const size_t offset = static_cast<size_t>(peer) * max_bytes_per_peer;
      const size_t out_bytes = h_sizes_out()[peer];
      const size_t in_bytes = h_sizes_in()[peer];
      ncclResult_t sent = ncclSuccess;
      ncclResult_t received = ncclSuccess;
      if (out_bytes > 0) sent = nccl_->Send(src + offset, out_bytes, ncclUint8, peer, comm_, stream);
      if (in_bytes > 0 && sent == ncclSuccess) {
        received = nccl_->Recv(dst + offset, in_bytes, ncclUint8, peer, comm_, stream);
      }
      if (sent != ncclSuccess || received != ncclSuccess) {
        static_cast<void>(nccl_->GroupEnd());
        check(sent != ncclSuccess ? sent : received, desc, "ncclSend/ncclRecv");
      }
    }
    check(nccl_->GroupEnd(), desc, "ncclGroupEnd");
    for (size_t j = 0; j < ranks(); ++j) recv_bytes[j] = h_sizes_in()[j];
  }

  void allreduce(const void* send, void* recv, size_t count, DataType type, ReduceOp op, Stream stream) override {
    CollectiveDesc desc = next_desc(CollectiveKind::kAllreduce, count);
    desc.type = static_cast<int32_t>(type);
    desc.op = static_cast<int32_t>(op);
    const size_t bytes = detail::checked_mul(count, data_type_bytes(type), "allreduce");
    check_buffers(desc, send, bytes, recv, bytes);
    const DeviceGuard guard(device_);
    check(nccl_->AllReduce(send, recv, count, nccl_type(type), nccl_op(op), comm_, stream), desc, "ncclAllReduce");
  }

  void broadcast(void* buf, size_t bytes, int root, Stream stream) override {
    CollectiveDesc desc = next_desc(CollectiveKind::kBroadcast, bytes);
    desc.root = root;
    GCOMP_EXPECTS(root >= 0 && root < size_, gcompErrorInvalidArgument,
                  detail::describe(desc) + ": root outside 0.." + std::to_string(size_ - 1));
    check_buffers(desc, buf, bytes, buf, bytes);
    const DeviceGuard guard(device_);
    check(nccl_->Broadcast(buf, buf, bytes, ncclUint8, root, comm_, stream), desc, "ncclBroadcast");
  }

  void barrier() override {
    const CollectiveDesc desc = next_desc(CollectiveKind::kBarrier, 0);
    throw_if_aborted(desc);
    const DeviceGuard guard(device_);
    check(nccl_->AllReduce(d_barrier_word_, d_barrier_word_, 1, ncclInt32, ncclSum, comm_, internal_stream_), desc,
          "ncclAllReduce");
    wait_stream(internal_stream_, detail::describe(desc));
  }

  void synchronize(Stream stream) override {
    if (aborted_) {
      GCOMP_FAIL(gcompErrorTimeout, "synchronize on rank " + std::to_string(rank_) +
                                        " (nccl backend): communicator aborted: " + abort_reason_);
    }
    const DeviceGuard guard(device_);
    wait_stream(stream, "synchronize");
  }

  void host_allgather(const void* send, void* recv, size_t bytes_per_rank) override {
    const size_t total = detail::checked_mul(bytes_per_rank, ranks(), "host_allgather");
    const DeviceGuard guard(device_);
    const DeviceBuffer d_send(bytes_per_rank);
    const DeviceBuffer d_recv(total);
    if (bytes_per_rank > 0) {
      GCOMP_CUDA_TRY(cudaMemcpyAsync(d_send.get(), send, bytes_per_rank, cudaMemcpyHostToDevice, internal_stream_));
    }
    allgather(d_send.get(), d_recv.get(), bytes_per_rank, internal_stream_);
    if (total > 0) {
      GCOMP_CUDA_TRY(cudaMemcpyAsync(recv, d_recv.get(), total, cudaMemcpyDeviceToHost, internal_stream_));
    }
    wait_stream(internal_stream_, "host_allgather");
  }

  void abort(std::string_view reason) noexcept override {
    if (aborted_) return;
    aborted_ = true;
    try {
      abort_reason_ = "rank " + std::to_string(rank_) + " aborted: " + std::string(reason);
    } catch (...) {
      abort_reason_.clear();
    }
    if (comm_ != nullptr) {
      static_cast<void>(nccl_->CommAbort(comm_));
      comm_ = nullptr;
    }
  }

  bool is_aborted() const noexcept override { return aborted_; }

 private:
  size_t ranks() const { return static_cast<size_t>(size_); }

  // Control block (d_ctl_ on the device, h_ctl_ pinned on the host), in this order: this rank's
  // descriptor, every rank's descriptor, the u64 size sent to each peer, the u64 size received
  // from each peer.
  [[nodiscard]] size_t ctl_bytes() const {
    return sizeof(CollectiveDesc) * (ranks() + 1) + 2 * sizeof(uint64_t) * ranks();
  }
  [[nodiscard]] CollectiveDesc* h_descs() const {
    return reinterpret_cast<CollectiveDesc*>(static_cast<std::byte*>(h_ctl_) + sizeof(CollectiveDesc));
  }
  [[nodiscard]] uint64_t* h_sizes_out() const {
    return reinterpret_cast<uint64_t*>(static_cast<std::byte*>(h_ctl_) + sizeof(CollectiveDesc) * (ranks() + 1));
  }
  [[nodiscard]] uint64_t* h_sizes_in() const { return h_sizes_out() + ranks(); }

  /// Sizes first, for allgatherv and alltoallv: every rank's descriptor (bound, largest message)
  /// by an allgather and the size of each message by grouped sends and receives of one u64 per
  /// peer, both through d_ctl_, enqueued on @p stream; then the host waits for the stream (under
  /// the timeout) and checks, as the CPU backends do, that every rank passed the same bound and
  /// sent nothing above it. Throws the same message on every rank; no data buffer is touched.
  void exchange_sizes(const CollectiveDesc& desc, Stream stream) {
    auto* h = static_cast<std::byte*>(h_ctl_);
    auto* d = static_cast<std::byte*>(d_ctl_);
    std::memcpy(h, &desc, sizeof(CollectiveDesc));
    const size_t sizes_off = sizeof(CollectiveDesc) * (ranks() + 1);
    const size_t sizes_bytes = sizeof(uint64_t) * ranks();
    GCOMP_CUDA_TRY(cudaMemcpyAsync(d, h, sizeof(CollectiveDesc), cudaMemcpyHostToDevice, stream));
    GCOMP_CUDA_TRY(cudaMemcpyAsync(d + sizes_off, h + sizes_off, sizes_bytes, cudaMemcpyHostToDevice, stream));
    check(nccl_->AllGather(d, d + sizeof(CollectiveDesc), sizeof(CollectiveDesc), ncclUint8, comm_, stream), desc,
          "ncclAllGather");
    GCOMP_NCCL_TRY(*nccl_, nccl_->GroupStart());
    for (int peer = 0; peer < size_; ++peer) {
      const size_t at = sizeof(uint64_t) * static_cast<size_t>(peer);
      const ncclResult_t sent = nccl_->Send(d + sizes_off + at, sizeof(uint64_t), ncclUint8, peer, comm_, stream);
      const ncclResult_t received =
          nccl_->Recv(d + sizes_off + sizes_bytes + at, sizeof(uint64_t), ncclUint8, peer, comm_, stream);
      if (sent != ncclSuccess || received != ncclSuccess) {
        static_cast<void>(nccl_->GroupEnd());
        check(sent != ncclSuccess ? sent : received, desc, "ncclSend/ncclRecv");
      }
    }
    check(nccl_->GroupEnd(), desc, "ncclGroupEnd");
    GCOMP_CUDA_TRY(cudaMemcpyAsync(h + sizeof(CollectiveDesc), d + sizeof(CollectiveDesc),
                                   sizeof(CollectiveDesc) * ranks(), cudaMemcpyDeviceToHost, stream));
    GCOMP_CUDA_TRY(cudaMemcpyAsync(h + sizes_off + sizes_bytes, d + sizes_off + sizes_bytes, sizes_bytes,
                                   cudaMemcpyDeviceToHost, stream));
    wait_stream(stream, detail::describe(desc) + " (size exchange)");
    if (std::string m = detail::check_descs(h_descs(), size_); !m.empty()) {
      GCOMP_FAIL(gcompErrorMismatch, m);
    }
    if (std::string m = detail::check_message_bounds(h_descs(), size_); !m.empty()) {
      GCOMP_FAIL(gcompErrorInvalidArgument, m);
    }
    for (int peer = 0; peer < size_; ++peer) {
      // The sizes came from the same ranks as the checked descriptors; never write past a slot.
      if (h_sizes_in()[peer] > desc.bytes) {
        fail_internal(detail::describe(desc) + ": rank " + std::to_string(peer) + " sent size " +
                      std::to_string(h_sizes_in()[peer]) + " above its checked bound");
      }
    }
  }

  CollectiveDesc next_desc(CollectiveKind kind, size_t bytes) {
    CollectiveDesc desc;
    desc.kind = static_cast<int32_t>(kind);
    desc.seq = seq_++;
    desc.bytes = bytes;
    return desc;
  }

  void check_buffers(const CollectiveDesc& desc, const void* send, size_t send_bytes, const void* recv,
                     size_t recv_bytes) const {
    throw_if_aborted(desc);
    GCOMP_EXPECTS((send != nullptr || send_bytes == 0) && (recv != nullptr || recv_bytes == 0),
                  gcompErrorInvalidArgument, detail::describe(desc) + ": null device buffer");
  }

  void throw_if_aborted(const CollectiveDesc& desc) const {
    if (!aborted_) return;
    GCOMP_FAIL(gcompErrorTimeout, detail::describe(desc) + " on rank " + std::to_string(rank_) +
                                      " (nccl backend): communicator aborted: " + abort_reason_);
  }

  void check(ncclResult_t rc, const CollectiveDesc& desc, const char* call) { check(rc, detail::describe(desc), call); }

  /// Completes a non-blocking NCCL call: waits while it is in progress, aborts on error/timeout.
  void check(ncclResult_t rc, const std::string& what, const char* call) {
    const detail::Deadline deadline(timeout_ms_);
    detail::Backoff backoff;
    while (rc == ncclInProgress) {
      if (deadline.expired()) fail_timeout(what, call);
      backoff.pause();
      if (comm_ == nullptr) break;
      const ncclResult_t query = nccl_->CommGetAsyncError(comm_, &rc);
      if (query != ncclSuccess) rc = query;
    }
    if (rc == ncclSuccess) return;
    const std::string detail_text = comm_ != nullptr ? nccl_->GetLastError(comm_) : "";
    const std::string message = what + ": " + call + " failed on rank " + std::to_string(rank_) + ": " +
                                nccl_->GetErrorString(rc) + (detail_text.empty() ? "" : " (" + detail_text + ")");
    abort(message);
    GCOMP_FAIL(gcompErrorNccl, message + "; communicator aborted");
  }

  /// Waits for @p stream under the timeout while watching for asynchronous NCCL errors.
  void wait_stream(CUstream_st* stream, const std::string& what) {
    const detail::Deadline deadline(timeout_ms_);
    detail::Backoff backoff;
    for (;;) {
      const cudaError_t state = cudaStreamQuery(stream);
      if (state == cudaSuccess) return;
      if (state != cudaErrorNotReady) throw_cuda(state, "cudaStreamQuery", __FILE__, __LINE__);
      ncclResult_t async = ncclSuccess;
      if (comm_ != nullptr && nccl_->CommGetAsyncError(comm_, &async) == ncclSuccess && async != ncclSuccess &&
          async != ncclInProgress) {
        check(async, what, "asynchronous NCCL operation");
      }
      if (deadline.expired()) fail_timeout(what, "waiting for the stream");
      backoff.pause();
    }
  }

  [[noreturn]] void fail_internal(const std::string& message) {
    abort(message);
    GCOMP_FAIL(gcompErrorInternal, message + "; communicator aborted");
  }

  [[noreturn]] void fail_timeout(const std::string& what, const char* stage) {
    const std::string message = what + " timed out after " + std::to_string(timeout_ms_) + " ms (" + stage +
                                "; nccl backend, rank " + std::to_string(rank_) + " of " + std::to_string(size_) + ")";
    abort(message);
    GCOMP_FAIL(gcompErrorTimeout, message + "; communicator aborted");
  }

  void release() noexcept {
    if (comm_ != nullptr) {
      static_cast<void>(nccl_->CommAbort(comm_));
      comm_ = nullptr;
    }
    if (d_barrier_word_ != nullptr) static_cast<void>(cudaFree(d_barrier_word_));
    d_barrier_word_ = nullptr;
    if (d_ctl_ != nullptr) static_cast<void>(cudaFree(d_ctl_));
    d_ctl_ = nullptr;
    if (h_ctl_ != nullptr) static_cast<void>(cudaFreeHost(h_ctl_));
    h_ctl_ = nullptr;
    if (internal_stream_ != nullptr) static_cast<void>(cudaStreamDestroy(internal_stream_));
    internal_stream_ = nullptr;
  }

  const detail::NcclApi* nccl_;
  int rank_;
  int size_;
  int device_;
  int64_t timeout_ms_;
  uint64_t seq_ = 0;
  ncclComm_t comm_ = nullptr;
  cudaStream_t internal_stream_ = nullptr;
  void* d_barrier_word_ = nullptr;
  void* d_ctl_ = nullptr;
  void* h_ctl_ = nullptr;
  bool aborted_ = false;
  std::string abort_reason_;
};

int select_device(const NcclOptions& options, const detail::LauncherEnv& env, int rank) {
  int count = 0;
  GCOMP_CUDA_TRY(cudaGetDeviceCount(&count));
  GCOMP_EXPECTS(count > 0, gcompErrorCuda, "make_nccl_communicator: no CUDA device");
  const int device = options.device >= 0 ? options.device : env.local_rank >= 0 ? env.local_rank : rank % count;
  GCOMP_EXPECTS(device < count, gcompErrorInvalidArgument,
                "make_nccl_communicator: device " + std::to_string(device) + " but only " + std::to_string(count) +
                    " CUDA devices are visible");
  return device;
}

}  // namespace

bool nccl_available() noexcept { return true; }

std::string nccl_unusable() {
  if (std::string why = detail::nccl_load_error(); !why.empty()) return why;
  int count = 0;
  const cudaError_t rc = cudaGetDeviceCount(&count);
  if (rc != cudaSuccess) {
    static_cast<void>(cudaGetLastError());
    return std::string("no usable CUDA device (cudaGetDeviceCount: ") + cudaGetErrorName(rc) + ": " +
           cudaGetErrorString(rc) + ")";
  }
  if (count == 0) return "no usable CUDA device (cudaGetDeviceCount returned 0)";
  return {};
}

std::string nccl_library() { return detail::nccl_load_error().empty() ? detail::nccl_api().path : std::string(); }

int nccl_version() { return detail::nccl_load_error().empty() ? detail::nccl_api().version : 0; }

std::unique_ptr<Communicator> make_nccl_communicator(const NcclOptions& options) {
  // NCCL first: without it nothing below (rendezvous with the peers, device selection) is useful.
  const std::string unloadable = detail::nccl_load_error();
  GCOMP_EXPECTS(unloadable.empty(), gcompErrorNotSupported, "make_nccl_communicator: " + unloadable);
  const detail::NcclApi& nccl = detail::nccl_api();
  const int64_t timeout_ms = resolve_comm_timeout_ms(options.timeout_ms);
  const detail::LauncherEnv env = detail::read_launcher_env();
  std::string id_file = options.id_file;
  if (id_file.empty()) {
    id_file = detail::env_string(detail::EnvVarId::kNcclIdFile).value_or("");
  }
  const std::string master_addr = options.master_addr.empty() ? env.master_addr : options.master_addr;
  const int master_port = options.master_port >= 0 ? options.master_port : env.master_port;
  NcclBootstrap method = options.bootstrap;
  if (method == NcclBootstrap::kAuto) {
    method = !id_file.empty() ? NcclBootstrap::kFile : !master_addr.empty() ? NcclBootstrap::kTcp : NcclBootstrap::kMpi;
  }

  ncclUniqueId id{};
  const std::span<std::byte> blob(reinterpret_cast<std::byte*>(&id), sizeof(id));
  int rank = options.rank >= 0 ? options.rank : env.rank;
  int world_size = options.world_size >= 0 ? options.world_size : env.world_size;
  if (method == NcclBootstrap::kMpi) {
#if defined(GCOMP_HAVE_MPI)
    const auto mpi = make_mpi_world(MpiOptions{timeout_ms});
    GCOMP_EXPECTS((rank < 0 || rank == mpi->rank()) && (world_size < 0 || world_size == mpi->size()),
                  gcompErrorMismatch,
                  "make_nccl_communicator: rank/world size " + std::to_string(rank) + "/" + std::to_string(world_size) +
                      " differ from MPI's " + std::to_string(mpi->rank()) + "/" + std::to_string(mpi->size()));
    rank = mpi->rank();
    world_size = mpi->size();
    if (rank == 0) GCOMP_NCCL_TRY(nccl, nccl.GetUniqueId(&id));
    mpi->broadcast(&id, sizeof(id), 0, nullptr);
#else
    GCOMP_FAIL(gcompErrorNotSupported,
               "make_nccl_communicator: no GCOMP_NCCL_ID_FILE or MASTER_ADDR set, and this build "
               "has no MPI backend to exchange the NCCL id");
#endif
  } else {
    GCOMP_EXPECTS(world_size >= 1 && rank >= 0 && rank < world_size, gcompErrorInvalidArgument,
                  "make_nccl_communicator: need 0 <= RANK < WORLD_SIZE (got RANK " + std::to_string(rank) +
                      ", WORLD_SIZE " + std::to_string(world_size) + "); set them or NcclOptions::rank / world_size");
    if (rank == 0) GCOMP_NCCL_TRY(nccl, nccl.GetUniqueId(&id));
    if (method == NcclBootstrap::kTcp) {
      detail::tcp_broadcast_blob(master_addr, master_port, rank, world_size, blob, timeout_ms);
    } else {
      detail::file_broadcast_blob(id_file, rank, blob, timeout_ms);
    }
  }
  const int device = select_device(options, env, rank);
  return std::make_unique<NcclCommunicator>(nccl, rank, world_size, device, id, timeout_ms);
}

}  // namespace gcomp
