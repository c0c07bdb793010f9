// SPDX-License-Identifier: Apache-2.0
/// @file sparse.hpp
/// @brief Selection orders and index packing of the sparse codecs (spec/ALGORITHMS.md §4).
#pragma once

#include <gcomp/detail/hd.hpp>

namespace gcomp::detail {

/// k from the spec: a fixed k clamped to n, else max(1, floor(ratio * n)); 0 when n = 0.
GCOMP_HD int64_t sparse_k(int64_t n, int64_t fixed_k, double ratio) {
  if (n <= 0) return 0;
  if (fixed_k > 0) return fixed_k < n ? fixed_k : n;
  int64_t k = static_cast<int64_t>(ratio * static_cast<double>(n));
  if (k < 1) k = 1;
  return k < n ? k : n;
}

/// Top-k order on float bit patterns: larger |x| first, ties to the lower index. Comparing the
/// magnitude bits (sign cleared) as unsigned integers orders finite floats by |x|.
GCOMP_HD bool topk_before(uint32_t bits_a, int64_t a, uint32_t bits_b, int64_t b) {
  const uint32_t ma = bits_a & 0x7fffffffu;
  const uint32_t mb = bits_b & 0x7fffffffu;
  return ma != mb ? ma > mb : a < b;
}

/// Random-k order: smaller Philox key first, ties to the lower index. The k first elements form
/// a uniform k-subset (a random permutation by sorting on random keys).
GCOMP_HD bool randk_before(uint32_t key_a, int64_t a, uint32_t key_b, int64_t b) {
  return key_a != key_b ? key_a < key_b : a < b;
}

/// The n/k scale of unbiased random-k, rounded once from double.
/// The DGC-style sampled top-k's adaptation (spec §4.4) over its rounds: round r's threshold is
/// the sample's threshold lowered r times by a factor 0.8 (each a float product, as one round after
/// another computes it).
GCOMP_HD float sampled_round_threshold(float thr, int r) {
  for (int i = 0; i < r; ++i) thr = thr * 0.8f;
  return thr;
}

/// The round whose threshold stands, given counts[r] = the number of |x| >= round r's threshold for
/// every r < rounds: the first r with at least 0.8 k elements, else the last round (the rounds run
/// one after another stop there, and the last is never lowered further).
GCOMP_HD int sampled_round(const unsigned long long* counts, int rounds, int64_t k) {
  for (int r = 0; r + 1 < rounds; ++r)
    if (!(static_cast<double>(counts[r]) < 0.8 * static_cast<double>(k))) return r;
  return rounds - 1;
}

/// The keys of R rounds' thresholds: float_bits(thr_r) & 0x7fffffff, the truncate mode's T (for a
/// finite x and thr_r >= 0, key(x) >= T_r is |x| >= thr_r). Non-increasing in r.
template <int R>
GCOMP_HD void sampled_round_keys(float thr, uint32_t (&keys)[R]) {
#if defined(__CUDA_ARCH__)
#pragma unroll
#endif
  for (int r = 0; r < R; ++r) {
    keys[r] = float_bits(thr) & 0x7fffffffu;
    thr = thr * 0.8f;
  }
}

/// Per tile of at most 2^16 - 1 elements, the count of each of R rounds (key >= keys[r]), two
/// 16-bit counts per word (round r in the half r % 2 of word r / 2): element `key` added.
template <int R>
GCOMP_HD void add_round_counts(uint32_t key, const uint32_t (&keys)[R], uint32_t (&words)[R / 2]) {
  static_assert(R % 2 == 0, "two rounds per word");
#if defined(__CUDA_ARCH__)
#pragma unroll
#endif
  for (int r = 0; r < R; ++r) words[r / 2] += (key >= keys[r] ? 1u : 0u) << (16 * (r % 2));
}

/// Round r's count from its packed words (add_round_counts).
GCOMP_HD uint32_t round_count_of(const uint32_t* words, int r) { return (words[r / 2] >> (16 * (r % 2))) & 0xffffu; }

GCOMP_HD float randk_scale(int64_t n, int64_t k) {
  return k > 0 ? static_cast<float>(static_cast<double>(n) / static_cast<double>(k)) : 0.0f;
}

/// Word w of the index bit stream: index j occupies stream bits [j*bits, (j+1)*bits), and stream
/// bit i is bit (i % 32) of word i / 32 (least significant bit first). Each word depends only on
/// the indices it overlaps, so a GPU thread per word writes it without atomics.
GCOMP_HD uint32_t pack_index_word(const int64_t* idx, int64_t k, int bits, int64_t w) {
  if (bits == 0) return 0u;
  const int64_t first_bit = w * 32;
  const int64_t last_bit = first_bit + 31;
  int64_t j = first_bit / bits;
  const int64_t j_end = last_bit / bits;
  uint32_t word = 0;
  for (; j <= j_end && j < k; ++j) {
    const int64_t start = j * bits;  // stream position of bit 0 of index j
    const uint64_t v = static_cast<uint64_t>(idx[j]);
    const int64_t shift = start - first_bit;
    if (shift >= 0)
      word |= static_cast<uint32_t>(v << shift);
    else
      word |= static_cast<uint32_t>(v >> (-shift));
  }
  return word;
}

/// Fields j, j + 1, ... of an LSB-first stream of `bits`-bit fields (1..32), in order: a 64-bit
/// bit buffer refilled one 32-bit word at a time, so a run of fields costs one load per 32 bits
/// (read_packed_field below loads a two-word window per field). `word(w)` returns stream word w;
/// the caller decides what lies past its payload (zeros, or never asked for). The constructor
/// loads the word holding field j's first bit; next() loads a word only when the buffer holds fewer
/// than `bits` bits, so fields up to the last one asked for are all that is read.
template <class Word>
class FieldReader {
 public:
  GCOMP_HD FieldReader(Word word, int64_t j, uint32_t bits)
      : mask_((uint64_t{1} << bits) - 1u), bits_(bits), word_(word) {
    const uint64_t pos = static_cast<uint64_t>(j) * bits;
    w_ = pos >> 5;
    const auto off = static_cast<uint32_t>(pos & 31u);
    buf_ = static_cast<uint64_t>(word_(w_++)) >> off;
    have_ = 32u - off;
  }
  GCOMP_HD uint32_t next() {
    if (have_ < bits_) {  // have_ <= 31: the word's bits end below bit 63
      buf_ |= static_cast<uint64_t>(word_(w_++)) << have_;
      have_ += 32u;
    }
    const auto field = static_cast<uint32_t>(buf_ & mask_);
    buf_ >>= bits_;
    have_ -= bits_;
    return field;
  }
  GCOMP_HD const Word& word() const { return word_; }

 private:
  uint64_t buf_ = 0;
  uint64_t mask_;
  uint32_t have_ = 0;
  uint32_t bits_;
  uint64_t w_ = 0;
  Word word_;
};

/// Field j of the same LSB-first stream, for fields of 1..32 bits (a field spans at most two
/// words): the inverse of pack_index_word. Used by the spherical kernels and the reference
/// kernels, which read single fields out of order.
GCOMP_HD uint64_t read_packed_field(const uint32_t* words, int64_t j, uint32_t bits) {
  const uint64_t pos = static_cast<uint64_t>(j) * bits;
  const uint64_t w = pos >> 5;
  const uint32_t off = static_cast<uint32_t>(pos & 31u);
  uint64_t v = static_cast<uint64_t>(words[w]) >> off;
  if (off + bits > 32u) v |= static_cast<uint64_t>(words[w + 1]) << (32u - off);
  return v & ((uint64_t{1} << bits) - 1u);
}

}  // namespace gcomp::detail
