// SPDX-License-Identifier: Apache-2.0
/// @file inputs.hpp
/// @brief Deterministic test inputs shared by the tools, the benchmarks and the tests. Part of the
/// tools' support library (gcomp_support), not of the installed gcomp::gcomp.
#pragma once

#include <cstdint>
#include <vector>

namespace gcomp {

/// The reports' Gaussian input: mt19937_64 and Box-Muller (std::normal_distribution is
/// implementation-defined), so `gcomp-codec bits`, `gcomp-bench bits` and the tests see the same
/// vector for the same (n, seed).
std::vector<float> gaussian_vector(int64_t n, uint64_t seed);

}  // namespace gcomp
