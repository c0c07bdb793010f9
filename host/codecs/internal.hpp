// SPDX-License-Identifier: Apache-2.0
// Helpers shared by the CPU reference codecs: little-endian payload access and the fixed-order
// block reduction of include/gcomp/detail/reduce.hpp.
#pragma once

#include <gcomp/codec.hpp>
#include <gcomp/detail/reduce.hpp>

#include <cstring>
#include <string>
#include <vector>

namespace gcomp::detail {

inline uint32_t load_u32(const uint8_t* p) {
  uint32_t v;
  std::memcpy(&v, p, 4);
  return v;
}
inline void store_u32(uint8_t* p, uint32_t v) { std::memcpy(p, &v, 4); }
inline float load_f32(const uint8_t* p) {
  float v;
  std::memcpy(&v, p, 4);
  return v;
}
inline void store_f32(uint8_t* p, float v) { std::memcpy(p, &v, 4); }

/// Reduces x[0, len) in the order defined in reduce.hpp.
template <class Op>
double block_reduce(const Op& op, const float* x, int64_t len) {
  const int64_t tiles = ceil_div(len, kTileElems);
  if (tiles == 0) return op.identity();
  std::vector<double> tile_values(static_cast<size_t>(next_pow2(tiles)), op.identity());
  double lanes[kLanes];
  for (int64_t t = 0; t < tiles; ++t) {
    const int64_t begin = t * kTileElems;
    const int64_t tile_len = len - begin < kTileElems ? len - begin : kTileElems;
    for (int l = 0; l < kLanes; ++l) lanes[l] = lane_accumulate(op, x + begin, tile_len, l);
    tile_values[static_cast<size_t>(t)] = tree_combine_pow2(op, lanes, kLanes);
  }
  return tree_combine_pow2(op, tile_values.data(), static_cast<int64_t>(tile_values.size()));
}

/// Throws gcompErrorNonFinite naming the first offending element.
void require_finite(const float* x, int64_t n);

/// Throws gcompErrorCorruptPayload with a codec-prefixed reason.
[[noreturn]] void corrupt(const CodecSpec& spec, const std::string& why);

}  // namespace gcomp::detail
