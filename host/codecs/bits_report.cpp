// SPDX-License-Identifier: Apache-2.0
// Bits-vs-variance report (spec/ALGORITHMS.md §5.2(c), §9.2 T17).
#include <gcomp/bits_report.hpp>

#include "host/codecs/internal.hpp"
#include "host/codecs/spherical.hpp"

#include <gcomp/detail/sparse.hpp>

#include <cmath>
#include <cstdio>
#include <limits>
#include <random>

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

std::string num(double v) {
  if (!std::isfinite(v)) return "null";
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.17g", v);
  return buf;
}

std::string escape(const std::string& s) {
  std::string o;
  for (char ch : s) {
    if (ch == '"' || ch == '\\') o += '\\';
    o += ch;
  }
  return o;
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

BitsReportText bits_report_text(const BitsReport& r, int r_digits) {
  char buf[64];
  BitsReportText t;
  if (r.declared.kind == Guarantee::Kind::kUnbiased) std::snprintf(buf, sizeof buf, "omega<=%.4g", r.declared.omega);
  else if (r.declared.kind == Guarantee::Kind::kContractive) std::snprintf(buf, sizeof buf, "delta>=%.4g", r.declared.delta);
  else std::snprintf(buf, sizeof buf, "none");
  t.declared = buf;
  const char* how = r.method == ErrorMeasure::kExact ? "exact" : r.method == ErrorMeasure::kMonteCarlo ? "mc" : "1 draw";
  std::snprintf(buf, sizeof buf, "%s=%.4g (%s)", r.measured_is_omega ? "omega" : "eps", r.measured, how);
  t.measured = buf;
  const auto ratio = [&](double v) -> std::string {
    if (!std::isfinite(v)) return "n/a";
    std::snprintf(buf, sizeof buf, "%.*f", r_digits, v);
    return buf;
  };
  t.r_declared = ratio(r.r_declared);
  t.r_measured = ratio(r.r_measured);
  return t;
}

std::string bits_report_json(const BitsReport& r) {
  const char* kind = r.declared.kind == Guarantee::Kind::kUnbiased      ? "unbiased"
                     : r.declared.kind == Guarantee::Kind::kContractive ? "contractive"
                                                                         : "none";
  const char* method = r.method == ErrorMeasure::kExact ? "exact" : r.method == ErrorMeasure::kMonteCarlo ? "monte-carlo"
                                                                                                           : "single-draw";
  std::string s = "{\"spec\": \"" + escape(r.spec) + "\"";
  s += ", \"n\": " + std::to_string(r.num_elems);
  s += ", \"bits\": " + num(r.bits);
  s += ", \"bits_worst\": " + num(r.bits_worst);
  s += ", \"bits_per_coord\": " + num(r.bits_per_coord);
  s += std::string(", \"class\": \"") + kind + "\"";
  s += ", \"declared_omega\": " + (r.declared.kind == Guarantee::Kind::kUnbiased ? num(r.declared.omega) : "null");
  s += ", \"declared_delta\": " + (r.declared.kind == Guarantee::Kind::kContractive ? num(r.declared.delta) : "null");
  s += std::string(", \"measured_kind\": \"") + (r.measured_is_omega ? "omega" : "epsilon") + "\"";
  s += ", \"measured\": " + num(r.measured);
  s += std::string(", \"method\": \"") + method + "\"";
  s += ", \"draws\": " + std::to_string(r.draws);
  s += ", \"lb_declared_bits\": " + num(r.lb_declared_bits);
  s += ", \"lb_measured_bits\": " + num(r.lb_measured_bits);
  s += ", \"R_declared\": " + num(r.r_declared);
  s += ", \"R_measured\": " + num(r.r_measured);
  return s + "}";
}

std::vector<float> gaussian_vector(int64_t n, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::vector<float> x(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; i += 2) {
    const double u1 = (static_cast<double>(rng() >> 11) + 0.5) * 0x1.0p-53;
    const double u2 = static_cast<double>(rng() >> 11) * 0x1.0p-53;
    const double r = std::sqrt(-2.0 * std::log(u1));
    x[static_cast<size_t>(i)] = static_cast<float>(r * std::cos(6.283185307179586 * u2));
    if (i + 1 < n) x[static_cast<size_t>(i + 1)] = static_cast<float>(r * std::sin(6.283185307179586 * u2));
  }
  return x;
}

std::vector<std::string> bits_report_default_specs() {
  return {
      "identity",
      "natural",
      "dither:levels=1,norm=l2",
      "dither:levels=1,norm=linf,block=64",
      "dither:levels=4,norm=linf",
      "terngrad",
      "natdither:levels=3,norm=l2",
      "sign",
      "topk:k=32",
      "randk:k=32",
      "sdither:levels=1,norm=l2",
      "sdither:levels=1,norm=l2,code=delta",
      "sdither:levels=1,norm=linf",
      "sdither:levels=4,norm=linf",
      "sdither:levels=4,norm=linf,code=delta",
      "sdither:levels=32,norm=l2",
      "spherical:block=8,bits=8",
      "spherical:block=16,bits=12",
      "spherical:block=4,bits=16",
      "spherical:block=16,bits=8,unscaled=1",
  };
}

}  // namespace gcomp
