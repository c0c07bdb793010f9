// SPDX-License-Identifier: Apache-2.0
// n > 2^31 elements (DESIGN.md §4: 64-bit sizes everywhere). Labelled "large" in CTest; skips unless
// a device with enough free memory (and a host with enough memory for the CPU oracle) exists.
//  - sign:block=1048576: GPU payload == CPU payload, GPU decode == CPU decode (blocks, words and
//    scales beyond 2^31);
//  - topk:k=64 with 64 planted large values, the last ones beyond index 2^31: the payload holds
//    exactly the planted indices and values (index width 32 bits, 64-bit positions).
#include "common/test_util.hpp"
#include "gpu/gpu_test_util.hpp"

#include <gcomp/codec.hpp>
#include <gcomp/cuda.hpp>

#include <unistd.h>

#include <algorithm>

#include <cstring>
#include <vector>

namespace gcomp::test {
namespace {

constexpr int64_t kN = (int64_t{1} << 31) + 4099;

class GpuLarge : public GpuFixture {
 protected:
  void SetUp() override {
    GpuFixture::SetUp();
    if (IsSkipped()) return;
    size_t free_bytes = 0;
    size_t total_bytes = 0;
    GCOMP_TEST_CUDA(cudaMemGetInfo(&free_bytes, &total_bytes));
    const size_t need_device = static_cast<size_t>(kN) * 4 * 2 + (size_t{2} << 30);
    if (free_bytes < need_device)
      GTEST_SKIP() << "needs " << (need_device >> 20) << " MiB free device memory, has " << (free_bytes >> 20);
    const long pages = sysconf(_SC_PHYS_PAGES);
    const long page = sysconf(_SC_PAGE_SIZE);
    const size_t need_host = static_cast<size_t>(kN) * 4 * 4;
    if (pages <= 0 || page <= 0 || static_cast<size_t>(pages) * static_cast<size_t>(page) < need_host)
      GTEST_SKIP() << "needs " << (need_host >> 20) << " MiB host memory";
  }
};

std::vector<float> large_input() {
  std::vector<float> x(static_cast<size_t>(kN));
  for (int64_t i = 0; i < kN; ++i)
    x[i] = static_cast<float>(static_cast<int64_t>((static_cast<uint64_t>(i) * 2654435761u) % 2001u) - 1000) * 1e-3f;
  return x;
}

TEST_F(GpuLarge, LargeSignBlocksBeyond2Pow31MatchCpu) {
  const Layout layout(kN);
  const std::string spec = "sign:block=1048576";
  const auto cpu = make_codec(spec, layout);
  cuda::DeviceCodec gpu(spec, layout);
  const std::vector<float> x = large_input();
  const RngKey key{7, 0, 1, 0};
  const std::vector<uint8_t> want = encode(*cpu, x, key);
  DeviceBuffer<uint8_t> d_payload(gpu.encoded_bytes(), stream_);
  DeviceBuffer<uint8_t> ws(gpu.workspace_bytes(), stream_);
  {
    DeviceBuffer<float> d_x(x, stream_);
    gpu.encode(d_x.get(), key, d_payload.get(), ws.get(), gpu.workspace_bytes(), stream_);
    ASSERT_EQ(cuda::read_status(ws.get(), stream_), gcompSuccess);
  }
  EXPECT_TRUE(bytes_equal(d_payload.download(), want));
  DeviceBuffer<float> d_out(static_cast<size_t>(kN), stream_);
  gpu.decode(d_payload.get(), key, d_out.get(), ws.get(), gpu.workspace_bytes(), stream_);
  ASSERT_EQ(cuda::read_status(ws.get(), stream_), gcompSuccess);
  EXPECT_TRUE(bitwise_equal(d_out.download(), decode(*cpu, want, key)));
}

TEST_F(GpuLarge, LargeTopkFindsPlantedIndicesBeyond2Pow31) {
  const Layout layout(kN);
  constexpr int64_t kK = 64;
  cuda::DeviceCodec gpu("topk:k=64", layout);
  std::vector<float> x = large_input();
  std::vector<int64_t> planted;
  for (int64_t j = 0; j < kK; ++j) planted.push_back(j < 8 ? 1000 * j + 3 : kN - 1 - 33554467 * (kK - 1 - j));
  std::sort(planted.begin(), planted.end());
  for (size_t j = 0; j < planted.size(); ++j) x[planted[j]] = (j % 2 ? -2.0f : 2.0f) + static_cast<float>(j);
  DeviceBuffer<float> d_x(x, stream_);
  DeviceBuffer<uint8_t> d_payload(gpu.encoded_bytes(), stream_);
  DeviceBuffer<uint8_t> ws(gpu.workspace_bytes(), stream_);
  gpu.encode(d_x.get(), RngKey{}, d_payload.get(), ws.get(), gpu.workspace_bytes(), stream_);
  ASSERT_EQ(cuda::read_status(ws.get(), stream_), gcompSuccess);
  const std::vector<uint8_t> payload = d_payload.download();
  const int bits = static_cast<int>(detail::ceil_log2_u64(static_cast<uint64_t>(kN)));
  ASSERT_EQ(bits, 32);
  for (int64_t j = 0; j < kK; ++j) {
    uint64_t idx = 0;
    for (int b = 0; b < bits; ++b) {
      const int64_t pos = kK * 32 + j * bits + b;
      idx |= static_cast<uint64_t>((payload[static_cast<size_t>(pos / 8)] >> (pos % 8)) & 1u) << b;
    }
    ASSERT_EQ(static_cast<int64_t>(idx), planted[j]) << "entry " << j;
    ASSERT_EQ(std::memcmp(payload.data() + 4 * j, &x[planted[j]], 4), 0) << "value " << j;
  }
}

}  // namespace
}  // namespace gcomp::test
