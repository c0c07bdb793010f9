// SPDX-License-Identifier: Apache-2.0
/// @file detmath.hpp
/// @brief log, exp and pow in double from + - * / only, so host and device agree bit for bit.
///
/// Math libraries round transcendentals differently on the CPU and the GPU. The l_p norms with a
/// general p need x^p, so gcomp carries its own: relative error below 1e-15 on normal inputs, and
/// exactly the same bits wherever it is compiled (contraction is off in every gcomp build).
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
  if (e == 0) {  // subnormal: scale into the normal range first
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

}  // namespace gcomp::detail
