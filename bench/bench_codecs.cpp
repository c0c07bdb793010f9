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
#include "bench/bench_common.hpp"

#include <gcomp/codec.hpp>
#include <gcomp/detail/hd.hpp>
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
  std::vector<std::string> codecs;
  std::string json;
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
      "  -J, --json PATH         also write the records as JSON\n");
}

struct Record {
  std::string codec;
  std::string path;
  int64_t n = 0;
  size_t payload = 0;
  Stats enc, dec;           // microseconds
  double copy_gbps = 0;     // bytes moved (read + write) per second by a plain copy
  int64_t wrong = 0;
  std::string check;        // "bytes", "error-bound", "off"
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
  return s.id == CodecId::kSpherical && n > (int64_t{1} << (24 - static_cast<int>(s.bits)));
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
  std::vector<double> te, td, tc;
  for (int i = 0; i < o.warmup + o.iters; ++i) {
    std::memset(flush.data(), i & 0xff, flush.size());
    const double e = time_us([&] { codec->encode(x, key, payload); });
    std::memset(flush.data(), i & 0xff, flush.size());
    const double d = time_us([&] { codec->decode(payload, key, y); });
    std::memset(flush.data(), i & 0xff, flush.size());
    const double c = time_us([&] { std::memcpy(y.data(), x.data(), x.size() * 4); });
    if (i >= o.warmup) {
      te.push_back(e);
      td.push_back(d);
      tc.push_back(c);
    }
  }
  r.enc = stats_of(te);
  r.dec = stats_of(td);
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

// ------------------------------------------------------------------------------- GPU path

#if defined(GCOMP_HAVE_CUDA) && GCOMP_HAVE_CUDA

constexpr int64_t kCheckBytesMax = int64_t{4} << 22;  // byte-exact CPU comparison up to 2^22 elements

/// The CPU oracle of spherical draws 2^B normals per element: its byte-exact check stops 2^(B-4)
/// times earlier (the error-bound check covers the larger sizes).
int64_t check_bytes_max(const Codec& cpu) {
  if (cpu.spec().id != CodecId::kSpherical || cpu.spec().bits <= 4) return kCheckBytesMax;
  return kCheckBytesMax >> (cpu.spec().bits - 4);
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
    const double c = ctx.time_us(i, [&] {
      BENCH_CUDA(cudaMemcpyAsync(d_y.p, d_x.p, x.size() * 4, cudaMemcpyDeviceToDevice, ctx.stream));
    });
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
    if (a == "--cpu") o.force_cpu = true;
    else return false;
    return true;
  });
  if (!go) return false;
  if (o.codecs.empty()) o.codecs = kDefaultCodecs;
  if (o.iters < 1 || o.warmup < 0 || !(o.factor > 1.0) || o.min_bytes < 4)
    throw std::invalid_argument("need -n >= 1, -w >= 0, -f > 1 and -b >= 4");
  return true;
}

void print_header(const std::string& path, const std::string& device, const Options& o) {
  std::printf("# gcomp-bench codecs: path %s, device %s, seed %llu, iters %d, warmup %d\n", path.c_str(),
              device.c_str(), static_cast<unsigned long long>(o.seed), o.iters, o.warmup);
  std::printf("# GB/s: uncompressed fp32 bytes / median time; %%copy: minimal bytes moved / time as a fraction of\n"
              "# a same-run %s copy (read + write); spread: min-max over the timed iterations\n",
              path == "gpu" ? "device-to-device cudaMemcpy" : "memcpy");
  std::printf("%-38s %11s %9s %9s %8s %6s %19s %9s %8s %6s %19s %9s %7s\n", "codec", "elems", "bits/el", "enc_us",
              "enc_GB/s", "%copy", "enc_spread_us", "dec_us", "dec_GB/s", "%copy", "dec_spread_us", "copyGB/s",
              "#wrong");
}

void print_record(const Record& r) {
  const double in_bytes = static_cast<double>(r.n) * 4;
  const double moved = in_bytes + static_cast<double>(r.payload);
  const double bits = 8.0 * static_cast<double>(r.payload) / static_cast<double>(r.n);
  const auto pct = [&](double us) { return r.copy_gbps > 0 ? 100.0 * moved_gbps(moved, us) / r.copy_gbps : 0.0; };
  char es[32], ds[32];
  std::snprintf(es, sizeof es, "%.1f-%.1f", r.enc.min, r.enc.max);
  std::snprintf(ds, sizeof ds, "%.1f-%.1f", r.dec.min, r.dec.max);
  std::printf("%-38s %11lld %9.3f %9.1f %8.1f %6.1f %19s %9.1f %8.1f %6.1f %19s %9.1f %7lld\n", r.codec.c_str(),
              static_cast<long long>(r.n), bits, r.enc.median, moved_gbps(in_bytes, r.enc.median), pct(r.enc.median),
              es, r.dec.median, moved_gbps(in_bytes, r.dec.median), pct(r.dec.median), ds, r.copy_gbps,
              static_cast<long long>(r.wrong));
  std::fflush(stdout);
}

std::string record_json(const Record& r) {
  const double in_bytes = static_cast<double>(r.n) * 4;
  const double moved = in_bytes + static_cast<double>(r.payload);
  JsonObject j;
  j.str("codec", r.codec).str("path", r.path).integer("elems", r.n).integer("payload_bytes", static_cast<int64_t>(r.payload));
  j.num("bits_per_elem", 8.0 * static_cast<double>(r.payload) / static_cast<double>(r.n));
  j.num("enc_us_median", r.enc.median).num("enc_us_min", r.enc.min).num("enc_us_max", r.enc.max);
  j.num("dec_us_median", r.dec.median).num("dec_us_min", r.dec.min).num("dec_us_max", r.dec.max);
  j.num("enc_gbps_uncompressed", moved_gbps(in_bytes, r.enc.median));
  j.num("dec_gbps_uncompressed", moved_gbps(in_bytes, r.dec.median));
  j.num("enc_gbps_moved", moved_gbps(moved, r.enc.median)).num("dec_gbps_moved", moved_gbps(moved, r.dec.median));
  j.num("copy_gbps", r.copy_gbps);
  j.num("enc_frac_copy", r.copy_gbps > 0 ? moved_gbps(moved, r.enc.median) / r.copy_gbps : 0.0);
  j.num("dec_frac_copy", r.copy_gbps > 0 ? moved_gbps(moved, r.dec.median) / r.copy_gbps : 0.0);
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

  if (!o.json.empty()) {
    std::string recs = "[";
    for (size_t i = 0; i < records.size(); ++i) recs += (i ? ",\n    " : "\n    ") + record_json(records[i]);
    recs += "\n  ]";
    JsonObject top;
    top.str("tool", "gcomp-bench codecs").str("command", "gcomp-bench " + command_line(argc, argv));
    top.str("git_sha", git_sha(GCOMP_SOURCE_DIR)).str("device", device).str("path", path);
    top.integer("seed", static_cast<int64_t>(o.seed)).integer("iters", o.iters).integer("warmup", o.warmup);
    top.raw("records", recs);
    if (!write_json_file(o.json, top, "gcomp-bench codecs")) return 1;
  }
  return total_wrong > 0 ? 1 : 0;
}

}  // namespace gcomp::bench
