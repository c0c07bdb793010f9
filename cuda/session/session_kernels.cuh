// SPDX-License-Identifier: Apache-2.0
// Elementwise kernels of the cuda Session backend: thin grid-stride loops over the shared fp32 math
// of gcomp/detail/session_math.hpp (explicitly rounded multiplies and adds, never fused), so that
// they equal the host-f32 loops of host/algorithms/host_ops.cpp bit for bit.
#pragma once

#include "cuda/common/device_types.cuh"

#include <gcomp/detail/grad_source.hpp>
#include <gcomp/detail/half.hpp>
#include <gcomp/detail/session_math.hpp>

namespace gcomp::cuda::detail {
namespace {

__global__ void __launch_bounds__(kThreads) widen_bf16_kernel(const uint16_t* src, float* dst, int64_t n) {
  for (int64_t i = global_thread(); i < n; i += grid_threads()) dst[i] = gcomp::detail::bf16_to_float(src[i]);
}

__global__ void __launch_bounds__(kThreads) widen_f16_kernel(const uint16_t* src, float* dst, int64_t n) {
  for (int64_t i = global_thread(); i < n; i += grid_threads()) dst[i] = gcomp::detail::f16_to_float(src[i]);
}

__global__ void __launch_bounds__(kThreads) zero_nonfinite_kernel(float* dst, const float* src, int64_t n) {
  for (int64_t i = global_thread(); i < n; i += grid_threads()) dst[i] = gcomp::detail::zero_nonfinite_f(src[i]);
}

__global__ void __launch_bounds__(kThreads) scale_kernel(float* dst, float a, const float* x, int64_t n) {
  for (int64_t i = global_thread(); i < n; i += grid_threads()) dst[i] = gcomp::detail::mul_rn(a, x[i]);
}

/// dst = b (a x): the products of scale(t, a, x) then scale(dst, b, t) in one pass, t not stored
/// (decode_reduce_scale with u).
__global__ void __launch_bounds__(kThreads)
    scale_twice_kernel(float* dst, float a, float b, const float* x, int64_t n) {
  for (int64_t i = global_thread(); i < n; i += grid_threads())
    dst[i] = gcomp::detail::mul_rn(b, gcomp::detail::mul_rn(a, x[i]));
}

__global__ void __launch_bounds__(kThreads)
    lincomb_kernel(float* dst, float a, const float* x, float b, const float* y, int64_t n) {
  for (int64_t i = global_thread(); i < n; i += grid_threads()) dst[i] = gcomp::detail::lincomb_f(a, x[i], b, y[i]);
}

/// lincomb_kernel with x loaded from the Session's gradient view (`src`, gcomp/detail/grad_source.hpp:
/// bf16 / f16 widened exactly, nonfinite = zero's +0 for NaN/Inf): lincomb_kernel's bits on the
/// widened / zeroed copy, the copy not written (2 B/el of x read for a 16-bit gradient).
__global__ void __launch_bounds__(kThreads)
    lincomb_src_kernel(float* dst, float a, const void* x, uint32_t src, float b, const float* y, int64_t n) {
  for (int64_t i = global_thread(); i < n; i += grid_threads())
    dst[i] = gcomp::detail::lincomb_f(a, gcomp::detail::load_src(x, src, i), b, y[i]);
}

__global__ void __launch_bounds__(kThreads) mul_kernel(float* dst, const float* x, const float* y, int64_t n) {
  for (int64_t i = global_thread(); i < n; i += grid_threads()) dst[i] = gcomp::detail::mul_rn(x[i], y[i]);
}

__global__ void __launch_bounds__(kThreads)
    vote_kernel(float* u, const float* acc, float lr, bool tie_to_zero, int64_t n) {
  for (int64_t i = global_thread(); i < n; i += grid_threads()) u[i] = gcomp::detail::vote_f(acc[i], lr, tie_to_zero);
}

/// The gate of the non-finite scans below: nullptr (always scan), or a step's status record, when the
/// scan only classifies a gcompErrorNonFinite the step's kernels reported (the late agreement,
/// docs/algorithms.md "Non-finite gradients"): without that error every thread returns at once.
__device__ inline bool scan_gated_off(const DeviceStatus* gate) {
  return gate != nullptr && *static_cast<const volatile uint32_t*>(&gate->code) != gcompErrorNonFinite;
}

/// flag = 1 when x holds a NaN or Inf (flag zeroed before the launch; every writer stores 1).
__global__ void __launch_bounds__(kThreads)
    nonfinite_flag_kernel(const float* x, int64_t n, int64_t* flag, const DeviceStatus* gate) {
  if (scan_gated_off(gate)) return;
  for (int64_t i = global_thread(); i < n; i += grid_threads())
    if (!gcomp::detail::is_finite_f(x[i])) *flag = 1;
}

/// nonfinite_flag_kernel of the Session's gradient view (`src`: bf16 / f16 elements widened as they load).
__global__ void __launch_bounds__(kThreads)
    nonfinite_flag_src_kernel(const void* x, uint32_t src, int64_t n, int64_t* flag, const DeviceStatus* gate) {
  if (scan_gated_off(gate)) return;
  for (int64_t i = global_thread(); i < n; i += grid_threads())
    if (!gcomp::detail::is_finite_f(gcomp::detail::load_src(x, src, i))) *flag = 1;
}

/// The status word of each of `slots` message slots of `stride` bytes at buf (its last 4 bytes):
/// `word`, or, when `word` is 0 and flag (a gated scan's result, may be nullptr) is set,
/// `gradient_word` (the late agreement's "non-finite gradient"). One thread per slot.
__global__ void __launch_bounds__(kThreads) status_words_kernel(uint8_t* buf, uint64_t stride, int slots, int32_t word,
                                                                const int64_t* flag, int32_t gradient_word) {
  const int64_t j = global_thread();
  if (j >= slots) return;
  const int32_t w = word == 0 && flag != nullptr && *flag != 0 ? gradient_word : word;
  // The slot's end is 4-byte aligned for the fixed-size messages, not for a variable-length
  // message's word (right after its used bytes): stored bytewise.
  uint8_t* at = buf + stride * static_cast<uint64_t>(j + 1) - 4;
  for (int b = 0; b < 4; ++b) at[b] = static_cast<uint8_t>(static_cast<uint32_t>(w) >> (8 * b));
}

/// Keeps the first codec error of a step: copies the workspace status word into the sticky one
/// unless that already holds an error.
__global__ void merge_status_kernel(const DeviceStatus* call, DeviceStatus* sticky) {
  if (sticky->code == 0 && call->code != 0) *sticky = *call;
}

}  // namespace
}  // namespace gcomp::cuda::detail
