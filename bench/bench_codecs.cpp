// SPDX-License-Identifier: Apache-2.0
// `gcomp-bench codecs`: encode/decode throughput of every codec (STYLE.md §9).
//
// For each codec spec and size (fp32 bytes from -b to -e, times -f), after -w warm-up iterations,
// -n timed iterations of encode and of decode, each preceded by an L2 flush (a memset of a buffer
// of twice the L2 size); the median and the spread are reported. Throughput is given on the
// uncompressed fp32 bytes and, as a fraction of a same-run device-to-device cudaMemcpy bandwidth,
// on the minimal bytes moved (encode: read n*4 + write the payload; decode: the reverse).
// Correctness (#wrong): up to 2^22 elements (spherical: 2^(26-B)) the GPU payload is compared byte
// by byte with the CPU codec on the same input and key, and the GPU decode with the CPU decode;
// above, the decode error |C(x) - x|^2 / |x|^2 is checked against the codec's declared omega or
// delta. #wrong > 0 fails the run. Without a CUDA device the CPU reference path is timed instead
// (std::chrono, memcpy).
//
// CPU path extras: --threads N (the codec thread pool, gcomp::set_cpu_threads), a decode-reduce
// column (decode_reduce of --reduce P payloads from ranks 0..P-1, each of its own rank's input, time
// per payload), and --peers:
// the same operators written with PyTorch ops (bench/peers/torch_codecs.py) timed on the same
// input in the same run, with gcomp's time as a ratio to each.
#include "bench/bench_common.hpp"

#include "host/codecs/kernels.hpp"

#include <gcomp/codec.hpp>
#include <gcomp/detail/hd.hpp>
#include <gcomp/threads.hpp>
#if defined(GCOMP_HAVE_CUDA) && GCOMP_HAVE_CUDA
#include <gcomp/cuda.hpp>

#include <cuda_runtime.h>
#endif

#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <iostream>
#include <memory>
#include <string>
#include <unistd.h>
#include <vector>

namespace gcomp::bench {
namespace {

const std::vector<std::string> kDefaultCodecs = {
    "dither:levels=4,norm=l2,block=512",
    "dither:levels=1,norm=linf,block=4096",
    "terngrad",
    "terngrad:clip=2.5",
    "natdither:levels=3,norm=l2",
    "sign",
    "sign:block=4096",
    "topk:ratio=0.01",
    "topk:ratio=0.001",
    "randk:ratio=0.01",
    "natural",
    "identity",
    "sdither:levels=1,norm=l2",
    "sdither:levels=4,norm=linf,block=4096",
    "spherical",
    "spherical:block=8,bits=4",
    "grid:step=0.00390625,bits=16",
};

struct Options {
  int64_t min_bytes = int64_t{4} << 20;
  int64_t max_bytes = -1;  // default: 1 GiB on a GPU, 16 MiB on the CPU path
  double factor = 2.0;
  int iters = 20;
  int warmup = 5;
  bool check = true;
  bool force_cpu = false;
  uint64_t seed = 0x5eed;
  int threads = 0;     // CPU path: codec threads (0: gcomp's default)
  int reduce = 8;      // payloads of the decode-reduce column
  bool peers = false;  // run bench/peers/torch_codecs.py on the same inputs
  std::string python = "python3";
  std::vector<std::string> codecs;
  std::string json;
};

/// PyTorch peer method (bench/peers/torch_codecs.py) -> the gcomp codec of the same operator.
const std::pair<const char*, const char*> kPeers[] = {
    {"qsgd", "dither:levels=4,norm=l2,block=512"},
    {"terngrad", "terngrad"},
    {"signsgd", "sign"},
    {"topk", "topk:ratio=0.01"},
    {"randk", "randk:ratio=0.01"},
};

void usage() {
  std::printf(
      "usage: gcomp-bench codecs [options]\n"
      "  -b, --minbytes SIZE     smallest fp32 input (default 4M = 2^20 elements)\n"
      "  -e, --maxbytes SIZE     largest fp32 input (default 1G = 2^28 elements; 16M on the CPU path)\n"
      "  -f, --stepfactor F      size multiplication factor (default 2)\n"
      "  -n, --iters N           timed iterations (default 20)\n"
      "  -w, --warmup_iters N    warm-up iterations (default 5)\n"
      "  -c, --check 0|1         correctness column (default 1)\n"
      "      --codecs 'S1;S2'    codec specs separated by ';' (default: a list of 17)\n"
      "      --codec SPEC        add one codec spec (repeatable)\n"
      "      --seed N            input and RNG seed (default 0x5eed)\n"
      "      --cpu               time the CPU reference path even when a GPU exists\n"
      "      --threads N         CPU path: threads of the codec pool (default: GCOMP_CPU_THREADS or #CPUs)\n"
      "      --reduce P          CPU path: payloads of the decode-reduce column (default 8; 0: off)\n"
      "      --peers             also time the PyTorch peers (bench/peers/torch_codecs.py) on the same\n"
      "                          inputs, with the same thread count, and print gcomp / peer time\n"
      "      --python PATH       interpreter for --peers (default python3)\n"
      "  -J, --json PATH         also write the records as JSON\n");
}

struct Record {
  std::string codec;
  std::string path;
  int64_t n = 0;
  size_t payload = 0;
  Stats enc, dec;  // microseconds
  Stats red;       // decode-reduce of `reduce` payloads, microseconds per payload
  int reduce = 0;
  double copy_gbps = 0;  // bytes moved (read + write) per second by a plain copy
  int64_t wrong = 0;
  std::string check;  // "bytes", "error-bound", "off"
};

double moved_gbps(double bytes, double us) { return us > 0 ? bytes / (us * 1e3) : 0.0; }

/// |C(x) - x|^2 / |x|^2 against the declared guarantee; 0 when plausible, 1 otherwise.
int64_t error_bound_wrong(const Codec& cpu, const std::vector<float>& x, const std::vector<float>& y) {
  double num = 0, den = 0;
  for (size_t i = 0; i < x.size(); ++i) {
    if (!std::isfinite(y[i])) return 1;
    const double d = static_cast<double>(y[i]) - x[i];
    num += d * d;
    den += static_cast<double>(x[i]) * x[i];
  }
  if (den == 0) return num == 0 ? 0 : 1;
  const double ratio = num / den;
  const Guarantee g = cpu.guarantee();
  const double slack = cpu.randomized() ? 1.5 : 1.0;
  if (g.kind == Guarantee::Kind::kUnbiased) return ratio <= g.omega * slack + 1e-6 ? 0 : 1;
  if (g.kind == Guarantee::Kind::kContractive) return ratio <= (1.0 - g.delta) * slack + 1e-6 ? 0 : 1;
  return 0;
}

// ------------------------------------------------------------------------------- CPU path

/// The CPU spherical encoder draws 2^B normals per element: on the CPU path its sizes stop at
/// 2^(24-B) elements, so that a default run stays within minutes.
bool cpu_path_too_slow(const std::string& spec, int64_t n) {
  const CodecSpec s = CodecSpec::parse(spec);
  const auto* const o = s.options_if<SphericalOptions>();
  return o != nullptr && n > (int64_t{1} << (24 - static_cast<int>(o->index_bits)));
}

template <class F>
double time_us(F&& f) {
  const auto t0 = std::chrono::steady_clock::now();
  f();
  const auto t1 = std::chrono::steady_clock::now();
  return std::chrono::duration<double, std::micro>(t1 - t0).count();
}

Record run_cpu(const Options& o, const std::string& spec, int64_t n, std::vector<uint8_t>& flush) {
  Record r;
  r.codec = spec;
  r.path = "cpu";
  r.n = n;
  const Layout layout(n);
  const auto codec = make_codec(spec, layout);
  r.payload = codec->encoded_bytes();
  const std::vector<float> x = make_input(n, o.seed);
  std::vector<uint8_t> payload(r.payload);
  std::vector<float> y(static_cast<size_t>(n));
  const RngKey key{o.seed, 0, 1, 0};
  // decode-reduce: the payloads of ranks 0..P-1, each of its own rank's input (rank 0's is x), summed
  // with weight 1/P. With one input for all, top-k's payloads would be equal, and their adds would
  // hit the same output lines.
  r.reduce = o.reduce;
  std::vector<std::vector<uint8_t>> many(static_cast<size_t>(o.reduce), std::vector<uint8_t>(r.payload));
  std::vector<RngKey> keys;
  for (int j = 0; j < o.reduce; ++j) {
    keys.push_back(RngKey{o.seed, static_cast<uint32_t>(j), 1, 0});
    if (j == 0)
      codec->encode(x, keys.back(), many[0]);
    else
      codec->encode(make_input(n, rank_seed(o.seed, j)), keys.back(), many[static_cast<size_t>(j)]);
  }
  const std::vector<std::span<const uint8_t>> spans(many.begin(), many.end());
  const std::vector<float> weights(static_cast<size_t>(o.reduce),
                                   o.reduce > 0 ? 1.0f / static_cast<float>(o.reduce) : 1.0f);
  std::vector<double> te, td, tr, tc;
  for (int i = 0; i < o.warmup + o.iters; ++i) {
    std::memset(flush.data(), i & 0xff, flush.size());
    const double e = time_us([&] { codec->encode(x, key, payload); });
    std::memset(flush.data(), i & 0xff, flush.size());
    const double d = time_us([&] { codec->decode(payload, key, y); });
    double red = 0;
    if (o.reduce > 0) {
      std::memset(flush.data(), i & 0xff, flush.size());
      red = time_us([&] { codec->decode_reduce(spans, keys, weights, y); }) / o.reduce;
    }
    std::memset(flush.data(), i & 0xff, flush.size());
    const double c = time_us([&] { std::memcpy(y.data(), x.data(), x.size() * 4); });
    if (i >= o.warmup) {
      te.push_back(e);
      td.push_back(d);
      tr.push_back(red);
      tc.push_back(c);
    }
  }
  r.enc = stats_of(te);
  r.dec = stats_of(td);
  r.red = stats_of(tr);
  r.copy_gbps = moved_gbps(2.0 * static_cast<double>(n) * 4, stats_of(tc).median);
  if (o.check) {
    codec->decode(payload, key, y);
    r.wrong = error_bound_wrong(*codec, x, y);
    r.check = "error-bound";
  } else {
    r.check = "off";
  }
  return r;
}

// ------------------------------------------------------------------------------- peers

struct PeerRecord {
  std::string method, codec;
  int64_t n = 0;
  double enc_us = 0, dec_us = 0, bits = 0;
  double gcomp_enc_us = 0, gcomp_dec_us = 0;
};

/// Runs the PyTorch peers of the codecs in the list on the input of size n (written to a temp
/// file), prints their table as '#' lines, and returns their times next to gcomp's.
std::vector<PeerRecord> run_peers(const Options& o, bool gpu, int64_t n, const std::vector<struct Record>& records) {
  std::vector<PeerRecord> out;
  std::string methods;
  for (const auto& [method, spec] : kPeers)
    if (std::find(o.codecs.begin(), o.codecs.end(), spec) != o.codecs.end())
      methods += (methods.empty() ? "" : ",") + std::string(method);
  if (methods.empty()) return out;
  char input[] = "/tmp/gcomp-bench-peers-XXXXXX";
  const int fd = mkstemp(input);
  if (fd < 0) throw std::runtime_error("--peers: cannot create a temporary file");
  close(fd);
  const std::string tsv = std::string(input) + ".tsv";
  {
    const std::vector<float> x = make_input(n, o.seed);
    std::ofstream f(input, std::ios::binary);
    f.write(reinterpret_cast<const char*>(x.data()), static_cast<std::streamsize>(x.size() * 4));
    if (!f) throw std::runtime_error(std::string("--peers: cannot write ") + input);
  }
  const std::string cmd = o.python + " '" + GCOMP_SOURCE_DIR + "/bench/peers/torch_codecs.py' --device " +
                          (gpu ? "cuda" : "cpu") + " --threads " + std::to_string(cpu_threads()) + " --input " + input +
                          " --tsv " + tsv + " --methods " + methods + " -n " + std::to_string(o.iters) + " -w " +
                          std::to_string(o.warmup) + " --seed " + std::to_string(o.seed) + " 2>&1";
  std::printf("# peers: %s\n", cmd.c_str());
  std::fflush(stdout);
  FILE* p = popen(cmd.c_str(), "r");
  if (p == nullptr) throw std::runtime_error("--peers: cannot run " + o.python);
  char line[4096];
  while (std::fgets(line, sizeof line, p) != nullptr) std::printf("#   %s", line);
  const int rc = pclose(p);
  std::remove(input);
  std::ifstream f(tsv);
  PeerRecord pr;
  while (f >> pr.method >> pr.n >> pr.enc_us >> pr.dec_us >> pr.bits) {
    for (const auto& [method, spec] : kPeers)
      if (pr.method == method) pr.codec = spec;
    for (const Record& r : records)
      if (r.codec == pr.codec && r.n == n) {
        pr.gcomp_enc_us = r.enc.median;
        pr.gcomp_dec_us = r.dec.median;
      }
    out.push_back(pr);
  }
  std::remove(tsv.c_str());
  if (rc != 0 || out.empty()) throw std::runtime_error("--peers: " + cmd + " failed (exit " + std::to_string(rc) + ")");
  return out;
}

void print_peers(const std::vector<PeerRecord>& peers) {
  std::printf("# gcomp / peer: gcomp's median time over the PyTorch peer's on the same input (< 1: gcomp is faster)\n");
  std::printf("%-10s %-38s %11s %8s %12s %12s %9s %12s %12s %9s\n", "peer", "codec", "elems", "bits/el", "peer_enc_us",
              "gcomp_enc_us", "enc_ratio", "peer_dec_us", "gcomp_dec_us", "dec_ratio");
  for (const PeerRecord& p : peers)
    std::printf("%-10s %-38s %11lld %8.3f %12.1f %12.1f %9.3f %12.1f %12.1f %9.3f\n", p.method.c_str(), p.codec.c_str(),
                static_cast<long long>(p.n), p.bits, p.enc_us, p.gcomp_enc_us, p.gcomp_enc_us / p.enc_us, p.dec_us,
                p.gcomp_dec_us, p.gcomp_dec_us / p.dec_us);
  std::fflush(stdout);
}

std::string peer_json(const PeerRecord& p) {
  JsonObject j;
  j.str("peer", p.method).str("codec", p.codec).integer("elems", p.n).num("peer_bits_per_elem", p.bits);
  j.num("peer_enc_us_median", p.enc_us)
      .num("gcomp_enc_us_median", p.gcomp_enc_us)
      .num("enc_ratio", p.gcomp_enc_us / p.enc_us);
  j.num("peer_dec_us_median", p.dec_us)
      .num("gcomp_dec_us_median", p.gcomp_dec_us)
      .num("dec_ratio", p.gcomp_dec_us / p.dec_us);
  return j.dump("    ");
}

// ------------------------------------------------------------------------------- GPU path

#if defined(GCOMP_HAVE_CUDA) && GCOMP_HAVE_CUDA

constexpr int64_t kCheckBytesMax = int64_t{4} << 22;  // byte-exact CPU comparison up to 2^22 elements

/// The CPU oracle of spherical draws 2^B normals per element: its byte-exact check stops 2^(B-4)
/// times earlier (the error-bound check covers the larger sizes).
int64_t check_bytes_max(const Codec& cpu) {
  const auto* const o = cpu.spec().options_if<SphericalOptions>();
  if (o == nullptr || o->index_bits <= 4) return kCheckBytesMax;
  return kCheckBytesMax >> (o->index_bits - 4);
}

int64_t count_diff_bytes(const std::vector<uint8_t>& a, const std::vector<uint8_t>& b) {
  if (a.size() != b.size()) return static_cast<int64_t>(std::max(a.size(), b.size()));
  int64_t w = 0;
  for (size_t i = 0; i < a.size(); ++i) w += a[i] != b[i];
  return w;
}

int64_t count_diff_floats(const std::vector<float>& a, const std::vector<float>& b) {
  if (a.size() != b.size()) return static_cast<int64_t>(std::max(a.size(), b.size()));
  int64_t w = 0;
  for (size_t i = 0; i < a.size(); ++i) w += std::memcmp(&a[i], &b[i], 4) != 0;
  return w;
}

void cuda_ok(cudaError_t err, const char* what) {
  if (err != cudaSuccess) throw std::runtime_error(std::string(what) + ": " + cudaGetErrorString(err));
}
#define BENCH_CUDA(call) cuda_ok((call), #call)

template <class T>
struct DevPtr {
  T* p = nullptr;
  explicit DevPtr(size_t count) {
    if (count > 0) BENCH_CUDA(cudaMalloc(reinterpret_cast<void**>(&p), count * sizeof(T)));
  }
  ~DevPtr() {
    if (p != nullptr) (void)cudaFree(p);
  }
  DevPtr(const DevPtr&) = delete;
  DevPtr& operator=(const DevPtr&) = delete;
};

struct GpuContext {
  cudaStream_t stream = nullptr;
  cudaEvent_t start = nullptr, stop = nullptr;
  std::unique_ptr<DevPtr<uint8_t>> flush;
  size_t flush_bytes = 0;
  std::string device;

  GpuContext() {
    int dev = 0;
    BENCH_CUDA(cudaGetDevice(&dev));
    cudaDeviceProp prop{};
    BENCH_CUDA(cudaGetDeviceProperties(&prop, dev));
    int l2 = 0;
    BENCH_CUDA(cudaDeviceGetAttribute(&l2, cudaDevAttrL2CacheSize, dev));
    device = std::string(prop.name) + " (sm_" + std::to_string(prop.major) + std::to_string(prop.minor) + ", " +
             std::to_string(prop.multiProcessorCount) + " SMs, L2 " + std::to_string(l2 >> 20) + " MiB)";
    flush_bytes = static_cast<size_t>(std::max(l2, 1 << 20)) * 2;
    flush = std::make_unique<DevPtr<uint8_t>>(flush_bytes);
    BENCH_CUDA(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
    BENCH_CUDA(cudaEventCreate(&start));
    BENCH_CUDA(cudaEventCreate(&stop));
  }
  ~GpuContext() {
    (void)cudaEventDestroy(start);
    (void)cudaEventDestroy(stop);
    (void)cudaStreamDestroy(stream);
  }
  GpuContext(const GpuContext&) = delete;
  GpuContext& operator=(const GpuContext&) = delete;

  /// Flushes L2, then times f() on the stream with events (microseconds).
  template <class F>
  double time_us(int iteration, F&& f) {
    BENCH_CUDA(cudaMemsetAsync(flush->p, iteration & 0xff, flush_bytes, stream));
    BENCH_CUDA(cudaEventRecord(start, stream));
    f();
    BENCH_CUDA(cudaEventRecord(stop, stream));
    BENCH_CUDA(cudaEventSynchronize(stop));
    float ms = 0;
    BENCH_CUDA(cudaEventElapsedTime(&ms, start, stop));
    return 1e3 * static_cast<double>(ms);
  }
};

Record run_gpu(const Options& o, GpuContext& ctx, const std::string& spec, int64_t n) {
  Record r;
  r.codec = spec;
  r.path = "gpu";
  r.n = n;
  const Layout layout(n);
  cuda::DeviceCodec codec(spec, layout);
  r.payload = codec.encoded_bytes();
  const std::vector<float> x = make_input(n, o.seed);
  const RngKey key{o.seed, 0, 1, 0};
  DevPtr<float> d_x(static_cast<size_t>(n)), d_y(static_cast<size_t>(n));
  DevPtr<uint8_t> d_payload(r.payload), d_ws(codec.workspace_bytes());
  BENCH_CUDA(cudaMemcpyAsync(d_x.p, x.data(), x.size() * 4, cudaMemcpyHostToDevice, ctx.stream));
  BENCH_CUDA(cudaStreamSynchronize(ctx.stream));  // ctx.stream is non-blocking: no implicit order with cudaMemcpy
  const size_t ws = codec.workspace_bytes();
  std::vector<double> te, td, tc;
  for (int i = 0; i < o.warmup + o.iters; ++i) {
    const double e = ctx.time_us(i, [&] { codec.encode(d_x.p, key, d_payload.p, d_ws.p, ws, ctx.stream); });
    const double d = ctx.time_us(i, [&] { codec.decode(d_payload.p, key, d_y.p, d_ws.p, ws, ctx.stream); });
    const double c = ctx.time_us(
        i, [&] { BENCH_CUDA(cudaMemcpyAsync(d_y.p, d_x.p, x.size() * 4, cudaMemcpyDeviceToDevice, ctx.stream)); });
    if (i >= o.warmup) {
      te.push_back(e);
      td.push_back(d);
      tc.push_back(c);
    }
  }
  r.enc = stats_of(te);
  r.dec = stats_of(td);
  r.copy_gbps = moved_gbps(2.0 * static_cast<double>(n) * 4, stats_of(tc).median);
  if (!o.check) {
    r.check = "off";
    return r;
  }
  codec.encode(d_x.p, key, d_payload.p, d_ws.p, ws, ctx.stream);
  if (cuda::read_status(d_ws.p, ctx.stream) != gcompSuccess) r.wrong += 1;
  codec.decode(d_payload.p, key, d_y.p, d_ws.p, ws, ctx.stream);
  if (cuda::read_status(d_ws.p, ctx.stream) != gcompSuccess) r.wrong += 1;
  std::vector<uint8_t> payload(r.payload);
  std::vector<float> y(static_cast<size_t>(n));
  BENCH_CUDA(cudaMemcpy(payload.data(), d_payload.p, payload.size(), cudaMemcpyDeviceToHost));
  BENCH_CUDA(cudaMemcpy(y.data(), d_y.p, y.size() * 4, cudaMemcpyDeviceToHost));
  const auto cpu = make_codec(spec, layout);
  if (n * 4 <= check_bytes_max(*cpu)) {
    std::vector<uint8_t> want(cpu->encoded_bytes());
    cpu->encode(x, key, want);
    std::vector<float> want_y(static_cast<size_t>(n));
    cpu->decode(want, key, want_y);
    r.wrong += count_diff_bytes(payload, want) + count_diff_floats(y, want_y);
    r.check = "bytes";
  } else {
    r.wrong += error_bound_wrong(*cpu, x, y);
    r.check = "error-bound";
  }
  return r;
}

#endif  // GCOMP_HAVE_CUDA

bool parse_options(int argc, char** argv, Options& o) {
  const bool go = parse_flags(argc, argv, "codecs", usage, o, [&](const std::string& a, auto& value) {
    if (parse_sweep_flag(a, value, o)) return true;
    if (a == "--cpu")
      o.force_cpu = true;
    else if (a == "--threads")
      o.threads = std::stoi(value());
    else if (a == "--reduce")
      o.reduce = std::stoi(value());
    else if (a == "--peers")
      o.peers = true;
    else if (a == "--python")
      o.python = value();
    else
      return false;
    return true;
  });
  if (!go) return false;
  if (o.codecs.empty()) o.codecs = kDefaultCodecs;
  if (o.iters < 1 || o.warmup < 0 || !(o.factor > 1.0) || o.min_bytes < 4)
    throw std::invalid_argument("need -n >= 1, -w >= 0, -f > 1 and -b >= 4");
  if (o.threads < 0 || o.threads > 256) throw std::invalid_argument("need 0 <= --threads <= 256");
  if (o.reduce < 0 || o.reduce > 64) throw std::invalid_argument("need 0 <= --reduce <= 64");
  return true;
}

void print_header(const std::string& path, const std::string& device, const Options& o) {
  std::printf("# gcomp-bench codecs: path %s, device %s, seed %llu, iters %d, warmup %d\n", path.c_str(),
              device.c_str(), static_cast<unsigned long long>(o.seed), o.iters, o.warmup);
  if (path == "cpu")
    std::printf("# cpu kernels: %s, %d thread(s); red: decode_reduce of %d payloads, time per payload\n",
                detail::kernels::active_target().c_str(), cpu_threads(), o.reduce);
  std::printf(
      "# GB/s: uncompressed fp32 bytes / median time; %%copy: minimal bytes moved / time as a fraction of\n"
      "# a same-run %s copy (read + write); spread: min-max over the timed iterations\n",
      path == "gpu" ? "device-to-device cudaMemcpy" : "memcpy");
  std::printf("%-38s %11s %9s %9s %8s %6s %19s %9s %8s %6s %19s %9s %6s %9s %7s\n", "codec", "elems", "bits/el",
              "enc_us", "enc_GB/s", "%copy", "enc_spread_us", "dec_us", "dec_GB/s", "%copy", "dec_spread_us", "red_us",
              "%copy", "copyGB/s", "#wrong");
}

/// Bytes a decode moves at least (and a decode-reduce per payload): the payload and the fp32 output.
double moved_bytes(const Record& r) { return static_cast<double>(r.n) * 4 + static_cast<double>(r.payload); }

void print_record(const Record& r) {
  const double in_bytes = static_cast<double>(r.n) * 4;
  const double moved = moved_bytes(r);
  const double bits = 8.0 * static_cast<double>(r.payload) / static_cast<double>(r.n);
  const auto pct = [&](double us) { return r.copy_gbps > 0 ? 100.0 * moved_gbps(moved, us) / r.copy_gbps : 0.0; };
  char es[32], ds[32], rs[16], rp[16];
  std::snprintf(es, sizeof es, "%.1f-%.1f", r.enc.min, r.enc.max);
  std::snprintf(ds, sizeof ds, "%.1f-%.1f", r.dec.min, r.dec.max);
  std::snprintf(rs, sizeof rs, r.reduce > 0 ? "%.1f" : "-", r.red.median);
  std::snprintf(rp, sizeof rp, r.reduce > 0 ? "%.1f" : "-", pct(r.red.median));
  std::printf("%-38s %11lld %9.3f %9.1f %8.1f %6.1f %19s %9.1f %8.1f %6.1f %19s %9s %6s %9.1f %7lld\n", r.codec.c_str(),
              static_cast<long long>(r.n), bits, r.enc.median, moved_gbps(in_bytes, r.enc.median), pct(r.enc.median),
              es, r.dec.median, moved_gbps(in_bytes, r.dec.median), pct(r.dec.median), ds, rs, rp, r.copy_gbps,
              static_cast<long long>(r.wrong));
  std::fflush(stdout);
}

std::string record_json(const Record& r) {
  const double in_bytes = static_cast<double>(r.n) * 4;
  const double moved = moved_bytes(r);
  JsonObject j;
  j.str("codec", r.codec)
      .str("path", r.path)
      .integer("elems", r.n)
      .integer("payload_bytes", static_cast<int64_t>(r.payload));
  j.num("bits_per_elem", 8.0 * static_cast<double>(r.payload) / static_cast<double>(r.n));
  j.num("enc_us_median", r.enc.median).num("enc_us_min", r.enc.min).num("enc_us_max", r.enc.max);
  j.num("dec_us_median", r.dec.median).num("dec_us_min", r.dec.min).num("dec_us_max", r.dec.max);
  j.num("enc_gbps_uncompressed", moved_gbps(in_bytes, r.enc.median));
  j.num("dec_gbps_uncompressed", moved_gbps(in_bytes, r.dec.median));
  j.num("enc_gbps_moved", moved_gbps(moved, r.enc.median)).num("dec_gbps_moved", moved_gbps(moved, r.dec.median));
  j.num("copy_gbps", r.copy_gbps);
  j.num("enc_frac_copy", r.copy_gbps > 0 ? moved_gbps(moved, r.enc.median) / r.copy_gbps : 0.0);
  j.num("dec_frac_copy", r.copy_gbps > 0 ? moved_gbps(moved, r.dec.median) / r.copy_gbps : 0.0);
  if (r.reduce > 0) {
    j.integer("reduce_payloads", r.reduce);
    j.num("red_us_per_payload_median", r.red.median).num("red_us_per_payload_min", r.red.min);
    j.num("red_us_per_payload_max", r.red.max);
    j.num("red_frac_copy", r.copy_gbps > 0 ? moved_gbps(moved, r.red.median) / r.copy_gbps : 0.0);
  }
  j.integer("wrong", r.wrong).str("check", r.check);
  return j.dump("    ");
}

}  // namespace

int run_codecs(int argc, char** argv) {
  Options o;
  try {
    if (!parse_options(argc, argv, o)) return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "gcomp-bench codecs: %s\n", e.what());
    return 2;
  }
  bool gpu = false;
  std::string device = "cpu";
#if defined(GCOMP_HAVE_CUDA) && GCOMP_HAVE_CUDA
  std::string why;
  gpu = !o.force_cpu && cuda::device_available(&why);
  if (!gpu && !o.force_cpu) std::printf("# no CUDA device: running the CPU reference path (%s)\n", why.c_str());
  std::unique_ptr<GpuContext> ctx;
  if (gpu) {
    ctx = std::make_unique<GpuContext>();
    device = ctx->device;
  }
#else
  if (!o.force_cpu) std::printf("# no CUDA device: running the CPU reference path (built without CUDA)\n");
#endif
  if (o.max_bytes < 0) o.max_bytes = gpu ? (int64_t{1} << 30) : (int64_t{16} << 20);
  if (o.threads > 0) set_cpu_threads(o.threads);
  if (gpu) o.reduce = 0;  // the decode-reduce column is timed on the CPU path
  std::vector<uint8_t> cpu_flush(gpu ? 0 : size_t{64} << 20);
  const std::string path = gpu ? "gpu" : "cpu";
  print_header(path, device, o);

  std::vector<Record> records;
  int64_t total_wrong = 0;
  for (const std::string& spec : o.codecs) {
    for (double bytes = static_cast<double>(o.min_bytes); bytes <= static_cast<double>(o.max_bytes) * 1.0000001;
         bytes *= o.factor) {
      const int64_t n = static_cast<int64_t>(bytes) / 4;
      try {
        if (!gpu && cpu_path_too_slow(spec, n)) {
          std::printf("# %s n=%lld: skipped on the CPU path (2^B codebook normals per element)\n", spec.c_str(),
                      static_cast<long long>(n));
          continue;
        }
        Record r;
#if defined(GCOMP_HAVE_CUDA) && GCOMP_HAVE_CUDA
        if (gpu)
          r = run_gpu(o, *ctx, spec, n);
        else
          r = run_cpu(o, spec, n, cpu_flush);
#else
        r = run_cpu(o, spec, n, cpu_flush);
#endif
        print_record(r);
        total_wrong += r.wrong;
        records.push_back(r);
      } catch (const std::exception& e) {
        std::fprintf(stderr, "gcomp-bench codecs: %s n=%lld: %s\n", spec.c_str(), static_cast<long long>(n), e.what());
        return 1;
      }
    }
  }
  std::printf("# total #wrong: %lld\n", static_cast<long long>(total_wrong));

  std::vector<PeerRecord> peers;
  if (o.peers) {
    try {
      for (double bytes = static_cast<double>(o.min_bytes); bytes <= static_cast<double>(o.max_bytes) * 1.0000001;
           bytes *= o.factor) {
        const auto more = run_peers(o, gpu, static_cast<int64_t>(bytes) / 4, records);
        peers.insert(peers.end(), more.begin(), more.end());
      }
    } catch (const std::exception& e) {
      std::fprintf(stderr, "gcomp-bench codecs: %s\n", e.what());
      return 1;
    }
    print_peers(peers);
  }

  if (!o.json.empty()) {
    std::string recs = "[";
    for (size_t i = 0; i < records.size(); ++i) recs += (i ? ",\n    " : "\n    ") + record_json(records[i]);
    recs += "\n  ]";
    JsonObject top;
    top.str("tool", "gcomp-bench codecs").str("command", "gcomp-bench " + command_line(argc, argv));
    top.str("git_sha", git_sha(GCOMP_SOURCE_DIR)).str("device", device).str("path", path);
    top.integer("seed", static_cast<int64_t>(o.seed)).integer("iters", o.iters).integer("warmup", o.warmup);
    if (!gpu) top.str("cpu_kernels", detail::kernels::active_target()).integer("cpu_threads", cpu_threads());
    top.raw("records", recs);
    if (o.peers) {
      std::string ps = "[";
      for (size_t i = 0; i < peers.size(); ++i) ps += (i ? ",\n    " : "\n    ") + peer_json(peers[i]);
      top.raw("peers", ps + "\n  ]");
    }
    if (!write_json_file(o.json, top, "gcomp-bench codecs")) return 1;
  }
  return total_wrong > 0 ? 1 : 0;
}

}  // namespace gcomp::bench
