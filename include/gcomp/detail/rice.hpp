// SPDX-License-Identifier: Apache-2.0
/// @file rice.hpp
/// @brief Golomb-Rice gap coding of the top-k indices (`topk:...,index=rice`,
/// docs/wire-format.md §3.4.1), shared by the CPU codec and the CUDA kernels.
///
/// The k selected indices i_0 < i_1 < ... < i_(k-1) are sent as gaps g_0 = i_0 + 1,
/// g_j = i_j - i_(j-1) (all >= 1). The Rice code of g with parameter b writes v = g - 1 as
/// q = v >> b zero bits, a one bit, then the b low bits of v, most significant first: length
/// q + 1 + b. For gaps of a uniformly random k-subset (close to geometric with mean n/k) the best
/// Rice parameter is about log2(0.96 n/k) (Kiely 2004); gcomp uses b = floor(log2(floor(n/k))),
/// computed from n and k alone, so it is never sent.
///
/// Bit order as include/gcomp/detail/elias.hpp: stream bit t is bit (t mod 32) of word t / 32, and
/// every code starts at its lowest stream position. Portable integer math only.
#pragma once

#include <gcomp/detail/elias.hpp>
#include <gcomp/detail/hd.hpp>

namespace gcomp::detail {

/// Codes per directory group: the directory holds the stream offset of codes 1024, 2048, ...
inline constexpr int64_t kRiceGroup = 1024;

/// b = floor(log2(floor(n / k))) for 1 <= k <= n; 0 otherwise.
GCOMP_HD uint32_t rice_param(int64_t n, int64_t k) {
  if (k <= 0 || n <= 0) return 0u;
  return floor_log2_u64(static_cast<uint64_t>(n / k));
}

/// Bits of the Rice code of gap g >= 1.
GCOMP_HD uint64_t rice_len(uint64_t gap, uint32_t b) { return ((gap - 1u) >> b) + 1u + b; }

/// Worst-case stream bits over every k-subset of n indices: the code lengths sum to
/// k (1 + b) + sum_j floor((g_j - 1) / 2^b) <= k (1 + b) + floor((n - k) / 2^b), since the gaps sum
/// to i_(k-1) + 1 <= n (reached by k - 1 gaps of 1 and one gap of n - k + 1).
GCOMP_HD uint64_t rice_worst_bits(int64_t n, int64_t k, uint32_t b) {
  if (k <= 0) return 0u;
  return static_cast<uint64_t>(k) * (1u + b) + (static_cast<uint64_t>(n - k) >> b);
}

/// Directory entries of k codes: one per group after the first.
GCOMP_HD int64_t rice_dir_entries(int64_t k) { return k > kRiceGroup ? (k - 1) / kRiceGroup : 0; }

/// Writes the code of gap g >= 1 at pos through or_word (zeroed words, see put_bits_with); returns
/// the position after it. The q leading zeros are the zeroed words themselves.
template <class OrWord>
GCOMP_HD uint64_t write_rice_with(OrWord&& or_word, uint64_t pos, uint64_t gap, uint32_t b) {
  const uint64_t v = gap - 1u;
  const uint64_t q = v >> b;
  const uint64_t rest = b == 0u ? 0u : (v & ((uint64_t{1} << b) - 1u));
  put_bits_with(or_word, pos + q, (uint64_t{1} << b) | rest, b + 1u);
  return pos + q + 1u + b;
}

/// write_rice_with on a plain zeroed word array.
GCOMP_HD uint64_t write_rice(uint32_t* words, uint64_t pos, uint64_t gap, uint32_t b) {
  return write_rice_with([words](uint64_t w, uint32_t bits) { words[w] |= bits; }, pos, gap, b);
}

/// Number of trailing zero bits of v != 0 (portable binary search; no __ffs or __builtin_ctz).
GCOMP_HD uint32_t ctz32(uint32_t v) {
  uint32_t n = 0;
  if ((v & 0xffffu) == 0u) {
    n += 16u;
    v >>= 16;
  }
  if ((v & 0xffu) == 0u) {
    n += 8u;
    v >>= 8;
  }
  if ((v & 0xfu) == 0u) {
    n += 4u;
    v >>= 4;
  }
  if ((v & 0x3u) == 0u) {
    n += 2u;
    v >>= 2;
  }
  if ((v & 0x1u) == 0u) n += 1u;
  return n;
}

/// Outcome of reading codes (read_rice, rice_walk_group).
enum : uint32_t {
  kRiceOk = 0,
  kRicePastEnd = 1,   ///< a code runs past the end of its group
  kRiceTooLong = 2,   ///< a quotient above the largest possible gap
  kRiceBeyondN = 3,   ///< an index at or beyond n
  kRiceWrongEnd = 4,  ///< a group that does not end exactly at its end
};

/// Reads one code at pos, not at or beyond `end`, with a quotient of at most max_q (a gap of at
/// most (max_q + 1) 2^b). On kRiceOk, gap and pos are updated.
GCOMP_HD uint32_t read_rice(const uint32_t* words, uint64_t& pos, uint64_t end, uint32_t b, uint64_t max_q,
                            uint64_t& gap) {
  // The zero run, a word at a time.
  uint64_t q = 0;
  while (true) {
    if (pos >= end) return kRicePastEnd;
    const uint32_t off = static_cast<uint32_t>(pos & 31u);
    const uint32_t w = words[pos >> 5] >> off;
    if (w != 0u) {
      const uint32_t z = ctz32(w);
      q += z;
      pos += z;
      break;
    }
    q += 32u - off;
    pos += 32u - off;
    if (q > max_q) return kRiceTooLong;
  }
  if (q > max_q) return kRiceTooLong;
  if (pos >= end) return kRicePastEnd;  // the one bit lies beyond the group
  if (end - pos < uint64_t{1} + b) return kRicePastEnd;
  const uint64_t rest = get_bits(words, pos + 1u, b);
  pos += 1u + b;
  gap = ((q << b) | rest) + 1u;
  return kRiceOk;
}

/// Parses the `count` codes of one group from stream bits [pos, end): the codes must end exactly
/// at `end`, and the indices (from `prev`, the index before the group, -1 for the first) must
/// stay below n. Calls on_index(j, index) for each code j = 0 .. count-1, in order. `last` gets
/// the group's last index. The one parser of the CPU codec and the GPU decode kernels.
template <class OnIndex>
GCOMP_HD uint32_t rice_walk_group(const uint32_t* words, uint64_t pos, uint64_t end, uint32_t b, int64_t n,
                                  int64_t count, int64_t prev, int64_t& last, OnIndex&& on_index) {
  const uint64_t max_q = n > 0 ? static_cast<uint64_t>(n - 1) >> b : 0u;
  for (int64_t j = 0; j < count; ++j) {
    uint64_t gap = 0;
    const uint32_t st = read_rice(words, pos, end, b, max_q, gap);
    if (st != kRiceOk) return st;
    if (gap > static_cast<uint64_t>(n - 1 - prev)) return kRiceBeyondN;
    prev += static_cast<int64_t>(gap);
    on_index(j, prev);
  }
  if (pos != end) return kRiceWrongEnd;
  last = prev;
  return kRiceOk;
}

}  // namespace gcomp::detail
