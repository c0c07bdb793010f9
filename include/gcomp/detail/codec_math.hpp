// SPDX-License-Identifier: Apache-2.0
/// @file codec_math.hpp
/// @brief Per-element math of every codec (spec/ALGORITHMS.md §2, §3, §5.3), shared by the CPU
/// reference codecs and the CUDA kernels. Pure functions of their arguments.
#pragma once

#include <gcomp/detail/hd.hpp>
#include <gcomp/detail/philox.hpp>

namespace gcomp::detail {

// ---------------------------------------------------------------------------------------------
// Bit planes (docs/wire-format.md "Bit planes"): elements are grouped by 32 consecutive global
// indices. A group stores 1 + nbits words: word 0 holds the sign bits (bit j = 1: element j of the
// group is negative), word 1 + k holds bit k of the level of each element. A warp ballot per
// plane produces exactly these words on the GPU.
// ---------------------------------------------------------------------------------------------

inline constexpr int kGroupElems = 32;

/// Words per group for `nbits` level planes plus the sign plane.
GCOMP_HD int group_words(int nbits) { return 1 + nbits; }

/// Level of lane `lane` in a group whose level planes start at `planes`.
GCOMP_HD uint32_t plane_level(const uint32_t* planes, int nbits, int lane) {
  uint32_t level = 0;
  for (int k = 0; k < nbits; ++k) level |= ((planes[k] >> lane) & 1u) << k;
  return level;
}

/// A quantized element: its level and sign (sign only meaningful for level > 0).
struct Quantized {
  uint32_t level;
  bool negative;
};

// ---------------------------------------------------------------------------------------------
// Random dithering / QSGD / TernGrad rounding (§2.1 steps 2-4, §3.1).
// r = s|y|/nu in double (the product is exact, the quotient correctly rounded), clamped to [0, s];
// level = floor(r) + [u < r - floor(r)]. |y| = nu gives r = s exactly, hence level s with no draw.
// ---------------------------------------------------------------------------------------------

/// The level of a quotient r >= 0 (r = s|y|/nu rounded to double): r clamped to s, then
/// floor(r) + [u < r - floor(r)]. Exact at every step, hence a nondecreasing function of r.
GCOMP_HD uint32_t dither_level(double r, uint32_t levels, float u) {
  const double s = static_cast<double>(levels);
  if (r > s) r = s;
  const double fl = static_cast<double>(static_cast<uint32_t>(r));
  const double tau = r - fl;
  uint32_t level = static_cast<uint32_t>(fl);
  if (static_cast<double>(u) < tau) level += 1u;
  return level;
}

GCOMP_HD Quantized dither_quantize(float y, float nu, uint32_t levels, float u) {
  if (nu == 0.0f || y == 0.0f) return Quantized{0u, false};
  const double r = (static_cast<double>(levels) * static_cast<double>(abs_f(y))) / static_cast<double>(nu);
  const uint32_t level = dither_level(r, levels, u);
  return Quantized{level, level != 0u && y < 0.0f};
}

/// 2^-50, the relative half-width of the bracket around a quotient computed with a reciprocal.
inline constexpr double kQuotientSlack = 8.8817841970012523e-16;

/// dither_quantize with inv_nu = 1.0 / double(nu) computed once per block instead of a division
/// per element. The same result for every input:
///   a = s|y| is exact (s <= 2^20, |y| has 24 significant bits) and q = a * inv_nu equals
///   (a/nu)(1 + d1)(1 + d2) with |d1|, |d2| <= 2^-53, while dither_quantize uses
///   r = RN(a/nu) = (a/nu)(1 + d3). Hence |r - q| <= 3.0001 * 2^-53 q, and r lies in
///   [q - q 2^-50, q + q 2^-50] also after those two operations round (q 2^-50 is exact: for
///   float inputs q >= 2^-277). dither_level is nondecreasing in r: when both ends of the bracket
///   give one level, r gives it too. Otherwise r is within 2^-50 (relative) of a level boundary,
///   which happens for about 2^-48 of the elements, and the division decides.
/// tests/unit/test_fast_math.cpp checks it against dither_quantize (adversarial inputs in the
/// default run, every float y for several (nu, s, u) in FastMathExhaustive, label `slow`).
GCOMP_HD Quantized dither_quantize_rcp(float y, float nu, double inv_nu, uint32_t levels, float u) {
  if (nu == 0.0f || y == 0.0f) return Quantized{0u, false};
  const double a = static_cast<double>(levels) * static_cast<double>(abs_f(y));
  const double q = a * inv_nu;
  const double d = q * kQuotientSlack;
  uint32_t level = dither_level(q - d, levels, u);
  if (level != dither_level(q + d, levels, u)) level = dither_level(a / static_cast<double>(nu), levels, u);
  return Quantized{level, level != 0u && y < 0.0f};
}

/// Decoded value nu * level / s, rounded once from double (level = s reproduces nu exactly).
GCOMP_HD float dither_value(uint32_t level, bool negative, float nu, uint32_t levels) {
  if (level == 0u) return 0.0f;
  const float mag =
      static_cast<float>((static_cast<double>(nu) * static_cast<double>(level)) / static_cast<double>(levels));
  return negative ? -mag : mag;
}

// ---------------------------------------------------------------------------------------------
// Natural dithering (§5.3): levels {0, 2^(1-s), ..., 1/2, 1} of r = |y|/nu; level code j in 0..s
// stands for 0 (j = 0) or 2^(j-s). Unbiased stochastic rounding between adjacent levels.
// ---------------------------------------------------------------------------------------------

/// The level of a quotient r > 0 (r = |y|/nu rounded to double): levels for r >= 1, else the
/// level index j of 2^floor(log2 r) (0 below 2^(1-s)) plus [u < tau], tau the exact position of r
/// between level j and j + 1. Nondecreasing in r when 2^(1-s) is a normal double (s <= 1022).
GCOMP_HD uint32_t natdither_level(double r, uint32_t levels, float u) {
  if (r >= 1.0) return levels;
  // floor(log2 r) from the exponent field (r is a normal double: r >= 2^-300 for float inputs).
  const int64_t e = static_cast<int64_t>((double_bits(r) >> 52) & 0x7ff) - 1023;
  int64_t j = e + static_cast<int64_t>(levels);  // level index of 2^e
  double lo, hi;
  if (j < 1) {
    j = 0;
    lo = 0.0;
    hi = bits_double(static_cast<uint64_t>(1023 + 1 - static_cast<int64_t>(levels)) << 52);
  } else {
    lo = bits_double(static_cast<uint64_t>(1023 + e) << 52);
    hi = lo * 2.0;
  }
  const double tau = (r - lo) / (hi - lo);
  uint32_t level = static_cast<uint32_t>(j);
  if (static_cast<double>(u) < tau) level += 1u;
  return level;
}

GCOMP_HD Quantized natdither_quantize(float y, float nu, uint32_t levels, float u) {
  if (nu == 0.0f || y == 0.0f) return Quantized{0u, false};
  const uint32_t level = natdither_level(static_cast<double>(abs_f(y)) / static_cast<double>(nu), levels, u);
  return Quantized{level, level != 0u && y < 0.0f};
}

/// Largest s for which natdither_quantize_rcp and natdither_quantize_f use a reciprocal
/// (natdither_level is monotone, and 2^(1-s) is a normal float).
inline constexpr uint32_t kNatDitherRcpMaxLevels = 64;

/// natdither_quantize with inv_nu = 1.0 / double(nu) once per block; the same result for every
/// input, by the bracket argument of dither_quantize_rcp (here a = |y|).
GCOMP_HD Quantized natdither_quantize_rcp(float y, float nu, double inv_nu, uint32_t levels, float u) {
  if (nu == 0.0f || y == 0.0f) return Quantized{0u, false};
  if (levels > kNatDitherRcpMaxLevels) return natdither_quantize(y, nu, levels, u);
  const double a = static_cast<double>(abs_f(y));
  const double q = a * inv_nu;
  const double d = q * kQuotientSlack;
  uint32_t level = natdither_level(q - d, levels, u);
  if (level != natdither_level(q + d, levels, u)) level = natdither_level(a / static_cast<double>(nu), levels, u);
  return Quantized{level, level != 0u && y < 0.0f};
}

// ---------------------------------------------------------------------------------------------
// The single-precision fast path of dither_quantize / natdither_quantize: the quotient in float
// with a reciprocal c per block, bracketed; the same level as the division for every input.
//
// Let t = s|y|/nu (real; s = levels, or 1 for natdither), r = RN_d(t) the quotient of the element
// function (s|y| is exact in double: s <= 2^24), c = RN_f(s/nu) (quantize_recip_f, one float
// division per block; s is exact in float) and q = RN_f(|y| c).
//   1. c is used only when it is a normal float, so c = (s/nu)(1 + e1) with |e1| <= 2^-24.
//   2. The fast path is taken only for q in [2^-100, 2^100]. A product whose exact value lies
//      below 2^-126 would round to at most 2^-126 < 2^-100, so |y| c is in the normal range and
//      q = |y| c (1 + e2), |e2| <= 2^-24. Also t is a normal double (t >= 2^-149 2^-128), so
//      r = t (1 + e3), |e3| <= 2^-53.
//   3. r / q = (1 + e3) / ((1 + e1)(1 + e2)) lies in (1 - 2^-22, 1 + 2^-22):
//      (1 + 2^-53) / (1 - 2^-24)^2 < 1 + 2^-23 + 2^-45 and (1 - 2^-53) / (1 + 2^-24)^2 > 1 - 2^-23 - 2^-52.
//   4. The bracket: d = q 2^-20 is exact (q 2^-20 >= 2^-120 is normal, a power-of-two scaling),
//      lo = RN_f(q - d) <= q (1 - 2^-20)(1 + 2^-24) < q (1 - 2^-22) < r and
//      hi = RN_f(q + d) >= q (1 + 2^-20)(1 - 2^-24) > q (1 + 2^-22) > r, and neither overflows
//      nor leaves the normal range (q <= 2^100, q (1 - 2^-20) >= 2^-101). With an FMA
//      (q - q 2^-20 in one rounding) the same bounds hold.
//   5. dither_level / natdither_level are nondecreasing functions of the real r (codec_math's
//      comments above), and dither_level_f / natdither_level_f evaluate them exactly on a float
//      argument (clamp to s and floor of a float, r - floor(r), the exponent field, a
//      power-of-two scaling: no rounding; u is compared as it is, whatever its granularity).
//      Hence level(lo) <= level(r) <= level(hi): when the two ends agree, that is r's level.
// Otherwise (r within about 2^-20 relative of a level boundary: about 2^-19 q of the elements,
// q <= s), when q is outside [2^-100, 2^100] (underflow, overflow, c = 0 for a scale with no
// normal float reciprocal, NaN), or when s > 2^24 (or s > kNatDitherRcpMaxLevels for natdither)
// the element function decides. y = 0 gives q = 0 and level 0 at both ends, as there.
// tests/unit/test_fast_math.cpp checks the result against the element functions (adversarial
// inputs in the default run, every float y for several (nu, s, u) in FastMathExhaustive).
// ---------------------------------------------------------------------------------------------

/// GCOMP_HD for the rare path of the fast forms (the division fallback): out of line on the device, so that the
/// kernels' hot loops hold the float path only.
#if defined(__CUDACC__)
#define GCOMP_HD_COLD __host__ __device__ __noinline__ inline
#else
#define GCOMP_HD_COLD inline
#endif

/// 2^-20, the relative half-width of the single-precision bracket.
inline constexpr float kFloatQuotientSlack = 9.5367431640625e-7f;
/// The range [2^-100, 2^100] of q in which the single-precision bracket holds.
inline constexpr float kFloatQuotientMin = 7.8886090522101181e-31f;
inline constexpr float kFloatQuotientMax = 1.2676506002282294e+30f;
/// Largest s of the single-precision path (s exact in float).
inline constexpr uint32_t kFloatPathMaxLevels = 1u << 24;

/// The per-block reciprocal c = RN_f(s/nu) of the fast path (s = 1 for natdither), or 0 when it is
/// not a normal float (nu = 0, huge or tiny nu, NaN): then every element takes the exact path.
GCOMP_HD float quantize_recip_f(bool natural, float nu, uint32_t levels) {
  if (nu == 0.0f || levels > kFloatPathMaxLevels) return 0.0f;
  const float c = (natural ? 1.0f : static_cast<float>(levels)) / nu;
  return c >= 1.17549435e-38f && c <= 3.40282347e+38f ? c : 0.0f;  // normal and finite (false for NaN)
}

/// dither_level of a float r >= 0, evaluated exactly in single precision (s <= 2^24).
GCOMP_HD uint32_t dither_level_f(float r, uint32_t levels, float u) {
  const float s = static_cast<float>(levels);
  // Also NaN goes to s: dither_quantize_f evaluates both ends before it knows q is in range
  // (q = Inf gives Inf - Inf), and a NaN converted to an integer is undefined. Its level is then
  // discarded; for every other r this is the clamp r > s -> s.
  if (!(r <= s)) r = s;
  const uint32_t fl = static_cast<uint32_t>(r);
  const float tau = r - static_cast<float>(fl);
  return fl + (u < tau ? 1u : 0u);
}

/// natdither_level of a normal float r > 0 (or r = 0: level 0), evaluated exactly in single
/// precision (s <= kNatDitherRcpMaxLevels: 2^(1-s) and 2^(s-1) are normal floats). Selects, no
/// branches.
GCOMP_HD uint32_t natdither_level_f(float r, uint32_t levels, float u) {
  const uint32_t bits = float_bits(r);
  const int32_t j = static_cast<int32_t>(bits >> 23) - 127 + static_cast<int32_t>(levels);  // index of 2^e
  // j >= 1: tau = (r - 2^e) / 2^e, the mantissa; j < 1 (between 0 and 2^(1-s)): tau = r 2^(s-1),
  // an exact power-of-two scaling (the exponent field of 2^(s-1) taken modulo 2^8 for s > 128,
  // where j < 1 cannot happen for a normal r)
  const float tau_mid = bits_float((bits & 0x7fffffu) | 0x3f800000u) - 1.0f;
  const float tau_low = r * bits_float(((static_cast<uint32_t>(127 - 1) + levels) & 0xffu) << 23);
  const bool low = j < 1;
  const uint32_t level = (low ? 0u : static_cast<uint32_t>(j)) + (u < (low ? tau_low : tau_mid) ? 1u : 0u);
  return r >= 1.0f ? levels : level;
}

GCOMP_HD_COLD Quantized dither_quantize_cold(float y, float nu, uint32_t levels, float u) {
  return dither_quantize(y, nu, levels, u);
}

GCOMP_HD_COLD Quantized natdither_quantize_cold(float y, float nu, uint32_t levels, float u) {
  return natdither_quantize(y, nu, levels, u);
}

/// dither_quantize with c = quantize_recip_f(false, nu, levels): single precision, exact (above).
/// One test decides the fast path (no branch per condition on the device).
GCOMP_HD Quantized dither_quantize_f(float y, float nu, float c, uint32_t levels, float u) {
  const float ay = abs_f(y);
  const float q = ay * c;
  const float d = q * kFloatQuotientSlack;
  const uint32_t level = dither_level_f(q - d, levels, u);
  const bool in_range = (q >= kFloatQuotientMin) & (q <= kFloatQuotientMax);
  if ((level == dither_level_f(q + d, levels, u)) & (in_range | (ay == 0.0f)))
    return Quantized{level, level != 0u && y < 0.0f};
  return dither_quantize_cold(y, nu, levels, u);
}

/// natdither_quantize with c = quantize_recip_f(true, nu, levels): single precision, exact (above).
GCOMP_HD Quantized natdither_quantize_f(float y, float nu, float c, uint32_t levels, float u) {
  const float ay = abs_f(y);
  const float q = ay * c;
  const float d = q * kFloatQuotientSlack;
  const uint32_t level = natdither_level_f(q - d, levels, u);
  const bool in_range = (q >= kFloatQuotientMin) & (q <= kFloatQuotientMax);
  // y = 0: r = 0 gives level 0 here (j < 1) for s <= kNatDitherRcpMaxLevels only
  if ((level == natdither_level_f(q + d, levels, u)) & (in_range | (ay == 0.0f)) & (levels <= kNatDitherRcpMaxLevels))
    return Quantized{level, level != 0u && y < 0.0f};
  return natdither_quantize_cold(y, nu, levels, u);
}

GCOMP_HD float natdither_value(uint32_t level, bool negative, float nu, uint32_t levels) {
  if (level == 0u) return 0.0f;
  const double lv =
      bits_double(static_cast<uint64_t>(1023 + static_cast<int64_t>(level) - static_cast<int64_t>(levels)) << 52);
  const float mag = static_cast<float>(static_cast<double>(nu) * lv);
  return negative ? -mag : mag;
}

// ---------------------------------------------------------------------------------------------
// Natural compression (§5.3), bit-level form: keep sign and exponent, and increment the exponent
// iff the 23-bit mantissa exceeds a uniform integer in [0, 2^23). That gives P(up) = (|t|-a)/a
// exactly. Subnormals use the same rule between 0 (code 0) and 2^-126 (code 1), which keeps them
// unbiased. Rounding up from 2^127 would overflow; it is clamped to 2^127 (biased only there).
// Code: 8-bit exponent field e in 0..254 (0 means zero) plus the sign bit.
// ---------------------------------------------------------------------------------------------

GCOMP_HD uint32_t natural_exponent_code(float t, uint32_t word) {
  const uint32_t bits = float_bits(t) & 0x7fffffffu;
  uint32_t e = bits >> 23;
  const uint32_t mant = bits & 0x7fffffu;
  if (mant > (word >> 9)) e += 1u;
  if (e > 254u) e = 254u;
  return e;
}

GCOMP_HD float natural_value(uint32_t code, bool negative) {
  if (code == 0u) return 0.0f;
  return bits_float((negative ? 0x80000000u : 0u) | (code << 23));
}

// ---------------------------------------------------------------------------------------------
// Scaled sign (§3.2): bit = x < 0 (zero maps to +1), value = +-scale.
// ---------------------------------------------------------------------------------------------

GCOMP_HD float sign_value(bool negative, float scale) { return negative ? -scale : scale; }

// ---------------------------------------------------------------------------------------------
// Group forms: one Philox block serves the four elements of group q = index / 4 (philox.hpp).
// Element 4q + j of a group uses word j of philox_block(key, kStreamElement, q). Each function
// takes the group's block once and returns, for j = 0..3, exactly what the element function
// returns with word r.v[j]. Positions past the end of the buffer are passed as y = 0 (nu and
// scale arbitrary): they give level 0 / code 0 and are ignored by the caller. nu[j] is the
// scale of element 4q + j (a group may straddle a block or segment boundary).
// ---------------------------------------------------------------------------------------------

// The quantizing group forms take the single-precision path (dither_quantize_f) with one
// reciprocal, that of the group's first scale.

// An element whose scale differs from its group's first (a group across a block boundary) is
// given c = 0, the "no reciprocal" value: the division decides it.

GCOMP_HD void dither_quantize4(const float (&y)[4], const float (&nu)[4], uint32_t levels, const Philox4x32& r,
                               Quantized (&out)[4]) {
  const float c = quantize_recip_f(false, nu[0], levels);
  for (int j = 0; j < 4; ++j)
    out[j] = dither_quantize_f(y[j], nu[j], nu[j] == nu[0] ? c : 0.0f, levels, uniform01(r.v[j]));
}

GCOMP_HD void natdither_quantize4(const float (&y)[4], const float (&nu)[4], uint32_t levels, const Philox4x32& r,
                                  Quantized (&out)[4]) {
  const float c = quantize_recip_f(true, nu[0], levels);
  for (int j = 0; j < 4; ++j)
    out[j] = natdither_quantize_f(y[j], nu[j], nu[j] == nu[0] ? c : 0.0f, levels, uniform01(r.v[j]));
}

GCOMP_HD void natural_codes4(const float (&t)[4], const Philox4x32& r, uint32_t (&code)[4]) {
  for (int j = 0; j < 4; ++j) code[j] = natural_exponent_code(t[j], r.v[j]);
}

/// out + weight * v, never fused: the one accumulation rule of decode_accumulate on every backend.
GCOMP_HD float accumulate(float out, float weight, float v) { return out + weight * v; }

}  // namespace gcomp::detail
