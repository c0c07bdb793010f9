// SPDX-License-Identifier: Apache-2.0
// identity: the fp32 values themselves.
#pragma once

#include "cuda/common/device_types.cuh"

#include <gcomp/detail/codec_math.hpp>

namespace gcomp::cuda::detail {

/// fuse: 0 plain, 1 EF (e = p - p), 2 DIANA (h = h + alpha delta).
__global__ void __launch_bounds__(kThreads)
    encode_identity_kernel(Input in, int64_t n, float* payload, int fuse, float* mem, float alpha,
                           const DeviceStatus* status) {
  using gcomp::detail::accumulate;
  if (status_failed(status)) return;
  for (int64_t i = global_thread(); i < n; i += grid_threads()) {
    const float x = in(i);
    payload[i] = x;
    if (fuse == 1) mem[i] = accumulate(x, -1.0f, x);
    if (fuse == 2) mem[i] = accumulate(mem[i], alpha, x);
  }
}

struct IdentityDecoder {
  __device__ int64_t locate(int64_t) const { return 0; }
  __device__ float operator()(const uint8_t* payload, int64_t i, int64_t) const {
    return reinterpret_cast<const float*>(payload)[i];
  }
};

/// IdentityCodec::validate: every value finite.
__global__ void __launch_bounds__(kThreads)
    validate_identity_kernel(int64_t n, const uint8_t* payload, uint64_t index_base, DeviceStatus* status) {
  const float* v = reinterpret_cast<const float*>(payload);
  for (int64_t i = global_thread(); i < n; i += grid_threads())
    if (!gcomp::detail::is_finite_f(v[i])) raise_status(status, gcompErrorCorruptPayload, index_base + static_cast<uint64_t>(i));
}

}  // namespace gcomp::cuda::detail
