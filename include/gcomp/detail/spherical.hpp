// SPDX-License-Identifier: Apache-2.0
/// @file spherical.hpp
/// @brief Spherical codebook math (spec/ALGORITHMS.md §5.2(b); docs/wire-format.md §3.8), shared
/// by the CPU reference codec and the kernels: codebook normals, scores, decoded values, and the
/// alignment constant beta(m, B) by quadrature.
///
/// Codebook of a block with first global element index `start` and length m, B index bits:
/// coordinate k of codeword j (0 <= j < 2^B, 0 <= k < m) is the standard normal with codebook
/// index t = start * 2^B + j * m + k. Blocks do not overlap, so t is injective over a message
/// (block l's indices lie in [start_l 2^B, (start_l + m_l) 2^B)). Normal t comes from the Philox
/// block of q = t / 4 in stream kStreamCodebook (+ the key's stream offset): words 2p and 2p + 1
/// (p = (t mod 4) / 2) give u1 = (w_2p + 1/2) 2^-32 in (0, 1) and u2 = w_{2p+1} 2^-32 in [0, 1),
/// and Box-Muller gives r cos(2 pi u2) for even t and r sin(2 pi u2) for odd t, r = sqrt(-2 ln u1).
/// All arithmetic is binary64 with + - * / sqrt and detmath.hpp, so every backend draws the same
/// codebook bit for bit.
#pragma once

#include <gcomp/detail/detmath.hpp>
#include <gcomp/detail/hd.hpp>
#include <gcomp/detail/philox.hpp>

#include <cmath>

namespace gcomp::detail {

/// Codebook index of coordinate k of codeword j in the block starting at global element `start`.
GCOMP_HD uint64_t codebook_index(uint64_t start, uint32_t bits, uint64_t j, uint64_t m, uint64_t k) {
  return (start << bits) + j * m + k;
}

/// The Box-Muller pair of Philox words (w1, w2): (r cos(2 pi u2), r sin(2 pi u2)).
GCOMP_HD void box_muller(uint32_t w1, uint32_t w2, double& n_cos, double& n_sin) {
  const double u1 = (static_cast<double>(w1) + 0.5) * 2.3283064365386963e-10;  // 2^-32
  const double u2 = static_cast<double>(w2) * 2.3283064365386963e-10;
  const double r = ::sqrt(-2.0 * det_log(u1));
  double s, c;
  det_sincos_turns(u2, s, c);
  n_cos = r * c;
  n_sin = r * s;
}

/// The 4 codebook normals of q = t / 4: out[i] is normal 4q + i.
GCOMP_HD void codebook_normals4(const RngKey& key, uint64_t q, double* out) {
  const Philox4x32 w = philox_block(key, kStreamCodebook, q);
  box_muller(w.v[0], w.v[1], out[0], out[1]);
  box_muller(w.v[2], w.v[3], out[2], out[3]);
}

/// One codebook normal (index t).
GCOMP_HD double codebook_normal(const RngKey& key, uint64_t t) {
  const Philox4x32 w = philox_block(key, kStreamCodebook, t >> 2);
  const uint32_t p = static_cast<uint32_t>(t & 2u);
  double c, s;
  box_muller(w.v[p], w.v[p + 1u], c, s);
  return (t & 1u) ? s : c;
}

/// Score of a codeword with dot = sum_k g_k y_k and norm2 = sum_k g_k^2 (both summed in
/// increasing k): dot / sqrt(norm2), and 0 for the (measure-zero) all-zero codeword. The encoder
/// keeps the first j with the largest score (ties to the smaller j).
GCOMP_HD double codeword_score(double dot, double norm2) { return norm2 > 0.0 ? dot / ::sqrt(norm2) : 0.0; }

/// Decoded coordinate: (factor * g_k / sqrt(norm2)) rounded once to f32, with factor = nu / beta
/// (nu for `unscaled`); 0 for the all-zero codeword.
GCOMP_HD float spherical_value(double factor, double g, double norm2) {
  if (!(norm2 > 0.0)) return 0.0f;
  return static_cast<float>(factor * (g / ::sqrt(norm2)));
}

// ---------------------------------------------------------------------------------------------
// beta(m, B) = E max_j <c_j, u> = 1 - int_{-1}^{1} F(t)^(2^B) dt, F(t) = I_{(1+t)/2}(a, a),
// a = (m - 1)/2 (§5.2(b)). Host-side constant, computed with the portable math above so every
// machine gets the same bits.
// ---------------------------------------------------------------------------------------------

/// log Gamma(z) for z > 0: upward recurrence to z >= 10, then Stirling's series (error < 1e-15).
GCOMP_HD double det_lgamma(double z) {
  double shift = 0.0;
  while (z < 10.0) {
    shift = shift + det_log(z);
    z = z + 1.0;
  }
  const double zi = 1.0 / z;
  const double zi2 = zi * zi;
  double series = 1.0 / 156.0;
  series = series * zi2 - 691.0 / 360360.0;
  series = series * zi2 + 1.0 / 1188.0;
  series = series * zi2 - 1.0 / 1680.0;
  series = series * zi2 + 1.0 / 1260.0;
  series = series * zi2 - 1.0 / 360.0;
  series = series * zi2 + 1.0 / 12.0;
  return ((z - 0.5) * det_log(z) - z + 0.91893853320467274178) + series * zi - shift;
}

/// Continued fraction of the incomplete beta function (modified Lentz), for x < (a+1)/(a+b+2).
GCOMP_HD double incbeta_cf(double a, double b, double x) {
  constexpr double kTiny = 1e-300;
  constexpr double kEps = 1e-16;
  const double qab = a + b, qap = a + 1.0, qam = a - 1.0;
  double c = 1.0;
  double d = 1.0 - qab * x / qap;
  if (d < kTiny && d > -kTiny) d = kTiny;
  d = 1.0 / d;
  double h = d;
  for (int i = 1; i <= 100000; ++i) {
    const double m = static_cast<double>(i);
    const double m2 = 2.0 * m;
    double aa = m * (b - m) * x / ((qam + m2) * (a + m2));
    d = 1.0 + aa * d;
    if (d < kTiny && d > -kTiny) d = kTiny;
    c = 1.0 + aa / c;
    if (c < kTiny && c > -kTiny) c = kTiny;
    d = 1.0 / d;
    h = h * (d * c);
    aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2));
    d = 1.0 + aa * d;
    if (d < kTiny && d > -kTiny) d = kTiny;
    c = 1.0 + aa / c;
    if (c < kTiny && c > -kTiny) c = kTiny;
    d = 1.0 / d;
    const double del = d * c;
    h = h * del;
    if (del - 1.0 < kEps && 1.0 - del < kEps) break;
  }
  return h;
}

/// Regularized incomplete beta I_x(a, b) for a, b > 0 and x in [0, 1]; `xc` = 1 - x given
/// separately so callers can pass it without cancellation. `log_beta` = log B(a, b).
GCOMP_HD double incbeta_reg(double a, double b, double x, double xc, double log_beta) {
  if (x <= 0.0) return 0.0;
  if (xc <= 0.0) return 1.0;
  const double front = det_exp(a * det_log(x) + b * det_log(xc) - log_beta);
  if (x < (a + 1.0) / (a + b + 2.0)) return front * incbeta_cf(a, b, x) / a;
  return 1.0 - front * incbeta_cf(b, a, xc) / b;
}

/// CDF of one coordinate of a uniform point on S^(m-1), m >= 2, at t = sin(phi):
/// I_{(1+t)/2}((m-1)/2, (m-1)/2). `log_beta` = log B(a, a), a = (m-1)/2.
GCOMP_HD double sphere_coord_cdf_sincos(double a, double log_beta, double s, double c) {
  // x = (1 + s)/2 and 1 - x = (1 - s)/2, the smaller of the two via c^2 / (2 (1 + |s|)).
  const double small = (c * c) / (2.0 * (1.0 + (s < 0.0 ? -s : s)));
  const double x = s < 0.0 ? small : 0.5 * (1.0 + s);
  const double xc = s < 0.0 ? 0.5 * (1.0 - s) : small;
  return incbeta_reg(a, a, x, xc, log_beta);
}

/// F(t) for t in [-1, 1], m >= 2.
GCOMP_HD double sphere_coord_cdf(int64_t m, double t) {
  const double a = 0.5 * static_cast<double>(m - 1);
  const double lb = 2.0 * det_lgamma(a) - det_lgamma(2.0 * a);
  const double c = ::sqrt((1.0 - t) * (1.0 + t));
  return sphere_coord_cdf_sincos(a, lb, t, c);
}

/// beta(m, B). m = 1: codewords are +-1, beta = 1 - 2^(1 - 2^B). m >= 2: composite Simpson over
/// t = sin(phi), phi in [-pi/2, pi/2] (smooth integrand G(phi)^(2^B) cos(phi) for every m), with
/// 2^15 intervals: agrees with the spec's reference values and with Monte Carlo
/// (tests/unit/test_spherical.cpp).
GCOMP_HD double spherical_beta(int64_t m, uint32_t bits) {
  if (m <= 0) return 1.0;
  if (m == 1) {
    double p = 0.5;  // 2^(-2^B) by B squarings of 1/2, then times 2
    for (uint32_t i = 0; i < bits; ++i) p = p * p;
    return 1.0 - 2.0 * p;
  }
  const double a = 0.5 * static_cast<double>(m - 1);
  const double lb = 2.0 * det_lgamma(a) - det_lgamma(2.0 * a);
  constexpr int64_t kIntervals = int64_t{1} << 15;
  constexpr double kPi = 3.141592653589793;
  const double h = kPi / static_cast<double>(kIntervals);
  double sum = 0.0;
  // Endpoints: phi = -pi/2 gives F = 0 (weight 0); phi = pi/2 gives cos = 0 (weight 0).
  for (int64_t i = 1; i < kIntervals; ++i) {
    const double phi = -0.5 * kPi + static_cast<double>(i) * h;
    double s, c;
    det_sincos(phi, s, c);
    double f = sphere_coord_cdf_sincos(a, lb, s, c);
    for (uint32_t b = 0; b < bits; ++b) f = f * f;
    sum = sum + ((i & 1) ? 4.0 : 2.0) * f * c;
  }
  return 1.0 - sum * h / 3.0;
}

}  // namespace gcomp::detail
