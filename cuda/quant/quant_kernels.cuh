// SPDX-License-Identifier: Apache-2.0
// dither / QSGD (spec §2), terngrad (§3.1) and natural dithering (§5.3): the elementwise quantize
// pass with bit-plane packing, the quad decoder (decode and validation in one read of the payload).
//
// Payload (host/codecs/dense_planes.cpp): m fp32 scales, then ceil(n/32) groups of 1 + nbits words
// (sign plane, level planes), a group being 32 consecutive global element indices.
// Quad layout (cuda/common/lanes.hpp): a thread quantizes the 4 elements 4q .. 4q + 3 from one
// 16-byte load and one Philox block (the group functions dither_quantize4 / natdither_quantize4);
// a warp covers 128 elements, and the 8 lanes of each 32-element group transpose their plane
// nibbles (3 shuffles per 8 planes) so that lane m writes the group's word of plane m.
#pragma once

#include <type_traits>
#include <gcomp/detail/fused_memory.hpp>

#include "cuda/common/device_types.cuh"

#include <gcomp/detail/codec_math.hpp>
#include <gcomp/detail/payload_rules.hpp>
#include <gcomp/detail/philox.hpp>

namespace gcomp::cuda::detail {

struct DenseParams {
  BlockMap map;
  const int64_t* blocks;  ///< num_blocks + 1 block offsets
  int64_t n;
  int64_t num_blocks;
  uint32_t levels;
  int nbits;
  bool natural;  ///< natdither levels instead of uniform levels
};

template <bool kNatural>
__device__ inline float dense_value(uint32_t level, bool negative, float scale, uint32_t levels) {
  if constexpr (kNatural)
    return gcomp::detail::natdither_value(level, negative, scale, levels);
  else
    return gcomp::detail::dither_value(level, negative, scale, levels);
}

/// Quantize pass. kFuse: 0 plain; 1 EF (mem = e: e = p - v); 2 DIANA (mem = h_out, or h = in.y
/// in place: mem = in.y + alpha v). The scales come from the workspace (or the caller: encode_with_scales) and are
/// copied into the payload here, so that a non-finite input (status set by the scale pass) leaves
/// the payload and the memory untouched.
template <bool kNatural, gcomp::detail::FuseMode kFuse>
__global__ void __launch_bounds__(kThreads)
    quantize_planes_kernel(DenseParams d, Input in, const float* __restrict__ scales, gcomp::detail::RngKey key,
                           uint8_t* __restrict__ payload, float* mem, float alpha, const DeviceStatus* status) {
  using namespace gcomp::detail;
  if (status_failed(status)) return;
  float* out_scales = reinterpret_cast<float*>(payload);
  for (int64_t b = global_thread(); b < d.num_blocks; b += grid_threads()) out_scales[b] = scales[b];
  uint32_t* groups = reinterpret_cast<uint32_t*>(payload + 4 * d.num_blocks);
  const int words = group_words(d.nbits);
  const int lane = static_cast<int>(threadIdx.x & 31u);
  const int m = lane % lanes::kLanesPerGroup;
  const int64_t num_groups = ceil_div(d.n, kGroupElems);
  const bool vec = in.aligned16() && (kFuse == gcomp::detail::FuseMode::kNone || aligned16(mem));
  const auto span = [&](int64_t s, auto whole) {
    constexpr bool kWhole = decltype(whole)::value;
    const int64_t first = s * lanes::kSpanElems + lanes::kQuadElems * lane;
    const int live = kWhole ? lanes::kQuadElems : lanes::quad_live(first, d.n);
    [[maybe_unused]] Quad h{{0.0f, 0.0f, 0.0f, 0.0f}};
    const Quad x = load_encode_quad<kFuse>(in, first, live, kWhole, h);
    uint32_t level[lanes::kQuadElems] = {0u, 0u, 0u, 0u};
    bool negative[lanes::kQuadElems] = {false, false, false, false};
    float nu[lanes::kQuadElems] = {0.0f, 0.0f, 0.0f, 0.0f};
    if (live > 0) {
      int64_t block[lanes::kQuadElems];
      lanes::quad_blocks(d.map.block_of(first), d.blocks, first, live, block);
#pragma unroll
      for (int j = 0; j < lanes::kQuadElems; ++j) nu[j] = scales[block[j]];
      const Philox4x32 r = philox_block(key, kStreamElement, static_cast<uint64_t>(first) / lanes::kQuadElems);
      lanes::quantize_quad<kNatural>(x.v, nu, d.levels, r, live, level, negative);
    }
    const int64_t group = first / kGroupElems;
    for (int c = 0; c < words; c += lanes::kPlanesPerPass) {  // warp-uniform: every lane shuffles
      const uint32_t w = transpose_nibbles(lanes::plane_nibbles(level, negative, c, words), lane);
      if (c + m < words && group < num_groups) groups[group * words + c + m] = w;
    }
    store_fused_memory<kFuse>(mem, first, live, kWhole, x, h, alpha,
                              [&](int j) { return dense_value<kNatural>(level[j], negative[j], nu[j], d.levels); });
  };
  for_each_span(d.n, vec, span);
}

/// Quad decoder of the dense plane codecs: the quad's 4 values from one read of its group words,
/// and the checks of DensePlaneCodec::validate on what it read (its scales finite, >= 0 and not -0;
/// no level above `levels`; no sign bit on a zero level; no bit set for an element past n).
template <bool kNatural>
struct DenseQuadDecoder {
  DenseParams d;
  __device__ void operator()(const uint8_t* payload, int64_t first, int live, int lane, uint64_t index_base,
                             DeviceStatus* status, float (&v)[lanes::kQuadElems]) const {
    using namespace gcomp::detail;
    const int64_t group = first / kGroupElems;
    if (group >= ceil_div(d.n, kGroupElems)) return;
    const float* scales = reinterpret_cast<const float*>(payload);
    const uint32_t* w = reinterpret_cast<const uint32_t*>(payload + 4 * d.num_blocks) + group * group_words(d.nbits);
    const uint32_t signs = lanes::nibble_of(w[0], lane);
    uint32_t level[lanes::kQuadElems];
    const uint32_t any = signs | lanes::quad_levels(w + 1, d.nbits, lane, level);
    const uint32_t dead = 0xfu & ~((1u << live) - 1u);
    if ((any & dead) != 0u) raise_status(status, gcompErrorCorruptPayload, index_base + static_cast<uint64_t>(d.n));
    if (live == 0) return;
    int64_t block[lanes::kQuadElems];
    lanes::quad_blocks(d.map.block_of(first), d.blocks, first, live, block);
#pragma unroll
    for (int j = 0; j < lanes::kQuadElems; ++j)
      if (j < live) {
        const bool negative = ((signs >> j) & 1u) != 0u;
        const float scale = scales[block[j]];
        if (!plane_element_ok(level[j], negative, d.levels) || !scale_ok(scale))
          raise_status(status, gcompErrorCorruptPayload, index_base + static_cast<uint64_t>(first + j));
        v[j] = dense_value<kNatural>(level[j], negative, scale, d.levels);
      }
  }
};

}  // namespace gcomp::cuda::detail
