// SPDX-License-Identifier: Apache-2.0
// Shared pieces of gcomp-bench subcommands: nccl-tests style size flags, statistics, a minimal
// JSON writer and the run metadata (command line, git sha, device, seed).
#pragma once

#include <gcomp/io.hpp>

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

namespace gcomp::bench {

/// One subcommand: `gcomp-bench <name> [options]`.
struct Subcommand {
  const char* name;
  const char* summary;
  int (*run)(int argc, char** argv);
};

/// An integer flag value in [lo, hi]; anything else (not a number, trailing text, out of range)
/// throws std::invalid_argument naming the flag.
inline int64_t parse_int(const std::string& flag, const std::string& v, int64_t lo, int64_t hi) {
  int64_t out = 0;
  const auto [ptr, ec] = std::from_chars(v.data(), v.data() + v.size(), out);
  if (ec != std::errc() || ptr != v.data() + v.size() || v.empty() || out < lo || out > hi)
    throw std::invalid_argument(flag + ": '" + v + "' is not an integer in " + std::to_string(lo) + ".." +
                                std::to_string(hi));
  return out;
}

/// A 64-bit seed: decimal or 0x-hexadecimal, 0..2^64-1 (no sign, no wrap-around).
inline uint64_t parse_seed(const std::string& flag, const std::string& v) {
  const bool hex = v.size() > 2 && v[0] == '0' && (v[1] == 'x' || v[1] == 'X');
  const char* first = v.data() + (hex ? 2 : 0);
  uint64_t out = 0;
  const auto [ptr, ec] = std::from_chars(first, v.data() + v.size(), out, hex ? 16 : 10);
  if (ec != std::errc() || ptr != v.data() + v.size() || first == v.data() + v.size())
    throw std::invalid_argument(flag + ": '" + v + "' is not an integer in 0..2^64-1");
  return out;
}

/// A finite number > lo; throws std::invalid_argument naming the flag otherwise.
inline double parse_real_above(const std::string& flag, const std::string& v, double lo) {
  char* end = nullptr;
  const double d = std::strtod(v.c_str(), &end);
  if (v.empty() || *end != '\0' || !std::isfinite(d) || !(d > lo))
    throw std::invalid_argument(flag + ": '" + v + "' is not a finite number > " + std::to_string(lo));
  return d;
}

/// "4M", "1G", "65536" -> bytes (K/M/G are powers of 1024, as in nccl-tests), 0..2^40.
inline int64_t parse_size(const std::string& flag, const std::string& s) {
  char* end = nullptr;
  const double v = std::strtod(s.c_str(), &end);
  const size_t used = static_cast<size_t>(end - s.c_str());
  double mult = 1;
  if (used + 1 == s.size()) {
    switch (s[used]) {
      case 'K':
      case 'k': mult = 1024.0; break;
      case 'M':
      case 'm': mult = 1024.0 * 1024; break;
      case 'G':
      case 'g': mult = 1024.0 * 1024 * 1024; break;
      default: mult = -1;
    }
  } else if (used != s.size()) {
    mult = -1;
  }
  const double bytes = v * mult;
  if (s.empty() || used == 0 || mult < 0 || !std::isfinite(bytes) || bytes < 0 || bytes > 1099511627776.0)
    throw std::invalid_argument(flag + ": '" + s + "' is not a size in 0..1T bytes (suffix K, M or G: powers of 1024)");
  return static_cast<int64_t>(bytes);
}

/// Input seed of rank j: a distinct deterministic stream per rank (splitmix-mixed start state).
inline uint64_t rank_seed(uint64_t seed, int rank) {
  uint64_t z = seed + 0x9e3779b97f4a7c15ull * static_cast<uint64_t>(rank + 1);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

/// Deterministic, roughly Gaussian input (Irwin-Hall of 4 uniforms from splitmix64).
inline std::vector<float> make_input(int64_t n, uint64_t seed) {
  std::vector<float> x(static_cast<size_t>(n));
  uint64_t s = seed;
  auto next = [&s]() {
    uint64_t z = (s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
  };
  for (int64_t i = 0; i < n; ++i) {
    const uint64_t r = next();
    double u = 0;
    for (int j = 0; j < 4; ++j) u += static_cast<double>((r >> (16 * j)) & 0xffffu) / 65536.0;
    x[i] = static_cast<float>((u - 2.0) * 1.7320508075688772);
  }
  return x;
}

/// Splits "a;b;c" at `sep`, dropping empty items.
inline std::vector<std::string> split_list(const std::string& list, char sep) {
  std::vector<std::string> out;
  size_t start = 0;
  while (start <= list.size()) {
    const size_t end = std::min(list.find(sep, start), list.size());
    if (end > start) out.push_back(list.substr(start, end - start));
    start = end + 1;
  }
  return out;
}

/// Median and spread of a sample (sorted copy).
struct Stats {
  double median = 0, min = 0, max = 0;
};
inline Stats stats_of(std::vector<double> v) {
  Stats s;
  if (v.empty()) return s;
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  s.median = n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
  s.min = v.front();
  s.max = v.back();
  return s;
}

inline std::string json_escape(const std::string& s) {
  std::string out;
  for (char c : s) {
    switch (c) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\n': out += "\\n"; break;
      default:
        if (static_cast<unsigned char>(c) < 0x20) {
          char buf[8];
          std::snprintf(buf, sizeof buf, "\\u%04x", c);
          out += buf;
        } else {
          out += c;
        }
    }
  }
  return out;
}

/// A flat JSON object built field by field (numbers and strings).
class JsonObject {
 public:
  JsonObject& num(const std::string& key, double v) {
    std::ostringstream o;
    o.precision(10);
    o << v;
    fields_.emplace_back(key, o.str());
    return *this;
  }
  JsonObject& integer(const std::string& key, int64_t v) {
    fields_.emplace_back(key, std::to_string(v));
    return *this;
  }
  JsonObject& str(const std::string& key, const std::string& v) {
    fields_.emplace_back(key, "\"" + json_escape(v) + "\"");
    return *this;
  }
  JsonObject& raw(const std::string& key, const std::string& v) {
    fields_.emplace_back(key, v);
    return *this;
  }
  [[nodiscard]] std::string dump(const std::string& indent = "") const {
    std::string out = "{";
    for (size_t i = 0; i < fields_.size(); ++i)
      out += (i ? ", " : "") + std::string("\n") + indent + "  \"" + json_escape(fields_[i].first) +
             "\": " + fields_[i].second;
    return out + "\n" + indent + "}";
  }

 private:
  std::vector<std::pair<std::string, std::string>> fields_;
};

/// `git rev-parse HEAD` of the source tree, or "unknown".
inline std::string git_sha(const char* source_dir) {
  const std::string cmd = std::string("git -C '") + source_dir + "' rev-parse HEAD 2>/dev/null";
  FILE* p = popen(cmd.c_str(), "r");
  if (p == nullptr) return "unknown";
  char buf[128] = {0};
  std::string out;
  if (std::fgets(buf, sizeof buf, p) != nullptr) out = buf;
  pclose(p);
  while (!out.empty() && (out.back() == '\n' || out.back() == '\r')) out.pop_back();
  return out.empty() ? "unknown" : out;
}

inline std::string command_line(int argc, char** argv) {
  std::string s;
  for (int i = 0; i < argc; ++i) s += (i ? " " : "") + std::string(argv[i]);
  return s;
}

/// The nccl-tests sweep flags shared by `codecs` and `comm` (-b -e -f -n -w -c). Returns false when
/// `flag` is not one of them; `value()` yields the flag's argument.
template <class Options, class Value>
bool parse_sweep_flag(const std::string& flag, Value&& value, Options& o) {
  if (flag == "-b" || flag == "--minbytes")
    o.min_bytes = parse_size(flag, value());
  else if (flag == "-e" || flag == "--maxbytes")
    o.max_bytes = parse_size(flag, value());
  else if (flag == "-f" || flag == "--stepfactor")
    o.factor = parse_real_above(flag, value(), 1.0);
  else if (flag == "-n" || flag == "--iters")
    o.iters = static_cast<int>(parse_int(flag, value(), 1, 1000000000));
  else if (flag == "-w" || flag == "--warmup_iters")
    o.warmup = static_cast<int>(parse_int(flag, value(), 0, 1000000000));
  else if (flag == "-c" || flag == "--check")
    o.check = parse_int(flag, value(), 0, 1) != 0;
  else
    return false;
  return true;
}

/// The flag loop of every gcomp-bench subcommand. For each argument, `handle(flag, value)` says
/// whether it took the flag (`value()` consumes the next argument; a missing one throws). The flags
/// every subcommand has are taken here: --seed, -J/--json, --codec (repeatable) and --codecs "a;b".
/// -h/--help prints `usage()` and returns false; an unknown flag throws, naming `command`.
template <class Options, class Handler>
bool parse_flags(int argc, char** argv, const char* command, void (*usage)(), Options& o, Handler&& handle) {
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) throw std::invalid_argument("missing value after " + a);
      return argv[++i];
    };
    if (a == "-h" || a == "--help") {
      usage();
      return false;
    }
    if (handle(a, value)) continue;
    if (a == "--seed") {
      o.seed = parse_seed(a, value());
    } else if (a == "-J" || a == "--json") {
      o.json = value();
    } else if (a == "--codec") {
      o.codecs.push_back(value());
    } else if (a == "--codecs") {
      for (auto& c : split_list(value(), ';')) o.codecs.push_back(c);
    } else {
      throw std::invalid_argument("unknown option " + a + " (see gcomp-bench " + command + " --help)");
    }
  }
  if (!o.json.empty()) io::check_output(o.json, io::OutputOptions{"--json", {}, true});  // before any work
  return true;
}

/// Writes a JSON document to `path` (gcomp::io rules: temporary file and rename, every write
/// checked); false (with a message naming `tool`) when it cannot.
inline bool write_json_file(const std::string& path, const JsonObject& top, const char* tool) {
  try {
    io::write_file(path, top.dump() + "\n", io::OutputOptions{"--json", {}, true});
  } catch (const Error& e) {
    std::fprintf(stderr, "%s: %s\n", tool, e.what());
    return false;
  }
  return true;
}

}  // namespace gcomp::bench
