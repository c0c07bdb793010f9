// SPDX-License-Identifier: Apache-2.0
// Scaled sign / plain sign (spec §3.2-3.3). Payload (host/codecs/simple_codecs.cpp): [m fp32
// scales if scaled][ceil(n/32) sign words], bit j of word g = element 32 g + j is negative (x < 0;
// zero maps to +). The scales come from cuda/quant/block_reduce.cuh with Finish::kMeanAbs.
#pragma once

#include <type_traits>
#include <gcomp/detail/fused_memory.hpp>

#include "cuda/common/device_types.cuh"

#include <gcomp/detail/codec_math.hpp>
#include <gcomp/detail/payload_rules.hpp>

namespace gcomp::cuda::detail {

struct SignParams {
  BlockMap map;
  const int64_t* blocks;  ///< block offsets (scaled signs)
  int64_t n;
  int64_t num_scales;  ///< 0 for plain signs
};

/// Quad layout (cuda/common/lanes.hpp): a thread tests the 4 elements of one 16-byte load, the 8
/// lanes of a 32-element word OR their nibbles together (3 shuffles) and lane 0 of them writes the
/// word. kFuse: 0 plain, 1 EF (e = p - v), 2 DIANA (mem = in.y + alpha v: h_out, or h in place). kCheck: the
/// non-finite check of plain signs folded into this pass (status gcompErrorNonFinite at the element;
/// the payload's content is then unspecified, see DeviceCodec::encode); scaled signs and the fused
/// variants are checked before (the scale pass, check_finite_kernel), so that nothing is written.
template <gcomp::detail::FuseMode kFuse, bool kCheck>
__global__ void __launch_bounds__(kThreads)
    encode_sign_kernel(SignParams d, Input in, const float* __restrict__ scales, uint8_t* __restrict__ payload,
                       float* mem, float alpha, DeviceStatus* status) {
  using namespace gcomp::detail;
  if (status_failed(status)) return;
  float* out_scales = reinterpret_cast<float*>(payload);
  for (int64_t b = global_thread(); b < d.num_scales; b += grid_threads()) out_scales[b] = scales[b];
  uint32_t* words = reinterpret_cast<uint32_t*>(payload + 4 * d.num_scales);
  const int lane = static_cast<int>(threadIdx.x & 31u);
  const int64_t num_words = ceil_div(d.n, kGroupElems);
  const bool vec = in.aligned16() && (kFuse == gcomp::detail::FuseMode::kNone || aligned16(mem));
  const auto span = [&](int64_t s, auto whole) {
    constexpr bool kWhole = decltype(whole)::value;
    const int64_t first = s * lanes::kSpanElems + lanes::kQuadElems * lane;
    const int live = kWhole ? lanes::kQuadElems : lanes::quad_live(first, d.n);
    [[maybe_unused]] Quad h{{0.0f, 0.0f, 0.0f, 0.0f}};
    const Quad x = load_encode_quad<kFuse>(in, first, live, kWhole, h);
    uint32_t nib = 0;
#pragma unroll
    for (int j = 0; j < lanes::kQuadElems; ++j)
      if (j < live) {
        if (is_negative_f(x.v[j])) nib |= 1u << j;
        if constexpr (kCheck) {
          if (!is_finite_f(x.v[j])) raise_status(status, gcompErrorNonFinite, static_cast<uint64_t>(first + j));
        }
      }
    const uint32_t word = gather_nibbles(nib, lane);
    const int64_t w = first / kGroupElems;
    if (lane % lanes::kLanesPerGroup == 0 && w < num_words) words[w] = word;
    if constexpr (kFuse != gcomp::detail::FuseMode::kNone) {
      int64_t block[lanes::kQuadElems] = {0, 0, 0, 0};
      if (live > 0 && d.num_scales > 0) lanes::quad_blocks(d.map.block_of(first), d.blocks, first, live, block);
      store_fused_memory<kFuse>(mem, first, live, kWhole, x, h, alpha, [&](int j) {
        return sign_value(((nib >> j) & 1u) != 0u, d.num_scales > 0 ? scales[block[j]] : 1.0f);
      });
    }
  };
  for_each_span(d.n, vec, span);
}

/// Quad decoder: one read of the quad's word and scales, with SignCodec::validate's checks on what
/// it read (scales finite, >= 0 and not -0; no bit set for an element past n).
struct SignQuadDecoder {
  SignParams d;
  __device__ void operator()(const uint8_t* payload, int64_t first, int live, int lane, uint64_t index_base,
                             DeviceStatus* status, float (&v)[lanes::kQuadElems]) const {
    using namespace gcomp::detail;
    const int64_t w = first / kGroupElems;
    if (w >= ceil_div(d.n, kGroupElems)) return;
    const uint32_t nib = lanes::nibble_of(reinterpret_cast<const uint32_t*>(payload + 4 * d.num_scales)[w], lane);
    if ((nib >> live) != 0u) raise_status(status, gcompErrorCorruptPayload, index_base + static_cast<uint64_t>(d.n));
    if (live == 0) return;
    const float* scales = reinterpret_cast<const float*>(payload);
    int64_t block[lanes::kQuadElems] = {0, 0, 0, 0};
    if (d.num_scales > 0) lanes::quad_blocks(d.map.block_of(first), d.blocks, first, live, block);
#pragma unroll
    for (int j = 0; j < lanes::kQuadElems; ++j)
      if (j < live) {
        float scale = 1.0f;
        if (d.num_scales > 0) {
          scale = scales[block[j]];
          if (!scale_ok(scale))
            raise_status(status, gcompErrorCorruptPayload, index_base + static_cast<uint64_t>(block[j]));
        }
        v[j] = sign_value(((nib >> j) & 1u) != 0u, scale);
      }
  }
};

}  // namespace gcomp::cuda::detail
