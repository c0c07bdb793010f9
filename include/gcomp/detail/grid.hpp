// SPDX-License-Identifier: Apache-2.0
/// @file grid.hpp
/// @brief Element math of the grid codec: Q(x) = step * rint(x / step), the deterministic
/// low-precision rounding of spec/ALGORITHMS.md §6.1 and §7.1, with levels saturated to
/// [-(2^(bits-1) - 1), 2^(bits-1) - 1].
#pragma once

#include <gcomp/detail/codec_math.hpp>
#include <gcomp/detail/hd.hpp>

namespace gcomp::detail {

/// Round to nearest, ties to even, for |q| < 2^52 (portable: adding and subtracting 2^52 rounds
/// in the default rounding mode on host and device alike).
GCOMP_HD double round_half_even(double q) {
  const double big = 4503599627370496.0;  // 2^52
  if (q >= big || q <= -big) return q;
  return q >= 0.0 ? (q + big) - big : -((-q + big) - big);
}

/// The level of a quotient q: rint(q), clamped to +-(2^(bits-1) - 1). Nondecreasing in q.
GCOMP_HD int64_t grid_level_of(double q, uint32_t bits) {
  const double lim = static_cast<double>((int64_t{1} << (bits - 1)) - 1);
  q = round_half_even(q);
  if (q > lim) q = lim;
  if (q < -lim) q = -lim;
  return static_cast<int64_t>(q);
}

/// Level of x: rint(x / step), clamped to +-(2^(bits-1) - 1).
GCOMP_HD int64_t grid_level(float x, double step, uint32_t bits) {
  return grid_level_of(static_cast<double>(x) / step, bits);
}

/// 1 / step for grid_level_rcp, or 0 when the step is outside [2^-800, 2^800], where a float
/// divided by it could leave the normal double range (grid_level_rcp then divides).
GCOMP_HD double grid_inverse_step(double step) {
  const double kMin = 1.4996968138956309e-241;  // 2^-800
  const double kMax = 6.6680144328798543e+240;  // 2^800
  return step >= kMin && step <= kMax ? 1.0 / step : 0.0;
}

/// grid_level with inv_step = grid_inverse_step(step) instead of a division per element; the same
/// result for every input. q = x * inv_step is within 3.0001 * 2^-53 |q| of RN(x / step) (both
/// normal or zero for steps in [2^-800, 2^800]), so RN(x / step) lies in [q - |q| 2^-50,
/// q + |q| 2^-50]; grid_level_of is nondecreasing, and when both ends agree that is the level
/// (|q| 2^-50 may round when |q| < 2^-972, where every point of the bracket has level 0).
GCOMP_HD int64_t grid_level_rcp(float x, double step, double inv_step, uint32_t bits) {
  if (inv_step == 0.0) return grid_level(x, step, bits);
  const double q = static_cast<double>(x) * inv_step;
  const double d = (q < 0.0 ? -q : q) * 8.8817841970012523e-16;  // 2^-50
  const int64_t level = grid_level_of(q - d, bits);
  return level == grid_level_of(q + d, bits) ? level : grid_level(x, step, bits);
}

// ---------------------------------------------------------------------------------------------
// The single-precision form of grid_level (bits <= 24): the quotient in float with a reciprocal
// c per codec, bracketed; the same level as the division for every finite x.
//
// Let t = x / step (real), r = RN_d(t) the quotient of grid_level, inv = RN_d(1 / step),
// c = RN_f(inv) (grid_inverse_step_f) and q = RN_f(x c).
//   1. c is used only when inv lies in the normal float range [2^-126, FLT_MAX], so
//      c = (1 / step)(1 + e0)(1 + e1) with |e0| <= 2^-53, |e1| <= 2^-24, and 1 / step is in
//      (2^-127, 2^128).
//   2. Fast path only for |q| <= 2^100 (false for NaN). When also |q| >= 2^-100, the exact x c
//      is a normal float value (a product below 2^-126 would round to at most 2^-126), so
//      q = x c (1 + e2), |e2| <= 2^-24; t is a normal double (|x| >= 2^-149, |1 / step| > 2^-127),
//      so r = t (1 + e3), |e3| <= 2^-53.
//   3. r / q = (1 + e3) / ((1 + e0)(1 + e1)(1 + e2)) lies in (1 - 2^-22, 1 + 2^-22):
//      (1 + 2^-53) / ((1 - 2^-53)(1 - 2^-24)^2) < 1 + 2^-23 + 2^-44 and
//      (1 - 2^-53) / ((1 + 2^-53)(1 + 2^-24)^2) > 1 - 2^-23 - 2^-44.
//   4. The bracket: d = |q| 2^-20 is exact (>= 2^-120, a power-of-two scaling); for q > 0,
//      lo = RN_f(q - d) <= q (1 - 2^-20)(1 + 2^-24) < q (1 - 2^-22) < r and
//      hi = RN_f(q + d) >= q (1 + 2^-20)(1 - 2^-24) > q (1 + 2^-22) > r (q < 0: the mirror
//      image); both are finite (|q| <= 2^100).
//   5. The clamp to +-(2^(bits-1) - 1) (exact in float for bits <= 24), then rint, evaluated
//      exactly on a float (round_half_even_f), is grid_level_of on the real line (rint then the
//      clamp: the bound is an integer), a nondecreasing function. When it gives lo and hi the
//      same value, that is level(r). (Clamping first keeps saturated quotients, up to 2^100, on
//      this path: both ends give the bound.)
//   6. |q| < 2^-100: then |x c| < 2^-99 (the rounding error of q is below 2^-150 in absolute
//      value), so |t| < 2^-98 and r rounds to level 0; lo and hi are within (2^-99)(1 + 2^-20)
//      of 0 and round to +-0: level 0 at both ends, which is the result.
// Otherwise (t within about 2^-20 relative of a half-integer below the bound: about |q| 2^-19 of
// the elements;
// |q| > 2^100; c = 0 for a step with no normal float reciprocal or bits > 24) the division
// decides. tests/unit/test_fast_math.cpp checks it against grid_level (FastMath.* and
// FastMathExhaustive.GridEveryFloat, label `slow`).
// ---------------------------------------------------------------------------------------------

/// Largest bits of the single-precision path (+-(2^(bits-1) - 1) exact in float). Its bracket is
/// kFloatQuotientSlack (2^-20) and its range |q| <= kFloatQuotientMax (2^100), of codec_math.hpp.
inline constexpr uint32_t kGridFloatMaxBits = 24;

/// c = RN_f(RN_d(1 / step)) for grid_level_f, or 0 when 1 / step is outside the normal float range
/// or bits > kGridFloatMaxBits (then grid_level_f divides for every element).
GCOMP_HD float grid_inverse_step_f(double step, uint32_t bits) {
  if (bits > kGridFloatMaxBits) return 0.0f;
  const double inv = 1.0 / step;
  // [2^-126, FLT_MAX]: false for NaN and Inf; the conversion rounds into the normal range
  if (!(inv >= 1.1754943508222875e-38 && inv <= 3.4028234663852886e+38)) return 0.0f;
  return static_cast<float>(inv);
}

/// rint(v) for a float v, ties to even, exactly in single precision (|v| < 2^23 by adding and
/// subtracting 2^23 in the default rounding mode; larger floats are integers already).
GCOMP_HD float round_half_even_f(float v) {
  const float big = 8388608.0f;  // 2^23
  if (!(v < big && v > -big)) return v;
  return v >= 0.0f ? (v + big) - big : -((-v + big) - big);
}

/// grid_level of a finite x, out of line on the device (the rare path of grid_level_f).
GCOMP_HD_COLD int64_t grid_level_cold(float x, double step, uint32_t bits) { return grid_level(x, step, bits); }

/// grid_level_of of a float v: v clamped to +-lim (an integer below 2^23), then rint; exact.
GCOMP_HD float grid_level_of_f(float v, float lim) { return round_half_even_f(v > lim ? lim : (v < -lim ? -lim : v)); }

/// grid_level with c = grid_inverse_step_f(step, bits): single precision, exact (above).
GCOMP_HD int64_t grid_level_f(float x, double step, float c, uint32_t bits) {
  const float q = x * c;
  if ((c != 0.0f) & (abs_f(q) <= kFloatQuotientMax)) {
    const float lim = static_cast<float>((int32_t{1} << (bits - 1)) - 1);
    const float d = abs_f(q) * kFloatQuotientSlack;
    const float lo = grid_level_of_f(q - d, lim);
    if (lo == grid_level_of_f(q + d, lim)) return static_cast<int64_t>(lo);
  }
  return grid_level_cold(x, step, bits);
}

/// Decoded value step * level, rounded once to float.
GCOMP_HD float grid_value(int64_t level, double step) { return static_cast<float>(step * static_cast<double>(level)); }

}  // namespace gcomp::detail
