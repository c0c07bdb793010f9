// SPDX-License-Identifier: Apache-2.0
#pragma once

#include "host/codecs/dense_planes.hpp"
#include "host/codecs/internal.hpp"

#include <memory>

namespace gcomp::detail {

/// sdither (spec/ALGORITHMS.md §5.2(a)): the dither quantizer of §2.1 (same scales, draws and
/// levels as `dither`), with the nonzeros sent as chunked Elias-coded records.
/// Payload (docs/wire-format.md §3.7): m f32 scales, u32 total stream bits, ceil(n/C) u32 chunk
/// offsets, then the record bit stream padded with zeros to the worst-case size; it may travel
/// short, without the padding (docs/wire-format.md §6).
class SDitherCodec final : public Codec {
 public:
  SDitherCodec(CodecSpec spec, Layout layout);
  size_t encoded_bytes() const override;
  double encoded_bits() const override;
  bool variable_length() const override { return true; }
  size_t length_prefix_bytes() const override { return static_cast<size_t>(4 * num_blocks_ + 4); }
  size_t used_bytes(std::span<const uint8_t> payload) const override;
  size_t used_bytes_for_length(uint64_t length_field) const override;
  double payload_bits(std::span<const uint8_t> payload) const override;
  Guarantee guarantee() const override { return dither_->guarantee(); }
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
  /// Every payload validated first (once), then each one walked once more to add its values.
  void decode_reduce(std::span<const std::span<const uint8_t>> payloads, std::span<const RngKey> keys,
                     std::span<const float> weights, std::span<float> out) const override;

  [[nodiscard]] int64_t num_chunks() const { return num_chunks_; }
  /// Worst-case record bits of the whole stream (the buffer holds any valid stream).
  [[nodiscard]] int64_t worst_stream_bits() const { return worst_bits_; }

 private:
  /// Header words before the stream: m scales, the total, the directory.
  [[nodiscard]] size_t stream_offset_bytes() const;
  uint32_t total_bits(std::span<const uint8_t> payload) const;
  void write(std::span<const float> x, std::span<const float> scales, const RngKey& key,
             std::span<uint8_t> payload) const;
  /// A payload's header, checked (sizes, total, scales, directory, zero padding), and its
  /// stream words copied to aligned scratch with zero words after them.
  struct Parsed {
    uint32_t total = 0;
    std::vector<float> scales;
    std::vector<uint32_t> dir;
    std::vector<uint32_t> words;
  };
  Parsed parse(std::span<const uint8_t> payload) const;
  /// Walks the records of chunks [c0, c1) of a parsed payload, checking each as the wire format
  /// says, and calls sink(i, value) for each nonzero, in increasing i (defined and instantiated in
  /// sdither.cpp only). Throws on the first malformed record; the caller walks every chunk once
  /// with a no-op sink before any output changes.
  template <class Sink>
  void walk(const Parsed& p, int64_t c0, int64_t c1, Sink&& sink) const;
  /// Decode's argument checks (check_decode_args) with the payload parsed once and validated.
  Parsed checked(std::span<const uint8_t> payload, std::span<float> out) const;
  void decode_impl(std::span<const uint8_t> payload, float weight, bool overwrite, std::span<float> out) const;
  /// The values of validated payloads into out, group of chunks by group: out = the one payload's
  /// values (overwrite), or out + weights[j] * values of payload j for each j in turn.
  void add_groups(std::span<const Parsed> parsed, std::span<const float> weights, bool overwrite, float* out) const;
  /// f(c0, c1) for ranges of whole chunks covering [0, num_chunks_), on the pool when the message
  /// is large (defined in sdither.cpp only).
  template <class F>
  void for_each_chunk_range(F&& f) const;
  /// Chunks per pool task (ranges of about a piece, fixed by n and chunk), or 0 when the walks
  /// and the encode stay on the calling thread.
  [[nodiscard]] int64_t pool_chunks() const;
  /// The codes an encode writes (sdither.cpp).
  struct RecordTables;
  RecordTables record_tables() const;
  /// Encodes the records of chunks [c0, c1) into `stream` (from its bit 0, whole words, the last
  /// one zero-filled), or appends those words to `grow` when stream is null, and their offsets
  /// relative to the first bit into dir[0, c1 - c0); returns the bits.
  uint64_t write_chunks(const float* x, std::span<const float> scales, const RngKey& key, const RecordTables& t,
                        int64_t c0, int64_t c1, uint8_t* stream, std::vector<uint32_t>* grow, uint32_t* dir) const;
  /// Largest chunk whose walks run on the pool (elements).
  static constexpr int64_t kMaxPoolChunk = int64_t{1} << 18;

  std::unique_ptr<DensePlaneCodec> dither_;  // the quantizer's scales and guarantee
  uint32_t levels_ = 1;
  uint32_t code_ = 1;
  int64_t chunk_ = 4096;
  std::vector<int64_t> blocks_;
  int64_t num_blocks_ = 0;
  int64_t num_chunks_ = 0;
  int64_t worst_bits_ = 0;
  int64_t stream_words_ = 0;
  /// Records of at most kLutBits bits by their first kLutBits stream bits (sdither.cpp): the
  /// length, sign, level and gap of the record, or 0 where the exact reader decides.
  std::vector<uint32_t> lut_;
};

}  // namespace gcomp::detail
