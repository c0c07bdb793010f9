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

/// Level of x: rint(x / step), clamped to +-(2^(bits-1) - 1).
GCOMP_HD int64_t grid_level(float x, double step, uint32_t bits) {
  const double lim = static_cast<double>((int64_t{1} << (bits - 1)) - 1);
  double q = round_half_even(static_cast<double>(x) / step);
  if (q > lim) q = lim;
  if (q < -lim) q = -lim;
  return static_cast<int64_t>(q);
}

/// Decoded value step * level, rounded once to float.
GCOMP_HD float grid_value(int64_t level, double step) {
  return static_cast<float>(step * static_cast<double>(level));
}

}  // namespace gcomp::detail
