// SPDX-License-Identifier: Apache-2.0
// gcomp._core: the pybind11 extension of the Python package (python/gcomp, docs/python.md). It binds
// the C++ API (codec.hpp, comm.hpp, session.hpp, wire.hpp, bits_report.hpp) over host buffers:
// anything with the buffer protocol (NumPy arrays, bytes, memoryview) and CPU torch tensors (read
// through data_ptr()). Arguments are checked here, before any C++ call: dtype, C-contiguity,
// element count, writability; a bad one raises gcomp.Error(Status.INVALID_ARGUMENT) naming the
// argument, and every gcomp::Error becomes gcomp.Error carrying its status. The GIL is released
// around encode/decode, session steps, collectives and checkpoint I/O, so the ranks of a local
// group can run on Python threads. The convenience layer (dtype conversion, CUDA tensors through
// host copies, output allocation in other dtypes) is python/gcomp/_api.py.
#include <gcomp/bits_report.hpp>
#include <gcomp/codec.hpp>
#include <gcomp/comm.hpp>
#if defined(GCOMP_HAVE_CUDA)
#include <gcomp/cuda.hpp>
#endif
#include <gcomp/error.hpp>
#include <gcomp/gcomp.h>
#include <gcomp/names.hpp>
#include <gcomp/session.hpp>
#include <gcomp/wire.hpp>

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include "callback_comm.hpp"

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <exception>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

namespace py = pybind11;

namespace {

// ------------------------------------------------------------------------------------------------
// Errors: gcomp._errors.Error(status, message), the package's exception class.

PyObject* g_error_class = nullptr;  // a strong reference taken at import, kept for the process

[[noreturn]] void raise_error(gcompStatus_t status, const std::string& message, py::object cause = py::object()) {
  py::object exc = py::reinterpret_borrow<py::object>(g_error_class)(static_cast<int>(status), message);
  if (cause) PyException_SetCause(exc.ptr(), cause.release().ptr());  // steals the reference
  PyErr_SetObject(g_error_class, exc.ptr());
  throw py::error_already_set();
}

[[noreturn]] void invalid(const std::string& message) { raise_error(gcompErrorInvalidArgument, message); }

// ------------------------------------------------------------------------------------------------
// The GIL around blocking calls. py::gil_scoped_release takes the GIL back in its destructor, which
// is noexcept. A daemon thread that takes the GIL back while the interpreter exits is ended by
// CPython with pthread_exit, and that unwinding may not leave a noexcept frame: the process aborted
// ("terminate called without an active exception"). without_gil takes the GIL back in an ordinary
// frame, so such a thread ends quietly, and an exception of fn is rethrown with the GIL held.

template <class Fn>
auto without_gil(Fn&& fn) -> std::invoke_result_t<Fn&> {
  using Result = std::invoke_result_t<Fn&>;
  constexpr bool kVoid = std::is_void_v<Result>;
  std::optional<std::conditional_t<kVoid, bool, Result>> result;  // (unused when fn returns void)
  std::exception_ptr error;
  PyThreadState* const saved = PyEval_SaveThread();
  try {
    if constexpr (kVoid)
      fn();
    else
      result.emplace(fn());
#ifdef __GLIBCXX__
  } catch (abi::__forced_unwind&) {
    throw;  // the thread is being ended: it must not be held up
#endif
  } catch (...) {
    error = std::current_exception();
  }
  PyEval_RestoreThread(saved);
  if (error) std::rethrow_exception(error);
  if constexpr (!kVoid) return std::move(*result);
}

// ------------------------------------------------------------------------------------------------
// Ctrl-C during a blocking call. The collectives of the host backends call this check about every
// 50 ms while they wait (gcomp::set_wait_interrupt_check). On Python's main thread, where signals
// are handled, it runs the signal handlers (PyErr_CheckSignals): a KeyboardInterrupt stops the wait,
// the communicator is aborted (its peers fail at once too), and the pending KeyboardInterrupt is
// what the call raises (raise_pending_interrupt).

unsigned long g_main_thread = 0;

bool python_interrupt_check() {
  if (PyThread_get_thread_ident() != g_main_thread || Py_IsInitialized() == 0) return false;
  py::gil_scoped_acquire gil;
  return PyErr_CheckSignals() != 0;  // leaves the exception (KeyboardInterrupt) set
}

/// An exception set by python_interrupt_check while the call waited wins over the call's result.
void raise_pending_interrupt() {
  if (PyErr_Occurred() != nullptr) throw py::error_already_set();
}

// ------------------------------------------------------------------------------------------------
// Host buffers: the buffer protocol, or a CPU torch tensor through data_ptr().

enum class Elem { kF32, kF64, kU8, kU16, kF16, kBF16 };

const char* elem_name(Elem e) {
  switch (e) {
    case Elem::kF32: return "float32";
    case Elem::kF64: return "float64";
    case Elem::kU8: return "uint8";
    case Elem::kU16: return "uint16";
    case Elem::kF16: return "float16";
    case Elem::kBF16: return "bfloat16";
  }
  return "?";
}

size_t elem_bytes(Elem e) {
  switch (e) {
    case Elem::kF32: return 4;
    case Elem::kF64: return 8;
    case Elem::kU8: return 1;
    default: return 2;
  }
}

// The element type of a struct-module format string ("f", "<d", "B", ...); nullopt when not one
// of ours. Big-endian formats are not ours.
std::optional<Elem> elem_of_format(std::string_view f) {
  if (!f.empty() && (f[0] == '@' || f[0] == '=' || f[0] == '<')) f.remove_prefix(1);
  if (f == "f") return Elem::kF32;
  if (f == "d") return Elem::kF64;
  if (f == "B" || f == "c") return Elem::kU8;
  if (f == "H") return Elem::kU16;
  if (f == "e") return Elem::kF16;
  return std::nullopt;
}

std::optional<Elem> elem_of_torch(const std::string& dtype) {
  if (dtype == "torch.float32") return Elem::kF32;
  if (dtype == "torch.float64") return Elem::kF64;
  if (dtype == "torch.uint8") return Elem::kU8;
  if (dtype == "torch.uint16") return Elem::kU16;
  if (dtype == "torch.float16") return Elem::kF16;
  if (dtype == "torch.bfloat16") return Elem::kBF16;
  return std::nullopt;
}

bool is_torch_tensor(py::handle obj) {
  const py::handle type = py::type::handle_of(obj);
  if (!py::hasattr(type, "__module__")) return false;
  const std::string mod = py::str(type.attr("__module__"));
  return mod.rfind("torch", 0) == 0 && py::hasattr(obj, "data_ptr") && py::hasattr(obj, "is_contiguous");
}

// A checked view of a caller's host buffer. Holds the exporter (Py_buffer or the tensor) alive,
// so the memory stays valid while the GIL is released.
struct HostBuffer {
  std::optional<py::buffer_info> info;
  py::object tensor;
  void* ptr = nullptr;
  int64_t num_elems = 0;
  Elem elem = Elem::kF32;
  std::string description;  // "float32 NumPy array", "float16 torch tensor", ...

  template <class T>
  [[nodiscard]] std::span<T> span() const {
    return std::span<T>(static_cast<T*>(ptr), static_cast<size_t>(num_elems));
  }
  [[nodiscard]] size_t bytes() const { return static_cast<size_t>(num_elems) * elem_bytes(elem); }
};

std::string type_name(py::handle obj) { return py::str(py::type::handle_of(obj).attr("__name__")); }

// Reads any supported host buffer without checking its element type.
HostBuffer host_buffer(py::handle obj, const char* what, bool writable) {
  HostBuffer b;
  if (is_torch_tensor(obj)) {
    const std::string device = py::str(obj.attr("device").attr("type"));
    if (device != "cpu") {
      invalid(std::string(what) + ": a " + device +
              " tensor is not host memory; this call takes host buffers (gcomp's Python API copies device "
              "tensors to the host; docs/python.md)");
    }
    const std::string dtype = py::str(obj.attr("dtype"));
    const auto e = elem_of_torch(dtype);
    if (!e) invalid(std::string(what) + ": torch dtype " + dtype + " is not supported here");
    if (!obj.attr("is_contiguous")().cast<bool>()) invalid(std::string(what) + ": the torch tensor is not contiguous");
    b.tensor = py::reinterpret_borrow<py::object>(obj);
    b.elem = *e;
    b.num_elems = obj.attr("numel")().cast<int64_t>();
    b.ptr = reinterpret_cast<void*>(obj.attr("data_ptr")().cast<uintptr_t>());
    b.description = std::string(elem_name(*e)) + " torch tensor";
    return b;
  }
  if (!PyObject_CheckBuffer(obj.ptr())) {
    invalid(std::string(what) + ": expected a NumPy array, a buffer or a CPU torch tensor, got " + type_name(obj));
  }
  py::buffer_info info;
  try {
    info = py::reinterpret_borrow<py::buffer>(obj).request(writable);
  } catch (py::error_already_set& e) {
    if (writable && e.matches(PyExc_BufferError)) invalid(std::string(what) + ": the array is read-only");
    throw;
  }
  const auto e = elem_of_format(info.format);
  if (!e || static_cast<size_t>(info.itemsize) != elem_bytes(*e)) {
    invalid(std::string(what) + ": element format '" + info.format + "' (" + std::to_string(info.itemsize) +
            " bytes) is not one of float32, float64, float16, uint8, uint16 in native byte order");
  }
  // C-contiguous: strides are the row-major products (dimensions of extent 1 may have any stride).
  ssize_t expect = info.itemsize;
  for (ssize_t d = info.ndim - 1; d >= 0; --d) {
    if (info.shape[static_cast<size_t>(d)] != 1 && info.strides[static_cast<size_t>(d)] != expect) {
      invalid(std::string(what) + ": the array is not C-contiguous (use numpy.ascontiguousarray)");
    }
    expect *= info.shape[static_cast<size_t>(d)];
  }
  b.elem = *e;
  b.num_elems = static_cast<int64_t>(info.size);
  b.ptr = info.ptr;
  b.description = std::string(elem_name(*e)) + " array";
  b.info.emplace(std::move(info));
  return b;
}

// A host buffer of element type `elem` with `num_elems` elements (any count when < 0).
HostBuffer host_buffer(py::handle obj, const char* what, Elem elem, int64_t num_elems, bool writable) {
  HostBuffer b = host_buffer(obj, what, writable);
  // uint16 arrays carry the raw bits of bfloat16 / float16 gradients.
  const bool raw16 = b.elem == Elem::kU16 && (elem == Elem::kBF16 || elem == Elem::kF16);
  if (b.elem != elem && !raw16) {
    invalid(std::string(what) + ": expected " + elem_name(elem) + " elements, got a " + b.description);
  }
  if (num_elems >= 0 && b.num_elems != num_elems) {
    invalid(std::string(what) + ": expected " + std::to_string(num_elems) + " elements, got " +
            std::to_string(b.num_elems));
  }
  return b;
}

bool overlap(const HostBuffer& a, const HostBuffer& b) {
  const auto* pa = static_cast<const char*>(a.ptr);
  const auto* pb = static_cast<const char*>(b.ptr);
  return a.bytes() > 0 && b.bytes() > 0 && pa < pb + b.bytes() && pb < pa + a.bytes();
}

// A new 1-D NumPy array of n elements.
template <class T>
py::array_t<T> new_array(int64_t n) {
  return py::array_t<T>(static_cast<py::ssize_t>(n));
}

uint32_t u32(int64_t value, const char* what) {
  if (value < 0 || value > int64_t{0xffffffff}) {
    invalid(std::string(what) + ": " + std::to_string(value) + " is outside 0..2^32-1");
  }
  return static_cast<uint32_t>(value);
}

uint64_t seed_of(const py::object& seed) {
  // An integer (anything with __index__, not a bool or a float) in 0..2^64-1; never wrapped.
  if (PyBool_Check(seed.ptr()) || PyIndex_Check(seed.ptr()) == 0)
    invalid("seed: expected an integer in 0..2^64-1, got " + type_name(seed));
  PyObject* index = PyNumber_Index(seed.ptr());
  if (index == nullptr) throw py::error_already_set();
  const py::object v = py::reinterpret_steal<py::object>(index);
  const unsigned long long out = PyLong_AsUnsignedLongLong(v.ptr());
  if (out == static_cast<unsigned long long>(-1) && PyErr_Occurred() != nullptr) {
    PyErr_Clear();
    invalid("seed: " + std::string(py::repr(v)) + " is outside 0..2^64-1");
  }
  return static_cast<uint64_t>(out);
}

gcomp::Layout layout_of(const std::vector<int64_t>& segments) {
  if (segments.empty()) invalid("segments: need at least one segment size");
  return gcomp::Layout(segments);
}

// ------------------------------------------------------------------------------------------------
// Codec

const char* guarantee_kind(gcomp::Guarantee::Kind k) {
  switch (k) {
    case gcomp::Guarantee::Kind::kUnbiased: return "unbiased";
    case gcomp::Guarantee::Kind::kContractive: return "contractive";
    case gcomp::Guarantee::Kind::kNone: return "none";
  }
  return "none";
}

class CodecBinding {
 public:
  CodecBinding(const std::string& spec, const std::vector<int64_t>& segments, const py::object& seed)
      : codec_(gcomp::make_codec(spec, layout_of(segments))), seed_(seed_of(seed)) {
    const std::vector<uint8_t> zeros(codec_->encoded_bytes(), 0);
    framed_bytes_ = gcomp::frame_payload(*codec_, key(std::nullopt, 0, 0), zeros).size();
  }

  [[nodiscard]] const gcomp::Codec& codec() const { return *codec_; }
  [[nodiscard]] uint64_t seed() const { return seed_; }
  [[nodiscard]] size_t framed_bytes() const { return framed_bytes_; }

  [[nodiscard]] gcomp::RngKey key(const std::optional<py::object>& seed, int64_t rank, int64_t step) const {
    const uint64_t s = seed && !seed->is_none() ? seed_of(*seed) : seed_;
    return gcomp::RngKey{s, u32(rank, "rank"), u32(step, "step"), 0};
  }

  py::object encode(py::handle x, int64_t rank, int64_t step, const std::optional<py::object>& seed,
                    py::object out) const {
    const gcomp::RngKey k = key(seed, rank, step);
    const HostBuffer in = host_buffer(x, "encode: x", Elem::kF32, codec_->num_elems(), false);
    if (out.is_none()) out = new_array<uint8_t>(static_cast<int64_t>(codec_->encoded_bytes()));
    const HostBuffer payload =
        host_buffer(out, "encode: out", Elem::kU8, static_cast<int64_t>(codec_->encoded_bytes()), true);
    if (overlap(in, payload)) invalid("encode: x and out overlap");
    without_gil([&] { codec_->encode(in.span<const float>(), k, payload.span<uint8_t>()); });
    return out;
  }

  py::object decode(py::handle payload, int64_t rank, int64_t step, const std::optional<py::object>& seed,
                    py::object out) const {
    const gcomp::RngKey k = key(seed, rank, step);
    const HostBuffer p = host_buffer(payload, "decode: payload", Elem::kU8, -1, false);
    if (out.is_none()) out = new_array<float>(codec_->num_elems());
    const HostBuffer o = host_buffer(out, "decode: out", Elem::kF32, codec_->num_elems(), true);
    if (overlap(p, o)) invalid("decode: payload and out overlap");
    without_gil([&] { codec_->decode(p.span<const uint8_t>(), k, o.span<float>()); });
    return out;
  }

  py::object decode_accumulate(py::handle payload, py::object out, float weight, int64_t rank, int64_t step,
                               const std::optional<py::object>& seed) const {
    const gcomp::RngKey k = key(seed, rank, step);
    const HostBuffer p = host_buffer(payload, "decode_accumulate: payload", Elem::kU8, -1, false);
    const HostBuffer o = host_buffer(out, "decode_accumulate: out", Elem::kF32, codec_->num_elems(), true);
    if (overlap(p, o)) invalid("decode_accumulate: payload and out overlap");
    without_gil([&] { codec_->decode_accumulate(p.span<const uint8_t>(), k, weight, o.span<float>()); });
    return out;
  }

  // Bytes of a payload that carry its message (Codec::used_bytes): what a communicator sends.
  size_t used_bytes(py::handle payload) const {
    const HostBuffer p = host_buffer(payload, "used_bytes: payload", Elem::kU8, -1, false);
    return codec_->used_bytes(p.span<const uint8_t>());
  }

  py::array_t<uint8_t> frame(py::handle payload, int64_t rank, int64_t step,
                             const std::optional<py::object>& seed) const {
    const gcomp::RngKey k = key(seed, rank, step);
    const HostBuffer p = host_buffer(payload, "frame: payload", Elem::kU8, -1, false);
    if (p.bytes() != codec_->encoded_bytes()) {
      invalid("frame: payload has " + std::to_string(p.bytes()) + " bytes, the codec's payload has " +
              std::to_string(codec_->encoded_bytes()));
    }
    std::vector<uint8_t> framed;
    framed = without_gil([&] { return gcomp::frame_payload(*codec_, k, p.span<const uint8_t>()); });
    py::array_t<uint8_t> out = new_array<uint8_t>(static_cast<int64_t>(framed.size()));
    if (!framed.empty()) std::memcpy(out.mutable_data(), framed.data(), framed.size());
    return out;
  }

  // (raw payload copy, rank, step) of a frame that holds this codec's spec, layout and seed.
  py::tuple parse_frame(py::handle framed, const std::optional<py::object>& seed) const {
    const uint64_t want_seed = seed && !seed->is_none() ? seed_of(*seed) : seed_;
    const HostBuffer f = host_buffer(framed, "parse_frame: framed", Elem::kU8, -1, false);
    gcomp::FrameInfo info;
    info = without_gil([&] { return gcomp::parse_frame(f.span<const uint8_t>()); });
    auto mismatch = [](const std::string& m) { raise_error(gcompErrorMismatch, "parse_frame: " + m); };
    if (!(info.spec == codec_->spec())) {
      mismatch("the frame holds codec '" + info.spec.canonical() + "', this codec is '" + codec_->spec().canonical() +
               "'");
    }
    if (!(info.layout == codec_->layout())) {
      mismatch("the frame's layout (" + std::to_string(info.layout.num_elems()) +
               " elements) differs from the codec's (" + std::to_string(codec_->num_elems()) + " elements)");
    }
    if (info.key.seed != want_seed) {
      mismatch("the frame was encoded with seed " + std::to_string(info.key.seed) + ", expected seed " +
               std::to_string(want_seed));
    }
    if (info.key.stream_offset != 0) mismatch("the frame holds a downlink (server) message");
    const auto body = gcomp::frame_body(f.span<const uint8_t>(), info);
    py::array_t<uint8_t> raw = new_array<uint8_t>(static_cast<int64_t>(body.size()));
    if (!body.empty()) std::memcpy(raw.mutable_data(), body.data(), body.size());
    return py::make_tuple(raw, info.key.rank, info.key.step);
  }

  py::dict bits_report(py::handle x, int64_t rank, int64_t step, const std::optional<py::object>& seed,
                       int draws) const {
    gcomp::BitsReportOptions opt;
    opt.key = key(seed, rank, step);
    if (draws < 1) invalid("bits_report: draws must be >= 1, got " + std::to_string(draws));
    opt.draws = draws;
    const HostBuffer in = host_buffer(x, "bits_report: x", Elem::kF32, codec_->num_elems(), false);
    gcomp::BitsReport r;
    r = without_gil([&] { return gcomp::bits_report(*codec_, in.span<const float>(), opt); });
    py::dict d;
    d["spec"] = r.spec;
    d["num_elems"] = r.num_elems;
    d["bits"] = r.bits;
    d["bits_worst"] = r.bits_worst;
    d["bits_per_coord"] = r.bits_per_coord;
    d["guarantee"] = py::make_tuple(guarantee_kind(r.declared.kind), r.declared.omega, r.declared.delta);
    d["measured_is_omega"] = r.measured_is_omega;
    d["measured"] = r.measured;
    d["method"] = r.method == gcomp::ErrorMeasure::kExact        ? "exact"
                  : r.method == gcomp::ErrorMeasure::kMonteCarlo ? "monte-carlo"
                                                                 : "single-draw";
    d["draws"] = r.draws;
    d["lb_declared_bits"] = r.lb_declared_bits;
    d["lb_measured_bits"] = r.lb_measured_bits;
    d["r_declared"] = r.r_declared;
    d["r_measured"] = r.r_measured;
    return d;
  }

 private:
  std::unique_ptr<gcomp::Codec> codec_;
  uint64_t seed_ = 0;
  size_t framed_bytes_ = 0;
};

// ------------------------------------------------------------------------------------------------
// Communicators

class CommBinding {
 public:
  explicit CommBinding(std::shared_ptr<gcomp::Communicator> c)
      : comm_(std::move(c)), rank_(comm_->rank()), size_(comm_->size()) {}

  [[nodiscard]] std::shared_ptr<gcomp::Communicator> live() const {
    if (!comm_) invalid("the communicator is closed");
    return comm_;
  }
  [[nodiscard]] int rank() const { return rank_; }
  [[nodiscard]] int size() const { return size_; }
  [[nodiscard]] bool closed() const { return comm_ == nullptr; }
  void abort(const std::optional<std::string>& reason) const {
    live()->abort(reason ? *reason : std::string("aborted by the application"));
  }
  void close() {
    std::shared_ptr<gcomp::Communicator> c = std::move(comm_);
    without_gil([&] { c.reset(); });  // sessions on it keep it alive
  }

 private:
  std::shared_ptr<gcomp::Communicator> comm_;
  int rank_ = 0;
  int size_ = 0;
};

std::vector<CommBinding> local_group(int num_ranks, int64_t timeout_ms) {
  if (num_ranks < 1) invalid("local_group: num_ranks must be >= 1, got " + std::to_string(num_ranks));
  if (timeout_ms < 0) invalid("local_group: timeout_ms must be >= 0 (0: default), got " + std::to_string(timeout_ms));
  auto group = gcomp::make_local_group(num_ranks, gcomp::LocalOptions{timeout_ms});
  std::vector<CommBinding> out;
  out.reserve(group.size());
  for (auto& c : group) out.emplace_back(std::shared_ptr<gcomp::Communicator>(std::move(c)));
  return out;
}

/// This process's rank of a communicator whose collectives the Python object `transport` carries
/// (callback_comm.hpp; gcomp.ddp passes a torch.distributed process group wrapper).
CommBinding callback_comm(int rank, int size, py::object transport) {
  if (size < 1 || rank < 0 || rank >= size)
    invalid("callback_comm: need 0 <= rank < size, got rank " + std::to_string(rank) + " of " + std::to_string(size));
  for (const char* method : {"allgather", "alltoall", "broadcast", "barrier"}) {
    if (!py::hasattr(transport, method)) invalid(std::string("callback_comm: the transport has no method ") + method);
  }
  return CommBinding(std::make_shared<gcomp_py::CallbackCommunicator>(rank, size, std::move(transport)));
}

CommBinding mpi_comm(int64_t timeout_ms) {
  if (timeout_ms < 0) invalid("mpi_comm: timeout_ms must be >= 0 (0: default), got " + std::to_string(timeout_ms));
  if (!gcomp::mpi_available()) {
    raise_error(gcompErrorNotSupported, "mpi_comm: this gcomp build has no MPI (configure with -DGCOMP_MPI=ON)");
  }
  std::unique_ptr<gcomp::Communicator> c;
  c = without_gil([&] { return gcomp::make_mpi_world(gcomp::MpiOptions{timeout_ms}); });
  raise_pending_interrupt();
  return CommBinding(std::shared_ptr<gcomp::Communicator>(std::move(c)));
}

/// Empty when this build and this machine can run the nccl backend, else the reason: no nccl
/// backend, NCCL cannot be loaded (gcomp::nccl_unusable loads it on the first call: the NCCL
/// already in the process, e.g. torch's, else GCOMP_NCCL_LIBRARY / libnccl.so.2 / the toolkit's),
/// or no usable CUDA device.
std::string nccl_unusable() {
  if (std::string why = gcomp::nccl_unusable(); !why.empty()) return why;
#if defined(GCOMP_HAVE_CUDA)
  std::string why;
  if (!gcomp::cuda::device_available(&why)) return "no usable CUDA device (" + why + ")";
#endif
  return {};
}

/// This process's rank of an nccl communicator, the NCCL id exchanged over TCP: rank 0 listens on
/// master_addr:master_port (docs/python.md "DDP hook on CUDA buckets").
CommBinding nccl_comm(int rank, int world_size, const std::string& master_addr, int master_port, int device,
                      int64_t timeout_ms) {
  if (timeout_ms < 0) invalid("nccl_comm: timeout_ms must be >= 0 (0: default), got " + std::to_string(timeout_ms));
  if (world_size < 1 || rank < 0 || rank >= world_size)
    invalid("nccl_comm: need 0 <= rank < world_size, got rank " + std::to_string(rank) + " of " +
            std::to_string(world_size));
  if (master_addr.empty()) invalid("nccl_comm: master_addr is empty");
  if (master_port < 1 || master_port > 65535)
    invalid("nccl_comm: master_port " + std::to_string(master_port) + " is outside 1..65535");
  if (const std::string why = nccl_unusable(); !why.empty()) raise_error(gcompErrorNotSupported, "nccl_comm: " + why);
  gcomp::NcclOptions o;
  o.bootstrap = gcomp::NcclBootstrap::kTcp;
  o.rank = rank;
  o.world_size = world_size;
  o.master_addr = master_addr;
  o.master_port = master_port;
  o.device = device;
  o.timeout_ms = timeout_ms;
  std::unique_ptr<gcomp::Communicator> c;
  c = without_gil([&] { return gcomp::make_nccl_communicator(o); });
  return CommBinding(std::shared_ptr<gcomp::Communicator>(std::move(c)));
}

// ------------------------------------------------------------------------------------------------
// Session configuration: gcomp::SessionConfig with string-valued enums.

// The names come from the one table per enum in <gcomp/names.hpp>.
template <class E>
E choose(const std::string& value, const char* what) {
  for (const auto& e : gcomp::enum_names<E>()) {
    if (value == e.name) return e.value;
  }
  std::string valid;
  for (const auto& e : gcomp::enum_names<E>()) valid += (valid.empty() ? "'" : ", '") + std::string(e.name) + "'";
  invalid(std::string(what) + ": '" + value + "' is not one of " + valid);
}

template <class E>
py::tuple names_of() {
  py::list out;
  for (const auto& e : gcomp::enum_names<E>()) out.append(e.name);
  return py::tuple(out);
}

// The Python callables of hessian-ec and the exception one of them raised during the current
// call. Shared by the std::function wrappers in the SessionConfig (copied without the GIL while a
// Session is built), so it is held by shared_ptr; its Python references die under the GIL.
struct Callbacks {
  py::object product;
  py::object diagonal;
  py::object error;  // the exception a callback raised in the current step, if any
  Callbacks() = default;
  Callbacks(const Callbacks&) = delete;
  Callbacks& operator=(const Callbacks&) = delete;
  ~Callbacks() {
    if (Py_IsInitialized() == 0) {
      (void)product.release();
      (void)diagonal.release();
      (void)error.release();
      return;
    }
    py::gil_scoped_acquire gil;
    product = py::object();
    diagonal = py::object();
    error = py::object();
  }
};

[[noreturn]] void callback_failed(Callbacks& cb, const char* which, py::error_already_set& e) {
  cb.error = e.value();
  GCOMP_FAIL(gcompErrorInvalidArgument, std::string("the ") + which + " callback raised " + e.what());
}

struct ConfigBinding {
  gcomp::SessionConfig cfg;
  std::shared_ptr<Callbacks> callbacks = std::make_shared<Callbacks>();

  void set_product(const py::object& fn) {
    callbacks->product = fn;
    if (fn.is_none()) {
      cfg.hessian_product = nullptr;
      return;
    }
    cfg.hessian_product = [cb = callbacks](std::span<const double> v, std::span<double> out) {
      py::gil_scoped_acquire gil;
      try {
        // Copies: the callback may keep its arguments; session memory must not outlive the call.
        py::array_t<double> pv = new_array<double>(static_cast<int64_t>(v.size()));
        py::array_t<double> po = new_array<double>(static_cast<int64_t>(out.size()));
        if (!v.empty()) std::memcpy(pv.mutable_data(), v.data(), v.size_bytes());
        std::fill(po.mutable_data(), po.mutable_data() + out.size(), 0.0);
        cb->product(pv, po);
        if (!out.empty()) std::memcpy(out.data(), po.data(), out.size_bytes());
      } catch (py::error_already_set& e) {
        callback_failed(*cb, "hessian_product", e);
      }
    };
  }
  void set_diagonal(const py::object& fn) {
    callbacks->diagonal = fn;
    if (fn.is_none()) {
      cfg.hessian_diagonal = nullptr;
      return;
    }
    cfg.hessian_diagonal = [cb = callbacks](std::span<double> out) {
      py::gil_scoped_acquire gil;
      try {
        py::array_t<double> po = new_array<double>(static_cast<int64_t>(out.size()));
        std::fill(po.mutable_data(), po.mutable_data() + out.size(), 0.0);
        cb->diagonal(po);
        if (!out.empty()) std::memcpy(out.data(), po.data(), out.size_bytes());
      } catch (py::error_already_set& e) {
        callback_failed(*cb, "hessian_diagonal", e);
      }
    };
  }
};

// ------------------------------------------------------------------------------------------------
// Session

py::dict stats_dict(const gcomp::StepStats& s) {
  py::dict d;
  d["step"] = s.step;
  d["bytes_up"] = s.bytes_up;
  d["bytes_down"] = s.bytes_down;
  d["bytes_received"] = s.bytes_received;
  d["bits_per_element_up"] = s.bits_per_element_up;
  d["bits_per_element_down"] = s.bits_per_element_down;
  d["skipped"] = s.skipped;
  d["memory_norm_sq"] = s.memory_norm_sq;
  d["compression_error_sq"] = s.compression_error_sq;
  d["encode_us"] = s.encode_us;
  d["comm_us"] = s.comm_us;
  d["decode_us"] = s.decode_us;
  d["update_us"] = s.update_us;
  return d;
}

class SessionBinding {
 public:
  SessionBinding(const CommBinding& comm, const std::vector<int64_t>& segments, const ConfigBinding& config)
      : comm_(comm.live()), callbacks_(config.callbacks) {
    gcomp::Layout layout = layout_of(segments);
    gcomp::SessionConfig cfg = config.cfg;  // copies std::function wrappers (shared_ptr only)
    (void)gcomp_py::take_pending_cause();
    try {
      // collective: the peers run on other Python threads
      session_ =
          without_gil([&] { return std::make_unique<gcomp::Session>(*comm_, std::move(layout), std::move(cfg)); });
    } catch (const gcomp::Error& e) {
      raise_pending_interrupt();
      raise_error(e.status(), e.what(), gcomp_py::take_pending_cause());  // a Python transport's exception
    }
    raise_pending_interrupt();
  }

  // The GIL stays held: freeing a session waits for nothing another Python thread does, and a
  // destructor must not take the GIL back (see without_gil).
  ~SessionBinding() { session_.reset(); }
  SessionBinding(const SessionBinding&) = delete;
  SessionBinding& operator=(const SessionBinding&) = delete;

  // Runs fn (a step, save, load) with the GIL released and the session locked against other
  // threads; a gcomp::Error raised by a Python callback gets that exception as its __cause__.
  template <class Fn>
  auto run(const char* what, Fn&& fn) {
    std::unique_lock lock(mu_, std::try_to_lock);
    if (!lock.owns_lock()) invalid(std::string(what) + ": the session is in use by another thread");
    if (!session_) invalid(std::string(what) + ": the session is closed");
    callbacks_->error = py::object();
    (void)gcomp_py::take_pending_cause();
    try {
      auto result = without_gil([&] { return fn(*session_); });
      raise_pending_interrupt();  // Ctrl-C right as the step completed: the step stands, then it raises
      return result;
    } catch (const gcomp::Error& e) {
      raise_pending_interrupt();  // Ctrl-C stopped the wait: KeyboardInterrupt, not gcomp.Error
      py::object cause = std::move(callbacks_->error);
      py::object transport_cause = gcomp_py::take_pending_cause();  // a Python transport's exception
      raise_error(e.status(), e.what(), cause ? cause : transport_cause);
    }
  }

  gcomp::Session& live() {
    if (!session_) invalid("the session is closed");
    return *session_;
  }

  py::tuple step(py::handle grad, py::object update) {
    const int64_t n = live().layout().num_elems();
    HostBuffer g = host_buffer(grad, "step: grad", false);
    switch (g.elem) {
      case Elem::kF64: return step_typed<double>(g, std::move(update), n, Elem::kF64);
      case Elem::kF32: return step_typed<float>(g, std::move(update), n, Elem::kF32);
      case Elem::kF16: return step16(std::move(g), std::move(update), n, false);
      case Elem::kBF16: return step16(std::move(g), std::move(update), n, true);
      default:
        invalid("step: grad is a " + g.description +
                "; expected float64, float32, float16 or bfloat16 (raw 16-bit patterns: step_bf16 / step_f16)");
    }
  }

  py::tuple step_raw16(py::handle grad, py::object update, bool bf16) {
    const int64_t n = live().layout().num_elems();
    const char* what = bf16 ? "step_bf16: grad" : "step_f16: grad";
    HostBuffer g = host_buffer(grad, what, bf16 ? Elem::kBF16 : Elem::kF16, n, false);
    return step16(std::move(g), std::move(update), n, bf16);
  }

  // backend "cuda": one step on CUDA tensors (float32, bfloat16 or float16 gradient, float32
  // update, both contiguous on the same device), enqueued on `stream` (the caller passes torch's
  // current stream); the update is written when the step succeeds.
  py::dict step_device(py::handle grad, py::handle update, uintptr_t stream) {
    const int64_t n = live().layout().num_elems();
    auto device_tensor = [n](py::handle t, const char* what) {
      if (!is_torch_tensor(t)) invalid(std::string(what) + ": expected a CUDA torch tensor, got " + type_name(t));
      const std::string device = py::str(t.attr("device").attr("type"));
      if (device != "cuda") invalid(std::string(what) + ": expected a CUDA tensor, got a " + device + " tensor");
      if (!t.attr("is_contiguous")().cast<bool>()) invalid(std::string(what) + ": the tensor is not contiguous");
      if (t.attr("numel")().cast<int64_t>() != n) {
        invalid(std::string(what) + ": expected " + std::to_string(n) + " elements, got " +
                std::to_string(t.attr("numel")().cast<int64_t>()));
      }
      return std::make_pair(reinterpret_cast<void*>(t.attr("data_ptr")().cast<uintptr_t>()),
                            std::string(py::str(t.attr("dtype"))));
    };
    const auto [d_grad, gdt] = device_tensor(grad, "step: grad");
    const auto [d_update, udt] = device_tensor(update, "step: update");
    if (udt != "torch.float32") invalid("step: update: expected a float32 CUDA tensor, got " + udt);
    gcomp::GradType type = gcomp::GradType::kF32;
    if (gdt == "torch.bfloat16") {
      type = gcomp::GradType::kBF16;
    } else if (gdt == "torch.float16") {
      type = gcomp::GradType::kF16;
    } else if (gdt != "torch.float32") {
      invalid("step: grad: expected a float32, bfloat16 or float16 CUDA tensor, got " + gdt);
    }
    const gcomp::StepStats st = run("step", [&](gcomp::Session& s) {
      return s.step_device(d_grad, type, static_cast<float*>(d_update), reinterpret_cast<gcomp::Stream>(stream));
    });
    return stats_dict(st);
  }

  py::tuple apply(py::handle grad, py::object x) {
    const int64_t n = live().layout().num_elems();
    const HostBuffer g = host_buffer(grad, "apply: grad", Elem::kF64, n, false);
    const HostBuffer xb = host_buffer(x, "apply: x", Elem::kF64, n, true);
    // Session::apply consumes the gradient before it writes x, so they may overlap.
    const gcomp::StepStats st =
        run("apply", [&](gcomp::Session& s) { return s.apply(g.span<const double>(), xb.span<double>()); });
    return py::make_tuple(x, stats_dict(st));
  }

  void save(const std::string& path) {
    run("save", [&](gcomp::Session& s) {
      s.save(path);
      return 0;
    });
  }
  void load(const std::string& path) {
    run("load", [&](gcomp::Session& s) {
      s.load(path);
      return 0;
    });
  }

  py::dict state() {
    py::dict d;
    for (const auto& [name, v] : live().state()) {
      py::array_t<double> a = new_array<double>(static_cast<int64_t>(v->size()));
      if (!v->empty()) std::memcpy(a.mutable_data(), v->data(), v->size() * sizeof(double));
      d[py::str(name)] = a;
    }
    return d;
  }

  void close() {
    std::unique_lock lock(mu_, std::try_to_lock);
    if (!lock.owns_lock()) invalid("close: the session is in use by another thread");
    std::unique_ptr<gcomp::Session> s = std::move(session_);
    without_gil([&] { s.reset(); });
  }
  [[nodiscard]] bool closed() const { return session_ == nullptr; }

 private:
  template <class T>
  py::tuple step_typed(const HostBuffer& g, py::object update, int64_t n, Elem elem) {
    if (g.num_elems != n)
      invalid("step: grad: expected " + std::to_string(n) + " elements, got " + std::to_string(g.num_elems));
    if (update.is_none()) update = new_array<T>(n);
    const HostBuffer u = host_buffer(update, "step: update", elem, n, true);
    std::vector<T> scratch;
    // The update is written only on success and the gradient may overlap it: step into scratch
    // when they share memory (as gcompSessionStep does).
    const bool alias = overlap(g, u);
    const gcomp::StepStats st = run("step", [&](gcomp::Session& s) {
      if (!alias) return s.step(g.span<const T>(), u.span<T>());
      scratch.resize(static_cast<size_t>(n));
      const gcomp::StepStats r = s.step(g.span<const T>(), std::span<T>(scratch));
      std::copy(scratch.begin(), scratch.end(), u.span<T>().begin());
      return r;
    });
    return py::make_tuple(update, stats_dict(st));
  }

  py::tuple step16(HostBuffer g, py::object update, int64_t n, bool bf16) {
    if (g.num_elems != n)
      invalid("step: grad: expected " + std::to_string(n) + " elements, got " + std::to_string(g.num_elems));
    if (update.is_none()) update = new_array<double>(n);
    const HostBuffer u = host_buffer(update, "step: update", Elem::kF64, n, true);
    // step_bf16/step_f16 widen the whole gradient before they write the update: overlap is fine.
    const gcomp::StepStats st = run("step", [&](gcomp::Session& s) {
      return bf16 ? s.step_bf16(g.span<const uint16_t>(), u.span<double>())
                  : s.step_f16(g.span<const uint16_t>(), u.span<double>());
    });
    return py::make_tuple(update, stats_dict(st));
  }

  std::shared_ptr<gcomp::Communicator> comm_;  // declared first: outlives the session
  std::shared_ptr<Callbacks> callbacks_;
  std::unique_ptr<gcomp::Session> session_;
  std::mutex mu_;
};

}  // namespace

PYBIND11_MODULE(_core, m) {
  m.doc() = "gcomp C++ API bindings (the gcomp package's extension; docs/python.md)";
  g_error_class = py::object(py::module_::import("gcomp._errors").attr("Error")).release().ptr();

  py::register_exception_translator([](std::exception_ptr p) {
    try {
      if (p) std::rethrow_exception(p);
    } catch (const gcomp::Error& e) {
      if (PyErr_Occurred() != nullptr) return;  // a KeyboardInterrupt that stopped the call stays
      py::object exc = py::reinterpret_borrow<py::object>(g_error_class)(static_cast<int>(e.status()), e.what());
      PyErr_SetObject(g_error_class, exc.ptr());
    }
  });
  g_main_thread = py::module_::import("threading").attr("main_thread")().attr("ident").cast<unsigned long>();
  gcomp::set_wait_interrupt_check(&python_interrupt_check);
  // Removed before the interpreter finalizes (a wait after that must not touch Python).
  py::module_::import("atexit").attr("register")(py::cpp_function([] { gcomp::set_wait_interrupt_check(nullptr); }));

  m.attr("VERSION_CODE") = GCOMP_VERSION_CODE;
  m.attr("MPI_AVAILABLE") = gcomp::mpi_available();
  // The name tables of <gcomp/names.hpp>, in enumerator order (gcomp.ddp validates against them).
  py::dict enum_names;
  enum_names["algorithm"] = names_of<gcomp::Algorithm>();
  enum_names["server"] = names_of<gcomp::ServerMode>();
  enum_names["backend"] = names_of<gcomp::Backend>();
  enum_names["nonfinite"] = names_of<gcomp::NonFinitePolicy>();
  enum_names["prox"] = names_of<gcomp::Regularizer>();
  enum_names["compensation"] = names_of<gcomp::Compensation>();
  enum_names["delay_mode"] = names_of<gcomp::DelayMode>();
  enum_names["grad_type"] = names_of<gcomp::GradType>();
  m.attr("ENUM_NAMES") = enum_names;
  m.def(
      "version", [] { return gcompGetVersion(); }, "gcompGetVersion(): major * 10000 + minor * 100 + patch");
  m.def(
      "status_string", [](int status) { return std::string(gcompGetErrorString(static_cast<gcompStatus_t>(status))); },
      py::arg("status"));

  m.def(
      "canonical_spec", [](const std::string& spec) { return gcomp::CodecSpec::parse(spec).canonical(); },
      py::arg("spec"), "The canonical text of a codec spec (every parameter, fixed order).");
  m.def("list_codecs", [] {
    py::list out;
    for (const auto& c : gcomp::list_codecs()) {
      py::dict d;
      d["name"] = c.name;
      d["params"] = c.params;
      d["guarantee"] = c.guarantee;
      d["bits"] = c.bits;
      d["examples"] = c.examples;
      out.append(d);
    }
    return out;
  });

  py::class_<gcomp::Layout>(m, "Layout")
      .def(py::init([](const std::vector<int64_t>& segments) { return layout_of(segments); }), py::arg("segments"))
      .def_property_readonly("num_elems", &gcomp::Layout::num_elems)
      .def_property_readonly("segments", &gcomp::Layout::segments)
      .def_property_readonly("digest", &gcomp::Layout::digest);

  py::class_<CodecBinding>(m, "Codec")
      .def(py::init<const std::string&, const std::vector<int64_t>&, const py::object&>(), py::arg("spec"),
           py::arg("segments"), py::arg("seed") = 0)
      .def_property_readonly("spec", [](const CodecBinding& c) { return c.codec().spec().canonical(); })
      .def_property_readonly("segments", [](const CodecBinding& c) { return c.codec().layout().segments(); })
      .def_property_readonly("seed", &CodecBinding::seed)
      .def_property_readonly("num_elems", [](const CodecBinding& c) { return c.codec().num_elems(); })
      .def_property_readonly("encoded_bytes", [](const CodecBinding& c) { return c.codec().encoded_bytes(); })
      .def_property_readonly("encoded_bits", [](const CodecBinding& c) { return c.codec().encoded_bits(); })
      .def_property_readonly("framed_bytes", &CodecBinding::framed_bytes)
      .def_property_readonly("randomized", [](const CodecBinding& c) { return c.codec().randomized(); })
      .def_property_readonly("variable_length", [](const CodecBinding& c) { return c.codec().variable_length(); })
      .def("used_bytes", &CodecBinding::used_bytes, py::arg("payload"))
      .def_property_readonly("guarantee",
                             [](const CodecBinding& c) {
                               const gcomp::Guarantee g = c.codec().guarantee();
                               const char* kind = guarantee_kind(g.kind);
                               return py::make_tuple(kind, g.kind == gcomp::Guarantee::Kind::kUnbiased ? g.omega : 0.0,
                                                     g.kind == gcomp::Guarantee::Kind::kContractive ? g.delta : 0.0);
                             })
      .def("encode", &CodecBinding::encode, py::arg("x"), py::arg("rank") = 0, py::arg("step") = 0,
           py::arg("seed") = py::none(), py::arg("out") = py::none())
      .def("decode", &CodecBinding::decode, py::arg("payload"), py::arg("rank") = 0, py::arg("step") = 0,
           py::arg("seed") = py::none(), py::arg("out") = py::none())
      .def("decode_accumulate", &CodecBinding::decode_accumulate, py::arg("payload"), py::arg("out"),
           py::arg("weight") = 1.0f, py::arg("rank") = 0, py::arg("step") = 0, py::arg("seed") = py::none())
      .def("frame", &CodecBinding::frame, py::arg("payload"), py::arg("rank") = 0, py::arg("step") = 0,
           py::arg("seed") = py::none())
      .def("parse_frame", &CodecBinding::parse_frame, py::arg("framed"), py::arg("seed") = py::none())
      .def("bits_report", &CodecBinding::bits_report, py::arg("x"), py::arg("rank") = 0, py::arg("step") = 0,
           py::arg("seed") = py::none(), py::arg("draws") = 32);

  py::class_<CommBinding>(m, "Communicator")
      .def_property_readonly("rank", &CommBinding::rank)
      .def_property_readonly("size", &CommBinding::size)
      .def_property_readonly("closed", &CommBinding::closed)
      .def_property_readonly("backend", [](const CommBinding& c) { return std::string(c.live()->backend()); })
      .def("abort", &CommBinding::abort, py::arg("reason") = py::none())
      .def("close", &CommBinding::close);
  m.def("local_group", &local_group, py::arg("num_ranks"), py::arg("timeout_ms") = 0);
  m.def("mpi_comm", &mpi_comm, py::arg("timeout_ms") = 0);
  m.def("callback_comm", &callback_comm, py::arg("rank"), py::arg("size"), py::arg("transport"),
        "A communicator whose collectives the Python object `transport` carries (allgather, alltoall, broadcast, "
        "barrier over uint8 arrays; allreduce is an allgather reduced here in rank order)");
  m.def("nccl_comm", &nccl_comm, py::arg("rank"), py::arg("world_size"), py::arg("master_addr"), py::arg("master_port"),
        py::arg("device") = -1, py::arg("timeout_ms") = 0);
  m.def("nccl_unusable", &nccl_unusable,
        "'' when this build has the nccl backend, NCCL loads and a CUDA device is visible, else the reason");
  m.def(
      "nccl_library", [] { return std::make_pair(gcomp::nccl_library(), gcomp::nccl_version()); },
      "(path, version code) of the NCCL the nccl backend loaded (loading it on the first call); ('', 0) "
      "when it cannot be loaded or the build has no nccl backend");

  py::class_<ConfigBinding>(m, "SessionConfig")
      .def(py::init<>())
      .def_property(
          "algorithm", [](const ConfigBinding& c) { return std::string(gcomp::algorithm_name(c.cfg.algorithm)); },
          [](ConfigBinding& c, const std::string& v) { c.cfg.algorithm = gcomp::parse_algorithm(v); })
      .def_property(
          "codec", [](const ConfigBinding& c) { return c.cfg.codec; },
          [](ConfigBinding& c, const std::string& v) { c.cfg.codec = v; })
      .def_property(
          "server_codec", [](const ConfigBinding& c) { return c.cfg.server_codec; },
          [](ConfigBinding& c, const std::string& v) { c.cfg.server_codec = v; })
      .def_property(
          "lr", [](const ConfigBinding& c) { return c.cfg.lr; }, [](ConfigBinding& c, double v) { c.cfg.lr = v; })
      .def_property(
          "alpha", [](const ConfigBinding& c) { return c.cfg.alpha; },
          [](ConfigBinding& c, double v) { c.cfg.alpha = v; })
      .def_property(
          "momentum", [](const ConfigBinding& c) { return c.cfg.momentum; },
          [](ConfigBinding& c, double v) { c.cfg.momentum = v; })
      .def_property(
          "nesterov", [](const ConfigBinding& c) { return c.cfg.nesterov; },
          [](ConfigBinding& c, bool v) { c.cfg.nesterov = v; })
      .def_property(
          "delay", [](const ConfigBinding& c) { return c.cfg.delay; }, [](ConfigBinding& c, int v) { c.cfg.delay = v; })
      .def_property(
          "seed", [](const ConfigBinding& c) { return c.cfg.seed; },
          [](ConfigBinding& c, const py::object& v) { c.cfg.seed = seed_of(v); })
      .def_property(
          "prox", [](const ConfigBinding& c) { return std::string(gcomp::enum_name(c.cfg.prox)); },
          [](ConfigBinding& c, const std::string& v) { c.cfg.prox = choose<gcomp::Regularizer>(v, "prox"); })
      .def_property(
          "prox_lambda", [](const ConfigBinding& c) { return c.cfg.prox_lambda; },
          [](ConfigBinding& c, double v) { c.cfg.prox_lambda = v; })
      .def_property(
          "nonfinite", [](const ConfigBinding& c) { return std::string(gcomp::enum_name(c.cfg.nonfinite)); },
          [](ConfigBinding& c, const std::string& v) {
            c.cfg.nonfinite = choose<gcomp::NonFinitePolicy>(v, "nonfinite");
          })
      .def_property(
          "tie_to_zero", [](const ConfigBinding& c) { return c.cfg.tie_to_zero; },
          [](ConfigBinding& c, bool v) { c.cfg.tie_to_zero = v; })
      .def_property(
          "shared_scale", [](const ConfigBinding& c) { return c.cfg.shared_scale; },
          [](ConfigBinding& c, bool v) { c.cfg.shared_scale = v; })
      .def_property(
          "server", [](const ConfigBinding& c) { return std::string(gcomp::enum_name(c.cfg.server)); },
          [](ConfigBinding& c, const std::string& v) { c.cfg.server = choose<gcomp::ServerMode>(v, "server"); })
      .def_property(
          "compensation", [](const ConfigBinding& c) { return std::string(gcomp::enum_name(c.cfg.compensation)); },
          [](ConfigBinding& c, const std::string& v) {
            c.cfg.compensation = choose<gcomp::Compensation>(v, "compensation");
          })
      .def_property(
          "backend", [](const ConfigBinding& c) { return std::string(gcomp::backend_name(c.cfg.backend)); },
          [](ConfigBinding& c, const std::string& v) { c.cfg.backend = gcomp::parse_backend(v); })
      .def_property(
          "track_norms", [](const ConfigBinding& c) { return c.cfg.track_norms; },
          [](ConfigBinding& c, bool v) { c.cfg.track_norms = v; })
      .def_property(
          "time_phases", [](const ConfigBinding& c) { return c.cfg.time_phases; },
          [](ConfigBinding& c, bool v) { c.cfg.time_phases = v; })
      .def_property(
          "hessian_product", [](const ConfigBinding& c) { return c.callbacks->product; }, &ConfigBinding::set_product)
      .def_property(
          "hessian_diagonal", [](const ConfigBinding& c) { return c.callbacks->diagonal; },
          &ConfigBinding::set_diagonal)
      .def("canonical", [](const ConfigBinding& c) { return c.cfg.canonical(); });

  py::class_<SessionBinding>(m, "Session")
      .def(py::init<const CommBinding&, const std::vector<int64_t>&, const ConfigBinding&>(), py::arg("comm"),
           py::arg("segments"), py::arg("config"))
      .def_property_readonly("num_elems", [](SessionBinding& s) { return s.live().layout().num_elems(); })
      .def_property_readonly("step_count", [](SessionBinding& s) { return s.live().step_count(); })
      .def_property_readonly("alpha", [](SessionBinding& s) { return s.live().alpha(); })
      .def_property_readonly("closed", &SessionBinding::closed)
      .def("step", &SessionBinding::step, py::arg("grad"), py::arg("update") = py::none(),
           "One step; returns (update, stats). float64/float32 gradients give an update of the same type, "
           "float16/bfloat16 ones a float64 update.")
      .def(
          "step_bf16",
          [](SessionBinding& s, py::handle g, py::object u) { return s.step_raw16(g, std::move(u), true); },
          py::arg("grad"), py::arg("update") = py::none())
      .def(
          "step_f16",
          [](SessionBinding& s, py::handle g, py::object u) { return s.step_raw16(g, std::move(u), false); },
          py::arg("grad"), py::arg("update") = py::none())
      .def("apply", &SessionBinding::apply, py::arg("grad"), py::arg("x"))
      .def("step_device", &SessionBinding::step_device, py::arg("grad"), py::arg("update"), py::arg("stream"),
           "backend 'cuda': one step on CUDA tensors, enqueued on the CUDA stream whose handle is `stream`")
      .def_property_readonly(
          "backend", [](SessionBinding& s) { return std::string(gcomp::backend_name(s.live().config().backend)); })
      .def("state", &SessionBinding::state)
      .def("save", &SessionBinding::save, py::arg("path"))
      .def("load", &SessionBinding::load, py::arg("path"))
      .def("close", &SessionBinding::close);
}
