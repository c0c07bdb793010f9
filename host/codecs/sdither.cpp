// SPDX-License-Identifier: Apache-2.0
// sdither: sparse-coded dithering (spec/ALGORITHMS.md §5.2(a)). The quantizer is dither's (§2.1):
// same block scales, same Philox draws (stream 0, element index), same levels, so the decoded
// vector equals dither's bit for bit. Only the coding differs: one Elias record per nonzero.
// Byte layout: docs/wire-format.md §3.7.
#include "host/codecs/sdither.hpp"

#include "host/codecs/kernels.hpp"
#include "host/codecs/pieces.hpp"

#include <gcomp/detail/codec_math.hpp>
#include <gcomp/detail/elias.hpp>
#include <gcomp/detail/payload_rules.hpp>

#include <algorithm>
#include <cstring>

namespace gcomp::detail {

namespace {

/// Largest record-stream length over every record sequence that fits a chunk of `len`
/// coordinates: f(L) = max(f(L - 1), max_g f(L - g) + cost(g)), cost(g) = len(g) + 1 + len(s)
/// (len(s): the longest level code, s > 1). Splitting a gap g >= 4 (gamma: g >= 2) into two
/// halves never shortens the stream, so gaps up to kMaxGap suffice; with Elias-delta the worst
/// case is not "every element nonzero" (gap 2 costs 4 + 1 bits against 2 x (1 + 1)).
int64_t worst_chunk_bits(int64_t len, uint32_t code, uint32_t levels) {
  constexpr int kMaxGap = 16;
  const int64_t level_bits = levels > 1 ? elias_len(code, levels) : 0;
  int64_t cost[kMaxGap + 1] = {0};
  for (int g = 1; g <= kMaxGap; ++g) cost[g] = elias_len(code, static_cast<uint64_t>(g)) + 1 + level_bits;
  int64_t ring[kMaxGap + 1] = {0};  // f(L - r) at ring[(L - r) mod (kMaxGap + 1)]
  for (int64_t l = 1; l <= len; ++l) {
    int64_t best = ring[(l - 1) % (kMaxGap + 1)];
    for (int g = 1; g <= kMaxGap && g <= l; ++g) best = std::max(best, ring[(l - g) % (kMaxGap + 1)] + cost[g]);
    ring[l % (kMaxGap + 1)] = best;
  }
  return ring[len % (kMaxGap + 1)];
}

}  // namespace

SDitherCodec::SDitherCodec(CodecSpec spec, Layout layout) : Codec(std::move(spec), std::move(layout)) {
  const CodecSpec& sp = this->spec();
  GCOMP_EXPECTS(sp.norm == Norm::kL2 || sp.norm == Norm::kLinf, gcompErrorInvalidArgument,
                "sdither supports norm=l2 or norm=linf");
  GCOMP_EXPECTS(sp.chunk >= 1 && sp.chunk <= (int64_t{1} << 24), gcompErrorInvalidArgument,
                "sdither: chunk must be in [1, 2^24]");
  CodecSpec dither_spec;
  dither_spec.id = CodecId::kDither;
  dither_spec.levels = sp.levels;
  dither_spec.norm = sp.norm;
  dither_spec.p = sp.p;
  dither_spec.block = sp.block;
  dither_ = std::make_unique<DensePlaneCodec>(dither_spec, this->layout());
  levels_ = sp.levels;
  code_ = sp.code == EliasCode::kDelta ? kEliasDelta : kEliasGamma;
  chunk_ = sp.chunk;
  blocks_ = block_offsets(this->layout(), sp.block);
  num_blocks_ = static_cast<int64_t>(blocks_.size()) - 1;
  const int64_t n = num_elems();
  num_chunks_ = ceil_div(n, chunk_);
  if (num_chunks_ > 0) {
    const int64_t full = num_chunks_ - 1;
    const int64_t last = n - full * chunk_;
    const int64_t per_full = full > 0 ? worst_chunk_bits(chunk_, code_, levels_) : 0;
    const int64_t per_last = worst_chunk_bits(last, code_, levels_);
    GCOMP_EXPECTS(full == 0 || per_full <= int64_t{0xffffffff} / full, gcompErrorInvalidArgument,
                  "sdither: the worst-case stream does not fit 32-bit bit offsets; use fewer elements per message");
    worst_bits_ = full * per_full + per_last;
  }
  GCOMP_EXPECTS(worst_bits_ <= int64_t{0xffffffff}, gcompErrorInvalidArgument,
                "sdither: the worst-case stream (" + std::to_string(worst_bits_) +
                    " bits) does not fit 32-bit bit offsets; use fewer elements per message");
  stream_words_ = ceil_div(worst_bits_, 32);
}

size_t SDitherCodec::stream_offset_bytes() const { return static_cast<size_t>(4 * num_blocks_ + 4 + 4 * num_chunks_); }

size_t SDitherCodec::encoded_bytes() const { return stream_offset_bytes() + static_cast<size_t>(4 * stream_words_); }

double SDitherCodec::encoded_bits() const {
  return 32.0 * static_cast<double>(num_blocks_ + 1 + num_chunks_) + static_cast<double>(worst_bits_);
}

uint32_t SDitherCodec::total_bits(std::span<const uint8_t> payload) const {
  if (payload.size() < length_prefix_bytes() || payload.size() > encoded_bytes())
    corrupt(spec(), "size is " + std::to_string(payload.size()) + " bytes, expected " +
                        std::to_string(encoded_bytes()) + " or a short payload of at least " +
                        std::to_string(length_prefix_bytes()));
  const uint32_t total = load_u32(payload.data() + 4 * num_blocks_);
  if (total > static_cast<uint64_t>(worst_bits_))
    corrupt(spec(),
            "total stream bits " + std::to_string(total) + " exceed the worst case " + std::to_string(worst_bits_));
  return total;
}

size_t SDitherCodec::used_bytes(std::span<const uint8_t> payload) const {
  return stream_offset_bytes() + static_cast<size_t>(4 * ceil_div(total_bits(payload), 32));
}

size_t SDitherCodec::used_bytes_for_length(uint64_t length_field) const {
  if (length_field > static_cast<uint64_t>(worst_bits_))
    corrupt(spec(), "total stream bits " + std::to_string(length_field) + " exceed the worst case " +
                        std::to_string(worst_bits_));
  return stream_offset_bytes() + static_cast<size_t>(4 * ceil_div(static_cast<int64_t>(length_field), 32));
}

double SDitherCodec::payload_bits(std::span<const uint8_t> payload) const {
  return 32.0 * static_cast<double>(num_blocks_ + 1 + num_chunks_) + static_cast<double>(total_bits(payload));
}

void SDitherCodec::compute_scales(std::span<const float> x, std::span<float> scales) const {
  dither_->compute_scales(x, scales);
}

void SDitherCodec::encode(std::span<const float> x, const RngKey& key, std::span<uint8_t> payload) const {
  check_encode_args(x, payload);
  std::vector<float> scales(static_cast<size_t>(num_blocks_));
  compute_scales(x, scales);
  write(x, scales, key, payload);
}

void SDitherCodec::encode_with_scales(std::span<const float> x, std::span<const float> scales, const RngKey& key,
                                      std::span<uint8_t> payload) const {
  check_encode_args(x, payload);
  GCOMP_EXPECTS(static_cast<int64_t>(scales.size()) == num_blocks_, gcompErrorInvalidArgument,
                "encode_with_scales: needs " + std::to_string(num_blocks_) + " scales");
  require_finite(x.data(), num_elems());
  for (size_t b = 0; b < scales.size(); ++b)
    GCOMP_EXPECTS(is_finite_f(scales[b]) && scales[b] >= 0.0f, gcompErrorInvalidArgument,
                  "encode_with_scales: scale " + std::to_string(b) + " is negative or not finite");
  write(x, scales, key, payload);
}

namespace {

/// An Elias code as a stream value (its first bit at bit 0) and its length in bits.
struct StreamCode {
  uint64_t value = 0;
  uint32_t len = 0;
};

StreamCode stream_code(uint32_t code, uint64_t v) {
  uint32_t w[3] = {0, 0, 0};
  StreamCode c;
  c.len = static_cast<uint32_t>(write_elias(w, 0, code, v));
  c.value = w[0] | (static_cast<uint64_t>(w[1]) << 32);
  return c;
}

/// Codes of 1 .. kTable - 1 (gaps and levels), computed once per codec.
constexpr uint64_t kCodeTable = 4096;

/// Appends bits LSB first to a little-endian word stream, through a small aligned buffer.
class StreamWriter {
 public:
  explicit StreamWriter(uint8_t* out) : out_(out) {}
  uint64_t pos() const { return pos_; }
  void put(uint64_t v, uint32_t len) {  // len <= 64, v < 2^len
    if (len > 32) {
      put32(v & 0xffffffffu, 32);
      v >>= 32;
      len -= 32;
    }
    put32(v, len);
  }
  /// Writes the last partial word and returns the number of words written.
  int64_t finish() {
    if (have_ > 0) buf_[fill_++] = static_cast<uint32_t>(acc_);
    drain();
    return written_;
  }

 private:
  void put32(uint64_t v, uint32_t len) {
    acc_ |= v << have_;
    have_ += len;
    pos_ += len;
    if (have_ >= 32) {
      buf_[fill_++] = static_cast<uint32_t>(acc_);
      acc_ >>= 32;
      have_ -= 32;
      if (fill_ == kBuf) drain();
    }
  }
  void drain() {
    std::memcpy(out_ + 4 * written_, buf_, sizeof(uint32_t) * static_cast<size_t>(fill_));
    written_ += fill_;
    fill_ = 0;
  }
  static constexpr int64_t kBuf = 1024;
  uint8_t* out_;
  uint32_t buf_[kBuf];
  int64_t fill_ = 0, written_ = 0;
  uint64_t acc_ = 0;
  uint32_t have_ = 0;
  uint64_t pos_ = 0;
};

}  // namespace

void SDitherCodec::write(std::span<const float> x, std::span<const float> scales, const RngKey& key,
                         std::span<uint8_t> payload) const {
  const int64_t n = num_elems();
  uint8_t* out = payload.data();
  uint8_t* stream = out + stream_offset_bytes();
  // Record codes of small gaps and levels from tables (the same bits as sdither_write_record).
  std::vector<StreamCode> gap_codes(
      static_cast<size_t>(std::min<uint64_t>(kCodeTable, static_cast<uint64_t>(chunk_) + 1)));
  for (size_t g = 1; g < gap_codes.size(); ++g) gap_codes[g] = stream_code(code_, g);
  std::vector<StreamCode> level_codes(
      levels_ > 1 ? static_cast<size_t>(std::min<uint64_t>(kCodeTable, uint64_t{levels_} + 1)) : 0);
  for (size_t l = 1; l < level_codes.size(); ++l) level_codes[l] = stream_code(code_, l);
  const auto gap_code = [&](uint64_t g) { return g < gap_codes.size() ? gap_codes[g] : stream_code(code_, g); };
  const auto level_code = [&](uint32_t l) { return l < level_codes.size() ? level_codes[l] : stream_code(code_, l); };

  StreamWriter w(stream);
  std::vector<uint32_t> dir(static_cast<size_t>(num_chunks_), 0u);
  int64_t chunk = 0;            // chunk of the next record
  int64_t next_chunk = chunk_;  // first element of chunk + 1
  int64_t prev = -1;            // the previous nonzero, or the chunk start - 1
  uint32_t rnd[kSubElems];
  uint32_t coded[kSubElems];
  for (int64_t a = 0; a < n; a += kSubElems) {
    const int64_t e = std::min(n, a + kSubElems);
    // One Philox block per four elements; dither's levels, run by run.
    kernels::philox_words(key, kStreamElement, static_cast<uint64_t>(a) / 4, ceil_div(e - a, 4), rnd);
    for_each_run(blocks_, a, e, [&](int64_t r0, int64_t r1, int64_t b) {
      kernels::quantize(false, x.data() + r0, r1 - r0, scales[b], levels_, rnd + (r0 - a), coded + (r0 - a));
    });
    for (int64_t j0 = 0; j0 < e - a; j0 += 64) {
      const int64_t j1 = std::min<int64_t>(e - a, j0 + 64);
      uint64_t nonzero = 0;
      for (int64_t j = j0; j < j1; ++j) nonzero |= static_cast<uint64_t>(coded[j] != 0u) << (j - j0);
      while (nonzero != 0) {
        const int64_t i = a + j0 + __builtin_ctzll(nonzero);
        nonzero &= nonzero - 1;
        while (i >= next_chunk) {  // chunks before i's: their offsets are the position so far
          ++chunk;
          dir[static_cast<size_t>(chunk)] = static_cast<uint32_t>(w.pos());
          prev = next_chunk - 1;
          next_chunk += chunk_;
        }
        const uint32_t c = coded[i - a];
        const StreamCode g = gap_code(static_cast<uint64_t>(i - prev));
        const uint64_t sign = c >> 31;
        if (levels_ > 1) {
          const StreamCode l = level_code(c & ~kernels::kNegativeBit);
          if (g.len + 1 + l.len <= 64) {
            w.put(g.value | (sign << g.len) | (l.value << (g.len + 1)), g.len + 1 + l.len);
          } else {
            w.put(g.value | (sign << g.len), g.len + 1);
            w.put(l.value, l.len);
          }
        } else {
          w.put(g.value | (sign << g.len), g.len + 1);
        }
        prev = i;
      }
    }
  }
  for (++chunk; chunk < num_chunks_; ++chunk) dir[static_cast<size_t>(chunk)] = static_cast<uint32_t>(w.pos());
  const uint64_t total = w.pos();
  const int64_t used = w.finish();
  std::memset(stream + 4 * used, 0, static_cast<size_t>(4 * (stream_words_ - used)));  // zero padding
  for (int64_t b = 0; b < num_blocks_; ++b) store_f32(out + 4 * b, scales[b]);
  store_u32(out + 4 * num_blocks_, static_cast<uint32_t>(total));
  for (int64_t c = 0; c < num_chunks_; ++c) store_u32(out + 4 * (num_blocks_ + 1 + c), dir[static_cast<size_t>(c)]);
}

namespace {

// The CPU's reader of the LSB-first record stream: 64 bits at a time instead of a load per bit
// (read_gamma / read_elias of elias.hpp, which the device keeps), with the same outcomes.
constexpr int64_t kStreamPadWords = 3;  // a 64-bit window at any bit of the stream stays in bounds

inline uint64_t reverse_bits64(uint64_t v) {
  v = __builtin_bswap64(v);
  v = ((v >> 4) & 0x0f0f0f0f0f0f0f0full) | ((v & 0x0f0f0f0f0f0f0f0full) << 4);
  v = ((v >> 2) & 0x3333333333333333ull) | ((v & 0x3333333333333333ull) << 2);
  v = ((v >> 1) & 0x5555555555555555ull) | ((v & 0x5555555555555555ull) << 1);
  return v;
}

/// Stream bits [pos, pos + 64), bit pos in bit 0 (words padded by kStreamPadWords zero words).
inline uint64_t window64(const uint32_t* words, uint64_t pos) {
  const uint64_t q = pos >> 5;
  const uint32_t off = static_cast<uint32_t>(pos & 31u);
  const uint64_t lo = static_cast<uint64_t>(words[q]) | (static_cast<uint64_t>(words[q + 1]) << 32);
  if (off == 0u) return lo;
  return (lo >> off) | (static_cast<uint64_t>(words[q + 2]) << (64u - off));
}

/// get_bits: nbits (<= 64) bits from pos, the first one most significant.
inline uint64_t msb_first(const uint32_t* words, uint64_t pos, uint32_t nbits) {
  return nbits == 0u ? 0u : reverse_bits64(window64(words, pos)) >> (64u - nbits);
}

inline uint32_t fast_gamma(const uint32_t* words, uint64_t& pos, uint64_t end, uint32_t max_log, uint64_t& value) {
  const uint64_t w = window64(words, pos);
  const uint64_t z = w == 0u ? 64u : static_cast<uint64_t>(__builtin_ctzll(w));  // zeros before the first 1
  const uint64_t avail = end > pos ? end - pos : 0u;
  // read_gamma stops at the first of: pos >= end (past end), a 1 bit (done), max_log zeros (too long)
  if (avail <= std::min<uint64_t>(z, max_log)) return kEliasPastEnd;
  if (z > max_log) return kEliasTooLong;
  pos += z;
  if (end - pos < z + 1u) return kEliasPastEnd;
  value = msb_first(words, pos, static_cast<uint32_t>(z) + 1u);
  pos += z + 1u;
  return kEliasOk;
}

inline uint32_t fast_elias(const uint32_t* words, uint64_t& pos, uint64_t end, uint32_t code, uint32_t max_log,
                           uint64_t& value) {
  return read_elias_with(
      [words](uint64_t& p, uint64_t e, uint32_t m, uint64_t& v) { return fast_gamma(words, p, e, m, v); },
      [words](uint64_t p, uint32_t n) { return msb_first(words, p, n); }, pos, end, code, max_log, value);
}

}  // namespace

template <class Sink>
void SDitherCodec::walk(std::span<const uint8_t> payload, Sink&& sink) const {
  check_payload_size(payload);  // full, or short with exactly the used size
  const uint32_t total = total_bits(payload);
  const uint8_t* in = payload.data();
  std::vector<float> scales(static_cast<size_t>(num_blocks_));
  for (int64_t b = 0; b < num_blocks_; ++b) {
    const float s = load_f32(in + 4 * b);
    if (!scale_ok(s)) corrupt(spec(), "scale of block " + std::to_string(b) + " is negative or not finite");
    scales[static_cast<size_t>(b)] = s;
  }
  std::vector<uint32_t> dir(static_cast<size_t>(num_chunks_));
  for (int64_t c = 0; c < num_chunks_; ++c) {
    dir[static_cast<size_t>(c)] = load_u32(in + 4 * (num_blocks_ + 1 + c));
    if (c == 0 && dir[0] != 0u) corrupt(spec(), "chunk 0 does not start at stream bit 0");
    if (c > 0 && dir[static_cast<size_t>(c)] < dir[static_cast<size_t>(c - 1)])
      corrupt(spec(), "chunk offsets decrease at chunk " + std::to_string(c));
    if (dir[static_cast<size_t>(c)] > total)
      corrupt(spec(), "chunk " + std::to_string(c) + " starts beyond the total stream bits");
  }
  if (num_chunks_ == 0 && total != 0u) corrupt(spec(), "records in an empty message");
  // A short payload stops after word ceil(T/32) of the stream; the words after it are the padding.
  std::vector<uint32_t> words(static_cast<size_t>(stream_words_ + kStreamPadWords), 0u);
  const uint8_t* stream = in + stream_offset_bytes();
  const int64_t present = static_cast<int64_t>((payload.size() - stream_offset_bytes()) / 4);
  for (int64_t w = 0; w < std::min(stream_words_, present); ++w)
    words[static_cast<size_t>(w)] = load_u32(stream + 4 * w);
  // Padding: every stream bit at or beyond `total` is zero.
  for (int64_t w = total / 32; w < stream_words_; ++w) {
    const uint32_t keep = (w == total / 32 && total % 32 != 0) ? ((1u << (total % 32)) - 1u) : 0u;
    if (words[static_cast<size_t>(w)] & ~keep) corrupt(spec(), "bits set beyond the total stream bits");
  }
  const int64_t n = num_elems();
  const uint32_t level_log = floor_log2_u64(levels_);
  int64_t block = 0;
  const bool use_table = levels_ <= 4096u;
  std::vector<float> table(use_table ? levels_ + 1u : 0u);
  int64_t table_block = -1;
  for (int64_t c = 0; c < num_chunks_; ++c) {
    const int64_t begin = c * chunk_;
    const int64_t len = std::min(n, begin + chunk_) - begin;
    uint64_t pos = dir[static_cast<size_t>(c)];
    const uint64_t end = c + 1 < num_chunks_ ? dir[static_cast<size_t>(c + 1)] : total;
    const uint32_t gap_log = floor_log2_u64(static_cast<uint64_t>(len));
    int64_t prev = -1;  // relative to the chunk start
    const std::string where = " in chunk " + std::to_string(c);
    while (pos < end) {
      uint64_t gap = 0;
      uint32_t st = fast_elias(words.data(), pos, end, code_, gap_log, gap);
      if (st == kEliasTooLong) corrupt(spec(), "over-long Elias prefix of a gap" + where);
      if (st != kEliasOk) corrupt(spec(), "a gap code runs past the end of its chunk" + where);
      if (gap > static_cast<uint64_t>(len - 1 - prev)) corrupt(spec(), "a gap runs past the end of its chunk" + where);
      const int64_t rel = prev + static_cast<int64_t>(gap);
      if (pos >= end) corrupt(spec(), "a record has no sign bit" + where);
      const bool negative = get_bit(words.data(), pos) != 0u;
      pos += 1;
      uint64_t level = 1;
      if (levels_ > 1u) {
        st = fast_elias(words.data(), pos, end, code_, level_log, level);
        if (st == kEliasTooLong) corrupt(spec(), "over-long Elias prefix of a level" + where);
        if (st != kEliasOk) corrupt(spec(), "a level code runs past the end of its chunk" + where);
      }
      const int64_t i = begin + rel;
      while (i >= blocks_[block + 1]) ++block;
      const float scale = scales[static_cast<size_t>(block)];
      if (!sdither_record_ok(level, levels_, scale)) {
        corrupt(spec(), level > levels_ ? "level above " + std::to_string(levels_) + where
                                        : "a nonzero in block " + std::to_string(block) + ", whose scale is 0");
      }
      if (use_table) {  // the block's magnitudes dither_value(l, false, scale), computed once
        if (block != table_block) {
          for (uint32_t l = 0; l <= levels_; ++l) table[l] = dither_value(l, false, scale, levels_);
          table_block = block;
        }
        const float mag = table[static_cast<size_t>(level)];
        sink(i, negative ? -mag : mag);  // dither_value negates its magnitude
      } else {
        sink(i, dither_value(static_cast<uint32_t>(level), negative, scale, levels_));
      }
      prev = rel;
    }
  }
}

void SDitherCodec::validate(std::span<const uint8_t> payload) const {
  walk(payload, [](int64_t, float) {});
}

void SDitherCodec::decode_impl(std::span<const uint8_t> payload, float weight, bool overwrite,
                               std::span<float> out) const {
  check_decode_args(payload, out);  // validates, so the walk below cannot fail half-way
  add_values(payload, weight, overwrite, out);
}

void SDitherCodec::decode_reduce(std::span<const std::span<const uint8_t>> payloads, std::span<const RngKey> keys,
                                 std::span<const float> weights, std::span<float> out) const {
  check_reduce_args(payloads, keys, weights, out);  // validates every payload before out changes
  for (size_t j = 0; j < payloads.size(); ++j) add_values(payloads[j], weights[j], false, out);
}

void SDitherCodec::add_values(std::span<const uint8_t> payload, float weight, bool overwrite,
                              std::span<float> out) const {
  // No n-sized scratch: the nonzeros arrive in increasing i; the zeros between them are
  // accumulated as zeros (accumulate(o, w, 0) is not always o: -0 + 0 is +0).
  int64_t next = 0;
  walk(payload, [&](int64_t i, float v) {
    for (; next < i; ++next) out[next] = overwrite ? 0.0f : accumulate(out[next], weight, 0.0f);
    out[i] = overwrite ? v : accumulate(out[i], weight, v);
    next = i + 1;
  });
  for (; next < static_cast<int64_t>(out.size()); ++next)
    out[next] = overwrite ? 0.0f : accumulate(out[next], weight, 0.0f);
}

void SDitherCodec::decode_accumulate(std::span<const uint8_t> payload, const RngKey&, float weight,
                                     std::span<float> out) const {
  decode_impl(payload, weight, false, out);
}

void SDitherCodec::decode(std::span<const uint8_t> payload, const RngKey&, std::span<float> out) const {
  decode_impl(payload, 1.0f, true, out);
}

}  // namespace gcomp::detail
