// SPDX-License-Identifier: Apache-2.0
// Shared pieces of gcomp-bench subcommands: nccl-tests style size flags, statistics, a minimal
// JSON writer and the run metadata (command line, git sha, device, seed).
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <map>
#include <sstream>
#include <stdexcept>
#include <cstdio>
#include <fstream>
#include <string>
#include <vector>

namespace gcomp::bench {

/// One subcommand: `gcomp-bench <name> [options]`.
struct Subcommand {
  const char* name;
  const char* summary;
  int (*run)(int argc, char** argv);
};

/// "4M", "1G", "65536" -> bytes (K/M/G are powers of 1024, as in nccl-tests).
inline int64_t parse_size(const std::string& s) {
  if (s.empty()) throw std::invalid_argument("empty size");
  size_t used = 0;
  const double v = std::stod(s, &used);
  int64_t mult = 1;
  if (used < s.size()) {
    switch (s[used]) {
      case 'K': case 'k': mult = int64_t{1} << 10; break;
      case 'M': case 'm': mult = int64_t{1} << 20; break;
      case 'G': case 'g': mult = int64_t{1} << 30; break;
      default: throw std::invalid_argument("bad size suffix in '" + s + "'");
    }
  }
  return static_cast<int64_t>(v * static_cast<double>(mult));
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
      out += (i ? ", " : "") + std::string("\n") + indent + "  \"" + json_escape(fields_[i].first) + "\": " +
             fields_[i].second;
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
  if (flag == "-b" || flag == "--minbytes") o.min_bytes = parse_size(value());
  else if (flag == "-e" || flag == "--maxbytes") o.max_bytes = parse_size(value());
  else if (flag == "-f" || flag == "--stepfactor") o.factor = std::stod(value());
  else if (flag == "-n" || flag == "--iters") o.iters = std::stoi(value());
  else if (flag == "-w" || flag == "--warmup_iters") o.warmup = std::stoi(value());
  else if (flag == "-c" || flag == "--check") o.check = std::stoi(value()) != 0;
  else return false;
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
      o.seed = std::stoull(value(), nullptr, 0);
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
  return true;
}

/// Writes a JSON document to `path`; false (with a message naming `tool`) when it cannot.
inline bool write_json_file(const std::string& path, const JsonObject& top, const char* tool) {
  std::ofstream f(path);
  f << top.dump() << "\n";
  if (!f) {
    std::fprintf(stderr, "%s: cannot write %s\n", tool, path.c_str());
    return false;
  }
  return true;
}

}  // namespace gcomp::bench
