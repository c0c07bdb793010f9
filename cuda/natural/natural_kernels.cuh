// SPDX-License-Identifier: Apache-2.0
// Natural compression (spec §5.3). Payload (host/codecs/simple_codecs.cpp): ceil(n/32) sign words,
// then n exponent codes (one byte each, natural_exponent_code) padded with zeros to 4 bytes.
// One warp per 32 elements: the sign word is a ballot, and each lane 4q assembles the little-endian
// word of codes 4q..4q+3 from its neighbours by shuffles.
#pragma once

#include "cuda/common/device_types.cuh"

#include <gcomp/detail/codec_math.hpp>
#include <gcomp/detail/philox.hpp>

namespace gcomp::cuda::detail {

struct NaturalParams {
  int64_t n;
  int64_t words;  ///< ceil(n / 32)
};

/// fuse: 0 plain, 1 EF (e = p - v), 2 DIANA (h = h + alpha v). The input was checked finite before.
__global__ void __launch_bounds__(kThreads)
    encode_natural_kernel(NaturalParams d, Input in, gcomp::detail::RngKey key, uint8_t* payload, int fuse,
                          float* mem, float alpha, const DeviceStatus* status) {
  using namespace gcomp::detail;
  if (status_failed(status)) return;
  uint32_t* signs = reinterpret_cast<uint32_t*>(payload);
  uint32_t* codes = reinterpret_cast<uint32_t*>(payload + 4 * d.words);
  const int lane = static_cast<int>(threadIdx.x & 31u);
  for (int64_t g = global_warp(); g < d.words; g += grid_warps()) {
    const int64_t i = g * kGroupElems + lane;
    const bool live = i < d.n;
    float x = 0.0f;
    uint32_t code = 0;
    if (live) {
      x = in(i);
      code = natural_exponent_code(x, philox_word(key, kStreamElement, static_cast<uint64_t>(i)));
    }
    const bool negative = code != 0u && x < 0.0f;
    const uint32_t sign_word = __ballot_sync(kFullMask, negative);
    if (lane == 0) signs[g] = sign_word;
    const uint32_t c1 = __shfl_down_sync(kFullMask, code, 1);
    const uint32_t c2 = __shfl_down_sync(kFullMask, code, 2);
    const uint32_t c3 = __shfl_down_sync(kFullMask, code, 3);
    if ((lane & 3) == 0 && live) codes[i / 4] = code | (c1 << 8) | (c2 << 16) | (c3 << 24);
    if (fuse != 0 && live) {
      const float v = natural_value(code, negative);
      mem[i] = fuse == 1 ? accumulate(x, -1.0f, v) : accumulate(mem[i], alpha, v);
    }
  }
}

struct NaturalDecoder {
  NaturalParams d;
  __device__ int64_t locate(int64_t) const { return 0; }
  __device__ float operator()(const uint8_t* payload, int64_t i, int64_t) const {
    const uint32_t w = reinterpret_cast<const uint32_t*>(payload)[i / 32];
    const uint32_t code = payload[4 * d.words + i];
    return gcomp::detail::natural_value(code, ((w >> (i % 32)) & 1u) != 0u);
  }
};

/// NaturalCodec::validate: no code 255, no sign on a zero code, zero padding bytes and bits.
__global__ void __launch_bounds__(kThreads)
    validate_natural_kernel(NaturalParams d, const uint8_t* payload, uint64_t index_base, DeviceStatus* status) {
  const uint8_t* codes = payload + 4 * d.words;
  const int64_t padded = 4 * ((d.n + 3) / 4);
  for (int64_t i = global_thread(); i < padded; i += grid_threads()) {
    bool bad;
    if (i < d.n) {
      const uint32_t w = reinterpret_cast<const uint32_t*>(payload)[i / 32];
      const bool negative = ((w >> (i % 32)) & 1u) != 0u;
      bad = codes[i] == 255 || (negative && codes[i] == 0);
    } else {
      bad = codes[i] != 0;
    }
    if (bad) raise_status(status, gcompErrorCorruptPayload, index_base + static_cast<uint64_t>(i));
  }
  if (global_thread() == 0 && d.n % 32 != 0) {
    const uint32_t w = reinterpret_cast<const uint32_t*>(payload)[d.words - 1];
    if ((w >> (d.n % 32)) != 0u) raise_status(status, gcompErrorCorruptPayload, index_base + static_cast<uint64_t>(d.n));
  }
}

}  // namespace gcomp::cuda::detail
