// SPDX-License-Identifier: Apache-2.0
/// @file reduce.hpp
/// @brief The one summation order of every per-block reduction (norms, scales, means).
///
/// Float sums depend on their order, and the CPU and GPU paths must produce the same scale bits.
/// A block [begin, begin + len) is reduced in this fixed order, in double precision:
///  1. Split the block into tiles of kTileElems consecutive elements (the last tile may be short).
///  2. In a tile, lane l (0 <= l < kLanes) accumulates the terms of elements l, l + kLanes,
///     l + 2 kLanes, ... sequentially, starting from the identity: acc = combine(acc, term(x)).
///  3. The kLanes lane values are combined by the halving tree: for s = kLanes/2, ..., 2, 1:
///     lane[i] = combine(lane[i], lane[i + s]) for i < s. lane[0] is the tile value.
///  4. The tile values are combined by the same halving tree, padded with the identity to the next
///     power of two. Its root is the block value (the identity for an empty block).
/// A CUDA block of kLanes threads reproduces steps 2-3 with a shared-memory tree; step 4 is the
/// same tree over a buffer of tile values. Addition of the identity 0.0 is exact, so padding never
/// changes a bit.
#pragma once

#include <gcomp/detail/detmath.hpp>
#include <gcomp/detail/hd.hpp>

namespace gcomp::detail {

inline constexpr int kLanes = 256;
inline constexpr int64_t kTileElems = 4096;
static_assert(kTileElems % kLanes == 0, "a tile is a whole number of lane strides");

/// Sum of |x| (l1 norm, sign scale).
struct AbsSumOp {
  GCOMP_HD double identity() const { return 0.0; }
  GCOMP_HD double term(float x) const { return static_cast<double>(abs_f(x)); }
  GCOMP_HD double combine(double a, double b) const { return a + b; }
};

/// Sum of x^2 (l2 norm). A float squared is exact in double, and no float input overflows it.
struct SquareSumOp {
  GCOMP_HD double identity() const { return 0.0; }
  GCOMP_HD double term(float x) const {
    const double d = static_cast<double>(x);
    return d * d;
  }
  GCOMP_HD double combine(double a, double b) const { return a + b; }
};

/// Plain sum of x (means).
struct SumOp {
  GCOMP_HD double identity() const { return 0.0; }
  GCOMP_HD double term(float x) const { return static_cast<double>(x); }
  GCOMP_HD double combine(double a, double b) const { return a + b; }
};

/// Sum of (x - mean)^2 (population variance numerator).
struct CenteredSquareSumOp {
  double mean;
  GCOMP_HD double identity() const { return 0.0; }
  GCOMP_HD double term(float x) const {
    const double c = static_cast<double>(x) - mean;
    return c * c;
  }
  GCOMP_HD double combine(double a, double b) const { return a + b; }
};

/// Sum of |x|^p (general l_p norm), with the portable power of detmath.hpp.
struct PowSumOp {
  double p;
  GCOMP_HD double identity() const { return 0.0; }
  GCOMP_HD double term(float x) const {
    if (!is_finite_f(x)) return bits_double(0x7ff0000000000000ull);
    return det_pow(static_cast<double>(abs_f(x)), p);
  }
  GCOMP_HD double combine(double a, double b) const { return a + b; }
};

/// max |x|, with NaN and Inf mapped to +Inf so a non-finite block always has a non-finite scale.
struct AbsMaxOp {
  GCOMP_HD double identity() const { return 0.0; }
  GCOMP_HD double term(float x) const {
    if (!is_finite_f(x)) return bits_double(0x7ff0000000000000ull);
    return static_cast<double>(abs_f(x));
  }
  GCOMP_HD double combine(double a, double b) const { return a < b ? b : a; }
};

/// Step 2 for one lane: sequential accumulation over the lane's elements of one tile.
template <class Op>
GCOMP_HD double lane_accumulate(const Op& op, const float* tile, int64_t tile_len, int lane) {
  double acc = op.identity();
  for (int64_t j = lane; j < tile_len; j += kLanes) acc = op.combine(acc, op.term(tile[j]));
  return acc;
}

/// Steps 3 and 4: the halving tree over `count` values (count a power of two), in place.
template <class Op>
GCOMP_HD double tree_combine_pow2(const Op& op, double* values, int64_t count) {
  for (int64_t s = count / 2; s >= 1; s /= 2)
    for (int64_t i = 0; i < s; ++i) values[i] = op.combine(values[i], values[i + s]);
  return values[0];
}

GCOMP_HD int64_t next_pow2(int64_t v) {
  int64_t p = 1;
  while (p < v) p *= 2;
  return p;
}

}  // namespace gcomp::detail
