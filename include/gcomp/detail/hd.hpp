// SPDX-License-Identifier: Apache-2.0
/// @file hd.hpp
/// @brief GCOMP_HD: `__host__ __device__ inline` under nvcc, `inline` under a host compiler.
///
/// Every function in include/gcomp/detail is written once with this macro and compiled by both
/// g++ (CPU reference codecs) and nvcc (kernels). Rules for these headers (STYLE.md §2): portable
/// integer math only, correctly rounded float operations (+ - * / sqrt), no transcendentals from a
/// math library, no CUDA intrinsics. Contraction is disabled by the build on both compilers.
#pragma once

#include <cstdint>

#if defined(__CUDACC__)
#define GCOMP_HD __host__ __device__ inline
#define GCOMP_HD_CONSTEXPR __host__ __device__ constexpr
#else
#define GCOMP_HD inline
#define GCOMP_HD_CONSTEXPR constexpr
#endif

namespace gcomp::detail {

/// Bit pattern of a float (no type punning through unions).
GCOMP_HD uint32_t float_bits(float f) {
  uint32_t u;
  __builtin_memcpy(&u, &f, sizeof u);
  return u;
}

GCOMP_HD float bits_float(uint32_t u) {
  float f;
  __builtin_memcpy(&f, &u, sizeof f);
  return f;
}

GCOMP_HD uint64_t double_bits(double d) {
  uint64_t u;
  __builtin_memcpy(&u, &d, sizeof u);
  return u;
}

GCOMP_HD double bits_double(uint64_t u) {
  double d;
  __builtin_memcpy(&d, &u, sizeof d);
  return d;
}

/// |f| by clearing the sign bit (exact, also for -0 and NaN payloads).
GCOMP_HD float abs_f(float f) { return bits_float(float_bits(f) & 0x7fffffffu); }

/// True for every value except NaN and +-Inf.
GCOMP_HD bool is_finite_f(float f) { return (float_bits(f) & 0x7f800000u) != 0x7f800000u; }

/// True when the sign bit is set and the value is not zero (so -0 counts as non-negative).
GCOMP_HD bool is_negative_f(float f) { return f < 0.0f; }

GCOMP_HD int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

/// ceil(log2(v)) for v >= 1; 0 for v <= 1.
GCOMP_HD uint32_t ceil_log2_u64(uint64_t v) {
  uint32_t bits = 0;
  uint64_t p = 1;
  while (p < v) {
    p <<= 1;
    ++bits;
  }
  return bits;
}

}  // namespace gcomp::detail
