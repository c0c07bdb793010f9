// SPDX-License-Identifier: Apache-2.0
/// @file sdither_scan.hpp
/// @brief The scan of the sdither encode (spec/ALGORITHMS.md §5.2(a), docs/wire-format.md §3.7):
/// where each record goes in the stream, as a monoid over spans of consecutive elements.
///
/// Record k's stream position is the sum of the record bits of every nonzero before it, and its
/// gap counts from the previous nonzero of its chunk (from the chunk start - 1 for the first). A
/// span [a, b) of elements is summarized by its first and last nonzero and the bits of its records
/// without the first record's gap code (that gap needs the last nonzero before the span). Two
/// adjacent spans combine: the left one's last nonzero completes the right one's first gap. The
/// combine is associative with the empty span as identity, so a parallel scan over tiles and
/// threads (cuda/sdither/sdither_kernels.cuh, a decoupled look-back) gives every thread the span
/// of all elements before its own: its first stream bit (sdither_span_bits) and the previous
/// nonzero of its first record. Portable integer math only (hd.hpp): the CPU tests the GPU's code.
#pragma once

#include <gcomp/detail/elias.hpp>
#include <gcomp/detail/hd.hpp>

#include <cstdint>

namespace gcomp::detail {

/// Summary of a span of consecutive elements (plain data: CUB keeps it in its tile state).
struct SDitherSpan {
  int64_t first;  ///< first nonzero element, -1 if none
  int64_t last;   ///< last nonzero element, -1 if none
  int64_t rest;   ///< record bits without the first record's gap code (0 if no nonzero)
};

/// The empty span (no nonzero): the identity of SDitherCombine.
GCOMP_HD SDitherSpan sdither_span_none() { return SDitherSpan{-1, -1, 0}; }

/// Gap of a record at element i after the nonzero `prev` (-1: none): from the later of prev and
/// the element before i's chunk (a chunk's first gap counts from the chunk start - 1).
GCOMP_HD uint64_t sdither_gap(int64_t prev, int64_t i, int64_t chunk) {
  const int64_t floor = i / chunk * chunk - 1;
  return static_cast<uint64_t>(i - (prev < floor ? floor : prev));
}

/// The associative combine of two adjacent spans (a before b) for chunk size `chunk` and Elias
/// code `code`; a functor so that cub::BlockScan and cub::TilePrefixCallbackOp can call it.
struct SDitherCombine {
  int64_t chunk;
  uint32_t code;
  GCOMP_HD SDitherSpan operator()(const SDitherSpan& a, const SDitherSpan& b) const {
    if (b.first < 0) return a;
    if (a.first < 0) return b;
    return SDitherSpan{a.first, b.last, a.rest + b.rest + elias_len(code, sdither_gap(a.last, b.first, chunk))};
  }
};

/// Stream bits of the records of a span that starts at element 0 (the first gap counts from the
/// element before its chunk): the stream position right after the span.
GCOMP_HD int64_t sdither_span_bits(const SDitherSpan& s, int64_t chunk, uint32_t code) {
  return s.first < 0 ? 0 : s.rest + elias_len(code, sdither_gap(-1, s.first, chunk));
}

/// One element as the scan and the writer see it: its level (0: no record; at most 2^20, the
/// spec's bound) and, in bit 31, its sign (1 = negative).
GCOMP_HD uint32_t sdither_item(uint32_t level, bool negative) { return level | (negative ? 0x80000000u : 0u); }
GCOMP_HD uint32_t sdither_item_level(uint32_t item) { return item & 0x7fffffffu; }
GCOMP_HD bool sdither_item_negative(uint32_t item) { return (item >> 31) != 0u; }

/// The span of kItems consecutive elements i0 .. i0 + kItems - 1, element i0 + j being item(j)
/// (sdither_item), computed in one sequential walk (equal to the combine of the single elements).
template <int kItems, class Item>
GCOMP_HD SDitherSpan sdither_items_span(int64_t i0, Item&& item, uint32_t levels, const SDitherCombine& op) {
  SDitherSpan s = sdither_span_none();
  for (int j = 0; j < kItems; ++j) {
    const uint32_t level = sdither_item_level(item(j));
    if (level == 0u) continue;
    const int64_t i = i0 + j;
    if (s.first < 0)
      s.first = i;
    else
      s.rest += elias_len(op.code, sdither_gap(s.last, i, op.chunk));
    s.rest += sdither_level_bits(op.code, level, levels);
    s.last = i;
  }
  return s;
}

/// The words of one writer's stream bits [lo, hi), accumulated word by word (the record writers
/// touch words in increasing order): a word inside [lo, hi) holds no other writer's bits and is
/// stored whole (store(w, bits)); a word shared with a neighbour's range is ORed into a zeroed
/// stream (or_word(w, bits), skipped for no bits). Call flush() after the last record.
template <class Store, class OrWord>
struct SDitherWordWriter {
  Store store;
  OrWord or_word;
  uint64_t lo;
  uint64_t hi;
  uint64_t word = ~uint64_t{0};  ///< the word being accumulated (none yet)
  uint32_t bits = 0u;

  GCOMP_HD void operator()(uint64_t w, uint32_t b) {
    if (w != word) {
      flush();
      word = w;
      bits = 0u;
    }
    bits |= b;
  }
  GCOMP_HD void flush() {
    if (word == ~uint64_t{0}) return;
    if (32u * word >= lo && 32u * word + 32u <= hi)
      store(word, bits);
    else if (bits != 0u)
      or_word(word, bits);
    word = ~uint64_t{0};
  }
};

/// Writes the records of the kItems elements i0 .. (element i0 + j being item(j)) after the span
/// `before` of every element before i0: from stream bit sdither_span_bits(before) through `out`
/// (an SDitherWordWriter or any or_word(w, bits) callable), and dir_at(c, bit) for every chunk c
/// starting among the elements below n (the stream bit of its first record). Returns the stream
/// position after the last record.
template <int kItems, class Item, class Out, class DirAt>
GCOMP_HD uint64_t sdither_write_items(Out& out, DirAt&& dir_at, int64_t i0, Item&& item, const SDitherSpan& before,
                                      int64_t n, uint32_t levels, const SDitherCombine& op) {
  uint64_t pos = static_cast<uint64_t>(sdither_span_bits(before, op.chunk, op.code));
  int64_t prev = before.last;
  for (int j = 0; j < kItems; ++j) {
    const int64_t i = i0 + j;
    if (i < n && i % op.chunk == 0) dir_at(i / op.chunk, pos);
    const uint32_t e = item(j);
    const uint32_t level = sdither_item_level(e);
    if (level == 0u) continue;
    pos = sdither_write_record_with(out, pos, op.code, sdither_gap(prev, i, op.chunk), sdither_item_negative(e), level,
                                    levels);
    prev = i;
  }
  return pos;
}

}  // namespace gcomp::detail
