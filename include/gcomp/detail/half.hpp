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

/// IEEE binary16 bits to float (exact for every value: normals, subnormals, zeros, Inf, NaN with
/// its sign and payload). No branch or loop (the cuda kernels that load f16 gradients inline it):
/// normals rebias the exponent, Inf / NaN keep the mantissa bits, and a subnormal (or zero) m *
/// 2^-24 is the integer m converted (exact below 2^24) times 2^-24, whose product is a normal fp32
/// value (>= 2^-24), so no denormal is involved on either side.
GCOMP_HD float f16_to_float(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  const uint32_t em = h & 0x7fffu;                               // exponent and mantissa
  const uint32_t normal = (em + (112u << 10)) << 13;             // exponent 1..30: rebias by 127 - 15
  const uint32_t special = 0x7f800000u | ((em & 0x3ffu) << 13);  // exponent 31: Inf / NaN
#if defined(__CUDA_ARCH__)
  const uint32_t small = float_bits(__fmul_rn(static_cast<float>(em), 0x1p-24f));  // exponent 0
#else
  const uint32_t small = float_bits(static_cast<float>(em) * 0x1p-24f);
#endif
  return bits_float(sign | (em >= 0x7c00u ? special : (em >= 0x400u ? normal : small)));
}

}  // namespace gcomp::detail
