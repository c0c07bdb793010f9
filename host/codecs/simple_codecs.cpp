// SPDX-License-Identifier: Apache-2.0
// identity, sign (scaled sign and plain sign, §3.2-3.3) and natural compression (§5.3).
#include "host/codecs/simple_codecs.hpp"

#include "host/codecs/pieces.hpp"

#include <gcomp/detail/codec_math.hpp>
#include <gcomp/detail/fused_memory.hpp>
#include <gcomp/detail/norms.hpp>
#include <gcomp/detail/payload_rules.hpp>

#include <algorithm>
#include <cstring>
#include <memory>

namespace gcomp::detail {

// ----------------------------------------------------------------------------------- identity

size_t IdentityCodec::encoded_bytes() const { return static_cast<size_t>(4 * num_elems()); }
double IdentityCodec::encoded_bits() const { return 32.0 * static_cast<double>(num_elems()); }
Guarantee IdentityCodec::guarantee() const { return Guarantee{Guarantee::Kind::kUnbiased, 0.0, 0.0}; }

void IdentityCodec::encode(std::span<const float> x, const RngKey&, std::span<uint8_t> payload) const {
  check_encode_args(x, payload);
  require_finite(x.data(), num_elems());
  for_each_piece(num_elems(), [&](int64_t begin, int64_t end) {
    std::memcpy(payload.data() + 4 * begin, x.data() + begin, sizeof(float) * static_cast<size_t>(end - begin));
  });
}

void IdentityCodec::validate(std::span<const uint8_t> payload) const {
  if (payload.size() != encoded_bytes()) corrupt(spec(), "wrong size");
  std::vector<int64_t> bad(static_cast<size_t>(num_pieces(num_elems())), -1);
  const bool aligned = reinterpret_cast<uintptr_t>(payload.data()) % alignof(float) == 0;
  for_each_piece(num_elems(), [&](int64_t begin, int64_t end) {
    if (aligned) {  // the payload's floats in place: one read at memory speed, no copy
      const int64_t i = kernels::find_nonfinite(reinterpret_cast<const float*>(payload.data()) + begin, end - begin);
      if (i >= 0) bad[static_cast<size_t>(begin / kPieceElems)] = begin + i;
      return;
    }
    float local[kSubElems];  // aligned copy: a payload need not be 4-byte aligned
    for_each_sub(begin, end, [&](int64_t a, int64_t e) {
      if (bad[static_cast<size_t>(begin / kPieceElems)] >= 0) return;
      std::memcpy(local, payload.data() + 4 * a, sizeof(float) * static_cast<size_t>(e - a));
      const int64_t i = kernels::find_nonfinite(local, e - a);
      if (i >= 0) bad[static_cast<size_t>(begin / kPieceElems)] = a + i;
    });
  });
  for (int64_t i : bad)
    if (i >= 0) corrupt(spec(), "element " + std::to_string(i) + " is not finite");
}

void IdentityCodec::decode_range(std::span<const uint8_t> payload, int64_t begin, int64_t end, float weight,
                                 bool accumulate, float* out) const {
  if (!accumulate) {
    std::memcpy(out, payload.data() + 4 * begin, sizeof(float) * static_cast<size_t>(end - begin));
    return;
  }
  float local[kSubElems];
  for_each_sub(begin, end, [&](int64_t a, int64_t e) {
    std::memcpy(local, payload.data() + 4 * a, sizeof(float) * static_cast<size_t>(e - a));
    kernels::axpy(local, e - a, weight, out + (a - begin));
  });
}

void IdentityCodec::decode_accumulate(std::span<const uint8_t> payload, const RngKey&, float weight,
                                      std::span<float> out) const {
  check_decode_args(payload, out);
  for_each_piece(num_elems(), [&](int64_t b, int64_t e) { decode_range(payload, b, e, weight, true, out.data() + b); });
}

void IdentityCodec::decode(std::span<const uint8_t> payload, const RngKey&, std::span<float> out) const {
  check_decode_args(payload, out);
  if (4 * num_elems() < stream_min_bytes()) {
    for_each_piece(num_elems(),
                   [&](int64_t b, int64_t e) { decode_range(payload, b, e, 1.0f, false, out.data() + b); });
    return;
  }
  // A copy far larger than the caches: streaming stores, no read of the output's lines
  for_each_piece(num_elems(), [&](int64_t b, int64_t e) {
    kernels::stream_copy(payload.data() + 4 * b, e - b, out.data() + b);
    kernels::stream_fence();
  });
}

// --------------------------------------------------------------------------------------- sign

SignCodec::SignCodec(CodecSpec spec, Layout layout) : Codec(std::move(spec), std::move(layout)) {
  const SignOptions& o = this->spec().options<SignOptions>();
  scaled_ = o.scaled;
  blocks_ = block_offsets(this->layout(), o.block);
  num_blocks_ = static_cast<int64_t>(blocks_.size()) - 1;
  words_ = ceil_div(num_elems(), kGroupElems);
  for (int64_t b = 0; b < num_blocks_; ++b) {
    aligned_ = aligned_ && blocks_[b] % kGroupElems == 0;
    max_block_ = std::max(max_block_, blocks_[b + 1] - blocks_[b]);
  }
}

int64_t SignCodec::num_scales() const { return scaled_ ? num_blocks_ : 0; }

size_t SignCodec::encoded_bytes() const { return static_cast<size_t>(4 * num_scales() + 4 * words_); }

double SignCodec::encoded_bits() const {
  return static_cast<double>(num_elems()) + 32.0 * static_cast<double>(num_scales());
}

Guarantee SignCodec::guarantee() const {
  if (!scaled_) return Guarantee{};
  int64_t b = 0;
  for (int64_t i = 0; i < num_blocks_; ++i) b = std::max(b, blocks_[i + 1] - blocks_[i]);
  return Guarantee{Guarantee::Kind::kContractive, 0.0, b > 0 ? 1.0 / static_cast<double>(b) : 1.0};
}

namespace {

// Sign bits of src[0, len) (elements from a multiple of 32 on) into dst[0 ..]; lanes past len
// read +0 (bit 0).
void sign_range(const float* src, int64_t len, uint32_t* dst) {
  const int64_t full = len / kGroupElems;
  kernels::sign_words(src, full, dst);
  if (full * kGroupElems < len) {  // the last, partial group
    float tail[kGroupElems] = {};
    std::copy(src + full * kGroupElems, src + len, tail);
    kernels::sign_words(tail, 1, dst + full);
  }
}

}  // namespace

void SignCodec::encode(std::span<const float> x, const RngKey&, std::span<uint8_t> payload) const {
  check_encode_args(x, payload);
  if (scaled_ && aligned_) {
    encode_tiles(x.data(), nullptr, payload);
    return;
  }
  const int64_t m = num_scales();
  std::vector<float> scales(static_cast<size_t>(m));
  const int64_t n = num_elems();
  if (scaled_) {
    const std::vector<double> sums = reduce_blocks(blocks_, x.data(), kernels::ReduceOp::kAbsSum);
    for (int64_t b = 0; b < m; ++b) {
      scales[b] = finish_mean_abs(sums[b], blocks_[b + 1] - blocks_[b]);
      if (!is_finite_f(scales[b])) GCOMP_FAIL(gcompErrorNonFinite, "non-finite gradient in block " + std::to_string(b));
    }
  } else {
    require_finite(x.data(), num_elems());
  }
  uint8_t* out = payload.data();
  for (int64_t b = 0; b < m; ++b) store_f32(out + 4 * b, scales[b]);
  uint8_t* words = out + 4 * m;
  for_each_piece(n, [&](int64_t begin, int64_t end) {
    uint32_t local[kSubElems / kGroupElems];
    for_each_sub(begin, end, [&](int64_t a, int64_t e) {
      sign_range(x.data() + a, e - a, local);
      std::memcpy(words + 4 * (a / kGroupElems), local,
                  sizeof(uint32_t) * static_cast<size_t>(ceil_div(e - a, kGroupElems)));
    });
  });
}

Codec::SourceEncode SignCodec::encode_from(const Source& source, const RngKey&, std::span<uint8_t> payload,
                                           std::span<float> e) const {
  if (!scaled_ || !aligned_) return SourceEncode::kUnsupported;
  if (max_block_ <= kTileElems) {
    encode_ef_blocks(source, payload, e);
    return SourceEncode::kPayloadAndError;
  }
  encode_tiles(nullptr, &source, payload);
  return SourceEncode::kPayload;
}

void SignCodec::encode_tiles(const float* x, const Source* source, std::span<uint8_t> payload) const {
  const int64_t m = num_scales();
  const int64_t n = num_elems();
  std::vector<uint32_t> words(static_cast<size_t>(words_));
  const std::function<void(int64_t, int64_t, const float*)> on_tile = [&](int64_t a, int64_t e, const float* data) {
    sign_range(data, e - a, words.data() + a / kGroupElems);
  };
  const std::vector<double> sums = reduce_blocks(blocks_, x, kernels::ReduceOp::kAbsSum, {}, &on_tile, source);
  std::vector<float> scales(static_cast<size_t>(m));
  for (int64_t b = 0; b < m; ++b) {
    scales[b] = finish_mean_abs(sums[b], blocks_[b + 1] - blocks_[b]);
    if (!is_finite_f(scales[b])) GCOMP_FAIL(gcompErrorNonFinite, "non-finite gradient in block " + std::to_string(b));
  }
  uint8_t* out = payload.data();
  for (int64_t b = 0; b < m; ++b) store_f32(out + 4 * b, scales[b]);
  for_each_piece(n, [&](int64_t begin, int64_t end) {  // n = 0: none
    const int64_t w0 = begin / kGroupElems, w1 = ceil_div(end, kGroupElems);
    std::memcpy(out + 4 * m + 4 * w0, words.data() + w0, sizeof(uint32_t) * static_cast<size_t>(w1 - w0));
  });
}

void SignCodec::validate(std::span<const uint8_t> payload) const {
  if (payload.size() != encoded_bytes()) corrupt(spec(), "wrong size");
  for (int64_t b = 0; b < num_scales(); ++b) {
    if (!scale_ok(load_f32(payload.data() + 4 * b)))
      corrupt(spec(), "scale of block " + std::to_string(b) + " is negative or not finite");
  }
  if (words_ > 0 && !padding_clear(load_u32(payload.data() + 4 * num_scales() + 4 * (words_ - 1)), num_elems()))
    corrupt(spec(), "padding bits set in the last word");
}

void SignCodec::decode_range(std::span<const uint8_t> payload, int64_t begin, int64_t end, float weight,
                             bool accumulate, float* out) const {
  const uint8_t* words = payload.data() + 4 * num_scales();
  uint32_t local[kSubElems / kGroupElems];
  for_each_sub(begin, end, [&](int64_t a, int64_t e) {
    const int64_t g0 = a / kGroupElems;
    std::memcpy(local, words + 4 * g0, sizeof(uint32_t) * static_cast<size_t>(ceil_div(e, kGroupElems) - g0));
    const auto run = [&](int64_t r0, int64_t r1, float scale) {
      kernels::decode_planes(local, 0, r0 - g0 * kGroupElems, r1 - r0, &scale, weight, accumulate, out + (r0 - begin));
    };
    if (scaled_)
      for_each_run(blocks_, a, e,
                   [&](int64_t r0, int64_t r1, int64_t b) { run(r0, r1, load_f32(payload.data() + 4 * b)); });
    else
      run(a, e, 1.0f);
  });
}

void SignCodec::decode_impl(std::span<const uint8_t> payload, float weight, bool overwrite,
                            std::span<float> out) const {
  check_decode_args(payload, out);
  if (overwrite) {
    overwrite_pieces(num_elems(), out.data(),
                     [&](int64_t a, int64_t e, float* dst) { decode_range(payload, a, e, 1.0f, false, dst); });
    return;
  }
  for_each_piece(num_elems(), [&](int64_t b, int64_t e) { decode_range(payload, b, e, weight, true, out.data() + b); });
}

void SignCodec::decode_accumulate(std::span<const uint8_t> payload, const RngKey&, float weight,
                                  std::span<float> out) const {
  decode_impl(payload, weight, false, out);
}

void SignCodec::decode(std::span<const uint8_t> payload, const RngKey&, std::span<float> out) const {
  decode_impl(payload, 1.0f, true, out);
}

void SignCodec::encode_ef_blocks(const Source& source, std::span<uint8_t> payload, std::span<float> e) const {
  const int64_t m = num_scales();
  const int64_t n = num_elems();
  std::vector<float> scales(static_cast<size_t>(m));
  std::vector<uint32_t> words(static_cast<size_t>(words_));
  // Tasks of whole blocks, up to about kPieceElems elements (fixed boundaries: the result does not
  // depend on the threads); a task stops at its first non-finite scale and records it.
  const int64_t per_task = std::max<int64_t>(1, kPieceElems / std::max<int64_t>(max_block_, 1));
  const int64_t tasks = ceil_div(m, per_task);
  std::vector<int64_t> bad(static_cast<size_t>(tasks), -1);
  const bool stream = 4 * n >= stream_min_bytes();
  const float ef_weight = fused_weight(FuseMode::kEF, 0.0f);
  auto task = [&](int64_t t) {
    alignas(64) float v[kTileElems];
    for (int64_t b = t * per_task; b < std::min(m, (t + 1) * per_task); ++b) {
      const int64_t a = blocks_[b], len = blocks_[b + 1] - a;
      source(a, a + len, v);
      // The block's one tile is its value (reduce.hpp), so its scale is encode_tiles()'s.
      const float scale = finish_mean_abs(kernels::reduce_tile(kernels::ReduceOp::kAbsSum, v, len, 0.0), len);
      if (!is_finite_f(scale)) {
        bad[static_cast<size_t>(t)] = b;
        break;
      }
      scales[b] = scale;
      uint32_t* w = words.data() + a / kGroupElems;
      sign_range(v, len, w);
      // e = p + (-1) * decoded: the decode_range of encode_ef's e pass on these words and scale.
      kernels::decode_planes(w, 0, 0, len, &scale, ef_weight, true, v);
      if (stream)
        kernels::stream_copy(reinterpret_cast<const uint8_t*>(v), len, e.data() + a);
      else
        std::copy(v, v + len, e.data() + a);
    }
    if (stream) kernels::stream_fence();  // before the pool hands the task back
  };
  if (n < kParallelMinElems)
    for (int64_t t = 0; t < tasks; ++t) task(t);
  else
    parallel_for(tasks, task);
  for (const int64_t b : bad)
    if (b >= 0) GCOMP_FAIL(gcompErrorNonFinite, "non-finite gradient in block " + std::to_string(b));
  uint8_t* out = payload.data();
  for (int64_t b = 0; b < m; ++b) store_f32(out + 4 * b, scales[b]);
  if (words_ > 0) std::memcpy(out + 4 * m, words.data(), sizeof(uint32_t) * words.size());
}

// ------------------------------------------------------------------------------------ natural

NaturalCodec::NaturalCodec(CodecSpec spec, Layout layout) : Codec(std::move(spec), std::move(layout)) {
  words_ = ceil_div(num_elems(), kGroupElems);
}

size_t NaturalCodec::encoded_bytes() const { return static_cast<size_t>(4 * words_ + 4 * ceil_div(num_elems(), 4)); }
double NaturalCodec::encoded_bits() const { return 9.0 * static_cast<double>(num_elems()); }
Guarantee NaturalCodec::guarantee() const { return Guarantee{Guarantee::Kind::kUnbiased, 0.125, 0.0}; }

void NaturalCodec::encode_to(const float* x, const RngKey& key, uint8_t* base, std::vector<uint8_t>* bad) const {
  const int64_t n = num_elems();
  uint8_t* signs = base;
  uint8_t* codes = base + 4 * words_;
  for (int64_t i = n; i < 4 * ceil_div(n, 4); ++i) codes[i] = 0;  // padding bytes
  for_each_piece(n, [&](int64_t begin, int64_t end) {
    uint32_t rnd[kSubElems];
    uint32_t local[kSubElems / kGroupElems];
    for_each_sub(begin, end, [&](int64_t a, int64_t e) {
      // One Philox block per four elements (natural_codes4's words).
      kernels::philox_words(key, kStreamElement, static_cast<uint64_t>(a) / 4, ceil_div(e - a, 4), rnd);
      kernels::natural_encode(x + a, e - a, rnd, codes + a, local);
      std::memcpy(signs + 4 * (a / kGroupElems), local,
                  sizeof(uint32_t) * static_cast<size_t>(ceil_div(e - a, kGroupElems)));
      if (bad != nullptr && kernels::find_nonfinite(x + a, e - a) >= 0)
        (*bad)[static_cast<size_t>(begin / kPieceElems)] = 1;
    });
  });
}

void NaturalCodec::encode(std::span<const float> x, const RngKey& key, std::span<uint8_t> payload) const {
  check_encode_args(x, payload);
  const int64_t n = num_elems();
  if (n < kParallelMinElems || static_cast<int64_t>(encoded_bytes()) > kMaxStagingBytes) {
    require_finite(x.data(), n);
    encode_to(x.data(), key, payload.data(), nullptr);
    return;
  }
  // One read of x: each sub-range is encoded and then checked for NaN and Inf while in cache, into
  // staging; the payload is written only when x is finite (else require_finite names the first).
  const std::unique_ptr<uint8_t[]> staged(new uint8_t[encoded_bytes()]);
  std::vector<uint8_t> bad(static_cast<size_t>(num_pieces(n)), 0);
  encode_to(x.data(), key, staged.get(), &bad);
  if (std::find(bad.begin(), bad.end(), 1) != bad.end()) {
    require_finite(x.data(), n);
    GCOMP_FAIL(gcompErrorInternal, "natural: a NaN or Inf was seen and then not found");
  }
  const int64_t code_bytes = 4 * ceil_div(n, 4);
  uint8_t* out = payload.data();
  for_each_piece(n, [&](int64_t begin, int64_t end) {
    const int64_t w0 = begin / kGroupElems, w1 = ceil_div(end, kGroupElems);
    std::memcpy(out + 4 * w0, staged.get() + 4 * w0, static_cast<size_t>(4 * (w1 - w0)));
    const int64_t c1 = end == n ? code_bytes : end;  // the last piece takes the padding bytes
    std::memcpy(out + 4 * words_ + begin, staged.get() + 4 * words_ + begin, static_cast<size_t>(c1 - begin));
  });
}

void NaturalCodec::validate(std::span<const uint8_t> payload) const {
  if (payload.size() != encoded_bytes()) corrupt(spec(), "wrong size");
  const uint8_t* codes = payload.data() + 4 * words_;
  const int64_t n = num_elems();
  const auto explain = [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      const bool neg = (load_u32(payload.data() + 4 * (i / 32)) >> (i % 32)) & 1u;
      if (natural_code_ok(codes[i], neg)) continue;
      corrupt(spec(), codes[i] == 255 ? "exponent code 255 at element " + std::to_string(i)
                                      : "sign bit set on a zero at element " + std::to_string(i));
    }
  };
  std::vector<uint8_t> bad(static_cast<size_t>(num_pieces(n)), 0);
  for_each_piece(n, [&](int64_t begin, int64_t end) {
    // per group: a code 255, or a sign bit on a zero code (sign words copied: 4-byte aligned)
    uint32_t signs[kPieceElems / kGroupElems];
    const int64_t g0 = begin / kGroupElems, full = (end - begin) / kGroupElems;
    std::memcpy(signs, payload.data() + 4 * g0,
                sizeof(uint32_t) * static_cast<size_t>(ceil_div(end - begin, kGroupElems)));
    bool any = kernels::natural_invalid(codes + begin, signs, full);
    for (int64_t i = begin + full * kGroupElems; i < end; ++i)  // the last, partial group
      any |= !natural_code_ok(codes[i], ((signs[full] >> (i % kGroupElems)) & 1u) != 0u);
    bad[static_cast<size_t>(begin / kPieceElems)] = any;
  });
  for (size_t p = 0; p < bad.size(); ++p)
    if (bad[p]) explain(static_cast<int64_t>(p) * kPieceElems, std::min(n, static_cast<int64_t>(p + 1) * kPieceElems));
  for (int64_t i = n; i < 4 * ceil_div(n, 4); ++i)
    if (codes[i] != 0) corrupt(spec(), "padding bytes are not zero");
  if (words_ > 0 && !padding_clear(load_u32(payload.data() + 4 * (words_ - 1)), n))
    corrupt(spec(), "padding bits set in the last sign word");
}

void NaturalCodec::decode_range(std::span<const uint8_t> payload, int64_t begin, int64_t end, float weight,
                                bool accumulate, float* out) const {
  const uint8_t* codes = payload.data() + 4 * words_;
  uint32_t local[kSubElems / kGroupElems];
  for_each_sub(begin, end, [&](int64_t a, int64_t e) {
    const int64_t g0 = a / kGroupElems;
    std::memcpy(local, payload.data() + 4 * g0, sizeof(uint32_t) * static_cast<size_t>(ceil_div(e, kGroupElems) - g0));
    kernels::natural_decode(codes + g0 * kGroupElems, local, a - g0 * kGroupElems, e - a, weight, accumulate,
                            out + (a - begin));
  });
}

void NaturalCodec::decode_impl(std::span<const uint8_t> payload, float weight, bool overwrite,
                               std::span<float> out) const {
  check_decode_args(payload, out);
  if (overwrite) {
    overwrite_pieces(num_elems(), out.data(),
                     [&](int64_t a, int64_t e, float* dst) { decode_range(payload, a, e, 1.0f, false, dst); });
    return;
  }
  for_each_piece(num_elems(), [&](int64_t b, int64_t e) { decode_range(payload, b, e, weight, true, out.data() + b); });
}

void NaturalCodec::decode_accumulate(std::span<const uint8_t> payload, const RngKey&, float weight,
                                     std::span<float> out) const {
  decode_impl(payload, weight, false, out);
}

void NaturalCodec::decode(std::span<const uint8_t> payload, const RngKey&, std::span<float> out) const {
  decode_impl(payload, 1.0f, true, out);
}

}  // namespace gcomp::detail
