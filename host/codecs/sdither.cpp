// SPDX-License-Identifier: Apache-2.0
// sdither: sparse-coded dithering (spec/ALGORITHMS.md §5.2(a)). The quantizer is dither's (§2.1):
// same block scales, same Philox draws (stream 0, element index), same levels, so the decoded
// vector equals dither's bit for bit. Only the coding differs: one Elias record per nonzero.
// Byte layout: docs/wire-format.md §3.7.
#include "host/codecs/sdither.hpp"

#include "host/codecs/kernels.hpp"
#include "host/codecs/pieces.hpp"
#include "host/codecs/registry.hpp"

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

constexpr int kLutBits = 12;
constexpr uint64_t kLutMask = (uint64_t{1} << kLutBits) - 1u;

/// The record table of sdither (code, s): entry p describes the record that the stream bits p
/// (first bit in bit 0) start with, when the whole record fits in kLutBits bits: length (bits 0-4),
/// sign (bit 5), level (bits 6-15), gap (bits 16-31); 0 when it does not fit, its level is above
/// s, or it is malformed. Built with the exact reader (read_elias), gaps with the widest prefix a
/// chunk allows; the walk takes an entry only where the exact reader provably reads the same
/// record (see walk).
std::vector<uint32_t> record_table(uint32_t code, uint32_t levels) {
  std::vector<uint32_t> lut(std::size_t{1} << kLutBits, 0u);
  const uint32_t level_log = floor_log2_u64(levels);
  for (uint32_t bits = 0; bits < (1u << kLutBits); ++bits) {
    const uint32_t w[3] = {bits, 0u, 0u};
    uint64_t pos = 0, gap = 0, level = 1;
    if (read_elias(w, pos, kLutBits, code, 31, gap) != kEliasOk || pos >= kLutBits) continue;
    const uint32_t negative = get_bit(w, pos);
    pos += 1;
    if (levels > 1u && (read_elias(w, pos, kLutBits, code, level_log, level) != kEliasOk || level > levels)) continue;
    if (gap > 0xffffu || level > 1023u) continue;
    lut[bits] = static_cast<uint32_t>(pos) | (negative << 5) | (static_cast<uint32_t>(level) << 6) |
                (static_cast<uint32_t>(gap) << 16);
  }
  return lut;
}

}  // namespace

SDitherCodec::SDitherCodec(CodecSpec spec, Layout layout) : Codec(std::move(spec), std::move(layout)) {
  const SDitherOptions& sp = this->spec().options<SDitherOptions>();
  GCOMP_EXPECTS(sp.norm == Norm::kL2 || sp.norm == Norm::kLinf, gcompErrorInvalidArgument,
                "sdither supports norm=l2 or norm=linf");
  GCOMP_EXPECTS(sp.chunk >= 1 && sp.chunk <= (int64_t{1} << 24), gcompErrorInvalidArgument,
                "sdither: chunk must be in [1, 2^24]");
  // The dither quantizer of the same levels, norm and block (its scales and levels).
  dither_ =
      std::make_unique<DensePlaneCodec>(CodecSpec(CodecId::kDither, dither_quantizer(this->spec())), this->layout());
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
  lut_ = record_table(code_, levels_);
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

/// Appends bits LSB first to a little-endian word stream, through a small aligned buffer: to
/// `out` (room for the whole stream), or to the end of `grow`.
class StreamWriter {
 public:
  StreamWriter(uint8_t* out, std::vector<uint32_t>* grow) : out_(out), grow_(grow) {}
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
  void put32(uint64_t v, uint32_t len) {  // have_ < 32, len <= 32
    // Without a branch on whether a word is full (records end at random bit positions): the
    // accumulator goes to the word being filled and the next one every time, and moves on a word
    // when it holds 32 bits or more.
    acc_ |= v << have_;
    have_ += len;
    pos_ += len;
    std::memcpy(buf_ + fill_, &acc_, sizeof(acc_));
    const uint32_t full = have_ >> 5;  // 0 or 1
    fill_ += full;
    acc_ >>= full << 5;
    have_ -= full << 5;
    if (fill_ == kBuf) drain();
  }
  void drain() {
    if (grow_ != nullptr)
      grow_->insert(grow_->end(), buf_, buf_ + fill_);
    else
      std::memcpy(out_ + 4 * written_, buf_, sizeof(uint32_t) * static_cast<size_t>(fill_));
    written_ += fill_;
    fill_ = 0;
  }
  static constexpr int64_t kBuf = 1024;
  uint8_t* out_;
  std::vector<uint32_t>* grow_;
  uint32_t buf_[kBuf + 1];
  int64_t fill_ = 0, written_ = 0;
  uint64_t acc_ = 0;
  uint32_t have_ = 0;
  uint64_t pos_ = 0;
};

}  // namespace

/// The codes an encode writes, built once per call and shared by its chunk ranges.
struct SDitherCodec::RecordTables {
  std::vector<StreamCode> gap_codes, level_codes;
  /// Whole records (gap code, sign, level code) of gaps below kRecordGaps and levels up to
  /// kRecordLevels, with the position of their sign bit.
  static constexpr uint32_t kRecordGaps = 64, kRecordLevels = 15;
  struct RecordCode {
    uint64_t value;
    uint32_t len, sign_shift;
  };
  std::vector<RecordCode> records;
  uint32_t table_levels = 1, table_gaps = 0;
};

SDitherCodec::RecordTables SDitherCodec::record_tables() const {
  // Record codes of small gaps and levels from tables (the same bits as sdither_write_record).
  RecordTables t;
  t.gap_codes.resize(static_cast<size_t>(std::min<uint64_t>(kCodeTable, static_cast<uint64_t>(chunk_) + 1)));
  for (size_t g = 1; g < t.gap_codes.size(); ++g) t.gap_codes[g] = stream_code(code_, g);
  t.level_codes.resize(levels_ > 1 ? static_cast<size_t>(std::min<uint64_t>(kCodeTable, uint64_t{levels_} + 1)) : 0);
  for (size_t l = 1; l < t.level_codes.size(); ++l) t.level_codes[l] = stream_code(code_, l);
  t.table_levels = levels_ > 1 ? std::min(levels_, RecordTables::kRecordLevels) : 1;
  t.table_gaps = static_cast<uint32_t>(std::min<uint64_t>(RecordTables::kRecordGaps, t.gap_codes.size()));
  t.records.resize(static_cast<size_t>(t.table_gaps) * (t.table_levels + 1));
  for (uint32_t g = 1; g < t.table_gaps; ++g)
    for (uint32_t l = 1; l <= t.table_levels; ++l) {
      const StreamCode gc = t.gap_codes[g];
      RecordTables::RecordCode& r = t.records[static_cast<size_t>(g) * (t.table_levels + 1) + l];
      r.sign_shift = gc.len;
      if (levels_ > 1) {
        const StreamCode lc = t.level_codes[l];
        r.value = gc.value | (lc.value << (gc.len + 1));
        r.len = gc.len + 1 + lc.len;  // at most 11 + 1 + 8 bits
      } else {
        r.value = gc.value;
        r.len = gc.len + 1;
      }
    }
  return t;
}

uint64_t SDitherCodec::write_chunks(const float* x, std::span<const float> scales, const RngKey& key,
                                    const RecordTables& t, int64_t c0, int64_t c1, uint8_t* stream,
                                    std::vector<uint32_t>* grow, uint32_t* dir) const {
  const int64_t n = num_elems();
  const auto gap_code = [&](uint64_t g) { return g < t.gap_codes.size() ? t.gap_codes[g] : stream_code(code_, g); };
  const auto level_code = [&](uint32_t l) {
    return l < t.level_codes.size() ? t.level_codes[l] : stream_code(code_, l);
  };
  StreamWriter w(stream, grow);
  const int64_t first = c0 * chunk_, last = std::min(n, c1 * chunk_);
  int64_t chunk = c0;                   // chunk of the next record
  int64_t next_chunk = first + chunk_;  // first element of chunk + 1
  int64_t prev = first - 1;             // the previous nonzero, or the chunk start - 1
  dir[0] = 0;
  // The words and the levels in steps of kStep elements: Philox's arithmetic and the loads of x
  // then alternate finely enough for the memory reads to overlap the arithmetic (thread CPU time,
  // 2^24 elements at levels=1: steps of 256 take 0.66-0.69 ns per element, of 2048 0.85-0.88).
  constexpr int64_t kStep = 256;
  alignas(64) uint32_t rnd[kStep + 4];
  alignas(64) uint32_t coded[kSubElems];
  alignas(64) uint32_t nonzeros[kSubElems];
  for (int64_t a = first; a < last; a += kSubElems) {
    const int64_t e = std::min(last, a + kSubElems);
    // dither's nonzero levels in order, run by run (their positions relative to a), with one
    // Philox block per four elements (from the group of s0: a range may start inside one)
    int64_t count = 0;
    for (int64_t s0 = a; s0 < e; s0 += kStep) {
      const int64_t s1 = std::min(e, s0 + kStep), s4 = s0 & ~int64_t{3};
      kernels::philox_words(key, kStreamElement, static_cast<uint64_t>(s4) / 4, ceil_div(s1 - s4, 4), rnd);
      for_each_run(blocks_, s0, s1, [&](int64_t r0, int64_t r1, int64_t b) {
        count += kernels::dither_nonzeros(x + r0, r1 - r0, scales[b], levels_, rnd + (r0 - s4),
                                          static_cast<uint32_t>(r0 - a), nonzeros + count, coded + count);
      });
    }
    for (int64_t k = 0; k < count; ++k) {
      const int64_t i = a + nonzeros[k];
      while (i >= next_chunk) {  // chunks before i's: their offsets are the position so far
        ++chunk;
        dir[chunk - c0] = static_cast<uint32_t>(w.pos());
        prev = next_chunk - 1;
        next_chunk += chunk_;
      }
      const uint32_t c = coded[k];
      const uint64_t sign = c >> 31;
      const uint64_t gap = static_cast<uint64_t>(i - prev);
      const uint32_t level = c & ~kernels::kNegativeBit;
      if (gap < t.table_gaps && level <= t.table_levels) {
        const RecordTables::RecordCode& r = t.records[static_cast<size_t>(gap) * (t.table_levels + 1) + level];
        w.put(r.value | (sign << r.sign_shift), r.len);
        prev = i;
        continue;
      }
      const StreamCode g = gap_code(gap);
      if (levels_ > 1) {
        const StreamCode l = level_code(level);
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
  for (++chunk; chunk < c1; ++chunk) dir[chunk - c0] = static_cast<uint32_t>(w.pos());
  const uint64_t total = w.pos();
  w.finish();
  return total;
}

namespace {

/// Stream bits [pos, pos + 32) of a zero-padded word stream, for any pos >= -31 (bits before 0 read as 0).
inline uint32_t bits_at(const uint32_t* words, int64_t pos) {
  if (pos < 0) return words[0] << static_cast<uint32_t>(-pos);
  const uint64_t q = static_cast<uint64_t>(pos) >> 5;
  const uint32_t off = static_cast<uint32_t>(pos & 31);
  const uint64_t two = static_cast<uint64_t>(words[q]) | (static_cast<uint64_t>(words[q + 1]) << 32);
  return static_cast<uint32_t>(two >> off);
}

}  // namespace

void SDitherCodec::write(std::span<const float> x, std::span<const float> scales, const RngKey& key,
                         std::span<uint8_t> payload) const {
  uint8_t* out = payload.data();
  uint8_t* stream = out + stream_offset_bytes();
  const RecordTables tables = record_tables();
  std::vector<uint32_t> dir(static_cast<size_t>(num_chunks_) + 1, 0u);
  uint64_t total = 0;
  int64_t used = 0;  // stream words written
  const int64_t per = pool_chunks();
  if (per == 0) {
    total = write_chunks(x.data(), scales, key, tables, 0, num_chunks_, stream, nullptr, dir.data());
    used = ceil_div(static_cast<int64_t>(total), 32);
  } else {
    // Each chunk range writes its records into a stream of its own (its directory relative to
    // its first bit), then the streams are placed one after the other: range t starts at the sum
    // of the earlier ranges' bits. Words inside one range's bits are written by that range; the
    // words a boundary between ranges falls in get their bits from both sides afterwards. A range's
    // stream grows with its records (a sparse stream stays small: buffers of the worst-case size,
    // allocated and zeroed per call, cost page faults of the whole worst case every call), and
    // ends with two zero words (bits_at reads two words).
    const int64_t ranges = ceil_div(num_chunks_, per);
    std::vector<int64_t> starts(static_cast<size_t>(ranges) + 1);
    for (int64_t r = 0; r <= ranges; ++r) starts[static_cast<size_t>(r)] = std::min(num_chunks_, r * per);
    std::vector<std::vector<uint32_t>> local(static_cast<size_t>(ranges));
    std::vector<uint64_t> bits(static_cast<size_t>(ranges) + 1, 0u);
    parallel_for(ranges, [&](int64_t r) {
      const int64_t c0 = starts[static_cast<size_t>(r)], c1 = starts[static_cast<size_t>(r) + 1];
      std::vector<uint32_t>& buf = local[static_cast<size_t>(r)];
      bits[static_cast<size_t>(r) + 1] =
          write_chunks(x.data(), scales, key, tables, c0, c1, nullptr, &buf, dir.data() + c0);
      buf.insert(buf.end(), 2, 0u);
    });
    std::vector<uint64_t> at(static_cast<size_t>(ranges) + 1, 0u);  // first bit of each range
    for (int64_t r = 0; r < ranges; ++r)
      at[static_cast<size_t>(r) + 1] = at[static_cast<size_t>(r)] + bits[static_cast<size_t>(r) + 1];
    total = at[static_cast<size_t>(ranges)];
    used = ceil_div(static_cast<int64_t>(total), 32);
    // words wholly inside range r: [ceil(at_r / 32), floor(at_{r+1} / 32))
    parallel_for(ranges, [&](int64_t r) {
      const uint64_t b0 = at[static_cast<size_t>(r)], b1 = at[static_cast<size_t>(r) + 1];
      const uint32_t* src = local[static_cast<size_t>(r)].data();
      for (uint64_t w = (b0 + 31) / 32; w < b1 / 32; ++w)
        store_u32(stream + 4 * w, bits_at(src, static_cast<int64_t>(32 * w) - static_cast<int64_t>(b0)));
      for (int64_t c = starts[static_cast<size_t>(r)] + 1; c < starts[static_cast<size_t>(r) + 1]; ++c)
        dir[static_cast<size_t>(c)] += static_cast<uint32_t>(b0);
      dir[static_cast<size_t>(starts[static_cast<size_t>(r)])] = static_cast<uint32_t>(b0);
    });
    // words holding a range boundary (or a range's end): the OR of every range's bits in them
    for (int64_t r = 0; r < ranges; ++r) {
      const uint64_t b0 = at[static_cast<size_t>(r)], b1 = at[static_cast<size_t>(r) + 1];
      if (b1 % 32 == 0 || b1 == b0) continue;
      const uint64_t w = b1 / 32;  // the word range r ends in
      uint32_t v = 0;
      const auto add = [&](int64_t q) {  // range q's bits in word w (zero beyond its end)
        const uint64_t q0 = at[static_cast<size_t>(q)];
        v |= bits_at(local[static_cast<size_t>(q)].data(), static_cast<int64_t>(32 * w) - static_cast<int64_t>(q0));
      };
      for (int64_t q = r; q >= 0 && at[static_cast<size_t>(q) + 1] > 32 * w; --q) add(q);  // r and the earlier ones
      for (int64_t q = r + 1; q < ranges && at[static_cast<size_t>(q)] < 32 * w + 32; ++q) add(q);  // the later ones
      store_u32(stream + 4 * w, v);
    }
  }
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

int64_t SDitherCodec::pool_chunks() const {
  if (num_elems() < kParallelMinElems || chunk_ > kMaxPoolChunk || num_chunks_ < 2) return 0;
  const int64_t per = std::max<int64_t>(1, kPieceElems / chunk_);
  return per < num_chunks_ ? per : 0;
}

template <class F>
void SDitherCodec::for_each_chunk_range(F&& f) const {
  // Chunks are independent record streams (the directory gives each one's first bit), so the
  // walks split over the pool by whole chunks: ranges of about a piece (kPieceElems elements),
  // fixed by n and chunk alone. A range's first failure is the serial walk's when it is the lowest
  // failing range, and parallel_for rethrows the lowest task's exception: the same error as one
  // walk in order. Chunks above kMaxPoolChunk elements stay on the calling thread (each task would
  // hold a chunk-sized scratch).
  const int64_t per = pool_chunks();
  if (per == 0) {
    f(int64_t{0}, num_chunks_);
    return;
  }
  parallel_for(ceil_div(num_chunks_, per), [&](int64_t t) { f(t * per, std::min(num_chunks_, (t + 1) * per)); });
}

SDitherCodec::Parsed SDitherCodec::parse(std::span<const uint8_t> payload) const {
  check_payload_size(payload);  // full, or short with exactly the used size
  Parsed p;
  p.total = total_bits(payload);
  const uint32_t total = p.total;
  const uint8_t* in = payload.data();
  p.scales.resize(static_cast<size_t>(num_blocks_));
  for (int64_t b = 0; b < num_blocks_; ++b) {
    const float s = load_f32(in + 4 * b);
    if (!scale_ok(s)) corrupt(spec(), "scale of block " + std::to_string(b) + " is negative or not finite");
    p.scales[static_cast<size_t>(b)] = s;
  }
  p.dir.resize(static_cast<size_t>(num_chunks_));
  if (!p.dir.empty())  // n = 0: no chunk, and no pointer to copy to
    std::memcpy(p.dir.data(), in + 4 * (num_blocks_ + 1), sizeof(uint32_t) * p.dir.size());
  const std::vector<uint32_t>& dir = p.dir;
  for (int64_t c = 0; c < num_chunks_; ++c) {
    if (c == 0 && dir[0] != 0u) corrupt(spec(), "chunk 0 does not start at stream bit 0");
    if (c > 0 && dir[static_cast<size_t>(c)] < dir[static_cast<size_t>(c - 1)])
      corrupt(spec(), "chunk offsets decrease at chunk " + std::to_string(c));
    if (dir[static_cast<size_t>(c)] > total)
      corrupt(spec(), "chunk " + std::to_string(c) + " starts beyond the total stream bits");
  }
  if (num_chunks_ == 0 && total != 0u) corrupt(spec(), "records in an empty message");
  // A short payload stops after word ceil(T/32) of the stream; the words after it are the padding.
  // Only the words up to ceil(T/32) are copied: the records never read past T, and the padding
  // beyond is checked in place.
  const uint8_t* stream = in + stream_offset_bytes();
  const int64_t present = static_cast<int64_t>((payload.size() - stream_offset_bytes()) / 4);
  const int64_t used = std::min<int64_t>(ceil_div(static_cast<int64_t>(total), 32), stream_words_);
  p.words.resize(static_cast<size_t>(used + kStreamPadWords));
  std::memcpy(p.words.data(), stream, sizeof(uint32_t) * static_cast<size_t>(std::min(used, present)));
  std::fill(p.words.begin() + std::min(used, present), p.words.end(), 0u);
  // Padding: every stream bit at or beyond `total` is zero.
  if (total % 32 != 0 && total / 32 < present) {
    const int64_t w = total / 32;
    if (p.words[static_cast<size_t>(w)] & ~((1u << (total % 32)) - 1u))
      corrupt(spec(), "bits set beyond the total stream bits");
  }
  const int64_t pad0 = ceil_div(static_cast<int64_t>(total), 32);
  const int64_t pad1 = std::min(stream_words_, present);
  if (pad0 < pad1) {
    // OR of the padding bytes (vectorized). A full payload's padding is most of its worst-case
    // stream (4 MiB for 2^24 elements at levels=1, while T is a few kilobytes): pieces of it run
    // on the pool, or this read would be the serial part of a decode and of each decode_reduce
    // payload (a fifth of the work at levels=1).
    const uint8_t* b = stream + 4 * pad0;
    const int64_t nb = 4 * (pad1 - pad0);
    constexpr int64_t kPadPiece = 4 * kPieceElems;  // bytes per task
    const int64_t tasks = nb >= 4 * kParallelMinElems ? ceil_div(nb, kPadPiece) : 1;
    std::vector<uint8_t> any(static_cast<size_t>(tasks), 0u);
    const auto scan = [&](int64_t t) {
      const int64_t k0 = t * kPadPiece, k1 = tasks == 1 ? nb : std::min(nb, k0 + kPadPiece);
      uint8_t v = 0;
      for (int64_t k = k0; k < k1; ++k) v |= b[k];
      any[static_cast<size_t>(t)] = v;
    };
    if (tasks == 1)
      scan(0);
    else
      parallel_for(tasks, scan);
    if (std::any_of(any.begin(), any.end(), [](uint8_t v) { return v != 0u; }))
      corrupt(spec(), "bits set beyond the total stream bits");
  }
  return p;
}

template <class Sink>
void SDitherCodec::walk(const Parsed& p, int64_t c0, int64_t c1, Sink&& sink) const {
  const int64_t n = num_elems();
  const uint32_t* words = p.words.data();
  const uint32_t* lut = lut_.data();
  const uint32_t level_log = floor_log2_u64(levels_);
  const bool use_table = levels_ <= 4096u;
  float table[4097];
  int64_t table_block = -1;
  int64_t block = c0 < c1 ? block_of(blocks_, c0 * chunk_) : 0;
  for (int64_t c = c0; c < c1; ++c) {
    const int64_t begin = c * chunk_;
    const int64_t len = std::min(n, begin + chunk_) - begin;
    uint64_t pos = p.dir[static_cast<size_t>(c)];
    const uint64_t end = c + 1 < num_chunks_ ? p.dir[static_cast<size_t>(c + 1)] : p.total;
    const uint32_t gap_log = floor_log2_u64(static_cast<uint64_t>(len));
    int64_t prev = -1;  // relative to the chunk start
    const auto fail = [&](const char* what) { corrupt(spec(), what + (" in chunk " + std::to_string(c))); };
    // Stream bits [pos, pos + avail) in the low bits of buf: a record from the table costs a mask,
    // a table load and a shift on the loop's critical path; the window is refilled when fewer bits
    // than a table index are left.
    uint64_t buf = 0;
    uint32_t avail = 0;
    while (pos < end) {
      uint64_t gap = 0, level = 1;
      bool negative = false;
      // The table's record is the exact reader's when it ends within the chunk and its gap stays
      // in it: the exact reader then reads only these bits, and a gap prefix it would call
      // over-long (more than floor(log2 len) zeros) means a gap of at least 2^(floor(log2 len)+1),
      // beyond the chunk, which the second test sends to the exact reader.
      if (avail < kLutBits) {
        buf = window64(words, pos);
        avail = 64;
      }
      const uint32_t e = lut[buf & kLutMask];
      const uint32_t rec = e & 31u;
      if (e != 0u && pos + rec <= end && (e >> 16) <= static_cast<uint64_t>(len - 1 - prev)) {
        pos += rec;
        buf >>= rec;
        avail -= rec;
        gap = e >> 16;
        negative = (e >> 5) & 1u;
        level = (e >> 6) & 1023u;
      } else {
        avail = 0;  // the exact reader moves pos on its own
        uint32_t st = fast_elias(words, pos, end, code_, gap_log, gap);
        if (st == kEliasTooLong) fail("over-long Elias prefix of a gap");
        if (st != kEliasOk) fail("a gap code runs past the end of its chunk");
        if (gap > static_cast<uint64_t>(len - 1 - prev)) fail("a gap runs past the end of its chunk");
        if (pos >= end) fail("a record has no sign bit");
        negative = get_bit(words, pos) != 0u;
        pos += 1;
        if (levels_ > 1u) {
          st = fast_elias(words, pos, end, code_, level_log, level);
          if (st == kEliasTooLong) fail("over-long Elias prefix of a level");
          if (st != kEliasOk) fail("a level code runs past the end of its chunk");
        }
      }
      const int64_t rel = prev + static_cast<int64_t>(gap);
      const int64_t i = begin + rel;
      while (i >= blocks_[block + 1]) ++block;
      const float scale = p.scales[static_cast<size_t>(block)];
      if (!sdither_record_ok(level, levels_, scale)) {
        corrupt(spec(), level > levels_ ? "level above " + std::to_string(levels_) + " in chunk " + std::to_string(c)
                                        : "a nonzero in block " + std::to_string(block) + ", whose scale is 0");
      }
      if (use_table) {  // the block's magnitudes dither_value(l, false, scale), computed once
        if (block != table_block) {
          for (uint32_t l = 0; l <= levels_; ++l) table[l] = dither_value(l, false, scale, levels_);
          table_block = block;
        }
        // dither_value negates its magnitude: the sign bit flipped, without a branch on random signs
        sink(i, bits_float(float_bits(table[static_cast<size_t>(level)]) ^ (static_cast<uint32_t>(negative) << 31)));
      } else {
        sink(i, dither_value(static_cast<uint32_t>(level), negative, scale, levels_));
      }
      prev = rel;
    }
  }
}

SDitherCodec::Parsed SDitherCodec::checked(std::span<const uint8_t> payload, std::span<float> out) const {
  // check_decode_args, with the payload parsed once for the validation walk and the decode
  GCOMP_EXPECTS(
      static_cast<int64_t>(out.size()) == num_elems(), gcompErrorInvalidArgument,
      "decode: output has " + std::to_string(out.size()) + " elements, layout has " + std::to_string(num_elems()));
  Parsed p = parse(payload);
  for_each_chunk_range([&](int64_t c0, int64_t c1) { walk(p, c0, c1, [](int64_t, float) {}); });
  return p;
}

void SDitherCodec::validate(std::span<const uint8_t> payload) const {
  const Parsed p = parse(payload);
  for_each_chunk_range([&](int64_t c0, int64_t c1) { walk(p, c0, c1, [](int64_t, float) {}); });
}

void SDitherCodec::decode_impl(std::span<const uint8_t> payload, float weight, bool overwrite,
                               std::span<float> out) const {
  const Parsed p = checked(payload, out);  // validated, so the walks below cannot fail half-way
  add_groups(std::span<const Parsed>(&p, 1), std::span<const float>(&weight, 1), overwrite, out.data());
}

void SDitherCodec::add_groups(std::span<const Parsed> parsed, std::span<const float> weights, bool overwrite,
                              float* out) const {
  // Groups of whole chunks, about kSubElems elements: each payload's values go to a zeroed L1
  // scratch (stores without branches on the gaps), then out = scratch (overwrite) or
  // out + w * scratch for each payload in turn. A zero of the scratch adds w * 0, as
  // decode_accumulate does between nonzeros, so the bits equal one payload after the other.
  // Chunk ranges run on the pool: each writes its own part of out.
  const int64_t n = num_elems();
  const int64_t per_group = std::max<int64_t>(1, kSubElems / chunk_);
  const int64_t group_elems = per_group * chunk_;
  const bool stream = overwrite && 4 * n >= stream_min_bytes();
  for_each_chunk_range([&](int64_t r0, int64_t r1) {
    std::vector<float> heap;
    alignas(64) float local[kSubElems];
    float* scratch = local;
    if (group_elems > kSubElems) {
      heap.resize(static_cast<size_t>(std::min(n, group_elems)));
      scratch = heap.data();
    }
    for (int64_t c0 = r0; c0 < r1; c0 += per_group) {
      const int64_t c1 = std::min(r1, c0 + per_group);
      const int64_t g0 = c0 * chunk_, g1 = std::min(n, c1 * chunk_);
      for (size_t j = 0; j < parsed.size(); ++j) {
        std::memset(scratch, 0, sizeof(float) * static_cast<size_t>(g1 - g0));
        walk(parsed[j], c0, c1, [scratch, g0](int64_t i, float v) { scratch[i - g0] = v; });
        if (!overwrite)
          kernels::axpy(scratch, g1 - g0, weights[j], out + g0);
        else if (stream)
          kernels::stream_copy(reinterpret_cast<const uint8_t*>(scratch), g1 - g0, out + g0);
        else
          std::memcpy(out + g0, scratch, sizeof(float) * static_cast<size_t>(g1 - g0));
      }
    }
    if (stream) kernels::stream_fence();  // before the pool hands the range back
  });
}

void SDitherCodec::decode_reduce(std::span<const std::span<const uint8_t>> payloads, std::span<const RngKey> keys,
                                 std::span<const float> weights, std::span<float> out) const {
  GCOMP_EXPECTS(keys.size() == payloads.size() && weights.size() == payloads.size(), gcompErrorInvalidArgument,
                "decode_reduce: " + std::to_string(payloads.size()) + " payloads, " + std::to_string(keys.size()) +
                    " keys and " + std::to_string(weights.size()) + " weights");
  // check_reduce_args: every payload parsed and validated before out changes
  std::vector<Parsed> parsed;
  parsed.reserve(payloads.size());
  for (size_t j = 0; j < payloads.size(); ++j) {
    try {
      parsed.push_back(checked(payloads[j], out));
    } catch (const Error& e) {
      if (e.status() != gcompErrorCorruptPayload) throw;
      GCOMP_FAIL(gcompErrorCorruptPayload, "decode_reduce: payload " + std::to_string(j) + ": " + e.what());
    }
  }
  add_groups(parsed, weights, false, out.data());
}

void SDitherCodec::decode_accumulate(std::span<const uint8_t> payload, const RngKey&, float weight,
                                     std::span<float> out) const {
  decode_impl(payload, weight, false, out);
}

void SDitherCodec::decode(std::span<const uint8_t> payload, const RngKey&, std::span<float> out) const {
  decode_impl(payload, 1.0f, true, out);
}

}  // namespace gcomp::detail
