// SPDX-License-Identifier: Apache-2.0
// Helpers of the GPU suites: the skip-without-device fixture, RAII device buffers and streams.
// Host-compiled (g++): only the CUDA runtime API and the public gcomp/cuda.hpp are used.
#pragma once

#include <gcomp/codec.hpp>
#include <gcomp/cuda.hpp>

#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <cstring>
#include <stdexcept>
#include <string>
#include <vector>

namespace gcomp::test {

inline void cuda_ok(cudaError_t err, const char* what) {
  if (err != cudaSuccess) throw std::runtime_error(std::string(what) + ": " + cudaGetErrorString(err));
}
#define GCOMP_TEST_CUDA(call) ::gcomp::test::cuda_ok((call), #call)

/// Device memory of `count` elements of T (exactly that many bytes are requested), bound to the
/// stream the test's codec calls run on. Every transfer and fill is enqueued on that stream and
/// waited for: it is ordered after the work already on the stream (an upload never lands under a
/// running kernel, a download sees every kernel before it) and complete when it returns (nothing
/// lands after a later kernel). Plain cudaMemcpy/cudaMemset would use the legacy default stream,
/// which is not ordered with a non-blocking stream.
template <class T>
class DeviceBuffer {
 public:
  DeviceBuffer(size_t count, cudaStream_t stream) : count_(count), stream_(stream) {
    if (count > 0) GCOMP_TEST_CUDA(cudaMalloc(reinterpret_cast<void**>(&ptr_), count * sizeof(T)));
  }
  DeviceBuffer(const std::vector<T>& host, cudaStream_t stream) : DeviceBuffer(host.size(), stream) { upload(host); }
  ~DeviceBuffer() {
    if (ptr_ != nullptr) (void)cudaFree(ptr_);
  }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;

  T* get() const { return ptr_; }
  size_t size() const { return count_; }
  size_t bytes() const { return count_ * sizeof(T); }
  cudaStream_t stream() const { return stream_; }
  void upload(const std::vector<T>& host) {
    if (host.size() > count_) throw std::runtime_error("DeviceBuffer::upload: more elements than the buffer holds");
    if (!host.empty())
      GCOMP_TEST_CUDA(cudaMemcpyAsync(ptr_, host.data(), host.size() * sizeof(T), cudaMemcpyHostToDevice, stream_));
    GCOMP_TEST_CUDA(cudaStreamSynchronize(stream_));
  }
  std::vector<T> download() const {
    std::vector<T> host(count_);
    if (count_ > 0) GCOMP_TEST_CUDA(cudaMemcpyAsync(host.data(), ptr_, bytes(), cudaMemcpyDeviceToHost, stream_));
    GCOMP_TEST_CUDA(cudaStreamSynchronize(stream_));
    return host;
  }
  void fill_bytes(int value) {
    if (count_ > 0) GCOMP_TEST_CUDA(cudaMemsetAsync(ptr_, value, bytes(), stream_));
    GCOMP_TEST_CUDA(cudaStreamSynchronize(stream_));
  }

 private:
  T* ptr_ = nullptr;
  size_t count_ = 0;
  cudaStream_t stream_ = nullptr;
};

/// Skips every test of a suite when no CUDA device is present, and gives each test its own
/// non-blocking (non-default) stream.
class GpuFixture : public testing::Test {
 protected:
  void SetUp() override {
    std::string why;
    if (!cuda::device_available(&why)) GTEST_SKIP() << "no CUDA device: " << why;
    GCOMP_TEST_CUDA(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking));
  }
  void TearDown() override {
    if (stream_ != nullptr) (void)cudaStreamDestroy(stream_);
  }
  void sync() { GCOMP_TEST_CUDA(cudaStreamSynchronize(stream_)); }

  cudaStream_t stream_ = nullptr;
};

/// Same for parameterized suites.
template <class Param>
class GpuParamFixture : public testing::TestWithParam<Param> {
 protected:
  void SetUp() override {
    std::string why;
    if (!cuda::device_available(&why)) GTEST_SKIP() << "no CUDA device: " << why;
    GCOMP_TEST_CUDA(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking));
  }
  void TearDown() override {
    if (stream_ != nullptr) (void)cudaStreamDestroy(stream_);
  }
  void sync() { GCOMP_TEST_CUDA(cudaStreamSynchronize(stream_)); }

  cudaStream_t stream_ = nullptr;
};

}  // namespace gcomp::test
