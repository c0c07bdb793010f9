// SPDX-License-Identifier: Apache-2.0
// Layout, block offsets and the codec base class (shared argument checks, EF and DIANA passes).
#include "host/codecs/internal.hpp"
#include "host/codecs/pieces.hpp"

#include <gcomp/detail/fused_memory.hpp>

#include <cmath>

namespace gcomp {

Layout::Layout(int64_t num_elems) : Layout(std::vector<int64_t>{num_elems}) {}

Layout::Layout(std::vector<int64_t> segment_elems) : segments_(std::move(segment_elems)) {
  offsets_.reserve(segments_.size() + 1);
  int64_t off = 0;
  for (size_t i = 0; i < segments_.size(); ++i) {
    GCOMP_EXPECTS(segments_[i] >= 0, gcompErrorInvalidArgument,
                  "layout: segment " + std::to_string(i) + " has negative size " + std::to_string(segments_[i]));
    GCOMP_EXPECTS(off <= (int64_t{1} << 50) - segments_[i], gcompErrorInvalidArgument,
                  "layout: more than 2^50 elements in total");
    offsets_.push_back(off);
    off += segments_[i];
  }
  offsets_.push_back(off);
  num_elems_ = off;
}

uint64_t Layout::digest() const {
  uint64_t h = 0xcbf29ce484222325ull;
  for (int64_t s : segments_) {
    const uint64_t v = static_cast<uint64_t>(s);
    for (int b = 0; b < 8; ++b) {
      h ^= (v >> (8 * b)) & 0xffu;
      h *= 0x100000001b3ull;
    }
  }
  return h;
}

std::vector<int64_t> block_offsets(const Layout& layout, int64_t block) {
  std::vector<int64_t> out;
  for (size_t s = 0; s < layout.segments().size(); ++s) {
    const int64_t len = layout.segments()[s];
    const int64_t begin = layout.segment_offset(s);
    const int64_t b = block > 0 ? block : len;
    for (int64_t o = 0; o < len; o += b) out.push_back(begin + o);
  }
  out.push_back(layout.num_elems());
  return out;
}

namespace detail {

void require_finite(const float* x, int64_t n) {
  const int64_t i = find_nonfinite_parallel(x, n);
  if (i >= 0)
    GCOMP_FAIL(gcompErrorNonFinite,
               "non-finite gradient: element " + std::to_string(i) + " is " + (std::isnan(x[i]) ? "NaN" : "Inf"));
}

void corrupt(const CodecSpec& spec, const std::string& why) {
  GCOMP_FAIL(gcompErrorCorruptPayload, "corrupt " + std::string(spec.name()) + " payload: " + why);
}

}  // namespace detail

void Codec::check_encode_args(std::span<const float> x, std::span<uint8_t> payload) const {
  GCOMP_EXPECTS(
      static_cast<int64_t>(x.size()) == num_elems(), gcompErrorInvalidArgument,
      "encode: input has " + std::to_string(x.size()) + " elements, layout has " + std::to_string(num_elems()));
  GCOMP_EXPECTS(payload.size() >= encoded_bytes(), gcompErrorWorkspaceTooSmall,
                "encode: payload buffer has " + std::to_string(payload.size()) + " bytes, needs " +
                    std::to_string(encoded_bytes()));
}

void Codec::check_decode_args(std::span<const uint8_t> payload, std::span<float> out) const {
  GCOMP_EXPECTS(
      static_cast<int64_t>(out.size()) == num_elems(), gcompErrorInvalidArgument,
      "decode: output has " + std::to_string(out.size()) + " elements, layout has " + std::to_string(num_elems()));
  check_payload_size(payload);
  validate(payload);
}

void Codec::check_reduce_args(std::span<const std::span<const uint8_t>> payloads, std::span<const RngKey> keys,
                              std::span<const float> weights, std::span<float> out) const {
  GCOMP_EXPECTS(keys.size() == payloads.size() && weights.size() == payloads.size(), gcompErrorInvalidArgument,
                "decode_reduce: " + std::to_string(payloads.size()) + " payloads, " + std::to_string(keys.size()) +
                    " keys and " + std::to_string(weights.size()) + " weights");
  for (size_t j = 0; j < payloads.size(); ++j) {
    try {
      check_decode_args(payloads[j], out);
    } catch (const Error& e) {
      if (e.status() != gcompErrorCorruptPayload) throw;
      GCOMP_FAIL(gcompErrorCorruptPayload, "decode_reduce: payload " + std::to_string(j) + ": " + e.what());
    }
  }
}

void Codec::decode_range(std::span<const uint8_t>, int64_t, int64_t, float, bool, float*) const {
  GCOMP_FAIL(gcompErrorNotSupported, std::string(spec().name()) + " has no range decoder");
}

void Codec::decode_reduce(std::span<const std::span<const uint8_t>> payloads, std::span<const RngKey> keys,
                          std::span<const float> weights, std::span<float> out) const {
  check_reduce_args(payloads, keys, weights, out);
  if (!range_decodable()) {
    for (size_t j = 0; j < payloads.size(); ++j) decode_accumulate(payloads[j], keys[j], weights[j], out);
    return;
  }
  // Every payload into each L1-sized sub-range while it is there: out is read and written once.
  detail::for_each_piece(num_elems(), [&](int64_t begin, int64_t end) {
    detail::for_each_sub(begin, end, [&](int64_t a, int64_t e) {
      for (size_t j = 0; j < payloads.size(); ++j) decode_range(payloads[j], a, e, weights[j], true, out.data() + a);
    });
  });
}

void Codec::check_payload_size(std::span<const uint8_t> payload) const {
  const size_t full = encoded_bytes();
  if (payload.size() == full) return;
  if (!variable_length() || payload.size() > full)
    detail::corrupt(spec(), "size is " + std::to_string(payload.size()) + " bytes, expected " + std::to_string(full));
  if (payload.size() < length_prefix_bytes())
    detail::corrupt(spec(), "short payload of " + std::to_string(payload.size()) +
                                " bytes ends before its length field (the first " +
                                std::to_string(length_prefix_bytes()) + " bytes)");
  const size_t used = used_bytes(payload);
  if (used != payload.size())
    detail::corrupt(spec(), "short payload has " + std::to_string(payload.size()) +
                                " bytes but its length field says " + std::to_string(used) +
                                (used > payload.size() ? " (truncated)" : " (trailing bytes)"));
}

void Codec::compute_scales(std::span<const float>, std::span<float>) const {
  GCOMP_FAIL(gcompErrorNotSupported, std::string(spec().name()) + " has no shareable scales");
}

void Codec::encode_with_scales(std::span<const float>, std::span<const float>, const RngKey&,
                               std::span<uint8_t>) const {
  GCOMP_FAIL(gcompErrorNotSupported, std::string(spec().name()) + " has no shareable scales");
}

void Codec::encode_ef(std::span<const float> p, const RngKey& key, std::span<uint8_t> payload,
                      std::span<float> e) const {
  GCOMP_EXPECTS(e.size() == p.size(), gcompErrorInvalidArgument, "encode_ef: memory size differs from input");
  encode(p, key, payload);
  const std::span<const uint8_t> msg = payload.first(encoded_bytes());
  if (!range_decodable()) {
    // e = p + (-1) * decoded is exactly p - decoded; in place the copy is a no-op.
    if (p.data() != e.data()) std::copy(p.begin(), p.end(), e.begin());
    decode_accumulate(msg, key, detail::fused_weight(detail::FuseMode::kEF, 0.0f), e);
    return;
  }
  ef_update(
      [&p](int64_t a, int64_t b, float* dst) {
        if (p.data() + a != dst) std::copy(p.begin() + a, p.begin() + b, dst);
      },
      msg, e);
}

void Codec::encode_ef_from(const Source& source, const RngKey& key, std::span<uint8_t> payload,
                           std::span<float> e) const {
  GCOMP_EXPECTS(static_cast<int64_t>(e.size()) == num_elems(), gcompErrorInvalidArgument,
                "encode_ef_from: memory has " + std::to_string(e.size()) + " elements, layout has " +
                    std::to_string(num_elems()));
  GCOMP_EXPECTS(payload.size() >= encoded_bytes(), gcompErrorWorkspaceTooSmall,
                "encode_ef_from: payload buffer has " + std::to_string(payload.size()) + " bytes, needs " +
                    std::to_string(encoded_bytes()));
  const SourceEncode done = range_decodable() ? encode_from(source, key, payload, e) : SourceEncode::kUnsupported;
  if (done == SourceEncode::kUnsupported) {
    // The input stored in e, then encode_ef in place.
    detail::for_each_piece(num_elems(), [&](int64_t b, int64_t t) { source(b, t, e.data() + b); });
    encode_ef(e, key, payload, e);
  } else if (done == SourceEncode::kPayload) {
    ef_update(source, payload.first(encoded_bytes()), e);
  }
}

// e = p + (-1) * decode(msg), p from `source`: the update of the fused EF kernels
// (gcomp/detail/fused_memory.hpp), exactly p - decoded. One pass over e: per sub-range, p there,
// then the decoded values subtracted while it is in L1 (a large e through streaming stores:
// overwrite_pieces).
void Codec::ef_update(const Source& source, std::span<const uint8_t> msg, std::span<float> e) const {
  const float ef_weight = detail::fused_weight(detail::FuseMode::kEF, 0.0f);
  detail::overwrite_pieces(num_elems(), e.data(), [&](int64_t begin, int64_t end, float* d) {
    detail::for_each_sub(begin, end, [&](int64_t a, int64_t b) {
      float* da = d + (a - begin);
      source(a, b, da);
      decode_range(msg, a, b, ef_weight, true, da);
    });
  });
}

void Codec::encode_diana(std::span<const float> g, std::span<float> h, float alpha, const RngKey& key,
                         std::span<uint8_t> payload, std::span<float> delta) const {
  GCOMP_EXPECTS(g.size() == h.size() && g.size() == delta.size(), gcompErrorInvalidArgument,
                "encode_diana: g, h and delta must have the same size");
  detail::for_each_piece(num_elems(), [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) delta[i] = g[i] - h[i];
  });
  encode(delta, key, payload);
  const std::span<const uint8_t> msg = payload.first(encoded_bytes());
  // h = h + alpha * decoded: the update of the fused DIANA kernels (gcomp/detail/fused_memory.hpp).
  const float weight = detail::fused_weight(detail::FuseMode::kDiana, alpha);
  if (!range_decodable()) {
    decode_accumulate(msg, key, weight, h);
    return;
  }
  detail::for_each_piece(
      num_elems(), [&](int64_t begin, int64_t end) { decode_range(msg, begin, end, weight, true, h.data() + begin); });
}

}  // namespace gcomp
