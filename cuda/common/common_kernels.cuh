// SPDX-License-Identifier: Apache-2.0
// Small kernels used by several codec families. They have internal linkage (unnamed namespace) so
// that every translation unit that includes this header gets its own copy without clashing.
#pragma once

#include "cuda/common/device_types.cuh"

#include <gcomp/detail/hd.hpp>

namespace gcomp::cuda::detail {
namespace {

/// Reports the smallest index of a NaN/Inf input element (gcompErrorNonFinite). Used before every
/// encode whose codec has no scale that would carry a non-finite input (identity, plain sign,
/// natural, randk, topk_sampled).
__global__ void __launch_bounds__(kThreads) check_finite_kernel(Input in, int64_t n, DeviceStatus* status) {
  for (int64_t i = global_thread(); i < n; i += grid_threads())
    if (!gcomp::detail::is_finite_f(in(i))) raise_status(status, gcompErrorNonFinite, static_cast<uint64_t>(i));
}

/// Fills out with +0.0f unless the status word reports an error (sparse decode, empty reduce).
__global__ void __launch_bounds__(kThreads) fill_zero_kernel(float* out, int64_t n, const DeviceStatus* status) {
  if (status_failed(status)) return;
  for (int64_t i = global_thread(); i < n; i += grid_threads()) out[i] = 0.0f;
}

}  // namespace
}  // namespace gcomp::cuda::detail
