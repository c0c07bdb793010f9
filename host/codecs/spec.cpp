// SPDX-License-Identifier: Apache-2.0
// Codec spec parsing and canonical text (DESIGN.md §3 "Codec spec"), driven by the codec
// registry (registry.hpp): the names, keys, defaults and per-codec checks come from there.
#include <gcomp/codec.hpp>

#include "host/codecs/registry.hpp"

#include <type_traits>
#include <string>
#include <variant>

namespace gcomp {
namespace {

using detail::bad_spec;
using detail::CodecDescriptor;

std::string trim(std::string_view v) {
  size_t b = 0, e = v.size();
  while (b < e && (v[b] == ' ' || v[b] == '\t')) ++b;
  while (e > b && (v[e - 1] == ' ' || v[e - 1] == '\t')) --e;
  return std::string(v.substr(b, e - b));
}

std::string key_names(const CodecDescriptor& d) {
  std::string s;
  for (const detail::CodecKeyUse& k : d.keys) s += (s.empty() ? "" : ",") + std::string(k.key->name);
  return s;
}

const detail::CodecKey* find_key(const CodecDescriptor& d, const std::string& key) {
  for (const detail::CodecKeyUse& k : d.keys) {
    if (key == k.key->name) return k.key;
  }
  return nullptr;
}

/// The l_p exponent a norm stores (DitherOptions::p); kLp keeps the given one, and p = 2 is l2.
void normalize_norm(DitherOptions& o) {
  if (o.norm == Norm::kLp && o.p == 2.0) o.norm = Norm::kL2;
  if (o.norm == Norm::kL1) o.p = 1.0;
  if (o.norm == Norm::kL2) o.p = 2.0;
  if (o.norm == Norm::kLinf) o.p = 0.0;  // infinity, not stored
}

/// The type name of the alternative @p options holds (its kName).
const char* options_name(const CodecOptions& options) {
  return std::visit([](const auto& o) { return std::decay_t<decltype(o)>::kName; }, options);
}

}  // namespace

std::string_view CodecSpec::name() const {
  for (const CodecDescriptor& d : detail::codec_registry()) {
    if (d.id == id_) return d.name;
  }
  return "unknown";
}

CodecSpec::CodecSpec(CodecId id, CodecOptions options) {
  const CodecDescriptor& d = detail::codec_descriptor(id);
  if (options.index() != d.defaults.index()) {
    GCOMP_FAIL(gcompErrorInvalidArgument, "CodecSpec: codec '" + std::string(d.name) + "' takes " +
                                              options_name(d.defaults) + ", not " + options_name(options));
  }
  if (auto* o = std::get_if<DitherOptions>(&options)) {
    GCOMP_EXPECTS(o->norm != Norm::kLp || o->p > 1.0, gcompErrorInvalidArgument,
                  "CodecSpec: " + std::string(d.name) + " with norm=lp needs p > 1 (use norm=l1 for p = 1)");
    normalize_norm(*o);
  }
  const CodecSpec candidate(Unchecked{}, id, std::move(options));
  // Every CodecSpec reads back from its canonical text: the parser's range and cross-key checks
  // apply (their message quotes the text), and options it would not produce (topk with both k and
  // ratio set) are refused.
  const std::string text = candidate.canonical();
  const CodecSpec parsed = parse(text);
  GCOMP_EXPECTS(parsed == candidate, gcompErrorInvalidArgument,
                "CodecSpec: these " + std::string(d.name) + " options do not read back from their canonical text '" +
                    text + "' (a field the codec ignores was changed: give topk/randk either k or ratio)");
  *this = candidate;
}

void CodecSpec::wrong_options(const char* wanted) const {
  GCOMP_FAIL(gcompErrorInvalidArgument, "codec spec '" + canonical() + "': " + std::string(name()) + " has " +
                                            options_name(options_) + ", not " + wanted);
}

CodecSpec CodecSpec::parse(std::string_view text_in) {
  const std::string text = trim(text_in);
  const size_t colon = text.find(':');
  const std::string name = trim(std::string_view(text).substr(0, colon));
  const CodecDescriptor* entry = detail::find_codec(name);
  if (entry == nullptr) bad_spec(text, "unknown codec '" + name + "'; valid codecs: " + detail::codec_names());

  CodecOptions options = entry->defaults;
  detail::SpecKeyValues kv;
  if (colon != std::string::npos) {
    std::string_view rest = std::string_view(text).substr(colon + 1);
    while (!rest.empty()) {
      const size_t comma = rest.find(',');
      const std::string item = trim(rest.substr(0, comma));
      rest = comma == std::string_view::npos ? std::string_view() : rest.substr(comma + 1);
      if (item.empty()) bad_spec(text, "empty parameter");
      const size_t eq = item.find('=');
      if (eq == std::string::npos) bad_spec(text, "parameter '" + item + "' is not key=value");
      const std::string key = trim(std::string_view(item).substr(0, eq));
      const std::string value = trim(std::string_view(item).substr(eq + 1));
      const std::string keys = key_names(*entry);
      if (entry->rejected_key != nullptr && key == entry->rejected_key)
        bad_spec(text, std::string(entry->rejected_why) + "; valid keys: " + keys);
      if (find_key(*entry, key) == nullptr)
        bad_spec(text, "unknown key '" + key + "' for " + name + "; valid keys: " + (keys.empty() ? "(none)" : keys));
      if (!kv.emplace(key, value).second) bad_spec(text, "key '" + key + "' given twice");
    }
  }

  for (const auto& [key, value] : kv) find_key(*entry, key)->apply(options, text, value);
  CodecSpec spec(Unchecked{}, entry->id, std::move(options));
  if (entry->check != nullptr) entry->check(spec, text, kv);
  if (kv.count("k") && kv.count("ratio")) bad_spec(text, "give either k or ratio, not both");
  if (auto* o = std::get_if<DitherOptions>(&spec.options_)) {
    if (o->norm == Norm::kLp) {
      if (!kv.count("p")) bad_spec(text, "norm=lp needs p (e.g. norm=lp,p=3)");
      if (!(o->p > 1.0)) bad_spec(text, "p must be > 1 (use norm=l1 for p = 1)");
    } else if (kv.count("p")) {
      bad_spec(text, "p is only valid with norm=lp");
    }
    normalize_norm(*o);
  }
  return spec;
}

std::string CodecSpec::canonical() const {
  const CodecDescriptor& d = detail::codec_descriptor(id_);
  const std::string params = d.canonical(*this);
  return params.empty() ? std::string(d.name) : std::string(d.name) + ":" + params;
}

std::vector<CodecDescription> list_codecs() {
  std::vector<CodecDescription> out;
  for (const CodecDescriptor& d : detail::codec_registry()) {
    const CodecSpec defaults = CodecSpec::parse(d.name);
    std::string params;
    for (const detail::CodecKeyUse& k : d.keys) {
      params += (params.empty() ? "" : " ") + std::string(k.key->name) + "=" +
                (k.choices != nullptr ? std::string(k.choices) : k.key->value_text(defaults.options()));
    }
    out.push_back({d.name, params.empty() ? "(none)" : params, d.guarantee, d.bits,
                   std::vector<std::string>(d.examples.begin(), d.examples.end())});
  }
  return out;
}

}  // namespace gcomp
