// SPDX-License-Identifier: Apache-2.0
// spherical: spherical-codebook compression (spec/ALGORITHMS.md §5.2(b)). Per block: nu = |y|_2
// (fp32, the dither l2 reduction order), 2^B Gaussian codewords from the shared seed
// (include/gcomp/detail/spherical.hpp), j* = argmax <c_j, y> (ties to the smaller j), decoded
// (nu / beta) c_j* (unscaled: nu c_j*). Byte layout: docs/wire-format.md §3.8.
#include "host/codecs/spherical.hpp"

#include <gcomp/detail/codec_math.hpp>
#include <gcomp/detail/norms.hpp>
#include <gcomp/detail/sparse.hpp>
#include <gcomp/detail/spherical.hpp>

#include <algorithm>
#include <limits>
#include <mutex>
#include <utility>

namespace gcomp::detail {

double cached_spherical_beta(int64_t m, uint32_t bits) {
  static std::mutex mu;
  static std::map<std::pair<int64_t, uint32_t>, double> cache;
  {
    std::lock_guard<std::mutex> lock(mu);
    auto it = cache.find({m, bits});
    if (it != cache.end()) return it->second;
  }
  const double beta = spherical_beta(m, bits);
  std::lock_guard<std::mutex> lock(mu);
  cache.emplace(std::make_pair(m, bits), beta);
  return beta;
}

namespace {

/// Index l of the B-bit index stream (bits [l B, (l + 1) B), LSB first).
uint32_t read_index(const uint8_t* words, int64_t l, uint32_t bits) {
  uint32_t v = 0;
  for (uint32_t k = 0; k < bits; ++k) {
    const uint64_t pos = static_cast<uint64_t>(l) * bits + k;
    const uint32_t w = load_u32(words + 4 * (pos >> 5));
    v |= ((w >> (pos & 31u)) & 1u) << k;
  }
  return v;
}

}  // namespace

SphericalCodec::SphericalCodec(CodecSpec spec, Layout layout) : Codec(std::move(spec), std::move(layout)) {
  const SphericalOptions& sp = this->spec().options<SphericalOptions>();
  unscaled_ = sp.unscaled;
  GCOMP_EXPECTS(sp.index_bits >= 1 && sp.index_bits <= 16, gcompErrorInvalidArgument,
                "spherical: bits must be in [1, 16]");
  GCOMP_EXPECTS(sp.dim >= 1 && (int64_t{1} << sp.index_bits) <= (int64_t{1} << 22) / sp.dim, gcompErrorInvalidArgument,
                "spherical: block >= 1 and 2^bits * block <= 2^22 are required");
  GCOMP_EXPECTS(num_elems() <= (int64_t{1} << (50 - sp.index_bits)), gcompErrorInvalidArgument,
                "spherical: n * 2^bits must stay below 2^50 (codebook counter range)");
  bits_ = sp.index_bits;
  blocks_ = block_offsets(this->layout(), sp.dim);
  num_blocks_ = static_cast<int64_t>(blocks_.size()) - 1;
  index_words_ = ceil_div(num_blocks_ * static_cast<int64_t>(bits_), 32);
  for (int64_t b = 0; b < num_blocks_; ++b) {
    const int64_t len = blocks_[b + 1] - blocks_[b];
    if (!betas_.count(len)) betas_.emplace(len, cached_spherical_beta(len, bits_));
  }
}

size_t SphericalCodec::encoded_bytes() const { return static_cast<size_t>(4 * num_blocks_ + 4 * index_words_); }

double SphericalCodec::encoded_bits() const {
  return static_cast<double>(num_blocks_) * (32.0 + static_cast<double>(bits_));
}

double SphericalCodec::block_beta(int64_t len) const {
  auto it = betas_.find(len);
  GCOMP_EXPECTS(it != betas_.end(), gcompErrorInvalidArgument, "spherical: no block of length " + std::to_string(len));
  return it->second;
}

Guarantee SphericalCodec::guarantee() const {
  double beta = 1.0;  // the worst block: the smallest beta (the longest block)
  for (const auto& [len, b] : betas_) beta = std::min(beta, b);
  Guarantee g;
  if (!unscaled_) {
    g.kind = Guarantee::Kind::kUnbiased;
    g.omega = 1.0 / (beta * beta) - 1.0;
  } else if (beta > 0.5) {
    g.kind = Guarantee::Kind::kContractive;
    g.delta = 2.0 * beta - 1.0;
  }
  return g;
}

float SphericalCodec::block_norm(const float* x, int64_t len) const {
  return finish_norm(kNormL2, block_reduce(SquareSumOp{}, x, len), 2.0);
}

bool SphericalCodec::decodes_finite(float nu, int64_t len) const {
  // The decoded values are nu / beta * c with |c_k| <= 1 (unscaled: nu * c): finite when the factor
  // is within fp32 (a factor just above FLT_MAX with every |c_k| < 1 is refused too).
  if (unscaled_ || nu == 0.0f) return true;
  return static_cast<double>(nu) / block_beta(len) <= static_cast<double>(std::numeric_limits<float>::max());
}

double SphericalCodec::exact_error(std::span<const float> x) const {
  GCOMP_EXPECTS(static_cast<int64_t>(x.size()) == num_elems(), gcompErrorInvalidArgument,
                "exact_error: input size differs from the layout");
  double err = 0.0;
  for (int64_t b = 0; b < num_blocks_; ++b) {
    const int64_t len = blocks_[b + 1] - blocks_[b];
    const double nu = block_norm(x.data() + blocks_[b], len);
    const double beta = block_beta(len);
    err += (unscaled_ ? 2.0 * (1.0 - beta) : 1.0 / (beta * beta) - 1.0) * nu * nu;
  }
  return err;
}

void SphericalCodec::encode(std::span<const float> x, const RngKey& key, std::span<uint8_t> payload) const {
  check_encode_args(x, payload);
  std::vector<float> norms(static_cast<size_t>(num_blocks_));
  for (int64_t b = 0; b < num_blocks_; ++b)
    norms[static_cast<size_t>(b)] = block_norm(x.data() + blocks_[b], blocks_[b + 1] - blocks_[b]);
  // A NaN or Inf anywhere is NON_FINITE, whatever block comes first; then the range errors.
  if (std::any_of(norms.begin(), norms.end(), [](float v) { return !is_finite_f(v); }))
    require_finite(x.data(), num_elems());
  for (int64_t b = 0; b < num_blocks_; ++b) {
    const int64_t len = blocks_[b + 1] - blocks_[b];
    const float nu = norms[static_cast<size_t>(b)];
    const std::string where = "block " + std::to_string(b) + " (elements " + std::to_string(blocks_[b]) + ".." +
                              std::to_string(blocks_[b + 1] - 1) + ")";
    if (!is_finite_f(nu)) {  // finite values beyond fp32 (issue 18 #11)
      GCOMP_FAIL(gcompErrorInvalidArgument,
                 "spherical: the l2 norm of " + where +
                     " is beyond the float32 range of the payload's norm (the values are finite)");
    }
    if (!decodes_finite(nu, len))
      GCOMP_FAIL(gcompErrorInvalidArgument, "spherical: " + where + " would decode to Inf: its norm / beta(" +
                                                std::to_string(len) + ") is beyond the float32 range");
  }
  std::vector<int64_t> index(static_cast<size_t>(num_blocks_), 0);
  const uint64_t num_codewords = uint64_t{1} << bits_;
  std::vector<double> y;
  double normals[4];
  for (int64_t b = 0; b < num_blocks_; ++b) {
    if (norms[static_cast<size_t>(b)] == 0.0f) continue;  // index 0, decodes to 0
    const int64_t len = blocks_[b + 1] - blocks_[b];
    y.assign(x.begin() + blocks_[b], x.begin() + blocks_[b + 1]);
    uint64_t t = codebook_index(static_cast<uint64_t>(blocks_[b]), bits_, 0, 0, 0);
    codebook_normals4(key, t >> 2, normals);
    double best = 0.0;
    for (uint64_t j = 0; j < num_codewords; ++j) {
      double dot = 0.0, norm2 = 0.0;
      for (int64_t k = 0; k < len; ++k, ++t) {
        if ((t & 3u) == 0u) codebook_normals4(key, t >> 2, normals);
        const double g = normals[t & 3u];
        dot = dot + g * y[static_cast<size_t>(k)];
        norm2 = norm2 + g * g;
      }
      const double score = codeword_score(dot, norm2);
      if (j == 0 || score > best) {
        best = score;
        index[static_cast<size_t>(b)] = static_cast<int64_t>(j);
      }
    }
  }
  uint8_t* out = payload.data();
  for (int64_t b = 0; b < num_blocks_; ++b) store_f32(out + 4 * b, norms[static_cast<size_t>(b)]);
  for (int64_t w = 0; w < index_words_; ++w)
    store_u32(out + 4 * (num_blocks_ + w), pack_index_word(index.data(), num_blocks_, static_cast<int>(bits_), w));
}

void SphericalCodec::validate(std::span<const uint8_t> payload) const {
  if (payload.size() != encoded_bytes())
    corrupt(spec(),
            "size is " + std::to_string(payload.size()) + " bytes, expected " + std::to_string(encoded_bytes()));
  const uint8_t* in = payload.data();
  const uint8_t* words = in + 4 * num_blocks_;
  for (int64_t b = 0; b < num_blocks_; ++b) {
    const float s = load_f32(in + 4 * b);
    if (!is_finite_f(s) || s < 0.0f || float_bits(s) == 0x80000000u)
      corrupt(spec(), "norm of block " + std::to_string(b) + " is negative or not finite");
    if (s == 0.0f && read_index(words, b, bits_) != 0u)
      corrupt(spec(), "block " + std::to_string(b) + " has norm 0 and a nonzero index");
    if (!decodes_finite(s, blocks_[b + 1] - blocks_[b]))
      corrupt(spec(), "norm of block " + std::to_string(b) + " decodes to Inf (norm / beta beyond float32)");
  }
  const int64_t used = num_blocks_ * static_cast<int64_t>(bits_);
  for (int64_t w = used / 32; w < index_words_; ++w) {
    const uint32_t keep = (w == used / 32 && used % 32 != 0) ? ((1u << (used % 32)) - 1u) : 0u;
    if (load_u32(words + 4 * w) & ~keep) corrupt(spec(), "padding bits set after the last index");
  }
}

void SphericalCodec::decode_impl(std::span<const uint8_t> payload, const RngKey& key, float weight, bool overwrite,
                                 std::span<float> out) const {
  check_decode_args(payload, out);
  const uint8_t* in = payload.data();
  const uint8_t* words = in + 4 * num_blocks_;
  std::vector<double> g;
  for (int64_t b = 0; b < num_blocks_; ++b) {
    const int64_t begin = blocks_[b];
    const int64_t len = blocks_[b + 1] - begin;
    const float nu = load_f32(in + 4 * b);
    if (nu == 0.0f) {
      for (int64_t i = begin; i < begin + len; ++i) out[i] = overwrite ? 0.0f : accumulate(out[i], weight, 0.0f);
      continue;
    }
    const uint64_t j = read_index(words, b, bits_);
    g.resize(static_cast<size_t>(len));
    double norm2 = 0.0;
    for (int64_t k = 0; k < len; ++k) {
      g[static_cast<size_t>(k)] = codebook_normal(
          key,
          codebook_index(static_cast<uint64_t>(begin), bits_, j, static_cast<uint64_t>(len), static_cast<uint64_t>(k)));
      norm2 = norm2 + g[static_cast<size_t>(k)] * g[static_cast<size_t>(k)];
    }
    const double factor = unscaled_ ? static_cast<double>(nu) : static_cast<double>(nu) / block_beta(len);
    for (int64_t k = 0; k < len; ++k) {
      const float v = spherical_value(factor, g[static_cast<size_t>(k)], norm2);
      out[begin + k] = overwrite ? v : accumulate(out[begin + k], weight, v);
    }
  }
}

void SphericalCodec::decode_accumulate(std::span<const uint8_t> payload, const RngKey& key, float weight,
                                       std::span<float> out) const {
  decode_impl(payload, key, weight, false, out);
}

void SphericalCodec::decode(std::span<const uint8_t> payload, const RngKey& key, std::span<float> out) const {
  decode_impl(payload, key, 1.0f, true, out);
}

}  // namespace gcomp::detail
