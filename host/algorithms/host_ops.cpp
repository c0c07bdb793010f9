// SPDX-License-Identifier: Apache-2.0
// VecOps on the host: the CPU codecs and plain loops over gcomp/detail/session_math.hpp. This is
// the twin of cuda/session/device_ops.cu that the CPU-only test suite runs.
#include "host/algorithms/vec_ops.hpp"

#include <gcomp/detail/session_math.hpp>

#include <algorithm>
#include <cstring>
#include <deque>

namespace gcomp::detail {

namespace {

class HostOps final : public VecOps {
 public:
  explicit HostOps(Communicator& comm) : comm_(comm) {}

  [[nodiscard]] bool on_device() const override { return false; }
  void set_stream(Stream) override {}
  void use_own_stream() override {}

  float* alloc_f32(size_t n) override { return f32_.emplace_back(std::max<size_t>(n, 1), 0.0f).data(); }
  uint8_t* alloc_bytes(size_t n) override { return bytes_.emplace_back(std::max<size_t>(n, 1), uint8_t{0}).data(); }
  void to_host(float* h_dst, const float* src, size_t n) override { std::copy(src, src + n, h_dst); }
  void from_host(float* dst, const float* h_src, size_t n) override { std::copy(h_src, h_src + n, dst); }

  void copy(float* dst, const float* src, size_t n) override {
    if (dst != src) std::copy(src, src + n, dst);
  }
  void fill_zero(float* dst, size_t n) override { std::fill(dst, dst + n, 0.0f); }
  void widen(const void* src, GradType type, float* dst, size_t n) override {
    switch (type) {
      case GradType::kF32: copy(dst, static_cast<const float*>(src), n); return;
      case GradType::kBF16: {
        const auto* s = static_cast<const uint16_t*>(src);
        for (size_t i = 0; i < n; ++i) dst[i] = bf16_to_float(s[i]);
        return;
      }
      case GradType::kF16: {
        const auto* s = static_cast<const uint16_t*>(src);
        for (size_t i = 0; i < n; ++i) dst[i] = f16_to_float(s[i]);
        return;
      }
    }
  }
  void zero_nonfinite(float* x, size_t n) override {
    for (size_t i = 0; i < n; ++i) x[i] = zero_nonfinite_f(x[i]);
  }
  void scale(float* dst, float a, const float* x, size_t n) override {
    for (size_t i = 0; i < n; ++i) dst[i] = mul_rn(a, x[i]);
  }
  void lincomb(float* dst, float a, const float* x, float b, const float* y, size_t n) override {
    for (size_t i = 0; i < n; ++i) dst[i] = lincomb_f(a, x[i], b, y[i]);
  }
  void mul(float* dst, const float* x, const float* y, size_t n) override {
    for (size_t i = 0; i < n; ++i) dst[i] = mul_rn(x[i], y[i]);
  }
  void vote(float* u, const float* acc, float lr, bool tie_to_zero, size_t n) override {
    for (size_t i = 0; i < n; ++i) u[i] = vote_f(acc[i], lr, tie_to_zero);
  }

  void nonfinite_agree(const float* x, size_t n, int64_t* local, int64_t* any) override {
    int64_t bad = 0;
    for (size_t i = 0; i < n; ++i) bad |= is_finite_f(x[i]) ? 0 : 1;
    *local = bad;
    comm_.allreduce(&bad, any, 1, DataType::kI64, ReduceOp::kMax, nullptr);
  }

  int add_codec(const CodecSpec& spec, const Layout& layout, bool shared_scale) override {
    Entry e;
    e.codec = make_codec(spec, layout);
    const size_t n = static_cast<size_t>(layout.num_elems());
    e.delta.assign(std::max<size_t>(n, 1), 0.0f);
    if (shared_scale) {
      e.scales.assign(static_cast<size_t>(e.codec->num_scales()), 0.0f);
      e.scales_max.assign(e.scales.size(), 0.0f);
    }
    codecs_.push_back(std::move(e));
    return static_cast<int>(codecs_.size()) - 1;
  }
  [[nodiscard]] size_t encoded_bytes(int c) const override { return codecs_[static_cast<size_t>(c)].codec->encoded_bytes(); }

  void encode(int c, const float* x, const RngKey& key, uint8_t* payload) override {
    const Codec& k = codec(c);
    k.encode(in(k, x), key, out(k, payload));
  }
  void encode_ef(int c, const float* p, float* e, const RngKey& key, uint8_t* payload) override {
    const Codec& k = codec(c);
    k.encode_ef(in(k, p), key, out(k, payload), std::span<float>(e, static_cast<size_t>(k.num_elems())));
  }
  void encode_diana(int c, const float* g, float* h, float alpha, const RngKey& key, uint8_t* payload) override {
    Entry& e = codecs_[static_cast<size_t>(c)];
    const Codec& k = *e.codec;
    const size_t n = static_cast<size_t>(k.num_elems());
    k.encode_diana(in(k, g), std::span<float>(h, n), alpha, key, out(k, payload), std::span<float>(e.delta.data(), n));
  }
  void encode_shared_scale(int c, const float* x, const RngKey& key, uint8_t* payload) override {
    Entry& e = codecs_[static_cast<size_t>(c)];
    const Codec& k = *e.codec;
    k.compute_scales(in(k, x), e.scales);
    comm_.allreduce(e.scales.data(), e.scales_max.data(), e.scales.size(), DataType::kF32, ReduceOp::kMax, nullptr);
    k.encode_with_scales(in(k, x), e.scales_max, key, out(k, payload));
  }
  void decode(int c, const uint8_t* payload, const RngKey& key, float* o) override {
    const Codec& k = codec(c);
    k.decode(std::span<const uint8_t>(payload, k.encoded_bytes()), key,
             std::span<float>(o, static_cast<size_t>(k.num_elems())));
  }
  void decode_reduce(int c, const uint8_t* payloads, size_t stride, int count, const std::vector<RngKey>& keys,
                     float* o) override {
    const Codec& k = codec(c);
    const std::span<float> acc(o, static_cast<size_t>(k.num_elems()));
    // Validate every payload before out changes (as the device decode_reduce).
    for (int j = 0; j < count; ++j)
      k.validate(std::span<const uint8_t>(payloads + stride * static_cast<size_t>(j), k.encoded_bytes()));
    std::fill(acc.begin(), acc.end(), 0.0f);
    for (int j = 0; j < count; ++j)
      k.decode_accumulate(std::span<const uint8_t>(payloads + stride * static_cast<size_t>(j), k.encoded_bytes()),
                          keys[static_cast<size_t>(j)], 1.0f, acc);
  }

  void reserve_staging(size_t) override {}
  void allgather(const uint8_t* send, uint8_t* recv, size_t bytes) override {
    comm_.allgather(send, recv, bytes, nullptr);
  }
  void alltoall(const uint8_t* send, uint8_t* recv, size_t bytes) override { comm_.alltoall(send, recv, bytes, nullptr); }

  void begin_step() override {}
  void end_step() override {}
  gcompStatus_t device_status(uint64_t* index) override {
    if (index != nullptr) *index = UINT64_MAX;
    return gcompSuccess;
  }

 private:
  struct Entry {
    std::unique_ptr<Codec> codec;
    std::vector<float> delta, scales, scales_max;
  };
  const Codec& codec(int c) const { return *codecs_[static_cast<size_t>(c)].codec; }
  static std::span<const float> in(const Codec& k, const float* x) {
    return std::span<const float>(x, static_cast<size_t>(k.num_elems()));
  }
  static std::span<uint8_t> out(const Codec& k, uint8_t* p) { return std::span<uint8_t>(p, k.encoded_bytes()); }

  Communicator& comm_;
  std::deque<std::vector<float>> f32_;  // deque: growing it never moves the buffers handed out
  std::deque<std::vector<uint8_t>> bytes_;
  std::vector<Entry> codecs_;
};

}  // namespace

std::unique_ptr<VecOps> make_host_ops(Communicator& comm) { return std::make_unique<HostOps>(comm); }

}  // namespace gcomp::detail
