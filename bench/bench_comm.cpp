// SPDX-License-Identifier: Apache-2.0
// `gcomp-bench comm`: nccl-tests style collective table for compressed gradient exchange
// (STYLE.md §9, project issue 4 item 7), measured on the real Session (issue 14 item 3).
//
// For each size (bytes of fp32 input, -b to -e times -f) three kinds of rows:
//   allreduce          uncompressed fp32 Communicator::allreduce (the baseline)
//   allgather+CODEC    one Session step of compressed-gd (lr 1, so the update is the mean of the
//                      decoded messages): encode, allgather of the payloads, rank-ordered
//                      decode-reduce, as users run it (non-finite agreement included)
//   twoway+CODEC       one Session step of doublesqueeze with the sharded server (lr 1): encode
//                      shard s for its owner, alltoall, the owner decode-reduces its shard, adds its
//                      error and re-encodes it (downlink key), allgather of the shard messages,
//                      decode into the full vector
// The Session runs on backend host-f32 (local, mpi) or cuda (nccl), with its fp32 buffers passed
// as they are. Every iteration starts with a barrier; each rank times the step (std::chrono; on
// nccl after a stream sync) and the Session reports its phases (SessionConfig::time_phases:
// encode, comm, decode + update); per iteration the max over ranks is taken, then the median over
// the -n timed iterations. #wrong counts the elements (summed over ranks) whose result differs from
// an independent CPU reference recomputed from the inputs with the CPU codecs in rank order (for
// the two-way rows every step of the run, since the errors carry over): bitwise for the compressed
// rows and for the fp32 allreduce on local/mpi (which reduce in rank order); nccl's allreduce is
// compared with a summation error bound (NCCL does not reduce in rank order). #wrong > 0 makes the
// run exit 1.
#include "bench/bench_common.hpp"
#include "host/common/env.hpp"

#include <gcomp/codec.hpp>
#include <gcomp/comm.hpp>
#include <gcomp/detail/session_keys.hpp>
#include <gcomp/detail/session_math.hpp>
#include <gcomp/session.hpp>
#if defined(GCOMP_HAVE_CUDA) && GCOMP_HAVE_CUDA
#include <gcomp/cuda.hpp>

#include <cuda_runtime.h>
#endif

#include <array>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <functional>
#include <memory>
#include <mutex>
#include <span>
#include <string>
#include <thread>
#include <unistd.h>
#include <vector>

namespace gcomp::bench {
namespace {

enum class Backend { kLocal, kMpi, kNccl };

/// Most thread ranks of --ranks: each is an OS thread, and every rank decodes every other rank's
/// message, so a row's work and memory grow as P^2 (local_footprint() bounds the memory too).
constexpr int64_t kMaxRanks = 1024;

struct Options {
  int64_t min_bytes = int64_t{64} << 10;
  int64_t max_bytes = int64_t{16} << 20;
  double factor = 4.0;
  int iters = 20;
  int warmup = 5;
  bool check = true;
  int64_t check_max_bytes = int64_t{64} << 20;
  Backend backend = Backend::kLocal;
  int ranks = -1;  // not given (--ranks takes 1..kMaxRanks); local: 4; nccl without a launcher: the devices
  uint64_t seed = 0x5eed;
  std::vector<std::string> codecs;
  std::string json;
};

void usage() {
  std::printf(
      "usage: gcomp-bench comm [options]\n"
      "  -b, --minbytes SIZE      smallest fp32 input per rank (default 64K)\n"
      "  -e, --maxbytes SIZE      largest fp32 input per rank (default 16M)\n"
      "  -f, --stepfactor F       size multiplication factor (default 4)\n"
      "  -n, --iters N            timed iterations (default 20)\n"
      "  -w, --warmup_iters N     warm-up iterations (default 5)\n"
      "  -c, --check 0|1          #wrong column against the CPU reference (default 1)\n"
      "      --check-max SIZE     check sizes up to SIZE bytes only (default 64M; above: N/A)\n"
      "      --codec SPEC         codec of the compressed rows (repeatable; default dither:levels=4,block=512)\n"
      "      --codecs 'S1;S2'     several codec specs separated by ';'\n"
      "      --backend B          local | mpi | nccl (default local)\n"
      "      --ranks P            local: number of thread ranks (default 4); nccl without a launcher:\n"
      "                           thread ranks, one per device (default: all visible devices)\n"
      "      --seed N             input and RNG seed (default 0x5eed)\n"
      "  -J, --json PATH          also write the records as JSON (rank 0)\n"
      "mpi: launch with mpiexec -n P (one rank per process). nccl: one rank per GPU, either P thread\n"
      "ranks in this process (--ranks) or one process per GPU under mpiexec/torchrun (RANK/WORLD_SIZE).\n");
}

bool parse_options(int argc, char** argv, Options& o) {
  const bool go = parse_flags(argc, argv, "comm", usage, o, [&](const std::string& a, auto& value) {
    if (parse_sweep_flag(a, value, o)) return true;
    if (a == "--check-max") {
      o.check_max_bytes = parse_size(a, value());
    } else if (a == "--backend") {
      const std::string b = value();
      if (b == "local")
        o.backend = Backend::kLocal;
      else if (b == "mpi")
        o.backend = Backend::kMpi;
      else if (b == "nccl")
        o.backend = Backend::kNccl;
      else
        throw std::invalid_argument("--backend must be local, mpi or nccl, got '" + b + "'");
    } else if (a == "--ranks") {
      o.ranks = static_cast<int>(parse_int(a, value(), 1, kMaxRanks));
    } else {
      return false;
    }
    return true;
  });
  if (!go) return false;
  if (o.codecs.empty()) o.codecs.push_back("dither:levels=4,block=512");
  for (const auto& c : o.codecs) static_cast<void>(CodecSpec::parse(c));  // bad specs fail before any rank starts
  if (o.iters < 1 || o.warmup < 0 || !(o.factor > 1.0) || o.min_bytes < 4 || o.max_bytes < o.min_bytes)
    throw std::invalid_argument("need -n >= 1, -w >= 0, -f > 1 and 4 <= -b <= -e");
  return true;
}

/// Rank-order fold of the inputs: ((x_0 + x_1) + x_2) + ... (Communicator::allreduce on local/mpi).
std::vector<float> reference_allreduce(int64_t n, int p, uint64_t seed, std::vector<double>* abs_sum) {
  std::vector<float> acc = make_input(n, rank_seed(seed, 0));
  if (abs_sum != nullptr) {
    abs_sum->assign(acc.size(), 0.0);
    for (size_t i = 0; i < acc.size(); ++i) (*abs_sum)[i] = std::fabs(static_cast<double>(acc[i]));
  }
  for (int j = 1; j < p; ++j) {
    const std::vector<float> x = make_input(n, rank_seed(seed, j));
    for (size_t i = 0; i < acc.size(); ++i) {
      acc[i] = acc[i] + x[i];
      if (abs_sum != nullptr) (*abs_sum)[i] += std::fabs(static_cast<double>(x[i]));
    }
  }
  return acc;
}

/// The Session configuration of a compressed row: lr 1, so the update is the exchanged mean itself.
SessionConfig row_config(const std::string& kind, const std::string& codec, uint64_t seed, gcomp::Backend backend) {
  SessionConfig c;
  c.algorithm = kind == "allgather" ? Algorithm::kCompressedGd : Algorithm::kDoubleSqueeze;
  c.codec = codec;
  c.server_codec = codec;
  c.server = ServerMode::kSharded;
  c.lr = 1.0;
  c.seed = seed;
  c.backend = backend;
  c.time_phases = true;
  return c;
}

/// The one-way row's update at step `step`, computed here from the inputs with the CPU codec:
/// fp32(1/P) * sum_j decode(C(x_j)) in rank order (TernGrad: every rank encodes with the max of the
/// ranks' scales, as compressed-gd shares them).
std::vector<float> reference_oneway(const std::string& spec, int64_t n, int p, uint64_t seed, uint32_t step) {
  const auto codec = make_codec(spec, Layout(n));
  std::vector<std::vector<float>> x;
  for (int j = 0; j < p; ++j) x.push_back(make_input(n, rank_seed(seed, j)));
  const bool share = codec->spec().id() == CodecId::kTernGrad && codec->num_scales() > 0;
  std::vector<float> scales_max(static_cast<size_t>(codec->num_scales()), 0.0f), scales(scales_max.size());
  if (share) {
    for (int j = 0; j < p; ++j) {
      codec->compute_scales(x[static_cast<size_t>(j)], scales);
      for (size_t b = 0; b < scales.size(); ++b) scales_max[b] = std::max(scales_max[b], scales[b]);
    }
  }
  std::vector<float> out(static_cast<size_t>(n), 0.0f);
  std::vector<uint8_t> payload(codec->encoded_bytes());
  for (int j = 0; j < p; ++j) {
    const RngKey key = detail::uplink_key(seed, static_cast<uint32_t>(j), step);
    if (share)
      codec->encode_with_scales(x[static_cast<size_t>(j)], scales_max, key, payload);
    else
      codec->encode(x[static_cast<size_t>(j)], key, payload);
    codec->decode_accumulate(payload, key, 1.0f, out);
  }
  const auto inv = static_cast<float>(1.0 / static_cast<double>(p));
  for (float& v : out) v = detail::mul_rn(inv, v);
  return out;
}

/// The two-way row's update after `steps` steps (0 .. steps-1) of doublesqueeze with the sharded
/// server, lr 1 and the same input at every step, computed here shard by shard with the CPU codecs
/// (spec §8.4): v_j = x_j + e_j; e_j = v_j - C(v_j); server s: w = e~_s + fp32(1/P) sum_j C(v_j)[s],
/// e~_s = w - C~(w); the update is the decoded C~(w) of every shard.
std::vector<float> reference_twoway(const std::string& spec, int64_t n, int p, uint64_t seed, uint32_t steps) {
  std::vector<std::vector<float>> x, e;
  for (int j = 0; j < p; ++j) {
    x.push_back(make_input(n, rank_seed(seed, j)));
    e.emplace_back(static_cast<size_t>(n), 0.0f);
  }
  std::vector<float> server_err(static_cast<size_t>(n), 0.0f), out(static_cast<size_t>(n), 0.0f);
  const auto inv = static_cast<float>(1.0 / static_cast<double>(p));
  for (int s = 0; s < p; ++s) {
    const int64_t b = detail::shard_begin(n, p, s), len = detail::shard_begin(n, p, s + 1) - b;
    const auto codec = make_codec(spec, Layout(len));
    std::vector<uint8_t> payload(codec->encoded_bytes());
    std::vector<float> v(static_cast<size_t>(len)), acc(static_cast<size_t>(len)), w(static_cast<size_t>(len));
    auto slice = [&](std::vector<float>& a) { return std::span<float>(a.data() + b, static_cast<size_t>(len)); };
    for (uint32_t k = 0; k < steps; ++k) {
      std::fill(acc.begin(), acc.end(), 0.0f);
      for (int j = 0; j < p; ++j) {
        const std::span<float> xj = slice(x[static_cast<size_t>(j)]), ej = slice(e[static_cast<size_t>(j)]);
        for (int64_t i = 0; i < len; ++i) v[i] = detail::add_rn(xj[i], ej[i]);
        const RngKey key = detail::uplink_shard_key(seed, static_cast<uint32_t>(j), k, s);
        codec->encode_ef(v, key, payload, ej);
        codec->decode_accumulate(payload, key, 1.0f, acc);
      }
      const std::span<float> es = slice(server_err);
      for (int64_t i = 0; i < len; ++i) w[i] = detail::add_rn(es[i], detail::mul_rn(inv, acc[i]));
      const RngKey down = detail::downlink_shard_key(seed, k, s);
      codec->encode_ef(w, down, payload, es);
      codec->decode(payload, down, slice(out));
    }
  }
  return out;
}

/// References are the same on every rank: the local backend's thread ranks compute each once.
class ReferenceCache {
 public:
  std::shared_ptr<const std::vector<float>> get(const std::string& key,
                                                const std::function<std::vector<float>()>& make) {
    std::lock_guard<std::mutex> lock(m_);
    if (key != key_ || !value_) {
      value_.reset();  // the previous row's reference goes first
      value_ = std::make_shared<const std::vector<float>>(make());
      key_ = key;
    }
    return value_;
  }

 private:
  std::mutex m_;
  std::string key_;
  std::shared_ptr<const std::vector<float>> value_;
};

ReferenceCache& reference_cache() {
  static ReferenceCache c;
  return c;
}

std::vector<float> reference_session(const std::string& kind, const std::string& spec, int64_t n, int p, uint64_t seed,
                                     uint32_t steps) {
  return kind == "allgather" ? reference_oneway(spec, n, p, seed, steps - 1)
                             : reference_twoway(spec, n, p, seed, steps);
}

int64_t count_bitwise_diff(std::span<const float> got, std::span<const float> want) {
  if (got.size() != want.size()) return static_cast<int64_t>(std::max(got.size(), want.size()));
  int64_t w = 0;
  for (size_t i = 0; i < got.size(); ++i) w += std::memcmp(&got[i], &want[i], sizeof(float)) != 0;
  return w;
}

// ------------------------------------------------------------------------------- timing

/// One iteration's times on one rank (microseconds): the whole row, and its encode, comm and
/// decode (+ update) phases.
struct IterTimes {
  double total = 0, enc = 0, comm = 0, dec = 0;
};

/// One row's result, identical on every rank after the gather.
struct Row {
  std::string algo;
  std::string codec;  // empty for the uncompressed allreduce
  int64_t bytes = 0;
  int64_t count = 0;
  Stats time, enc, comm, dec;  // medians (and spread) of the per-iteration max over ranks, us
  double payload_bytes = 0;    // compressed bytes one rank encodes per iteration (uplink)
  double wire_bytes = 0;       // bytes one rank sends to its peers per iteration (busbw)
  int64_t wrong = -1;          // -1: not checked
  std::string skipped;         // reason, when the row could not run
};

/// Runs warm-up + timed iterations (barrier first in each), then gathers the per-iteration times
/// and the rank's wrong count over all ranks (host memory on every backend).
void time_and_gather(Communicator& comm, const Options& o, const std::function<IterTimes()>& iteration,
                     const std::function<int64_t()>& check, Row& row) {
  const int it_total = o.warmup + o.iters;
  std::vector<double> mine(static_cast<size_t>(o.iters) * 4 + 1, 0.0);
  for (int it = 0; it < it_total; ++it) {
    comm.barrier();
    const IterTimes t = iteration();
    if (it < o.warmup) continue;
    double* slot = &mine[static_cast<size_t>(it - o.warmup) * 4];
    slot[0] = t.total;
    slot[1] = t.enc;
    slot[2] = t.comm;
    slot[3] = t.dec;
  }
  mine.back() = check ? static_cast<double>(check()) : -1.0;
  const size_t p = static_cast<size_t>(comm.size());
  std::vector<double> all(mine.size() * p);
  comm.host_allgather(mine.data(), all.data(), mine.size() * sizeof(double));
  std::vector<double> tot, enc, com, dec;
  for (size_t it = 0; it < static_cast<size_t>(o.iters); ++it) {
    std::array<double, 4> mx{0, 0, 0, 0};
    for (size_t r = 0; r < p; ++r)
      for (size_t c = 0; c < 4; ++c) mx[c] = std::max(mx[c], all[r * mine.size() + it * 4 + c]);
    tot.push_back(mx[0]);
    enc.push_back(mx[1]);
    com.push_back(mx[2]);
    dec.push_back(mx[3]);
  }
  row.time = stats_of(tot);
  row.enc = stats_of(enc);
  row.comm = stats_of(com);
  row.dec = stats_of(dec);
  if (check) {
    double wrong = 0;
    for (size_t r = 0; r < p; ++r) wrong += all[r * mine.size() + mine.size() - 1];
    row.wrong = static_cast<int64_t>(wrong);
  }
}

double us_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - t0).count();
}

IterTimes phases_of(const StepStats& st, double total) {
  return IterTimes{total, st.encode_us, st.comm_us, st.decode_us + st.update_us};
}

/// The #wrong check of a Session row after `steps` steps: this rank's update against the reference.
std::function<int64_t()> session_check(const Options& o, const std::string& kind, const std::string& codec, int64_t n,
                                       int p, const std::function<std::vector<float>()>& output) {
  if (!o.check || n * 4 > o.check_max_bytes) return nullptr;
  const auto steps = static_cast<uint32_t>(o.warmup + o.iters);
  return [=, &o] {
    const std::string key = kind + "|" + codec + "|" + std::to_string(n) + "|" + std::to_string(steps);
    const auto want = reference_cache().get(key, [&] { return reference_session(kind, codec, n, p, o.seed, steps); });
    return count_bitwise_diff(output(), *want);
  };
}

// ------------------------------------------------------------------------------- CPU rows

void cpu_allreduce(Communicator& comm, const Options& o, int64_t n, Row& row) {
  const int rank = comm.rank();
  const int p = comm.size();
  const std::vector<float> x = make_input(n, rank_seed(o.seed, rank));
  std::vector<float> out(static_cast<size_t>(n));
  const auto iteration = [&] {
    const auto t0 = std::chrono::steady_clock::now();
    comm.allreduce(x.data(), out.data(), static_cast<size_t>(n), DataType::kF32, ReduceOp::kSum, nullptr);
    const double t = us_since(t0);
    return IterTimes{t, 0, t, 0};
  };
  std::function<int64_t()> check;
  if (o.check && n * 4 <= o.check_max_bytes)
    check = [&] { return count_bitwise_diff(out, reference_allreduce(n, p, o.seed, nullptr)); };
  row.payload_bytes = static_cast<double>(n) * 4;
  row.wire_bytes = p > 1 ? 2.0 * (p - 1) / p * static_cast<double>(n) * 4 : 0.0;
  time_and_gather(comm, o, iteration, check, row);
}

/// allgather+CODEC and twoway+CODEC: Session steps on the host-f32 backend, on the caller's fp32
/// buffers (no conversion, no copy).
void cpu_session(Communicator& comm, const Options& o, const std::string& kind, const std::string& codec, int64_t n,
                 Row& row) {
  const std::vector<float> x = make_input(n, rank_seed(o.seed, comm.rank()));
  std::vector<float> out(static_cast<size_t>(n));
  Session session(comm, Layout(n), row_config(kind, codec, o.seed, gcomp::Backend::kHostF32));
  StepStats last;
  const auto iteration = [&] {
    const auto t0 = std::chrono::steady_clock::now();
    last = session.step(std::span<const float>(x), std::span<float>(out));
    return phases_of(last, us_since(t0));
  };
  const auto check = session_check(o, kind, codec, n, comm.size(), [&] { return out; });
  time_and_gather(comm, o, iteration, check, row);
  row.payload_bytes = static_cast<double>(last.bytes_up);
  row.wire_bytes = static_cast<double>(last.bytes_received);
}

// ------------------------------------------------------------------------------- GPU rows (nccl, cuda Session)

#if defined(GCOMP_HAVE_NCCL) && GCOMP_HAVE_NCCL && defined(GCOMP_HAVE_CUDA) && GCOMP_HAVE_CUDA

void cuda_ok(cudaError_t err, const char* what) {
  if (err != cudaSuccess) throw std::runtime_error(std::string(what) + ": " + cudaGetErrorString(err));
}
#define BENCH_CUDA(call) cuda_ok((call), #call)

class DeviceMem {
 public:
  explicit DeviceMem(size_t bytes) {
    if (bytes > 0) BENCH_CUDA(cudaMalloc(&p_, bytes));
  }
  ~DeviceMem() {
    if (p_ != nullptr) static_cast<void>(cudaFree(p_));
  }
  DeviceMem(const DeviceMem&) = delete;
  DeviceMem& operator=(const DeviceMem&) = delete;
  [[nodiscard]] float* floats() const { return static_cast<float*>(p_); }

 private:
  void* p_ = nullptr;
};

struct GpuRank {
  cudaStream_t stream = nullptr;
  explicit GpuRank() { BENCH_CUDA(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking)); }
  ~GpuRank() { static_cast<void>(cudaStreamDestroy(stream)); }
  GpuRank(const GpuRank&) = delete;
  GpuRank& operator=(const GpuRank&) = delete;
};

// Every copy is ordered on the rank's non-blocking stream and waited for.
std::unique_ptr<DeviceMem> upload_input(int64_t n, uint64_t seed, int rank, cudaStream_t stream) {
  const std::vector<float> x = make_input(n, rank_seed(seed, rank));
  auto d = std::make_unique<DeviceMem>(x.size() * sizeof(float));
  BENCH_CUDA(cudaMemcpyAsync(d->floats(), x.data(), x.size() * sizeof(float), cudaMemcpyHostToDevice, stream));
  BENCH_CUDA(cudaStreamSynchronize(stream));
  return d;
}

std::vector<float> download(const float* d, int64_t n, cudaStream_t stream) {
  std::vector<float> h(static_cast<size_t>(n));
  BENCH_CUDA(cudaMemcpyAsync(h.data(), d, h.size() * sizeof(float), cudaMemcpyDeviceToHost, stream));
  BENCH_CUDA(cudaStreamSynchronize(stream));
  return h;
}

/// Elements outside the summation bound |y - ref| <= 2 P u sum_j |x_j| (u = 2^-24), for a
/// reduction in an order other than rank order.
int64_t count_tolerance_diff(std::span<const float> got, std::span<const float> want,
                             const std::vector<double>& abs_sum, int p) {
  int64_t w = 0;
  const double u = std::ldexp(1.0, -24);
  for (size_t i = 0; i < got.size(); ++i) {
    const double d = std::fabs(static_cast<double>(got[i]) - static_cast<double>(want[i]));
    if (!(d <= 2.0 * p * u * abs_sum[i])) ++w;
  }
  return w;
}

void gpu_allreduce(Communicator& comm, GpuRank& g, const Options& o, int64_t n, Row& row) {
  const int p = comm.size();
  const auto x = upload_input(n, o.seed, comm.rank(), g.stream);
  DeviceMem out(static_cast<size_t>(n) * sizeof(float));
  const auto iteration = [&] {
    const auto t0 = std::chrono::steady_clock::now();
    comm.allreduce(x->floats(), out.floats(), static_cast<size_t>(n), DataType::kF32, ReduceOp::kSum, g.stream);
    comm.synchronize(g.stream);
    const double t = us_since(t0);
    return IterTimes{t, 0, t, 0};
  };
  std::function<int64_t()> check;
  if (o.check && n * 4 <= o.check_max_bytes) {
    check = [&] {
      std::vector<double> abs_sum;
      const std::vector<float> want = reference_allreduce(n, p, o.seed, &abs_sum);
      return count_tolerance_diff(download(out.floats(), n, g.stream), want, abs_sum, p);
    };
  }
  row.payload_bytes = static_cast<double>(n) * 4;
  row.wire_bytes = p > 1 ? 2.0 * (p - 1) / p * static_cast<double>(n) * 4 : 0.0;
  time_and_gather(comm, o, iteration, check, row);
}

/// Session steps on the cuda backend over the nccl communicator: step_device on the rank's stream,
/// timed to the end of the stream's work; the phases come from CUDA events (time_phases). A codec
/// data error recorded on the device (Session::device_status) counts as wrong.
void gpu_session(Communicator& comm, GpuRank& g, const Options& o, const std::string& kind, const std::string& codec,
                 int64_t n, Row& row) {
  const auto x = upload_input(n, o.seed, comm.rank(), g.stream);
  DeviceMem out(static_cast<size_t>(n) * sizeof(float));
  Session session(comm, Layout(n), row_config(kind, codec, o.seed, gcomp::Backend::kCuda));
  StepStats last;
  const auto iteration = [&] {
    const auto t0 = std::chrono::steady_clock::now();
    last = session.step_device(x->floats(), GradType::kF32, out.floats(), g.stream);
    comm.synchronize(g.stream);
    return phases_of(last, us_since(t0));
  };
  const auto check = session_check(o, kind, codec, n, comm.size(), [&] { return download(out.floats(), n, g.stream); });
  std::function<int64_t()> checked;
  if (check) checked = [&] { return (session.device_status() == gcompSuccess ? 0 : 1) + check(); };
  time_and_gather(comm, o, iteration, checked, row);
  row.payload_bytes = static_cast<double>(last.bytes_up);
  row.wire_bytes = static_cast<double>(last.bytes_received);
}

std::string gpu_device_name(int device) {
  cudaDeviceProp prop{};
  BENCH_CUDA(cudaGetDeviceProperties(&prop, device));
  return std::string(prop.name) + " (sm_" + std::to_string(prop.major) + std::to_string(prop.minor) + ")";
}

#endif  // GCOMP_HAVE_NCCL && GCOMP_HAVE_CUDA

// ------------------------------------------------------------------------------- output

double gbps(double bytes, double us) { return us > 0 ? bytes / (us * 1e3) : 0.0; }

struct Derived {
  double algbw, busbw, ratio, bits, eff_busbw;
};

Derived derive(const Row& r, int p) {
  Derived d{};
  const double in_bytes = static_cast<double>(r.bytes);
  d.algbw = gbps(in_bytes, r.time.median);
  d.busbw = gbps(r.wire_bytes, r.time.median);
  if (!r.codec.empty()) d.busbw = gbps(r.wire_bytes, r.comm.median);
  d.ratio = r.payload_bytes > 0 ? in_bytes / r.payload_bytes : 0.0;
  d.bits = r.count > 0 ? 8.0 * r.payload_bytes / static_cast<double>(r.count) : 0.0;
  d.eff_busbw = p > 1 ? d.algbw * 2.0 * (p - 1) / p : 0.0;
  return d;
}

int algo_width(const Options& o) {
  size_t w = std::strlen("allreduce");
  for (const auto& c : o.codecs) w = std::max(w, std::strlen("allgather+") + c.size());
  return static_cast<int>(w);
}

void print_columns(int aw) {
  std::printf("#\n# %10s %12s %6s %-*s %10s %8s %8s %7s | %8s %8s %10s %10s %10s %9s\n", "size", "count", "type", aw,
              "algo", "time", "algbw", "busbw", "#wrong", "ratio", "bits/el", "enc_us", "comm_us", "dec_us",
              "eff_busbw");
  std::printf("# %10s %12s %6s %-*s %10s %8s %8s %7s | %8s %8s %10s %10s %10s %9s\n", "(B)", "(elements)", "", aw, "",
              "(us)", "(GB/s)", "(GB/s)", "", "", "", "(us)", "(us)", "(us)", "(GB/s)");
}

void print_row(const Row& r, int p, int aw) {
  if (!r.skipped.empty()) {
    std::printf("# %10lld %12lld %6s %-*s skipped: %s\n", static_cast<long long>(r.bytes),
                static_cast<long long>(r.count), "float", aw, r.algo.c_str(), r.skipped.c_str());
    std::fflush(stdout);
    return;
  }
  const Derived d = derive(r, p);
  char wrong[32];
  if (r.wrong < 0)
    std::snprintf(wrong, sizeof wrong, "N/A");
  else
    std::snprintf(wrong, sizeof wrong, "%lld", static_cast<long long>(r.wrong));
  std::printf("  %10lld %12lld %6s %-*s %10.1f %8.3f %8.3f %7s | %8.2f %8.3f %10.1f %10.1f %10.1f %9.3f\n",
              static_cast<long long>(r.bytes), static_cast<long long>(r.count), "float", aw, r.algo.c_str(),
              r.time.median, d.algbw, d.busbw, wrong, d.ratio, d.bits, r.enc.median, r.comm.median, r.dec.median,
              d.eff_busbw);
  std::fflush(stdout);
}

std::string row_json(const Row& r, int p) {
  JsonObject j;
  j.integer("size_bytes", r.bytes).integer("count", r.count).str("type", "float").str("algo", r.algo);
  j.str("codec", r.codec.empty() ? "fp32" : r.codec);
  if (!r.skipped.empty()) {
    j.str("skipped", r.skipped);
    return j.dump("    ");
  }
  const Derived d = derive(r, p);
  j.num("time_us", r.time.median).num("time_us_min", r.time.min).num("time_us_max", r.time.max);
  j.num("algbw_gbps", d.algbw).num("busbw_gbps", d.busbw);
  if (r.wrong < 0)
    j.raw("wrong", "null");
  else
    j.integer("wrong", r.wrong);
  j.num("ratio", d.ratio).num("bits_per_elem", d.bits);
  j.num("enc_us", r.enc.median).num("comm_us", r.comm.median).num("dec_us", r.dec.median);
  j.num("eff_busbw_gbps", d.eff_busbw);
  j.num("payload_bytes", r.payload_bytes).num("wire_bytes", r.wire_bytes);
  return j.dump("    ");
}

// ------------------------------------------------------------------------------- driver

struct RunInfo {
  std::string backend;
  std::string device;
  std::string memory;
};

/// The whole sweep on one rank. Rank 0 prints and collects the rows.
int64_t run_rank(Communicator& comm, const Options& o, const RunInfo& info, int argc, char** argv,
                 std::vector<Row>* rows_out,
                 const std::function<void(Row&, int64_t, const std::string&, const std::string&)>& run_row) {
  const bool lead = comm.rank() == 0;
  const int p = comm.size();
  const int aw = algo_width(o);
  if (lead) {
    std::printf("# gcomp-bench comm: backend %s, ranks %d, %s buffers, device %s\n", info.backend.c_str(), p,
                info.memory.c_str(), info.device.c_str());
    std::printf("# codec%s:", o.codecs.size() > 1 ? "s" : "");
    for (const auto& c : o.codecs) std::printf(" %s", CodecSpec::parse(c).canonical().c_str());
    std::printf("\n# iters %d, warmup %d, check %d (max %lld B), seed %llu\n", o.iters, o.warmup, o.check ? 1 : 0,
                static_cast<long long>(o.check_max_bytes), static_cast<unsigned long long>(o.seed));
    std::printf("# command: gcomp-bench %s\n# git: %s\n", command_line(argc, argv).c_str(),
                git_sha(GCOMP_SOURCE_DIR).c_str());
    std::printf(
        "# rows: allreduce = Communicator::allreduce (fp32); allgather+CODEC = a Session step of compressed-gd,\n"
        "# twoway+CODEC = a Session step of doublesqueeze with the sharded server (lr 1, session backend %s,\n"
        "# nonfinite=error: %s; dec_us = decode + update)\n",
        info.memory == "device" ? "cuda" : "host-f32",
        info.memory == "device" ? "the step's non-finite agreement (an allreduce) is part of comm_us"
                                : "the non-finite agreement rides on the exchange's status words");
    std::printf(
        "# time: median over iterations of the max over ranks; algbw = size/time; busbw = bytes a rank\n"
        "# sends to peers / time (compressed rows: / comm_us); eff_busbw = 2(P-1)/P * algbw, the busbw an\n"
        "# uncompressed allreduce would need to take `time`; ratio = size / compressed bytes per rank\n");
    print_columns(aw);
    std::fflush(stdout);
  }
  int64_t total_wrong = 0;
  for (double b = static_cast<double>(o.min_bytes); b <= static_cast<double>(o.max_bytes) * 1.0000001; b *= o.factor) {
    const int64_t n = static_cast<int64_t>(b) / 4;
    if (n < p) {
      if (lead) std::printf("# %lld bytes: fewer elements than ranks, skipped\n", static_cast<long long>(n * 4));
      continue;
    }
    std::vector<std::pair<std::string, std::string>> algos = {{"allreduce", ""}};
    for (const auto& c : o.codecs) {
      algos.emplace_back("allgather+" + c, c);
      algos.emplace_back("twoway+" + c, c);
    }
    for (const auto& [algo, codec] : algos) {
      Row row;
      row.algo = algo;
      row.codec = codec;
      row.bytes = n * 4;
      row.count = n;
      run_row(row, n, algo.substr(0, algo.find('+')), codec);
      if (row.wrong > 0) total_wrong += row.wrong;
      if (lead) {
        print_row(row, p, aw);
        if (rows_out != nullptr) rows_out->push_back(row);
      }
    }
  }
  if (lead) std::printf("# total #wrong: %lld\n", static_cast<long long>(total_wrong));
  return total_wrong;
}

/// Runs one row on CPU buffers; a codec that does not fit the layout is skipped on every rank.
void run_cpu_row(Communicator& comm, const Options& o, Row& row, int64_t n, const std::string& kind,
                 const std::string& codec) {
  try {
    if (kind == "allreduce")
      cpu_allreduce(comm, o, n, row);
    else
      cpu_session(comm, o, kind, codec, n, row);
  } catch (const Error& e) {
    if (e.status() != gcompErrorInvalidArgument && e.status() != gcompErrorNotSupported) throw;
    row.skipped = e.what();
  }
}

bool write_json(const Options& o, const RunInfo& info, int p, const std::vector<Row>& rows, int argc, char** argv) {
  std::string recs = "[";
  for (size_t i = 0; i < rows.size(); ++i) recs += (i ? ",\n    " : "\n    ") + row_json(rows[i], p);
  recs += "\n  ]";
  std::string codecs = "[";
  for (size_t i = 0; i < o.codecs.size(); ++i)
    codecs += (i ? ", \"" : "\"") + json_escape(CodecSpec::parse(o.codecs[i]).canonical()) + "\"";
  codecs += "]";
  JsonObject top;
  top.str("tool", "gcomp-bench comm").str("command", "gcomp-bench " + command_line(argc, argv));
  top.str("git_sha", git_sha(GCOMP_SOURCE_DIR)).str("backend", info.backend).integer("ranks", p);
  top.str("device", info.device).str("memory", info.memory).integer("seed", static_cast<int64_t>(o.seed));
  top.integer("iters", o.iters).integer("warmup", o.warmup).integer("check", o.check ? 1 : 0);
  top.raw("codecs", codecs).raw("records", recs);
  return write_json_file(o.json, top, "gcomp-bench comm");
}

/// Host bytes the local backend holds at once at the largest size: per rank its input and output,
/// its Session (host-f32: at most 5 work and state vectors of n floats for doublesqueeze, and the
/// own and P gathered messages twice for the two-way rows), and when the row is checked the
/// reference, computed once for all thread ranks (the P inputs and P error memories of the two-way
/// reference, its server error and result).
uint64_t local_footprint(const Options& o, int p) {
  const uint64_t n = static_cast<uint64_t>(o.max_bytes) / 4;
  uint64_t msg = 0;
  for (const auto& c : o.codecs)
    msg = std::max<uint64_t>(msg, make_codec(c, Layout(static_cast<int64_t>(n)))->encoded_bytes());
  const auto P = static_cast<uint64_t>(p);
  const long double per_rank = 4.0L * n * 7 + 2.0L * (P + 1) * (msg + 4);
  const long double reference = o.check && o.max_bytes <= o.check_max_bytes ? 4.0L * n * (2.0L * P + 2) : 0.0L;
  const long double total = per_rank * P + reference;
  return total >= 1.8e19L ? UINT64_MAX : static_cast<uint64_t>(total);
}

int run_cpu_backend(const Options& o, int argc, char** argv) {
  std::vector<Row> rows;
  int64_t wrong = 0;
  int p = 0;
  bool lead = true;
  if (o.backend == Backend::kLocal) {
    p = o.ranks > 0 ? o.ranks : 4;
    io::check_allocation(local_footprint(o, p), "gcomp-bench comm with " + std::to_string(p) +
                                                    " local ranks (--ranks) up to " + std::to_string(o.max_bytes) +
                                                    " bytes per rank (-e)");
    const RunInfo info{"local", "cpu (" + std::to_string(std::thread::hardware_concurrency()) + " hardware threads)",
                       "host"};
    run_local(p, [&](Communicator& comm) {
      const int64_t w = run_rank(comm, o, info, argc, argv, comm.rank() == 0 ? &rows : nullptr,
                                 [&](Row& row, int64_t n, const std::string& kind, const std::string& codec) {
                                   run_cpu_row(comm, o, row, n, kind, codec);
                                 });
      if (comm.rank() == 0) wrong = w;
    });
    if (!o.json.empty() && !write_json(o, info, p, rows, argc, argv)) return 1;
  } else {
    const auto comm = make_mpi_world();
    p = comm->size();
    lead = comm->rank() == 0;
    if (o.ranks > 0 && o.ranks != p && lead)
      std::printf("# --ranks %d ignored: the mpi world has %d ranks\n", o.ranks, p);
    char host[256] = {0};
    if (gethostname(host, sizeof host - 1) != 0) std::snprintf(host, sizeof host, "unknown");
    const RunInfo info{"mpi", std::string("cpu, host ") + host, "host"};
    wrong = run_rank(*comm, o, info, argc, argv, lead ? &rows : nullptr,
                     [&](Row& row, int64_t n, const std::string& kind, const std::string& codec) {
                       run_cpu_row(*comm, o, row, n, kind, codec);
                     });
    if (lead && !o.json.empty() && !write_json(o, info, p, rows, argc, argv)) return 1;
  }
  return wrong > 0 ? 1 : 0;
}

#if defined(GCOMP_HAVE_NCCL) && GCOMP_HAVE_NCCL && defined(GCOMP_HAVE_CUDA) && GCOMP_HAVE_CUDA

void run_gpu_row(Communicator& comm, GpuRank& g, const Options& o, Row& row, int64_t n, const std::string& kind,
                 const std::string& codec) {
  try {
    if (kind == "allreduce")
      gpu_allreduce(comm, g, o, n, row);
    else
      gpu_session(comm, g, o, kind, codec, n, row);
  } catch (const Error& e) {
    // Thrown at the Session's construction on every rank alike (a codec that does not fit the
    // layout, or has no kernels).
    if (e.status() != gcompErrorInvalidArgument && e.status() != gcompErrorNotSupported) throw;
    row.skipped = e.what();
  }
}

/// One nccl rank: its device is current on the calling thread.
int64_t nccl_rank(Communicator& comm, const Options& o, const RunInfo& info, int argc, char** argv,
                  std::vector<Row>* rows) {
  GpuRank g;
  return run_rank(comm, o, info, argc, argv, rows,
                  [&](Row& row, int64_t n, const std::string& kind, const std::string& codec) {
                    run_gpu_row(comm, g, o, row, n, kind, codec);
                  });
}

bool launched_per_process() {
  using gcomp::detail::EnvVarId;
  return gcomp::detail::env_string(EnvVarId::kWorldSize) || gcomp::detail::env_string(EnvVarId::kOmpiCommWorldSize) ||
         gcomp::detail::env_string(EnvVarId::kPmiSize);
}

int run_nccl_backend(const Options& o, int argc, char** argv) {
  int devices = 0;
  BENCH_CUDA(cudaGetDeviceCount(&devices));
  if (devices < 1) throw std::runtime_error("--backend nccl: no CUDA device");
  std::vector<Row> rows;
  if (launched_per_process()) {
    // One rank per process (mpiexec / torchrun / RANK+WORLD_SIZE): the launcher decides.
    const auto comm = make_nccl_communicator();
    // The communicator picked LOCAL_RANK (or OMPI_COMM_WORLD_LOCAL_RANK), else rank mod #devices
    // (NcclOptions::device = -1); make the same device current for the buffers and codecs.
    using gcomp::detail::EnvVarId;
    std::optional<int64_t> local = gcomp::detail::env_int(EnvVarId::kLocalRank);
    if (!local) local = gcomp::detail::env_int(EnvVarId::kOmpiCommWorldLocalRank);
    const int dev = local ? static_cast<int>(*local) : comm->rank() % devices;
    BENCH_CUDA(cudaSetDevice(dev));
    const bool lead = comm->rank() == 0;
    const RunInfo info{"nccl", gpu_device_name(dev) + ", one rank per process", "device"};
    const int64_t wrong = nccl_rank(*comm, o, info, argc, argv, lead ? &rows : nullptr);
    if (lead && !o.json.empty() && !write_json(o, info, comm->size(), rows, argc, argv)) return 1;
    return wrong > 0 ? 1 : 0;
  }
  // Thread ranks in this process, rank r on device r mod #devices, file bootstrap of the NCCL id.
  // NCCL refuses two ranks on one device ("Duplicate GPU detected"), so P <= #devices in practice.
  const int p = o.ranks > 0 ? o.ranks : devices;
  const std::string id_file = "/tmp/gcomp-bench-nccl-id-" + std::to_string(::getpid());
  const RunInfo info{"nccl",
                     gpu_device_name(0) + ", " + std::to_string(p) + " thread ranks on " +
                         std::to_string(std::min(p, devices)) + " of " + std::to_string(devices) + " devices",
                     "device"};
  std::vector<std::thread> threads;
  std::vector<std::string> errors(static_cast<size_t>(p));
  std::vector<int64_t> wrong(static_cast<size_t>(p), 0);
  for (int r = 0; r < p; ++r) {
    threads.emplace_back([&, r] {
      try {
        BENCH_CUDA(cudaSetDevice(r % devices));
        NcclOptions opt;
        opt.bootstrap = NcclBootstrap::kFile;
        opt.rank = r;
        opt.world_size = p;
        opt.device = r % devices;
        opt.id_file = id_file;
        const auto comm = make_nccl_communicator(opt);
        wrong[static_cast<size_t>(r)] = nccl_rank(*comm, o, info, argc, argv, r == 0 ? &rows : nullptr);
      } catch (const std::exception& e) {
        errors[static_cast<size_t>(r)] = e.what();
      }
    });
  }
  for (auto& t : threads) t.join();
  std::remove(id_file.c_str());
  for (int r = 0; r < p; ++r) {
    if (!errors[static_cast<size_t>(r)].empty())
      throw std::runtime_error("rank " + std::to_string(r) + ": " + errors[static_cast<size_t>(r)]);
  }
  if (!o.json.empty() && !write_json(o, info, p, rows, argc, argv)) return 1;
  return wrong[0] > 0 ? 1 : 0;
}

#endif  // GCOMP_HAVE_NCCL

}  // namespace

int run_comm(int argc, char** argv) {
  Options o;
  try {
    if (!parse_options(argc, argv, o)) return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "gcomp-bench comm: %s\n", e.what());
    return 2;
  }
  if (o.backend != Backend::kNccl) return run_cpu_backend(o, argc, argv);
#if defined(GCOMP_HAVE_NCCL) && GCOMP_HAVE_NCCL && defined(GCOMP_HAVE_CUDA) && GCOMP_HAVE_CUDA
  return run_nccl_backend(o, argc, argv);
#else
  std::fprintf(stderr,
               "gcomp-bench comm: --backend nccl needs a build with CUDA and NCCL (-DGCOMP_CUDA=ON, NCCL next to "
               "the CUDA toolkit)\n");
  return 2;
#endif
}

}  // namespace gcomp::bench
