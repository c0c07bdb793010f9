// SPDX-License-Identifier: Apache-2.0
// `gcomp-bench comm`: nccl-tests style collective table for compressed gradient exchange
// (STYLE.md §9, project issue 4 item 7).
//
// For each size (bytes of fp32 input, -b to -e times -f) three kinds of rows:
//   allreduce          uncompressed fp32 Communicator::allreduce (the baseline)
//   allgather+CODEC    encode, allgather the payloads, decode-reduce them in rank order
//   twoway+CODEC       the sharded server of docs/algorithms.md: encode shard s for its owner,
//                      alltoall, owner decode-reduces its shard and re-encodes it (downlink key),
//                      allgather of the shard messages, decode into the full vector
// Every iteration starts with a barrier; each rank times its phases (std::chrono on the CPU
// backends, CUDA events on nccl); per iteration the max over ranks is taken, then the median over
// the -n timed iterations. #wrong counts the elements (summed over ranks) whose result differs from
// an independent CPU reference recomputed on every rank from the inputs with the CPU codecs in rank
// order: bitwise for the compressed rows and for the fp32 allreduce on local/mpi (which reduce in
// rank order); nccl's allreduce is compared with a summation error bound (NCCL does not reduce in
// rank order). #wrong > 0 makes the run exit 1.
#include "bench/bench_common.hpp"

#include <gcomp/codec.hpp>
#include <gcomp/comm.hpp>
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
      if (b == "local") o.backend = Backend::kLocal;
      else if (b == "mpi") o.backend = Backend::kMpi;
      else if (b == "nccl") o.backend = Backend::kNccl;
      else throw std::invalid_argument("--backend must be local, mpi or nccl, got '" + b + "'");
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

/// Input of rank j: a distinct deterministic stream per rank (splitmix-mixed start state).
uint64_t rank_seed(uint64_t seed, int rank) {
  uint64_t z = seed + 0x9e3779b97f4a7c15ull * static_cast<uint64_t>(rank + 1);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

constexpr uint32_t kStep = 1;  // RNG step of every message (the output of any iteration is the same)

size_t round_up4(size_t b) { return (b + 3) / 4 * 4; }

/// Shards of the sharded server: shard s = [floor(s n / P), floor((s+1) n / P)).
std::vector<int64_t> shard_offsets(int64_t n, int p) {
  std::vector<int64_t> off(static_cast<size_t>(p) + 1);
  for (int s = 0; s <= p; ++s) off[static_cast<size_t>(s)] = n * s / p;
  return off;
}

RngKey uplink_key(uint64_t seed, int rank) { return RngKey{seed, static_cast<uint32_t>(rank), kStep, 0}; }
/// docs/algorithms.md: shard s uses stream offset 16(s+1), +8 on the downlink (encoded by rank s).
RngKey shard_key(uint64_t seed, int rank, int shard, bool downlink) {
  return RngKey{seed, static_cast<uint32_t>(rank), kStep, 16u * static_cast<uint32_t>(shard + 1) + (downlink ? 8u : 0u)};
}

// ------------------------------------------------------------------------------- CPU reference

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

/// out = 0; out += decode(encode(x_j)) for j = 0..P-1, with the CPU codec.
std::vector<float> reference_allgather(const std::string& spec, int64_t n, int p, uint64_t seed) {
  const auto codec = make_codec(spec, Layout(n));
  std::vector<float> out(static_cast<size_t>(n), 0.0f);
  std::vector<uint8_t> payload(codec->encoded_bytes());
  for (int j = 0; j < p; ++j) {
    const std::vector<float> x = make_input(n, rank_seed(seed, j));
    codec->encode(x, uplink_key(seed, j), payload);
    codec->decode_accumulate(payload, uplink_key(seed, j), 1.0f, out);
  }
  return out;
}

/// The sharded two-way exchange computed on one CPU.
std::vector<float> reference_twoway(const std::string& spec, int64_t n, int p, uint64_t seed) {
  const std::vector<int64_t> off = shard_offsets(n, p);
  std::vector<std::vector<float>> inputs;
  for (int j = 0; j < p; ++j) inputs.push_back(make_input(n, rank_seed(seed, j)));
  std::vector<float> out(static_cast<size_t>(n), 0.0f);
  for (int s = 0; s < p; ++s) {
    const int64_t len = off[static_cast<size_t>(s) + 1] - off[static_cast<size_t>(s)];
    const auto codec = make_codec(spec, Layout(len));
    std::vector<uint8_t> payload(codec->encoded_bytes());
    std::vector<float> sum(static_cast<size_t>(len), 0.0f);
    for (int j = 0; j < p; ++j) {
      const std::span<const float> xs(inputs[static_cast<size_t>(j)].data() + off[static_cast<size_t>(s)],
                                      static_cast<size_t>(len));
      codec->encode(xs, shard_key(seed, j, s, false), payload);
      codec->decode_accumulate(payload, shard_key(seed, j, s, false), 1.0f, sum);
    }
    codec->encode(sum, shard_key(seed, s, s, true), payload);
    codec->decode(payload, shard_key(seed, s, s, true),
                  std::span<float>(out.data() + off[static_cast<size_t>(s)], static_cast<size_t>(len)));
  }
  return out;
}

int64_t count_bitwise_diff(std::span<const float> got, std::span<const float> want) {
  if (got.size() != want.size()) return static_cast<int64_t>(std::max(got.size(), want.size()));
  int64_t w = 0;
  for (size_t i = 0; i < got.size(); ++i) w += std::memcmp(&got[i], &want[i], sizeof(float)) != 0;
  return w;
}

// ------------------------------------------------------------------------------- timing

/// Which column a stage's time goes to.
enum Phase { kEnc = 0, kComm = 1, kDec = 2 };

struct Stage {
  Phase phase;
  std::function<void()> run;
};

/// Times a sequence of stages: CPU wall clock or CUDA events on a stream.
class StageTimer {
 public:
  virtual ~StageTimer() = default;
  /// Runs the stages and returns the time of each phase (microseconds).
  virtual std::array<double, 3> run(const std::vector<Stage>& stages) = 0;
};

class CpuTimer final : public StageTimer {
 public:
  std::array<double, 3> run(const std::vector<Stage>& stages) override {
    std::array<double, 3> t{0, 0, 0};
    auto prev = std::chrono::steady_clock::now();
    for (const Stage& s : stages) {
      s.run();
      const auto now = std::chrono::steady_clock::now();
      t[s.phase] += std::chrono::duration<double, std::micro>(now - prev).count();
      prev = now;
    }
    return t;
  }
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
void time_and_gather(Communicator& comm, StageTimer& timer, const Options& o, const std::vector<Stage>& stages,
                     const std::function<int64_t()>& check, Row& row) {
  const int it_total = o.warmup + o.iters;
  std::vector<double> mine(static_cast<size_t>(o.iters) * 3 + 1, 0.0);
  for (int it = 0; it < it_total; ++it) {
    comm.barrier();
    const std::array<double, 3> t = timer.run(stages);
    if (it < o.warmup) continue;
    for (int ph = 0; ph < 3; ++ph) mine[static_cast<size_t>(it - o.warmup) * 3 + static_cast<size_t>(ph)] = t[static_cast<size_t>(ph)];
  }
  mine.back() = check ? static_cast<double>(check()) : -1.0;
  const size_t p = static_cast<size_t>(comm.size());
  std::vector<double> all(mine.size() * p);
  comm.host_allgather(mine.data(), all.data(), mine.size() * sizeof(double));
  std::vector<double> tot, enc, com, dec;
  for (size_t it = 0; it < static_cast<size_t>(o.iters); ++it) {
    std::array<double, 3> mx{0, 0, 0};
    double total = 0;
    for (size_t r = 0; r < p; ++r) {
      const double* v = &all[r * mine.size() + it * 3];
      for (size_t ph = 0; ph < 3; ++ph) mx[ph] = std::max(mx[ph], v[ph]);
      total = std::max(total, v[0] + v[1] + v[2]);
    }
    tot.push_back(total);
    enc.push_back(mx[0]);
    com.push_back(mx[1]);
    dec.push_back(mx[2]);
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

// ------------------------------------------------------------------------------- CPU rows

void cpu_allreduce(Communicator& comm, const Options& o, int64_t n, Row& row) {
  const int rank = comm.rank();
  const int p = comm.size();
  const std::vector<float> x = make_input(n, rank_seed(o.seed, rank));
  std::vector<float> out(static_cast<size_t>(n));
  CpuTimer timer;
  const std::vector<Stage> stages = {
      {kComm, [&] { comm.allreduce(x.data(), out.data(), static_cast<size_t>(n), DataType::kF32, ReduceOp::kSum, nullptr); }}};
  std::function<int64_t()> check;
  if (o.check && n * 4 <= o.check_max_bytes)
    check = [&] { return count_bitwise_diff(out, reference_allreduce(n, p, o.seed, nullptr)); };
  row.payload_bytes = static_cast<double>(n) * 4;
  row.wire_bytes = p > 1 ? 2.0 * (p - 1) / p * static_cast<double>(n) * 4 : 0.0;
  time_and_gather(comm, timer, o, stages, check, row);
}

void cpu_allgather(Communicator& comm, const Options& o, const std::string& spec, int64_t n, Row& row) {
  const int rank = comm.rank();
  const int p = comm.size();
  const auto codec = make_codec(spec, Layout(n));
  const size_t bytes = codec->encoded_bytes();
  const size_t stride = round_up4(bytes);
  const std::vector<float> x = make_input(n, rank_seed(o.seed, rank));
  std::vector<uint8_t> payload(stride, 0), all(stride * static_cast<size_t>(p));
  std::vector<float> out(static_cast<size_t>(n));
  CpuTimer timer;
  const std::vector<Stage> stages = {
      {kEnc, [&] { codec->encode(x, uplink_key(o.seed, rank), std::span<uint8_t>(payload.data(), bytes)); }},
      {kComm, [&] { comm.allgather(payload.data(), all.data(), stride, nullptr); }},
      {kDec,
       [&] {
         std::fill(out.begin(), out.end(), 0.0f);
         for (int j = 0; j < p; ++j)
           codec->decode_accumulate(std::span<const uint8_t>(all.data() + static_cast<size_t>(j) * stride, bytes),
                                    uplink_key(o.seed, j), 1.0f, out);
       }},
  };
  std::function<int64_t()> check;
  if (o.check && n * 4 <= o.check_max_bytes)
    check = [&] { return count_bitwise_diff(out, reference_allgather(spec, n, p, o.seed)); };
  row.payload_bytes = static_cast<double>(bytes);
  row.wire_bytes = static_cast<double>(p - 1) * static_cast<double>(stride);
  time_and_gather(comm, timer, o, stages, check, row);
}

void cpu_twoway(Communicator& comm, const Options& o, const std::string& spec, int64_t n, Row& row) {
  const int rank = comm.rank();
  const int p = comm.size();
  const std::vector<int64_t> off = shard_offsets(n, p);
  std::vector<std::unique_ptr<Codec>> codecs;
  size_t stride = 0;
  double payload_bytes = 0;
  for (int s = 0; s < p; ++s) {
    codecs.push_back(make_codec(spec, Layout(off[static_cast<size_t>(s) + 1] - off[static_cast<size_t>(s)])));
    stride = std::max(stride, round_up4(codecs.back()->encoded_bytes()));
    payload_bytes += static_cast<double>(codecs.back()->encoded_bytes());
  }
  const auto shard_x = [&](std::vector<float>& v, int s) {
    return std::span<float>(v.data() + off[static_cast<size_t>(s)],
                            static_cast<size_t>(off[static_cast<size_t>(s) + 1] - off[static_cast<size_t>(s)]));
  };
  const auto block = [&](std::vector<uint8_t>& v, int j, int s) {
    return std::span<uint8_t>(v.data() + static_cast<size_t>(j) * stride, codecs[static_cast<size_t>(s)]->encoded_bytes());
  };
  std::vector<float> x = make_input(n, rank_seed(o.seed, rank));
  std::vector<uint8_t> send(stride * static_cast<size_t>(p), 0), recv(send.size()), down(stride, 0), all(send.size());
  std::vector<float> sum(static_cast<size_t>(off[static_cast<size_t>(rank) + 1] - off[static_cast<size_t>(rank)]));
  std::vector<float> out(static_cast<size_t>(n));
  const Codec& mine = *codecs[static_cast<size_t>(rank)];
  CpuTimer timer;
  const std::vector<Stage> stages = {
      {kEnc,
       [&] {
         for (int s = 0; s < p; ++s)
           codecs[static_cast<size_t>(s)]->encode(shard_x(x, s), shard_key(o.seed, rank, s, false), block(send, s, s));
       }},
      {kComm, [&] { comm.alltoall(send.data(), recv.data(), stride, nullptr); }},
      {kDec,
       [&] {
         std::fill(sum.begin(), sum.end(), 0.0f);
         for (int j = 0; j < p; ++j) mine.decode_accumulate(block(recv, j, rank), shard_key(o.seed, j, rank, false), 1.0f, sum);
       }},
      {kEnc, [&] { mine.encode(sum, shard_key(o.seed, rank, rank, true), std::span<uint8_t>(down.data(), mine.encoded_bytes())); }},
      {kComm, [&] { comm.allgather(down.data(), all.data(), stride, nullptr); }},
      {kDec,
       [&] {
         for (int j = 0; j < p; ++j)
           codecs[static_cast<size_t>(j)]->decode(block(all, j, j), shard_key(o.seed, j, j, true), shard_x(out, j));
       }},
  };
  std::function<int64_t()> check;
  if (o.check && n * 4 <= o.check_max_bytes)
    check = [&] { return count_bitwise_diff(out, reference_twoway(spec, n, p, o.seed)); };
  row.payload_bytes = payload_bytes;
  row.wire_bytes = 2.0 * static_cast<double>(p - 1) * static_cast<double>(stride);
  time_and_gather(comm, timer, o, stages, check, row);
}

// ------------------------------------------------------------------------------- GPU rows (nccl, DeviceCodec)

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
  [[nodiscard]] uint8_t* bytes() const { return static_cast<uint8_t*>(p_); }
  [[nodiscard]] float* floats() const { return static_cast<float*>(p_); }

 private:
  void* p_ = nullptr;
};

/// CUDA events around every stage on one stream; the comm's synchronize() waits (with the
/// communicator's timeout and NCCL error checks) before the events are read.
class GpuTimer final : public StageTimer {
 public:
  GpuTimer(Communicator& comm, cudaStream_t stream) : comm_(comm), stream_(stream) {
    for (auto& e : events_) BENCH_CUDA(cudaEventCreate(&e));
  }
  ~GpuTimer() override {
    for (auto& e : events_) static_cast<void>(cudaEventDestroy(e));
  }
  GpuTimer(const GpuTimer&) = delete;
  GpuTimer& operator=(const GpuTimer&) = delete;

  std::array<double, 3> run(const std::vector<Stage>& stages) override {
    if (stages.size() + 1 > events_.size()) throw std::logic_error("GpuTimer: too many stages");
    BENCH_CUDA(cudaEventRecord(events_[0], stream_));
    for (size_t i = 0; i < stages.size(); ++i) {
      stages[i].run();
      BENCH_CUDA(cudaEventRecord(events_[i + 1], stream_));
    }
    comm_.synchronize(stream_);
    std::array<double, 3> t{0, 0, 0};
    for (size_t i = 0; i < stages.size(); ++i) {
      float ms = 0;
      BENCH_CUDA(cudaEventElapsedTime(&ms, events_[i], events_[i + 1]));
      t[stages[i].phase] += 1e3 * static_cast<double>(ms);
    }
    return t;
  }

 private:
  Communicator& comm_;
  cudaStream_t stream_;
  std::array<cudaEvent_t, 8> events_{};
};

struct GpuRank {
  cudaStream_t stream = nullptr;
  explicit GpuRank() { BENCH_CUDA(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking)); }
  ~GpuRank() { static_cast<void>(cudaStreamDestroy(stream)); }
  GpuRank(const GpuRank&) = delete;
  GpuRank& operator=(const GpuRank&) = delete;
};

// Every copy and memset is ordered on the rank's non-blocking stream (the legacy default stream
// of cudaMemcpy/cudaMemset would not order with it) and waited for.
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

void zero(const DeviceMem& m, size_t bytes, cudaStream_t stream) {
  BENCH_CUDA(cudaMemsetAsync(m.bytes(), 0, bytes, stream));
  BENCH_CUDA(cudaStreamSynchronize(stream));
}

/// Elements outside the summation bound |y - ref| <= 2 P u sum_j |x_j| (u = 2^-24), for a
/// reduction in an order other than rank order.
int64_t count_tolerance_diff(std::span<const float> got, std::span<const float> want, const std::vector<double>& abs_sum,
                             int p) {
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
  GpuTimer timer(comm, g.stream);
  const std::vector<Stage> stages = {{kComm, [&] {
                                        comm.allreduce(x->floats(), out.floats(), static_cast<size_t>(n), DataType::kF32,
                                                       ReduceOp::kSum, g.stream);
                                      }}};
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
  time_and_gather(comm, timer, o, stages, check, row);
}

/// 1 when the workspace's status word reports a data error (the outputs are then untouched).
int64_t status_wrong(const DeviceMem& ws, cudaStream_t stream) {
  return cuda::read_status(ws.bytes(), stream) == gcompSuccess ? 0 : 1;
}

void gpu_allgather(Communicator& comm, GpuRank& g, const Options& o, const std::string& spec, int64_t n, Row& row) {
  const int rank = comm.rank();
  const int p = comm.size();
  const cuda::DeviceCodec codec(spec, Layout(n));
  const size_t bytes = codec.encoded_bytes();
  const size_t stride = round_up4(bytes);
  const size_t ws_bytes = codec.workspace_bytes();
  const auto x = upload_input(n, o.seed, rank, g.stream);
  DeviceMem payload(stride), all(stride * static_cast<size_t>(p)), out(static_cast<size_t>(n) * sizeof(float)), ws(ws_bytes);
  zero(payload, stride, g.stream);
  std::vector<RngKey> keys;  // payload j was encoded with rank j's key
  for (int j = 0; j < p; ++j) keys.push_back(uplink_key(o.seed, j));
  GpuTimer timer(comm, g.stream);
  const std::vector<Stage> stages = {
      {kEnc, [&] { codec.encode(x->floats(), uplink_key(o.seed, rank), payload.bytes(), ws.bytes(), ws_bytes, g.stream); }},
      {kComm, [&] { comm.allgather(payload.bytes(), all.bytes(), stride, g.stream); }},
      {kDec,
       [&] {
         codec.decode_reduce(all.bytes(), stride, p, nullptr, keys.data(), out.floats(), ws.bytes(), ws_bytes, g.stream);
       }},
  };
  std::function<int64_t()> check;
  if (o.check && n * 4 <= o.check_max_bytes) {
    check = [&] {
      return status_wrong(ws, g.stream) + count_bitwise_diff(download(out.floats(), n, g.stream), reference_allgather(spec, n, p, o.seed));
    };
  }
  row.payload_bytes = static_cast<double>(bytes);
  row.wire_bytes = static_cast<double>(p - 1) * static_cast<double>(stride);
  time_and_gather(comm, timer, o, stages, check, row);
}

void gpu_twoway(Communicator& comm, GpuRank& g, const Options& o, const std::string& spec, int64_t n, Row& row) {
  const int rank = comm.rank();
  const int p = comm.size();
  const std::vector<int64_t> off = shard_offsets(n, p);
  std::vector<cuda::DeviceCodec> codecs;
  size_t stride = 0, ws_bytes = 0;
  double payload_bytes = 0;
  for (int s = 0; s < p; ++s) {
    codecs.emplace_back(spec, Layout(off[static_cast<size_t>(s) + 1] - off[static_cast<size_t>(s)]));
    stride = std::max(stride, round_up4(codecs.back().encoded_bytes()));
    ws_bytes = std::max(ws_bytes, codecs.back().workspace_bytes());
    payload_bytes += static_cast<double>(codecs.back().encoded_bytes());
  }
  const auto x = upload_input(n, o.seed, rank, g.stream);
  const size_t total = stride * static_cast<size_t>(p);
  DeviceMem send(total), recv(total), down(stride), all(total), ws(ws_bytes);
  DeviceMem sum(static_cast<size_t>(off[static_cast<size_t>(rank) + 1] - off[static_cast<size_t>(rank)]) * sizeof(float));
  DeviceMem out(static_cast<size_t>(n) * sizeof(float));
  zero(send, total, g.stream);
  zero(down, stride, g.stream);
  const cuda::DeviceCodec& mine = codecs[static_cast<size_t>(rank)];
  const auto at = [&](const DeviceMem& m, int j) { return m.bytes() + static_cast<size_t>(j) * stride; };
  std::vector<RngKey> keys;  // rank j's message for this rank's shard
  for (int j = 0; j < p; ++j) keys.push_back(shard_key(o.seed, j, rank, false));
  GpuTimer timer(comm, g.stream);
  const std::vector<Stage> stages = {
      {kEnc,
       [&] {
         for (int s = 0; s < p; ++s)
           codecs[static_cast<size_t>(s)].encode(x->floats() + off[static_cast<size_t>(s)], shard_key(o.seed, rank, s, false),
                                                 at(send, s), ws.bytes(), ws_bytes, g.stream);
       }},
      {kComm, [&] { comm.alltoall(send.bytes(), recv.bytes(), stride, g.stream); }},
      {kDec,
       [&] {
         mine.decode_reduce(recv.bytes(), stride, p, nullptr, keys.data(), sum.floats(), ws.bytes(), ws_bytes, g.stream);
       }},
      {kEnc, [&] { mine.encode(sum.floats(), shard_key(o.seed, rank, rank, true), down.bytes(), ws.bytes(), ws_bytes, g.stream); }},
      {kComm, [&] { comm.allgather(down.bytes(), all.bytes(), stride, g.stream); }},
      {kDec,
       [&] {
         for (int j = 0; j < p; ++j)
           codecs[static_cast<size_t>(j)].decode(at(all, j), shard_key(o.seed, j, j, true),
                                                 out.floats() + off[static_cast<size_t>(j)], ws.bytes(), ws_bytes, g.stream);
       }},
  };
  std::function<int64_t()> check;
  if (o.check && n * 4 <= o.check_max_bytes) {
    check = [&] {
      return status_wrong(ws, g.stream) + count_bitwise_diff(download(out.floats(), n, g.stream), reference_twoway(spec, n, p, o.seed));
    };
  }
  row.payload_bytes = payload_bytes;
  row.wire_bytes = 2.0 * static_cast<double>(p - 1) * static_cast<double>(stride);
  time_and_gather(comm, timer, o, stages, check, row);
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
  std::printf("#\n# %10s %12s %6s %-*s %10s %8s %8s %7s | %8s %8s %10s %10s %10s %9s\n", "size", "count", "type", aw, "algo",
              "time", "algbw", "busbw", "#wrong", "ratio", "bits/el", "enc_us", "comm_us", "dec_us", "eff_busbw");
  std::printf("# %10s %12s %6s %-*s %10s %8s %8s %7s | %8s %8s %10s %10s %10s %9s\n", "(B)", "(elements)", "", aw, "",
              "(us)", "(GB/s)", "(GB/s)", "", "", "", "(us)", "(us)", "(us)", "(GB/s)");
}

void print_row(const Row& r, int p, int aw) {
  if (!r.skipped.empty()) {
    std::printf("# %10lld %12lld %6s %-*s skipped: %s\n", static_cast<long long>(r.bytes), static_cast<long long>(r.count),
                "float", aw, r.algo.c_str(), r.skipped.c_str());
    std::fflush(stdout);
    return;
  }
  const Derived d = derive(r, p);
  char wrong[32];
  if (r.wrong < 0) std::snprintf(wrong, sizeof wrong, "N/A");
  else std::snprintf(wrong, sizeof wrong, "%lld", static_cast<long long>(r.wrong));
  std::printf("  %10lld %12lld %6s %-*s %10.1f %8.3f %8.3f %7s | %8.2f %8.3f %10.1f %10.1f %10.1f %9.3f\n",
              static_cast<long long>(r.bytes), static_cast<long long>(r.count), "float", aw, r.algo.c_str(), r.time.median,
              d.algbw, d.busbw, wrong, d.ratio, d.bits, r.enc.median, r.comm.median, r.dec.median, d.eff_busbw);
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
  if (r.wrong < 0) j.raw("wrong", "null");
  else j.integer("wrong", r.wrong);
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
                 std::vector<Row>* rows_out, const std::function<void(Row&, int64_t, const std::string&, const std::string&)>& run_row) {
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
    std::printf("# command: gcomp-bench %s\n# git: %s\n", command_line(argc, argv).c_str(), git_sha(GCOMP_SOURCE_DIR).c_str());
    std::printf("# time: median over iterations of the max over ranks; algbw = size/time; busbw = bytes a rank\n"
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
    if (kind == "allreduce") cpu_allreduce(comm, o, n, row);
    else if (kind == "allgather") cpu_allgather(comm, o, codec, n, row);
    else cpu_twoway(comm, o, codec, n, row);
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

/// Host bytes the local backend holds at once at the largest size: per rank its input, output, own
/// message and the P gathered messages (twice for the two-way rows), and when the row is checked
/// the P inputs of the two-way reference.
uint64_t local_footprint(const Options& o, int p) {
  const uint64_t n = static_cast<uint64_t>(o.max_bytes) / 4;
  uint64_t msg = 0;
  for (const auto& c : o.codecs) msg = std::max<uint64_t>(msg, make_codec(c, Layout(static_cast<int64_t>(n)))->encoded_bytes());
  const auto P = static_cast<uint64_t>(p);
  const long double per_rank = 8.0L * n + 2.0L * (P + 1) * (msg + 4) +
                               (o.check && o.max_bytes <= o.check_max_bytes ? 4.0L * n * P : 0.0L);
  const long double total = per_rank * P;
  return total >= 1.8e19L ? UINT64_MAX : static_cast<uint64_t>(total);
}

int run_cpu_backend(const Options& o, int argc, char** argv) {
  std::vector<Row> rows;
  int64_t wrong = 0;
  int p = 0;
  bool lead = true;
  if (o.backend == Backend::kLocal) {
    p = o.ranks > 0 ? o.ranks : 4;
    io::check_allocation(local_footprint(o, p), "gcomp-bench comm with " + std::to_string(p) + " local ranks (--ranks) up to " +
                                                   std::to_string(o.max_bytes) + " bytes per rank (-e)");
    const RunInfo info{"local", "cpu (" + std::to_string(std::thread::hardware_concurrency()) + " hardware threads)", "host"};
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
    if (kind == "allreduce") gpu_allreduce(comm, g, o, n, row);
    else if (kind == "allgather") gpu_allgather(comm, g, o, codec, n, row);
    else gpu_twoway(comm, g, o, codec, n, row);
  } catch (const Error& e) {
    // Thrown at construction on every rank alike (e.g. sdither/spherical have no kernels).
    if (e.status() != gcompErrorInvalidArgument && e.status() != gcompErrorNotSupported) throw;
    row.skipped = e.what();
  }
}

/// One nccl rank: its device is current on the calling thread.
int64_t nccl_rank(Communicator& comm, const Options& o, const RunInfo& info, int argc, char** argv, std::vector<Row>* rows) {
  GpuRank g;
  return run_rank(comm, o, info, argc, argv, rows, [&](Row& row, int64_t n, const std::string& kind, const std::string& codec) {
    run_gpu_row(comm, g, o, row, n, kind, codec);
  });
}

bool launched_per_process() {
  return std::getenv("WORLD_SIZE") != nullptr || std::getenv("OMPI_COMM_WORLD_SIZE") != nullptr ||
         std::getenv("PMI_SIZE") != nullptr;
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
    const char* local = std::getenv("LOCAL_RANK");
    if (local == nullptr) local = std::getenv("OMPI_COMM_WORLD_LOCAL_RANK");
    const int dev = local != nullptr ? std::atoi(local) : comm->rank() % devices;
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
  const RunInfo info{"nccl", gpu_device_name(0) + ", " + std::to_string(p) + " thread ranks on " +
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
  std::fprintf(stderr, "gcomp-bench comm: --backend nccl needs a build with CUDA and NCCL (-DGCOMP_CUDA=ON, NCCL next to "
                       "the CUDA toolkit)\n");
  return 2;
#endif
}

}  // namespace gcomp::bench
