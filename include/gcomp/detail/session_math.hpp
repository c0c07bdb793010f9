// SPDX-License-Identifier: Apache-2.0
/// @file session_math.hpp
/// @brief Element math of the fp32 Session backends (host-f32 loops and the CUDA kernels of
/// cuda/session/), written once so that both round identically (docs/algorithms.md "Backends").
///
/// Every multiply and add is a separate, correctly rounded fp32 operation: the build disables
/// contraction on both compilers (-ffp-contract=off, nvcc --fmad=false), and the device side uses
/// the explicit round-to-nearest intrinsics as well, so no multiply-add is ever fused.
#pragma once

#include <gcomp/detail/half.hpp>
#include <gcomp/detail/hd.hpp>

namespace gcomp::detail {

/// a * b, rounded once to fp32 (never fused with a following add).
GCOMP_HD float mul_rn(float a, float b) {
#if defined(__CUDA_ARCH__)
  return __fmul_rn(a, b);
#else
  return a * b;
#endif
}

/// a + b, rounded once to fp32.
GCOMP_HD float add_rn(float a, float b) {
#if defined(__CUDA_ARCH__)
  return __fadd_rn(a, b);
#else
  return a + b;
#endif
}

/// dst = a * x + b * y: two products, then their sum (three roundings). With a == 1 (or b == 1)
/// the product is exact, so this is also x + b * y.
GCOMP_HD float lincomb_f(float a, float x, float b, float y) { return add_rn(mul_rn(a, x), mul_rn(b, y)); }

/// The DIANA difference g - h as the cuda encoders form it in their loads (cuda/common/
/// device_types.cuh `Input`, which forms a x + b y): lincomb_f(1, g, -1, h). Both products are
/// exact and g + (-h) is g - h in IEEE arithmetic, so this is the CPU's delta buffer bit for bit
/// (signed zeros and subnormals included; a NaN stays a NaN). Tested: tests/unit/test_encode_inputs.cpp.
GCOMP_HD float diana_delta_f(float g, float h) { return lincomb_f(1.0f, g, -1.0f, h); }

/// The signSGD majority vote of a sum of signs, times lr (spec §3.3): tie -> 0 or +1.
GCOMP_HD float vote_f(float acc, float lr, bool tie_to_zero) {
  const float v = acc > 0.0f ? 1.0f : (acc < 0.0f ? -1.0f : (tie_to_zero ? 0.0f : 1.0f));
  return mul_rn(lr, v);
}

/// u = b (a s): the products of scale(t, a, s) then scale(u, b, t), t not stored (decode_reduce_scale
/// with u: the mean of the decoded messages, then the step's factor).
GCOMP_HD float scale_twice_f(float a, float b, float s) { return mul_rn(b, mul_rn(a, s)); }

/// w = y + a s: scale(t, a, s) then lincomb(w, 1, y, 1, t), t not stored (decode_mean_add: the
/// server error plus the mean of the decoded messages).
GCOMP_HD float mean_add_f(float y, float a, float s) { return lincomb_f(1.0f, y, 1.0f, mul_rn(a, s)); }

/// DIANA's server step on one element: g = h + mean and h_out = h + alpha mean, mean = a s (s the
/// sum of the decoded messages): scale(mean, a, s), lincomb(g, 1, h, 1, mean) and
/// lincomb(h_out, 1, h, alpha, mean), mean not stored.
struct DianaServer {
  float g;      ///< g^ = h + mean
  float h_out;  ///< the new server shift
};
GCOMP_HD DianaServer diana_server_f(float h, float a, float alpha, float s) {
  const float mean = mul_rn(a, s);
  return DianaServer{lincomb_f(1.0f, h, 1.0f, mean), lincomb_f(1.0f, h, alpha, mean)};
}

/// Non-finite entries become +0 (NonFinitePolicy::kZero); finite ones are kept bit for bit.
GCOMP_HD float zero_nonfinite_f(float v) { return is_finite_f(v) ? v : 0.0f; }

}  // namespace gcomp::detail
