// SPDX-License-Identifier: Apache-2.0
// Elementwise decode of the dense codecs in three flavours, one thread per element:
//   overwrite:  out = v
//   accumulate: out = out + w * v                                     (decode_accumulate)
//   reduce:     acc = 0 (or out, for a later chunk); acc = acc + w_j * v_j, j = 0..P-1; out = acc
// The reduce is the decode-reduce of P payloads in rank order: for every element it evaluates
// exactly the sequence of P CPU decode_accumulate calls (accumulate() is never fused), so the
// result is bitwise reproducible and independent of the launch geometry.
#pragma once

#include "cuda/common/device_types.cuh"

#include <gcomp/detail/codec_math.hpp>

namespace gcomp::cuda::detail {

template <class Decoder>
__global__ void __launch_bounds__(kThreads)
    decode_elements_kernel(Decoder dec, int64_t n, const uint8_t* payloads, size_t stride, int num_payloads,
                           WeightList weights, int mode, bool start_from_zero, float* out,
                           const DeviceStatus* status) {
  if (status_failed(status)) return;
  for (int64_t i = global_thread(); i < n; i += grid_threads()) {
    const int64_t block = dec.locate(i);
    if (mode == 0) {
      out[i] = dec(payloads, i, block);
      continue;
    }
    float acc = start_from_zero ? 0.0f : out[i];
    for (int j = 0; j < num_payloads; ++j)
      acc = gcomp::detail::accumulate(acc, weights.w[j], dec(payloads + static_cast<size_t>(j) * stride, i, block));
    out[i] = acc;
  }
}

}  // namespace gcomp::cuda::detail
