// SPDX-License-Identifier: Apache-2.0
/// @file payload_rules.hpp
/// @brief What makes a received payload valid, element by element (docs/wire-format.md, DESIGN.md §4).
///
/// Each rule is written once here and used by the CPU codecs' `validate`, the CPU decoders and the
/// CUDA decode and validation kernels. Where a SIMD or bit-sliced form checks many elements at once
/// (kernels_simd.cpp, the 32-lane plane test below), PayloadRulesTest checks that form against the
/// element rule over every value it can see. A payload that breaks a rule is CORRUPT_PAYLOAD and
/// nothing is written from it.
#pragma once

#include <gcomp/detail/hd.hpp>

namespace gcomp::detail {

/// A block scale as sent by dither, natdither, terngrad, scaled sign and sdither: finite, not
/// negative and not -0 (an encoder writes +0 for an all-zero block).
GCOMP_HD bool scale_ok(float s) { return is_finite_f(s) && s >= 0.0f && float_bits(s) != 0x80000000u; }

/// A value sent as it is (identity, the values of top-k and random-k): finite.
GCOMP_HD bool value_ok(float v) { return is_finite_f(v); }

/// A dense-plane element (dither, natdither, terngrad): level at most s, and no sign on level 0.
GCOMP_HD bool plane_element_ok(uint32_t level, bool negative, uint32_t s) {
  return level <= s && !(negative && level == 0u);
}

/// The 32 lanes of a dense-plane group (sign word, then bit planes 0 .. nbits-1 of the levels):
/// the lanes that break plane_element_ok, by a bit-sliced comparison of the planes with s from the
/// top bit down. `level_check` false skips the comparison when every nbits-bit level is <= s.
GCOMP_HD uint32_t plane_group_bad_lanes(uint32_t sign_word, const uint32_t* planes, int nbits, uint32_t s,
                                        bool level_check) {
  uint32_t nonzero = 0, above = 0, equal = ~0u;
  for (int k = nbits - 1; k >= 0; --k) {
    nonzero |= planes[k];
    if (level_check) {
      const uint32_t sk = ((s >> k) & 1u) ? ~0u : 0u;
      above |= equal & planes[k] & ~sk;
      equal &= ~(planes[k] ^ sk);
    }
  }
  return (sign_word & ~nonzero) | above;
}

/// A natural-compression element: exponent code 255 is never sent, and a zero (code 0) has no sign.
GCOMP_HD bool natural_code_ok(uint32_t code, bool negative) { return code != 255u && !(negative && code == 0u); }

/// A grid level field of `bits` bits (two's complement): the most negative pattern is never sent
/// (levels are clamped to +-(2^(bits-1) - 1)).
GCOMP_HD bool grid_field_ok(uint64_t field, uint32_t bits) { return field != (uint64_t{1} << (bits - 1u)); }

/// Index j of a top-k payload: below n and strictly above the one before it (`prev` = -1 for the
/// first), so the indices are distinct, sorted and in range.
GCOMP_HD bool sparse_index_ok(int64_t idx, int64_t prev, int64_t n) { return idx < n && idx > prev; }

/// An sdither record: a level in 1 .. s, in a block whose scale is not 0 (an all-zero block sends
/// no record).
GCOMP_HD bool sdither_record_ok(uint64_t level, uint32_t s, float block_scale) {
  return level >= 1u && level <= s && block_scale != 0.0f;
}

/// The word that holds bit `used_bits` of a bit stream (word used_bits / 32) has no bit set at or
/// beyond it. True when the stream ends on a word boundary.
GCOMP_HD bool padding_clear(uint32_t last_word, int64_t used_bits) {
  const int64_t r = used_bits % 32;
  return r == 0 || (last_word >> r) == 0u;
}

}  // namespace gcomp::detail
