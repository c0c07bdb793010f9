// SPDX-License-Identifier: Apache-2.0
// Small kernels used by several codec families. They have internal linkage (unnamed namespace) so
// that every translation unit that includes this header gets its own copy without clashing.
#pragma once

#include <type_traits>

#include "cuda/common/device_types.cuh"

#include <gcomp/detail/hd.hpp>

namespace gcomp::cuda::detail {
namespace {

/// Reports the smallest index of a NaN/Inf input element (gcompErrorNonFinite). Used where no other
/// pass over x sees a non-finite input before something is written: the EF/DIANA variants of the
/// unscaled encodes (identity, plain sign, natural, grid: their memory stays untouched), randk (its
/// selection reads no x) and encode_with_scales. (topk_sampled checks in its first count pass.)
/// One quad (a 16-byte load when aligned) per thread and iteration.
__global__ void __launch_bounds__(kThreads) check_finite_kernel(Input in, int64_t n, DeviceStatus* status) {
  const int64_t quads = gcomp::detail::ceil_div(n, int64_t{lanes::kQuadElems});
  const auto quad = [&](int64_t q, auto whole) {
    constexpr bool kWhole = decltype(whole)::value;
    const int64_t first = q * lanes::kQuadElems;
    const int live = kWhole ? lanes::kQuadElems : lanes::quad_live(first, n);
    const Quad x = load_input_quad(in, first, live, kWhole);
#pragma unroll
    for (int j = 0; j < lanes::kQuadElems; ++j)
      if (j < live && !gcomp::detail::is_finite_f(x.v[j]))
        raise_status(status, gcompErrorNonFinite, static_cast<uint64_t>(first + j));
  };
  const int64_t whole = in.aligned16() ? n / lanes::kQuadElems : 0;  // vector path only
  for (int64_t q = global_thread(); q < whole; q += grid_threads()) quad(q, std::true_type{});
  for (int64_t q = whole + global_thread(); q < quads; q += grid_threads()) quad(q, std::false_type{});
}

/// Fills out with +0.0f unless the status word reports an error (sparse decode, empty reduce).
__global__ void __launch_bounds__(kThreads) fill_zero_kernel(float* out, int64_t n, const DeviceStatus* status) {
  if (status_failed(status)) return;
  for (int64_t i = global_thread(); i < n; i += grid_threads()) out[i] = 0.0f;
}

/// Caller-given block scales of an encode with shared scales (DeviceCodec::encode_with_scales):
/// a negative scale b reports gcompErrorInvalidArgument at the block's first element blocks[b], as
/// the CPU codec rejects it; a non-finite one `nonfinite_code` (gcompErrorInvalidArgument, the CPU
/// codec's; the Session's shared scales: gcompErrorNonFinite). Does nothing once an earlier kernel
/// reported an error, so a non-finite input (checked first) keeps its status.
__global__ void __launch_bounds__(kThreads)
    check_scales_kernel(const float* scales, const int64_t* blocks, int64_t num_blocks, uint32_t nonfinite_code,
                        DeviceStatus* status) {
  if (status_failed(status)) return;
  for (int64_t b = global_thread(); b < num_blocks; b += grid_threads()) {
    const float s = scales[b];
    if (!gcomp::detail::is_finite_f(s))
      raise_status(status, nonfinite_code, static_cast<uint64_t>(blocks[b]));
    else if (s < 0.0f)
      raise_status(status, gcompErrorInvalidArgument, static_cast<uint64_t>(blocks[b]));
  }
}

/// dst = src (num floats) when the status word reports no error (DeviceCodec::compute_scales);
/// else dst untouched, or every dst = +Inf with inf_on_error (the Session's scaler sharing: the
/// max over the ranks is then +Inf on every rank).
__global__ void __launch_bounds__(kThreads)
    copy_scales_kernel(const float* src, float* dst, int64_t num, bool inf_on_error, const DeviceStatus* status) {
  const bool failed = status_failed(status);
  if (failed && !inf_on_error) return;
  const float inf = gcomp::detail::bits_float(0x7f800000u);
  for (int64_t i = global_thread(); i < num; i += grid_threads()) dst[i] = failed ? inf : src[i];
}

}  // namespace
}  // namespace gcomp::cuda::detail
