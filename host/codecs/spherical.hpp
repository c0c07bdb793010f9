// SPDX-License-Identifier: Apache-2.0
#pragma once

#include "host/codecs/internal.hpp"

#include <map>

namespace gcomp::detail {

/// spherical (spec/ALGORITHMS.md §5.2(b)): per block of m_l <= m_b elements, the fp32 l2 norm and
/// the B-bit index of the best of 2^B fresh Gaussian codewords drawn from the shared seed.
/// Payload (docs/wire-format.md §3.8): m f32 norms, then the m indices, B bits each, LSB first.
class SphericalCodec final : public Codec {
 public:
  SphericalCodec(CodecSpec spec, Layout layout);
  size_t encoded_bytes() const override;
  double encoded_bits() const override;
  Guarantee guarantee() const override;
  bool randomized() const override { return true; }
  int64_t num_scales() const override { return num_blocks_; }
  void encode(std::span<const float> x, const RngKey& key, std::span<uint8_t> payload) const override;
  void validate(std::span<const uint8_t> payload) const override;
  void decode_accumulate(std::span<const uint8_t> payload, const RngKey& key, float weight,
                         std::span<float> out) const override;
  void decode(std::span<const uint8_t> payload, const RngKey& key, std::span<float> out) const override;

  [[nodiscard]] const std::vector<int64_t>& blocks() const { return blocks_; }
  /// beta(len, B) of a block of `len` elements (len must be a block length of this layout).
  [[nodiscard]] double block_beta(int64_t len) const;
  /// Exact E|C(x) - x|^2 for input x: sum_l (1/beta_l^2 - 1) |x_l|^2, or with `unscaled`
  /// sum_l 2 (1 - beta_l) |x_l|^2 (§5.2(b)), from the fp32 norms the encoder sends.
  [[nodiscard]] double exact_error(std::span<const float> x) const;

 private:
  /// Whether a block of norm nu and length len decodes to finite values (issue 18 #11).
  [[nodiscard]] bool decodes_finite(float nu, int64_t len) const;
  float block_norm(const float* x, int64_t len) const;
  void decode_impl(std::span<const uint8_t> payload, const RngKey& key, float weight, bool overwrite,
                   std::span<float> out) const;

  uint32_t bits_ = 8;      ///< SphericalOptions::index_bits
  bool unscaled_ = false;  ///< SphericalOptions::unscaled
  std::vector<int64_t> blocks_;
  int64_t num_blocks_ = 0;
  int64_t index_words_ = 0;
  std::map<int64_t, double> betas_;  // block length -> beta(len, B)
};

/// beta(m, B) with a process-wide cache (the quadrature takes milliseconds).
double cached_spherical_beta(int64_t m, uint32_t bits);

}  // namespace gcomp::detail
