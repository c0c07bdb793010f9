// SPDX-License-Identifier: Apache-2.0
// Formatting of the tools' reports (tools/support/report.hpp).
#include "tools/support/report.hpp"

#include <gcomp/codec.hpp>

#include <cmath>
#include <cstdio>

namespace gcomp {

namespace {

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

BitsReportText bits_report_text(const BitsReport& r, int r_digits) {
  char buf[64];
  BitsReportText t;
  if (r.declared.kind == Guarantee::Kind::kUnbiased)
    std::snprintf(buf, sizeof buf, "omega<=%.4g", r.declared.omega);
  else if (r.declared.kind == Guarantee::Kind::kContractive)
    std::snprintf(buf, sizeof buf, "delta>=%.4g", r.declared.delta);
  else
    std::snprintf(buf, sizeof buf, "none");
  t.declared = buf;
  const char* how = r.method == ErrorMeasure::kExact        ? "exact"
                    : r.method == ErrorMeasure::kMonteCarlo ? "mc"
                                                            : "1 draw";
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
  const char* method = r.method == ErrorMeasure::kExact        ? "exact"
                       : r.method == ErrorMeasure::kMonteCarlo ? "monte-carlo"
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
      "topk:k=32,index=rice",
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

std::string frame_info_json(const FrameInfo& info) {
  auto codec = make_codec(info.spec, info.layout);
  const Guarantee g = codec->guarantee();
  std::string s = "{";
  auto field = [&](const std::string& k, const std::string& v, bool quote) {
    if (s.size() > 1) s += ", ";
    s += "\"" + k + "\": " + (quote ? "\"" + v + "\"" : v);
  };
  const std::string canon = info.spec.canonical();
  const size_t colon = canon.find(':');
  field("format_version", std::to_string(kWireVersion), false);
  field("codec", std::string(info.spec.name()), true);
  field("spec", canon, true);
  std::string params = "{";
  if (colon != std::string::npos) {
    std::string rest = canon.substr(colon + 1);
    size_t pos = 0;
    while (pos <= rest.size()) {
      size_t comma = rest.find(',', pos);
      if (comma == std::string::npos) comma = rest.size();
      const std::string item = rest.substr(pos, comma - pos);
      const size_t eq = item.find('=');
      if (params.size() > 1) params += ", ";
      params += "\"" + item.substr(0, eq) + "\": \"" + item.substr(eq + 1) + "\"";
      pos = comma + 1;
    }
  }
  params += "}";
  field("params", params, false);
  field("n", std::to_string(info.layout.num_elems()), false);
  std::string segs = "[";
  for (size_t i = 0; i < info.layout.segments().size(); ++i)
    segs += (i ? ", " : "") + std::to_string(info.layout.segments()[i]);
  field("segments", segs + "]", false);
  field("layout_digest", std::to_string(info.layout.digest()), false);
  field("seed", std::to_string(info.key.seed), false);
  field("step", std::to_string(info.key.step), false);
  field("rank", std::to_string(info.key.rank), false);
  field("stream_offset", std::to_string(info.key.stream_offset), false);
  field("header_bytes", std::to_string(info.header_bytes), false);
  field("bytes", std::to_string(info.body_bytes), false);
  field("used_bytes", std::to_string(info.used_bytes), false);
  field("worst_case_bytes", std::to_string(info.worst_bytes), false);
  field("variable_length", codec->variable_length() ? "true" : "false", false);
  char buf[64];
  const double n = static_cast<double>(info.layout.num_elems());
  std::snprintf(buf, sizeof buf, "%.6f", info.layout.num_elems() ? codec->encoded_bits() / n : 0.0);
  field("bits_per_element", buf, false);
  std::snprintf(buf, sizeof buf, "%.6f", info.layout.num_elems() ? info.payload_bits / n : 0.0);
  field("message_bits_per_element", buf, false);
  std::snprintf(buf, sizeof buf, "%08x", info.body_crc32);
  field("body_crc32", buf, true);
  const char* kind = g.kind == Guarantee::Kind::kUnbiased      ? "unbiased"
                     : g.kind == Guarantee::Kind::kContractive ? "contractive"
                                                               : "none";
  field("class", kind, true);
  if (g.kind == Guarantee::Kind::kUnbiased) {
    std::snprintf(buf, sizeof buf, "%.17g", g.omega);
    field("omega", buf, false);
  } else if (g.kind == Guarantee::Kind::kContractive) {
    std::snprintf(buf, sizeof buf, "%.17g", g.delta);
    field("delta", buf, false);
  }
  return s + "}";
}

}  // namespace gcomp
