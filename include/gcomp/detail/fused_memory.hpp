// SPDX-License-Identifier: Apache-2.0
/// @file fused_memory.hpp
/// @brief The memory update of a fused encode, defined once for the CPU codecs and every CUDA kernel.
///
/// Error feedback (spec/ALGORITHMS.md §8.2) keeps e = p - C(p); DIANA (§8.1) keeps the shift
/// h = h + alpha C(g - h). Both are one accumulate() per element onto a base (EF: the input p_i,
/// DIANA: the shift h_i) with a weight (EF: -1, DIANA: alpha). Codec::encode_ef / encode_diana
/// pass fused_weight() to decode_accumulate; the fused kernels (cuda/quant, sign, natural,
/// identity, sdither, spherical, grid, topk/randk) call fused_memory(), so both paths round alike.
#pragma once

#include <gcomp/detail/codec_math.hpp>

namespace gcomp::detail {

/// What a fused encode updates besides the payload. The kernels take it as a template or runtime
/// argument; the values are part of no format.
enum class FuseMode : int {
  kNone = 0,   ///< encode only
  kEF = 1,     ///< error feedback: memory = e = p - C(p)
  kDiana = 2,  ///< DIANA: memory = h, h + alpha C(g - h)
};

/// Weight of the decoded value in the update: -1 (EF) or alpha (DIANA).
GCOMP_HD float fused_weight(FuseMode mode, float alpha) { return mode == FuseMode::kEF ? -1.0f : alpha; }

/// The new memory element from its base (EF: p_i; DIANA: h_i) and the decoded value v.
GCOMP_HD float fused_memory(FuseMode mode, float base, float alpha, float v) {
  return accumulate(base, fused_weight(mode, alpha), v);
}

}  // namespace gcomp::detail
