// SPDX-License-Identifier: Apache-2.0
// A small distributed training loop with the gcomp C++ API: least squares on synthetic data split
// over 4 ranks (threads of this process, local communicators), DIANA with a 4-level dithering
// codec. Prints the relative distance to the exact solution every 100 steps and at the end.
//
//   f(x) = (1/P) sum_i f_i(x),  f_i(x) = 1/(2 m) |A_i x - b_i|^2,  b_i = A_i x_star
#include <gcomp/comm.hpp>
#include <gcomp/session.hpp>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <exception>
#include <vector>

namespace {

constexpr int kRanks = 4;
constexpr int64_t kDim = 64;    // parameters
constexpr int64_t kRows = 128;  // samples per rank
constexpr int kSteps = 400;

// Deterministic data: a 64-bit LCG mapped to [-1, 1).
struct Lcg {
  uint64_t state;
  double next() {
    state = state * 6364136223846793005ull + 1442695040888963407ull;
    return static_cast<double>(state >> 11) * 0x1.0p-52 - 1.0;
  }
};

struct Shard {
  std::vector<double> a;  // kRows x kDim, row major
  std::vector<double> b;  // kRows
};

Shard make_shard(int rank, const std::vector<double>& x_star) {
  Lcg rng{0x9e3779b97f4a7c15ull * static_cast<uint64_t>(rank + 1)};
  Shard s{std::vector<double>(static_cast<size_t>(kRows * kDim)), std::vector<double>(static_cast<size_t>(kRows))};
  for (double& v : s.a) v = rng.next();
  for (int64_t r = 0; r < kRows; ++r) {
    double dot = 0.0;
    for (int64_t j = 0; j < kDim; ++j) dot += s.a[static_cast<size_t>(r * kDim + j)] * x_star[static_cast<size_t>(j)];
    s.b[static_cast<size_t>(r)] = dot;
  }
  return s;
}

// grad f_i(x) = (1/m) A_i^T (A_i x - b_i)
void gradient(const Shard& s, const std::vector<double>& x, std::vector<double>& g) {
  std::fill(g.begin(), g.end(), 0.0);
  for (int64_t r = 0; r < kRows; ++r) {
    double res = -s.b[static_cast<size_t>(r)];
    for (int64_t j = 0; j < kDim; ++j) res += s.a[static_cast<size_t>(r * kDim + j)] * x[static_cast<size_t>(j)];
    for (int64_t j = 0; j < kDim; ++j) g[static_cast<size_t>(j)] += res * s.a[static_cast<size_t>(r * kDim + j)];
  }
  for (double& v : g) v /= static_cast<double>(kRows);
}

double relative_error(const std::vector<double>& x, const std::vector<double>& x_star) {
  double num = 0.0, den = 0.0;
  for (size_t j = 0; j < x.size(); ++j) {
    num += (x[j] - x_star[j]) * (x[j] - x_star[j]);
    den += x_star[j] * x_star[j];
  }
  return std::sqrt(num / den);
}

}  // namespace

int main() {
  std::vector<double> x_star(static_cast<size_t>(kDim));
  Lcg rng{42};
  for (double& v : x_star) v = rng.next();

  gcomp::SessionConfig config;
  config.algorithm = gcomp::Algorithm::kDiana;
  config.codec = "dither:levels=4,norm=l2,block=16";
  config.lr = 0.5;
  config.seed = 7;

  std::vector<double> final_x;
  uint64_t bytes_up = 0;
  try {
    gcomp::run_local(kRanks, [&](gcomp::Communicator& comm) {
      const Shard shard = make_shard(comm.rank(), x_star);
      gcomp::Session session(comm, gcomp::Layout(kDim), config);
      std::vector<double> x(static_cast<size_t>(kDim), 0.0), g(static_cast<size_t>(kDim));
      for (int step = 1; step <= kSteps; ++step) {
        gradient(shard, x, g);
        const gcomp::StepStats stats = session.apply(g, x);  // every rank gets the same x
        if (comm.rank() == 0) {
          bytes_up += stats.bytes_up;
          if (step % 100 == 0)
            std::printf("step %4d  rel_error %.3e  bits/elem %.2f\n", step, relative_error(x, x_star),
                        stats.bits_per_element_up);
        }
      }
      if (comm.rank() == 0) final_x = x;
    });
  } catch (const std::exception& e) {
    std::fprintf(stderr, "cpp_training: %s\n", e.what());
    return 1;
  }
  std::printf("algorithm diana, codec %s, %d ranks, %d steps, %llu bytes sent by rank 0\n", config.codec.c_str(),
              kRanks, kSteps, static_cast<unsigned long long>(bytes_up));
  std::printf("final relative error %.3e\n", relative_error(final_x, x_star));
  return 0;
}
