// SPDX-License-Identifier: Apache-2.0
/// @file half.hpp
/// @brief bfloat16 and IEEE binary16 (fp16) to float conversions, exact, for host and device.
/// Gradients may arrive in 16-bit formats; gcomp widens them on input and keeps every memory
/// (EF errors, DIANA shifts, momentum) in fp32 or wider.
#pragma once

#include <gcomp/detail/hd.hpp>

namespace gcomp::detail {

/// bfloat16 bits to float: the upper half of a float (exact, NaN and Inf kept).
GCOMP_HD float bf16_to_float(uint16_t h) { return bits_float(static_cast<uint32_t>(h) << 16); }

/// IEEE binary16 bits to float (exact for every value: normals, subnormals, zeros, Inf, NaN).
GCOMP_HD float f16_to_float(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  const uint32_t exp = (h >> 10) & 0x1fu;
  uint32_t mant = h & 0x3ffu;
  if (exp == 0x1fu) return bits_float(sign | 0x7f800000u | (mant << 13));  // Inf / NaN
  if (exp != 0) return bits_float(sign | ((exp + 112u) << 23) | (mant << 13));
  if (mant == 0) return bits_float(sign);  // +-0
  // Subnormal: value = mant * 2^-24; normalise.
  int e = -1;
  do {
    mant <<= 1;
    ++e;
  } while ((mant & 0x400u) == 0);
  return bits_float(sign | ((static_cast<uint32_t>(112 - e)) << 23) | ((mant & 0x3ffu) << 13));
}

}  // namespace gcomp::detail
