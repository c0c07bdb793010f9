// SPDX-License-Identifier: Apache-2.0
// Bits-vs-variance report (spec/ALGORITHMS.md §5.2(c), §9.2 T17).
#include <gcomp/bits_report.hpp>

#include "host/codecs/internal.hpp"
#include "host/codecs/spherical.hpp"

#include <gcomp/detail/sparse.hpp>

#include <cmath>
#include <limits>

namespace gcomp {

namespace {

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

double sq_norm(std::span<const float> x) {
  double s = 0.0;
  for (float v : x) s += static_cast<double>(v) * static_cast<double>(v);
  return s;
}

double sq_dist(std::span<const float> a, std::span<const float> b) {
  double s = 0.0;
  for (size_t i = 0; i < a.size(); ++i) {
    const double d = static_cast<double>(a[i]) - static_cast<double>(b[i]);
    s += d * d;
  }
  return s;
}

/// E|C(x) - x|^2 of the dither-family quantizers (§2.2: sum (nu/s)^2 tau (1 - tau); natural
/// dithering §5.3: nu^2 (hi - r)(r - lo)), with the scales the codec itself computes.
double dither_family_error(const Codec& c, std::span<const float> x) {
  const CodecSpec& s = c.spec();
  std::vector<float> scales(static_cast<size_t>(c.num_scales()));
  c.compute_scales(x, scales);
  const auto blocks = block_offsets(c.layout(), s.id == CodecId::kTernGrad ? 0 : s.block);
  const double levels = static_cast<double>(s.levels);
  double v = 0.0;
  for (size_t b = 0; b + 1 < blocks.size(); ++b) {
    const double nu = scales[b];
    if (nu == 0.0) continue;
    for (int64_t i = blocks[b]; i < blocks[b + 1]; ++i) {
      const double a = std::fabs(static_cast<double>(x[static_cast<size_t>(i)]));
      if (s.id == CodecId::kNatDither) {
        const double r = a / nu;
        if (r >= 1.0) continue;
        const double first = std::ldexp(1.0, 1 - static_cast<int>(s.levels));
        double lo = 0.0, hi = first;
        if (r >= first) {
          lo = std::ldexp(1.0, static_cast<int>(std::floor(std::log2(r))));
          hi = 2.0 * lo;
        }
        v += nu * nu * (hi - r) * (r - lo);
      } else {
        const double r = std::min(levels, levels * a / nu);
        const double tau = r - std::floor(r);
        v += (nu / levels) * (nu / levels) * tau * (1.0 - tau);
      }
    }
  }
  return v;
}

/// E|C(x) - x|^2 by a closed form when the codec has one; NaN otherwise.
double exact_error(const Codec& c, std::span<const float> x) {
  const CodecSpec& s = c.spec();
  switch (s.id) {
    case CodecId::kIdentity: return 0.0;
    case CodecId::kDither:
    case CodecId::kNatDither:
    case CodecId::kSDither: return dither_family_error(c, x);
    case CodecId::kTernGrad: return s.clip > 0.0 ? kNaN : dither_family_error(c, x);
    case CodecId::kRandK: {
      if (!s.unbiased) return kNaN;
      const double k = static_cast<double>(detail::sparse_k(c.num_elems(), s.k, s.ratio));
      return k > 0 ? (static_cast<double>(c.num_elems()) / k - 1.0) * sq_norm(x) : 0.0;
    }
    case CodecId::kNatural: {
      double v = 0.0;
      for (float t : x) {
        if (t == 0.0f) continue;
        const double at = std::fabs(static_cast<double>(t));
        const double a = std::ldexp(1.0, static_cast<int>(std::floor(std::log2(at))));
        v += (2.0 * a - at) * (at - a);
      }
      return v;
    }
    case CodecId::kSpherical: return static_cast<const detail::SphericalCodec&>(c).exact_error(x);
    default: return kNaN;
  }
}

}  // namespace

double lower_bound_bits(int64_t num_elems, double eps) {
  if (!(eps > 0.0) || !(eps < 1.0) || num_elems <= 0) return kNaN;
  return 0.5 * static_cast<double>(num_elems) * std::log2(1.0 / eps);
}

BitsReport bits_report(const Codec& codec, std::span<const float> x, const BitsReportOptions& options) {
  GCOMP_EXPECTS(static_cast<int64_t>(x.size()) == codec.num_elems(), gcompErrorInvalidArgument,
                "bits_report: input has " + std::to_string(x.size()) + " elements, layout has " +
                    std::to_string(codec.num_elems()));
  GCOMP_EXPECTS(options.draws >= 1, gcompErrorInvalidArgument, "bits_report: draws must be >= 1");
  BitsReport r;
  r.spec = codec.spec().canonical();
  r.num_elems = codec.num_elems();
  r.declared = codec.guarantee();
  r.bits_worst = codec.encoded_bits();

  std::vector<uint8_t> payload(codec.encoded_bytes());
  std::vector<float> y(x.size());
  codec.encode(x, options.key, payload);
  r.bits = codec.payload_bits(payload);
  r.bits_per_coord = r.num_elems > 0 ? r.bits / static_cast<double>(r.num_elems) : 0.0;

  const double xx = sq_norm(x);
  r.measured_is_omega = r.declared.kind == Guarantee::Kind::kUnbiased;
  const double exact = r.measured_is_omega ? exact_error(codec, x) : kNaN;
  if (!std::isnan(exact)) {
    r.method = ErrorMeasure::kExact;
    r.measured = xx > 0.0 ? exact / xx : 0.0;
  } else if (!codec.randomized()) {
    r.method = ErrorMeasure::kSingleDraw;
    r.draws = 1;
    codec.decode(payload, options.key, y);
    r.measured = xx > 0.0 ? sq_dist(y, x) / xx : 0.0;
  } else {
    r.method = ErrorMeasure::kMonteCarlo;
    r.draws = options.draws;
    double sum = 0.0;
    for (int k = 0; k < options.draws; ++k) {
      RngKey key = options.key;
      key.step = options.key.step + static_cast<uint32_t>(k);
      if (k > 0) codec.encode(x, key, payload);
      codec.decode(payload, key, y);
      sum += sq_dist(y, x);
    }
    r.measured = xx > 0.0 ? sum / static_cast<double>(options.draws) / xx : 0.0;
  }

  double eps_declared = kNaN;
  if (r.declared.kind == Guarantee::Kind::kUnbiased) eps_declared = r.declared.omega / (1.0 + r.declared.omega);
  else if (r.declared.kind == Guarantee::Kind::kContractive) eps_declared = 1.0 - r.declared.delta;
  const double eps_measured = r.measured_is_omega ? r.measured / (1.0 + r.measured) : r.measured;
  r.lb_declared_bits = lower_bound_bits(r.num_elems, eps_declared);
  r.lb_measured_bits = lower_bound_bits(r.num_elems, eps_measured);
  r.r_declared = r.bits_worst / r.lb_declared_bits;  // NaN propagates "n/a"
  r.r_measured = r.bits / r.lb_measured_bits;
  return r;
}

}  // namespace gcomp
