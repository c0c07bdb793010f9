// SPDX-License-Identifier: Apache-2.0
/// @file detmath.hpp
/// @brief log, exp, pow, sin and cos in double from + - * / only, so host and device agree bit for
/// bit.
///
/// Math libraries round transcendentals differently on the CPU and the GPU. The l_p norms with a
/// general p need x^p, and the spherical codebooks (spec/ALGORITHMS.md §5.2(b)) need Box-Muller
/// normals, so gcomp carries its own: relative error below 1e-15 on normal inputs, and exactly the
/// same bits wherever it is compiled (contraction is off in every gcomp build).
#pragma once

#include <gcomp/detail/hd.hpp>

namespace gcomp::detail {

inline constexpr double kLn2Hi = 6.93147180369123816490e-01;  // ln 2, upper bits (exact in 32 bits)
inline constexpr double kLn2Lo = 1.90821492927058770002e-10;  // ln 2 - kLn2Hi

/// Natural log of a positive, finite double. Returns -Inf for 0.
GCOMP_HD double det_log(double x) {
  if (x <= 0.0) return bits_double(0xfff0000000000000ull);
  uint64_t bits = double_bits(x);
  int64_t e = static_cast<int64_t>((bits >> 52) & 0x7ff);
  if (e == 0) {                // subnormal: scale into the normal range first
    x *= 18014398509481984.0;  // 2^54
    bits = double_bits(x);
    e = static_cast<int64_t>((bits >> 52) & 0x7ff) - 54;
  }
  e -= 1023;
  // mantissa m in [1, 2); move to [sqrt(1/2), sqrt(2)) for a small series argument.
  double m = bits_double((bits & 0x000fffffffffffffull) | 0x3ff0000000000000ull);
  if (m > 1.4142135623730951) {
    m *= 0.5;
    e += 1;
  }
  // log m = 2 atanh(z), z = (m - 1)/(m + 1), |z| <= 0.1716.
  const double z = (m - 1.0) / (m + 1.0);
  const double z2 = z * z;
  double term = z;
  double sum = 0.0;
  for (int k = 1; k <= 27; k += 2) {
    sum = sum + term / static_cast<double>(k);
    term = term * z2;
  }
  const double ed = static_cast<double>(e);
  return ed * kLn2Hi + (2.0 * sum + ed * kLn2Lo);
}

/// e^y for finite y. Overflows to +Inf above ~709.78 and flushes to 0 below ~-745.
GCOMP_HD double det_exp(double y) {
  if (y > 709.782712893384) return bits_double(0x7ff0000000000000ull);
  if (y < -745.1332191019412) return 0.0;
  const double kInvLn2 = 1.4426950408889634;
  const double kf = y * kInvLn2;
  int64_t k = static_cast<int64_t>(kf < 0.0 ? kf - 0.5 : kf + 0.5);
  const double kd = static_cast<double>(k);
  const double r = (y - kd * kLn2Hi) - kd * kLn2Lo;  // |r| <= ~0.347
  double term = 1.0;
  double sum = 1.0;
  for (int i = 1; i <= 17; ++i) {
    term = term * r / static_cast<double>(i);
    sum = sum + term;
  }
  // scale by 2^k in two steps so that subnormal results and k = 1024 stay representable.
  const int64_t k1 = k / 2;
  const int64_t k2 = k - k1;
  const double s1 = bits_double(static_cast<uint64_t>(k1 + 1023) << 52);
  const double s2 = bits_double(static_cast<uint64_t>(k2 + 1023) << 52);
  return sum * s1 * s2;
}

/// x^p for x >= 0 and p > 0 (0^p = 0).
GCOMP_HD double det_pow(double x, double p) {
  if (x == 0.0) return 0.0;
  if (p == 1.0) return x;
  if (p == 2.0) return x * x;
  return det_exp(p * det_log(x));
}

// ---------------------------------------------------------------------------------------------
// sin and cos. The argument is reduced to r in [-pi/4, pi/4] and a quadrant k (x = k pi/2 + r);
// sin and cos of r are Taylor polynomials (terms through r^23 / r^22: truncation < 1e-22
// relative), evaluated by Horner's rule. Relative error < 1e-15 (tests/unit/test_spherical.cpp).
// ---------------------------------------------------------------------------------------------

/// sin r and cos r for |r| <= pi/4 (a little beyond is harmless).
GCOMP_HD void det_sincos_kernel(double r, double& s, double& c) {
  const double z = r * r;
  // (-1)^k / (2k+1)!, k = 1..11, and (-1)^k / (2k)!, k = 2..11. 19!, 21!, 22! and 23! are not
  // exact doubles; their terms are below 1e-19 relative, so the rounding of the literal is moot.
  double ps = -1.0 / 25852016738884976640000.0;
  ps = ps * z + 1.0 / 51090942171709440000.0;
  ps = ps * z - 1.0 / 121645100408832000.0;
  ps = ps * z + 1.0 / 355687428096000.0;
  ps = ps * z - 1.0 / 1307674368000.0;
  ps = ps * z + 1.0 / 6227020800.0;
  ps = ps * z - 1.0 / 39916800.0;
  ps = ps * z + 1.0 / 362880.0;
  ps = ps * z - 1.0 / 5040.0;
  ps = ps * z + 1.0 / 120.0;
  ps = ps * z - 1.0 / 6.0;
  s = r + (r * z) * ps;
  double pc = -1.0 / 1124000727777607680000.0;
  pc = pc * z + 1.0 / 2432902008176640000.0;
  pc = pc * z - 1.0 / 6402373705728000.0;
  pc = pc * z + 1.0 / 20922789888000.0;
  pc = pc * z - 1.0 / 87178291200.0;
  pc = pc * z + 1.0 / 479001600.0;
  pc = pc * z - 1.0 / 3628800.0;
  pc = pc * z + 1.0 / 40320.0;
  pc = pc * z - 1.0 / 720.0;
  pc = pc * z + 1.0 / 24.0;
  c = 1.0 - (0.5 * z - (z * z) * pc);
}

/// Applies quadrant k (mod 4) to sin r and cos r: sin/cos of (k pi/2 + r).
GCOMP_HD void det_sincos_quadrant(int64_t k, double sr, double cr, double& s, double& c) {
  switch (static_cast<int>(k & 3)) {
    case 0:
      s = sr;
      c = cr;
      break;
    case 1:
      s = cr;
      c = -sr;
      break;
    case 2:
      s = -sr;
      c = -cr;
      break;
    default:
      s = -cr;
      c = sr;
      break;
  }
}

/// sin x and cos x for finite |x| <= 8e5 (k = round(2x/pi) < 2^19, so the three-part Cody-Waite
/// reduction is exact to ~2^-120 absolute). Larger |x| loses accuracy gradually.
GCOMP_HD void det_sincos(double x, double& s, double& c) {
  constexpr double kTwoOverPi = 0.6366197723675814;
  constexpr double kPio2_1 = 1.5707963267341256;      // 0x1.921fb544p+0: pi/2, first 33 bits
  constexpr double kPio2_2 = 6.077100506303966e-11;   // 0x1.0b4611a6p-34: next 33 bits
  constexpr double kPio2_3 = 2.0222662487959506e-21;  // 0x1.3198a2e037073p-69: the rest, rounded
  const double kf = x * kTwoOverPi;
  const int64_t k = static_cast<int64_t>(kf < 0.0 ? kf - 0.5 : kf + 0.5);
  const double kd = static_cast<double>(k);
  const double r = ((x - kd * kPio2_1) - kd * kPio2_2) - kd * kPio2_3;
  double sr, cr;
  det_sincos_kernel(r, sr, cr);
  det_sincos_quadrant(k, sr, cr, s, c);
}

GCOMP_HD double det_sin(double x) {
  double s, c;
  det_sincos(x, s, c);
  return s;
}

GCOMP_HD double det_cos(double x) {
  double s, c;
  det_sincos(x, s, c);
  return c;
}

/// sin(2 pi t) and cos(2 pi t) for |t| < 2^50 ("turns"). 4t and its reduction 4t - k are exact, so
/// the only rounding before the polynomial is r = f * pi/2: no reduction error at all. Used by the
/// Box-Muller transform, whose angle is 2 pi times a uniform.
GCOMP_HD void det_sincos_turns(double t, double& s, double& c) {
  constexpr double kPio2 = 1.5707963267948966;
  const double v = 4.0 * t;
  const int64_t k = static_cast<int64_t>(v < 0.0 ? v - 0.5 : v + 0.5);
  const double f = v - static_cast<double>(k);  // exact, |f| <= 1/2
  double sr, cr;
  det_sincos_kernel(f * kPio2, sr, cr);
  det_sincos_quadrant(k, sr, cr, s, c);
}

}  // namespace gcomp::detail
