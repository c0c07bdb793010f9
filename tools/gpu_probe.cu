// SPDX-License-Identifier: Apache-2.0
// gcomp-gpu-probe: proves that the CUDA runtime can use device 0, with real work rather than a
// listing (nvidia-smi can list a device that the runtime cannot use): it allocates device memory,
// launches a kernel, copies the result back and checks every value. tools/gpu-check.sh compiles and
// runs it (nvcc, PTX for compute_75 so that any supported GPU JIT-compiles it) before building
// anything; the CMake build compiles it too (target gcomp-gpu-probe), with the project's warnings.
//
// Output: one line of JSON on stdout (device name, compute capability, SMs, memory, L2, driver and
// runtime versions) on success. Exit codes: 0 the device works; 2 no usable device (no driver, no
// device, the runtime refuses it: the reason on stderr); 1 a device is there but the check failed
// (a launch error or wrong values).
#include <cuda_runtime.h>

#include <cstdio>
#include <cstdlib>
#include <vector>

namespace {

__global__ void fill_pattern_kernel(unsigned int* out, int n) {
  const int i = static_cast<int>(blockIdx.x * blockDim.x + threadIdx.x);
  if (i < n) out[i] = static_cast<unsigned int>(i) * 2654435761u + 12345u;
}

bool no_device_error(cudaError_t err) {
  return err == cudaErrorNoDevice || err == cudaErrorInsufficientDriver || err == cudaErrorDevicesUnavailable ||
         err == cudaErrorInitializationError || err == cudaErrorSystemDriverMismatch ||
         err == cudaErrorCompatNotSupportedOnDevice || err == cudaErrorSystemNotReady ||
         err == cudaErrorInvalidDevice || err == cudaErrorNotPermitted;
}

/// Reports a failed call: exit 2 when it means "no usable device", else 1.
int fail(const char* what, cudaError_t err) {
  const bool none = no_device_error(err);
  std::fprintf(stderr, "gcomp-gpu-probe: %s%s: %s (%s)\n", none ? "no usable CUDA device: " : "", what,
               cudaGetErrorString(err), cudaGetErrorName(err));
  return none ? 2 : 1;
}

}  // namespace

int main() {
  int count = 0;
  cudaError_t err = cudaGetDeviceCount(&count);
  if (err != cudaSuccess) return fail("cudaGetDeviceCount", err);
  if (count < 1) {
    std::fprintf(stderr, "gcomp-gpu-probe: no usable CUDA device: the runtime sees 0 devices\n");
    return 2;
  }
  if ((err = cudaSetDevice(0)) != cudaSuccess) return fail("cudaSetDevice(0)", err);
  cudaDeviceProp prop{};
  if ((err = cudaGetDeviceProperties(&prop, 0)) != cudaSuccess) return fail("cudaGetDeviceProperties", err);
  int sms = 0, l2 = 0, driver = 0, runtime = 0;
  if ((err = cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, 0)) != cudaSuccess)
    return fail("cudaDeviceGetAttribute", err);
  if ((err = cudaDeviceGetAttribute(&l2, cudaDevAttrL2CacheSize, 0)) != cudaSuccess)
    return fail("cudaDeviceGetAttribute", err);
  if ((err = cudaDriverGetVersion(&driver)) != cudaSuccess) return fail("cudaDriverGetVersion", err);
  if ((err = cudaRuntimeGetVersion(&runtime)) != cudaSuccess) return fail("cudaRuntimeGetVersion", err);
  size_t free_bytes = 0, total_bytes = 0;
  if ((err = cudaMemGetInfo(&free_bytes, &total_bytes)) != cudaSuccess) return fail("cudaMemGetInfo", err);

  constexpr int kN = 1 << 20;
  unsigned int* d = nullptr;
  if ((err = cudaMalloc(&d, kN * sizeof(unsigned int))) != cudaSuccess) return fail("cudaMalloc", err);
  fill_pattern_kernel<<<(kN + 255) / 256, 256>>>(d, kN);
  if ((err = cudaGetLastError()) != cudaSuccess) return fail("kernel launch", err);
  std::vector<unsigned int> h(kN);
  if ((err = cudaMemcpy(h.data(), d, kN * sizeof(unsigned int), cudaMemcpyDeviceToHost)) != cudaSuccess)
    return fail("cudaMemcpy (device to host)", err);
  if ((err = cudaFree(d)) != cudaSuccess) return fail("cudaFree", err);
  for (int i = 0; i < kN; ++i) {
    if (h[static_cast<size_t>(i)] != static_cast<unsigned int>(i) * 2654435761u + 12345u) {
      std::fprintf(stderr, "gcomp-gpu-probe: the kernel wrote a wrong value at %d: the device is not usable\n", i);
      return 1;
    }
  }
  std::printf(
      "{\"name\": \"%s\", \"cc\": \"%d%d\", \"sms\": %d, \"mem_total_bytes\": %zu, \"mem_free_bytes\": %zu, "
      "\"l2_bytes\": %d, \"driver\": %d, \"runtime\": %d, \"devices\": %d}\n",
      prop.name, prop.major, prop.minor, sms, total_bytes, free_bytes, l2, driver, runtime, count);
  return 0;
}
