// SPDX-License-Identifier: Apache-2.0
// Decode of the quad-layout codecs (dense planes, sign, natural, identity, grid): overwrite,
// accumulate with one weight, or the reduce of P payloads in rank order, which evaluates for every
// element exactly the sequence of P CPU decode_accumulate calls (accumulate() is never fused), so
// the result is bitwise reproducible and independent of the launch geometry.
#pragma once

#include <type_traits>

#include "cuda/common/device_types.cuh"
#include "cuda/fused/decode_store.cuh"

#include <gcomp/detail/codec_math.hpp>

namespace gcomp::cuda::detail {

/// Decode of the quad-layout codecs (dense planes, sign, natural, identity, grid), one thread per quad,
/// a warp per 128-element span: the decoder reads each payload's words once and validates what it
/// reads in the same pass (gcompErrorCorruptPayload; the output's content is then unspecified, see
/// DeviceCodec::decode). kOverwrite: out = v (one payload); otherwise acc = (start_from_zero ? 0 :
/// out); acc = accumulate(acc, w_j, v_j) for j = 0..P-1 in order; out = acc: the same roundings as
/// P CPU decode_accumulate calls. Every lane of a span calls the decoder (those past n check the
/// last group's padding). The quad is stored by `store` (decode_store.cuh): out = acc (PlainStore),
/// or a Session step applied to acc in registers (SessionStore; out may then stay unwritten).
template <class Decoder, bool kOverwrite, class Store = PlainStore>
__global__ void __launch_bounds__(kThreads)
    decode_quads_kernel(Decoder dec, int64_t n, const uint8_t* __restrict__ payloads, size_t stride, int num_payloads,
                        WeightList weights, bool start_from_zero, uint64_t first_payload, float* __restrict__ out,
                        DeviceStatus* status, Store store) {
  const int lane = static_cast<int>(threadIdx.x & 31u);
  const auto span = [&](int64_t s, auto whole) {
    constexpr bool kWhole = decltype(whole)::value;
    const int64_t first = s * lanes::kSpanElems + lanes::kQuadElems * lane;
    const int live = kWhole ? lanes::kQuadElems : lanes::quad_live(first, n);
    Quad acc{{0.0f, 0.0f, 0.0f, 0.0f}};
    if (!kOverwrite && !start_from_zero) acc = load_out_quad(out, first, live, kWhole);
    for (int j = 0; j < num_payloads; ++j) {
      float v[lanes::kQuadElems] = {0.0f, 0.0f, 0.0f, 0.0f};
      dec(payloads + static_cast<size_t>(j) * stride, first, live, lane,
          (first_payload + static_cast<uint64_t>(j)) << 40, status, v);
#pragma unroll
      for (int e = 0; e < lanes::kQuadElems; ++e)
        acc.v[e] = kOverwrite ? v[e] : gcomp::detail::accumulate(acc.v[e], weights.w[j], v[e]);
    }
    if (live > 0) store(out, first, live, kWhole, acc);
  };
  for_each_span(n, aligned16(out) && store.aligned(), span);
}

}  // namespace gcomp::cuda::detail
