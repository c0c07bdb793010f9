// SPDX-License-Identifier: Apache-2.0
// Received short payloads (docs/wire-format.md §6) before a decode-reduce: each slot's size must
// satisfy the size rule of include/gcomp/detail/varlen.hpp (the CPU codec's rule: full size, or
// exactly the used size its length field gives), and the bytes of the slot after the message are
// zeroed, so the codec's decode kernels see the full payload the sender encoded. One thread per
// 4-byte word of every slot; the thread of word 0 checks the size (status gcompErrorCorruptPayload,
// index = payload number << 40, as decode_reduce reports).
#pragma once

#include "cuda/common/device_types.cuh"

#include <gcomp/detail/varlen.hpp>

namespace gcomp::cuda::detail {

__global__ void __launch_bounds__(kThreads)
    prepare_received_kernel(gcomp::detail::VarlenLayout v, uint8_t* payloads, size_t stride, int count,
                            const uint64_t* sizes, DeviceStatus* status) {
  const int64_t words = static_cast<int64_t>((v.full_bytes + 3u) / 4u);
  const int64_t total = words * count;
  for (int64_t t = global_thread(); t < total; t += grid_threads()) {
    const int64_t j = t / words;
    const int64_t w = t - j * words;
    uint8_t* p = payloads + static_cast<size_t>(j) * stride;
    const uint64_t size = sizes[j];
    if (w == 0 && !gcomp::detail::varlen_size_ok(v, p, size))
      raise_status(status, gcompErrorCorruptPayload, static_cast<uint64_t>(j) << 40);
    if (static_cast<uint64_t>(4 * w) >= size) reinterpret_cast<uint32_t*>(p)[w] = 0u;
  }
}

}  // namespace gcomp::cuda::detail
