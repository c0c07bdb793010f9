// SPDX-License-Identifier: Apache-2.0
// The CUDA resources of the device constructors (DeviceCodec, the cuda Session backend) on every
// error path, without a GPU: this binary defines the CUDA runtime functions those constructors call
// (the executable's definitions take the place of libcudart's), with host memory for device
// memory, bookkeeping of every allocation, stream and event, and a failure injected at the k-th
// call. It checks, for every k, that a constructor that fails at call k leaves nothing allocated;
// and that a successful construction leaves no asynchronous copy or fill outstanding, i.e. every
// buffer is initialised before any stream of the caller can use it (a fill on the legacy stream
// is not ordered with a non-blocking stream). Kernels are never launched here: construction
// launches none, and a launch would reach the real runtime and fail the test.
//
// Runs everywhere CUDA is built (CI included); it is not a GPU test and needs no device.
#include "algorithms/session_cases.hpp"

#include <gcomp/comm.hpp>
#include <gcomp/cuda.hpp>
#include <gcomp/error.hpp>
#include <gcomp/session.hpp>

#include <cuda_runtime_api.h>
#include <gtest/gtest.h>

#include <cstdlib>
#include <cstring>
#include <map>
#include <mutex>
#include <set>
#include <string>
#include <vector>

namespace {

struct FakeRuntime {
  std::mutex m;
  std::map<void*, size_t> device, pinned;
  std::set<void*> streams, events;
  std::map<void*, int> pending;  ///< per stream (nullptr: legacy): copies/fills not yet waited for
  long calls = 0;                ///< fallible calls made so far
  long fail_at = -1;             ///< the fallible call that fails (0-based); -1: none
  bool failed = false;           ///< the injected failure happened

  void reset() {
    std::lock_guard<std::mutex> lock(m);
    calls = 0;
    fail_at = -1;
    failed = false;
    pending.clear();
  }
  int outstanding() {
    std::lock_guard<std::mutex> lock(m);
    int total = 0;
    for (const auto& [s, count] : pending) total += count;
    return total;
  }
  size_t live() {
    std::lock_guard<std::mutex> lock(m);
    return device.size() + pinned.size() + streams.size() + events.size();
  }
};

FakeRuntime& rt() {
  static FakeRuntime r;
  return r;
}

constexpr cudaError_t kInjected = cudaErrorMemoryAllocation;

/// Counts a fallible call; true when it is the one to fail.
bool inject() {
  FakeRuntime& r = rt();
  std::lock_guard<std::mutex> lock(r.m);
  const bool fail = r.calls++ == r.fail_at;
  if (fail) r.failed = true;
  return fail;
}

void enqueue(cudaStream_t s) {
  std::lock_guard<std::mutex> lock(rt().m);
  ++rt().pending[static_cast<void*>(s)];
}

void* new_handle() { return std::malloc(1); }

}  // namespace

// ------------------------------------------------------------------- the runtime, as used here
extern "C" {

cudaError_t cudaGetDeviceCount(int* count) {
  if (inject()) return kInjected;
  *count = 1;
  return cudaSuccess;
}
cudaError_t cudaGetDevice(int* device) {
  if (inject()) return kInjected;
  *device = 0;
  return cudaSuccess;
}
cudaError_t cudaSetDevice(int) { return inject() ? kInjected : cudaSuccess; }
cudaError_t cudaDeviceGetAttribute(int* value, enum cudaDeviceAttr attr, int) {
  if (inject()) return kInjected;
  switch (attr) {
    case cudaDevAttrMultiProcessorCount: *value = 132; break;
    case cudaDevAttrComputeCapabilityMajor: *value = 9; break;
    case cudaDevAttrComputeCapabilityMinor: *value = 0; break;
    case cudaDevAttrWarpSize: *value = 32; break;
    case cudaDevAttrMaxThreadsPerBlock: *value = 1024; break;
    case cudaDevAttrMaxSharedMemoryPerBlock: *value = 49152; break;
    default: *value = 1; break;
  }
  return cudaSuccess;
}
cudaError_t cudaFuncGetAttributes(struct cudaFuncAttributes* attr, const void*) {
  if (inject()) return kInjected;
  std::memset(attr, 0, sizeof *attr);
  attr->ptxVersion = 90;
  attr->binaryVersion = 90;
  attr->maxThreadsPerBlock = 1024;
  return cudaSuccess;
}
cudaError_t cudaOccupancyMaxActiveBlocksPerMultiprocessorWithFlags(int* num_blocks, const void*, int, size_t,
                                                                   unsigned int) {
  if (inject()) return kInjected;
  *num_blocks = 8;
  return cudaSuccess;
}
cudaError_t cudaGetLastError(void) { return cudaSuccess; }
cudaError_t cudaPeekAtLastError(void) { return cudaSuccess; }
const char* cudaGetErrorString(cudaError_t error) {
  return error == kInjected ? "injected failure (fake CUDA runtime)" : "error (fake CUDA runtime)";
}
const char* cudaGetErrorName(cudaError_t) { return "cudaErrorFake"; }

cudaError_t cudaMalloc(void** ptr, size_t size) {
  *ptr = nullptr;
  if (inject()) return kInjected;
  if (size == 0) return cudaSuccess;
  *ptr = std::malloc(size);
  std::lock_guard<std::mutex> lock(rt().m);
  rt().device[*ptr] = size;
  return cudaSuccess;
}
cudaError_t cudaFree(void* ptr) {
  if (ptr == nullptr) return cudaSuccess;
  std::lock_guard<std::mutex> lock(rt().m);
  if (rt().device.erase(ptr) == 0) return cudaErrorInvalidValue;
  std::free(ptr);
  return cudaSuccess;
}
cudaError_t cudaMallocHost(void** ptr, size_t size) {
  *ptr = nullptr;
  if (inject()) return kInjected;
  *ptr = std::malloc(size == 0 ? 1 : size);
  std::lock_guard<std::mutex> lock(rt().m);
  rt().pinned[*ptr] = size;
  return cudaSuccess;
}
cudaError_t cudaFreeHost(void* ptr) {
  if (ptr == nullptr) return cudaSuccess;
  std::lock_guard<std::mutex> lock(rt().m);
  if (rt().pinned.erase(ptr) == 0) return cudaErrorInvalidValue;
  std::free(ptr);
  return cudaSuccess;
}

// Copies and fills act at once on the host memory standing for device memory, and count as
// outstanding on their stream until a synchronization of that stream (or of the device). cudaMemcpy
// and cudaMemset are the legacy stream's: a fill, and a copy from pageable host memory to the
// device, may return before the device has the bytes.
cudaError_t cudaMemcpy(void* dst, const void* src, size_t count, enum cudaMemcpyKind kind) {
  if (inject()) return kInjected;
  if (count > 0) std::memcpy(dst, src, count);
  if (kind != cudaMemcpyDeviceToHost) enqueue(nullptr);
  return cudaSuccess;
}
cudaError_t cudaMemcpyAsync(void* dst, const void* src, size_t count, enum cudaMemcpyKind, cudaStream_t stream) {
  if (inject()) return kInjected;
  if (count > 0) std::memcpy(dst, src, count);
  enqueue(stream);
  return cudaSuccess;
}
cudaError_t cudaMemset(void* ptr, int value, size_t count) {
  if (inject()) return kInjected;
  if (count > 0) std::memset(ptr, value, count);
  enqueue(nullptr);
  return cudaSuccess;
}
cudaError_t cudaMemsetAsync(void* ptr, int value, size_t count, cudaStream_t stream) {
  if (inject()) return kInjected;
  if (count > 0) std::memset(ptr, value, count);
  enqueue(stream);
  return cudaSuccess;
}

cudaError_t cudaStreamCreateWithFlags(cudaStream_t* stream, unsigned int) {
  *stream = nullptr;
  if (inject()) return kInjected;
  void* h = new_handle();
  std::lock_guard<std::mutex> lock(rt().m);
  rt().streams.insert(h);
  *stream = static_cast<cudaStream_t>(h);
  return cudaSuccess;
}
cudaError_t cudaStreamDestroy(cudaStream_t stream) {
  std::lock_guard<std::mutex> lock(rt().m);
  if (rt().streams.erase(static_cast<void*>(stream)) == 0) return cudaErrorInvalidResourceHandle;
  rt().pending.erase(static_cast<void*>(stream));
  std::free(static_cast<void*>(stream));
  return cudaSuccess;
}
cudaError_t cudaStreamSynchronize(cudaStream_t stream) {
  if (inject()) return kInjected;
  std::lock_guard<std::mutex> lock(rt().m);
  rt().pending.erase(static_cast<void*>(stream));
  return cudaSuccess;
}
cudaError_t cudaStreamQuery(cudaStream_t) { return inject() ? kInjected : cudaSuccess; }
cudaError_t cudaDeviceSynchronize(void) {
  if (inject()) return kInjected;
  std::lock_guard<std::mutex> lock(rt().m);
  rt().pending.clear();
  return cudaSuccess;
}
cudaError_t cudaStreamIsCapturing(cudaStream_t, enum cudaStreamCaptureStatus* status) {
  if (inject()) return kInjected;
  *status = cudaStreamCaptureStatusNone;
  return cudaSuccess;
}
cudaError_t cudaStreamWaitEvent(cudaStream_t, cudaEvent_t, unsigned int) { return inject() ? kInjected : cudaSuccess; }
cudaError_t cudaEventCreateWithFlags(cudaEvent_t* event, unsigned int) {
  *event = nullptr;
  if (inject()) return kInjected;
  void* h = new_handle();
  std::lock_guard<std::mutex> lock(rt().m);
  rt().events.insert(h);
  *event = static_cast<cudaEvent_t>(h);
  return cudaSuccess;
}
cudaError_t cudaEventDestroy(cudaEvent_t event) {
  std::lock_guard<std::mutex> lock(rt().m);
  if (rt().events.erase(static_cast<void*>(event)) == 0) return cudaErrorInvalidResourceHandle;
  std::free(static_cast<void*>(event));
  return cudaSuccess;
}
cudaError_t cudaEventRecord(cudaEvent_t, cudaStream_t) { return inject() ? kInjected : cudaSuccess; }

}  // extern "C"

namespace gcomp::test {
namespace {

/// Runs `construct` to count its fallible runtime calls (after a first run that fills the caches
/// of CUB's device queries), then once per call with that call failing: every failing run must
/// throw gcomp::Error and leave no allocation, stream or event.
template <class Fn>
void every_failure_frees_everything(const std::string& what, Fn construct) {
  FakeRuntime& r = rt();
  const size_t before = r.live();  // nonzero only if an earlier case leaked (reported there)
  r.reset();
  ASSERT_NO_THROW(construct()) << what << ": construction on the fake runtime failed";
  r.reset();
  ASSERT_NO_THROW(construct()) << what << ": construction on the fake runtime failed";
  ASSERT_EQ(r.live(), before) << what << ": a successful construction and destruction leaked";
  const long calls = r.calls;
  ASSERT_GT(calls, 0) << what << ": the fake runtime saw no CUDA calls";
  for (long at = 0; at < calls; ++at) {
    const size_t base = r.live();  // a leak is reported once, at the failure point that made it
    r.reset();
    r.fail_at = at;
    bool threw = false;
    try {
      construct();
    } catch (const Error& e) {
      threw = true;
      EXPECT_TRUE(e.status() == gcompErrorCuda || e.status() == gcompErrorNotSupported)
          << what << " failing at call " << at << ": " << e.what();
    }
    EXPECT_TRUE(r.failed) << what << ": call " << at << " was never made";
    EXPECT_TRUE(threw) << what << ": a failure at call " << at << " of " << calls << " was not reported";
    EXPECT_EQ(r.live(), base) << what << ": a failure at call " << at << " of " << calls
                              << " leaked allocations, streams or events";
  }
  r.reset();
}

const std::vector<int64_t> kSegments = {4097, 0, 33};

TEST(CudaRuntimeFaults, DeviceCodecConstructorFreesEverythingOnEveryFailure) {
  for (const char* spec :
       {"dither:levels=4,block=512", "terngrad:clip=2.5", "spherical:block=8,bits=3",
        "sdither:levels=2,block=64,chunk=100", "topk:k=10", "randk:k=5", "sign:block=64", "natural", "grid:bits=9"}) {
    every_failure_frees_everything(spec, [&] { const cuda::DeviceCodec codec(spec, Layout(kSegments)); });
  }
}

TEST(CudaRuntimeFaults, CudaSessionConstructorFreesEverythingOnEveryFailure) {
  for (const char* name : {"diana", "terngrad_shared", "dist_ef_sgdm_sharded", "compressed_gd_spherical"}) {
    every_failure_frees_everything(name, [&] {
      run_local(1, [&](Communicator& comm) {
        const Session s(comm, Layout(kSegments), session_case_config(session_case(name), Backend::kCuda));
      });
    });
  }
}

// Every copy and fill a constructor enqueues (the device tables, the zeroed session state, the
// status word) has completed when it returns: a step on a caller's non-blocking stream, which is
// not ordered with the legacy stream or the session's own stream, then finds them in place.
TEST(CudaRuntimeFaults, ConstructionLeavesNoCopyOrFillOutstanding) {
  FakeRuntime& r = rt();
  for (const char* spec : {"dither:levels=4,block=512", "spherical:block=8,bits=3", "topk:k=10"}) {
    r.reset();
    const cuda::DeviceCodec codec(spec, Layout(kSegments));
    EXPECT_EQ(r.outstanding(), 0) << spec;
  }
  for (const SessionCase& c : kSessionCases) {
    r.reset();
    const size_t before = r.live();
    run_local(1, [&](Communicator& comm) {
      const Session s(comm, Layout(kSegments), session_case_config(c, Backend::kCuda));
      EXPECT_EQ(r.outstanding(), 0) << c.name << ": the session state may not be zero yet when a step starts";
    });
    EXPECT_EQ(r.live(), before) << c.name << ": leaked";
  }
}

}  // namespace
}  // namespace gcomp::test
