// SPDX-License-Identifier: Apache-2.0
// Host-side launcher of decode_quads_kernel for every codec whose decode is one value per element
// (dense planes, sign, natural, identity, grid): overwrite, accumulate with one weight, or the
// rank-ordered reduce of P payloads in batches of kMaxWeights (each batch continues the sums of the
// previous one, so the result equals P CPU decode_accumulate calls in order).
#pragma once

#include "cuda/common/common_kernels.cuh"
#include "cuda/common/cuda_check.cuh"
#include "cuda/dispatch/plan.cuh"
#include "cuda/fused/decode_elements.cuh"
#include "cuda/fused/decode_store.cuh"

#include <algorithm>
#include <type_traits>

namespace gcomp::cuda::detail {

/// Enqueues the decode of the quad-layout codecs (decode_quads_kernel): one pass over each payload,
/// validation included; batches of kMaxWeights payloads as above. A reduce of zero payloads writes
/// zeros. `store` is the final store (decode_store.cuh): PlainStore writes d_out; a SessionStore
/// is applied by the last launch only (the earlier batches keep their partial sums in d_out, which
/// is then scratch), to the sum of every payload, or to zeros for a reduce of none.
template <class Decoder, class Store = PlainStore>
void launch_decode_quads(const Decoder& dec, const DevicePlan& plan, const Workspace& ws, const uint8_t* d_payloads,
                         size_t stride, int num_payloads, const float* h_weights, DecodeMode mode, float* d_out,
                         cudaStream_t stream, const Store& store = Store{}) {
  constexpr bool kPlain = std::is_same_v<Store, PlainStore>;
  const unsigned grid =
      grid_for(gcomp::detail::ceil_div(plan.n, int64_t{lanes::kSpanElems}), kWarpsPerBlock, plan.max_blocks);
  WeightList w{};
  if (mode == DecodeMode::kOverwrite) {
    GCOMP_LAUNCH((decode_quads_kernel<Decoder, true, Store>), grid, kThreads, stream, dec, plan.n, d_payloads, stride,
                 1, w, true, uint64_t{0}, d_out, ws.status, store);
    return;
  }
  if (mode == DecodeMode::kReduce && num_payloads == 0) {
    if constexpr (kPlain) {
      GCOMP_LAUNCH(fill_zero_kernel, grid_for(plan.n, kThreads, plan.max_blocks), kThreads, stream, d_out, plan.n,
                   ws.status);
    } else {  // no payload: the store of a zero sum
      GCOMP_LAUNCH((decode_quads_kernel<Decoder, false, Store>), grid, kThreads, stream, dec, plan.n, d_payloads,
                   stride, 0, w, true, uint64_t{0}, d_out, ws.status, store);
    }
    return;
  }
  for (int first = 0; first < num_payloads; first += kMaxWeights) {
    const int count = std::min(kMaxWeights, num_payloads - first);
    for (int j = 0; j < count; ++j) w.w[j] = h_weights != nullptr ? h_weights[first + j] : 1.0f;
    const bool from_zero = mode == DecodeMode::kReduce && first == 0;
    const uint8_t* batch = d_payloads + static_cast<size_t>(first) * stride;
    if (kPlain || first + count < num_payloads)
      GCOMP_LAUNCH((decode_quads_kernel<Decoder, false, PlainStore>), grid, kThreads, stream, dec, plan.n, batch,
                   stride, count, w, from_zero, static_cast<uint64_t>(first), d_out, ws.status, PlainStore{});
    else
      GCOMP_LAUNCH((decode_quads_kernel<Decoder, false, Store>), grid, kThreads, stream, dec, plan.n, batch, stride,
                   count, w, from_zero, static_cast<uint64_t>(first), d_out, ws.status, store);
  }
}

}  // namespace gcomp::cuda::detail
