// SPDX-License-Identifier: Apache-2.0
/// @file philox.hpp
/// @brief Philox4x32-10 counter-based RNG, one implementation for host and device.
///
/// gcomp's random streams (DESIGN.md §3, docs/wire-format.md "Randomness"):
///   key     = (low 32 bits of seed, high 32 bits of seed)
///   counter = (low32(q), high32(q) | stream << 16, rank, step)   with q = global element index / 4
/// Word (index % 4) of the output block belongs to element `index`. Every random word is therefore
/// a pure function of (seed, stream, rank, step, element), independent of thread layout, and the
/// CPU and GPU paths draw identical bits. Element indices are global over the flat buffer, so the
/// segment is implied by the index. Known-answer tests: tests/unit/test_philox.cpp.
#pragma once

#include <gcomp/detail/hd.hpp>

namespace gcomp::detail {

struct Philox4x32 {
  uint32_t v[4];
};

GCOMP_HD void mulhilo32(uint32_t a, uint32_t b, uint32_t& hi, uint32_t& lo) {
  const uint64_t p = static_cast<uint64_t>(a) * static_cast<uint64_t>(b);
  hi = static_cast<uint32_t>(p >> 32);
  lo = static_cast<uint32_t>(p);
}

/// Philox4x32's round multipliers and key increments (Salmon et al., SC'11).
inline constexpr uint32_t kPhiloxM0 = 0xD2511F53u;
inline constexpr uint32_t kPhiloxM1 = 0xCD9E8D57u;
inline constexpr uint32_t kPhiloxW0 = 0x9E3779B9u;
inline constexpr uint32_t kPhiloxW1 = 0xBB67AE85u;

/// Philox4x32 with R rounds (10 is the standard, and the only one gcomp uses for data).
template <int R>
GCOMP_HD Philox4x32 philox4x32_rounds(Philox4x32 ctr, uint32_t k0, uint32_t k1) {
  constexpr uint32_t kM0 = kPhiloxM0;
  constexpr uint32_t kM1 = kPhiloxM1;
  constexpr uint32_t kW0 = kPhiloxW0;
  constexpr uint32_t kW1 = kPhiloxW1;
#if defined(__CUDA_ARCH__)
#pragma unroll
#endif
  for (int r = 0; r < R; ++r) {
    if (r > 0) {
      k0 += kW0;
      k1 += kW1;
    }
    uint32_t hi0, lo0, hi1, lo1;
    mulhilo32(kM0, ctr.v[0], hi0, lo0);
    mulhilo32(kM1, ctr.v[2], hi1, lo1);
    ctr = Philox4x32{{hi1 ^ ctr.v[1] ^ k0, lo1, hi0 ^ ctr.v[3] ^ k1, lo0}};
  }
  return ctr;
}

GCOMP_HD Philox4x32 philox4x32_10(Philox4x32 ctr, uint32_t k0, uint32_t k1) {
  return philox4x32_rounds<10>(ctr, k0, k1);
}

/// The keys of the 10 rounds of philox4x32_10 for `seed` (k0[r], k1[r] in round r), for loops that
/// run many blocks with one key (the SIMD kernels).
struct PhiloxRoundKeys {
  uint32_t k0[10];
  uint32_t k1[10];
};

GCOMP_HD PhiloxRoundKeys philox_round_keys(uint64_t seed) {
  PhiloxRoundKeys k{};
  k.k0[0] = static_cast<uint32_t>(seed);
  k.k1[0] = static_cast<uint32_t>(seed >> 32);
  for (int r = 1; r < 10; ++r) {
    k.k0[r] = k.k0[r - 1] + kPhiloxW0;
    k.k1[r] = k.k1[r - 1] + kPhiloxW1;
  }
  return k;
}

/// Random stream identifiers (16 bits). Distinct uses of randomness in one step never share bits.
enum : uint32_t {
  kStreamElement = 0,   ///< per-element rounding draws (dither, terngrad, natural, ...)
  kStreamSelect = 1,    ///< random-k selection keys
  kStreamCodebook = 2,  ///< spherical codebooks
  kStreamDownlink = 8,  ///< added to the above for the second (server -> worker) compression
};

/// Where a codec's random bits come from: the seed, the rank that encodes and the step.
struct RngKey {
  uint64_t seed = 0;
  uint32_t rank = 0;
  uint32_t step = 0;
  uint32_t stream_offset = 0;  ///< 0 for the uplink, kStreamDownlink for the downlink
};

/// Elements per Philox group: elements 4q .. 4q + 3 share the block of counter q.
inline constexpr int kPhiloxGroupElems = 4;

/// The 4 random words of element group q = index / 4: word j belongs to element 4q + j.
///
/// This is the group API: evaluate the block once per group and hand its words to the group
/// functions of codec_math.hpp (dither_quantize4, natdither_quantize4, natural_codes4), which give
/// exactly the results of the element functions with word j for element 4q + j.
GCOMP_HD Philox4x32 philox_block(const RngKey& key, uint32_t stream, uint64_t q) {
  const uint32_t s = stream + key.stream_offset;
  Philox4x32 ctr{{static_cast<uint32_t>(q), static_cast<uint32_t>(q >> 32) | (s << 16), key.rank, key.step}};
  return philox4x32_10(ctr, static_cast<uint32_t>(key.seed), static_cast<uint32_t>(key.seed >> 32));
}

/// The random word of one element: word (index % 4) of philox_block(key, stream, index / 4).
/// It evaluates the whole block for one word, so a loop over elements pays 4 blocks per group:
/// loops use philox_block once per group instead (one block serves its four elements).
GCOMP_HD uint32_t philox_word(const RngKey& key, uint32_t stream, uint64_t index) {
  return philox_block(key, stream, index >> 2).v[index & 3u];
}

/// Uniform float in [0, 1) with 24 random bits: exact multiple of 2^-24, so P(u < p) = p for every
/// float p that is a multiple of 2^-24 and within 2^-24 of p otherwise.
GCOMP_HD float uniform01(uint32_t word) { return static_cast<float>(word >> 8) * 5.9604644775390625e-8f; }

}  // namespace gcomp::detail
