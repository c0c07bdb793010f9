// SPDX-License-Identifier: Apache-2.0
// identity, sign (scaled sign and plain sign, §3.2-3.3) and natural compression (§5.3).
#include "host/codecs/simple_codecs.hpp"

#include <gcomp/detail/codec_math.hpp>
#include <gcomp/detail/norms.hpp>

#include <algorithm>

namespace gcomp::detail {

// ----------------------------------------------------------------------------------- identity

size_t IdentityCodec::encoded_bytes() const { return static_cast<size_t>(4 * num_elems()); }
double IdentityCodec::encoded_bits() const { return 32.0 * static_cast<double>(num_elems()); }
Guarantee IdentityCodec::guarantee() const { return Guarantee{Guarantee::Kind::kUnbiased, 0.0, 0.0}; }

void IdentityCodec::encode(std::span<const float> x, const RngKey&, std::span<uint8_t> payload) const {
  check_encode_args(x, payload);
  require_finite(x.data(), num_elems());
  if (num_elems() > 0) std::memcpy(payload.data(), x.data(), encoded_bytes());
}

void IdentityCodec::validate(std::span<const uint8_t> payload) const {
  if (payload.size() != encoded_bytes()) corrupt(spec(), "wrong size");
  for (int64_t i = 0; i < num_elems(); ++i)
    if (!is_finite_f(load_f32(payload.data() + 4 * i)))
      corrupt(spec(), "element " + std::to_string(i) + " is not finite");
}

void IdentityCodec::decode_accumulate(std::span<const uint8_t> payload, const RngKey&, float weight,
                                      std::span<float> out) const {
  check_decode_args(payload, out);
  for (int64_t i = 0; i < num_elems(); ++i) out[i] = accumulate(out[i], weight, load_f32(payload.data() + 4 * i));
}

void IdentityCodec::decode(std::span<const uint8_t> payload, const RngKey&, std::span<float> out) const {
  check_decode_args(payload, out);
  if (num_elems() > 0) std::memcpy(out.data(), payload.data(), encoded_bytes());
}

// --------------------------------------------------------------------------------------- sign

SignCodec::SignCodec(CodecSpec spec, Layout layout) : Codec(std::move(spec), std::move(layout)) {
  blocks_ = block_offsets(this->layout(), this->spec().block);
  num_blocks_ = static_cast<int64_t>(blocks_.size()) - 1;
  words_ = ceil_div(num_elems(), kGroupElems);
}

int64_t SignCodec::num_scales() const { return spec().scaled ? num_blocks_ : 0; }

size_t SignCodec::encoded_bytes() const { return static_cast<size_t>(4 * num_scales() + 4 * words_); }

double SignCodec::encoded_bits() const {
  return static_cast<double>(num_elems()) + 32.0 * static_cast<double>(num_scales());
}

Guarantee SignCodec::guarantee() const {
  if (!spec().scaled) return Guarantee{};
  int64_t b = 0;
  for (int64_t i = 0; i < num_blocks_; ++i) b = std::max(b, blocks_[i + 1] - blocks_[i]);
  return Guarantee{Guarantee::Kind::kContractive, 0.0, b > 0 ? 1.0 / static_cast<double>(b) : 1.0};
}

void SignCodec::encode(std::span<const float> x, const RngKey&, std::span<uint8_t> payload) const {
  check_encode_args(x, payload);
  const int64_t m = num_scales();
  std::vector<float> scales(static_cast<size_t>(m));
  if (spec().scaled) {
    for (int64_t b = 0; b < m; ++b) {
      const int64_t len = blocks_[b + 1] - blocks_[b];
      scales[b] = finish_mean_abs(block_reduce(AbsSumOp{}, x.data() + blocks_[b], len), len);
      if (!is_finite_f(scales[b]))
        GCOMP_FAIL(gcompErrorNonFinite, "non-finite gradient in block " + std::to_string(b));
    }
  } else {
    require_finite(x.data(), num_elems());
  }
  uint8_t* out = payload.data();
  for (int64_t b = 0; b < m; ++b) store_f32(out + 4 * b, scales[b]);
  uint8_t* words = out + 4 * m;
  const int64_t n = num_elems();
  for (int64_t g = 0; g < words_; ++g) {
    uint32_t w = 0;
    for (int lane = 0; lane < kGroupElems && g * kGroupElems + lane < n; ++lane)
      w |= static_cast<uint32_t>(is_negative_f(x[g * kGroupElems + lane])) << lane;
    store_u32(words + 4 * g, w);
  }
}

void SignCodec::validate(std::span<const uint8_t> payload) const {
  if (payload.size() != encoded_bytes()) corrupt(spec(), "wrong size");
  for (int64_t b = 0; b < num_scales(); ++b) {
    const float s = load_f32(payload.data() + 4 * b);
    if (!is_finite_f(s) || !(s >= 0.0f) || float_bits(s) == 0x80000000u)
      corrupt(spec(), "scale of block " + std::to_string(b) + " is negative or not finite");
  }
  const int64_t rem = num_elems() % kGroupElems;
  if (rem != 0) {
    const uint32_t last = load_u32(payload.data() + 4 * num_scales() + 4 * (words_ - 1));
    if (last >> rem) corrupt(spec(), "padding bits set in the last word");
  }
}

void SignCodec::decode_impl(std::span<const uint8_t> payload, float weight, bool overwrite,
                            std::span<float> out) const {
  check_decode_args(payload, out);
  const uint8_t* words = payload.data() + 4 * num_scales();
  int64_t block = 0;
  float scale = spec().scaled ? (num_blocks_ > 0 ? load_f32(payload.data()) : 0.0f) : 1.0f;
  for (int64_t i = 0; i < num_elems(); ++i) {
    if (spec().scaled)
      while (i >= blocks_[block + 1]) {
        ++block;
        scale = load_f32(payload.data() + 4 * block);
      }
    const bool neg = (load_u32(words + 4 * (i / kGroupElems)) >> (i % kGroupElems)) & 1u;
    const float v = sign_value(neg, scale);
    out[i] = overwrite ? v : accumulate(out[i], weight, v);
  }
}

void SignCodec::decode_accumulate(std::span<const uint8_t> payload, const RngKey&, float weight,
                                  std::span<float> out) const {
  decode_impl(payload, weight, false, out);
}

void SignCodec::decode(std::span<const uint8_t> payload, const RngKey&, std::span<float> out) const {
  decode_impl(payload, 1.0f, true, out);
}

// ------------------------------------------------------------------------------------ natural

NaturalCodec::NaturalCodec(CodecSpec spec, Layout layout) : Codec(std::move(spec), std::move(layout)) {
  words_ = ceil_div(num_elems(), kGroupElems);
}

size_t NaturalCodec::encoded_bytes() const {
  return static_cast<size_t>(4 * words_ + 4 * ceil_div(num_elems(), 4));
}
double NaturalCodec::encoded_bits() const { return 9.0 * static_cast<double>(num_elems()); }
Guarantee NaturalCodec::guarantee() const { return Guarantee{Guarantee::Kind::kUnbiased, 0.125, 0.0}; }

void NaturalCodec::encode(std::span<const float> x, const RngKey& key, std::span<uint8_t> payload) const {
  check_encode_args(x, payload);
  require_finite(x.data(), num_elems());
  const int64_t n = num_elems();
  uint8_t* signs = payload.data();
  uint8_t* codes = payload.data() + 4 * words_;
  std::fill(payload.begin(), payload.begin() + static_cast<std::ptrdiff_t>(encoded_bytes()), uint8_t{0});
  for (int64_t i0 = 0; i0 < n; i0 += kPhiloxGroupElems) {
    float t[4] = {0.0f, 0.0f, 0.0f, 0.0f};
    for (int j = 0; j < 4 && i0 + j < n; ++j) t[j] = x[i0 + j];
    uint32_t code[4];
    natural_codes4(t, philox_block(key, kStreamElement, static_cast<uint64_t>(i0) >> 2), code);
    for (int j = 0; j < 4 && i0 + j < n; ++j) {
      const int64_t i = i0 + j;
      codes[i] = static_cast<uint8_t>(code[j]);
      if (code[j] != 0 && x[i] < 0.0f) signs[4 * (i / 32) + (i % 32) / 8] |= static_cast<uint8_t>(1u << (i % 8));
    }
  }
}

void NaturalCodec::validate(std::span<const uint8_t> payload) const {
  if (payload.size() != encoded_bytes()) corrupt(spec(), "wrong size");
  const uint8_t* codes = payload.data() + 4 * words_;
  const int64_t n = num_elems();
  for (int64_t i = 0; i < n; ++i) {
    if (codes[i] == 255) corrupt(spec(), "exponent code 255 at element " + std::to_string(i));
    const bool neg = (load_u32(payload.data() + 4 * (i / 32)) >> (i % 32)) & 1u;
    if (neg && codes[i] == 0) corrupt(spec(), "sign bit set on a zero at element " + std::to_string(i));
  }
  for (int64_t i = n; i < 4 * ceil_div(n, 4); ++i)
    if (codes[i] != 0) corrupt(spec(), "padding bytes are not zero");
  if (n % 32 != 0 && (load_u32(payload.data() + 4 * (words_ - 1)) >> (n % 32)))
    corrupt(spec(), "padding bits set in the last sign word");
}

void NaturalCodec::decode_impl(std::span<const uint8_t> payload, float weight, bool overwrite,
                               std::span<float> out) const {
  check_decode_args(payload, out);
  const uint8_t* codes = payload.data() + 4 * words_;
  for (int64_t i = 0; i < num_elems(); ++i) {
    const bool neg = (load_u32(payload.data() + 4 * (i / 32)) >> (i % 32)) & 1u;
    const float v = natural_value(codes[i], neg);
    out[i] = overwrite ? v : accumulate(out[i], weight, v);
  }
}

void NaturalCodec::decode_accumulate(std::span<const uint8_t> payload, const RngKey&, float weight,
                                     std::span<float> out) const {
  decode_impl(payload, weight, false, out);
}

void NaturalCodec::decode(std::span<const uint8_t> payload, const RngKey&, std::span<float> out) const {
  decode_impl(payload, 1.0f, true, out);
}

}  // namespace gcomp::detail
