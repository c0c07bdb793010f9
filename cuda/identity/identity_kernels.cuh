// SPDX-License-Identifier: Apache-2.0
// identity: the fp32 values themselves.
#pragma once

#include <type_traits>
#include <gcomp/detail/fused_memory.hpp>

#include "cuda/common/device_types.cuh"

#include <gcomp/detail/codec_math.hpp>
#include <gcomp/detail/payload_rules.hpp>

namespace gcomp::cuda::detail {

/// One quad (16-byte load and store) per thread. kFuse: 0 plain, 1 EF (e = p - p), 2 DIANA (mem = in.y +
/// alpha delta: h_out, or h in place). kCheck: the non-finite check folded into this pass (plain encode; the
/// payload's content is then unspecified); the fused variants run check_finite_kernel before.
template <gcomp::detail::FuseMode kFuse, bool kCheck>
__global__ void __launch_bounds__(kThreads) encode_identity_kernel(Input in, int64_t n, float* __restrict__ payload,
                                                                   float* mem, float alpha, DeviceStatus* status) {
  using gcomp::detail::accumulate;
  if (status_failed(status)) return;
  const int64_t quads = gcomp::detail::ceil_div(n, int64_t{lanes::kQuadElems});
  const bool vec = in.aligned16() && aligned16(payload) && (kFuse == gcomp::detail::FuseMode::kNone || aligned16(mem));
  const auto quad = [&](int64_t q, auto whole) {
    constexpr bool kWhole = decltype(whole)::value;
    const int64_t first = q * lanes::kQuadElems;
    const int live = kWhole ? lanes::kQuadElems : lanes::quad_live(first, n);
    [[maybe_unused]] Quad h{{0.0f, 0.0f, 0.0f, 0.0f}};
    const Quad x = load_encode_quad<kFuse>(in, first, live, kWhole, h);
    if constexpr (kCheck) {
#pragma unroll
      for (int j = 0; j < lanes::kQuadElems; ++j)
        if (j < live)
          if (!gcomp::detail::is_finite_f(x.v[j]))
            raise_status(status, gcompErrorNonFinite, static_cast<uint64_t>(first + j));
    }
    store_quad(payload, first, live, kWhole, x);
    store_fused_memory<kFuse>(mem, first, live, kWhole, x, h, alpha, [&](int j) { return x.v[j]; });
  };
  // Whole quads with 16-byte aligned pointers take the vector path only; the rest element loads.
  const int64_t whole = vec ? n / lanes::kQuadElems : 0;
  for (int64_t q = global_thread(); q < whole; q += grid_threads()) quad(q, std::true_type{});
  for (int64_t q = whole + global_thread(); q < quads; q += grid_threads()) quad(q, std::false_type{});
}

/// Quad decoder: the 4 values (one 16-byte load when aligned), IdentityCodec::validate's check
/// (every value finite) on what it read.
struct IdentityQuadDecoder {
  int64_t n;
  __device__ void operator()(const uint8_t* payload, int64_t first, int live, int, uint64_t index_base,
                             DeviceStatus* status, float (&v)[lanes::kQuadElems]) const {
    if (live == 0) return;
    const float* p = reinterpret_cast<const float*>(payload);
    const Quad q = load_quad(Input{p, nullptr}, first, live, aligned16(p));
#pragma unroll
    for (int j = 0; j < lanes::kQuadElems; ++j)
      if (j < live) {
        if (!gcomp::detail::value_ok(q.v[j]))
          raise_status(status, gcompErrorCorruptPayload, index_base + static_cast<uint64_t>(first + j));
        v[j] = q.v[j];
      }
  }
};

}  // namespace gcomp::cuda::detail
