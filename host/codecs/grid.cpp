// SPDX-License-Identifier: Apache-2.0
// grid: deterministic rounding to a grid (spec/ALGORITHMS.md §6.1 "epsilon-compressors", §7.1
// "absolute error <= eps"). Payload: n levels of `bits` bits each, two's complement, packed LSB
// first into little-endian uint32 words (docs/wire-format.md §3.9).
#include "host/codecs/grid.hpp"

#include "host/codecs/internal.hpp"

#include <gcomp/detail/codec_math.hpp>
#include <gcomp/detail/grid.hpp>
#include <gcomp/detail/sparse.hpp>

#include <algorithm>

namespace gcomp::detail {

namespace {

class GridCodec final : public Codec {
 public:
  GridCodec(CodecSpec spec, Layout layout) : Codec(std::move(spec), std::move(layout)) {
    bits_ = static_cast<int>(this->spec().bits);
    words_ = ceil_div(num_elems() * bits_, 32);
    mask_ = bits_ == 32 ? 0xffffffffull : ((uint64_t{1} << bits_) - 1);
  }
  size_t encoded_bytes() const override { return static_cast<size_t>(4 * words_); }
  double encoded_bits() const override { return static_cast<double>(bits_) * static_cast<double>(num_elems()); }
  Guarantee guarantee() const override { return Guarantee{}; }
  bool randomized() const override { return false; }

  void encode(std::span<const float> x, const RngKey&, std::span<uint8_t> payload) const override {
    check_encode_args(x, payload);
    require_finite(x.data(), num_elems());
    // Packed in pieces of kPiece elements: a piece spans kPiece * bits_ bits, a whole number of
    // words, so packing it on its own gives the same words as packing all n at once, with
    // bounded scratch.
    constexpr int64_t kPiece = 32 * 1024;
    std::vector<int64_t> stored(static_cast<size_t>(std::min(num_elems(), kPiece)));
    for (int64_t begin = 0; begin < num_elems(); begin += kPiece) {
      const int64_t len = std::min(num_elems() - begin, kPiece);
      for (int64_t i = 0; i < len; ++i)
        stored[i] = static_cast<int64_t>(static_cast<uint64_t>(grid_level(x[begin + i], spec().step, spec().bits)) & mask_);
      const int64_t w0 = begin / 32 * bits_, piece_words = ceil_div(len * bits_, 32);
      for (int64_t w = 0; w < piece_words; ++w)
        store_u32(payload.data() + 4 * (w0 + w), pack_index_word(stored.data(), len, bits_, w));
    }
  }

  void validate(std::span<const uint8_t> payload) const override {
    if (payload.size() != encoded_bytes()) corrupt(spec(), "wrong size");
    const uint64_t most_negative = uint64_t{1} << (bits_ - 1);
    for (int64_t i = 0; i < num_elems(); ++i)
      if (stored(payload, i) == most_negative) corrupt(spec(), "level out of range at element " + std::to_string(i));
    const int64_t used = num_elems() * bits_;
    if (used % 32 != 0 && (load_u32(payload.data() + 4 * (used / 32)) >> (used % 32)))
      corrupt(spec(), "padding bits set after the last level");
  }

  void decode_accumulate(std::span<const uint8_t> payload, const RngKey&, float weight,
                         std::span<float> out) const override {
    check_decode_args(payload, out);
    for (int64_t i = 0; i < num_elems(); ++i) out[i] = accumulate(out[i], weight, value(payload, i));
  }

  void decode(std::span<const uint8_t> payload, const RngKey&, std::span<float> out) const override {
    check_decode_args(payload, out);
    for (int64_t i = 0; i < num_elems(); ++i) out[i] = value(payload, i);
  }

 private:
  uint64_t stored(std::span<const uint8_t> payload, int64_t i) const {
    const int64_t bit = i * bits_;
    uint64_t lo = load_u32(payload.data() + 4 * (bit / 32));
    if (bit % 32 + bits_ > 32) lo |= static_cast<uint64_t>(load_u32(payload.data() + 4 * (bit / 32 + 1))) << 32;
    return (lo >> (bit % 32)) & mask_;
  }
  float value(std::span<const uint8_t> payload, int64_t i) const {
    const uint64_t s = stored(payload, i);
    const int64_t level = (s >> (bits_ - 1)) ? static_cast<int64_t>(s) - static_cast<int64_t>(mask_) - 1
                                             : static_cast<int64_t>(s);
    return grid_value(level, spec().step);
  }

  int bits_ = 16;
  int64_t words_ = 0;
  uint64_t mask_ = 0xffff;
};

}  // namespace

std::unique_ptr<Codec> make_grid_codec(const CodecSpec& spec, const Layout& layout) {
  return std::make_unique<GridCodec>(spec, layout);
}

}  // namespace gcomp::detail
