// SPDX-License-Identifier: Apache-2.0
// VecOps<float> on the GPU (the cuda Session backend): DeviceCodec calls and the kernels of
// session_kernels.cuh, all on one stream, buffers allocated at construction. With a host
// communicator (local, mpi) the collectives are staged through pinned host buffers (a stream sync
// before each collective); with a device communicator (nccl) they are enqueued on the stream.
// docs/gpu.md "Session on the GPU" lists every host synchronization.
//
// Streams: a step_device runs on the caller's stream (set_stream ... use_own_stream); everything
// else (the host API, state(), save(), load(), device_status()) runs on the session's own
// non-blocking stream, which waits for the last step_device through an event, so a caller stream
// destroyed after its step is never used again. Buffers are zeroed on the own stream and the
// allocation returns after the zeroing completed, so the zeros are in place before any stream
// touches them.
#include "cuda/common/cuda_check.cuh"
#include "cuda/dispatch/device_codec_access.hpp"
#include "cuda/session/session_kernels.cuh"
#include "host/algorithms/vec_ops.hpp"

#include <gcomp/cuda.hpp>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstring>
#include <functional>
#include <string>
#include <utility>
#include <vector>

namespace gcomp::detail {

namespace {

using cuda::DeviceCodec;
using cuda::DeviceStatus;
using cuda::detail::DeviceCodecAccess;
using cuda::detail::kThreads;
using cuda::detail::SessionStep;
using cuda::detail::Source;
using cuda::detail::StoreKind;

/// Everything DeviceOps allocates, released by its destructor. A member, so that a constructor
/// that throws half way (a failed cudaMallocHost after two cudaMallocs) frees what it got.
class Resources {
 public:
  Resources() = default;
  ~Resources() {
    for (void* p : device) (void)cudaFree(p);
    for (void* p : pinned) (void)cudaFreeHost(p);
    if (event != nullptr) (void)cudaEventDestroy(event);
    for (cudaEvent_t e : timing) (void)cudaEventDestroy(e);
    if (stream != nullptr) (void)cudaStreamDestroy(stream);
  }
  Resources(const Resources&) = delete;
  Resources& operator=(const Resources&) = delete;

  std::vector<void*> device, pinned;
  Stream stream = nullptr;          ///< the session's own stream (non-blocking)
  cudaEvent_t event = nullptr;      ///< recorded at the end of every step_device
  std::vector<cudaEvent_t> timing;  ///< phase timing (SessionConfig::time_phases) only
};

class DeviceOps final : public VecOps<float> {
 public:
  explicit DeviceOps(Communicator& comm) : comm_(comm), host_comm_(comm.memory_space() == MemorySpace::kHost) {
    std::string why;
    GCOMP_EXPECTS(cuda::device_available(&why), gcompErrorNotSupported,
                  "session backend 'cuda': no usable CUDA device (" + why + ")");
    int device = 0, sms = 0;
    GCOMP_CUDA_TRY(cudaGetDevice(&device));
    GCOMP_CUDA_TRY(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device));
    max_blocks_ = static_cast<int64_t>(std::max(sms, 1)) * 8;
    GCOMP_CUDA_TRY(cudaStreamCreateWithFlags(&res_.stream, cudaStreamNonBlocking));
    GCOMP_CUDA_TRY(cudaEventCreateWithFlags(&res_.event, cudaEventDisableTiming));
    stream_ = res_.stream;
    sticky_ = reinterpret_cast<DeviceStatus*>(alloc_bytes(sizeof(DeviceStatus)));
    step_ = host_comm_ ? sticky_ : reinterpret_cast<DeviceStatus*>(alloc_bytes(sizeof(DeviceStatus)));
    flags_ = reinterpret_cast<int64_t*>(alloc_bytes(2 * sizeof(int64_t)));
    h_small_ = alloc_pinned(64);
    h_length_ = alloc_pinned(sizeof(uint32_t));
    reset_status(sticky_);
    reset_status(step_);
    GCOMP_CUDA_TRY(cudaStreamSynchronize(stream_));
  }

  ~DeviceOps() override = default;
  DeviceOps(const DeviceOps&) = delete;
  DeviceOps& operator=(const DeviceOps&) = delete;

  [[nodiscard]] bool on_device() const override { return true; }
  // step_device: the caller's stream, ordered after the previous step_device (its event), unless it
  // is being captured into a graph (an event of an earlier, uncaptured launch cannot be waited on
  // inside a capture; the caller orders the graph's launches).
  void set_stream(Stream stream) override {
    if (stream != res_.stream && step_pending_ && !capturing(stream))
      GCOMP_CUDA_TRY(cudaStreamWaitEvent(stream, res_.event, 0));
    stream_ = stream;
  }
  // After step_device: back to the own stream, which waits (on the device) for the work just
  // enqueued on the caller's stream. Nothing of the caller's stream is kept.
  void use_own_stream() override {
    if (stream_ == res_.stream) return;
    const Stream caller = stream_;
    stream_ = res_.stream;
    if (capturing(caller)) return;
    GCOMP_CUDA_TRY(cudaEventRecord(res_.event, caller));
    GCOMP_CUDA_TRY(cudaStreamWaitEvent(res_.stream, res_.event, 0));
    step_pending_ = true;
  }

  float* alloc(size_t n) override { return static_cast<float*>(alloc_raw(n * sizeof(float))); }
  uint8_t* alloc_bytes(size_t n) override { return static_cast<uint8_t*>(alloc_raw(n)); }

  void to_host(float* h_dst, const float* src, size_t n) override {
    plain(src);
    if (n > 0) GCOMP_CUDA_TRY(cudaMemcpyAsync(h_dst, src, n * sizeof(float), cudaMemcpyDeviceToHost, stream_));
    GCOMP_CUDA_TRY(cudaStreamSynchronize(stream_));
  }
  void from_host(float* dst, const float* h_src, size_t n) override {
    if (n > 0) GCOMP_CUDA_TRY(cudaMemcpyAsync(dst, h_src, n * sizeof(float), cudaMemcpyHostToDevice, stream_));
    GCOMP_CUDA_TRY(cudaStreamSynchronize(stream_));
  }

  void copy(float* dst, const float* src, size_t n) override {
    plain(src);
    if (dst != src && n > 0)
      GCOMP_CUDA_TRY(cudaMemcpyAsync(dst, src, n * sizeof(float), cudaMemcpyDeviceToDevice, stream_));
  }
  void fill_zero(float* dst, size_t n) override {
    if (n > 0) GCOMP_CUDA_TRY(cudaMemsetAsync(dst, 0, n * sizeof(float), stream_));  // +0.0f
  }
  void widen(const void* src, GradType type, float* dst, size_t n) override {
    const auto m = static_cast<int64_t>(n);
    switch (type) {
      case GradType::kF32: copy(dst, static_cast<const float*>(src), n); return;
      case GradType::kBF16:
        GCOMP_LAUNCH(cuda::detail::widen_bf16_kernel, grid(m), kThreads, stream_, static_cast<const uint16_t*>(src),
                     dst, m);
        return;
      case GradType::kF16:
        GCOMP_LAUNCH(cuda::detail::widen_f16_kernel, grid(m), kThreads, stream_, static_cast<const uint16_t*>(src), dst,
                     m);
        return;
    }
  }
  void zero_nonfinite(float* dst, const float* src, size_t n) override {
    plain(src);
    GCOMP_LAUNCH(cuda::detail::zero_nonfinite_kernel, grid(n), kThreads, stream_, dst, src, static_cast<int64_t>(n));
  }
  // The gradient view (docs/gpu.md "Session on the GPU"): g stands for src widened / zeroed; the
  // kernels that read g load src (Input::src, lincomb_src_kernel, nonfinite_flag_src_kernel), the
  // others get the copy written first (plain()).
  bool view_input(float* g, const void* src, GradType type, bool zero, size_t n) override {
    view_ = View{g, src, type, zero, n, n > 0};
    return true;
  }
  void scale(float* dst, float a, const float* x, size_t n) override {
    plain(x);
    GCOMP_LAUNCH(cuda::detail::scale_kernel, grid(n), kThreads, stream_, dst, a, x, static_cast<int64_t>(n));
  }
  // With the gradient view as x (or as y: the operands swapped, which changes no bit, a x + b y
  // being b y + a x in IEEE arithmetic), lincomb_src_kernel loads it.
  void lincomb(float* dst, float a, const float* x, float b, const float* y, size_t n) override {
    if (viewed(y) && !viewed(x)) {
      std::swap(a, b);
      std::swap(x, y);
    }
    if (viewed(x) && !viewed(y)) {
      const Source v = source(x);
      GCOMP_LAUNCH(cuda::detail::lincomb_src_kernel, grid(n), kThreads, stream_, dst, a, v.data, v.src, b, y,
                   static_cast<int64_t>(n));
      return;
    }
    plain(x);
    plain(y);
    GCOMP_LAUNCH(cuda::detail::lincomb_kernel, grid(n), kThreads, stream_, dst, a, x, b, y, static_cast<int64_t>(n));
  }
  void mul(float* dst, const float* x, const float* y, size_t n) override {
    plain(x);
    plain(y);
    GCOMP_LAUNCH(cuda::detail::mul_kernel, grid(n), kThreads, stream_, dst, x, y, static_cast<int64_t>(n));
  }
  void vote(float* u, const float* acc, float lr, bool tie_to_zero, size_t n) override {
    plain(acc);
    GCOMP_LAUNCH(cuda::detail::vote_kernel, grid(n), kThreads, stream_, u, acc, lr, tie_to_zero,
                 static_cast<int64_t>(n));
  }

  bool has_nonfinite(const float* x, size_t n) override {
    GCOMP_CUDA_TRY(cudaMemsetAsync(flags_, 0, sizeof(int64_t), stream_));
    flag_nonfinite(x, n);
    auto* h = reinterpret_cast<int64_t*>(h_small_);
    GCOMP_CUDA_TRY(cudaMemcpyAsync(h, flags_, sizeof(int64_t), cudaMemcpyDeviceToHost, stream_));
    GCOMP_CUDA_TRY(cudaStreamSynchronize(stream_));
    return h[0] != 0;
  }
  // The agreement before the step (a delay, hessian-ec): a scan of x, the flags' allreduce, and
  // one host synchronization for the agreed flag.
  void nonfinite_agree(const float* x, size_t n, int64_t* local, int64_t* any) override {
    GCOMP_CUDA_TRY(cudaMemsetAsync(flags_, 0, 2 * sizeof(int64_t), stream_));
    flag_nonfinite(x, n);
    auto* h = reinterpret_cast<int64_t*>(h_small_);
    if (host_comm_) {
      GCOMP_CUDA_TRY(cudaMemcpyAsync(h, flags_, sizeof(int64_t), cudaMemcpyDeviceToHost, stream_));
      GCOMP_CUDA_TRY(cudaStreamSynchronize(stream_));
      *local = h[0];
      comm_.allreduce(&h[0], any, 1, DataType::kI64, ReduceOp::kMax, nullptr);
      return;
    }
    comm_.allreduce(flags_, flags_ + 1, 1, DataType::kI64, ReduceOp::kMax, stream_);
    GCOMP_CUDA_TRY(cudaMemcpyAsync(h, flags_, 2 * sizeof(int64_t), cudaMemcpyDeviceToHost, stream_));
    comm_.synchronize(stream_);
    GCOMP_CUDA_TRY(cudaStreamSynchronize(stream_));
    *local = h[0];
    *any = h[1];
  }

  // The late agreement (VecOps::begin_agreement). Device communicator: put_status enqueues a scan
  // of x gated on the step's status record (every thread returns at once unless a kernel of the
  // step reported gcompErrorNonFinite) and writes the words from its flag: no host sync beyond the
  // exchange's own (get_status). Host communicator: stage_down reads the status record anyway;
  // x is scanned only when it holds gcompErrorNonFinite (staged_word()).
  [[nodiscard]] bool agrees_on_device() const override { return true; }
  void begin_agreement(const float* x, size_t n) override {
    agree_x_ = x;
    agree_n_ = n;
    agree_scanned_ = false;
  }
  void end_agreement(bool decided) override {
    agree_x_ = nullptr;
    if (!decided) return;
    reset_status(step_);  // the policy decided the step: what its kernels reported is not an error
    last_ = DeviceStatus{};
    last_.index = UINT64_MAX;
  }

  int add_codec(const CodecSpec& spec, const Layout& layout, bool shared_scale) override {
    Entry e;
    e.dev = std::make_unique<DeviceCodec>(spec, layout);
    if (shared_scale) {
      const auto m = static_cast<size_t>(e.dev->num_scales());
      e.num_scales = m;
      e.d_scales = alloc(m);
      if (host_comm_) {
        e.h_scales = alloc_pinned_f32(m);
        e.h_scales_max = alloc_pinned_f32(m);
      }
    }
    if (e.dev->workspace_bytes() > ws_bytes_) {
      if (ws_ != nullptr) {
        res_.device.erase(std::find(res_.device.begin(), res_.device.end(), ws_));
        GCOMP_CUDA_TRY(cudaFree(ws_));
        ws_ = nullptr;
      }
      ws_bytes_ = e.dev->workspace_bytes();
      ws_ = alloc_raw(ws_bytes_);
    }
    codecs_.push_back(std::move(e));
    return static_cast<int>(codecs_.size()) - 1;
  }
  [[nodiscard]] size_t encoded_bytes(int c) const override { return dev(c).encoded_bytes(); }

  void encode(int c, const float* x, const RngKey& key, uint8_t* payload) override {
    DeviceCodecAccess::encode(dev(c), source_for(c, x), key, payload, ws_, ws_bytes_, stream_);
    merge();
  }
  // e is the second buffer of an error array (a failed step drops it): the fused encode reports a
  // non-finite p in its own pass, without DeviceCodec::encode_ef's check pass before it.
  void encode_ef(int c, const float* p, float* e, const RngKey& key, uint8_t* payload) override {
    plain(p);
    DeviceCodecAccess::encode_ef_unchecked(dev(c), p, e, key, payload, ws_, ws_bytes_, stream_);
    merge();
  }
  // p = a x + b y formed by the encoders as they load it (lincomb_kernel's bits), never stored,
  // where that reads less (encodes of two passes over p); else stored in scratch first.
  void encode_ef_lincomb(int c, float a, const float* x, float b, const float* y, float* e, float* scratch,
                         const RngKey& key, uint8_t* payload, size_t n) override {
    if (!DeviceCodecAccess::forms_lincomb_cheaper(dev(c))) {
      VecOps<float>::encode_ef_lincomb(c, a, x, b, y, e, scratch, key, payload, n);
      return;
    }
    plain(y);  // the engine's y is never the gradient (x is)
    DeviceCodecAccess::encode_ef_lincomb(dev(c), a, source_for(c, x), b, y, e, key, payload, ws_, ws_bytes_, stream_);
    merge();
  }
  // The dense codecs read h and write h_out in their encode pass (no copy of h); topk and randk,
  // whose update writes the selected elements only, copy h into h_out first.
  void encode_diana(int c, const float* g, const float* h, float* h_out, float alpha, const RngKey& key,
                    uint8_t* payload) override {
    plain(h);
    DeviceCodecAccess::encode_diana(dev(c), source_for(c, g), h, h_out, alpha, key, payload, ws_, ws_bytes_, stream_);
    merge();
  }
  // TernGrad scaler sharing on the device (docs/gpu.md "Session on the GPU"): the block scales
  // (DeviceCodec::compute_scales's launches), their max over the ranks, and the encode pass of
  // DeviceCodec::encode_with_scales, byte for byte the CPU codec's compute_scales /
  // encode_with_scales. Two reads of x: the encode pass has no non-finite pass before it, since a
  // non-finite x gives its block a non-finite scale (every shareable codec's scale math,
  // tests/unit/test_shared_scales.cpp), which the scale pass reports; a rank whose scales failed
  // sends +Inf scales, so the max is +Inf on every rank and every rank's encode fails with
  // gcompErrorNonFinite (payload untouched), as the twin's ranks do. Device communicator: the
  // allreduce is enqueued on the stream, no host sync. Host communicator: the scales go down
  // through pinned memory with the step's status record (one sync, like stage_down), the
  // allreduce runs on the host (this rank joins it even when its scales failed), then a failure
  // throws as the twin's does, and the max goes back up on the stream.
  void encode_shared_scale(int c, const float* x, const RngKey& key, uint8_t* payload) override {
    Entry& e = codecs_[static_cast<size_t>(c)];
    const DeviceCodec& k = *e.dev;
    const Source xs = source_for(c, x);
    DeviceCodecAccess::compute_shared_scales(k, xs, e.d_scales, ws_, ws_bytes_, stream_);
    merge();
    if (e.num_scales > 0) {
      if (host_comm_) {
        const size_t bytes = e.num_scales * sizeof(float);
        GCOMP_CUDA_TRY(cudaMemcpyAsync(e.h_scales, e.d_scales, bytes, cudaMemcpyDeviceToHost, stream_));
        read_sticky();  // syncs
        comm_.allreduce(e.h_scales, e.h_scales_max, e.num_scales, DataType::kF32, ReduceOp::kMax, nullptr);
        throw_if_failed();
        for (size_t b = 0; b < e.num_scales; ++b)
          if (!std::isfinite(e.h_scales_max[b]))
            GCOMP_FAIL(gcompErrorNonFinite, "non-finite gradient on another rank (shared scale of block " +
                                                std::to_string(b) + "); state unchanged");
        GCOMP_CUDA_TRY(cudaMemcpyAsync(e.d_scales, e.h_scales_max, bytes, cudaMemcpyHostToDevice, stream_));
      } else {
        comm_.allreduce(e.d_scales, e.d_scales, e.num_scales, DataType::kF32, ReduceOp::kMax, stream_);
      }
    }
    DeviceCodecAccess::encode_with_shared_scales(k, xs, e.d_scales, key, payload, ws_, ws_bytes_, stream_);
    merge();
  }
  void decode(int c, const uint8_t* payload, const RngKey& key, float* out) override {
    dev(c).decode(payload, key, out, ws_, ws_bytes_, stream_);
    merge();
  }
  // A received message: the size rule and the zeroed tail (prepare_received), then the decode.
  void decode_received(int c, uint8_t* payload, size_t bytes, const RngKey& key, float* out) override {
    const DeviceCodec& k = dev(c);
    k.prepare_received(payload, (k.encoded_bytes() + 3) / 4 * 4, 1, upload_sizes(&bytes, 1), ws_, ws_bytes_, stream_);
    merge();
    k.decode(payload, key, out, ws_, ws_bytes_, stream_);
    merge();
  }
  void decode_reduce(int c, uint8_t* payloads, size_t stride, int count, const size_t* sizes,
                     const std::vector<RngKey>& keys, float* out) override {
    GCOMP_EXPECTS(keys.size() >= static_cast<size_t>(count), gcompErrorInternal, "decode_reduce: one key per payload");
    if (sizes != nullptr)
      dev(c).decode_reduce(payloads, stride, count, upload_sizes(sizes, count), nullptr, keys.data(), out, ws_,
                           ws_bytes_, stream_);
    else
      dev(c).decode_reduce(payloads, stride, count, nullptr, keys.data(), out, ws_, ws_bytes_, stream_);
    merge();
  }

  // The decode-side steps of the Session in the decoders' final store (cuda/fused/decode_store.cuh)
  // for the quad-layout codecs (the sum of the decoded messages stays in registers), in the tile
  // merge's store for topk and randk (the sums in shared memory), and in the last payload's walk
  // of sdither and spherical (which reads the sum of the payloads before it): only the step's
  // outputs are written (docs/performance.md "Passes over memory, per operation"). Every
  // output is scratch or a W() buffer of the engine: a corrupt payload (reported at the end of the
  // step) leaves them unspecified and the step fails with the state unchanged.

  // The mean: out = a * sum (u null), or u = b (a sum) with out unwritten; the products of the
  // two scale() calls of the default.
  void decode_reduce_scale(int c, uint8_t* payloads, size_t stride, int count, const size_t* sizes,
                           const std::vector<RngKey>& keys, float a, float* out, float b, float* u, size_t n) override {
    SessionStep st;
    st.kind = u == nullptr ? StoreKind::kScale : StoreKind::kScaleTwice;
    st.a = a;
    st.b = b;
    st.u = u;
    if (reduce_store(c, payloads, stride, count, sizes, keys, out, st)) return;
    decode_reduce(c, payloads, stride, count, sizes, keys, out);
    if (u == nullptr) {
      scale(out, a, out, n);
      return;
    }
    GCOMP_LAUNCH(cuda::detail::scale_twice_kernel, grid(n), kThreads, stream_, u, a, b, out, static_cast<int64_t>(n));
  }
  // The two-way server step: w = y + a * sum (scratch unwritten).
  void decode_mean_add(int c, uint8_t* payloads, size_t stride, int count, const size_t* sizes,
                       const std::vector<RngKey>& keys, float a, float* scratch, const float* y, float* w,
                       size_t n) override {
    plain(y);
    SessionStep st;
    st.kind = StoreKind::kMeanAdd;
    st.a = a;
    st.y = y;
    st.w = w;
    if (reduce_store(c, payloads, stride, count, sizes, keys, scratch, st)) return;
    VecOps<float>::decode_mean_add(c, payloads, stride, count, sizes, keys, a, scratch, y, w, n);
  }
  // The majority vote: u = lr * vote(sum) (acc unwritten).
  void decode_vote(int c, uint8_t* payloads, size_t stride, int count, const size_t* sizes,
                   const std::vector<RngKey>& keys, float* acc, float lr, bool tie_to_zero, float* u,
                   size_t n) override {
    SessionStep st;
    st.kind = StoreKind::kVote;
    st.b = lr;
    st.tie_to_zero = tie_to_zero;
    st.u = u;
    if (reduce_store(c, payloads, stride, count, sizes, keys, acc, st)) return;
    VecOps<float>::decode_vote(c, payloads, stride, count, sizes, keys, acc, lr, tie_to_zero, u, n);
  }
  // DIANA's server step: h_out = h + alpha mean, and u = lr (h + mean) (u given) or g = h + mean;
  // mean (and with u, g) unwritten.
  void decode_diana(int c, uint8_t* payloads, size_t stride, int count, const size_t* sizes,
                    const std::vector<RngKey>& keys, float a, float* mean, const float* h, float alpha, float* h_out,
                    float* g, float lr, float* u, size_t n) override {
    plain(h);
    SessionStep st;
    st.kind = StoreKind::kDiana;
    st.a = a;
    st.b = lr;
    st.alpha = alpha;
    st.scale_u = u != nullptr;
    st.y = h;
    st.u = u != nullptr ? u : g;
    st.w = h_out;
    if (reduce_store(c, payloads, stride, count, sizes, keys, mean, st)) return;
    VecOps<float>::decode_diana(c, payloads, stride, count, sizes, keys, a, mean, h, alpha, h_out, g, lr, u, n);
  }
  // The downlink: each message decoded into its range, times a in the same store (a != 1; a = 1
  // is the plain decode, no product, as the default). Fused when every message is of a codec
  // with a fused store (every device codec) that fills its range.
  void decode_scale(const int* cs, int count, uint8_t* payloads, size_t stride, const size_t* sizes, const RngKey* keys,
                    const size_t* offsets, float a, float* out) override {
    bool fused = a != 1.0f;
    for (int j = 0; j < count && fused; ++j) {
      const DeviceCodec& k = dev(cs[j]);
      const auto J = static_cast<size_t>(j);
      fused =
          DeviceCodecAccess::has_decode_store(k) && offsets[J + 1] - offsets[J] == static_cast<size_t>(k.num_elems());
    }
    if (!fused) {
      VecOps<float>::decode_scale(cs, count, payloads, stride, sizes, keys, offsets, a, out);
      return;
    }
    SessionStep st;
    st.kind = StoreKind::kScale;
    st.a = a;
    for (int j = 0; j < count; ++j) {
      const auto J = static_cast<size_t>(j);
      const uint64_t* d_size = sizes != nullptr ? upload_sizes(&sizes[J], 1) : nullptr;
      DeviceCodecAccess::decode_store(dev(cs[j]), payloads + stride * J, d_size, keys[J], out + offsets[J], st, ws_,
                                      ws_bytes_, stream_);
      merge();
    }
  }

  [[nodiscard]] bool variable_length(int c) const override { return dev(c).variable_length(); }
  // The one host synchronization a variable-length message adds: its u32 length field, read after
  // the encode. A codec error of the encode is not thrown here: it travels in the message's status
  // word (host communicator, stage_down) or is read by device_status() (nccl), as for every message.
  size_t used_bytes(int c, const uint8_t* payload) override {
    const DeviceCodec& k = dev(c);
    if (!k.variable_length()) return k.encoded_bytes();
    GCOMP_CUDA_TRY(cudaMemcpyAsync(h_length_, payload + k.length_field_offset(), sizeof(uint32_t),
                                   cudaMemcpyDeviceToHost, stream_));
    GCOMP_CUDA_TRY(cudaStreamSynchronize(stream_));
    uint32_t field = 0;
    std::memcpy(&field, h_length_, sizeof field);
    try {
      return k.used_bytes_for_length(field);
    } catch (const Error&) {
      // Only an encode that failed on the device leaves an impossible length field; its error is
      // in the status record. The full payload travels so that every rank reaches the collective.
      return k.encoded_bytes();
    }
  }

  void reserve_staging(size_t bytes) override {
    if (!host_comm_ || bytes <= staging_bytes_) return;
    staging_bytes_ = bytes;
    h_send_ = alloc_pinned(bytes);
    h_recv_ = alloc_pinned(bytes);
  }
  void allgather(const uint8_t* send, uint8_t* recv, size_t bytes) override {
    const size_t all = bytes * static_cast<size_t>(comm_.size());
    if (!host_comm_) {
      comm_.allgather(send, recv, bytes, stream_);
      return;
    }
    stage_down(send, bytes, bytes, 1);
    comm_.allgather(h_send_, h_recv_, bytes, nullptr);
    if (all > 0) GCOMP_CUDA_TRY(cudaMemcpyAsync(recv, h_recv_, all, cudaMemcpyHostToDevice, stream_));
  }
  void alltoall(const uint8_t* send, uint8_t* recv, size_t bytes) override {
    const size_t all = bytes * static_cast<size_t>(comm_.size());
    if (!host_comm_) {
      comm_.alltoall(send, recv, bytes, stream_);
      return;
    }
    stage_down(send, all, bytes, comm_.size());
    comm_.alltoall(h_send_, h_recv_, bytes, nullptr);
    if (all > 0) GCOMP_CUDA_TRY(cudaMemcpyAsync(recv, h_recv_, all, cudaMemcpyHostToDevice, stream_));
  }

  // Messages of different sizes. Device communicator: Communicator::allgatherv/alltoallv on the
  // stream (the sizes travel first; the host waits for the stream there). Host communicator: the
  // messages go down through the pinned staging (a codec error recorded on the device goes into
  // each message's status word, its last 4 bytes), the host collective moves only the message
  // bytes, and each received message goes back up at its size.
  void allgatherv(const uint8_t* send, size_t send_bytes, uint8_t* recv, size_t stride, size_t* recv_bytes) override {
    if (!host_comm_) {
      comm_.allgatherv(send, send_bytes, recv, stride, recv_bytes, stream_);
      return;
    }
    GCOMP_EXPECTS(send_bytes <= stride, gcompErrorInternal, "allgatherv: message above its slot");
    stage_down(send, send_bytes, send_bytes, 1);
    comm_.allgatherv(h_send_, send_bytes, h_recv_, stride, recv_bytes, nullptr);
    stage_up(recv, stride, recv_bytes);
  }
  void alltoallv(const uint8_t* send, const size_t* send_bytes, uint8_t* recv, size_t stride,
                 size_t* recv_bytes) override {
    if (!host_comm_) {
      comm_.alltoallv(send, send_bytes, recv, stride, recv_bytes, stream_);
      return;
    }
    stage_down(send, stride * static_cast<size_t>(comm_.size()), 0, 0);
    if (last_.code != gcompSuccess) {
      const int32_t code = staged_word();
      for (int j = 0; j < comm_.size(); ++j)
        if (send_bytes[j] >= 4) std::memcpy(h_send_ + stride * static_cast<size_t>(j) + send_bytes[j] - 4, &code, 4);
    }
    comm_.alltoallv(h_send_, send_bytes, h_recv_, stride, recv_bytes, nullptr);
    stage_up(recv, stride, recv_bytes);
  }

  // The words written by a kernel (the word its argument): no host sync. In an agreement on a device
  // communicator, a word 0 becomes kNonFiniteGradientWord when the gated scan of the gradient
  // (once per agreement) found NaN/Inf.
  void put_status(uint8_t* buf, size_t stride, int slots, int32_t status) override {
    if (slots <= 0) return;
    const int64_t* flag = nullptr;
    if (agree_x_ != nullptr && !host_comm_) {
      if (!agree_scanned_) {
        GCOMP_CUDA_TRY(cudaMemsetAsync(flags_, 0, sizeof(int64_t), stream_));
        flag_nonfinite(agree_x_, agree_n_, step_);
        agree_scanned_ = true;
      }
      flag = flags_;
    }
    GCOMP_LAUNCH(cuda::detail::status_words_kernel, grid(static_cast<size_t>(slots)), kThreads, stream_, buf,
                 static_cast<uint64_t>(stride), slots, status, flag, kNonFiniteGradientWord);
  }
  void get_status(const uint8_t* buf, size_t stride, int slots, int32_t* out) override {
    if (slots <= 0) return;
    GCOMP_CUDA_TRY(cudaMemcpy2DAsync(out, 4, buf + stride - 4, stride, 4, static_cast<size_t>(slots),
                                     cudaMemcpyDeviceToHost, stream_));
    GCOMP_CUDA_TRY(cudaStreamSynchronize(stream_));
  }

  [[nodiscard]] bool synchronous_errors() const override { return false; }
  // Device communicator: the step never throws a data error of the device (device_status() reports
  // them), and every host-side verdict (peer status words) comes before the update is written.
  [[nodiscard]] bool update_in_caller_buffer() const override { return !host_comm_; }
  void begin_step() override {
    view_ = View{};
    agree_x_ = nullptr;
    sizes_used_ = 0;
    if (host_comm_) {
      reset_status(sticky_);
    } else {
      fold_step();  // the sticky record keeps every error until device_status() reads it
    }
    if (!res_.timing.empty()) {
      marks_ = 0;
      phase(Phase::kEncode);
    }
  }
  void end_step() override {
    if (!host_comm_) return;
    read_sticky();  // syncs: the step's last kernels have run when it returns
    throw_if_failed();
  }
  gcompStatus_t device_status(uint64_t* index) override {
    if (!host_comm_) fold_step();
    read_sticky();
    const DeviceStatus st = last_;
    reset_status(sticky_);
    GCOMP_CUDA_TRY(cudaStreamSynchronize(stream_));
    if (index != nullptr) *index = st.index;
    return static_cast<gcompStatus_t>(st.code);
  }

  // Phase timing: an event at every phase boundary of the step (a pool created once), read at the
  // end of the step (one sync on the stream).
  void enable_timing() override {
    while (res_.timing.size() < kMaxMarks + 1) {
      cudaEvent_t& e = res_.timing.emplace_back(nullptr);
      GCOMP_CUDA_TRY(cudaEventCreateWithFlags(&e, cudaEventDefault));
    }
  }
  void phase(Phase p) override {
    if (res_.timing.empty()) return;
    if (marks_ > 0 && phases_[marks_ - 1] == p) return;
    if (marks_ == kMaxMarks) return;  // later boundaries go to the last phase marked
    GCOMP_CUDA_TRY(cudaEventRecord(res_.timing[marks_], stream_));
    phases_[marks_++] = p;
  }
  std::array<double, kNumPhases> phase_times() override {
    std::array<double, kNumPhases> t{};
    if (res_.timing.empty() || marks_ == 0) return t;
    cudaEvent_t end = res_.timing[kMaxMarks];
    GCOMP_CUDA_TRY(cudaEventRecord(end, stream_));
    GCOMP_CUDA_TRY(cudaEventSynchronize(end));
    for (size_t i = 0; i < marks_; ++i) {
      float ms = 0;
      GCOMP_CUDA_TRY(cudaEventElapsedTime(&ms, res_.timing[i], i + 1 < marks_ ? res_.timing[i + 1] : end));
      t[static_cast<size_t>(phases_[i])] += 1e3 * static_cast<double>(ms);
    }
    marks_ = 0;
    return t;
  }

 private:
  struct Entry {
    std::unique_ptr<DeviceCodec> dev;
    // TernGrad scaler sharing only: the scales on the device; with a host communicator, pinned
    // host copies of this rank's scales and of their max.
    size_t num_scales = 0;
    float* d_scales = nullptr;
    float* h_scales = nullptr;
    float* h_scales_max = nullptr;
  };

  /// The gradient view of the step (view_input): g stands for data widened from `type` and, with
  /// zero, NaN/Inf as +0; active until the copy is written (materialize) or the next step.
  struct View {
    const float* g = nullptr;
    const void* data = nullptr;
    GradType type = GradType::kF32;
    bool zero = false;
    size_t n = 0;
    bool active = false;
  };
  /// True when p points into the viewed gradient.
  [[nodiscard]] bool viewed(const float* p) const {
    const std::less<const float*> before;
    return view_.active && !before(p, view_.g) && before(p, view_.g + view_.n);
  }
  /// What the kernels load for x: the view's elements from x's position on, or x itself.
  [[nodiscard]] Source source(const float* x) const {
    if (!viewed(x)) return Source{x};
    uint32_t src = view_.type == GradType::kBF16  ? gcomp::detail::kSrcBF16
                   : view_.type == GradType::kF16 ? gcomp::detail::kSrcF16
                                                  : gcomp::detail::kSrcF32;
    if (view_.zero) src |= gcomp::detail::kSrcZero;
    const auto at = static_cast<size_t>(x - view_.g) * gcomp::detail::src_bytes(src);
    return Source{static_cast<const uint8_t*>(view_.data) + at, src};
  }
  /// x as codec c's encodes load it: the view where they can (DeviceCodecAccess::loads_views: every
  /// device codec), else the floats (the copy written first, once).
  [[nodiscard]] Source source_for(int c, const float* x) {
    if (!DeviceCodecAccess::loads_views(dev(c))) plain(x);
    return source(x);
  }
  /// x for a kernel that reads floats: with the view, its copy written first (once).
  void plain(const float* x) {
    if (viewed(x)) materialize();
  }
  /// The copy the view stands for, written into g (widen, then zero_nonfinite in place).
  void materialize() {
    const View v = view_;
    view_ = View{};
    auto* g = const_cast<float*>(v.g);  // alloc()'d by the engine: its own buffer
    if (v.type != GradType::kF32) widen(v.data, v.type, g, v.n);
    if (v.zero) zero_nonfinite(g, v.type != GradType::kF32 ? g : static_cast<const float*>(v.data), v.n);
    if (v.type == GradType::kF32 && !v.zero) copy(g, static_cast<const float*>(v.data), v.n);
  }
  /// flags_[0] = 1 when x (the gradient view included) holds a NaN or Inf; with a gate (a status
  /// record), only when that record holds gcompErrorNonFinite (every thread returns at once else).
  void flag_nonfinite(const float* x, size_t n, const DeviceStatus* gate = nullptr) {
    const auto m = static_cast<int64_t>(n);
    if (viewed(x)) {
      const Source v = source(x);
      GCOMP_LAUNCH(cuda::detail::nonfinite_flag_src_kernel, grid(n), kThreads, stream_, v.data, v.src, m, flags_, gate);
      return;
    }
    GCOMP_LAUNCH(cuda::detail::nonfinite_flag_kernel, grid(n), kThreads, stream_, x, m, flags_, gate);
  }

  const DeviceCodec& dev(int c) const { return *codecs_[static_cast<size_t>(c)].dev; }
  /// decode_reduce of codec c with the Session step `st` in the decoders' store; false (nothing
  /// enqueued) when the codec has no fused store. acc: the codec's n elements of scratch.
  bool reduce_store(int c, uint8_t* payloads, size_t stride, int count, const size_t* sizes,
                    const std::vector<RngKey>& keys, float* acc, const SessionStep& st) {
    const DeviceCodec& k = dev(c);
    if (!DeviceCodecAccess::has_decode_store(k)) return false;
    GCOMP_EXPECTS(keys.size() >= static_cast<size_t>(count), gcompErrorInternal, "decode_reduce: one key per payload");
    const uint64_t* d_sizes = sizes != nullptr ? upload_sizes(sizes, count) : nullptr;
    DeviceCodecAccess::decode_reduce_store(k, payloads, stride, count, d_sizes, keys.data(), acc, st, ws_, ws_bytes_,
                                           stream_);
    merge();
    return true;
  }
  unsigned grid(size_t n) const { return cuda::detail::grid_for(static_cast<int64_t>(n), kThreads, max_blocks_); }
  // Zero-filled on the own stream; returns once the zeros are written, so they are ordered before
  // whatever any stream does with the buffer later (a step on a caller's non-blocking stream).
  void* alloc_raw(size_t bytes) {
    const size_t size = std::max<size_t>(bytes, 4);
    void*& p = res_.device.emplace_back(nullptr);  // listed before it exists: never leaked
    GCOMP_CUDA_TRY(cudaMalloc(&p, size));
    GCOMP_CUDA_TRY(cudaMemsetAsync(p, 0, size, res_.stream));
    GCOMP_CUDA_TRY(cudaStreamSynchronize(res_.stream));
    return p;
  }
  float* alloc_pinned_f32(size_t n) { return reinterpret_cast<float*>(alloc_pinned(n * sizeof(float))); }
  uint8_t* alloc_pinned(size_t bytes) {
    void*& p = res_.pinned.emplace_back(nullptr);
    GCOMP_CUDA_TRY(cudaMallocHost(&p, std::max<size_t>(bytes, 4)));
    return static_cast<uint8_t*>(p);
  }
  /// True when `s` is being captured into a graph (then no event of an uncaptured launch may be
  /// recorded or waited on with it). The legacy stream while another stream captures globally
  /// counts as capturing.
  static bool capturing(Stream s) {
    cudaStreamCaptureStatus st = cudaStreamCaptureStatusNone;
    const cudaError_t err = cudaStreamIsCapturing(s, &st);
    if (err == cudaErrorStreamCaptureImplicit) {
      (void)cudaGetLastError();
      return true;
    }
    GCOMP_CUDA_TRY(err);
    return st != cudaStreamCaptureStatusNone;
  }
  /// A call's status (the workspace's record) into the step's record (its first error kept).
  void merge() {
    GCOMP_LAUNCH(cuda::detail::merge_status_kernel, 1u, 1u, stream_, static_cast<const DeviceStatus*>(ws_), step_);
  }
  /// Device communicator: the step's record into the sticky one, then cleared (on the stream).
  void fold_step() {
    GCOMP_LAUNCH(cuda::detail::merge_status_kernel, 1u, 1u, stream_, static_cast<const DeviceStatus*>(step_), sticky_);
    reset_status(step_);
  }
  void reset_status(DeviceStatus* st) {
    auto* b = reinterpret_cast<uint8_t*>(st);
    GCOMP_CUDA_TRY(cudaMemsetAsync(b, 0, offsetof(DeviceStatus, index), stream_));
    GCOMP_CUDA_TRY(cudaMemsetAsync(b + offsetof(DeviceStatus, index), 0xff, sizeof(uint64_t), stream_));
  }
  void read_sticky() {
    GCOMP_CUDA_TRY(cudaMemcpyAsync(h_small_, sticky_, sizeof(DeviceStatus), cudaMemcpyDeviceToHost, stream_));
    GCOMP_CUDA_TRY(cudaStreamSynchronize(stream_));
    std::memcpy(&last_, h_small_, sizeof last_);
  }
  void throw_if_failed() const {
    if (last_.code == gcompSuccess) return;
    const auto code = static_cast<gcompStatus_t>(last_.code);
    GCOMP_FAIL(code, std::string("session step on the GPU: a codec reported ") + gcompGetErrorString(code) +
                         " at index " + std::to_string(last_.index) + "; state unchanged");
  }
  // The received messages back up to the device, each at its size.
  void stage_up(uint8_t* recv, size_t stride, const size_t* sizes) {
    for (int j = 0; j < comm_.size(); ++j) {
      const size_t at = stride * static_cast<size_t>(j);
      if (sizes[j] > 0)
        GCOMP_CUDA_TRY(cudaMemcpyAsync(recv + at, h_recv_ + at, sizes[j], cudaMemcpyHostToDevice, stream_));
    }
  }
  // Message sizes for the device codec's size rule: copied into the next free entries of a pinned
  // array and up to the device array beside it (enqueued on the stream). The entries are reused
  // from the next step on: every step with variable-length messages syncs the stream in
  // used_bytes() before it writes sizes again, so the earlier copies have completed.
  const uint64_t* upload_sizes(const size_t* sizes, int count) {
    const auto need = static_cast<size_t>(count);
    if (sizes_used_ + need > sizes_cap_) {
      // Grown between steps only in practice (capacity for a step's uplink and downlink sizes).
      GCOMP_CUDA_TRY(cudaStreamSynchronize(stream_));
      sizes_cap_ = std::max<size_t>(2 * (sizes_used_ + need), 4 * static_cast<size_t>(comm_.size()));
      h_sizes_ = reinterpret_cast<uint64_t*>(alloc_pinned(sizes_cap_ * sizeof(uint64_t)));
      d_sizes_ = reinterpret_cast<uint64_t*>(alloc_raw(sizes_cap_ * sizeof(uint64_t)));
      sizes_used_ = 0;
    }
    uint64_t* h = h_sizes_ + sizes_used_;
    uint64_t* d = d_sizes_ + sizes_used_;
    for (size_t j = 0; j < need; ++j) h[j] = static_cast<uint64_t>(sizes[j]);
    GCOMP_CUDA_TRY(cudaMemcpyAsync(d, h, need * sizeof(uint64_t), cudaMemcpyHostToDevice, stream_));
    sizes_used_ += need;
    return d;
  }
  // Payload down to the pinned send buffer, with the step's status record: an encode error goes
  // into the status word of every slot (the last 4 bytes of each `stride`), so that this rank
  // still joins the collective and every rank fails the step with it (issue 18 #3).
  void stage_down(const uint8_t* send, size_t bytes, size_t stride, int slots) {
    GCOMP_EXPECTS(bytes <= staging_bytes_, gcompErrorInternal, "session staging buffer too small");
    if (bytes > 0) GCOMP_CUDA_TRY(cudaMemcpyAsync(h_send_, send, bytes, cudaMemcpyDeviceToHost, stream_));
    read_sticky();
    if (last_.code == gcompSuccess || stride < 4) return;
    const int32_t code = staged_word();
    for (int j = 0; j < slots; ++j) std::memcpy(h_send_ + stride * static_cast<size_t>(j + 1) - 4, &code, 4);
  }
  /// The word of a staged message whose step recorded an error (last_): in an agreement, a
  /// gcompErrorNonFinite with NaN/Inf in the gradient is kNonFiniteGradientWord (a scan, on this
  /// failure only), as the engine classifies a synchronous failure.
  int32_t staged_word() {
    const auto code = static_cast<int32_t>(last_.code);
    if (agree_x_ == nullptr || code != gcompErrorNonFinite) return code;
    return has_nonfinite(agree_x_, agree_n_) ? kNonFiniteGradientWord : code;
  }

  Resources res_;  // first member: destroyed last, after the codecs
  View view_{};
  Communicator& comm_;
  const bool host_comm_;
  Stream stream_ = nullptr;    // where operations are enqueued now: res_.stream, or a step_device's
  bool step_pending_ = false;  // res_.event marks the end of a step_device
  int64_t max_blocks_ = 1;
  std::vector<Entry> codecs_;
  void* ws_ = nullptr;
  size_t ws_bytes_ = 0;
  DeviceStatus* sticky_ = nullptr;  // the errors not yet reported (host communicator: of the step)
  DeviceStatus* step_ = nullptr;    // the step's errors (host communicator: sticky_ itself)
  DeviceStatus last_{};
  const float* agree_x_ = nullptr;  // the gradient of an agreement in progress (begin_agreement)
  size_t agree_n_ = 0;
  bool agree_scanned_ = false;  // flags_[0] holds the gated scan of agree_x_
  int64_t* flags_ = nullptr;
  uint8_t* h_small_ = nullptr;
  uint8_t* h_length_ = nullptr;  // a variable-length payload's length field (used_bytes)
  uint64_t* h_sizes_ = nullptr;  // message sizes: pinned (h_) and device (d_) arrays, sizes_cap_ each
  uint64_t* d_sizes_ = nullptr;
  size_t sizes_cap_ = 0, sizes_used_ = 0;
  uint8_t *h_send_ = nullptr, *h_recv_ = nullptr;
  size_t staging_bytes_ = 0;
  static constexpr size_t kMaxMarks = 64;
  std::array<Phase, kMaxMarks> phases_{};
  size_t marks_ = 0;
};

}  // namespace

std::unique_ptr<VecOps<float>> make_device_ops(Communicator& comm) { return std::make_unique<DeviceOps>(comm); }

}  // namespace gcomp::detail
