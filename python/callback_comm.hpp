// SPDX-License-Identifier: Apache-2.0
// A gcomp::Communicator whose collectives are carried by a Python object (the extension's
// `callback_comm`). gcomp.ddp uses it to run real gcomp Sessions between the processes of a
// PyTorch DDP job over the job's torch.distributed process group (gloo), so every Session
// algorithm, one-way and two-way (replicated or sharded), is available to the DDP hook without a
// second transport. Host memory only.
//
// The transport object has the methods
//   allgather(send, recv)   recv (size*b bytes) <- every rank's send (b bytes), rank order
//   alltoall(send, recv)    block j of send goes to rank j; block j of recv came from rank j
//   broadcast(buf, root)    root's buf to every rank, in place
//   barrier()
// whose arguments are 1-D uint8 NumPy arrays over the Session's own buffers (no copy); send
// arrays must not be written. allreduce is an allgather followed by a reduction in rank order
// 0..P-1 here, so every rank gets bitwise the same result whatever the transport's own
// reduction order (the contract of the local and mpi backends).
//
// A Python exception raised by the transport aborts the communicator (the peers of a failed
// collective cannot be assumed to be in step any more) and becomes gcomp::Error(gcompErrorTimeout)
// naming the collective; the exception object is kept in pending_cause() so the binding can chain
// it as the gcomp.Error's __cause__. Later calls fail at once with the same status.
#pragma once

#include <gcomp/comm.hpp>
#include <gcomp/error.hpp>

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <mutex>
#include <string>
#include <string_view>
#include <type_traits>
#include <vector>

namespace gcomp_py {

namespace py = pybind11;

/// The Python exception behind the last gcomp::Error thrown on this thread by a Python callback
/// (a strong reference, or nullptr). Set and taken with the GIL held.
inline PyObject*& pending_cause() {
  thread_local PyObject* cause = nullptr;
  return cause;
}

/// Replaces pending_cause() by @p exc (GIL held).
inline void set_pending_cause(const py::object& exc) {
  PyObject*& slot = pending_cause();
  Py_XDECREF(slot);
  slot = exc.inc_ref().ptr();
}

/// Takes pending_cause() (GIL held): the exception, or an empty object.
inline py::object take_pending_cause() {
  PyObject*& slot = pending_cause();
  PyObject* p = slot;
  slot = nullptr;
  return p != nullptr ? py::reinterpret_steal<py::object>(p) : py::object();
}

class CallbackCommunicator final : public gcomp::Communicator {
 public:
  CallbackCommunicator(int rank, int size, py::object transport)
      : rank_(rank), size_(size), transport_(std::move(transport)) {}

  ~CallbackCommunicator() override {
    // The transport is a Python object: release it under the GIL (or leak it at interpreter exit).
    if (Py_IsInitialized() == 0) {
      (void)transport_.release();
      return;
    }
    py::gil_scoped_acquire gil;
    transport_ = py::object();
  }

  [[nodiscard]] int rank() const override { return rank_; }
  [[nodiscard]] int size() const override { return size_; }
  [[nodiscard]] const char* backend() const override { return "python"; }
  [[nodiscard]] gcomp::MemorySpace memory_space() const override { return gcomp::MemorySpace::kHost; }

  void allgather(const void* send, void* recv, size_t bytes_per_rank, gcomp::Stream /*stream*/) override {
    const size_t total = bytes_per_rank * static_cast<size_t>(size_);
    // In place (send == recv + rank * b): hand the transport a copy of the block as send.
    std::vector<uint8_t> copy;
    if (gcomp_overlap(send, bytes_per_rank, recv, total)) {
      copy.assign(static_cast<const uint8_t*>(send), static_cast<const uint8_t*>(send) + bytes_per_rank);
      send = copy.data();
    }
    call("allgather",
         [&](py::gil_scoped_acquire&) { transport_.attr("allgather")(view(send, bytes_per_rank), view(recv, total)); });
  }

  void alltoall(const void* send, void* recv, size_t bytes_per_peer, gcomp::Stream /*stream*/) override {
    const size_t total = bytes_per_peer * static_cast<size_t>(size_);
    std::vector<uint8_t> copy;
    if (gcomp_overlap(send, total, recv, total)) {
      copy.assign(static_cast<const uint8_t*>(send), static_cast<const uint8_t*>(send) + total);
      send = copy.data();
    }
    call("alltoall",
         [&](py::gil_scoped_acquire&) { transport_.attr("alltoall")(view(send, total), view(recv, total)); });
  }

  void allreduce(const void* send, void* recv, size_t count, gcomp::DataType type, gcomp::ReduceOp op,
                 gcomp::Stream stream) override {
    const size_t elem = gcomp::data_type_bytes(type);
    std::vector<uint8_t> all(count * elem * static_cast<size_t>(size_));
    allgather(send, all.data(), count * elem, stream);
    switch (type) {
      case gcomp::DataType::kF32: reduce<float>(all.data(), recv, count, op); break;
      case gcomp::DataType::kF64: reduce<double>(all.data(), recv, count, op); break;
      case gcomp::DataType::kI32: reduce<int32_t>(all.data(), recv, count, op); break;
      case gcomp::DataType::kI64: reduce<int64_t>(all.data(), recv, count, op); break;
      case gcomp::DataType::kU64: reduce<uint64_t>(all.data(), recv, count, op); break;
    }
  }

  void broadcast(void* buf, size_t bytes, int root, gcomp::Stream /*stream*/) override {
    GCOMP_EXPECTS(root >= 0 && root < size_, gcompErrorInvalidArgument,
                  "broadcast: root " + std::to_string(root) + " is outside 0.." + std::to_string(size_ - 1));
    call("broadcast", [&](py::gil_scoped_acquire&) { transport_.attr("broadcast")(view(buf, bytes), root); });
  }

  void barrier() override {
    call("barrier", [&](py::gil_scoped_acquire&) { transport_.attr("barrier")(); });
  }

  void abort(std::string_view reason) noexcept override {
    std::lock_guard lock(mu_);
    if (!aborted_.load()) {
      reason_ = std::string(reason);
      aborted_.store(true);
    }
  }

  [[nodiscard]] bool is_aborted() const noexcept override { return aborted_.load(); }

 private:
  static bool gcomp_overlap(const void* a, size_t an, const void* b, size_t bn) {
    const auto* pa = static_cast<const uint8_t*>(a);
    const auto* pb = static_cast<const uint8_t*>(b);
    return an > 0 && bn > 0 && pa < pb + bn && pb < pa + an;
  }

  // A 1-D uint8 array over caller memory; the capsule is only a non-owning base, so NumPy neither
  // copies nor frees the memory.
  static py::array_t<uint8_t> view(const void* p, size_t n) {
    static uint8_t empty = 0;
    void* data = n > 0 ? const_cast<void*>(p) : &empty;
    return py::array_t<uint8_t>({static_cast<py::ssize_t>(n)}, {static_cast<py::ssize_t>(1)},
                                static_cast<uint8_t*>(data), py::capsule(data, [](void*) {}));
  }

  template <class Fn>
  void call(const char* what, Fn&& fn) {
    const uint64_t seq = seq_++;
    if (aborted_.load()) {
      std::lock_guard lock(mu_);
      GCOMP_FAIL(gcompErrorTimeout,
                 std::string(what) + " #" + std::to_string(seq) + ": the communicator was aborted: " + reason_);
    }
    std::string failure;
    {
      py::gil_scoped_acquire gil;
      try {
        fn(gil);
        return;
      } catch (py::error_already_set& e) {
        failure = std::string(what) + " #" + std::to_string(seq) +
                  " failed in the Python transport: " + std::string(py::str(e.type().attr("__name__"))) + ": " +
                  std::string(py::str(e.value()));
        set_pending_cause(e.value());
      }
    }
    abort(failure);
    GCOMP_FAIL(gcompErrorTimeout, failure);
  }

  template <class T>
  void reduce(const uint8_t* all, void* recv, size_t count, gcomp::ReduceOp op) const {
    std::vector<T> acc(count);
    std::memcpy(acc.data(), all, count * sizeof(T));
    for (int r = 1; r < size_; ++r) {
      const uint8_t* block = all + static_cast<size_t>(r) * count * sizeof(T);
      for (size_t i = 0; i < count; ++i) {
        T v;
        std::memcpy(&v, block + i * sizeof(T), sizeof(T));
        if (op == gcomp::ReduceOp::kSum) {
          if constexpr (std::is_integral_v<T>) {
            using U = std::make_unsigned_t<T>;  // two's complement wrap-around, as the other backends
            acc[i] = static_cast<T>(static_cast<U>(acc[i]) + static_cast<U>(v));
          } else {
            acc[i] = acc[i] + v;
          }
        } else if constexpr (std::is_floating_point_v<T>) {
          acc[i] = (std::isnan(acc[i]) || std::isnan(v)) ? std::numeric_limits<T>::quiet_NaN() : std::max(acc[i], v);
        } else {
          acc[i] = std::max(acc[i], v);
        }
      }
    }
    if (count > 0) std::memcpy(recv, acc.data(), count * sizeof(T));
  }

  int rank_;
  int size_;
  py::object transport_;
  uint64_t seq_ = 0;
  std::atomic<bool> aborted_{false};
  mutable std::mutex mu_;
  std::string reason_;
};

}  // namespace gcomp_py
