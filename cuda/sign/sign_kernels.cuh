// SPDX-License-Identifier: Apache-2.0
// Scaled sign / plain sign (spec §3.2-3.3). Payload (host/codecs/simple_codecs.cpp): [m fp32
// scales if scaled][ceil(n/32) sign words], bit j of word g = element 32 g + j is negative (x < 0;
// zero maps to +). The scales come from cuda/quant/block_reduce.cuh with Finish::kMeanAbs.
#pragma once

#include "cuda/common/device_types.cuh"

#include <gcomp/detail/codec_math.hpp>

namespace gcomp::cuda::detail {

struct SignParams {
  BlockMap map;
  int64_t n;
  int64_t num_scales;  ///< 0 for plain signs
};

/// One warp per 32-element word. fuse: 0 plain, 1 EF (e = p - v), 2 DIANA (h = h + alpha v).
__global__ void __launch_bounds__(kThreads)
    encode_sign_kernel(SignParams d, Input in, const float* scales, uint8_t* payload, int fuse, float* mem,
                       float alpha, const DeviceStatus* status) {
  using namespace gcomp::detail;
  if (status_failed(status)) return;
  float* out_scales = reinterpret_cast<float*>(payload);
  for (int64_t b = global_thread(); b < d.num_scales; b += grid_threads()) out_scales[b] = scales[b];
  uint32_t* words = reinterpret_cast<uint32_t*>(payload + 4 * d.num_scales);
  const int lane = static_cast<int>(threadIdx.x & 31u);
  const int64_t num_words = ceil_div(d.n, kGroupElems);
  for (int64_t g = global_warp(); g < num_words; g += grid_warps()) {
    const int64_t i = g * kGroupElems + lane;
    const bool live = i < d.n;
    const float x = live ? in(i) : 0.0f;
    const bool negative = live && is_negative_f(x);
    const uint32_t word = __ballot_sync(kFullMask, negative);
    if (lane == 0) words[g] = word;
    if (fuse != 0 && live) {
      const float scale = d.num_scales > 0 ? scales[d.map.block_of(i)] : 1.0f;
      const float v = sign_value(negative, scale);
      mem[i] = fuse == 1 ? accumulate(x, -1.0f, v) : accumulate(mem[i], alpha, v);
    }
  }
}

struct SignDecoder {
  SignParams d;
  __device__ int64_t locate(int64_t i) const { return d.num_scales > 0 ? d.map.block_of(i) : 0; }
  __device__ float operator()(const uint8_t* payload, int64_t i, int64_t block) const {
    using namespace gcomp::detail;
    const float scale = d.num_scales > 0 ? reinterpret_cast<const float*>(payload)[block] : 1.0f;
    const uint32_t w = reinterpret_cast<const uint32_t*>(payload + 4 * d.num_scales)[i / kGroupElems];
    return sign_value(((w >> (i % kGroupElems)) & 1u) != 0u, scale);
  }
};

/// SignCodec::validate: scales finite, >= 0 and not -0; no padding bits in the last word.
__global__ void __launch_bounds__(kThreads)
    validate_sign_kernel(SignParams d, const uint8_t* payload, uint64_t index_base, DeviceStatus* status) {
  using namespace gcomp::detail;
  const float* scales = reinterpret_cast<const float*>(payload);
  for (int64_t b = global_thread(); b < d.num_scales; b += grid_threads()) {
    const float s = scales[b];
    if (!is_finite_f(s) || !(s >= 0.0f) || float_bits(s) == 0x80000000u)
      raise_status(status, gcompErrorCorruptPayload, index_base + static_cast<uint64_t>(b));
  }
  const int64_t rem = d.n % kGroupElems;
  if (global_thread() == 0 && rem != 0) {
    const int64_t last = ceil_div(d.n, kGroupElems) - 1;
    const uint32_t w = reinterpret_cast<const uint32_t*>(payload + 4 * d.num_scales)[last];
    if ((w >> rem) != 0u) raise_status(status, gcompErrorCorruptPayload, index_base + static_cast<uint64_t>(d.n));
  }
}

}  // namespace gcomp::cuda::detail
