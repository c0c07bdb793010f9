// SPDX-License-Identifier: Apache-2.0
// randk payload (host/codecs/sparse_codecs.cpp, spec §4.2): [u32 step][u32 rank][k fp32 values].
// The indices are not sent: both sides select the k smallest (philox_word(key, kStreamSelect, i), i)
// pairs with the radix selection of cuda/topk/radix_select.cuh on the complemented keys
// (RandomKey), the receiver taking step and rank from the payload header.
#pragma once

#include "cuda/common/device_types.cuh"

#include <gcomp/detail/codec_math.hpp>
#include <gcomp/detail/payload_rules.hpp>

namespace gcomp::cuda::detail {

/// The payload header [step, rank] alone: the encode of an empty layout (n = 0, k = 0), where the
/// selection launches nothing. One thread.
__global__ void write_randk_header_kernel(uint32_t* header, uint32_t step, uint32_t rank) {
  header[0] = step;
  header[1] = rank;
}

/// SparseCodec::validate for randk: every value finite.
__global__ void __launch_bounds__(kThreads)
    validate_randk_kernel(const uint8_t* payload, int64_t k, uint64_t index_base, DeviceStatus* status) {
  const float* vals = reinterpret_cast<const float*>(payload + 8);
  for (int64_t j = global_thread(); j < k; j += grid_threads())
    if (!gcomp::detail::value_ok(vals[j]))
      raise_status(status, gcompErrorCorruptPayload, index_base + static_cast<uint64_t>(j));
}

}  // namespace gcomp::cuda::detail
