// SPDX-License-Identifier: Apache-2.0
// CUDA error checks (STYLE.md §6): every runtime call and every launch is checked, the sticky
// error is cleared, and the failure becomes gcomp::Error(gcompErrorCuda, "<call>: <CUDA string>").
#pragma once

#include <gcomp/error.hpp>

#include <cuda_runtime.h>

#include <string>

namespace gcomp::cuda::detail {

[[noreturn]] inline void throw_cuda(cudaError_t err, const char* what, const char* file, int line) {
  (void)cudaGetLastError();
  ::gcomp::detail::throw_error(gcompErrorCuda, file, line, std::string(what) + ": " + cudaGetErrorString(err));
}

/// After a kernel launch: launch-configuration errors surface here. With GCOMP_DEBUG_SYNC defined
/// the stream is synchronized too, so asynchronous faults are reported at their launch.
inline void check_launch(const char* kernel, cudaStream_t stream, const char* file, int line) {
  cudaError_t err = cudaGetLastError();
  if (err != cudaSuccess) throw_cuda(err, (std::string("launch of ") + kernel).c_str(), file, line);
#if defined(GCOMP_DEBUG_SYNC)
  err = cudaStreamSynchronize(stream);
  if (err != cudaSuccess) throw_cuda(err, (std::string("sync after ") + kernel).c_str(), file, line);
#else
  (void)stream;
#endif
}

template <class... Params, class... Args>
void launch(const char* name, const char* file, int line, void (*kernel)(Params...), unsigned grid, unsigned block,
            cudaStream_t stream, Args... args) {
  if (grid == 0) return;
  kernel<<<grid, block, 0, stream>>>(static_cast<Params>(args)...);
  check_launch(name, stream, file, line);
}

}  // namespace gcomp::cuda::detail

/// Checks a CUDA runtime call.
#define GCOMP_CUDA_TRY(call)                                                                                           \
  do {                                                                                                                 \
    const cudaError_t gcomp_cuda_err_ = (call);                                                                        \
    if (gcomp_cuda_err_ != cudaSuccess) ::gcomp::cuda::detail::throw_cuda(gcomp_cuda_err_, #call, __FILE__, __LINE__); \
  } while (0)

/// Launches `kernel<<<grid, block, 0, stream>>>(args...)` and checks the launch. A kernel name with
/// template arguments goes in parentheses: GCOMP_LAUNCH((k<A, B>), grid, block, stream, ...).
/// A grid of 0 blocks launches nothing.
#define GCOMP_LAUNCH(kernel, grid, block, stream, ...) \
  ::gcomp::cuda::detail::launch(#kernel, __FILE__, __LINE__, kernel, grid, block, stream, __VA_ARGS__)
