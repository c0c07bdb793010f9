// SPDX-License-Identifier: Apache-2.0
// `gcomp-bench bits`: bits per coordinate against the error of every codec (project issue 7,
// item 3; spec/ALGORITHMS.md §5.1, §5.2(c)).
//
// For a Gaussian vector (--n, same generator and seed as `gcomp-codec bits`) and, with --grad, a
// real gradient read from a raw little-endian float32 file, each codec gets a row from
// gcomp::bits_report(): the message size, the declared omega (unbiased) or delta (contractive),
// the measured error on that input, and R = bits / b_LB with b_LB = (d/2) log2(1 + 1/omega)
// (= (d/2) log2(1/eps), eps = omega/(1+omega); eps = 1 - delta for contractive codecs), once for
// the declared worst case and once for the measured error. bench/plot_bits.py draws the JSON.
#include "bench/bench_common.hpp"

#include <gcomp/bits_report.hpp>
#include <gcomp/codec.hpp>

#include "tools/support/inputs.hpp"
#include "tools/support/report.hpp"

#include <cmath>
#include <cstdio>
#include <fstream>
#include <random>
#include <string>
#include <vector>

namespace gcomp::bench {
namespace {

/// Every codec, with parameter sweeps so that each family draws a curve in plot_bits.py: the
/// example specs of each codec's registry entry (gcomp::list_codecs()), in wire-id order.
std::vector<std::string> default_specs() {
  std::vector<std::string> out;
  for (const CodecDescription& d : list_codecs()) out.insert(out.end(), d.examples.begin(), d.examples.end());
  return out;
}

struct Options {
  int64_t n = 1024;
  uint64_t seed = 1;
  int draws = 32;
  std::string grad;
  std::vector<std::string> codecs;
  std::string json;
};

void usage() {
  std::printf(
      "usage: gcomp-bench bits [options]\n"
      "      --n N            length of the Gaussian vector (default 1024)\n"
      "      --seed S         seed of the vector and of the codecs' RNG (default 1, as gcomp-codec bits)\n"
      "      --grad PATH      also a real gradient: raw little-endian float32 file (all of it)\n"
      "      --codecs 'S1;S2' codec specs separated by ';' (default: %zu specs covering every codec)\n"
      "      --codec SPEC     add one codec spec (repeatable)\n"
      "      --draws K        Monte Carlo draws for codecs without a closed-form error (default 32)\n"
      "  -J, --json PATH      also write the records as JSON (bench/plot_bits.py reads it)\n",
      default_specs().size());
}

bool parse_options(int argc, char** argv, Options& o) {
  const bool go = parse_flags(argc, argv, "bits", usage, o, [&](const std::string& a, auto& value) {
    if (a == "--n")
      o.n = parse_int(a, value(), 1, int64_t{1} << 40);
    else if (a == "--grad")
      o.grad = value();
    else if (a == "--draws")
      o.draws = static_cast<int>(parse_int(a, value(), 1, 1000000));
    else
      return false;
    return true;
  });
  if (!go) return false;
  if (o.codecs.empty()) o.codecs = default_specs();
  if (o.n < 1 || o.draws < 1) throw std::invalid_argument("need --n >= 1 and --draws >= 1");
  return true;
}

std::vector<float> read_f32(const std::string& path) {
  std::ifstream f(path, std::ios::binary | std::ios::ate);
  if (!f) throw std::runtime_error("cannot open " + path);
  const std::streamoff size = f.tellg();
  if (size <= 0 || size % 4 != 0)
    throw std::runtime_error(path + ": size " + std::to_string(size) +
                             " is not a positive multiple of 4 (raw float32)");
  std::vector<float> x(static_cast<size_t>(size / 4));
  f.seekg(0);
  if (!f.read(reinterpret_cast<char*>(x.data()), size)) throw std::runtime_error("cannot read " + path);
  for (size_t i = 0; i < x.size(); ++i) {
    if (!std::isfinite(x[i])) throw std::runtime_error(path + ": element " + std::to_string(i) + " is not finite");
  }
  return x;
}

struct Input {
  std::string name;
  std::string source;
  std::vector<float> x;
};

struct Record {
  std::string input;
  BitsReport report;
};

void print_record(const Record& rec) {
  const BitsReport& r = rec.report;
  const BitsReportText t = bits_report_text(r, 3);
  std::printf("%-9s %-60s %8lld %10.0f %9.4f %-18s %-24s %8s %8s\n", rec.input.c_str(), r.spec.c_str(),
              static_cast<long long>(r.num_elems), r.bits, r.bits_per_coord, t.declared.c_str(), t.measured.c_str(),
              t.r_declared.c_str(), t.r_measured.c_str());
}

}  // namespace

int run_bits(int argc, char** argv) {
  Options o;
  try {
    if (!parse_options(argc, argv, o)) return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "gcomp-bench bits: %s\n", e.what());
    return 2;
  }
  std::vector<Input> inputs;
  inputs.push_back({"gaussian", "N(0,1), mt19937_64 seed " + std::to_string(o.seed), gaussian_vector(o.n, o.seed)});
  if (!o.grad.empty()) inputs.push_back({"grad", o.grad, read_f32(o.grad)});

  std::printf(
      "# gcomp-bench bits: R = bits / ((d/2) log2(1 + 1/omega)), omega = eps/(1-eps), eps = 1-delta for\n"
      "# contractive codecs; R_decl: declared worst case at the declared length, R_meas: measured error\n"
      "# at this message's length; seed %llu, %d Monte Carlo draws where no closed form\n",
      static_cast<unsigned long long>(o.seed), o.draws);
  for (const auto& in : inputs)
    std::printf("# input %s: d = %zu, %s\n", in.name.c_str(), in.x.size(), in.source.c_str());
  std::printf("# command: gcomp-bench %s\n", command_line(argc, argv).c_str());
  std::printf("%-9s %-60s %8s %10s %9s %-18s %-24s %8s %8s\n", "input", "codec", "d", "bits", "bits/crd", "declared",
              "measured", "R_decl", "R_meas");
  BitsReportOptions opt;
  opt.key = RngKey{o.seed, 0, 0, 0};
  opt.draws = o.draws;
  std::vector<Record> records;
  int failures = 0;
  for (const auto& in : inputs) {
    for (const auto& spec : o.codecs) {
      try {
        const auto codec = make_codec(spec, Layout(static_cast<int64_t>(in.x.size())));
        records.push_back({in.name, bits_report(*codec, in.x, opt)});
        print_record(records.back());
      } catch (const std::exception& e) {
        std::printf("# %s %s: skipped: %s\n", in.name.c_str(), spec.c_str(), e.what());
        ++failures;
      }
    }
  }
  std::fflush(stdout);

  if (!o.json.empty()) {
    std::string recs = "[";
    for (size_t i = 0; i < records.size(); ++i) {
      const std::string body = bits_report_json(records[i].report);  // "{...}"
      recs += (i ? ",\n    " : "\n    ") + std::string("{\"input\": \"") + json_escape(records[i].input) + "\", " +
              body.substr(1);
    }
    recs += "\n  ]";
    std::string ins = "[";
    for (size_t i = 0; i < inputs.size(); ++i) {
      JsonObject j;
      j.str("name", inputs[i].name)
          .str("source", inputs[i].source)
          .integer("n", static_cast<int64_t>(inputs[i].x.size()));
      ins += (i ? ", " : "") + j.dump("    ");
    }
    ins += "]";
    JsonObject top;
    top.str("tool", "gcomp-bench bits").str("command", "gcomp-bench " + command_line(argc, argv));
    top.str("git_sha", git_sha(GCOMP_SOURCE_DIR))
        .integer("seed", static_cast<int64_t>(o.seed))
        .integer("draws", o.draws);
    top.raw("inputs", ins).raw("records", recs);
    if (!write_json_file(o.json, top, "gcomp-bench bits")) return 1;
  }
  return failures > 0 ? 1 : 0;
}

}  // namespace gcomp::bench
