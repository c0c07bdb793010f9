// SPDX-License-Identifier: Apache-2.0
// Natural compression (spec §5.3). Payload (host/codecs/simple_codecs.cpp): ceil(n/32) sign words,
// then n exponent codes (one byte each, natural_exponent_code) padded with zeros to 4 bytes.
// Quad layout (cuda/common/lanes.hpp): a thread draws one Philox block for its 4 elements
// (natural_codes4), writes their 4 codes as one little-endian word, and the 8 lanes of a 32-element
// group OR their sign nibbles into the group's sign word.
#pragma once

#include <type_traits>
#include <gcomp/detail/fused_memory.hpp>

#include "cuda/common/device_types.cuh"

#include <gcomp/detail/codec_math.hpp>
#include <gcomp/detail/payload_rules.hpp>
#include <gcomp/detail/philox.hpp>

namespace gcomp::cuda::detail {

struct NaturalParams {
  int64_t n;
  int64_t words;  ///< ceil(n / 32)
};

/// kFuse: 0 plain, 1 EF (e = p - v), 2 DIANA (mem = in.y + alpha v: h_out, or h in place). kCheck: the non-finite
/// check folded into this pass (plain encode; the payload's content is then unspecified); the fused
/// variants run check_finite_kernel before, so that nothing is written on a non-finite input.
template <gcomp::detail::FuseMode kFuse, bool kCheck>
__global__ void __launch_bounds__(kThreads)
    encode_natural_kernel(NaturalParams d, Input in, gcomp::detail::RngKey key, uint8_t* __restrict__ payload,
                          float* mem, float alpha, DeviceStatus* status) {
  using namespace gcomp::detail;
  if (status_failed(status)) return;
  uint32_t* signs = reinterpret_cast<uint32_t*>(payload);
  uint32_t* codes = reinterpret_cast<uint32_t*>(payload + 4 * d.words);
  const int lane = static_cast<int>(threadIdx.x & 31u);
  const bool vec = in.aligned16() && (kFuse == gcomp::detail::FuseMode::kNone || aligned16(mem));
  const auto span = [&](int64_t s, auto whole) {
    constexpr bool kWhole = decltype(whole)::value;
    const int64_t first = s * lanes::kSpanElems + lanes::kQuadElems * lane;
    const int live = kWhole ? lanes::kQuadElems : lanes::quad_live(first, d.n);
    [[maybe_unused]] Quad h{{0.0f, 0.0f, 0.0f, 0.0f}};
    const Quad x = load_encode_quad<kFuse>(in, first, live, kWhole, h);
    uint32_t code[lanes::kQuadElems] = {0u, 0u, 0u, 0u};
    uint32_t nib = 0;
    if (live > 0) {
      natural_codes4(x.v, philox_block(key, kStreamElement, static_cast<uint64_t>(first) / lanes::kQuadElems), code);
#pragma unroll
      for (int j = 0; j < lanes::kQuadElems; ++j) {
        if (j >= live) {
          code[j] = 0u;
          continue;
        }
        if (code[j] != 0u && x.v[j] < 0.0f) nib |= 1u << j;
        if constexpr (kCheck) {
          if (!is_finite_f(x.v[j])) raise_status(status, gcompErrorNonFinite, static_cast<uint64_t>(first + j));
        }
      }
    }
    const uint32_t word = gather_nibbles(nib, lane);
    const int64_t w = first / kGroupElems;
    if (lane % lanes::kLanesPerGroup == 0 && w < d.words) signs[w] = word;
    if (live > 0) codes[first / lanes::kQuadElems] = code[0] | (code[1] << 8) | (code[2] << 16) | (code[3] << 24);
    store_fused_memory<kFuse>(mem, first, live, kWhole, x, h, alpha,
                              [&](int j) { return natural_value(code[j], ((nib >> j) & 1u) != 0u); });
  };
  for_each_span(d.n, vec, span);
}

/// Quad decoder: the quad's sign nibble and its code word, one read each, with NaturalCodec::
/// validate's checks on them (no code 255, no sign on a zero code, zero padding bits and bytes).
struct NaturalQuadDecoder {
  NaturalParams d;
  __device__ void operator()(const uint8_t* payload, int64_t first, int live, int lane, uint64_t index_base,
                             DeviceStatus* status, float (&v)[lanes::kQuadElems]) const {
    const int64_t w = first / gcomp::detail::kGroupElems;
    if (w >= d.words) return;
    const uint32_t nib = lanes::nibble_of(reinterpret_cast<const uint32_t*>(payload)[w], lane);
    uint32_t codes = 0;
    if (first < 4 * ((d.n + 3) / 4)) codes = reinterpret_cast<const uint32_t*>(payload + 4 * d.words)[first / 4];
    const uint32_t dead_codes = live >= 4 ? 0u : (live == 0 ? codes : codes >> (8 * live));
    if ((nib >> live) != 0u || dead_codes != 0u)
      raise_status(status, gcompErrorCorruptPayload, index_base + static_cast<uint64_t>(d.n));
#pragma unroll
    for (int j = 0; j < lanes::kQuadElems; ++j)
      if (j < live) {
        const uint32_t code = (codes >> (8 * j)) & 0xffu;
        const bool negative = ((nib >> j) & 1u) != 0u;
        if (!gcomp::detail::natural_code_ok(code, negative))
          raise_status(status, gcompErrorCorruptPayload, index_base + static_cast<uint64_t>(first + j));
        v[j] = gcomp::detail::natural_value(code, negative);
      }
  }
};

}  // namespace gcomp::cuda::detail
