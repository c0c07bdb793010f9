// SPDX-License-Identifier: Apache-2.0
// The vector-operations interface of the fp32 Session backends (docs/algorithms.md "Backends").
//
// The fp32 orchestration (f32_engine.cpp) is written once against VecOps; two implementations:
//  - host (host_ops.cpp): CPU codecs and plain loops, the twin that CI tests;
//  - device (cuda/session/device_ops.cu): DeviceCodec calls and small kernels on one stream.
// Buffers come from alloc_*() and live in the implementation's memory space; the engine only does
// pointer arithmetic on them. Elementwise math is gcomp/detail/session_math.hpp on both sides, so
// the two implementations round identically. Host-compiler clean: no CUDA types.
#pragma once

#include <gcomp/codec.hpp>
#include <gcomp/comm.hpp>
#include <gcomp/session.hpp>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <vector>

namespace gcomp::detail {

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
  virtual float* alloc_f32(size_t n) = 0;
  virtual uint8_t* alloc_bytes(size_t n) = 0;
  /// Host <-> implementation memory; both return when the host side may be reused (device: syncs).
  virtual void to_host(float* h_dst, const float* src, size_t n) = 0;
  virtual void from_host(float* dst, const float* h_src, size_t n) = 0;

  // Elementwise (n elements; dst may equal an input).
  virtual void copy(float* dst, const float* src, size_t n) = 0;
  virtual void fill_zero(float* dst, size_t n) = 0;
  /// dst = widen(src): fp32 copy, or exact bf16/f16 -> fp32. src == dst (fp32) is a no-op.
  virtual void widen(const void* src, GradType type, float* dst, size_t n) = 0;
  /// x[i] = finite ? x[i] : 0.
  virtual void zero_nonfinite(float* x, size_t n) = 0;
  /// dst = a * x
  virtual void scale(float* dst, float a, const float* x, size_t n) = 0;
  /// dst = a * x + b * y (unfused)
  virtual void lincomb(float* dst, float a, const float* x, float b, const float* y, size_t n) = 0;
  /// dst = x * y
  virtual void mul(float* dst, const float* x, const float* y, size_t n) = 0;
  /// u = lr * vote(acc)
  virtual void vote(float* u, const float* acc, float lr, bool tie_to_zero, size_t n) = 0;

  /// Non-finite agreement: local = any non-finite in x (this rank), any = max over all ranks
  /// (an allreduce). Device: the host reads both (syncs).
  virtual void nonfinite_agree(const float* x, size_t n, int64_t* local, int64_t* any) = 0;

  // Codecs, by the handle add_codec() returns.
  virtual int add_codec(const CodecSpec& spec, const Layout& layout, bool shared_scale) = 0;
  [[nodiscard]] virtual size_t encoded_bytes(int c) const = 0;
  virtual void encode(int c, const float* x, const RngKey& key, uint8_t* payload) = 0;
  /// payload = C(p); e = p - decode(payload). p != e.
  virtual void encode_ef(int c, const float* p, float* e, const RngKey& key, uint8_t* payload) = 0;
  /// payload = Q(g - h); h = h + alpha * decode(payload).
  virtual void encode_diana(int c, const float* g, float* h, float alpha, const RngKey& key, uint8_t* payload) = 0;
  /// TernGrad scaler sharing: the block scales of x, their max over all ranks (an allreduce), then
  /// encode with those scales.
  virtual void encode_shared_scale(int c, const float* x, const RngKey& key, uint8_t* payload) = 0;
  virtual void decode(int c, const uint8_t* payload, const RngKey& key, float* out) = 0;
  /// out = 0; out = out + decode(payload_j, keys[j]) for j = 0..count-1 (rank order). keys[j] is
  /// payload j's key (its sender's rank: spherical codebooks depend on it).
  virtual void decode_reduce(int c, const uint8_t* payloads, size_t stride, int count,
                             const std::vector<RngKey>& keys, float* out) = 0;

  // Communication on alloc_bytes() buffers.
  /// Sizes the host staging of a host communicator (device): `bytes` per direction.
  virtual void reserve_staging(size_t bytes) = 0;
  virtual void allgather(const uint8_t* send, uint8_t* recv, size_t bytes_per_rank) = 0;
  virtual void alltoall(const uint8_t* send, uint8_t* recv, size_t bytes_per_peer) = 0;

  /// Step boundaries: begin resets the codec status record; end reports a codec data error
  /// recorded during the step (device with a host communicator: syncs; device communicator: no-op,
  /// see device_status()).
  virtual void begin_step() = 0;
  virtual void end_step() = 0;
  /// Syncs and returns (then clears) the first codec data error recorded since the last check.
  virtual gcompStatus_t device_status(uint64_t* index) = 0;
};

std::unique_ptr<VecOps> make_host_ops(Communicator& comm);
/// Device implementation; gcompErrorNotSupported in a build without CUDA or without a device.
std::unique_ptr<VecOps> make_device_ops(Communicator& comm);

}  // namespace gcomp::detail
