// SPDX-License-Identifier: Apache-2.0
#pragma once

#include "host/codecs/internal.hpp"
#include "host/codecs/select.hpp"

namespace gcomp::detail {

#define GCOMP_CODEC_DECODE_METHODS                                                                                \
  void validate(std::span<const uint8_t> payload) const override;                                                 \
  void decode_accumulate(std::span<const uint8_t> payload, const RngKey& key, float weight, std::span<float> out) \
      const override;                                                                                             \
  void decode(std::span<const uint8_t> payload, const RngKey& key, std::span<float> out) const override;

/// The range decoder of a dense codec (Codec::decode_range).
#define GCOMP_CODEC_RANGE_METHODS                                                                                \
  bool range_decodable() const override { return true; }                                                         \
  void decode_range(std::span<const uint8_t> payload, int64_t begin, int64_t end, float weight, bool accumulate, \
                    float* out) const override;

/// identity: the fp32 values themselves.
class IdentityCodec final : public Codec {
 public:
  IdentityCodec(CodecSpec spec, Layout layout) : Codec(std::move(spec), std::move(layout)) {}
  size_t encoded_bytes() const override;
  double encoded_bits() const override;
  Guarantee guarantee() const override;
  bool randomized() const override { return false; }
  void encode(std::span<const float> x, const RngKey& key, std::span<uint8_t> payload) const override;
  GCOMP_CODEC_DECODE_METHODS
  GCOMP_CODEC_RANGE_METHODS
};

/// sign: blockwise scaled sign (scale = mean |x| of the block) or plain signs (scale=none).
class SignCodec final : public Codec {
 public:
  SignCodec(CodecSpec spec, Layout layout);
  size_t encoded_bytes() const override;
  double encoded_bits() const override;
  Guarantee guarantee() const override;
  bool randomized() const override { return false; }
  int64_t num_scales() const override;
  void encode(std::span<const float> x, const RngKey& key, std::span<uint8_t> payload) const override;
  GCOMP_CODEC_DECODE_METHODS
  GCOMP_CODEC_RANGE_METHODS
  [[nodiscard]] const std::vector<int64_t>& blocks() const { return blocks_; }

 protected:
  SourceEncode encode_from(const Source& source, const RngKey& key, std::span<uint8_t> payload,
                           std::span<float> e) const override;

 private:
  void decode_impl(std::span<const uint8_t> payload, float weight, bool overwrite, std::span<float> out) const;
  /// Scaled sign, every block on a 32-element boundary: the sign words of each tile taken while
  /// the block-scale pass has it in cache (x, or the tiles of `source`, read once), into scratch
  /// that reaches the payload only once the scales are known to be finite.
  void encode_tiles(const float* x, const Source* source, std::span<uint8_t> payload) const;
  /// encode_tiles() of a source when every block fits in one tile, with e = p - decode(payload)
  /// written in the same pass (each block's scale is known once its one tile is reduced).
  void encode_ef_blocks(const Source& source, std::span<uint8_t> payload, std::span<float> e) const;
  std::vector<int64_t> blocks_;
  int64_t num_blocks_ = 0;
  int64_t words_ = 0;
  bool scaled_ = true;     ///< SignOptions::scaled
  bool aligned_ = true;    ///< every block starts on a 32-element group boundary
  int64_t max_block_ = 0;  ///< elements of the longest block
};

/// natural: sign + 8-bit exponent per element, stochastic rounding to a power of two.
class NaturalCodec final : public Codec {
 public:
  NaturalCodec(CodecSpec spec, Layout layout);
  size_t encoded_bytes() const override;
  double encoded_bits() const override;
  Guarantee guarantee() const override;
  bool randomized() const override { return true; }
  void encode(std::span<const float> x, const RngKey& key, std::span<uint8_t> payload) const override;
  GCOMP_CODEC_DECODE_METHODS
  GCOMP_CODEC_RANGE_METHODS

 private:
  void decode_impl(std::span<const uint8_t> payload, float weight, bool overwrite, std::span<float> out) const;
  /// The payload of x at `base` (encoded_bytes() bytes). With `bad` (one entry per pool piece,
  /// 0 on entry): each sub-range is also checked for NaN and Inf while in cache, and its piece's
  /// entry set to 1 when it holds one.
  void encode_to(const float* x, const RngKey& key, uint8_t* base, std::vector<uint8_t>* bad) const;
  int64_t words_ = 0;
};

/// topk (largest |x|, ties to the lower index) and randk (uniform without replacement, indices
/// regenerated from the seed): values plus (topk) bit-packed indices or Rice-coded gaps
/// (index=rice, variable length) or (randk) the stream id.
class SparseCodec final : public Codec {
 public:
  SparseCodec(CodecSpec spec, Layout layout);
  size_t encoded_bytes() const override;
  double encoded_bits() const override;
  bool variable_length() const override { return rice_; }
  size_t length_prefix_bytes() const override;
  size_t used_bytes(std::span<const uint8_t> payload) const override;
  size_t used_bytes_for_length(uint64_t length_field) const override;
  double payload_bits(std::span<const uint8_t> payload) const override;
  Guarantee guarantee() const override;
  bool randomized() const override { return spec().id() == CodecId::kRandK; }
  void encode(std::span<const float> x, const RngKey& key, std::span<uint8_t> payload) const override;
  GCOMP_CODEC_DECODE_METHODS
  /// Every payload checked first (one set of pool tasks for all of them), then each output piece
  /// takes the values of every payload, in payload order (randk: one payload after the other).
  void decode_reduce(std::span<const std::span<const uint8_t>> payloads, std::span<const RngKey> keys,
                     std::span<const float> weights, std::span<float> out) const override;
  [[nodiscard]] int64_t k() const { return k_; }
  [[nodiscard]] int index_bits() const { return index_bits_; }
  /// index=rice: the Rice parameter b, the directory entries and the worst-case stream bits.
  [[nodiscard]] uint32_t rice_param() const { return rice_b_; }
  [[nodiscard]] int64_t rice_dir() const { return rice_dir_; }
  [[nodiscard]] int64_t rice_worst_bits() const { return rice_worst_bits_; }
  /// Selected indices in increasing order (topk: of x; randk: from the key). randk with a
  /// non-empty x and `scanned` (ceil(n / kSubElems) entries, 0 on entry): the key pass also scans
  /// each sub-range of x it draws keys for, and sets its entry to 1 (finite) or 2 (holds a NaN or
  /// Inf); entries of sub-ranges it did not reach stay 0. min_key: select_first_k's.
  IndexList select(std::span<const float> x, const RngKey& key, std::vector<uint8_t>* scanned = nullptr,
                   uint32_t* min_key = nullptr) const;

 private:
  void decode_impl(std::span<const uint8_t> payload, const RngKey& key, float weight, bool overwrite,
                   std::span<float> out) const;
  /// One checked payload, ready for the write pass: its values, and its indices either read in
  /// place from the packed words (plain top-k) or held in idx (index=rice, randk).
  struct Picked {
    const uint8_t* values = nullptr;  ///< k little-endian floats
    const uint8_t* packed = nullptr;  ///< plain top-k: the index words
    IndexList idx;                    ///< otherwise: the indices, increasing
    std::vector<int64_t> first;       ///< first[p]: the first j whose index lies in pool piece p or later
    float scale = 1.0f;               ///< randk:unbiased: n/k
    float weight = 1.0f;
  };
  /// Checks the payloads and returns them ready for write_picked; reports the first error of the
  /// serial order (payload by payload: size, values, indices, padding), prefixed by "decode_reduce:
  /// payload j: " when `reduce`, and "wrong size" instead of check_payload_size's message when
  /// `direct` (validate, which gets no piece tables). The checks of all payloads run as one set of pool tasks. randk's
  /// indices are not drawn here (fill_randk).
  std::vector<Picked> pick(std::span<const std::span<const uint8_t>> payloads, std::span<const float> weights,
                           bool reduce, bool direct) const;
  /// randk: draws the selection of a picked payload from its stream id and key.
  void fill_randk(Picked& picked, std::span<const uint8_t> payload, const RngKey& key) const;
  /// Writes the picked payloads to out, each output pool piece by one task, the payloads in order:
  /// out = the one payload's values and zeros (overwrite), or out += weight * value.
  void write_picked(std::span<const Picked> picks, bool overwrite, std::span<float> out) const;
  /// index=rice: the total stream bits T (checked against the worst case).
  uint32_t rice_total(std::span<const uint8_t> payload) const;
  /// index=rice: validates the T, directory and stream of a full or short payload and returns the
  /// indices.
  IndexList rice_indices(std::span<const uint8_t> payload) const;
  void rice_encode(const IndexList& idx, uint8_t* out) const;
  int64_t k_ = 0;
  int index_bits_ = 0;
  bool unbiased_ = false;  ///< randk: RandKOptions::unbiased (topk: false)
  bool rice_ = false;
  uint32_t rice_b_ = 0;
  int64_t rice_dir_ = 0;
  int64_t rice_worst_bits_ = 0;
  int64_t rice_words_ = 0;
};

#undef GCOMP_CODEC_DECODE_METHODS
#undef GCOMP_CODEC_RANGE_METHODS

}  // namespace gcomp::detail
