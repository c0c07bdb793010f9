// SPDX-License-Identifier: Apache-2.0
#pragma once

#include "host/codecs/internal.hpp"

#include <gcomp/detail/codec_math.hpp>

namespace gcomp::detail {

/// dither, terngrad and natdither: per-block fp32 scale plus sign and level bit planes.
class DensePlaneCodec final : public Codec {
 public:
  DensePlaneCodec(CodecSpec spec, Layout layout);
  size_t encoded_bytes() const override;
  double encoded_bits() const override;
  Guarantee guarantee() const override;
  bool randomized() const override { return true; }
  int64_t num_scales() const override { return num_blocks_; }
  void encode(std::span<const float> x, const RngKey& key, std::span<uint8_t> payload) const override;
  void compute_scales(std::span<const float> x, std::span<float> scales) const override;
  void encode_with_scales(std::span<const float> x, std::span<const float> scales, const RngKey& key,
                          std::span<uint8_t> payload) const override;
  void validate(std::span<const uint8_t> payload) const override;
  void decode_accumulate(std::span<const uint8_t> payload, const RngKey& key, float weight,
                         std::span<float> out) const override;
  void decode(std::span<const uint8_t> payload, const RngKey& key, std::span<float> out) const override;
  bool range_decodable() const override { return true; }
  void decode_range(std::span<const uint8_t> payload, int64_t begin, int64_t end, float weight, bool accumulate,
                    float* out) const override;

  [[nodiscard]] const std::vector<int64_t>& blocks() const { return blocks_; }
  [[nodiscard]] int nbits() const { return nbits_; }

 private:
  std::vector<float> scales_of(const float* x) const;
  /// The scales of blocks [b0, b1) into out[b0 ..] (their reduction on this thread).
  void scales_of_blocks(const float* x, int64_t b0, int64_t b1, float* out) const;
  float value(uint32_t level, bool negative, float scale) const;
  void write(std::span<const float> x, std::span<const float> scales, const RngKey& key,
             std::span<uint8_t> payload) const;
  /// The group words of elements [begin, end) (a piece), written at groups + 4 (begin / 32) words.
  void write_piece(const float* x, const float* scales, const RngKey& key, int64_t begin, int64_t end,
                   uint8_t* groups) const;
  void decode_impl(std::span<const uint8_t> payload, float weight, bool overwrite, std::span<float> out) const;

  uint32_t levels_ = 1;
  uint32_t norm_ = 2;
  double p_ = 2.0;  ///< l_p exponent of norm_ (DitherOptions::p)
  int nbits_ = 1;
  std::vector<int64_t> blocks_;
  int64_t num_blocks_ = 0;
  int64_t groups_ = 0;
  /// encode reads x once: every block lies in one piece, its scale needs one reduction of the
  /// block (l1, l2, linf, terngrad without clip) and the staged payload fits kMaxStagingBytes, so
  /// each piece computes its blocks' scales and quantizes while the piece is in cache.
  bool one_pass_ = false;
  /// The decode's level table of a block is scale * unit_[level] (one float product per level,
  /// no division): unit_[level] is exact and the product rounds like value() (dense_planes.cpp,
  /// DensePlaneCodec::DensePlaneCodec). Empty when that does not hold (then value() per level).
  std::vector<float> unit_;
};

}  // namespace gcomp::detail
