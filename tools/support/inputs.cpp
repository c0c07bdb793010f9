// SPDX-License-Identifier: Apache-2.0
// Deterministic test inputs (tools/support/inputs.hpp).
#include "tools/support/inputs.hpp"

#include <cmath>
#include <random>

namespace gcomp {

std::vector<float> gaussian_vector(int64_t n, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::vector<float> x(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; i += 2) {
    const double u1 = (static_cast<double>(rng() >> 11) + 0.5) * 0x1.0p-53;
    const double u2 = static_cast<double>(rng() >> 11) * 0x1.0p-53;
    const double r = std::sqrt(-2.0 * std::log(u1));
    x[static_cast<size_t>(i)] = static_cast<float>(r * std::cos(6.283185307179586 * u2));
    if (i + 1 < n) x[static_cast<size_t>(i + 1)] = static_cast<float>(r * std::sin(6.283185307179586 * u2));
  }
  return x;
}

}  // namespace gcomp
