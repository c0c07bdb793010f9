// SPDX-License-Identifier: Apache-2.0
// Large tensors (DESIGN.md §4 "n >= 2^31 ... supported", STYLE.md §8 extended tier): CPU encode and
// decode of n = 2^31 + 33 elements for three codecs: blockwise sign and 1-level l_inf dither (dense
// bit planes, block scales across 2^31) and top-k with planted spikes around 2^31 (32-bit packed
// indices, values at indices >= 2^31). Payload sizes are checked against the wire-format formulas
// and elements spot-checked around 2^31 and at the end. One n-element float buffer serves as input
// and output of every codec: each decode overwrites it and the input is regenerated from input(),
// so the peak is 4n bytes plus the largest payload (about 9.2 GB at n = 2^31 + 33). Registered by
// tests/large/CMakeLists.txt: LargeTensor.* carries the ctest label `large` (excluded from the
// default run) and skips when MemAvailable is below that peak plus 512 MiB; LargeTensorPath.* runs
// the same code at n = GCOMP_LARGE_N (default 2^20 + 33) in the default run.
#include <gcomp/codec.hpp>

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <fstream>
#include <set>
#include <sstream>
#include <string>
#include <vector>

namespace {

constexpr int64_t kBlock = 4096;

/// MemAvailable of /proc/meminfo in bytes; 0 when unknown.
int64_t available_memory() {
  std::ifstream f("/proc/meminfo");
  std::string line;
  while (std::getline(f, line)) {
    if (line.rfind("MemAvailable:", 0) == 0) {
      std::istringstream in(line.substr(13));
      int64_t kb = 0;
      in >> kb;
      return kb * 1024;
    }
  }
  return 0;
}

/// Exactly representable inputs: |x| in {0.25, ..., 1.75} (block sums are exact in binary64), the
/// sign from a second period so that signs and magnitudes do not line up.
float input(int64_t i) {
  const float mag = 0.25f * static_cast<float>(1 + i % 7);
  return (i / 3) % 2 == 0 ? mag : -mag;
}

/// Indices to spot-check: the start, around 2^31 (when inside n), around 2^32 / 2^31 + 32 group
/// edges, and the end.
std::vector<int64_t> spots(int64_t n) {
  std::vector<int64_t> out;
  const int64_t two31 = int64_t{1} << 31;
  for (int64_t i : {int64_t{0}, int64_t{1}, int64_t{31}, int64_t{32}, kBlock - 1, kBlock, two31 - 33, two31 - 2,
                    two31 - 1, two31, two31 + 1, two31 + 31, two31 + 32, n / 2, n - 33, n - 32, n - 2, n - 1})
    if (i >= 0 && i < n) out.push_back(i);
  return out;
}

/// Exact mean |x| of the block holding element i (binary64 sum of exact values, one rounding).
float block_mean_abs(int64_t i, int64_t n) {
  const int64_t b0 = i / kBlock * kBlock, b1 = std::min(n, b0 + kBlock);
  double s = 0;
  for (int64_t j = b0; j < b1; ++j) s += static_cast<double>(std::abs(input(j)));
  return static_cast<float>(s / static_cast<double>(b1 - b0));
}

float block_max_abs(int64_t i, int64_t n) {
  const int64_t b0 = i / kBlock * kBlock, b1 = std::min(n, b0 + kBlock);
  float m = 0;
  for (int64_t j = b0; j < b1; ++j) m = std::max(m, std::abs(input(j)));
  return m;
}

void fill_input(std::vector<float>& buf) {
  const int64_t n = static_cast<int64_t>(buf.size());
  for (int64_t i = 0; i < n; ++i) buf[static_cast<size_t>(i)] = input(i);
}

/// Top-k spikes: positions at the start, around 2^31 and at the end (those inside n), each with a
/// distinct magnitude above every input() value, so top-k with k = #spikes selects exactly them.
std::vector<int64_t> spike_positions(int64_t n) {
  const int64_t two31 = int64_t{1} << 31;
  std::set<int64_t> out;
  for (int64_t i : {int64_t{3}, two31 - 1, two31, two31 + 1, two31 + 17, n / 2 + 1, n - 2, n - 1})
    if (i >= 0 && i < n) out.insert(i);
  return {out.begin(), out.end()};
}

float spike_value(size_t j) { return (j % 2 == 0 ? 1.0f : -1.0f) * (100.0f + static_cast<float>(j)); }

/// Payload bytes of the largest of the three codecs at n (the dither payload).
int64_t largest_payload_bytes(int64_t n) { return 4 * ((n + kBlock - 1) / kBlock) + 8 * ((n + 31) / 32); }

/// Encodes and decodes n elements with sign:block=4096, dither:levels=1,norm=linf,block=4096 and
/// topk:k=#spikes. One buffer is input and output throughout: every decode overwrites it and the
/// input is regenerated, so the peak is 4n bytes plus one payload.
void run_large_path(int64_t n) {
  const int64_t m = (n + kBlock - 1) / kBlock;  // one segment: blocks = ceil(n / b)
  const int64_t groups = (n + 31) / 32;         // G = ceil(n / 32)
  std::vector<float> buf(static_cast<size_t>(n));
  const gcomp::RngKey key{12345u, 2u, 9u, 0u};
  const std::vector<int64_t> idx = spots(n);

  {
    fill_input(buf);
    auto codec = gcomp::make_codec("sign:block=4096", gcomp::Layout(n));
    const size_t bytes = static_cast<size_t>(4 * m + 4 * groups);  // docs/wire-format.md §3.3
    ASSERT_EQ(codec->encoded_bytes(), bytes);
    std::vector<uint8_t> payload(bytes);
    codec->encode(buf, key, payload);
    codec->decode(payload, key, buf);  // in the input's buffer: the input is regenerated by input()
    for (int64_t i : idx) {
      const float want = input(i) < 0 ? -block_mean_abs(i, n) : block_mean_abs(i, n);
      ASSERT_EQ(buf[static_cast<size_t>(i)], want) << "sign: element " << i << " of " << n;
    }
  }
  {
    fill_input(buf);
    auto codec = gcomp::make_codec("dither:levels=1,norm=linf,block=4096", gcomp::Layout(n));
    const size_t bytes = static_cast<size_t>(4 * m + 4 * groups * (1 + 1));  // §3.2, nb(1) = 1
    ASSERT_EQ(codec->encoded_bytes(), bytes);
    ASSERT_EQ(static_cast<int64_t>(bytes), largest_payload_bytes(n));
    std::vector<uint8_t> payload(bytes);
    codec->encode(buf, key, payload);
    codec->decode(payload, key, buf);
    for (int64_t i : idx) {
      const float x = input(i), nu = block_max_abs(i, n), got = buf[static_cast<size_t>(i)];
      // level 0 or 1: decoded value 0 or sign(x) * nu; |x| == nu always rounds up to level 1.
      if (std::abs(x) == nu) {
        ASSERT_EQ(got, x) << "dither: element " << i << " of " << n;
      } else {
        ASSERT_TRUE(got == 0.0f || got == (x < 0 ? -nu : nu)) << "dither: element " << i << " of " << n << " = " << got;
      }
    }
  }
  {
    fill_input(buf);
    const std::vector<int64_t> spikes = spike_positions(n);
    for (size_t j = 0; j < spikes.size(); ++j) buf[static_cast<size_t>(spikes[j])] = spike_value(j);
    const int64_t k = static_cast<int64_t>(spikes.size());
    auto codec = gcomp::make_codec("topk:k=" + std::to_string(k), gcomp::Layout(n));
    int index_bits = 0;  // ceil(log2 n)
    while ((int64_t{1} << index_bits) < n) ++index_bits;
    const size_t bytes = static_cast<size_t>(4 * k + 4 * ((k * index_bits + 31) / 32));  // §3.4
    ASSERT_EQ(codec->encoded_bytes(), bytes);
    std::vector<uint8_t> payload(bytes);
    codec->encode(buf, key, payload);
    codec->decode(payload, key, buf);  // zeros everywhere but the k selected indices
    for (size_t j = 0; j < spikes.size(); ++j)
      ASSERT_EQ(buf[static_cast<size_t>(spikes[j])], spike_value(j)) << "topk: spike at " << spikes[j] << " of " << n;
    for (int64_t i : idx) {
      if (!std::binary_search(spikes.begin(), spikes.end(), i)) {
        ASSERT_EQ(buf[static_cast<size_t>(i)], 0.0f) << "topk: element " << i << " of " << n;
      }
    }
    ASSERT_EQ(std::count_if(buf.begin(), buf.end(), [](float v) { return v != 0.0f; }), k) << "topk: nonzeros";
  }
}

TEST(LargeTensor, TwoToThe31Plus33) {
  const int64_t n = (int64_t{1} << 31) + 33;
  const int64_t need = 4 * n + largest_payload_bytes(n) + (int64_t{512} << 20);
  const int64_t have = available_memory();
  if (have < need)
    GTEST_SKIP() << "needs " << (need >> 20) << " MiB of available memory for n = 2^31 + 33, MemAvailable is "
                 << (have >> 20) << " MiB";
  run_large_path(n);
}

TEST(LargeTensorPath, SmallerNSameCode) {
  int64_t n = (int64_t{1} << 20) + 33;
  if (const char* env = std::getenv("GCOMP_LARGE_N")) n = std::strtoll(env, nullptr, 10);
  ASSERT_GT(n, 0) << "GCOMP_LARGE_N must be a positive element count";
  run_large_path(n);
}

}  // namespace
