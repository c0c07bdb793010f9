// SPDX-License-Identifier: Apache-2.0
// grid: deterministic rounding to a grid (spec/ALGORITHMS.md §6.1 "epsilon-compressors", §7.1
// "absolute error <= eps"). Payload: n levels of `bits` bits each, two's complement, packed LSB
// first into little-endian uint32 words (docs/wire-format.md §3.9).
#include "host/codecs/grid.hpp"

#include "host/codecs/internal.hpp"
#include "host/codecs/pieces.hpp"

#include <gcomp/detail/codec_math.hpp>
#include <gcomp/detail/grid.hpp>
#include <gcomp/detail/payload_rules.hpp>
#include <gcomp/detail/sparse.hpp>

#include <algorithm>
#include <cstring>

namespace gcomp::detail {

namespace {

class GridCodec final : public Codec {
 public:
  GridCodec(CodecSpec spec, Layout layout) : Codec(std::move(spec), std::move(layout)) {
    const GridOptions& o = this->spec().options<GridOptions>();
    level_bits_ = o.level_bits;
    quantum_ = o.quantum;
    bits_ = static_cast<int>(level_bits_);
    words_ = ceil_div(num_elems() * bits_, 32);
  }
  size_t encoded_bytes() const override { return static_cast<size_t>(4 * words_); }
  double encoded_bits() const override { return static_cast<double>(bits_) * static_cast<double>(num_elems()); }
  Guarantee guarantee() const override { return Guarantee{}; }
  bool randomized() const override { return false; }

  void encode(std::span<const float> x, const RngKey&, std::span<uint8_t> payload) const override {
    check_encode_args(x, payload);
    require_finite(x.data(), num_elems());
    if (bits_ == 16 || bits_ == 8) {
      // Whole-byte fields: the levels (single precision, grid_level_f) straight into the payload,
      // in streaming stores when the payload is far larger than the caches (stream_min_bytes).
      const float c = grid_inverse_step_f(quantum_, level_bits_);
      const bool stream = static_cast<int64_t>(encoded_bytes()) >= stream_min_bytes();
      for_each_piece(num_elems(), [&](int64_t begin, int64_t end) {
        kernels::grid_encode_fields(x.data() + begin, end - begin, quantum_, c, level_bits_, stream,
                                    payload.data() + begin * bits_ / 8);
        if (stream) kernels::stream_fence();  // before the pool hands the piece back
      });
      const size_t used = static_cast<size_t>(num_elems() * bits_ / 8);
      if (encoded_bytes() > used)  // (n = 0: an empty payload, possibly null, is never passed to memset)
        std::memset(payload.data() + used, 0, encoded_bytes() - used);  // padding of the last word
      return;
    }
    // A sub-range of kSubElems elements spans kSubElems * bits_ bits, a whole number of words, so
    // packing it on its own gives the same words as packing all n at once.
    const double inv = grid_inverse_step(quantum_);
    for_each_piece(num_elems(), [&](int64_t begin, int64_t end) {
      int32_t levels[kSubElems];
      uint32_t words[kSubElems];
      for_each_sub(begin, end, [&](int64_t a, int64_t e) {
        kernels::grid_levels(x.data() + a, e - a, quantum_, inv, level_bits_, levels);
        kernels::pack_fields(levels, e - a, level_bits_, words);
        std::memcpy(payload.data() + 4 * (a / 32 * bits_), words,
                    sizeof(uint32_t) * static_cast<size_t>(ceil_div((e - a) * bits_, 32)));
      });
    });
  }

  void validate(std::span<const uint8_t> payload) const override {
    if (payload.size() != encoded_bytes()) corrupt(spec(), "wrong size");
    std::vector<int64_t> bad(static_cast<size_t>(num_pieces(num_elems())), -1);
    if (bits_ == 16 || bits_ == 8) {
      // Whole-byte fields: the raw little-endian fields against the most negative pattern, a
      // SIMD compare at the speed of the read.
      for_each_piece(num_elems(), [&](int64_t begin, int64_t end) {
        const int64_t i = kernels::grid_first_bad_field(payload.data() + begin * bits_ / 8, end - begin, level_bits_);
        if (i >= 0) bad[static_cast<size_t>(begin / kPieceElems)] = begin + i;
      });
    } else {
      for_each_piece(num_elems(), [&](int64_t begin, int64_t end) {
        int32_t levels[kSubElems];
        uint32_t words[kSubElems];
        const uint32_t field_mask = bits_ == 32 ? ~0u : (1u << bits_) - 1u;
        for_each_sub(begin, end, [&](int64_t a, int64_t e) {
          if (bad[static_cast<size_t>(begin / kPieceElems)] >= 0) return;
          read_words(payload.data(), a, e, words);
          kernels::unpack_fields(words, 0, e - a, level_bits_, levels);
          for (int64_t i = 0; i < e - a; ++i)
            if (!grid_field_ok(static_cast<uint32_t>(levels[i]) & field_mask, bits_)) {
              bad[static_cast<size_t>(begin / kPieceElems)] = a + i;
              return;
            }
        });
      });
    }
    for (int64_t i : bad)
      if (i >= 0) corrupt(spec(), "level out of range at element " + std::to_string(i));
    const int64_t used = num_elems() * bits_;
    if (used % 32 != 0 && !padding_clear(load_u32(payload.data() + 4 * (used / 32)), used))
      corrupt(spec(), "padding bits set after the last level");
  }

  void decode_accumulate(std::span<const uint8_t> payload, const RngKey&, float weight,
                         std::span<float> out) const override {
    check_decode_args(payload, out);
    for_each_piece(num_elems(),
                   [&](int64_t b, int64_t e) { decode_range(payload, b, e, weight, true, out.data() + b); });
  }

  void decode(std::span<const uint8_t> payload, const RngKey&, std::span<float> out) const override {
    check_decode_args(payload, out);
    overwrite_pieces(num_elems(), out.data(),
                     [&](int64_t a, int64_t e, float* dst) { decode_range(payload, a, e, 1.0f, false, dst); });
  }

  bool range_decodable() const override { return true; }
  void decode_range(std::span<const uint8_t> payload, int64_t begin, int64_t end, float weight, bool accumulate,
                    float* out) const override {
    if (bits_ == 16 || bits_ == 8) {  // straight from the payload's bytes
      kernels::grid_decode_fields(payload.data(), begin, end - begin, level_bits_, quantum_, weight, accumulate, out);
      return;
    }
    int32_t levels[kSubElems];
    uint32_t words[kSubElems];
    for_each_sub(begin, end, [&](int64_t a, int64_t e) {
      read_words(payload.data(), a, e, words);
      kernels::unpack_fields(words, 0, e - a, level_bits_, levels);
      kernels::grid_decode(levels, e - a, quantum_, weight, accumulate, out + (a - begin));
    });
  }

 private:
  /// The words holding the fields of elements [a, e) (a a multiple of 32), copied to aligned scratch.
  void read_words(const uint8_t* payload, int64_t a, int64_t e, uint32_t* words) const {
    std::memcpy(words, payload + 4 * (a / 32 * bits_),
                sizeof(uint32_t) * static_cast<size_t>(ceil_div((e - a) * bits_, 32)));
  }

  uint32_t level_bits_ = 16;  ///< GridOptions::level_bits
  double quantum_ = 0.0;      ///< GridOptions::quantum
  int bits_ = 16;
  int64_t words_ = 0;
};

}  // namespace

std::unique_ptr<Codec> make_grid_codec(const CodecSpec& spec, const Layout& layout) {
  return std::make_unique<GridCodec>(spec, layout);
}

}  // namespace gcomp::detail
