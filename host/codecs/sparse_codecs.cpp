// SPDX-License-Identifier: Apache-2.0
// topk (§4.1) and randk (§4.2). Payload layouts in docs/wire-format.md.
#include "host/codecs/simple_codecs.hpp"

#include <gcomp/detail/codec_math.hpp>
#include <gcomp/detail/sparse.hpp>

#include <algorithm>
#include <cmath>

namespace gcomp::detail {

SparseCodec::SparseCodec(CodecSpec spec, Layout layout) : Codec(std::move(spec), std::move(layout)) {
  k_ = sparse_k(num_elems(), this->spec().k, this->spec().ratio);
  index_bits_ = static_cast<int>(ceil_log2_u64(static_cast<uint64_t>(num_elems())));
}

size_t SparseCodec::encoded_bytes() const {
  if (spec().id == CodecId::kRandK) return static_cast<size_t>(8 + 4 * k_);
  return static_cast<size_t>(4 * k_ + 4 * ceil_div(k_ * index_bits_, 32));
}

double SparseCodec::encoded_bits() const {
  if (spec().id == CodecId::kRandK) return 32.0 * static_cast<double>(k_) + 64.0;
  return static_cast<double>(k_) * (32.0 + index_bits_);
}

Guarantee SparseCodec::guarantee() const {
  const double n = static_cast<double>(num_elems());
  const double k = static_cast<double>(k_);
  if (num_elems() == 0) return Guarantee{Guarantee::Kind::kContractive, 0.0, 1.0};
  if (spec().id == CodecId::kRandK && spec().unbiased)
    return Guarantee{Guarantee::Kind::kUnbiased, n / k - 1.0, 0.0};
  return Guarantee{Guarantee::Kind::kContractive, 0.0, k / n};
}

namespace {

/// An element's rank word (topk: float bits, randk: Philox key) and its index.
struct Ranked {
  uint32_t word;
  int64_t index;
};

/// The k first of n elements in the strict total order `before` (topk_before / randk_before), in
/// increasing index order, with O(k) memory: a heap of the k first so far whose top is the last of
/// them; an element enters when it comes before that top. Same set as a full selection, since the
/// order has no ties.
template <class Word, class Before>
std::vector<int64_t> first_k_bounded(int64_t n, int64_t k, Word word, Before before) {
  const auto precedes = [&](const Ranked& a, const Ranked& b) { return before(a.word, a.index, b.word, b.index); };
  std::vector<Ranked> heap;
  heap.reserve(static_cast<size_t>(k));
  for (int64_t i = 0; i < n; ++i) {
    const Ranked r{word(i), i};
    if (static_cast<int64_t>(heap.size()) < k) {
      heap.push_back(r);
      std::push_heap(heap.begin(), heap.end(), precedes);
    } else if (precedes(r, heap.front())) {
      std::pop_heap(heap.begin(), heap.end(), precedes);
      heap.back() = r;
      std::push_heap(heap.begin(), heap.end(), precedes);
    }
  }
  std::vector<int64_t> idx(heap.size());
  for (size_t j = 0; j < heap.size(); ++j) idx[j] = heap[j].index;
  std::sort(idx.begin(), idx.end());
  return idx;
}

}  // namespace

std::vector<int64_t> SparseCodec::select(std::span<const float> x, const RngKey& key) const {
  const int64_t n = num_elems();
  // Random-k keys, in increasing i: one Philox block serves four elements (philox_word's words).
  Philox4x32 block{};
  uint64_t block_q = ~uint64_t{0};
  const auto randk_word = [&](int64_t i) {
    const uint64_t q = static_cast<uint64_t>(i) >> 2;
    if (q != block_q) {
      block = philox_block(key, kStreamSelect, q);
      block_q = q;
    }
    return block.v[static_cast<uint64_t>(i) & 3u];
  };
  if (k_ <= n / 8) {
    // Small k: O(k) scratch instead of O(n), so n >= 2^31 needs no n-sized index array.
    if (spec().id == CodecId::kTopK)
      return first_k_bounded(n, k_, [&](int64_t i) { return float_bits(x[i]); },
                             [](uint32_t a, int64_t ia, uint32_t b, int64_t ib) { return topk_before(a, ia, b, ib); });
    return first_k_bounded(n, k_, randk_word,
                           [](uint32_t a, int64_t ia, uint32_t b, int64_t ib) { return randk_before(a, ia, b, ib); });
  }
  std::vector<int64_t> idx(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) idx[i] = i;
  const auto mid = idx.begin() + k_;
  if (spec().id == CodecId::kTopK) {
    // Order: larger |x| first, then the lower index (topk_before in sparse.hpp).
    std::nth_element(idx.begin(), mid, idx.end(), [&](int64_t a, int64_t b) {
      return topk_before(float_bits(x[a]), a, float_bits(x[b]), b);
    });
  } else {
    std::vector<uint32_t> keys(static_cast<size_t>(n));
    for (int64_t i = 0; i < n; ++i) keys[i] = randk_word(i);
    std::nth_element(idx.begin(), mid, idx.end(), [&](int64_t a, int64_t b) {
      return randk_before(keys[a], a, keys[b], b);
    });
  }
  idx.resize(static_cast<size_t>(k_));
  std::sort(idx.begin(), idx.end());
  return idx;
}

void SparseCodec::encode(std::span<const float> x, const RngKey& key, std::span<uint8_t> payload) const {
  check_encode_args(x, payload);
  require_finite(x.data(), num_elems());
  const std::vector<int64_t> idx = select(x, key);
  uint8_t* out = payload.data();
  if (spec().id == CodecId::kRandK) {
    store_u32(out, key.step);
    store_u32(out + 4, key.rank);
    for (int64_t j = 0; j < k_; ++j) store_f32(out + 8 + 4 * j, x[idx[j]]);
    return;
  }
  for (int64_t j = 0; j < k_; ++j) store_f32(out + 4 * j, x[idx[j]]);
  const int64_t words = ceil_div(k_ * index_bits_, 32);
  uint8_t* packed = out + 4 * k_;
  for (int64_t w = 0; w < words; ++w)
    store_u32(packed + 4 * w, pack_index_word(idx.data(), k_, index_bits_, w));
}

std::vector<int64_t> SparseCodec::read_indices(std::span<const uint8_t> payload, const RngKey& key) const {
  if (spec().id == CodecId::kRandK) {
    RngKey k = key;
    k.step = load_u32(payload.data());
    k.rank = load_u32(payload.data() + 4);
    return select({}, k);
  }
  std::vector<int64_t> idx(static_cast<size_t>(k_));
  const uint8_t* packed = payload.data() + 4 * k_;
  for (int64_t j = 0; j < k_; ++j) {
    const int64_t bit = j * index_bits_;
    uint64_t v = 0;
    for (int b = 0; b < index_bits_; ++b) {
      const int64_t pos = bit + b;
      v |= static_cast<uint64_t>((load_u32(packed + 4 * (pos / 32)) >> (pos % 32)) & 1u) << b;
    }
    idx[j] = static_cast<int64_t>(v);
  }
  return idx;
}

void SparseCodec::validate(std::span<const uint8_t> payload) const {
  if (payload.size() != encoded_bytes()) corrupt(spec(), "wrong size");
  const int64_t voff = spec().id == CodecId::kRandK ? 8 : 0;
  for (int64_t j = 0; j < k_; ++j)
    if (!is_finite_f(load_f32(payload.data() + voff + 4 * j)))
      corrupt(spec(), "value " + std::to_string(j) + " is not finite");
  if (spec().id == CodecId::kRandK) return;
  const std::vector<int64_t> idx = read_indices(payload, RngKey{});
  for (int64_t j = 0; j < k_; ++j) {
    if (idx[j] >= num_elems()) corrupt(spec(), "index " + std::to_string(idx[j]) + " out of range");
    if (j > 0 && idx[j] <= idx[j - 1]) corrupt(spec(), "indices are not strictly increasing");
  }
  const int64_t used = k_ * index_bits_;
  if (used % 32 != 0 && (load_u32(payload.data() + 4 * k_ + 4 * (used / 32)) >> (used % 32)))
    corrupt(spec(), "padding bits set after the last index");
}

void SparseCodec::decode_impl(std::span<const uint8_t> payload, const RngKey& key, float weight,
                              bool overwrite, std::span<float> out) const {
  check_decode_args(payload, out);
  const std::vector<int64_t> idx = read_indices(payload, key);
  const int64_t voff = spec().id == CodecId::kRandK ? 8 : 0;
  const float scale = spec().id == CodecId::kRandK && spec().unbiased ? randk_scale(num_elems(), k_) : 1.0f;
  if (overwrite) std::fill(out.begin(), out.end(), 0.0f);
  for (int64_t j = 0; j < k_; ++j) {
    const float v = load_f32(payload.data() + voff + 4 * j) * scale;
    out[idx[j]] = overwrite ? v : accumulate(out[idx[j]], weight, v);
  }
}

void SparseCodec::decode_accumulate(std::span<const uint8_t> payload, const RngKey& key, float weight,
                                    std::span<float> out) const {
  decode_impl(payload, key, weight, false, out);
}

void SparseCodec::decode(std::span<const uint8_t> payload, const RngKey& key, std::span<float> out) const {
  decode_impl(payload, key, 1.0f, true, out);
}

}  // namespace gcomp::detail
