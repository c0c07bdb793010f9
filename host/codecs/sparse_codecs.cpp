// SPDX-License-Identifier: Apache-2.0
// topk (§4.1) and randk (§4.2). Payload layouts in docs/wire-format.md.
#include "host/codecs/simple_codecs.hpp"

#include "host/codecs/kernels.hpp"
#include "host/codecs/pieces.hpp"
#include "host/codecs/select.hpp"

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

std::vector<int64_t> SparseCodec::select(std::span<const float> x, const RngKey& key) const {
  const int64_t n = num_elems();
  if (k_ <= 0 || k_ >= n) return select_first_k(n, k_, OrderKeys{}, 0);  // nothing or everything
  if (spec().id == CodecId::kTopK) {
    // Order keys 0x7fffffff - |x| bits: larger |x| first (topk_before); NaN and Inf come first of
    // all, so every one of them is a candidate when the threshold is at least 2^23 - 1.
    const OrderKeys keys = [&](int64_t a, int64_t e, uint32_t* out) { kernels::topk_order_keys(x.data() + a, e - a, out); };
    const uint32_t t = std::max<uint32_t>(sampled_threshold(n, k_, keys), 0x7fffffu);
    return select_first_k(n, k_, keys, t);
  }
  // Random-k: the Philox words of the select stream, one block per four elements (randk_before).
  // The k smallest of n uniform words lie below about (k + 4 sqrt(k) + 16) 2^32 / n.
  const OrderKeys keys = [&](int64_t a, int64_t e, uint32_t* out) {
    const int64_t a4 = a & ~int64_t{3};
    uint32_t words[kSubElems + 8];
    kernels::philox_words(key, kStreamSelect, static_cast<uint64_t>(a4) / 4, ceil_div(e - a4, 4), words);
    std::copy(words + (a - a4), words + (e - a4), out);
  };
  const double k = static_cast<double>(k_);
  const double t = (k + 4.0 * std::sqrt(k) + 16.0) / static_cast<double>(std::max<int64_t>(n, 1)) * 4294967296.0;
  return select_first_k(n, k_, keys, t >= 4294967295.0 ? 0xffffffffu : static_cast<uint32_t>(t));
}

void SparseCodec::encode(std::span<const float> x, const RngKey& key, std::span<uint8_t> payload) const {
  check_encode_args(x, payload);
  if (spec().id == CodecId::kRandK) require_finite(x.data(), num_elems());
  const std::vector<int64_t> idx = select(x, key);
  if (spec().id == CodecId::kTopK) {
    // NaN and Inf are first in the top-k order: when x holds any, the selection holds one, and
    // require_finite names the first of x.
    for (int64_t i : idx)
      if (!is_finite_f(x[i])) require_finite(x.data(), num_elems());
  }
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
