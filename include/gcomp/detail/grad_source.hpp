// SPDX-License-Identifier: Apache-2.0
/// @file grad_source.hpp
/// @brief The Session's gradient as the cuda kernels load it (docs/gpu.md "Session on the GPU"):
/// fp32, bf16 or f16 elements, widened exactly as they are loaded, and with nonfinite = zero NaN/Inf
/// loaded as +0. The same floats as the widened / zeroed copy the host backends (and the device,
/// where a consumer of the gradient cannot load it) store first: bf16_to_float / f16_to_float
/// (half.hpp), then zero_nonfinite_f (session_math.hpp).
#pragma once

#include <gcomp/detail/half.hpp>
#include <gcomp/detail/hd.hpp>
#include <gcomp/detail/session_math.hpp>

#include <cstdint>

namespace gcomp::detail {

/// How an input is stored and loaded (cuda/common/device_types.cuh `Input::src`): the element
/// type in the low two bits, kSrcZero beside it.
inline constexpr uint32_t kSrcF32 = 0;   ///< fp32, loaded as is
inline constexpr uint32_t kSrcBF16 = 1;  ///< bfloat16 bits, widened exactly (bf16_to_float)
inline constexpr uint32_t kSrcF16 = 2;   ///< IEEE binary16 bits, widened exactly (f16_to_float)
inline constexpr uint32_t kSrcTypeMask = 3;
inline constexpr uint32_t kSrcZero = 4;  ///< a NaN / Inf element loads as +0 (zero_nonfinite_f)

/// Bytes of one stored element.
GCOMP_HD uint32_t src_bytes(uint32_t src) { return (src & kSrcTypeMask) == kSrcF32 ? 4u : 2u; }

/// The float of one stored element: `raw` holds its bits (a bf16 / f16 pattern in the low 16 bits,
/// else the fp32 bits), widened exactly, then with kSrcZero a NaN / Inf becomes +0 (finite values,
/// -0 and subnormals included, keep their bits).
GCOMP_HD float src_value(uint32_t raw, uint32_t src) {
  const uint32_t type = src & kSrcTypeMask;
  const auto h = static_cast<uint16_t>(raw);
  const float v = type == kSrcBF16 ? bf16_to_float(h) : (type == kSrcF16 ? f16_to_float(h) : bits_float(raw));
  return (src & kSrcZero) != 0 ? zero_nonfinite_f(v) : v;
}

/// The stored bits of element i of an input stored as `src` at p (src_value's `raw`).
GCOMP_HD uint32_t src_raw(const void* p, uint32_t src, int64_t i) {
  return (src & kSrcTypeMask) == kSrcF32 ? float_bits(static_cast<const float*>(p)[i])
                                         : uint32_t{static_cast<const uint16_t*>(p)[i]};
}

/// Element i of an input stored as `src` at p.
GCOMP_HD float load_src(const void* p, uint32_t src, int64_t i) { return src_value(src_raw(p, src, i), src); }

/// The stored bits (src_value's `raw`) of element j (0..3) of four consecutive 16-bit elements
/// read as one little-endian 64-bit word, as an 8-byte load of them holds it: element j in bits
/// 16 j .. 16 j + 15. src_value(src_raw_in_word(w, j), src) is load_src of that element (the
/// cuda kernels' vector load of a bf16 / f16 quad, cuda/common/device_types.cuh load_view_quad).
GCOMP_HD uint32_t src_raw_in_word(uint64_t word, int j) { return static_cast<uint32_t>(word >> (16 * j)) & 0xffffu; }

}  // namespace gcomp::detail
