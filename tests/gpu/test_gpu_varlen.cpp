// SPDX-License-Identifier: Apache-2.0
// Short payloads on the GPU (docs/wire-format.md §6): DeviceCodec::decode_reduce with per-payload
// sizes, as allgatherv delivers messages into worst-case slots. Against the CPU codec decoding the
// same short payloads: bit-identical output, the CPU's size rule (cut, padded or lying length
// fields rejected, output untouched), and the slot tails zeroed. Skips without a device.
#include "common/test_util.hpp"
#include "gpu/gpu_test_util.hpp"

#include <gcomp/cuda.hpp>

#include <cstring>
#include <string>
#include <vector>

namespace gcomp::test {
namespace {

class GpuVarlen : public GpuFixture {};

/// Input whose top-k magnitudes sit in one run, so the index stream is short of its worst case.
std::vector<float> clustered(int64_t n, uint64_t seed) {
  std::vector<float> x = gaussian(n, seed);
  for (int64_t i = n / 5; i < n / 5 + n / 10; ++i) x[static_cast<size_t>(i)] += 40.0f;
  return x;
}

TEST_F(GpuVarlen, DecodeReduceOfShortPayloadsMatchesCpu) {
  const Layout layout(std::vector<int64_t>{3000, 77, 1000});
  for (const std::string spec : {"sdither:levels=1,norm=l2", "sdither:levels=4,norm=linf,block=100,code=delta,chunk=64",
                                 "topk:ratio=0.05,index=rice", "dither:levels=2"}) {
    SCOPED_TRACE(spec);
    const auto cpu = make_codec(spec, layout);
    cuda::DeviceCodec gpu(spec, layout);
    EXPECT_EQ(gpu.variable_length(), cpu->variable_length());
    const size_t full = cpu->encoded_bytes();
    const size_t stride = (full + 3) / 4 * 4 + 8;
    constexpr int kP = 3;
    std::vector<uint8_t> slots(stride * kP, 0xAB);  // stale bytes after each message
    std::vector<uint64_t> sizes(kP);
    std::vector<float> want(static_cast<size_t>(layout.num_elems()), 0.0f);
    const std::vector<float> weights = {0.5f, 1.0f, -2.0f};
    std::vector<RngKey> keys;
    for (int j = 0; j < kP; ++j) {
      const RngKey kj{99, static_cast<uint32_t>(j), 4, 0};
      keys.push_back(kj);
      const auto p = encode(*cpu, clustered(layout.num_elems(), 5 + j), kj);
      sizes[j] = cpu->used_bytes(p);
      EXPECT_EQ(
          gpu.used_bytes_for_length(cpu->variable_length() ? uint64_t{p[cpu->length_prefix_bytes() - 4]} |
                                                                 (uint64_t{p[cpu->length_prefix_bytes() - 3]} << 8) |
                                                                 (uint64_t{p[cpu->length_prefix_bytes() - 2]} << 16) |
                                                                 (uint64_t{p[cpu->length_prefix_bytes() - 1]} << 24)
                                                           : 0),
          sizes[j]);
      std::memcpy(slots.data() + stride * j, p.data(), sizes[j]);
      cpu->decode_accumulate(std::vector<uint8_t>(p.begin(), p.begin() + static_cast<std::ptrdiff_t>(sizes[j])), kj,
                             weights[j], want);
    }
    if (cpu->variable_length()) {
      EXPECT_LT(sizes[0], full);
    }
    DeviceBuffer<uint8_t> d_slots(slots, stream_);
    DeviceBuffer<uint64_t> d_sizes(sizes, stream_);
    DeviceBuffer<uint8_t> ws(gpu.workspace_bytes(), stream_);
    DeviceBuffer<float> d_out(static_cast<size_t>(layout.num_elems()), stream_);
    gpu.decode_reduce(d_slots.get(), stride, kP, d_sizes.get(), weights.data(), keys.data(), d_out.get(), ws.get(),
                      gpu.workspace_bytes(), stream_);
    EXPECT_EQ(cuda::read_status(ws.get(), stream_), gcompSuccess);
    EXPECT_TRUE(bitwise_equal(d_out.download(), want));
    const std::vector<uint8_t> after = d_slots.download();
    for (int j = 0; j < kP; ++j)
      for (size_t b = sizes[j]; b < full; ++b) ASSERT_EQ(after[stride * j + b], 0u) << "slot " << j << " byte " << b;

    // Size rule: a message one word short, one word long, or with a length field raised by one word.
    for (int bad = 0; bad < 3; ++bad) {
      if (!cpu->variable_length() && bad == 2) continue;
      std::vector<uint8_t> s2 = after;
      std::vector<uint64_t> z2 = sizes;
      if (bad == 0) z2[1] -= 4;
      if (bad == 1 && z2[1] + 4 < full) z2[1] += 4;
      if (bad == 1 && sizes[1] + 4 >= full) continue;
      if (bad == 2) {
        const size_t at = stride + cpu->length_prefix_bytes() - 4;
        uint32_t t = 0;
        std::memcpy(&t, s2.data() + at, 4);
        t += 32;
        std::memcpy(s2.data() + at, &t, 4);
      }
      DeviceBuffer<uint8_t> d_s2(s2, stream_);
      DeviceBuffer<uint64_t> d_z2(z2, stream_);
      d_out.fill_bytes(0x33);
      uint64_t index = 0;
      gpu.decode_reduce(d_s2.get(), stride, kP, d_z2.get(), weights.data(), keys.data(), d_out.get(), ws.get(),
                        gpu.workspace_bytes(), stream_);
      EXPECT_EQ(cuda::read_status(ws.get(), stream_, &index), gcompErrorCorruptPayload) << "case " << bad;
      EXPECT_EQ(index >> 40, 1u) << "case " << bad;
      for (float v : d_out.download()) {
        uint32_t u;
        std::memcpy(&u, &v, 4);
        ASSERT_EQ(u, 0x33333333u) << "case " << bad << ": output written on error";
      }
    }
  }
}

}  // namespace
}  // namespace gcomp::test
