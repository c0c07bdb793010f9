// SPDX-License-Identifier: Apache-2.0
// Dense bit-plane codecs: dither (QSGD / random dithering, §2), terngrad (§3.1) and natdither
// (natural dithering, §5.3). Payload: m fp32 block scales, then ceil(n/32) groups of
// (1 + nbits) uint32 words (sign plane, level planes). See docs/wire-format.md.
#include "host/codecs/dense_planes.hpp"

#include <gcomp/detail/codec_math.hpp>
#include <gcomp/detail/norms.hpp>

#include <algorithm>
#include <cmath>

namespace gcomp::detail {

namespace {

int64_t max_block_len(const std::vector<int64_t>& blocks) {
  int64_t b = 0;
  for (size_t i = 0; i + 1 < blocks.size(); ++i) b = std::max(b, blocks[i + 1] - blocks[i]);
  return b;
}

double dither_omega(uint32_t norm, double p, uint32_t s, double b) {
  if (b <= 1.0) return 0.0;
  const double sb = std::sqrt(b);
  // Effective norm for the bound: l_p with 1 < p < 2 is bounded by the l1 case, p > 2 by l2 (§2.2:
  // alpha_p is nondecreasing in p).
  const bool like_l1 = norm == kNormL1 || (norm == kNormLp && p < 2.0);
  const bool like_l2 = norm == kNormL2 || (norm == kNormLp && p >= 2.0);
  if (s == 1) {
    if (like_l1) return b - 1.0;
    if (like_l2) return sb - 1.0;
    return (sb - 1.0) / 2.0;
  }
  const double sd = static_cast<double>(s);
  const double var_term = b / (4.0 * sd * sd);
  if (like_l1) return std::min(b * b / (4.0 * sd * sd), b / sd);
  if (like_l2) return std::min(var_term, sb / sd);
  return std::min(var_term, (1.0 + sb) / (2.0 * sd));
}

}  // namespace

DensePlaneCodec::DensePlaneCodec(CodecSpec spec, Layout layout) : Codec(std::move(spec), std::move(layout)) {
  const CodecSpec& sp = this->spec();
  levels_ = sp.levels;
  norm_ = static_cast<uint32_t>(sp.norm);
  nbits_ = static_cast<int>(ceil_log2_u64(uint64_t{levels_} + 1));
  blocks_ = block_offsets(this->layout(), sp.id == CodecId::kTernGrad ? 0 : sp.block);
  num_blocks_ = static_cast<int64_t>(blocks_.size()) - 1;
  groups_ = ceil_div(num_elems(), kGroupElems);
}

size_t DensePlaneCodec::encoded_bytes() const {
  return static_cast<size_t>(4 * num_blocks_ + 4 * groups_ * group_words(nbits_));
}

double DensePlaneCodec::encoded_bits() const {
  return 32.0 * static_cast<double>(num_blocks_) +
         static_cast<double>(num_elems()) * static_cast<double>(1 + nbits_);
}

Guarantee DensePlaneCodec::guarantee() const {
  const double b = static_cast<double>(max_block_len(blocks_));
  Guarantee g;
  g.kind = Guarantee::Kind::kUnbiased;
  switch (spec().id) {
    case CodecId::kTernGrad:
      if (spec().clip > 0.0) return Guarantee{};
      g.omega = b > 1.0 ? (std::sqrt(b) - 1.0) / 2.0 : 0.0;
      break;
    case CodecId::kNatDither: {
      const double r = (norm_ == kNormL1) ? 1.0 : (norm_ == kNormLp ? std::min(spec().p, 2.0) : 2.0);
      const double t = std::pow(b, 1.0 / r) / std::ldexp(1.0, static_cast<int>(levels_) - 1);
      g.omega = 0.125 + t * std::min(1.0, t);
      break;
    }
    default:
      g.omega = dither_omega(norm_, spec().p, levels_, b);
  }
  return g;
}

float DensePlaneCodec::block_scale(const float* x, int64_t len) const {
  if (spec().id == CodecId::kTernGrad) {
    const float mx = static_cast<float>(block_reduce(AbsMaxOp{}, x, len));
    if (spec().clip <= 0.0 || !is_finite_f(mx)) return mx;
    const double mean = block_reduce(SumOp{}, x, len) / static_cast<double>(len);
    const double css = block_reduce(CenteredSquareSumOp{mean}, x, len);
    return terngrad_scale(mx, css, len, spec().clip);
  }
  switch (norm_) {
    case kNormL1: return finish_norm(norm_, block_reduce(AbsSumOp{}, x, len), 1.0);
    case kNormL2: return finish_norm(norm_, block_reduce(SquareSumOp{}, x, len), 2.0);
    case kNormLinf: return finish_norm(norm_, block_reduce(AbsMaxOp{}, x, len), 0.0);
    default: return finish_norm(norm_, block_reduce(PowSumOp{spec().p}, x, len), spec().p);
  }
}

void DensePlaneCodec::compute_scales(std::span<const float> x, std::span<float> scales) const {
  GCOMP_EXPECTS(static_cast<int64_t>(x.size()) == num_elems(), gcompErrorInvalidArgument,
                "compute_scales: input size differs from the layout");
  GCOMP_EXPECTS(static_cast<int64_t>(scales.size()) == num_blocks_, gcompErrorInvalidArgument,
                "compute_scales: needs " + std::to_string(num_blocks_) + " scales");
  for (int64_t b = 0; b < num_blocks_; ++b) {
    const float s = block_scale(x.data() + blocks_[b], blocks_[b + 1] - blocks_[b]);
    if (!is_finite_f(s))
      GCOMP_FAIL(gcompErrorNonFinite, "non-finite gradient in block " + std::to_string(b) + " (elements " +
                                          std::to_string(blocks_[b]) + ".." + std::to_string(blocks_[b + 1] - 1) + ")");
    scales[b] = s;
  }
}

void DensePlaneCodec::encode(std::span<const float> x, const RngKey& key, std::span<uint8_t> payload) const {
  check_encode_args(x, payload);
  std::vector<float> scales(static_cast<size_t>(num_blocks_));
  compute_scales(x, scales);
  write(x, scales, key, payload);
}

void DensePlaneCodec::encode_with_scales(std::span<const float> x, std::span<const float> scales,
                                         const RngKey& key, std::span<uint8_t> payload) const {
  check_encode_args(x, payload);
  GCOMP_EXPECTS(static_cast<int64_t>(scales.size()) == num_blocks_, gcompErrorInvalidArgument,
                "encode_with_scales: needs " + std::to_string(num_blocks_) + " scales");
  require_finite(x.data(), num_elems());
  for (size_t b = 0; b < scales.size(); ++b)
    GCOMP_EXPECTS(is_finite_f(scales[b]) && scales[b] >= 0.0f, gcompErrorInvalidArgument,
                  "encode_with_scales: scale " + std::to_string(b) + " is negative or not finite");
  write(x, scales, key, payload);
}

float DensePlaneCodec::value(uint32_t level, bool negative, float scale) const {
  return spec().id == CodecId::kNatDither ? natdither_value(level, negative, scale, levels_)
                                          : dither_value(level, negative, scale, levels_);
}

void DensePlaneCodec::write(std::span<const float> x, std::span<const float> scales, const RngKey& key,
                            std::span<uint8_t> payload) const {
  uint8_t* out = payload.data();
  for (int64_t b = 0; b < num_blocks_; ++b) store_f32(out + 4 * b, scales[b]);
  uint8_t* groups = out + 4 * num_blocks_;
  const int64_t n = num_elems();
  const int words = group_words(nbits_);
  const bool natural = spec().id == CodecId::kNatDither;
  int64_t block = 0;
  uint32_t w[1 + 32];
  for (int64_t g = 0; g < groups_; ++g) {
    std::fill(w, w + words, 0u);
    // One Philox block per four elements (the group form of the element math).
    for (int lane0 = 0; lane0 < kGroupElems && g * kGroupElems + lane0 < n; lane0 += kPhiloxGroupElems) {
      const int64_t i0 = g * kGroupElems + lane0;
      float y[4] = {0.0f, 0.0f, 0.0f, 0.0f};
      float nu[4] = {0.0f, 0.0f, 0.0f, 0.0f};
      for (int j = 0; j < 4 && i0 + j < n; ++j) {
        while (i0 + j >= blocks_[block + 1]) ++block;
        y[j] = x[i0 + j];
        nu[j] = scales[block];
      }
      const Philox4x32 rnd = philox_block(key, kStreamElement, static_cast<uint64_t>(i0) >> 2);
      Quantized q[4];
      if (natural)
        natdither_quantize4(y, nu, levels_, rnd, q);
      else
        dither_quantize4(y, nu, levels_, rnd, q);
      for (int j = 0; j < 4; ++j) {
        const int lane = lane0 + j;
        w[0] |= static_cast<uint32_t>(q[j].negative) << lane;
        for (int k = 0; k < nbits_; ++k) w[1 + k] |= ((q[j].level >> k) & 1u) << lane;
      }
    }
    for (int k = 0; k < words; ++k) store_u32(groups + 4 * (g * words + k), w[k]);
  }
}

void DensePlaneCodec::validate(std::span<const uint8_t> payload) const {
  if (payload.size() != encoded_bytes())
    corrupt(spec(), "size is " + std::to_string(payload.size()) + " bytes, expected " +
                        std::to_string(encoded_bytes()));
  const uint8_t* in = payload.data();
  for (int64_t b = 0; b < num_blocks_; ++b) {
    const float s = load_f32(in + 4 * b);
    if (!is_finite_f(s) || s < 0.0f || float_bits(s) == 0x80000000u)
      corrupt(spec(), "scale of block " + std::to_string(b) + " is negative or not finite");
  }
  const uint8_t* groups = in + 4 * num_blocks_;
  const int words = group_words(nbits_);
  const int64_t n = num_elems();
  const bool level_check = (uint64_t{1} << nbits_) != uint64_t{levels_} + 1;
  uint32_t w[1 + 32];
  for (int64_t g = 0; g < groups_; ++g) {
    for (int k = 0; k < words; ++k) w[k] = load_u32(groups + 4 * (g * words + k));
    const int64_t live = std::min<int64_t>(kGroupElems, n - g * kGroupElems);
    const uint32_t live_mask = live == 32 ? 0xffffffffu : ((1u << live) - 1u);
    uint32_t nonzero = 0;
    for (int k = 0; k < nbits_; ++k) nonzero |= w[1 + k];
    for (int k = 0; k < words; ++k)
      if (w[k] & ~live_mask) corrupt(spec(), "padding bits set in the last group");
    if (w[0] & ~nonzero) corrupt(spec(), "sign bit set on a zero level in group " + std::to_string(g));
    if (level_check)
      for (int lane = 0; lane < live; ++lane)
        if (plane_level(w + 1, nbits_, lane) > levels_)
          corrupt(spec(), "level above " + std::to_string(levels_) + " at element " +
                              std::to_string(g * kGroupElems + lane));
  }
}

void DensePlaneCodec::decode_impl(std::span<const uint8_t> payload, float weight, bool overwrite,
                                  std::span<float> out) const {
  check_decode_args(payload, out);
  const uint8_t* in = payload.data();
  const uint8_t* groups = in + 4 * num_blocks_;
  const int words = group_words(nbits_);
  const int64_t n = num_elems();
  int64_t block = 0;
  float scale = num_blocks_ > 0 ? load_f32(in) : 0.0f;
  uint32_t w[1 + 32];
  for (int64_t g = 0; g < groups_; ++g) {
    for (int k = 0; k < words; ++k) w[k] = load_u32(groups + 4 * (g * words + k));
    for (int lane = 0; lane < kGroupElems; ++lane) {
      const int64_t i = g * kGroupElems + lane;
      if (i >= n) break;
      while (i >= blocks_[block + 1]) {
        ++block;
        scale = load_f32(in + 4 * block);
      }
      const float v = value(plane_level(w + 1, nbits_, lane), (w[0] >> lane) & 1u, scale);
      out[i] = overwrite ? v : accumulate(out[i], weight, v);
    }
  }
}

void DensePlaneCodec::decode_accumulate(std::span<const uint8_t> payload, const RngKey&, float weight,
                                        std::span<float> out) const {
  decode_impl(payload, weight, false, out);
}

void DensePlaneCodec::decode(std::span<const uint8_t> payload, const RngKey&, std::span<float> out) const {
  decode_impl(payload, 1.0f, true, out);
}

}  // namespace gcomp::detail
