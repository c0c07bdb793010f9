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

/// a - b, rounded once to fp32 (the DIANA difference g - h).
GCOMP_HD float sub_rn(float a, float b) {
#if defined(__CUDA_ARCH__)
  return __fsub_rn(a, b);
#else
  return a - b;
#endif
}

/// dst = a * x + b * y: two products, then their sum (three roundings). With a == 1 (or b == 1)
/// the product is exact, so this is also x + b * y.
GCOMP_HD float lincomb_f(float a, float x, float b, float y) { return add_rn(mul_rn(a, x), mul_rn(b, y)); }

/// What an encoder of the cuda backend compresses, formed as it loads its operands (cuda/common/
/// device_types.cuh `Input`), so that no pass stores it first: x itself; the DIANA difference
/// x - y (g - h, the single rounding of the CPU's delta buffer); or p = lincomb_f(a, x, b, y) (the
/// p of EF-SGD, hessian-ec and the two-way workers: the bits lincomb() would have stored).
enum class InputForm : uint32_t { kPlain = 0, kDiff = 1, kLincomb = 2 };

/// The element of that input from x and y (y, a and b unused where the form does not read them).
GCOMP_HD float input_f(InputForm form, float x, float y, float a, float b) {
  switch (form) {
    case InputForm::kDiff: return sub_rn(x, y);
    case InputForm::kLincomb: return lincomb_f(a, x, b, y);
    default: return x;
  }
}

/// The signSGD majority vote of a sum of signs, times lr (spec §3.3): tie -> 0 or +1.
GCOMP_HD float vote_f(float acc, float lr, bool tie_to_zero) {
  const float v = acc > 0.0f ? 1.0f : (acc < 0.0f ? -1.0f : (tie_to_zero ? 0.0f : 1.0f));
  return mul_rn(lr, v);
}

/// Non-finite entries become +0 (NonFinitePolicy::kZero); finite ones are kept bit for bit.
GCOMP_HD float zero_nonfinite_f(float v) { return is_finite_f(v) ? v : 0.0f; }

}  // namespace gcomp::detail
