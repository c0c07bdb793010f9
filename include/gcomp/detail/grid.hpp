// SPDX-License-Identifier: Apache-2.0
/// @file grid.hpp
/// @brief Element math of the grid codec: Q(x) = step * rint(x / step), the deterministic
/// low-precision rounding of spec/ALGORITHMS.md §6.1 and §7.1, with levels saturated to
/// [-(2^(bits-1) - 1), 2^(bits-1) - 1].
#pragma once

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

/// Decoded value step * level, rounded once to float.
GCOMP_HD float grid_value(int64_t level, double step) { return static_cast<float>(step * static_cast<double>(level)); }

}  // namespace gcomp::detail
