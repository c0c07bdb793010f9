// SPDX-License-Identifier: Apache-2.0
// Bits-vs-variance report (spec/ALGORITHMS.md §5.2(c), §9.2 T17).
#include <gcomp/bits_report.hpp>

#include "host/codecs/registry.hpp"

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

/// E|C(x) - x|^2 by the closed form of the codec's registry entry, NaN where it has none.
double exact_error(const Codec& c, std::span<const float> x) {
  auto* const exact = detail::codec_descriptor(c.spec().id()).exact_error;
  return exact != nullptr ? exact(c, x) : kNaN;
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
  if (r.declared.kind == Guarantee::Kind::kUnbiased)
    eps_declared = r.declared.omega / (1.0 + r.declared.omega);
  else if (r.declared.kind == Guarantee::Kind::kContractive)
    eps_declared = 1.0 - r.declared.delta;
  const double eps_measured = r.measured_is_omega ? r.measured / (1.0 + r.measured) : r.measured;
  r.lb_declared_bits = lower_bound_bits(r.num_elems, eps_declared);
  r.lb_measured_bits = lower_bound_bits(r.num_elems, eps_measured);
  r.r_declared = r.bits_worst / r.lb_declared_bits;  // NaN propagates "n/a"
  r.r_measured = r.bits / r.lb_measured_bits;
  return r;
}

}  // namespace gcomp
