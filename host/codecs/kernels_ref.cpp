// SPDX-License-Identifier: Apache-2.0
// The scalar reference kernels (host/codecs/kernels.hpp), written directly from the GCOMP_HD
// element math. Builds without Highway run these; with Highway they are the oracle of the SIMD
// kernels' tests (tests/unit/test_kernels.cpp) and the target "scalar" of force_target.
#include "host/codecs/kernels.hpp"

#include <gcomp/detail/codec_math.hpp>
#include <gcomp/detail/grid.hpp>
#include <gcomp/detail/reduce.hpp>
#include <gcomp/detail/payload_rules.hpp>
#include <gcomp/detail/sparse.hpp>

#include <algorithm>
#include <cstring>

namespace gcomp::detail::kernels {

float plane_reciprocal(bool natural, float nu, uint32_t levels) { return quantize_recip_f(natural, nu, levels); }

}  // namespace gcomp::detail::kernels

namespace gcomp::detail::kernels::ref {

void philox_words(const RngKey& key, uint32_t stream, uint64_t first_q, int64_t num_q, uint32_t* words) {
  for (int64_t k = 0; k < num_q; ++k) {
    const Philox4x32 r = philox_block(key, stream, first_q + static_cast<uint64_t>(k));
    for (int j = 0; j < 4; ++j) words[4 * k + j] = r.v[j];
  }
}

namespace {
template <class Op>
double tile_value(const Op& op, const float* x, int64_t len) {
  double lanes[kLanes];
  for (int l = 0; l < kLanes; ++l) lanes[l] = lane_accumulate(op, x, len, l);
  return tree_combine_pow2(op, lanes, kLanes);
}
}  // namespace

double reduce_tile(ReduceOp op, const float* x, int64_t len, double mean) {
  switch (op) {
    case ReduceOp::kAbsSum: return tile_value(AbsSumOp{}, x, len);
    case ReduceOp::kSquareSum: return tile_value(SquareSumOp{}, x, len);
    case ReduceOp::kSum: return tile_value(SumOp{}, x, len);
    case ReduceOp::kCenteredSquareSum: return tile_value(CenteredSquareSumOp{mean}, x, len);
    case ReduceOp::kAbsMax: return tile_value(AbsMaxOp{}, x, len);
  }
  return 0.0;
}

int64_t find_nonfinite(const float* x, int64_t n) {
  for (int64_t i = 0; i < n; ++i)
    if (!is_finite_f(x[i])) return i;
  return -1;
}

void quantize(bool natural, const float* x, int64_t len, float nu, uint32_t levels, const uint32_t* words,
              uint32_t* coded) {
  for (int64_t i = 0; i < len; ++i) {
    const float u = uniform01(words[i]);
    const Quantized q = natural ? natdither_quantize(x[i], nu, levels, u) : dither_quantize(x[i], nu, levels, u);
    coded[i] = q.level | (q.negative ? kNegativeBit : 0u);
  }
}

int64_t dither_nonzeros(const float* x, int64_t len, float nu, uint32_t levels, const uint32_t* words, uint32_t first,
                        uint32_t* idx, uint32_t* coded) {
  int64_t count = 0;
  for (int64_t i = 0; i < len; ++i) {
    const Quantized q = dither_quantize(x[i], nu, levels, uniform01(words[i]));
    if (q.level == 0u) continue;
    idx[count] = first + static_cast<uint32_t>(i);
    coded[count++] = q.level | (q.negative ? kNegativeBit : 0u);
  }
  return count;
}

void pack_planes(const uint32_t* coded, int64_t num_groups, int nbits, uint32_t* out) {
  const int words = group_words(nbits);
  for (int64_t g = 0; g < num_groups; ++g) {
    uint32_t* w = out + g * words;
    for (int k = 0; k < words; ++k) w[k] = 0;
    for (int lane = 0; lane < kGroupElems; ++lane) {
      const uint32_t c = coded[g * kGroupElems + lane];
      w[0] |= (c >> 31) << lane;
      for (int k = 0; k < nbits; ++k) w[1 + k] |= ((c >> k) & 1u) << lane;
    }
  }
}

void quantize_planes(bool natural, const float* x, const float* nu, const float* recip, const uint32_t* words,
                     int64_t num_groups, uint32_t levels, int nbits, uint32_t* out, bool uniform) {
  (void)recip;
  uint32_t coded[kGroupElems];
  for (int64_t g = 0; g < num_groups; ++g) {
    for (int lane = 0; lane < kGroupElems; ++lane) {
      const int64_t i = g * kGroupElems + lane;
      quantize(natural, x + i, 1, nu[uniform ? 0 : i], levels, words + i, coded + lane);
    }
    pack_planes(coded, 1, nbits, out + g * group_words(nbits));
  }
}

void sign_words(const float* x, int64_t num_groups, uint32_t* out) {
  for (int64_t g = 0; g < num_groups; ++g) {
    uint32_t w = 0;
    for (int lane = 0; lane < kGroupElems; ++lane)
      w |= static_cast<uint32_t>(is_negative_f(x[g * kGroupElems + lane])) << lane;
    out[g] = w;
  }
}

void decode_planes(const uint32_t* groups, int nbits, int64_t first, int64_t len, const float* table, float weight,
                   bool accumulate, float* out) {
  const int words = group_words(nbits);
  for (int64_t i = 0; i < len; ++i) {
    const int64_t e = first + i;
    const uint32_t* w = groups + (e / kGroupElems) * words;
    const int lane = static_cast<int>(e % kGroupElems);
    const uint32_t level = plane_level(w + 1, nbits, lane);
    const float mag = table[level];
    const float v = ((w[0] >> lane) & 1u) ? -mag : mag;
    out[i] = accumulate ? gcomp::detail::accumulate(out[i], weight, v) : v;
  }
}

int64_t plane_groups_first_bad(const uint8_t* groups, int nbits, uint32_t s, bool level_check, int64_t g0, int64_t g1) {
  const int words = group_words(nbits);
  uint32_t w[1 + 32];
  for (int64_t g = g0; g < g1; ++g) {
    std::memcpy(w, groups + 4 * g * words, sizeof(uint32_t) * static_cast<size_t>(words));
    if (plane_group_bad_lanes(w[0], w + 1, nbits, s, level_check) != 0u) return g;
  }
  return -1;
}

void natural_encode(const float* x, int64_t len, const uint32_t* words, uint8_t* codes, uint32_t* signs) {
  for (int64_t g = 0; g * kGroupElems < len; ++g) signs[g] = 0;
  for (int64_t i = 0; i < len; ++i) {
    const uint32_t code = natural_exponent_code(x[i], words[i]);
    codes[i] = static_cast<uint8_t>(code);
    if (code != 0 && x[i] < 0.0f) signs[i / kGroupElems] |= 1u << (i % kGroupElems);
  }
}

void natural_decode(const uint8_t* codes, const uint32_t* signs, int64_t first, int64_t len, float weight,
                    bool accumulate, float* out) {
  for (int64_t i = 0; i < len; ++i) {
    const int64_t e = first + i;
    const float v = natural_value(codes[e], (signs[e / kGroupElems] >> (e % kGroupElems)) & 1u);
    out[i] = accumulate ? gcomp::detail::accumulate(out[i], weight, v) : v;
  }
}

bool natural_invalid(const uint8_t* codes, const uint32_t* signs, int64_t num_groups) {
  for (int64_t g = 0; g < num_groups; ++g) {
    for (int lane = 0; lane < kGroupElems; ++lane)
      if (!natural_code_ok(codes[g * kGroupElems + lane], ((signs[g] >> lane) & 1u) != 0u)) return true;
  }
  return false;
}

void grid_levels(const float* x, int64_t len, double step, double inv_step, uint32_t bits, int32_t* levels) {
  (void)inv_step;
  for (int64_t i = 0; i < len; ++i) levels[i] = static_cast<int32_t>(grid_level(x[i], step, bits));
}

void grid_encode_fields(const float* x, int64_t len, double step, float c, uint32_t bits, bool stream,
                        uint8_t* fields) {
  (void)stream;
  for (int64_t i = 0; i < len; ++i) {
    const int64_t level = grid_level_f(x[i], step, c, bits);
    if (bits == 16) {
      const uint16_t v = static_cast<uint16_t>(level);
      fields[2 * i] = static_cast<uint8_t>(v);
      fields[2 * i + 1] = static_cast<uint8_t>(v >> 8);
    } else {
      fields[i] = static_cast<uint8_t>(level);
    }
  }
}

void pack_fields(const int32_t* levels, int64_t len, uint32_t bits, uint32_t* words) {
  const uint64_t mask = bits == 32 ? 0xffffffffull : ((uint64_t{1} << bits) - 1);
  uint64_t acc = 0;
  uint32_t have = 0;
  int64_t w = 0;
  for (int64_t i = 0; i < len; ++i) {
    acc |= (static_cast<uint64_t>(static_cast<uint32_t>(levels[i])) & mask) << have;
    have += bits;
    if (have >= 32) {
      words[w++] = static_cast<uint32_t>(acc);
      acc >>= 32;
      have -= 32;
    }
  }
  if (have > 0) words[w] = static_cast<uint32_t>(acc);
}

void unpack_fields(const uint32_t* words, int64_t first, int64_t len, uint32_t bits, int32_t* levels) {
  for (int64_t i = 0; i < len; ++i) {
    const uint64_t v = read_packed_field(words, first + i, bits);
    const bool neg = bits < 64 && ((v >> (bits - 1)) & 1u);
    const int64_t s = neg ? static_cast<int64_t>(v) - (int64_t{1} << bits) : static_cast<int64_t>(v);
    levels[i] = static_cast<int32_t>(s);
  }
}

void grid_decode(const int32_t* levels, int64_t len, double step, float weight, bool accumulate, float* out) {
  for (int64_t i = 0; i < len; ++i) {
    const float v = grid_value(levels[i], step);
    out[i] = accumulate ? gcomp::detail::accumulate(out[i], weight, v) : v;
  }
}

namespace {
/// Sign-extended whole-byte field i (bits 8 or 16) of a little-endian stream.
int32_t byte_field(const uint8_t* fields, int64_t i, uint32_t bits) {
  if (bits == 8) return static_cast<int8_t>(fields[i]);
  return static_cast<int16_t>(static_cast<uint16_t>(fields[2 * i] | (fields[2 * i + 1] << 8)));
}
}  // namespace

void grid_decode_fields(const uint8_t* fields, int64_t first, int64_t len, uint32_t bits, double step, float weight,
                        bool accumulate, float* out) {
  for (int64_t i = 0; i < len; ++i) {
    const float v = grid_value(byte_field(fields, first + i, bits), step);
    out[i] = accumulate ? gcomp::detail::accumulate(out[i], weight, v) : v;
  }
}

int64_t grid_first_bad_field(const uint8_t* fields, int64_t len, uint32_t bits) {
  const int32_t most_negative = bits == 8 ? -128 : -32768;
  for (int64_t i = 0; i < len; ++i)
    if (byte_field(fields, i, bits) == most_negative) return i;
  return -1;
}

void axpy(const float* v, int64_t len, float weight, float* out) {
  for (int64_t i = 0; i < len; ++i) out[i] = accumulate(out[i], weight, v[i]);
}

void topk_order_keys(const float* x, int64_t len, uint32_t* ord) {
  for (int64_t i = 0; i < len; ++i) ord[i] = 0x7fffffffu - (float_bits(x[i]) & 0x7fffffffu);
}

int64_t select_at_most(const uint32_t* keys, int64_t len, uint32_t threshold, uint32_t* idx) {
  int64_t count = 0;
  for (int64_t i = 0; i < len; ++i)
    if (keys[i] <= threshold) idx[count++] = static_cast<uint32_t>(i);
  return count;
}

void stream_copy(const uint8_t* src, int64_t len, float* dst) {
  if (len > 0) std::memcpy(dst, src, sizeof(float) * static_cast<size_t>(len));
}

void stream_zero(int64_t len, float* dst) { std::fill(dst, dst + len, 0.0f); }

}  // namespace gcomp::detail::kernels::ref
