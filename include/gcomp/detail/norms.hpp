// SPDX-License-Identifier: Apache-2.0
/// @file norms.hpp
/// @brief Block scale finalisation: from a block's reduced value (reduce.hpp) to the fp32 scale
/// that goes on the wire. Shared by the CPU codecs and the kernels.
#pragma once

#include <gcomp/detail/detmath.hpp>
#include <gcomp/detail/hd.hpp>

#include <cmath>

namespace gcomp::detail {

/// Norm kinds, numbered as gcomp::Norm.
enum : uint32_t { kNormL1 = 1, kNormL2 = 2, kNormLinf = 3, kNormLp = 4 };

/// The fp32 norm from the reduced value: l1 sum, l2 sqrt(sum of squares), l_inf max,
/// l_p (sum |x|^p)^(1/p). Non-finite inputs give a non-finite result.
GCOMP_HD float finish_norm(uint32_t norm, double reduced, double p) {
  switch (norm) {
    case kNormL2: return static_cast<float>(::sqrt(reduced));
    case kNormLp:
      if (!(reduced < bits_double(0x7ff0000000000000ull))) return static_cast<float>(reduced);
      return static_cast<float>(det_pow(reduced, 1.0 / p));
    default: return static_cast<float>(reduced);
  }
}

/// The scaled-sign scale: mean |x| over the block, rounded once.
GCOMP_HD float finish_mean_abs(double abs_sum, int64_t len) {
  return len > 0 ? static_cast<float>(abs_sum / static_cast<double>(len)) : 0.0f;
}

/// TernGrad scale (§3.1): max |g|, or with clipping min(c * sigma, max |g|) where sigma is the
/// population standard deviation; falls back to max |g| when c * sigma = 0.
GCOMP_HD float terngrad_scale(float max_abs, double centered_sq_sum, int64_t len, double clip) {
  if (clip <= 0.0 || len == 0) return max_abs;
  const double sigma = ::sqrt(centered_sq_sum / static_cast<double>(len));
  const float cs = static_cast<float>(clip * sigma);
  if (!(cs > 0.0f) || cs > max_abs) return max_abs;
  return cs;
}

}  // namespace gcomp::detail
