// SPDX-License-Identifier: Apache-2.0
// The final store of decode_quads_kernel (cuda/fused/decode_elements.cuh), of the sparse tile
// merge (cuda/topk/sparse_merge_kernels.cuh) and, element by element, of the sdither and spherical
// decode kernels: the plain store of the decoded (or reduced) value, or the Session's decode-side
// step applied to it in registers, so that
// the step costs no pass of its own (docs/performance.md "Passes over memory, per operation").
// The element math is gcomp/detail/session_math.hpp, the functions the host-f32 twin's separate
// calls evaluate (tests/unit/test_session_math.cpp), so the fused store has their bits.
#pragma once

#include "cuda/common/device_types.cuh"
#include "cuda/dispatch/session_decode.hpp"

#include <gcomp/detail/session_math.hpp>

namespace gcomp::cuda::detail {

/// out = the quad: the decoders' store as it always was.
struct PlainStore {
  __device__ static constexpr bool aligned() { return true; }
  __device__ void operator()(float* __restrict__ out, int64_t first, int live, bool vec, const Quad& s) const {
    store_quad(out, first, live, vec, s);
  }
};

/// The Session's decode-side step (SessionStep, cuda/dispatch/session_decode.hpp) applied to the
/// quad s in registers; only the step's outputs are written.
struct SessionStore : SessionStep {
  __device__ bool aligned() const { return aligned16(y) && aligned16(u) && aligned16(w); }

  __device__ void operator()(float* __restrict__ out, int64_t first, int live, bool vec, const Quad& s) const {
    namespace m = gcomp::detail;
    Quad r{{0.0f, 0.0f, 0.0f, 0.0f}};
    switch (kind) {
      case StoreKind::kScale:
#pragma unroll
        for (int e = 0; e < lanes::kQuadElems; ++e) r.v[e] = m::mul_rn(a, s.v[e]);
        store_quad(out, first, live, vec, r);
        return;
      case StoreKind::kScaleTwice:
#pragma unroll
        for (int e = 0; e < lanes::kQuadElems; ++e) r.v[e] = m::scale_twice_f(a, b, s.v[e]);
        store_quad(u, first, live, vec, r);
        return;
      case StoreKind::kMeanAdd: {
        const Quad yq = load_out_quad(y, first, live, vec);
#pragma unroll
        for (int e = 0; e < lanes::kQuadElems; ++e) r.v[e] = m::mean_add_f(yq.v[e], a, s.v[e]);
        store_quad(w, first, live, vec, r);
        return;
      }
      case StoreKind::kVote:
#pragma unroll
        for (int e = 0; e < lanes::kQuadElems; ++e) r.v[e] = m::vote_f(s.v[e], b, tie_to_zero);
        store_quad(u, first, live, vec, r);
        return;
      case StoreKind::kDiana: {
        const Quad h = load_out_quad(y, first, live, vec);
        Quad h_out{{0.0f, 0.0f, 0.0f, 0.0f}};
#pragma unroll
        for (int e = 0; e < lanes::kQuadElems; ++e) {
          const m::DianaServer d = m::diana_server_f(h.v[e], a, alpha, s.v[e]);
          r.v[e] = scale_u ? m::mul_rn(b, d.g) : d.g;
          h_out.v[e] = d.h_out;
        }
        store_quad(u, first, live, vec, r);
        store_quad(w, first, live, vec, h_out);
        return;
      }
    }
  }
};

/// Element i of a decoder that writes one element at a time (sdither's chunk walk, spherical's
/// block loop): the quad store of element i alone, so both stores keep the quad form's bits.
template <class Store>
__device__ inline void store_element(const Store& store, float* __restrict__ out, int64_t i, float s) {
  store(out, i, 1, false, Quad{{s, 0.0f, 0.0f, 0.0f}});
}

/// The store of a zero sum over n elements: a decode-reduce of no payload through `store`
/// (PlainStore: out = 0).
template <class Store>
__global__ void __launch_bounds__(kThreads)
    store_zero_sum_kernel(int64_t n, float* __restrict__ out, const DeviceStatus* status, Store store) {
  if (status_failed(status)) return;
  for (int64_t i = global_thread(); i < n; i += grid_threads()) store_element(store, out, i, 0.0f);
}

}  // namespace gcomp::cuda::detail
