// SPDX-License-Identifier: Apache-2.0
// dither / QSGD (spec §2), terngrad (§3.1) and natural dithering (§5.3): the elementwise quantize
// pass with bit-plane packing, the element decoder and the payload validator.
//
// Payload (host/codecs/dense_planes.cpp): m fp32 scales, then ceil(n/32) groups of 1 + nbits words
// (sign plane, level planes), a group being 32 consecutive global element indices. One warp per
// group: lane j quantizes element 32 g + j with its own Philox word (philox_word: counter
// index / 4, word index % 4), and one __ballot_sync per plane yields the group's words.
#pragma once

#include "cuda/common/device_types.cuh"

#include <gcomp/detail/codec_math.hpp>
#include <gcomp/detail/philox.hpp>

namespace gcomp::cuda::detail {

struct DenseParams {
  BlockMap map;
  int64_t n;
  int64_t num_blocks;
  uint32_t levels;
  int nbits;
  bool natural;  ///< natdither levels instead of uniform levels
};

__device__ inline gcomp::detail::Quantized dense_quantize(const DenseParams& d, float y, float scale, float u) {
  return d.natural ? gcomp::detail::natdither_quantize(y, scale, d.levels, u)
                   : gcomp::detail::dither_quantize(y, scale, d.levels, u);
}

__device__ inline float dense_value(const DenseParams& d, uint32_t level, bool negative, float scale) {
  return d.natural ? gcomp::detail::natdither_value(level, negative, scale, d.levels)
                   : gcomp::detail::dither_value(level, negative, scale, d.levels);
}

/// Quantize pass. `fuse`: 0 plain; 1 EF (mem = e: e = p - v); 2 DIANA (mem = h: h = h + alpha v).
/// The scales come from the workspace and are copied into the payload here, so that a non-finite
/// input (status set by the scale pass) leaves the payload and the memory untouched.
__global__ void __launch_bounds__(kThreads)
    quantize_planes_kernel(DenseParams d, Input in, const float* scales, gcomp::detail::RngKey key,
                           uint8_t* payload, int fuse, float* mem, float alpha, const DeviceStatus* status) {
  using namespace gcomp::detail;
  if (status_failed(status)) return;
  float* out_scales = reinterpret_cast<float*>(payload);
  for (int64_t b = global_thread(); b < d.num_blocks; b += grid_threads()) out_scales[b] = scales[b];
  uint32_t* groups = reinterpret_cast<uint32_t*>(payload + 4 * d.num_blocks);
  const int words = group_words(d.nbits);
  const int lane = static_cast<int>(threadIdx.x & 31u);
  const int64_t num_groups = ceil_div(d.n, kGroupElems);
  for (int64_t g = global_warp(); g < num_groups; g += grid_warps()) {
    const int64_t i = g * kGroupElems + lane;
    const bool live = i < d.n;
    Quantized q{0u, false};
    float x = 0.0f;
    float scale = 0.0f;
    if (live) {
      x = in(i);
      scale = scales[d.map.block_of(i)];
      q = dense_quantize(d, x, scale, uniform01(philox_word(key, kStreamElement, static_cast<uint64_t>(i))));
    }
    uint32_t word = __ballot_sync(kFullMask, q.negative);
    for (int k = 0; k < d.nbits; ++k) {
      const uint32_t plane = __ballot_sync(kFullMask, ((q.level >> k) & 1u) != 0u);
      if (lane == k + 1) word = plane;
    }
    if (lane < words) groups[g * words + lane] = word;
    if (fuse != 0 && live) {
      const float v = dense_value(d, q.level, q.negative, scale);
      mem[i] = fuse == 1 ? accumulate(x, -1.0f, v) : accumulate(mem[i], alpha, v);
    }
  }
}

/// Element decoder (one thread per element reads its group's words; the warp shares them).
struct DenseDecoder {
  DenseParams d;
  __device__ int64_t locate(int64_t i) const { return d.map.block_of(i); }
  __device__ float operator()(const uint8_t* payload, int64_t i, int64_t block) const {
    using namespace gcomp::detail;
    const float scale = reinterpret_cast<const float*>(payload)[block];
    const uint32_t* w = reinterpret_cast<const uint32_t*>(payload + 4 * d.num_blocks) +
                        (i / kGroupElems) * group_words(d.nbits);
    const int lane = static_cast<int>(i % kGroupElems);
    const uint32_t level = plane_level(w + 1, d.nbits, lane);
    return dense_value(d, level, ((w[0] >> lane) & 1u) != 0u, scale);
  }
};

/// The checks of DensePlaneCodec::validate: scales finite, >= 0 and not -0; no padding bits in the
/// last group; no sign bit on a zero level; no level above `levels`.
__global__ void __launch_bounds__(kThreads)
    validate_planes_kernel(DenseParams d, const uint8_t* payload, uint64_t index_base, DeviceStatus* status) {
  using namespace gcomp::detail;
  const float* scales = reinterpret_cast<const float*>(payload);
  for (int64_t b = global_thread(); b < d.num_blocks; b += grid_threads()) {
    const float s = scales[b];
    if (!is_finite_f(s) || s < 0.0f || float_bits(s) == 0x80000000u)
      raise_status(status, gcompErrorCorruptPayload, index_base + static_cast<uint64_t>(b));
  }
  const uint32_t* groups = reinterpret_cast<const uint32_t*>(payload + 4 * d.num_blocks);
  const int words = group_words(d.nbits);
  const bool level_check = (uint64_t{1} << d.nbits) != uint64_t{d.levels} + 1;
  const int64_t num_groups = ceil_div(d.n, kGroupElems);
  for (int64_t g = global_thread(); g < num_groups; g += grid_threads()) {
    const uint32_t* w = groups + g * words;
    const int64_t left = d.n - g * kGroupElems;
    const int live = left < kGroupElems ? static_cast<int>(left) : kGroupElems;
    const uint32_t live_mask = live == 32 ? 0xffffffffu : ((1u << live) - 1u);
    uint32_t nonzero = 0;
    bool bad = false;
    for (int k = 0; k < d.nbits; ++k) nonzero |= w[1 + k];
    for (int k = 0; k < words; ++k) bad = bad || (w[k] & ~live_mask) != 0u;
    bad = bad || (w[0] & ~nonzero) != 0u;
    if (level_check)
      for (int lane = 0; lane < live && !bad; ++lane) bad = plane_level(w + 1, d.nbits, lane) > d.levels;
    if (bad) raise_status(status, gcompErrorCorruptPayload, index_base + static_cast<uint64_t>(g * kGroupElems));
  }
}

}  // namespace gcomp::cuda::detail
