// SPDX-License-Identifier: Apache-2.0
/// @file elias.hpp
/// @brief Elias-gamma and Elias-delta codes over a little-endian uint32 bit stream, and the record
/// of sparse-coded dithering (spec/ALGORITHMS.md §2.3, §5.2(a); docs/wire-format.md §3.7).
///
/// Bit order: stream bit i is bit (i mod 32) of word i / 32. Every code is written most
/// significant bit first, so the first bit of a code is at the lowest stream position.
/// - Elias-gamma of n >= 1, L = floor(log2 n): L zero bits, then the L + 1 bits of n.
///   len_gamma(n) = 2L + 1.
/// - Elias-delta of n >= 1: Elias-gamma of L + 1, then the L low bits of n (n without its leading
///   1). len_delta(n) = L + 2 floor(log2(L + 1)) + 1.
/// Writers OR bits into a zeroed word array (a kernel replaces the OR by atomicOr through
/// put_bits_with); readers check every read against a stream end and report malformed codes
/// instead of reading past it. Portable integer math only (no __clz): g++ and nvcc agree.
#pragma once

#include <gcomp/detail/hd.hpp>

namespace gcomp::detail {

/// The Elias code of sdither records (values of the spec key `code`).
enum : uint32_t { kEliasGamma = 1, kEliasDelta = 2 };

/// floor(log2 v) for v >= 1 (0 for v = 0).
GCOMP_HD uint32_t floor_log2_u64(uint64_t v) {
  uint32_t l = 0;
  while (v > 1u) {
    v >>= 1;
    ++l;
  }
  return l;
}

GCOMP_HD uint32_t len_gamma(uint64_t n) { return 2u * floor_log2_u64(n) + 1u; }

GCOMP_HD uint32_t len_delta(uint64_t n) {
  const uint32_t l = floor_log2_u64(n);
  return l + 2u * floor_log2_u64(uint64_t{l} + 1u) + 1u;
}

/// Code length of n >= 1 for code kEliasGamma or kEliasDelta.
GCOMP_HD uint32_t elias_len(uint32_t code, uint64_t n) { return code == kEliasDelta ? len_delta(n) : len_gamma(n); }

/// Writes the low `nbits` (<= 64) bits of `value` MSB first at stream position `pos`, by calling
/// or_word(word_index, bits) once per touched word (at most 3). The words must start zeroed.
template <class OrWord>
GCOMP_HD void put_bits_with(OrWord&& or_word, uint64_t pos, uint64_t value, uint32_t nbits) {
  // Reverse the nbits so that the code's first (most significant) bit lands at the lowest position.
  uint64_t rev = 0;
  for (uint32_t k = 0; k < nbits; ++k) rev |= ((value >> k) & 1u) << (nbits - 1u - k);
  uint32_t left = nbits;
  while (left > 0u) {
    const uint32_t off = static_cast<uint32_t>(pos & 31u);
    const uint32_t take = (32u - off) < left ? (32u - off) : left;
    const uint64_t mask = (uint64_t{1} << take) - 1u;  // take <= 32
    or_word(pos >> 5, static_cast<uint32_t>((rev & mask) << off));
    rev >>= take;
    pos += take;
    left -= take;
  }
}

/// put_bits_with on a plain word array.
GCOMP_HD void put_bits(uint32_t* words, uint64_t pos, uint64_t value, uint32_t nbits) {
  put_bits_with([words](uint64_t w, uint32_t bits) { words[w] |= bits; }, pos, value, nbits);
}

/// Writes code(n), n >= 1, at pos through or_word (see put_bits_with); returns the position after
/// it. The CPU passes a plain OR into a zeroed array, a kernel an atomicOr into a zeroed stream.
template <class OrWord>
GCOMP_HD uint64_t write_elias_with(OrWord&& or_word, uint64_t pos, uint32_t code, uint64_t n) {
  const uint32_t l = floor_log2_u64(n);
  if (code == kEliasDelta) {
    const uint64_t lp1 = uint64_t{l} + 1u;
    const uint32_t ll = floor_log2_u64(lp1);
    put_bits_with(or_word, pos + ll, lp1, ll + 1u);
    pos += 2u * ll + 1u;
    if (l > 0u) put_bits_with(or_word, pos, n, l);  // the low l bits: only nbits of value are written
    return pos + l;
  }
  put_bits_with(or_word, pos + l, n, l + 1u);
  return pos + 2u * l + 1u;
}

/// write_elias_with on a plain zeroed word array.
GCOMP_HD uint64_t write_elias(uint32_t* words, uint64_t pos, uint32_t code, uint64_t n) {
  return write_elias_with([words](uint64_t w, uint32_t bits) { words[w] |= bits; }, pos, code, n);
}

GCOMP_HD uint32_t get_bit(const uint32_t* words, uint64_t pos) { return (words[pos >> 5] >> (pos & 31u)) & 1u; }

/// Reads `nbits` (<= 64) bits MSB first from [pos, pos + nbits); the caller checks the range.
GCOMP_HD uint64_t get_bits(const uint32_t* words, uint64_t pos, uint32_t nbits) {
  uint64_t v = 0;
  for (uint32_t k = 0; k < nbits; ++k) v = (v << 1) | get_bit(words, pos + k);
  return v;
}

/// Outcome of reading one Elias code.
enum : uint32_t { kEliasOk = 0, kEliasPastEnd = 1, kEliasTooLong = 2 };

/// Reads an Elias-gamma code at pos, not reading at or beyond `end`, with at most `max_log`
/// leading zeros (so the value is < 2^(max_log + 1); max_log <= 63). On kEliasOk, value and pos
/// are updated; otherwise they are unspecified.
GCOMP_HD uint32_t read_gamma(const uint32_t* words, uint64_t& pos, uint64_t end, uint32_t max_log, uint64_t& value) {
  uint32_t zeros = 0;
  while (true) {
    if (pos >= end) return kEliasPastEnd;
    if (get_bit(words, pos) != 0u) break;
    if (zeros == max_log) return kEliasTooLong;
    ++zeros;
    ++pos;
  }
  if (end - pos < uint64_t{zeros} + 1u) return kEliasPastEnd;
  value = get_bits(words, pos, zeros + 1u);
  pos += zeros + 1u;
  return kEliasOk;
}

/// Reads code(n) (gamma or delta) with n < 2^(max_log + 1) through a gamma reader
/// `gamma(pos, end, max_log, value)` (as read_gamma) and a bit reader `bits(pos, nbits)` (as
/// get_bits): read_elias on the plain word array, and the host decoder's 64-bit window readers.
template <class Gamma, class Bits>
GCOMP_HD uint32_t read_elias_with(Gamma&& gamma, Bits&& bits, uint64_t& pos, uint64_t end, uint32_t code,
                                  uint32_t max_log, uint64_t& value) {
  if (code != kEliasDelta) return gamma(pos, end, max_log, value);
  uint64_t lp1 = 0;
  const uint32_t st = gamma(pos, end, floor_log2_u64(uint64_t{max_log} + 1u), lp1);
  if (st != kEliasOk) return st;
  const uint64_t l = lp1 - 1u;
  if (l > max_log) return kEliasTooLong;
  if (end - pos < l) return kEliasPastEnd;
  value = (uint64_t{1} << l) | bits(pos, static_cast<uint32_t>(l));
  pos += l;
  return kEliasOk;
}

/// Reads code(n) (gamma or delta) with n < 2^(max_log + 1), as read_gamma.
GCOMP_HD uint32_t read_elias(const uint32_t* words, uint64_t& pos, uint64_t end, uint32_t code, uint32_t max_log,
                             uint64_t& value) {
  return read_elias_with(
      [words](uint64_t& p, uint64_t e, uint32_t m, uint64_t& v) { return read_gamma(words, p, e, m, v); },
      [words](uint64_t p, uint32_t n) { return get_bits(words, p, n); }, pos, end, code, max_log, value);
}

// ---------------------------------------------------------------------------------------------
// sdither records (§5.2(a)): code(gap), one sign bit (1 = negative), then code(level) when s > 1.
// The gap of the first nonzero of a chunk counts from the chunk start - 1.
// ---------------------------------------------------------------------------------------------

/// Bits of a record after its gap code: the sign bit and, for s > 1, the level's code (the whole
/// record: elias_len(code, gap) more).
GCOMP_HD uint32_t sdither_level_bits(uint32_t code, uint32_t level, uint32_t levels) {
  return 1u + (levels > 1u ? elias_len(code, level) : 0u);
}

/// Writes one record at pos through or_word (zeroed words); returns the position after it.
template <class OrWord>
GCOMP_HD uint64_t sdither_write_record_with(OrWord&& or_word, uint64_t pos, uint32_t code, uint64_t gap, bool negative,
                                            uint32_t level, uint32_t levels) {
  pos = write_elias_with(or_word, pos, code, gap);
  if (negative) put_bits_with(or_word, pos, 1u, 1u);
  pos += 1u;
  if (levels > 1u) pos = write_elias_with(or_word, pos, code, level);
  return pos;
}

/// Writes one record at pos into a plain zeroed word array; returns the position after it.
GCOMP_HD uint64_t sdither_write_record(uint32_t* words, uint64_t pos, uint32_t code, uint64_t gap, bool negative,
                                       uint32_t level, uint32_t levels) {
  return sdither_write_record_with([words](uint64_t w, uint32_t bits) { words[w] |= bits; }, pos, code, gap, negative,
                                   level, levels);
}

/// Outcome of parsing one chunk of records (sdither_walk_chunk); kSdOk = a well-formed chunk.
enum : uint32_t {
  kSdOk = 0,
  kSdGapTooLong,      ///< over-long Elias prefix of a gap
  kSdGapPastEnd,      ///< a gap code runs past the end of its chunk
  kSdGapBeyondChunk,  ///< a gap runs past the chunk's last element
  kSdNoSign,          ///< a record has no sign bit
  kSdLevelTooLong,    ///< over-long Elias prefix of a level
  kSdLevelPastEnd,    ///< a level code runs past the end of its chunk
  kSdLevelTooBig,     ///< level above s
  kSdRejected,        ///< on_record refused the record (the CPU and GPU: a nonzero in a zero-scale block)
};

/// Parses the records of one chunk of `len` >= 1 elements, stream bits [pos, end), in order, and
/// calls on_record(rel, negative, level) for each (rel: index from the chunk start, increasing;
/// level 1 when s = 1). on_record returns false to reject the record. Returns kSdOk when the
/// chunk parses into whole records ending exactly at `end`, else the first problem. The one parser
/// of the CPU codec and the GPU decode kernels (docs/wire-format.md §3.7 "Validation").
template <class OnRecord>
GCOMP_HD uint32_t sdither_walk_chunk(const uint32_t* words, uint64_t pos, uint64_t end, uint32_t code, uint32_t levels,
                                     int64_t len, OnRecord&& on_record) {
  const uint32_t gap_log = floor_log2_u64(static_cast<uint64_t>(len));
  const uint32_t level_log = floor_log2_u64(levels);
  int64_t prev = -1;  // relative to the chunk start
  while (pos < end) {
    uint64_t gap = 0;
    uint32_t st = read_elias(words, pos, end, code, gap_log, gap);
    if (st == kEliasTooLong) return kSdGapTooLong;
    if (st != kEliasOk) return kSdGapPastEnd;
    if (gap > static_cast<uint64_t>(len - 1 - prev)) return kSdGapBeyondChunk;
    const int64_t rel = prev + static_cast<int64_t>(gap);
    if (pos >= end) return kSdNoSign;
    const bool negative = get_bit(words, pos) != 0u;
    pos += 1;
    uint64_t level = 1;
    if (levels > 1u) {
      st = read_elias(words, pos, end, code, level_log, level);
      if (st == kEliasTooLong) return kSdLevelTooLong;
      if (st != kEliasOk) return kSdLevelPastEnd;
      if (level > levels) return kSdLevelTooBig;
    }
    if (!on_record(rel, negative, static_cast<uint32_t>(level))) return kSdRejected;
    prev = rel;
  }
  return kSdOk;
}

}  // namespace gcomp::detail
