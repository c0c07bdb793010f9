// SPDX-License-Identifier: Apache-2.0
// Dense bit-plane codecs: dither (QSGD / random dithering, §2), terngrad (§3.1) and natdither
// (natural dithering, §5.3). Payload: m fp32 block scales, then ceil(n/32) groups of
// (1 + nbits) uint32 words (sign plane, level planes). See docs/wire-format.md.
#include "host/codecs/dense_planes.hpp"

#include "host/codecs/pieces.hpp"
#include "host/codecs/registry.hpp"

#include <gcomp/detail/codec_math.hpp>
#include <gcomp/detail/norms.hpp>
#include <gcomp/detail/payload_rules.hpp>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <memory>
#include <string>

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

template <int kBits>
int64_t dense_first_bad_t(const uint8_t* groups, uint32_t s, bool level_check, int64_t g0, int64_t g1) {
  constexpr int kWords = 1 + kBits;
  constexpr int64_t kStride = 16;
  for (int64_t c = g0; c < g1; c += kStride) {
    const int64_t ce = std::min(g1, c + kStride);
    uint32_t bad = 0;
    for (int64_t g = c; g < ce; ++g) {
      uint32_t w[kWords];
      std::memcpy(w, groups + 4 * g * kWords, sizeof w);
      bad |= plane_group_bad_lanes(w[0], w + 1, kBits, s, level_check);
    }
    if (bad == 0u) continue;
    for (int64_t g = c; g < ce; ++g) {  // which group
      uint32_t w[kWords];
      std::memcpy(w, groups + 4 * g * kWords, sizeof w);
      if (plane_group_bad_lanes(w[0], w + 1, kBits, s, level_check) != 0u) return g;
    }
  }
  return -1;
}

/// The first group of g0 .. g1 - 1 (whole groups: no padding lanes) with a sign bit on a zero
/// level or (level_check) a level above s, or -1.
int64_t dense_first_bad(const uint8_t* groups, int nbits, uint32_t s, bool level_check, int64_t g0, int64_t g1) {
  // 1-3 planes (terngrad, dither s <= 7, natdither s <= 3): SIMD over groups
  if (nbits <= 3) return kernels::plane_groups_first_bad(groups, nbits, s, level_check, g0, g1);
  switch (nbits) {
    case 1: return dense_first_bad_t<1>(groups, s, level_check, g0, g1);
    case 2: return dense_first_bad_t<2>(groups, s, level_check, g0, g1);
    case 3: return dense_first_bad_t<3>(groups, s, level_check, g0, g1);
    case 4: return dense_first_bad_t<4>(groups, s, level_check, g0, g1);
    case 5: return dense_first_bad_t<5>(groups, s, level_check, g0, g1);
    case 6: return dense_first_bad_t<6>(groups, s, level_check, g0, g1);
    case 7: return dense_first_bad_t<7>(groups, s, level_check, g0, g1);
    case 8: return dense_first_bad_t<8>(groups, s, level_check, g0, g1);
    default: break;
  }
  const int words = 1 + nbits;
  uint32_t w[1 + 32];
  for (int64_t g = g0; g < g1; ++g) {
    std::memcpy(w, groups + 4 * g * words, sizeof(uint32_t) * static_cast<size_t>(words));
    if (plane_group_bad_lanes(w[0], w + 1, nbits, s, level_check) != 0u) return g;
  }
  return -1;
}

}  // namespace

DensePlaneCodec::DensePlaneCodec(CodecSpec spec, Layout layout) : Codec(std::move(spec), std::move(layout)) {
  const DitherOptions q = dither_quantizer(this->spec());  // terngrad: one level, l_inf, one block per segment
  levels_ = q.levels;
  norm_ = static_cast<uint32_t>(q.norm);
  p_ = q.p;
  nbits_ = static_cast<int>(ceil_log2_u64(uint64_t{levels_} + 1));
  blocks_ = block_offsets(this->layout(), q.block);
  num_blocks_ = static_cast<int64_t>(blocks_.size()) - 1;
  groups_ = ceil_div(num_elems(), kGroupElems);
  const auto* const terngrad = this->spec().options_if<TernGradOptions>();
  one_pass_ = num_elems() >= kParallelMinElems && 4 * groups_ * group_words(nbits_) <= kMaxStagingBytes &&
              norm_ != kNormLp && !(terngrad != nullptr && terngrad->clip > 0.0);
  for (int64_t b = 0; b < num_blocks_ && one_pass_; ++b)
    one_pass_ = blocks_[b] / kPieceElems == (blocks_[b + 1] - 1) / kPieceElems;
  // value(level, scale) for 1 <= level <= s is RN_f(RN_d(nu level) / s) (dither, terngrad) or
  // RN_f(nu 2^(level - s)) (natdither, the product exact in double). With s a power of two the
  // double operations are exact (nu level has at most 32 significant bits, dividing by s scales
  // by a power of two), so both are RN_f(nu u) with u = level / s, resp. 2^(level - s), an exact
  // float when s <= 2^8 (u >= 2^-8), resp. s <= 127 (u >= 2^-126): the float product nu * u
  // rounds that exact value once, the same bits for every nu (subnormal results included).
  const bool natural = this->spec().id() == CodecId::kNatDither;
  if (nbits_ <= 8 && (natural ? levels_ <= 127 : (levels_ & (levels_ - 1)) == 0)) {
    unit_.assign(size_t{1} << nbits_, 0.0f);
    for (uint32_t level = 1; level <= levels_; ++level)
      unit_[level] = natural ? bits_float((127u + level - levels_) << 23)
                             : static_cast<float>(level) / static_cast<float>(levels_);
  }
}

size_t DensePlaneCodec::encoded_bytes() const {
  return static_cast<size_t>(4 * num_blocks_ + 4 * groups_ * group_words(nbits_));
}

double DensePlaneCodec::encoded_bits() const {
  return 32.0 * static_cast<double>(num_blocks_) + static_cast<double>(num_elems()) * static_cast<double>(1 + nbits_);
}

Guarantee DensePlaneCodec::guarantee() const {
  const double b = static_cast<double>(max_block_len(blocks_));
  Guarantee g;
  g.kind = Guarantee::Kind::kUnbiased;
  switch (spec().id()) {
    case CodecId::kTernGrad:
      if (spec().options<TernGradOptions>().clip > 0.0) return Guarantee{};
      g.omega = b > 1.0 ? (std::sqrt(b) - 1.0) / 2.0 : 0.0;
      break;
    case CodecId::kNatDither: {
      const double r = (norm_ == kNormL1) ? 1.0 : (norm_ == kNormLp ? std::min(p_, 2.0) : 2.0);
      const double t = std::pow(b, 1.0 / r) / std::ldexp(1.0, static_cast<int>(levels_) - 1);
      g.omega = 0.125 + t * std::min(1.0, t);
      break;
    }
    default: g.omega = dither_omega(norm_, p_, levels_, b);
  }
  return g;
}

namespace {
std::string norm_label(uint32_t norm, double p) {
  switch (norm) {
    case kNormL1: return "l1 norm";
    case kNormL2: return "l2 norm";
    case kNormLp: {
      char buf[64];
      std::snprintf(buf, sizeof buf, "l_p norm (p = %g)", p);
      return buf;
    }
    default: return "largest magnitude";
  }
}
}  // namespace

std::vector<float> DensePlaneCodec::scales_of(const float* x) const {
  std::vector<float> scales(static_cast<size_t>(num_blocks_));
  scales_of_blocks(x, 0, num_blocks_, scales.data());
  return scales;
}

void DensePlaneCodec::scales_of_blocks(const float* x, int64_t b0, int64_t b1, float* scales) const {
  using kernels::ReduceOp;
  // The offsets of blocks b0 .. b1 - 1: each block's value depends on its own elements only.
  const std::vector<int64_t> blocks(blocks_.begin() + b0, blocks_.begin() + b1 + 1);
  const int64_t m = b1 - b0;
  const auto len = [&](int64_t b) { return blocks[b + 1] - blocks[b]; };
  if (spec().id() == CodecId::kTernGrad) {
    const std::vector<double> mx = reduce_blocks(blocks, x, ReduceOp::kAbsMax);
    for (int64_t b = 0; b < m; ++b) scales[b0 + b] = static_cast<float>(mx[b]);
    const double clip = spec().options<TernGradOptions>().clip;
    if (clip > 0.0) {
      const std::vector<double> sums = reduce_blocks(blocks, x, ReduceOp::kSum);
      std::vector<double> means(static_cast<size_t>(m));
      for (int64_t b = 0; b < m; ++b) means[b] = sums[b] / static_cast<double>(len(b));
      const std::vector<double> css = reduce_blocks(blocks, x, ReduceOp::kCenteredSquareSum, means);
      for (int64_t b = 0; b < m; ++b)
        if (is_finite_f(scales[b0 + b])) scales[b0 + b] = terngrad_scale(scales[b0 + b], css[b], len(b), clip);
    }
    return;
  }
  if (norm_ == kNormLp) {  // the portable power per element: no SIMD kernel
    for (int64_t b = 0; b < m; ++b)
      scales[b0 + b] = finish_norm(norm_, block_reduce(PowSumOp{p_}, x + blocks[b], len(b)), p_);
    return;
  }
  const ReduceOp op = norm_ == kNormL1   ? ReduceOp::kAbsSum
                      : norm_ == kNormL2 ? ReduceOp::kSquareSum
                                         : ReduceOp::kAbsMax;
  const double p = norm_ == kNormL1 ? 1.0 : norm_ == kNormL2 ? 2.0 : 0.0;
  const std::vector<double> reduced = reduce_blocks(blocks, x, op);
  for (int64_t b = 0; b < m; ++b) scales[b0 + b] = finish_norm(norm_, reduced[b], p);
}

void DensePlaneCodec::compute_scales(std::span<const float> x, std::span<float> scales) const {
  GCOMP_EXPECTS(static_cast<int64_t>(x.size()) == num_elems(), gcompErrorInvalidArgument,
                "compute_scales: input size differs from the layout");
  GCOMP_EXPECTS(static_cast<int64_t>(scales.size()) == num_blocks_, gcompErrorInvalidArgument,
                "compute_scales: needs " + std::to_string(num_blocks_) + " scales");
  const std::vector<float> s = scales_of(x.data());
  const auto elements = [&](int64_t b) {
    return " (elements " + std::to_string(blocks_[b]) + ".." + std::to_string(blocks_[b + 1] - 1) + ")";
  };
  // A NaN or Inf anywhere is NON_FINITE, whatever block comes first; then (issue 18 #11) finite
  // values whose norm is beyond the fp32 range of the payload's scale: not the same error.
  if (std::any_of(s.begin(), s.end(), [](float v) { return !is_finite_f(v); })) require_finite(x.data(), num_elems());
  for (int64_t b = 0; b < num_blocks_; ++b) {
    const int64_t len = blocks_[b + 1] - blocks_[b];
    if (!is_finite_f(s[b])) {
      GCOMP_FAIL(gcompErrorInvalidArgument,
                 std::string(spec().name()) + ": the " + norm_label(norm_, p_) + " of block " + std::to_string(b) +
                     elements(b) + " is beyond the float32 range of the payload's scale (the values are finite)");
    }
    if (s[b] == 0.0f && norm_ == kNormLp && block_reduce(AbsMaxOp{}, x.data() + blocks_[b], len) > 0.0)
      GCOMP_FAIL(gcompErrorInvalidArgument, std::string(spec().name()) + ": the " + norm_label(norm_, p_) +
                                                " of block " + std::to_string(b) + elements(b) +
                                                " underflows to 0 although the block is not zero (every value would "
                                                "decode to 0); use a smaller p or norm=linf");
  }
  std::copy(s.begin(), s.end(), scales.begin());
}

void DensePlaneCodec::encode(std::span<const float> x, const RngKey& key, std::span<uint8_t> payload) const {
  check_encode_args(x, payload);
  std::vector<float> scales(static_cast<size_t>(num_blocks_));
  if (!one_pass_) {
    compute_scales(x, scales);  // throws on a non-finite block before the payload changes
    write(x, scales, key, payload);
    return;
  }
  // One read of x: each piece reduces its blocks and quantizes them while they are in cache, into
  // scratch; the payload changes only once every scale is known to be finite (a block with a NaN
  // or Inf, or a norm beyond fp32, leaves its piece unwritten and compute_scales names the error).
  const int64_t n = num_elems();
  const int words = group_words(nbits_);
  const std::unique_ptr<uint32_t[]> scratch(new uint32_t[static_cast<size_t>(groups_ * words)]);
  uint8_t* staged = reinterpret_cast<uint8_t*>(scratch.get());
  std::vector<uint8_t> bad(static_cast<size_t>(num_pieces(n)), 0);
  for_each_piece(n, [&](int64_t begin, int64_t end) {
    const int64_t b0 = block_of(blocks_, begin), b1 = block_of(blocks_, end - 1) + 1;
    scales_of_blocks(x.data(), b0, b1, scales.data());
    for (int64_t b = b0; b < b1; ++b)
      if (!is_finite_f(scales[static_cast<size_t>(b)])) {
        bad[static_cast<size_t>(begin / kPieceElems)] = 1;
        return;
      }
    write_piece(x.data(), scales.data(), key, begin, end, staged);
  });
  if (std::find(bad.begin(), bad.end(), 1) != bad.end()) {
    compute_scales(x, scales);  // throws: the same scales, one of them not finite
    GCOMP_FAIL(gcompErrorInternal, std::string(spec().name()) + ": a block scale is not finite");
  }
  uint8_t* out = payload.data();
  for (int64_t b = 0; b < num_blocks_; ++b) store_f32(out + 4 * b, scales[static_cast<size_t>(b)]);
  uint8_t* groups = out + 4 * num_blocks_;
  for_each_piece(n, [&](int64_t begin, int64_t end) {
    const int64_t g0 = begin / kGroupElems, g1 = ceil_div(end, kGroupElems);
    std::memcpy(groups + 4 * g0 * words, staged + 4 * g0 * words,
                sizeof(uint32_t) * static_cast<size_t>((g1 - g0) * words));
  });
}

void DensePlaneCodec::encode_with_scales(std::span<const float> x, std::span<const float> scales, const RngKey& key,
                                         std::span<uint8_t> payload) const {
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
  return spec().id() == CodecId::kNatDither ? natdither_value(level, negative, scale, levels_)
                                            : dither_value(level, negative, scale, levels_);
}

void DensePlaneCodec::write(std::span<const float> x, std::span<const float> scales, const RngKey& key,
                            std::span<uint8_t> payload) const {
  uint8_t* out = payload.data();
  for (int64_t b = 0; b < num_blocks_; ++b) store_f32(out + 4 * b, scales[b]);
  uint8_t* groups = out + 4 * num_blocks_;
  for_each_piece(num_elems(),
                 [&](int64_t begin, int64_t end) { write_piece(x.data(), scales.data(), key, begin, end, groups); });
}

void DensePlaneCodec::write_piece(const float* x, const float* scales, const RngKey& key, int64_t begin, int64_t end,
                                  uint8_t* groups) const {
  const int words = group_words(nbits_);
  const bool natural = spec().id() == CodecId::kNatDither;
  const bool fused = levels_ <= kernels::kQuantizePlanesMaxLevels && (!natural || levels_ <= kNatDitherRcpMaxLevels);
  uint32_t rnd[kSubElems];
  uint32_t coded[kSubElems];
  float nu[kSubElems], recip[kSubElems], tail[kGroupElems];
  uint32_t packed[kSubElems / kGroupElems * (1 + 32)];
  for_each_sub(begin, end, [&](int64_t a, int64_t e) {
    // One Philox block per four elements, then each block run with its scale.
    kernels::philox_words(key, kStreamElement, static_cast<uint64_t>(a) / 4, ceil_div(e - a, 4), rnd);
    const int64_t g = ceil_div(e - a, kGroupElems);
    // The lanes of a last, partial group past n quantize y = 0 (level 0 for any word): their words
    // are set, not left as they were on the stack.
    std::fill(rnd + 4 * ceil_div(e - a, 4), rnd + g * kGroupElems, 0u);
    if (fused) {
      // Per-element scales of the elements [a + first, a + last) (scratch offsets from a).
      const auto fill_scales = [&](int64_t first, int64_t last) {
        for_each_run(blocks_, a + first, a + last, [&](int64_t r0, int64_t r1, int64_t b) {
          std::fill(nu + (r0 - a), nu + (r1 - a), scales[b]);
          std::fill(recip + (r0 - a), recip + (r1 - a), kernels::plane_reciprocal(natural, scales[b], levels_));
        });
      };
      // Runs of whole groups inside one block take that block's scale in registers; a group
      // across a block boundary takes per-element scales.
      const int64_t full = (e - a) / kGroupElems;
      for (int64_t g0 = 0; g0 < full;) {
        const int64_t i0 = a + g0 * kGroupElems;
        const int64_t b = block_of(blocks_, i0);
        const int64_t g1 = std::min(full, (blocks_[b + 1] - a) / kGroupElems);
        if (g1 > g0) {
          const float scale = scales[b];
          const float rc = kernels::plane_reciprocal(natural, scale, levels_);
          kernels::quantize_planes(natural, x + i0, &scale, &rc, rnd + g0 * kGroupElems, g1 - g0, levels_, nbits_,
                                   packed + g0 * words, true);
          g0 = g1;
        } else {
          fill_scales(g0 * kGroupElems, (g0 + 1) * kGroupElems);
          kernels::quantize_planes(natural, x + i0, nu + g0 * kGroupElems, recip + g0 * kGroupElems,
                                   rnd + g0 * kGroupElems, 1, levels_, nbits_, packed + g0 * words);
          ++g0;
        }
      }
      if (full < g) {  // the last, partial group: lanes past n quantize x = 0 (level 0, no sign)
        const int64_t t0 = full * kGroupElems;
        fill_scales(t0, e - a);
        std::fill(tail, tail + kGroupElems, 0.0f);
        std::copy(x + a + t0, x + e, tail);
        std::fill(nu + (e - a), nu + g * kGroupElems, 0.0f);
        std::fill(recip + (e - a), recip + g * kGroupElems, 0.0f);
        kernels::quantize_planes(natural, tail, nu + t0, recip + t0, rnd + t0, 1, levels_, nbits_,
                                 packed + full * words);
      }
    } else {
      for_each_run(blocks_, a, e, [&](int64_t r0, int64_t r1, int64_t b) {
        kernels::quantize(natural, x + r0, r1 - r0, scales[b], levels_, rnd + (r0 - a), coded + (r0 - a));
      });
      std::fill(coded + (e - a), coded + g * kGroupElems, 0u);  // lanes past n: level 0, no sign
      kernels::pack_planes(coded, g, nbits_, packed);
    }
    std::memcpy(groups + 4 * (a / kGroupElems) * words, packed, sizeof(uint32_t) * static_cast<size_t>(g * words));
  });
}

void DensePlaneCodec::validate(std::span<const uint8_t> payload) const {
  if (payload.size() != encoded_bytes())
    corrupt(spec(),
            "size is " + std::to_string(payload.size()) + " bytes, expected " + std::to_string(encoded_bytes()));
  const uint8_t* in = payload.data();
  for (int64_t b = 0; b < num_blocks_; ++b) {
    if (!scale_ok(load_f32(in + 4 * b)))
      corrupt(spec(), "scale of block " + std::to_string(b) + " is negative or not finite");
  }
  const uint8_t* groups = in + 4 * num_blocks_;
  const int words = group_words(nbits_);
  const int64_t n = num_elems();
  const bool level_check = (uint64_t{1} << nbits_) != uint64_t{levels_} + 1;
  // Groups g0 .. g1 - 1: the first bad group, or -1. Levels above s are found 32 lanes at a time
  // by a bit-sliced comparison of the planes with s, from the top bit down. Whole groups take the
  // loop of their plane count (bad bits OR-ed over 16 groups, one branch per 16); only the last
  // group of the payload can have padding lanes.
  const int64_t last = groups_ - 1;
  const auto first_bad = [&](int64_t g0, int64_t g1) -> int64_t {
    const int64_t whole_end = (n % kGroupElems != 0 && g1 > last) ? last : g1;
    const int64_t found = dense_first_bad(groups, nbits_, levels_, level_check, g0, whole_end);
    if (found >= 0 || whole_end == g1) return found;
    uint32_t w[1 + 32];
    for (int k = 0; k < words; ++k) w[k] = load_u32(groups + 4 * (last * words + k));
    const uint32_t live_mask = (1u << (n % kGroupElems)) - 1u;
    uint32_t padding = 0;
    for (int k = 0; k < words; ++k) padding |= w[k] & ~live_mask;
    if (padding != 0u || (plane_group_bad_lanes(w[0], w + 1, nbits_, levels_, level_check) & live_mask) != 0u)
      return last;
    return -1;
  };
  std::vector<int64_t> bad(static_cast<size_t>(num_pieces(n)), -1);
  for_each_piece(n, [&](int64_t begin, int64_t end) {
    bad[static_cast<size_t>(begin / kPieceElems)] = first_bad(begin / kGroupElems, ceil_div(end, kGroupElems));
  });
  for (int64_t g : bad) {
    if (g < 0) continue;
    // Name the problem of the first bad group.
    uint32_t w[1 + 32];
    for (int k = 0; k < words; ++k) w[k] = load_u32(groups + 4 * (g * words + k));
    const int64_t live = std::min<int64_t>(kGroupElems, n - g * kGroupElems);
    const uint32_t live_mask = live == 32 ? 0xffffffffu : ((1u << live) - 1u);
    for (int k = 0; k < words; ++k)
      if (w[k] & ~live_mask) corrupt(spec(), "padding bits set in the last group");
    if (plane_group_bad_lanes(w[0], w + 1, nbits_, levels_, /*level_check=*/false) != 0u)
      corrupt(spec(), "sign bit set on a zero level in group " + std::to_string(g));
    for (int lane = 0; lane < live; ++lane)
      if (!plane_element_ok(plane_level(w + 1, nbits_, lane), false, levels_))
        corrupt(spec(),
                "level above " + std::to_string(levels_) + " at element " + std::to_string(g * kGroupElems + lane));
  }
}

void DensePlaneCodec::decode_range(std::span<const uint8_t> payload_span, int64_t begin, int64_t end, float weight,
                                   bool accumulate, float* out) const {
  const uint8_t* payload = payload_span.data();
  const uint8_t* groups = payload + 4 * num_blocks_;
  const int words = group_words(nbits_);
  if (nbits_ > 8) {  // s >= 256: element by element (a table of 2^nbits values would not pay)
    uint32_t w[1 + 32];
    for_each_run(blocks_, begin, end, [&](int64_t r0, int64_t r1, int64_t b) {
      const float scale = load_f32(payload + 4 * b);
      for (int64_t i = r0; i < r1; ++i) {
        for (int k = 0; k < words; ++k) w[k] = load_u32(groups + 4 * ((i / kGroupElems) * words + k));
        const int lane = static_cast<int>(i % kGroupElems);
        const float v = value(plane_level(w + 1, nbits_, lane), (w[0] >> lane) & 1u, scale);
        out[i - begin] = accumulate ? gcomp::detail::accumulate(out[i - begin], weight, v) : v;
      }
    });
    return;
  }
  uint32_t local[kSubElems / kGroupElems * 9];
  float table[256];
  std::fill(table, table + (1u << nbits_), 0.0f);  // level 0 and the levels above s (never valid)
  for_each_sub(begin, end, [&](int64_t a, int64_t e) {
    // The sub-range's group words, copied to aligned scratch (payloads need not be 4-byte aligned).
    const int64_t g0 = a / kGroupElems, g1 = ceil_div(e, kGroupElems);
    std::memcpy(local, groups + 4 * g0 * words, sizeof(uint32_t) * static_cast<size_t>((g1 - g0) * words));
    for_each_run(blocks_, a, e, [&](int64_t r0, int64_t r1, int64_t b) {
      const float scale = load_f32(payload + 4 * b);
      if (unit_.empty()) {
        for (uint32_t level = 1; level <= levels_; ++level) table[level] = value(level, false, scale);
      } else {
        for (uint32_t level = 1; level <= levels_; ++level) table[level] = scale * unit_[level];
      }
      kernels::decode_planes(local, nbits_, r0 - g0 * kGroupElems, r1 - r0, table, weight, accumulate,
                             out + (r0 - begin));
    });
  });
}

void DensePlaneCodec::decode_impl(std::span<const uint8_t> payload, float weight, bool overwrite,
                                  std::span<float> out) const {
  check_decode_args(payload, out);
  if (overwrite) {
    overwrite_pieces(num_elems(), out.data(),
                     [&](int64_t a, int64_t e, float* dst) { decode_range(payload, a, e, 1.0f, false, dst); });
    return;
  }
  for_each_piece(num_elems(), [&](int64_t begin, int64_t end) {
    decode_range(payload, begin, end, weight, true, out.data() + begin);
  });
}

void DensePlaneCodec::decode_accumulate(std::span<const uint8_t> payload, const RngKey&, float weight,
                                        std::span<float> out) const {
  decode_impl(payload, weight, false, out);
}

void DensePlaneCodec::decode(std::span<const uint8_t> payload, const RngKey&, std::span<float> out) const {
  decode_impl(payload, 1.0f, true, out);
}

}  // namespace gcomp::detail
