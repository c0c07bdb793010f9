// SPDX-License-Identifier: Apache-2.0
// VecOps on the host, for double state (backend "cpu") and fp32 state (backend "host-f32", the
// twin of cuda/session/device_ops.cu that the CPU-only test suite runs): the CPU codecs and plain
// loops. fp32 element math is gcomp/detail/session_math.hpp (as the kernels); double math is the
// same expressions in double. Messages are fp32 payloads on both: the double implementation rounds
// its input to fp32 for the codec and widens what it decodes (exactly).
#include "host/algorithms/vec_ops.hpp"
#include "host/codecs/pieces.hpp"

#include <gcomp/detail/session_math.hpp>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>
#include <deque>
#include <exception>
#include <limits>
#include <type_traits>

namespace gcomp::detail {

namespace {

// Element math of one state type: fp32 through session_math.hpp (shared with the kernels), double
// as the same expressions (contraction is off in the whole build, so nothing is fused).
template <class T>
struct Math;

template <>
struct Math<float> {
  static float mul(float a, float b) { return mul_rn(a, b); }
  static float lincomb(float a, float x, float b, float y) { return lincomb_f(a, x, b, y); }
  static float vote(float acc, float lr, bool tie0) { return vote_f(acc, lr, tie0); }
  static bool nonfinite(float v) { return (float_bits(v) & 0x7f800000u) == 0x7f800000u; }
};

template <>
struct Math<double> {
  static double mul(double a, double b) { return a * b; }
  static double lincomb(double a, double x, double b, double y) { return a * x + b * y; }
  static double vote(double acc, double lr, bool tie0) {
    const double v = acc > 0 ? 1.0 : (acc < 0 ? -1.0 : (tie0 ? 0.0 : 1.0));
    return lr * v;
  }
  // Non-finite in the precision of the messages: NaN, Inf, and a finite double that rounds to
  // +-Inf in fp32 (|v| beyond FLT_MAX; issue 18 #3: 1e39 is finite here, not in the codec).
  static bool nonfinite(double v) { return (float_bits(static_cast<float>(v)) & 0x7f800000u) == 0x7f800000u; }
};

/// Slot j of a message buffer: its used bytes when `sizes` is given, else the codec's full size.
auto slots(const Codec& k, const uint8_t* payloads, size_t stride, const size_t* sizes) {
  return [&k, payloads, stride, sizes](int j) {
    const size_t bytes = sizes != nullptr ? sizes[static_cast<size_t>(j)] : k.encoded_bytes();
    return std::span<const uint8_t>(payloads + stride * static_cast<size_t>(j), bytes);
  };
}

/// slots(), after every one of the `count` slots is validated: nothing is written before all of
/// them pass.
auto validated_slots(const Codec& k, const uint8_t* payloads, size_t stride, int count, const size_t* sizes) {
  auto pay = slots(k, payloads, stride, sizes);
  for (int j = 0; j < count; ++j) k.validate(pay(j));
  return pay;
}

template <class T>
class HostOps final : public VecOps<T> {
  static constexpr bool kF32 = std::is_same_v<T, float>;

 public:
  explicit HostOps(Communicator& comm) : comm_(comm) {}

  [[nodiscard]] bool on_device() const override { return false; }
  void set_stream(Stream) override {}
  void use_own_stream() override {}

  T* alloc(size_t n) override { return t_.emplace_back(std::max<size_t>(n, 1), T{0}).data(); }
  uint8_t* alloc_bytes(size_t n) override { return bytes_.emplace_back(std::max<size_t>(n, 1), uint8_t{0}).data(); }
  void to_host(T* h_dst, const T* src, size_t n) override { copy(h_dst, src, n); }
  void from_host(T* dst, const T* h_src, size_t n) override { copy(dst, h_src, n); }

  void copy(T* dst, const T* src, size_t n) override {
    if (dst != src && n > 0) std::memmove(dst, src, n * sizeof(T));
  }
  void fill_zero(T* dst, size_t n) override {
    each(n, [&](size_t b, size_t e) { std::fill(dst + b, dst + e, T{0}); });
  }
  void widen(const void* src, GradType type, T* dst, size_t n) override {
    switch (type) {
      case GradType::kF32:
        if constexpr (kF32) {
          copy(dst, static_cast<const float*>(src), n);
        } else {
          const auto* s = static_cast<const float*>(src);
          for (size_t i = 0; i < n; ++i) dst[i] = static_cast<T>(s[i]);
        }
        return;
      case GradType::kBF16: {
        const auto* s = static_cast<const uint16_t*>(src);
        for (size_t i = 0; i < n; ++i) dst[i] = static_cast<T>(bf16_to_float(s[i]));
        return;
      }
      case GradType::kF16: {
        const auto* s = static_cast<const uint16_t*>(src);
        for (size_t i = 0; i < n; ++i) dst[i] = static_cast<T>(f16_to_float(s[i]));
        return;
      }
    }
  }
  void zero_nonfinite(T* dst, const T* src, size_t n) override {
    elementwise(dst, n, [&](size_t i) { return Math<T>::nonfinite(src[i]) ? T{0} : src[i]; });
  }
  void scale(T* dst, T a, const T* x, size_t n) override {
    elementwise(dst, n, [&](size_t i) { return Math<T>::mul(a, x[i]); });
  }
  void lincomb(T* dst, T a, const T* x, T b, const T* y, size_t n) override {
    elementwise(dst, n, [&](size_t i) { return Math<T>::lincomb(a, x[i], b, y[i]); });
  }
  void mul(T* dst, const T* x, const T* y, size_t n) override {
    elementwise(dst, n, [&](size_t i) { return Math<T>::mul(x[i], y[i]); });
  }
  void vote(T* u, const T* acc, T lr, bool tie_to_zero, size_t n) override {
    elementwise(u, n, [&](size_t i) { return Math<T>::vote(acc[i], lr, tie_to_zero); });
  }

  bool has_nonfinite(const T* x, size_t n) override {
    if constexpr (kF32) {
      return find_nonfinite_parallel(x, static_cast<int64_t>(n)) >= 0;  // the codecs' SIMD scan
    } else {
      // Branch-free so that the compiler vectorizes the scan (one read of x).
      unsigned bad = 0;
      for (size_t i = 0; i < n; ++i) bad |= Math<T>::nonfinite(x[i]) ? 1u : 0u;
      return bad != 0;
    }
  }
  void nonfinite_agree(const T* x, size_t n, int64_t* local, int64_t* any) override {
    int64_t mine = has_nonfinite(x, n) ? 1 : 0;
    *local = mine;
    comm_.allreduce(&mine, any, 1, DataType::kI64, ReduceOp::kMax, nullptr);
  }

  int add_codec(const CodecSpec& spec, const Layout& layout, bool shared_scale) override {
    Entry e;
    e.codec = make_codec(spec, layout);
    const size_t n = static_cast<size_t>(layout.num_elems());
    if (shared_scale) {
      e.scales.assign(static_cast<size_t>(e.codec->num_scales()), 0.0f);
      e.scales_max.assign(e.scales.size(), 0.0f);
    }
    codecs_.push_back(std::move(e));
    // fp32 scratch: the codec input (double: rounded state; float: DIANA's delta) and, for double,
    // the decoded values.
    if (n > f32a_.size()) f32a_.resize(n);
    if (!kF32 && n > f32b_.size()) f32b_.resize(n);
    return static_cast<int>(codecs_.size()) - 1;
  }
  [[nodiscard]] size_t encoded_bytes(int c) const override { return codec(c).encoded_bytes(); }

  void encode(int c, const T* x, const RngKey& key, uint8_t* payload) override {
    const Codec& k = codec(c);
    k.encode(to_f32(k, x), key, out(k, payload));
  }
  void encode_ef(int c, const T* p, T* e, const RngKey& key, uint8_t* payload) override {
    const Codec& k = codec(c);
    if constexpr (kF32) {
      k.encode_ef(in(k, p), key, out(k, payload), std::span<float>(e, static_cast<size_t>(k.num_elems())));
    } else {
      const std::span<uint8_t> pay = out(k, payload);
      k.encode(to_f32(k, p), key, pay);
      const float* d = decode_f32(k, pay, key);
      for (int64_t i = 0; i < k.num_elems(); ++i) e[i] = p[i] - static_cast<double>(d[i]);
    }
  }
  void encode_ef_lincomb(int c, T a, const T* x, T b, const T* y, T* e, T* scratch, const RngKey& key, uint8_t* payload,
                         size_t n) override {
    if constexpr (kF32) {
      // p = a x + b y produced where the codec reads it (twice for a codec that encodes from a
      // source: its encode, then the e pass), never stored.
      const Codec& k = codec(c);
      k.encode_ef_from(
          [&](int64_t s, int64_t t, float* d) {
            for (int64_t i = s; i < t; ++i) d[i - s] = Math<T>::lincomb(a, x[i], b, y[i]);
          },
          key, out(k, payload), std::span<float>(e, n));
    } else {
      VecOps<T>::encode_ef_lincomb(c, a, x, b, y, e, scratch, key, payload, n);
    }
  }
  void encode_diana(int c, const T* g, const T* h, T* h_out, T alpha, const RngKey& key, uint8_t* payload) override {
    const Codec& k = codec(c);
    const auto n = static_cast<size_t>(k.num_elems());
    if constexpr (kF32) {
      // The shift's second buffer takes h first (the pass the rollback copy of h used to be).
      copy(h_out, h, n);
      k.encode_diana(in(k, g), std::span<float>(h_out, n), alpha, key, out(k, payload),
                     std::span<float>(f32a_.data(), n));
    } else {
      for (size_t i = 0; i < n; ++i) f32a_[i] = static_cast<float>(g[i] - h[i]);  // delta, rounded once
      const std::span<uint8_t> pay = out(k, payload);
      k.encode(std::span<const float>(f32a_.data(), n), key, pay);
      const float* d = decode_f32(k, pay, key);
      for (size_t i = 0; i < n; ++i) h_out[i] = h[i] + alpha * static_cast<double>(d[i]);
    }
  }
  void encode_shared_scale(int c, const T* x, const RngKey& key, uint8_t* payload) override {
    Entry& e = codecs_[static_cast<size_t>(c)];
    const Codec& k = *e.codec;
    const std::span<const float> xf = to_f32(k, x);
    // A rank whose scales fail (a non-finite block) still joins the allreduce, with +Inf scales:
    // every rank then sees a non-finite maximum and fails the step with it (issue 18 #3).
    std::exception_ptr failed;
    try {
      k.compute_scales(xf, e.scales);
    } catch (const Error&) {
      failed = std::current_exception();
      std::fill(e.scales.begin(), e.scales.end(), std::numeric_limits<float>::infinity());
    }
    comm_.allreduce(e.scales.data(), e.scales_max.data(), e.scales.size(), DataType::kF32, ReduceOp::kMax, nullptr);
    if (failed) std::rethrow_exception(failed);
    for (size_t b = 0; b < e.scales_max.size(); ++b)
      if (!std::isfinite(e.scales_max[b]))
        GCOMP_FAIL(gcompErrorNonFinite, "non-finite gradient on another rank (shared scale of block " +
                                            std::to_string(b) + "); state unchanged");
    k.encode_with_scales(xf, e.scales_max, key, out(k, payload));
  }
  void decode(int c, const uint8_t* payload, const RngKey& key, T* o) override {
    const Codec& k = codec(c);
    const auto n = static_cast<size_t>(k.num_elems());
    const std::span<const uint8_t> pay(payload, k.encoded_bytes());
    if constexpr (kF32) {
      k.decode(pay, key, std::span<float>(o, n));
    } else {
      const float* d = decode_f32(k, pay, key);
      for (size_t i = 0; i < n; ++i) o[i] = static_cast<double>(d[i]);
    }
  }
  void decode_received(int c, uint8_t* payload, size_t bytes, const RngKey& key, T* o) override {
    const Codec& k = codec(c);
    const auto n = static_cast<size_t>(k.num_elems());
    const std::span<const uint8_t> pay(payload, bytes);  // the codec's size rule checks `bytes`
    if constexpr (kF32) {
      k.decode(pay, key, std::span<float>(o, n));
    } else {
      const float* d = decode_f32(k, pay, key);
      for (size_t i = 0; i < n; ++i) o[i] = static_cast<double>(d[i]);
    }
  }
  void decode_reduce(int c, uint8_t* payloads, size_t stride, int count, const size_t* sizes,
                     const std::vector<RngKey>& keys, T* o) override {
    const Codec& k = codec(c);
    const auto n = static_cast<size_t>(k.num_elems());
    // Every payload validated before out changes (as the device decode_reduce).
    const auto pay = validated_slots(k, payloads, stride, count, sizes);
    if constexpr (kF32) {
      if (k.range_decodable()) {
        write_out(n, o, [&](int64_t s, int64_t e, float* d) {
          sum_range(k, pay, count, s, e, d);
          for (int64_t i = 0; i < e - s; ++i) d[i] = plus_zero(d[i]);
        });
        return;
      }
    }
    std::fill(o, o + n, T{0});
    for (int j = 0; j < count; ++j) {
      if constexpr (kF32) {
        k.decode_accumulate(pay(j), keys[static_cast<size_t>(j)], 1.0f, std::span<float>(o, n));
      } else {
        const float* d = decode_f32(k, pay(j), keys[static_cast<size_t>(j)]);
        for (size_t i = 0; i < n; ++i) o[i] += static_cast<double>(d[i]);
      }
    }
  }
  void decode_reduce_scale(int c, uint8_t* payloads, size_t stride, int count, const size_t* sizes,
                           const std::vector<RngKey>& keys, T a, T* o, T b, T* u, size_t n) override {
    const Codec& k = codec(c);
    if constexpr (kF32) {
      if (k.range_decodable() && n == static_cast<size_t>(k.num_elems())) {
        const auto pay = validated_slots(k, payloads, stride, count, sizes);
        if (u == nullptr) {
          write_out(n, o, [&](int64_t s, int64_t e, float* d) {
            sum_range(k, pay, count, s, e, d);
            for (int64_t i = 0; i < e - s; ++i) d[i] = Math<T>::mul(a, plus_zero(d[i]));
          });
          return;
        }
        // Only u is read after this call: out is not written.
        write_out(n, u, [&](int64_t s, int64_t e, float* d) {
          sum_range(k, pay, count, s, e, d);
          for (int64_t i = 0; i < e - s; ++i) d[i] = Math<T>::mul(b, Math<T>::mul(a, plus_zero(d[i])));
        });
        return;
      }
    }
    VecOps<T>::decode_reduce_scale(c, payloads, stride, count, sizes, keys, a, o, b, u, n);
  }

  void decode_mean_add(int c, uint8_t* payloads, size_t stride, int count, const size_t* sizes,
                       const std::vector<RngKey>& keys, T a, T* scratch, const T* y, T* w, size_t n) override {
    const Codec& k = codec(c);
    if constexpr (kF32) {
      if (k.range_decodable() && n == static_cast<size_t>(k.num_elems())) {
        const auto pay = validated_slots(k, payloads, stride, count, sizes);
        // The sum of each sub-range in L1, then w there (w != y): w is written once.
        write_out(n, w, [&](int64_t s, int64_t e, float* d) {
          sum_range(k, pay, count, s, e, d);
          for (int64_t i = 0; i < e - s; ++i)
            d[i] = Math<T>::lincomb(T{1}, y[s + i], T{1}, Math<T>::mul(a, plus_zero(d[i])));
        });
        return;
      }
    }
    VecOps<T>::decode_mean_add(c, payloads, stride, count, sizes, keys, a, scratch, y, w, n);
  }
  bool mean_add_fusable(int c, const uint8_t* payloads, size_t stride, int count, const size_t* sizes,
                        size_t n) override {
    if constexpr (kF32) {
      const Codec& k = codec(c);
      if (!k.range_decodable() || n != static_cast<size_t>(k.num_elems())) return false;
      validated_slots(k, payloads, stride, count, sizes);
      return true;
    } else {
      return false;
    }
  }
  void encode_ef_mean_add(int c, const uint8_t* payloads, size_t stride, int count, const size_t* sizes,
                          const std::vector<RngKey>& keys, T a, const T* y, int cd, const RngKey& key,
                          uint8_t* payload_out, T* e_out, size_t n) override {
    if constexpr (kF32) {
      // p~ = y + a * sum of each range, produced where the server's codec reads it (the payloads
      // were validated by mean_add_fusable): decode_mean_add's expressions, never stored.
      const Codec& k = codec(c);
      const auto pay = slots(k, payloads, stride, sizes);
      const Codec& kd = codec(cd);
      kd.encode_ef_from(
          [&](int64_t s, int64_t t, float* d) {
            sum_range(k, pay, count, s, t, d);
            for (int64_t i = 0; i < t - s; ++i)
              d[i] = Math<T>::lincomb(T{1}, y[s + i], T{1}, Math<T>::mul(a, plus_zero(d[i])));
          },
          key, out(kd, payload_out), std::span<float>(e_out, n));
    } else {
      VecOps<T>::encode_ef_mean_add(c, payloads, stride, count, sizes, keys, a, y, cd, key, payload_out, e_out, n);
    }
  }
  void decode_scale(const int* cs, int count, uint8_t* payloads, size_t stride, const size_t* sizes, const RngKey* keys,
                    const size_t* offsets, T a, T* o) override {
    auto pay = [&](int j) {
      const auto J = static_cast<size_t>(j);
      const size_t bytes = sizes != nullptr ? sizes[J] : codec(cs[j]).encoded_bytes();
      return std::span<const uint8_t>(payloads + stride * J, bytes);
    };
    bool fused = kF32;
    for (int j = 0; j < count; ++j) {
      const Codec& k = codec(cs[j]);
      fused = fused && k.range_decodable() && offsets[j + 1] - offsets[j] == static_cast<size_t>(k.num_elems());
      k.validate(pay(j));  // every message before o (the caller's update) changes
    }
    if constexpr (kF32) {
      if (fused) {
        for (int j = 0; j < count; ++j) {
          const Codec& k = codec(cs[j]);
          write_out(static_cast<size_t>(k.num_elems()), o + offsets[j], [&](int64_t s, int64_t e, float* d) {
            k.decode_range(pay(j), s, e, 1.0f, false, d);
            if (a != T{1})
              for (int64_t i = 0; i < e - s; ++i) d[i] = Math<T>::mul(a, d[i]);
          });
        }
        return;
      }
    }
    VecOps<T>::decode_scale(cs, count, payloads, stride, sizes, keys, offsets, a, o);
  }

  [[nodiscard]] bool variable_length(int c) const override { return codec(c).variable_length(); }
  size_t used_bytes(int c, const uint8_t* payload) override {
    const Codec& k = codec(c);
    return k.used_bytes(std::span<const uint8_t>(payload, k.encoded_bytes()));
  }

  void reserve_staging(size_t) override {}
  void allgather(const uint8_t* send, uint8_t* recv, size_t bytes) override {
    comm_.allgather(send, recv, bytes, nullptr);
  }
  void alltoall(const uint8_t* send, uint8_t* recv, size_t bytes) override {
    comm_.alltoall(send, recv, bytes, nullptr);
  }
  void allgatherv(const uint8_t* send, size_t send_bytes, uint8_t* recv, size_t stride, size_t* recv_bytes) override {
    comm_.allgatherv(send, send_bytes, recv, stride, recv_bytes, nullptr);
  }
  void alltoallv(const uint8_t* send, const size_t* send_bytes, uint8_t* recv, size_t stride,
                 size_t* recv_bytes) override {
    comm_.alltoallv(send, send_bytes, recv, stride, recv_bytes, nullptr);
  }
  void put_status(uint8_t* buf, size_t stride, int slots, int32_t status) override {
    for (int j = 0; j < slots; ++j) std::memcpy(buf + stride * static_cast<size_t>(j + 1) - 4, &status, 4);
  }
  void get_status(const uint8_t* buf, size_t stride, int slots, int32_t* out) override {
    for (int j = 0; j < slots; ++j) std::memcpy(out + j, buf + stride * static_cast<size_t>(j + 1) - 4, 4);
  }

  [[nodiscard]] bool synchronous_errors() const override { return true; }
  void begin_step() override {
    if (!timing_) return;
    times_.fill(0.0);
    current_ = -1;
    last_ = Clock::now();
  }
  void end_step() override {}
  gcompStatus_t device_status(uint64_t* index) override {
    if (index != nullptr) *index = UINT64_MAX;
    return gcompSuccess;
  }

  void enable_timing() override { timing_ = true; }
  void phase(Phase p) override {
    if (!timing_) return;
    mark();
    current_ = static_cast<int>(p);
  }
  std::array<double, kNumPhases> phase_times() override {
    if (timing_) {
      mark();
      current_ = -1;
    }
    return times_;
  }

 private:
  using Clock = std::chrono::steady_clock;
  struct Entry {
    std::unique_ptr<Codec> codec;
    std::vector<float> scales, scales_max;
  };
  const Codec& codec(int c) const { return *codecs_[static_cast<size_t>(c)].codec; }
  static std::span<const float> in(const Codec& k, const float* x) {
    return std::span<const float>(x, static_cast<size_t>(k.num_elems()));
  }
  static std::span<uint8_t> out(const Codec& k, uint8_t* p) { return std::span<uint8_t>(p, k.encoded_bytes()); }
  // The codec's fp32 input: the state itself (float), or rounded once into scratch (double).
  std::span<const float> to_f32(const Codec& k, const T* x) {
    if constexpr (kF32) {
      return in(k, x);
    } else {
      const auto n = static_cast<size_t>(k.num_elems());
      for (size_t i = 0; i < n; ++i) f32a_[i] = static_cast<float>(x[i]);
      return std::span<const float>(f32a_.data(), n);
    }
  }
  const float* decode_f32(const Codec& k, std::span<const uint8_t> payload, const RngKey& key) {
    k.decode(payload, key, std::span<float>(f32b_.data(), static_cast<size_t>(k.num_elems())));
    return f32b_.data();
  }
  // f(begin, end) over [0, n): pieces on the pool for large n (elementwise, so the result does not
  // depend on the threads), else in order on this thread.
  template <class F>
  static void each(size_t n, F&& f) {
    for_each_piece(static_cast<int64_t>(n),
                   [&](int64_t b, int64_t e) { f(static_cast<size_t>(b), static_cast<size_t>(e)); });
  }
  // f(s, e, d) for the L1-sized sub-ranges [s, e) of [0, n): f writes elements [s, e) of out to
  // d[0, e - s). Pieces on the pool at fixed boundaries (the result does not depend on the
  // threads); an output of stream_min_bytes() or more goes through an L1 scratch and streaming
  // stores (overwrite_pieces), so its lines are not read from memory before they are written.
  template <class F>
  static void write_out(size_t n, float* out, F&& f) {
    overwrite_pieces(static_cast<int64_t>(n), out, [&](int64_t a, int64_t e, float* d) {
      for_each_sub(a, e, [&](int64_t s, int64_t t) { f(s, t, d + (s - a)); });
    });
  }
  // dst[i] = f(i) for i < n, f reading its inputs at i only (so dst may be one of them). Plain
  // stores: the engine reads these outputs again within the step, and measured per rank (2 local
  // ranks, 16M elements, thread CPU time of a doublesqueeze step) streaming them cost 1-2 % more
  // than leaving them in the caches.
  template <class F>
  static void elementwise(T* dst, size_t n, F&& f) {
    each(n, [&](size_t b, size_t e) {
      for (size_t i = b; i < e; ++i) dst[i] = f(i);
    });
  }
  // d[0, e - s) = sum_j decode(pay(j))[s, e) in rank order, but for the sign of a zero: the
  // first payload is decoded into d, not added to +0 (no pass to zero d), and +0 + v is v except
  // for v = -0, so an element is -0 where the sum from +0 is +0 (every term so far -0), and is
  // that sum otherwise. Every caller adds +0 to each element (plus_zero) in the pass that reads
  // it: then the bits of `count` decode_accumulate calls with weight 1 into +0.
  template <class Pay>
  static void sum_range(const Codec& k, const Pay& pay, int count, int64_t s, int64_t e, float* d) {
    if (count == 0) {
      std::fill(d, d + (e - s), 0.0f);
      return;
    }
    k.decode_range(pay(0), s, e, 1.0f, false, d);
    for (int j = 1; j < count; ++j) k.decode_range(pay(j), s, e, 1.0f, true, d);
  }
  // v + 0: -0 becomes +0, every other value (no NaN reaches here) is unchanged.
  static float plus_zero(float v) { return v + 0.0f; }
  void mark() {
    const auto now = Clock::now();
    if (current_ >= 0)
      times_[static_cast<size_t>(current_)] += std::chrono::duration<double, std::micro>(now - last_).count();
    last_ = now;
  }

  Communicator& comm_;
  std::deque<std::vector<T>> t_;  // deque: growing it never moves the buffers handed out
  std::deque<std::vector<uint8_t>> bytes_;
  std::vector<Entry> codecs_;
  std::vector<float> f32a_, f32b_;
  bool timing_ = false;
  int current_ = -1;
  Clock::time_point last_{};
  std::array<double, kNumPhases> times_{};
};

}  // namespace

template <class T>
std::unique_ptr<VecOps<T>> make_host_ops(Communicator& comm) {
  return std::make_unique<HostOps<T>>(comm);
}

template std::unique_ptr<VecOps<float>> make_host_ops<float>(Communicator&);
template std::unique_ptr<VecOps<double>> make_host_ops<double>(Communicator&);

}  // namespace gcomp::detail
