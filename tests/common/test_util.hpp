// SPDX-License-Identifier: Apache-2.0
// Helpers shared by the test suites: deterministic inputs and first-mismatch assertions.
#pragma once

#include <gcomp/codec.hpp>

#include "tools/support/inputs.hpp"

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>
#include <string>
#include <vector>

namespace gcomp::test {

/// Gaussian vector from a fixed seed (the bits reports' generator: platform-independent).
inline std::vector<float> gaussian(int64_t n, uint64_t seed) { return gaussian_vector(n, seed); }

inline double sq_norm(const std::vector<float>& x) {
  double s = 0;
  for (float v : x) s += static_cast<double>(v) * v;
  return s;
}

inline double sq_dist(const std::vector<float>& a, const std::vector<float>& b) {
  double s = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    const double d = static_cast<double>(a[i]) - b[i];
    s += d * d;
  }
  return s;
}

/// Bitwise equality of two float vectors, reporting the first mismatch.
inline testing::AssertionResult bitwise_equal(const std::vector<float>& a, const std::vector<float>& b) {
  if (a.size() != b.size()) return testing::AssertionFailure() << "sizes " << a.size() << " vs " << b.size();
  for (size_t i = 0; i < a.size(); ++i)
    if (std::memcmp(&a[i], &b[i], 4) != 0)
      return testing::AssertionFailure() << "first mismatch at " << i << ": " << a[i] << " vs " << b[i];
  return testing::AssertionSuccess();
}

inline testing::AssertionResult bytes_equal(const std::vector<uint8_t>& a, const std::vector<uint8_t>& b) {
  if (a.size() != b.size()) return testing::AssertionFailure() << "sizes " << a.size() << " vs " << b.size();
  for (size_t i = 0; i < a.size(); ++i)
    if (a[i] != b[i])
      return testing::AssertionFailure() << "first mismatch at byte " << i << ": " << int(a[i]) << " vs " << int(b[i]);
  return testing::AssertionSuccess();
}

inline std::vector<uint8_t> encode(const Codec& c, const std::vector<float>& x, const RngKey& key) {
  std::vector<uint8_t> p(c.encoded_bytes());
  c.encode(x, key, p);
  return p;
}

inline std::vector<float> decode(const Codec& c, const std::vector<uint8_t>& p, const RngKey& key) {
  std::vector<float> y(static_cast<size_t>(c.num_elems()));
  c.decode(p, key, y);
  return y;
}

}  // namespace gcomp::test
