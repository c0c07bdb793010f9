// SPDX-License-Identifier: Apache-2.0
// Codec spec parsing and canonical text (DESIGN.md §3 "Codec spec").
#include <gcomp/codec.hpp>

#include <charconv>
#include <limits>
#include <cmath>
#include <cstdio>
#include <map>

namespace gcomp {
namespace {

struct NameId {
  const char* name;
  CodecId id;
  const char* keys;  // valid keys, comma separated
};

constexpr NameId kCodecs[] = {
    {"identity", CodecId::kIdentity, ""},
    {"dither", CodecId::kDither, "levels,norm,p,block"},
    {"terngrad", CodecId::kTernGrad, "clip"},
    {"sign", CodecId::kSign, "block,scale"},
    {"topk", CodecId::kTopK, "k,ratio,index"},
    {"randk", CodecId::kRandK, "k,ratio,unbiased"},
    {"natural", CodecId::kNatural, ""},
    {"natdither", CodecId::kNatDither, "levels,norm,p,block"},
    {"sdither", CodecId::kSDither, "levels,norm,block,code,chunk"},
    {"spherical", CodecId::kSpherical, "block,bits,unscaled"},
    {"grid", CodecId::kGrid, "step,bits"},
};

std::string valid_names() {
  std::string s;
  for (const auto& c : kCodecs) {
    if (!s.empty()) s += ", ";
    s += c.name;
  }
  return s;
}

std::string trim(std::string_view v) {
  size_t b = 0, e = v.size();
  while (b < e && (v[b] == ' ' || v[b] == '\t')) ++b;
  while (e > b && (v[e - 1] == ' ' || v[e - 1] == '\t')) --e;
  return std::string(v.substr(b, e - b));
}

[[noreturn]] void bad(const std::string& spec, const std::string& why) {
  // The text may come from a file or a command line: quoted escaped.
  GCOMP_FAIL(gcompErrorInvalidArgument, "codec spec '" + printable(spec) + "': " + printable(why, SIZE_MAX));
}

int64_t parse_int(const std::string& spec, const std::string& key, const std::string& v, int64_t lo, int64_t hi) {
  int64_t out = 0;
  auto [ptr, ec] = std::from_chars(v.data(), v.data() + v.size(), out);
  if (ec != std::errc() || ptr != v.data() + v.size())
    bad(spec, key + "=" + v + " is not an integer");
  if (out < lo || out > hi)
    bad(spec, key + "=" + v + " is out of range [" + std::to_string(lo) + ", " + std::to_string(hi) + "]");
  return out;
}

double parse_double(const std::string& spec, const std::string& key, const std::string& v) {
  double out = 0;
  auto [ptr, ec] = std::from_chars(v.data(), v.data() + v.size(), out);
  if (ec != std::errc() || ptr != v.data() + v.size() || !std::isfinite(out))
    bad(spec, key + "=" + v + " is not a finite number");
  return out;
}

bool parse_bool(const std::string& spec, const std::string& key, const std::string& v) {
  if (v == "1" || v == "true") return true;
  if (v == "0" || v == "false") return false;
  bad(spec, key + "=" + v + " must be 0 or 1");
}

std::string fmt_double(double v) {
  char buf[64];
  // Shortest text that reads back to the same double.
  auto [ptr, ec] = std::to_chars(buf, buf + sizeof buf, v);
  (void)ec;
  return std::string(buf, ptr);
}

const char* norm_name(Norm n) {
  switch (n) {
    case Norm::kL1: return "l1";
    case Norm::kL2: return "l2";
    case Norm::kLinf: return "linf";
    case Norm::kLp: return "lp";
  }
  return "?";
}

}  // namespace

std::string_view CodecSpec::name() const {
  for (const auto& c : kCodecs)
    if (c.id == id) return c.name;
  return "unknown";
}

CodecSpec CodecSpec::parse(std::string_view text_in) {
  const std::string text = trim(text_in);
  const size_t colon = text.find(':');
  const std::string name = trim(std::string_view(text).substr(0, colon));
  const NameId* entry = nullptr;
  for (const auto& c : kCodecs)
    if (name == c.name) entry = &c;
  if (entry == nullptr)
    bad(text, "unknown codec '" + name + "'; valid codecs: " + valid_names());

  CodecSpec spec;
  spec.id = entry->id;
  if (spec.id == CodecId::kTernGrad) {
    spec.levels = 1;
    spec.norm = Norm::kLinf;
  }
  if (spec.id == CodecId::kNatDither) spec.levels = 3;
  if (spec.id == CodecId::kGrid) {
    spec.bits = 16;
    spec.step = 0.00390625;  // 2^-8
  }
  if (spec.id == CodecId::kSpherical) spec.block = 16;

  std::map<std::string, std::string> kv;
  if (colon != std::string::npos) {
    std::string_view rest = std::string_view(text).substr(colon + 1);
    while (!rest.empty()) {
      const size_t comma = rest.find(',');
      const std::string item = trim(rest.substr(0, comma));
      rest = comma == std::string_view::npos ? std::string_view() : rest.substr(comma + 1);
      if (item.empty()) bad(text, "empty parameter");
      const size_t eq = item.find('=');
      if (eq == std::string::npos) bad(text, "parameter '" + item + "' is not key=value");
      const std::string key = trim(std::string_view(item).substr(0, eq));
      const std::string value = trim(std::string_view(item).substr(eq + 1));
      const std::string keys = std::string(",") + entry->keys + ",";
      if (spec.id == CodecId::kRandK && key == "index")
        bad(text, "randk sends no indices (the receiver regenerates them from the seed), so it has no "
                  "key 'index'; valid keys: " + std::string(entry->keys));
      if (keys.find("," + key + ",") == std::string::npos)
        bad(text, "unknown key '" + key + "' for " + name + "; valid keys: " +
                      (entry->keys[0] ? entry->keys : "(none)"));
      if (!kv.emplace(key, value).second) bad(text, "key '" + key + "' given twice");
    }
  }

  for (const auto& [key, value] : kv) {
    if (key == "levels") {
      spec.levels = static_cast<uint32_t>(parse_int(text, key, value, 1, 1 << 20));
    } else if (key == "norm") {
      if (value == "l1") spec.norm = Norm::kL1;
      else if (value == "l2") spec.norm = Norm::kL2;
      else if (value == "linf" || value == "inf") spec.norm = Norm::kLinf;
      else if (value == "lp") spec.norm = Norm::kLp;
      else bad(text, "norm=" + value + " is not one of l1, l2, linf, lp");
    } else if (key == "p") {
      spec.p = parse_double(text, key, value);
    } else if (key == "block") {
      spec.block = parse_int(text, key, value, spec.id == CodecId::kSpherical ? 1 : 0, INT64_MAX);
    } else if (key == "clip") {
      spec.clip = parse_double(text, key, value);
      if (spec.clip < 0) bad(text, "clip must be >= 0 (0 turns clipping off)");
    } else if (key == "scale") {
      if (value == "l1" || value == "mean") spec.scaled = true;
      else if (value == "none") spec.scaled = false;
      else bad(text, "scale=" + value + " is not one of l1, none");
    } else if (key == "k") {
      spec.k = parse_int(text, key, value, 1, INT64_MAX);
    } else if (key == "ratio") {
      spec.ratio = parse_double(text, key, value);
      if (!(spec.ratio > 0.0 && spec.ratio <= 1.0)) bad(text, "ratio must be in (0, 1]");
    } else if (key == "index") {
      if (value == "plain") spec.index = IndexCode::kPlain;
      else if (value == "rice") spec.index = IndexCode::kRice;
      else bad(text, "index=" + value + " is not one of plain, rice");
    } else if (key == "unbiased") {
      spec.unbiased = parse_bool(text, key, value);
    } else if (key == "code") {
      if (value == "gamma") spec.code = EliasCode::kGamma;
      else if (value == "delta") spec.code = EliasCode::kDelta;
      else bad(text, "code=" + value + " is not one of gamma, delta");
    } else if (key == "chunk") {
      spec.chunk = parse_int(text, key, value, 1, int64_t{1} << 24);
    } else if (key == "bits") {
      spec.bits = spec.id == CodecId::kGrid ? static_cast<uint32_t>(parse_int(text, key, value, 2, 32))
                                            : static_cast<uint32_t>(parse_int(text, key, value, 1, 16));
    } else if (key == "step") {
      spec.step = parse_double(text, key, value);
      if (!(spec.step > 0.0)) bad(text, "step must be > 0");
    } else if (key == "unscaled") {
      spec.unscaled = parse_bool(text, key, value);
    }
  }
  if (spec.id == CodecId::kSDither && spec.norm != Norm::kL2 && spec.norm != Norm::kLinf)
    bad(text, "sdither supports norm=l2 or norm=linf");
  if (spec.id == CodecId::kSpherical && (int64_t{1} << spec.bits) > (int64_t{1} << 22) / spec.block)
    bad(text, "2^bits * block = 2^" + std::to_string(spec.bits) + " * " + std::to_string(spec.block) +
                  " exceeds the encoder work cap 2^22 normals per block");
  if (kv.count("k") && kv.count("ratio")) bad(text, "give either k or ratio, not both");
  // The largest grid level must decode to a finite fp32 value (issue 18 #11).
  if (spec.id == CodecId::kGrid &&
      spec.step * static_cast<double>((int64_t{1} << (spec.bits - 1)) - 1) > static_cast<double>(std::numeric_limits<float>::max()))
    bad(text, "step * (2^(bits-1) - 1) is beyond the float32 range: the largest levels would decode to Inf");
  if (spec.norm == Norm::kLp) {
    if (!kv.count("p")) bad(text, "norm=lp needs p (e.g. norm=lp,p=3)");
    if (!(spec.p > 1.0)) bad(text, "p must be > 1 (use norm=l1 for p = 1)");
    if (spec.p == 2.0) spec.norm = Norm::kL2;
  } else if (kv.count("p")) {
    bad(text, "p is only valid with norm=lp");
  }
  if (spec.norm == Norm::kL1) spec.p = 1.0;
  if (spec.norm == Norm::kL2) spec.p = 2.0;
  if (spec.norm == Norm::kLinf) spec.p = 0.0;  // infinity, not stored
  return spec;
}

std::string CodecSpec::canonical() const {
  std::string s(name());
  switch (id) {
    case CodecId::kIdentity:
    case CodecId::kNatural:
      break;
    case CodecId::kDither:
    case CodecId::kNatDither:
      s += ":levels=" + std::to_string(levels) + ",norm=" + norm_name(norm);
      if (norm == Norm::kLp) s += ",p=" + fmt_double(p);
      s += ",block=" + std::to_string(block);
      break;
    case CodecId::kTernGrad:
      s += ":clip=" + fmt_double(clip);
      break;
    case CodecId::kSign:
      s += ":block=" + std::to_string(block) + ",scale=" + (scaled ? "l1" : "none");
      break;
    case CodecId::kTopK:
      s += k > 0 ? ":k=" + std::to_string(k) : ":ratio=" + fmt_double(ratio);
      // index=plain, the default, is not written: the canonical text (and so every frame) of a
      // plain topk spec is the one of wire format v1 before the option existed.
      if (index == IndexCode::kRice) s += ",index=rice";
      break;
    case CodecId::kRandK:
      s += (k > 0 ? ":k=" + std::to_string(k) : ":ratio=" + fmt_double(ratio)) +
           ",unbiased=" + (unbiased ? "1" : "0");
      break;
    case CodecId::kSDither:
      s += ":levels=" + std::to_string(levels) + ",norm=" + norm_name(norm) + ",block=" + std::to_string(block) +
           ",code=" + (code == EliasCode::kDelta ? "delta" : "gamma") + ",chunk=" + std::to_string(chunk);
      break;
    case CodecId::kSpherical:
      s += ":block=" + std::to_string(block) + ",bits=" + std::to_string(bits) + ",unscaled=" + (unscaled ? "1" : "0");
      break;
    case CodecId::kGrid:
      s += ":step=" + fmt_double(step) + ",bits=" + std::to_string(bits);
      break;
  }
  return s;
}

std::vector<CodecDescription> list_codecs() {
  return {
      {"identity", "(none)", "exact: omega = 0", "32 n"},
      {"dither", "levels=1 norm=l2|linf|l1|lp p=2 block=0",
       "unbiased; s=1: omega = 1/alpha_p(b)-1 (l2: sqrt(b)-1, linf: (sqrt(b)-1)/2); "
       "l2: min(b/(4s^2), sqrt(b)/s), linf: min(b/(4s^2), (1+sqrt(b))/(2s))",
       "32 ceil(n/b) + n (1 + ceil(log2(s+1)))"},
      {"terngrad", "clip=0 (c in c*sigma; 0 = off)",
       "unbiased without clip: omega = (sqrt(b)-1)/2, b = largest segment; biased with clip",
       "2 n + 32 #segments"},
      {"sign", "block=0 scale=l1|none", "contractive: delta = 1/b (scale=l1); none: no guarantee",
       "n + 32 #blocks"},
      {"topk", "ratio=0.01 | k=K index=plain|rice", "contractive: delta = k/n",
       "k (32 + ceil(log2 n)); index=rice: 32 k + 32 + 32 floor((k-1)/1024) + sum_j [((g_j-1) >> b) + 1 + b], "
       "b = floor(log2(n/k)); buffer: worst case"},
      {"randk", "ratio=0.01 | k=K unbiased=1", "unbiased=1: omega = n/k - 1; unbiased=0: delta = k/n",
       "32 k + 64"},
      {"natural", "(none)", "unbiased: omega = 1/8", "9 n"},
      {"natdither", "levels=3 norm=l2|linf|l1|lp p=2 block=0",
       "unbiased: omega <= 1/8 + (b^(1/r)/2^(s-1)) min(1, b^(1/r)/2^(s-1)), r = min(p,2)",
       "32 ceil(n/b) + n (1 + ceil(log2(s+1)))"},
      {"sdither", "levels=1 norm=l2|linf block=0 code=gamma|delta chunk=4096",
       "unbiased: as dither (same quantizer); s=1: l2 sqrt(b)-1, linf (sqrt(b)-1)/2",
       "32 m + 32 + 32 ceil(n/C) + sum_nz [len(gap) + 1 + [s>1] len(level)]; buffer: worst case"},
      {"spherical", "block=16 bits=8 unscaled=0",
       "unbiased: omega = 1/beta(m_b,B)^2 - 1 for every input; unscaled=1: delta = 2 beta - 1 if beta > 1/2",
       "sum_blocks (B + 32)"},
      {"grid", "step=0.00390625 bits=16",
       "deterministic, absolute: |C(x)_i - x_i| <= step/2 while |x_i| <= (2^(bits-1)-1) step (saturates beyond)",
       "bits n"},
  };
}

}  // namespace gcomp
