// SPDX-License-Identifier: Apache-2.0
// gcomp-codec: encode, decode and inspect gcomp payload files; list codecs; demo table.
#include <gcomp/bits_report.hpp>
#include <gcomp/codec.hpp>
#include <gcomp/io.hpp>
#include <gcomp/wire.hpp>

#include "tools/support/inputs.hpp"
#include "tools/support/report.hpp"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <map>
#include <random>
#include <string>
#include <vector>

namespace {

using namespace gcomp;

constexpr const char* kUsage =
    "usage: gcomp-codec <command> [options]\n"
    "commands:\n"
    "  list                                   every codec, its parameters with defaults, omega/delta\n"
    "  encode --codec SPEC --in X.f32 --out P.gcp [--seed S] [--step T] [--rank R]\n"
    "         [--segments n1,n2,...]          raw little-endian float32 in, framed payload out (the\n"
    "                                         used bytes only, for sdither and topk index=rice)\n"
    "  decode --in P.gcp --out Y.f32          the header carries everything needed\n"
    "  info P.gcp                             the header as one JSON object (used and worst-case bytes)\n"
    "  demo [--n N] [--seed S]                bits/element and error of every codec on a Gaussian vector\n"
    "  bits [--n N] [--seed S] [--codecs a,b,...] [--json PATH]\n"
    "                                         bits vs variance and the ratio R to the lower bound (spec 5.2(c))\n";

struct UsageError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

/// Largest input read from something that is not a regular file (a pipe, a device): its size is
/// not known in advance (`--in /dev/zero` would never end).
constexpr uint64_t kMaxStreamInput = uint64_t{1} << 30;

/// A raw float32 input (encode): a regular file whole, another file up to kMaxStreamInput bytes.
std::vector<uint8_t> read_input(const std::string& path) {
  io::InputFile in(path, "--in");
  return in.read_all(in.regular() ? UINT64_MAX : kMaxStreamInput, "1 GiB, the limit for a non-regular input");
}

/// A framed payload (decode, info). From a regular file: the whole file. From a pipe or device:
/// the 80-byte fixed header first, then no more than the header says the frame holds (plus one
/// byte, so that trailing bytes are reported), read as it arrives, so that a stream that is no
/// frame or never ends stops at once.
std::vector<uint8_t> read_frame(const std::string& path, const char* what) {
  io::InputFile in(path, what);
  if (in.regular()) return in.read_all(UINT64_MAX, "memory");
  std::vector<uint8_t> buf(80);
  buf.resize(in.read(buf.data(), buf.size()));
  uint32_t magic = 0, header = 0;
  uint64_t body = 0;
  if (buf.size() == 80) {
    std::memcpy(&magic, buf.data(), 4);
    std::memcpy(&header, buf.data() + 8, 4);
    std::memcpy(&body, buf.data() + 64, 8);
  }
  if (magic != kWireMagic || header < 80 || body > (uint64_t{1} << 62)) return buf;  // parse_frame says why
  const uint64_t want = header + body + 1;
  io::check_allocation(
      want, std::string(what) + " '" + printable(path) + "' (frame of " + std::to_string(want - 1) + " bytes)");
  uint8_t chunk[1 << 16];
  while (buf.size() < want) {
    const size_t n = in.read(chunk, static_cast<size_t>(std::min<uint64_t>(sizeof chunk, want - buf.size())));
    if (n == 0) break;
    buf.insert(buf.end(), chunk, chunk + n);
  }
  return buf;
}

template <class T>
T parse_number(const std::string& flag, const std::string& v) {
  T out{};
  auto [ptr, ec] = std::from_chars(v.data(), v.data() + v.size(), out);
  if (ec != std::errc() || ptr != v.data() + v.size()) throw UsageError(flag + ": '" + v + "' is not a valid number");
  return out;
}

/// --flag value pairs; unknown flags are usage errors.
std::map<std::string, std::string> parse_flags(int argc, char** argv, int first,
                                               const std::vector<std::string>& allowed,
                                               std::vector<std::string>* positional) {
  std::map<std::string, std::string> flags;
  for (int i = first; i < argc; ++i) {
    std::string a = argv[i];
    if (a.rfind("--", 0) == 0) {
      bool ok = false;
      for (const auto& k : allowed) ok |= (k == a);
      if (!ok) throw UsageError("unknown option " + a);
      if (i + 1 >= argc) throw UsageError(a + " needs a value");
      flags[a] = argv[++i];
    } else if (positional) {
      positional->push_back(a);
    } else {
      throw UsageError("unexpected argument '" + a + "'");
    }
  }
  return flags;
}

std::string need(const std::map<std::string, std::string>& f, const std::string& k) {
  auto it = f.find(k);
  if (it == f.end()) throw UsageError("missing " + k);
  return it->second;
}

int cmd_list() {
  std::printf("%-10s %-44s %s\n", "codec", "parameters (defaults)", "bits per message");
  for (const auto& d : list_codecs()) {
    std::printf("%-10s %-44s %s\n", d.name.c_str(), d.params.c_str(), d.bits.c_str());
    std::printf("%-10s   guarantee: %s\n", "", d.guarantee.c_str());
  }
  return 0;
}

int cmd_encode(int argc, char** argv) {
  auto f =
      parse_flags(argc, argv, 2, {"--codec", "--in", "--out", "--seed", "--step", "--rank", "--segments"}, nullptr);
  const CodecSpec spec = CodecSpec::parse(need(f, "--codec"));
  const std::string in = need(f, "--in"), out = need(f, "--out");
  const io::OutputOptions out_opt{"--out", {in}};
  io::check_output(out, out_opt);
  const auto raw = read_input(in);
  if (raw.size() % 4 != 0)
    GCOMP_FAIL(gcompErrorInvalidArgument, "input '" + f["--in"] + "' has " + std::to_string(raw.size()) +
                                              " bytes, not a whole number of float32 values");
  std::vector<float> x(raw.size() / 4);
  if (!raw.empty()) std::memcpy(x.data(), raw.data(), raw.size());
  std::vector<int64_t> segs;
  if (f.count("--segments")) {
    std::string s = f["--segments"];
    size_t pos = 0;
    while (pos <= s.size()) {
      size_t c = s.find(',', pos);
      if (c == std::string::npos) c = s.size();
      segs.push_back(parse_number<int64_t>("--segments", s.substr(pos, c - pos)));
      pos = c + 1;
    }
  } else {
    segs.push_back(static_cast<int64_t>(x.size()));
  }
  const Layout layout(segs);
  if (layout.num_elems() != static_cast<int64_t>(x.size()))
    GCOMP_FAIL(gcompErrorInvalidArgument, "--segments add up to " + std::to_string(layout.num_elems()) +
                                              " elements, the input has " + std::to_string(x.size()));
  RngKey key;
  if (f.count("--seed")) key.seed = parse_number<uint64_t>("--seed", f["--seed"]);
  if (f.count("--step")) key.step = parse_number<uint32_t>("--step", f["--step"]);
  if (f.count("--rank")) key.rank = parse_number<uint32_t>("--rank", f["--rank"]);
  auto codec = make_codec(spec, layout);
  std::vector<uint8_t> body(codec->encoded_bytes());
  codec->encode(x, key, body);
  // Variable-length codecs (sdither, topk index=rice): only the bytes that carry the message.
  const auto framed = frame_payload(*codec, key, std::span<const uint8_t>(body).first(codec->used_bytes(body)));
  io::write_file(out, framed, out_opt);
  return 0;
}

int cmd_decode(int argc, char** argv) {
  auto f = parse_flags(argc, argv, 2, {"--in", "--out"}, nullptr);
  const std::string in = need(f, "--in"), out = need(f, "--out");
  const io::OutputOptions out_opt{"--out", {in}};
  io::check_output(out, out_opt);
  const auto framed = read_frame(in, "--in");
  const FrameInfo info = parse_frame(framed);
  auto codec = make_codec(info.spec, info.layout);
  // n comes from the file: a few bytes of a sparse payload may claim any n. Bounded by the memory
  // and the disk space that the decoded output needs, before allocating it.
  const uint64_t out_bytes = 4 * static_cast<uint64_t>(info.layout.num_elems());
  const std::string what = "decoding '" + printable(in) + "' (n = " + std::to_string(info.layout.num_elems()) + ")";
  io::check_allocation(out_bytes, what);
  io::check_space(out, out_bytes, "--out");
  std::vector<float> y(static_cast<size_t>(info.layout.num_elems()));
  codec->decode(frame_body(framed, info), info.key, y);
  io::write_file(out, std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(y.data()), out_bytes), out_opt);
  return 0;
}

int cmd_info(int argc, char** argv) {
  std::vector<std::string> pos;
  parse_flags(argc, argv, 2, {}, &pos);
  if (pos.size() != 1) throw UsageError("info takes one payload file");
  const auto framed = read_frame(pos[0], "payload file");
  std::printf("%s\n", frame_info_json(parse_frame(framed)).c_str());
  return 0;
}

int cmd_demo(int argc, char** argv) {
  auto f = parse_flags(argc, argv, 2, {"--n", "--seed"}, nullptr);
  const int64_t n = f.count("--n") ? parse_number<int64_t>("--n", f["--n"]) : 100000;
  const uint64_t seed = f.count("--seed") ? parse_number<uint64_t>("--seed", f["--seed"]) : 1;
  if (n < 1) throw UsageError("--n must be >= 1");
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<float> x(static_cast<size_t>(n));
  for (auto& v : x) v = normal(rng);
  double xx = 0;
  for (float v : x) xx += static_cast<double>(v) * v;
  const char* specs[] = {"identity",
                         "natural",
                         "dither:levels=16,norm=l2,block=512",
                         "dither:levels=4,norm=linf,block=512",
                         "dither:levels=1,norm=linf,block=64",
                         "natdither:levels=3,norm=l2,block=512",
                         "terngrad",
                         "terngrad:clip=2.5",
                         "sign:block=4096",
                         "topk:ratio=0.01",
                         "randk:ratio=0.01"};
  std::printf("gcomp-codec demo: Gaussian vector, n = %lld, seed = %llu\n", static_cast<long long>(n),
              static_cast<unsigned long long>(seed));
  std::printf("%-38s %10s %10s %12s %14s\n", "codec", "bits/elem", "ratio", "|C(x)-x|^2/|x|^2", "declared");
  for (const char* s : specs) {
    auto codec = make_codec(s, Layout(n));
    RngKey key{seed, 0, 0, 0};
    std::vector<uint8_t> p(codec->encoded_bytes());
    codec->encode(x, key, p);
    std::vector<float> y(x.size());
    codec->decode(p, key, y);
    double err = 0;
    for (size_t i = 0; i < x.size(); ++i)
      err += (static_cast<double>(y[i]) - x[i]) * (static_cast<double>(y[i]) - x[i]);
    const Guarantee g = codec->guarantee();
    char declared[64];
    if (g.kind == Guarantee::Kind::kUnbiased)
      std::snprintf(declared, sizeof declared, "omega<=%.4g", g.omega);
    else if (g.kind == Guarantee::Kind::kContractive)
      std::snprintf(declared, sizeof declared, "delta>=%.4g", g.delta);
    else
      std::snprintf(declared, sizeof declared, "biased");
    const double bpe = 8.0 * static_cast<double>(p.size()) / static_cast<double>(n);
    std::printf("%-38s %10.3f %9.1fx %16.6f %14s\n", codec->spec().canonical().c_str(), bpe, 32.0 / bpe, err / xx,
                declared);
  }
  return 0;
}

/// Splits a list of specs on ',' or ';'. A ','-item with '=' but no ':' continues the previous spec
/// ("sdither:levels=4,norm=linf,dither" is two specs).
std::vector<std::string> split_specs(const std::string& list) {
  std::vector<std::string> out;
  size_t pos = 0;
  while (pos <= list.size()) {
    size_t end = list.find_first_of(",;", pos);
    if (end == std::string::npos) end = list.size();
    const std::string item = list.substr(pos, end - pos);
    const bool continues = pos > 0 && list[pos - 1] == ',' && !out.empty() && item.find('=') != std::string::npos &&
                           item.find(':') == std::string::npos;
    if (continues)
      out.back() += "," + item;
    else if (!item.empty())
      out.push_back(item);
    pos = end + 1;
  }
  return out;
}

int cmd_bits(int argc, char** argv) {
  auto f = parse_flags(argc, argv, 2, {"--n", "--seed", "--codecs", "--json"}, nullptr);
  const int64_t n = f.count("--n") ? parse_number<int64_t>("--n", f["--n"]) : 1024;
  const uint64_t seed = f.count("--seed") ? parse_number<uint64_t>("--seed", f["--seed"]) : 1;
  if (n < 1) throw UsageError("--n must be >= 1");
  const std::vector<std::string> specs = f.count("--codecs") ? split_specs(f["--codecs"]) : bits_report_default_specs();
  if (specs.empty()) throw UsageError("--codecs lists no codec");
  const io::OutputOptions json_opt{"--json", {}};
  if (f.count("--json")) io::check_output(f["--json"], json_opt);
  const std::vector<float> x = gaussian_vector(n, seed);
  BitsReportOptions opt;
  opt.key = RngKey{seed, 0, 0, 0};
  std::vector<BitsReport> reports;
  for (const auto& s : specs) reports.push_back(bits_report(*make_codec(s, Layout(n)), x, opt));

  std::printf("gcomp-codec bits: Gaussian vector, n = %lld, seed = %llu; R = bits / ((n/2) log2(1/eps))\n",
              static_cast<long long>(n), static_cast<unsigned long long>(seed));
  std::printf("%-58s %8s %9s %-22s %-24s %8s %8s\n", "codec", "bits", "bits/crd", "declared", "measured", "R_decl",
              "R_meas");
  for (const auto& r : reports) {
    const BitsReportText t = bits_report_text(r, 2);
    std::printf("%-58s %8.0f %9.4f %-22s %-24s %8s %8s\n", r.spec.c_str(), r.bits, r.bits_per_coord, t.declared.c_str(),
                t.measured.c_str(), t.r_declared.c_str(), t.r_measured.c_str());
  }
  if (f.count("--json")) {
    std::string json = "{\"command\": \"bits\", \"n\": " + std::to_string(n) + ", \"seed\": " + std::to_string(seed) +
                       ", \"records\": [";
    for (size_t i = 0; i < reports.size(); ++i) json += (i ? ",\n  " : "\n  ") + bits_report_json(reports[i]);
    json += "\n]}\n";
    io::write_file(f["--json"], json, json_opt);
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fputs(kUsage, stderr);
    return 2;
  }
  const std::string cmd = argv[1];
  try {
    int rc = 2;
    if (cmd == "list")
      rc = cmd_list();
    else if (cmd == "encode")
      rc = cmd_encode(argc, argv);
    else if (cmd == "decode")
      rc = cmd_decode(argc, argv);
    else if (cmd == "info")
      rc = cmd_info(argc, argv);
    else if (cmd == "demo")
      rc = cmd_demo(argc, argv);
    else if (cmd == "bits")
      rc = cmd_bits(argc, argv);
    else if (cmd == "-h" || cmd == "--help" || cmd == "help")
      rc = (std::fputs(kUsage, stdout), 0);
    else
      throw UsageError("unknown command '" + printable(cmd) + "'");
    io::flush_stdout();  // a lost table or JSON line is a failure (`> /dev/full`)
    return rc;
  } catch (const UsageError& e) {
    std::fprintf(stderr, "gcomp-codec: %s\n%s", printable(e.what(), SIZE_MAX).c_str(), kUsage);
    return 2;
  } catch (const gcomp::Error& e) {
    std::fprintf(stderr, "gcomp-codec: error: %s (%s)\n", printable(e.what(), SIZE_MAX).c_str(),
                 gcompGetErrorString(e.status()));
    return 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "gcomp-codec: error: %s\n", printable(e.what(), SIZE_MAX).c_str());
    return 1;
  }
}
