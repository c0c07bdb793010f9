// SPDX-License-Identifier: Apache-2.0
// The vector-operations interface of the Session engine (docs/algorithms.md "Backends").
//
// The orchestration of every algorithm (host/algorithms/engine.cpp) is written once against
// VecOps<T>, T the type of the state: three implementations:
//  - VecOps<double> on the host (host_ops.cpp): backend "cpu", double state, fp32 messages;
//  - VecOps<float> on the host (host_ops.cpp): backend "host-f32", the twin the CPU suite tests;
//  - VecOps<float> on the device (cuda/session/device_ops.cu): backend "cuda", DeviceCodec calls
//    and small kernels on one stream.
// Buffers come from alloc*() and live in the implementation's memory space; the engine only does
// pointer arithmetic on them. fp32 elementwise math is gcomp/detail/session_math.hpp on both fp32
// implementations, so they round identically. Host-compiler clean: no CUDA types.
#pragma once

#include <gcomp/codec.hpp>
#include <gcomp/comm.hpp>
#include <gcomp/session.hpp>

#include <array>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <vector>

namespace gcomp::detail {

/// The status word of a rank whose gradient holds NaN/Inf, in the first exchange of a late-agreement
/// step (docs/algorithms.md "Non-finite gradients"): no gcompStatus_t value, so that every rank tells
/// it from a failure of the algorithm's own values (gcompErrorNonFinite).
constexpr int32_t kNonFiniteGradientWord = (1 << 16) | gcompErrorNonFinite;

/// The phases of a step, as StepStats reports their times (time_phases) and NVTX names them.
enum class Phase : int { kEncode = 0, kComm = 1, kDecode = 2, kUpdate = 3 };
inline constexpr int kNumPhases = 4;

template <class T>
class VecOps {
 public:
  virtual ~VecOps() = default;

  /// True for the device implementation (buffers are device memory).
  [[nodiscard]] virtual bool on_device() const = 0;
  /// step_device: later operations are enqueued on the caller's `stream` (device), after the
  /// previous step_device's work; ignored on the host. Undone by use_own_stream().
  virtual void set_stream(Stream stream) = 0;
  /// End of a step_device: later operations (the host API, state, checkpoints) go to the
  /// implementation's own stream again, ordered on the device after the work enqueued on the
  /// caller's stream; the caller's stream is not used again (it may be destroyed). Host: no-op.
  virtual void use_own_stream() = 0;

  // Memory (allocated at setup, owned by the implementation, zero-filled).
  virtual T* alloc(size_t n) = 0;
  virtual uint8_t* alloc_bytes(size_t n) = 0;
  /// Host <-> implementation memory; both return when the host side may be reused (device: syncs).
  virtual void to_host(T* h_dst, const T* src, size_t n) = 0;
  virtual void from_host(T* dst, const T* h_src, size_t n) = 0;

  // Elementwise (n elements; dst may equal an input).
  virtual void copy(T* dst, const T* src, size_t n) = 0;
  virtual void fill_zero(T* dst, size_t n) = 0;
  /// dst = widen(src): exact bf16/f16 -> T, or a copy of T values (kF32 on an fp32 backend).
  virtual void widen(const void* src, GradType type, T* dst, size_t n) = 0;
  /// dst[i] = finite(src[i]) ? src[i] : +0 (dst may equal src); finite in fp32, as nonfinite_agree.
  virtual void zero_nonfinite(T* dst, const T* src, size_t n) = 0;
  /// The step's gradient as the implementation's kernels load it, without the copy widen() and
  /// zero_nonfinite() would write: after it returns true, g (n elements from alloc()) stands, until
  /// the next begin_step(), for src widened exactly from `type` (kF32: src's floats) and with `zero`
  /// its NaN/Inf as +0 (zero_nonfinite's bits). Every call that reads elements of g loads them from
  /// src instead (the same floats); a call that cannot writes g first (that copy, once), so the
  /// engine passes the view only where every consumer of g takes it. src may be g itself (kF32 with
  /// zero). false (the host implementations): nothing done, the caller writes g.
  virtual bool view_input(T* /*g*/, const void* /*src*/, GradType /*type*/, bool /*zero*/, size_t /*n*/) {
    return false;
  }
  /// dst = a * x
  virtual void scale(T* dst, T a, const T* x, size_t n) = 0;
  /// dst = a * x + b * y (two products, then their sum; never fused)
  virtual void lincomb(T* dst, T a, const T* x, T b, const T* y, size_t n) = 0;
  /// dst = x * y
  virtual void mul(T* dst, const T* x, const T* y, size_t n) = 0;
  /// u = lr * vote(acc): +1, -1, or for a tie 0 (tie_to_zero) / +1
  virtual void vote(T* u, const T* acc, T lr, bool tie_to_zero, size_t n) = 0;

  /// Non-finite agreement: local = any non-finite in x (this rank), any = max over all ranks
  /// (an allreduce). Device: the host reads both (syncs). "Non-finite" is in the precision of the
  /// messages (fp32): a double beyond the fp32 range counts (zero_nonfinite zeroes it too).
  virtual void nonfinite_agree(const T* x, size_t n, int64_t* local, int64_t* any) = 0;
  /// The late agreement with asynchronous errors (device; docs/algorithms.md "Non-finite
  /// gradients"): between begin_agreement(x, n) and end_agreement(), every status word this rank
  /// sends (put_status; with a host communicator also the device error staged into a message) is
  /// kNonFiniteGradientWord when it would be 0 or gcompErrorNonFinite, a kernel of the step has
  /// reported gcompErrorNonFinite and x (the step's gradient, n elements) holds NaN/Inf. x is
  /// scanned only after such a report (device communicator: a scan gated on the device's status,
  /// no host sync; host communicator: when the staged status says so). end_agreement(decided):
  /// decided = a rank's word said "non-finite gradient" and the policy decided the step: the errors
  /// its kernels reported are dropped (neither end_step() nor device_status() reports them).
  /// Host backends: no-ops (their errors are thrown by the call: the engine classifies them).
  [[nodiscard]] virtual bool agrees_on_device() const { return false; }
  virtual void begin_agreement(const T* /*x*/, size_t /*n*/) {}
  virtual void end_agreement(bool /*decided*/) {}

  // Codecs, by the handle add_codec() returns. Messages are always the codec's fp32 payloads: a
  // double implementation rounds its input to fp32 for the codec and widens decoded values.
  virtual int add_codec(const CodecSpec& spec, const Layout& layout, bool shared_scale) = 0;
  [[nodiscard]] virtual size_t encoded_bytes(int c) const = 0;
  virtual void encode(int c, const T* x, const RngKey& key, uint8_t* payload) = 0;
  /// payload = C(p); e = p - decode(payload). p != e. e is a buffer that a failed step drops (the
  /// second buffer of a state array, or scratch): on a non-finite p the encode fails and e is left
  /// unspecified (the device checks p in its encode pass, not in a pass before it).
  virtual void encode_ef(int c, const T* p, T* e, const RngKey& key, uint8_t* payload) = 0;
  /// encode_ef() of p = a * x + b * y (lincomb()'s products and sum, so the same bits): payload =
  /// C(p); e = p - decode(payload). n: the codec's number of elements. `scratch` (n elements) may
  /// take p. e must not alias x or y. The host (fp32) never stores p where the codec encodes
  /// from a source (Codec::encode_ef_from); the device forms p in the encode kernels' loads where
  /// the codec reads its input at most twice; the default runs lincomb into scratch, then encode_ef.
  virtual void encode_ef_lincomb(int c, T a, const T* x, T b, const T* y, T* e, T* scratch, const RngKey& key,
                                 uint8_t* payload, size_t n) {
    lincomb(scratch, a, x, b, y, n);
    encode_ef(c, scratch, e, key, payload);
  }
  /// payload = Q(g - h); h_out = h + alpha * decode(payload). h is not written unless h_out == h
  /// (the engine passes the second buffer of a double-buffered state array).
  virtual void encode_diana(int c, const T* g, const T* h, T* h_out, T alpha, const RngKey& key, uint8_t* payload) = 0;
  /// TernGrad scaler sharing: the block scales of x, their max over all ranks (an allreduce), then
  /// encode with those scales.
  virtual void encode_shared_scale(int c, const T* x, const RngKey& key, uint8_t* payload) = 0;
  virtual void decode(int c, const uint8_t* payload, const RngKey& key, T* out) = 0;
  /// decode() of a received message of `bytes` bytes at the start of `payload` (a full payload, or
  /// a short one of a variable-length codec: docs/wire-format.md §6), validated by the codec's size
  /// rule (gcompErrorCorruptPayload for a size its length field does not give). The slot may be
  /// rewritten after the message (device: the tail up to the codec's size is zeroed).
  virtual void decode_received(int c, uint8_t* payload, size_t bytes, const RngKey& key, T* out) = 0;
  /// out = sum_j decode(payload_j, keys[j]), j = 0..count-1 in rank order (T accumulation, starting
  /// from 0). keys[j] is payload j's key (its sender's rank: spherical codebooks depend on it).
  /// sizes: nullptr (every payload full), or a host array of count message sizes as allgatherv /
  /// alltoallv delivered them (each checked by the codec's size rule). Every payload is validated
  /// before out changes. The slots may be rewritten after their messages (device: tails zeroed).
  virtual void decode_reduce(int c, uint8_t* payloads, size_t stride, int count, const size_t* sizes,
                             const std::vector<RngKey>& keys, T* out) = 0;
  /// decode_reduce, then out = a * out, then (u not null) u = b * out: the same products as
  /// scale() calls after decode_reduce, so the same bits. With u, out is scratch: its content
  /// afterwards is unspecified (the host does not write it). The host runs it all as one pass per
  /// L1-sized sub-range (one output written once instead of 3 + count passes); the default runs
  /// the calls in turn. n: the codec's number of elements.
  virtual void decode_reduce_scale(int c, uint8_t* payloads, size_t stride, int count, const size_t* sizes,
                                   const std::vector<RngKey>& keys, T a, T* out, T b, T* u, size_t n) {
    decode_reduce(c, payloads, stride, count, sizes, keys, out);
    scale(out, a, out, n);
    if (u != nullptr) scale(u, b, out, n);
  }

  /// w = y + a * sum_j decode(payload_j) (the sum as decode_reduce gives it; then the products and
  /// the sum of scale() and lincomb(w, 1, y, 1, .), so the same bits): the server step of a sharded
  /// two-way round, w = e~ + mean. `scratch` (n elements) may be used for the mean. The host runs it
  /// as one pass per L1-sized sub-range; the default runs decode_reduce_scale, then lincomb.
  virtual void decode_mean_add(int c, uint8_t* payloads, size_t stride, int count, const size_t* sizes,
                               const std::vector<RngKey>& keys, T a, T* scratch, const T* y, T* w, size_t n) {
    decode_reduce_scale(c, payloads, stride, count, sizes, keys, a, scratch, T{0}, nullptr, n);
    lincomb(w, T{1}, y, T{1}, scratch, n);
  }
  /// The server step of a sharded two-way round without its p~ = y + a * sum_j decode(payload_j)
  /// stored (decode_mean_add's bits), where the implementation can: mean_add_fusable() validates
  /// every payload (throwing as decode_mean_add would, nothing written) and returns true, and then
  /// encode_ef_mean_add() gives payload_out = C~(p~) and e_out = p~ - decode(payload_out) as
  /// encode_ef (cd) of that p~ would (its failure is the encode's). false (nothing checked): the
  /// caller runs decode_mean_add and encode_ef. Host fp32: range-decodable uplink codecs.
  virtual bool mean_add_fusable(int /*c*/, const uint8_t* /*payloads*/, size_t /*stride*/, int /*count*/,
                                const size_t* /*sizes*/, size_t /*n*/) {
    return false;
  }
  virtual void encode_ef_mean_add(int /*c*/, const uint8_t* /*payloads*/, size_t /*stride*/, int /*count*/,
                                  const size_t* /*sizes*/, const std::vector<RngKey>& /*keys*/, T /*a*/, const T* /*y*/,
                                  int /*cd*/, const RngKey& /*key*/, uint8_t* /*payload_out*/, T* /*e_out*/,
                                  size_t /*n*/) {
    GCOMP_FAIL(gcompErrorInternal, "encode_ef_mean_add without mean_add_fusable");
  }
  /// Message j of `count` (codec cs[j], at payloads + stride * j, sizes[j] bytes as a collective
  /// delivered it, or full when sizes is null; key keys[j]) decoded into out[offsets[j],
  /// offsets[j + 1]), then out = a * out over [offsets[0], offsets[count]) (a = 1: no product,
  /// which changes no bit): the products of decode_received()/decode() then scale(). Host: every
  /// message is validated before out changes, and each L1-sized sub-range is decoded and scaled
  /// in one pass (out written once). The default runs the calls in turn.
  virtual void decode_scale(const int* cs, int count, uint8_t* payloads, size_t stride, const size_t* sizes,
                            const RngKey* keys, const size_t* offsets, T a, T* out) {
    for (int j = 0; j < count; ++j) {
      const auto J = static_cast<size_t>(j);
      uint8_t* pay = payloads + stride * J;
      if (sizes != nullptr)
        decode_received(cs[j], pay, sizes[J], keys[J], out + offsets[J]);
      else
        decode(cs[j], pay, keys[J], out + offsets[J]);
    }
    const auto C = static_cast<size_t>(count);
    if (a != T{1}) scale(out + offsets[0], a, out + offsets[0], offsets[C] - offsets[0]);
  }
  /// The majority vote of the decoded messages: acc = sum_j decode(payload_j) (decode_reduce), then
  /// u = lr * vote(acc) (vote()), the same bits. acc is scratch (n elements): its content afterwards
  /// is unspecified (the device does not write it). The default runs the two calls in turn.
  virtual void decode_vote(int c, uint8_t* payloads, size_t stride, int count, const size_t* sizes,
                           const std::vector<RngKey>& keys, T* acc, T lr, bool tie_to_zero, T* u, size_t n) {
    decode_reduce(c, payloads, stride, count, sizes, keys, acc);
    vote(u, acc, lr, tie_to_zero, n);
  }
  /// DIANA's server step on the uplink messages: mean = a * sum_j decode(payload_j)
  /// (decode_reduce_scale's bits), g = h + mean and h_out = h + alpha * mean (lincomb()'s bits),
  /// then, u given, u = lr * g (scale()). mean (n elements) is scratch; with u, g is scratch too:
  /// their content afterwards is unspecified. h_out is the second buffer of the shift (never h).
  /// The default runs decode_reduce_scale, lincomb, scale, lincomb in turn.
  virtual void decode_diana(int c, uint8_t* payloads, size_t stride, int count, const size_t* sizes,
                            const std::vector<RngKey>& keys, T a, T* mean, const T* h, T alpha, T* h_out, T* g, T lr,
                            T* u, size_t n) {
    decode_reduce_scale(c, payloads, stride, count, sizes, keys, a, mean, T{0}, nullptr, n);
    lincomb(g, T{1}, h, T{1}, mean, n);  // g^ = h + mean
    if (u != nullptr) scale(u, lr, g, n);
    lincomb(h_out, T{1}, h, alpha, mean, n);  // h + alpha mean
  }
  /// True when any element of x is NaN or Inf (in fp32, as nonfinite_agree). Device: syncs.
  virtual bool has_nonfinite(const T* x, size_t n) = 0;

  /// True when codec c's messages travel at their used size (Codec::variable_length(): sdither,
  /// topk with index=rice); fixed-size codecs use the plain collectives.
  [[nodiscard]] virtual bool variable_length(int c) const = 0;
  /// The bytes of codec c's payload (as encode wrote it) that carry the message: Codec::used_bytes.
  /// Device: reads the length field to the host (syncs); a length field that an encode which
  /// failed on the device left impossible gives encoded_bytes(c), so every rank still reaches the
  /// collective and the failure is reported through the status words.
  virtual size_t used_bytes(int c, const uint8_t* payload) = 0;

  // Communication on alloc_bytes() buffers.
  /// Sizes the host staging of a host communicator (device): `bytes` per direction.
  virtual void reserve_staging(size_t bytes) = 0;
  virtual void allgather(const uint8_t* send, uint8_t* recv, size_t bytes_per_rank) = 0;
  virtual void alltoall(const uint8_t* send, uint8_t* recv, size_t bytes_per_peer) = 0;
  /// Communicator::allgatherv / alltoallv: messages of different sizes in slots of `stride` bytes;
  /// the sizes (host arrays of size() entries) are known on the host when they return. Each
  /// message ends with its status word (put_status with stride = the message size); device with a
  /// host communicator: a codec error recorded on the device goes into those words, as for
  /// allgather/alltoall.
  virtual void allgatherv(const uint8_t* send, size_t send_bytes, uint8_t* recv, size_t stride, size_t* recv_bytes) = 0;
  virtual void alltoallv(const uint8_t* send, const size_t* send_bytes, uint8_t* recv, size_t stride,
                         size_t* recv_bytes) = 0;
  /// The status word of a message slot (docs/algorithms.md "Failed steps"): the last 4 bytes of
  /// each slot that allgather/alltoall move carry the sender's gcompStatus_t for the step (0: its
  /// local part succeeded). put_status writes `status` into the word of each of `slots` slots of
  /// `stride` bytes at `buf`; get_status reads the words of `slots` slots into host memory `out`
  /// (device: syncs).
  virtual void put_status(uint8_t* buf, size_t stride, int slots, int32_t status) = 0;
  virtual void get_status(const uint8_t* buf, size_t stride, int slots, int32_t* out) = 0;

  /// True when every error of a call is thrown by that call (host). The device reports codec data
  /// errors at end_step() (host communicator) or device_status() (device communicator).
  [[nodiscard]] virtual bool synchronous_errors() const = 0;
  /// True when a step throws no error after it starts writing its update: every call's errors are
  /// thrown by that call (host), or the device's data errors are reported by device_status() and
  /// never thrown by the step (device communicator). Then the engine computes the update in the
  /// caller's buffer; else (device with a host communicator: end_step() throws) in its own, copied
  /// out last.
  [[nodiscard]] virtual bool update_in_caller_buffer() const { return synchronous_errors(); }
  /// Step boundaries: begin resets the codec status record; end reports a codec data error
  /// recorded during the step (device with a host communicator: syncs; device communicator: no-op,
  /// see device_status()).
  virtual void begin_step() = 0;
  virtual void end_step() = 0;
  /// Syncs and returns (then clears) the first codec data error recorded since the last check.
  virtual gcompStatus_t device_status(uint64_t* index) = 0;

  // Phase timing (SessionConfig::time_phases): enable once at setup; then begin_step() starts the
  // clock, phase() marks where the work of a phase begins, phase_times() returns the time of each
  // phase of the step in microseconds (device: CUDA events, syncs).
  virtual void enable_timing() = 0;
  virtual void phase(Phase p) = 0;
  virtual std::array<double, kNumPhases> phase_times() = 0;
};

template <class T>
std::unique_ptr<VecOps<T>> make_host_ops(Communicator& comm);
/// Device implementation; gcompErrorNotSupported in a build without CUDA or without a device.
std::unique_ptr<VecOps<float>> make_device_ops(Communicator& comm);

}  // namespace gcomp::detail
