// SPDX-License-Identifier: Apache-2.0
// Session: the algorithms of spec/ALGORITHMS.md §3.3, §4.3, §6, §7, §8 over a codec and a
// communicator, CPU backend (double state, fp32 messages).
#include <gcomp/session.hpp>

#include "host/algorithms/algorithm_state.hpp"
#include "host/algorithms/checkpoint.hpp"
#include "host/algorithms/f32_engine.hpp"
#include "host/common/nvtx.hpp"

#include <gcomp/detail/half.hpp>
#include <gcomp/wire.hpp>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <map>

namespace gcomp {

namespace {

constexpr uint32_t kServerRankId = 0xffffffffu;  // RngKey rank of the replicated server's encoder

struct AlgoName {
  Algorithm a;
  const char* name;
};
constexpr AlgoName kAlgos[] = {
    {Algorithm::kGd, "gd"},
    {Algorithm::kCompressedGd, "compressed-gd"},
    {Algorithm::kSignSgdMv, "signsgd-mv"},
    {Algorithm::kEfSgd, "ef-sgd"},
    {Algorithm::kDiana, "diana"},
    {Algorithm::kDistEfSgdm, "dist-ef-sgdm"},
    {Algorithm::kDoubleSqueeze, "doublesqueeze"},
    {Algorithm::kHessianEc, "hessian-ec"},
};

struct BackendName {
  Backend b;
  const char* name;
};
constexpr BackendName kBackends[] = {{Backend::kCpu, "cpu"}, {Backend::kHostF32, "host-f32"}, {Backend::kCuda, "cuda"}};

using detail::two_way;

std::string fmt(double v) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.17g", v);
  return buf;
}

}  // namespace

Algorithm parse_algorithm(std::string_view name) {
  for (const auto& a : kAlgos)
    if (name == a.name) return a.a;
  std::string valid;
  for (const auto& a : kAlgos) valid += (valid.empty() ? "" : ", ") + std::string(a.name);
  GCOMP_FAIL(gcompErrorInvalidArgument, "unknown algorithm '" + std::string(name) + "'; valid algorithms: " + valid);
}

const char* algorithm_name(Algorithm a) {
  for (const auto& e : kAlgos)
    if (e.a == a) return e.name;
  return "unknown";
}

Backend parse_backend(std::string_view name) {
  for (const auto& b : kBackends)
    if (name == b.name) return b.b;
  GCOMP_FAIL(gcompErrorInvalidArgument,
             "unknown session backend '" + std::string(name) + "'; valid backends: cpu, host-f32, cuda");
}

const char* backend_name(Backend b) {
  for (const auto& e : kBackends)
    if (e.b == b) return e.name;
  return "unknown";
}

std::string SessionConfig::canonical() const {
  std::string s = std::string("algo=") + algorithm_name(algorithm) + ";codec=" + CodecSpec::parse(codec).canonical();
  if (two_way(algorithm)) s += ";server_codec=" + CodecSpec::parse(server_codec).canonical();
  s += ";lr=" + fmt(lr) + ";alpha=" + fmt(alpha) + ";momentum=" + fmt(momentum) + ";nesterov=" +
       (nesterov ? "1" : "0") + ";delay=" + std::to_string(delay) + ";seed=" + std::to_string(seed) +
       ";prox=" + std::to_string(static_cast<int>(prox)) + ":" + fmt(prox_lambda) +
       ";nonfinite=" + std::to_string(static_cast<int>(nonfinite)) + ";tie0=" + (tie_to_zero ? "1" : "0") +
       ";shared_scale=" + (shared_scale ? "1" : "0") + ";server=" + std::to_string(static_cast<int>(server)) +
       ";compensation=" + std::to_string(static_cast<int>(compensation)) + ";format=" + std::to_string(kWireVersion);
  // The default cpu backend is left out, so that its digests (checkpoints) stay those of before
  // the backend field existed.
  if (backend != Backend::kCpu) s += std::string(";backend=") + backend_name(backend);
  // track_norms only adds measurements; it is not part of the agreement.
  return s;
}

void apply_prox(Regularizer r, double lr_lambda, std::span<double> x) {
  if (r == Regularizer::kL1) {
    for (double& v : x) v = v > lr_lambda ? v - lr_lambda : (v < -lr_lambda ? v + lr_lambda : 0.0);
  } else if (r == Regularizer::kL2) {
    for (double& v : x) v = v / (1.0 + lr_lambda);
  }
}

// ------------------------------------------------------------------------------------------------

struct Session::Impl {
  Communicator& comm;
  Layout layout;
  SessionConfig cfg;
  int P = 1;
  int rank = 0;
  int64_t n = 0;
  uint64_t k = 0;  // step counter
  double alpha = 0.0;

  std::unique_ptr<Codec> up;    // whole-vector uplink codec
  std::unique_ptr<Codec> down;  // whole-vector downlink codec (replicated server)
  // Sharded server: element ranges and per-shard codecs.
  std::vector<int64_t> shard_begin;  // P + 1 offsets
  std::vector<std::unique_ptr<Codec>> up_shard, down_shard;
  size_t up_bytes = 0, down_bytes = 0;  // per message (sharded: max over shards)

  // Scratch, sized once.
  std::vector<float> f32a, f32b;
  std::vector<uint8_t> send, recv, send2, recv2;
  std::vector<double> acc, work, grad_buf;
  std::vector<float> scales, scales_max;

  // State, by name (saved in checkpoints).
  std::map<std::string, std::vector<double>> st;
  // Arrays a step writes before its last collective, with their values at the start of the step:
  // a step that throws (timeout, dead peer, codec error) restores them, so state stays untouched.
  // By name: load() replaces the arrays.
  std::vector<std::pair<std::string, std::vector<double>>> rollback;

  // fp32 backends (host-f32, cuda): the engine owns the state; `st` stays empty.
  std::unique_ptr<detail::F32Engine> f32;
  std::vector<float> hg, hu;                              // host staging of the host-API steps
  mutable std::map<std::string, std::vector<double>> snapshot;  // state() of an fp32 backend
  void f32_snapshot() const;
  StepStats f32_step_host(std::span<const double> grad, std::span<double> update);

  Impl(Communicator& c, Layout l, SessionConfig config) : comm(c), layout(std::move(l)), cfg(std::move(config)) {}

  std::vector<double>& S(const std::string& name) { return st.at(name); }
  /// Where a rolled-back array's saved part starts: the current step's slot of the delay queue.
  size_t rollback_offset(const std::string& name) const {
    if (name != "delay_queue") return 0;
    return static_cast<size_t>(k % (static_cast<uint64_t>(cfg.delay) + 1)) * static_cast<size_t>(n);
  }

  RngKey up_key(int r, int shard = -1) const {
    return RngKey{cfg.seed, static_cast<uint32_t>(r), static_cast<uint32_t>(k),
                  shard < 0 ? 0u : 16u * static_cast<uint32_t>(shard + 1)};
  }
  RngKey down_key(int shard = -1) const {
    if (shard < 0) return RngKey{cfg.seed, kServerRankId, static_cast<uint32_t>(k), detail::kStreamDownlink};
    return RngKey{cfg.seed, static_cast<uint32_t>(shard), static_cast<uint32_t>(k),
                  16u * static_cast<uint32_t>(shard + 1) + detail::kStreamDownlink};
  }

  void setup();
  void allgather_messages(const std::vector<double>& src, StepStats& stats);
  void mean_of_messages(const Codec& codec, const uint8_t* msgs, size_t stride, bool uplink_keys, std::vector<double>& out,
                        int shard = -1);
  void decode_own(const Codec& codec, const uint8_t* msg, const RngKey& key, std::vector<float>& out_f32);
  void compress_mean(const std::vector<double>& src, std::vector<double>& mean, std::vector<double>* err, StepStats& s);
  void two_way_round(const std::vector<double>& p, std::vector<double>& e, std::vector<double>& server_err,
                     std::vector<double>& result, StepStats& s);
  StepStats run(std::span<const double> grad, std::span<double> update);
};

void Session::Impl::setup() {
  P = comm.size();
  rank = comm.rank();
  n = layout.num_elems();
  GCOMP_EXPECTS(cfg.delay >= 0, gcompErrorInvalidArgument, "delay must be >= 0");
  GCOMP_EXPECTS(std::isfinite(cfg.lr) && cfg.lr >= 0, gcompErrorInvalidArgument, "lr must be finite and >= 0");
  GCOMP_EXPECTS(cfg.momentum >= 0 && cfg.momentum < 1, gcompErrorInvalidArgument, "momentum must be in [0, 1)");
  const CodecSpec up_spec = CodecSpec::parse(cfg.algorithm == Algorithm::kGd ? "identity" : cfg.codec);
  if (cfg.algorithm == Algorithm::kSignSgdMv)
    GCOMP_EXPECTS(up_spec.id == CodecId::kSign && !up_spec.scaled, gcompErrorInvalidArgument,
                  "signsgd-mv sends plain signs: use codec sign:scale=none");
  if (cfg.algorithm == Algorithm::kHessianEc) {
    if (cfg.compensation == Compensation::kHessian)
      GCOMP_EXPECTS(static_cast<bool>(cfg.hessian_product), gcompErrorInvalidArgument,
                    "hessian-ec with full Hessian needs hessian_product");
    if (cfg.compensation == Compensation::kDiagonal)
      GCOMP_EXPECTS(static_cast<bool>(cfg.hessian_diagonal), gcompErrorInvalidArgument,
                    "hessian-ec with diagonal Hessian needs hessian_diagonal");
  }
  up = make_codec(up_spec, layout);
  up_bytes = up->encoded_bytes();
  if (two_way(cfg.algorithm)) {
    const CodecSpec down_spec = CodecSpec::parse(cfg.server_codec);
    if (cfg.server == ServerMode::kReplicated) {
      down = make_codec(down_spec, layout);
      down_bytes = down->encoded_bytes();
    } else {
      // Shard r covers elements [r n / P, (r+1) n / P); its layout is the pieces of the segments it
      // intersects, so blocks restart at shard boundaries.
      shard_begin.resize(static_cast<size_t>(P) + 1);
      for (int r = 0; r <= P; ++r) shard_begin[r] = (n / P) * r + ((n % P) * r) / P;
      up_bytes = 0;
      for (int r = 0; r < P; ++r) {
        const Layout segs(detail::shard_segments(layout, shard_begin[r], shard_begin[r + 1]));
        up_shard.push_back(make_codec(up_spec, segs));
        down_shard.push_back(make_codec(down_spec, segs));
        up_bytes = std::max(up_bytes, up_shard.back()->encoded_bytes());
        down_bytes = std::max(down_bytes, down_shard.back()->encoded_bytes());
      }
    }
  }
  if (cfg.algorithm == Algorithm::kDiana) {
    const Guarantee g = up->guarantee();
    if (cfg.alpha < 0) {
      GCOMP_EXPECTS(g.kind == Guarantee::Kind::kUnbiased, gcompErrorInvalidArgument,
                    "diana needs an unbiased codec for alpha=auto; give alpha explicitly");
      alpha = 1.0 / (g.omega + 1.0);
    } else {
      alpha = cfg.alpha;
    }
  }

  std::unique_ptr<detail::VecOps> ops;
  if (cfg.backend == Backend::kHostF32) ops = detail::make_host_ops(comm);
  if (cfg.backend == Backend::kCuda) ops = detail::make_device_ops(comm);

  // Agreement on everything that shapes the messages and the state.
  std::string desc = cfg.canonical() + ";layout=" + std::to_string(layout.digest()) + ";world=" + std::to_string(P);
  check_agreement(comm, "session configuration", desc);

  if (ops) {
    f32 = std::make_unique<detail::F32Engine>(comm, layout, cfg, alpha, shard_begin, std::move(ops));
    hg.resize(static_cast<size_t>(n));
    hu.resize(static_cast<size_t>(n));
    return;
  }

  const size_t un = static_cast<size_t>(n);
  f32a.resize(un);
  f32b.resize(un);
  acc.resize(un);
  work.resize(un);
  const size_t msg = std::max(up_bytes, down_bytes);
  send.resize(std::max<size_t>(msg * static_cast<size_t>(P), 1));
  recv.resize(std::max<size_t>(msg * static_cast<size_t>(P), 1));
  send2.resize(std::max<size_t>(down_bytes, 1));
  recv2.resize(std::max<size_t>(down_bytes * static_cast<size_t>(P), 1));
  scales.resize(static_cast<size_t>(up->num_scales()));
  scales_max.resize(scales.size());

  const size_t shard = shard_begin.empty() ? un : static_cast<size_t>(shard_begin[rank + 1] - shard_begin[rank]);
  for (const auto& [name, size] : detail::state_arrays(cfg, un, shard)) st[name].assign(size, 0.0);

  std::vector<std::string> early;  // written before the step's last collective
  if (cfg.delay > 0) early.push_back("delay_queue");
  if ((cfg.algorithm == Algorithm::kEfSgd && cfg.momentum > 0) || cfg.algorithm == Algorithm::kDistEfSgdm)
    early.push_back("momentum");
  if (two_way(cfg.algorithm) && cfg.server == ServerMode::kSharded) early.push_back("error");
  // The delay queue is only written in the slot of the current step: save that slot alone.
  for (const auto& name : early)
    rollback.emplace_back(name, std::vector<double>(name == "delay_queue" ? un : S(name).size()));
}

void Session::Impl::decode_own(const Codec& codec, const uint8_t* msg, const RngKey& key, std::vector<float>& out) {
  codec.decode(std::span<const uint8_t>(msg, codec.encoded_bytes()), key, std::span<float>(out.data(), codec.num_elems()));
}

// Encodes src with the uplink codec (TernGrad scaler sharing when configured) into `send` and
// allgathers every rank's message into `recv`.
void Session::Impl::allgather_messages(const std::vector<double>& src, StepStats& s) {
  detail::NvtxRange encode_range("gcomp encode");
  for (int64_t i = 0; i < n; ++i) f32a[i] = static_cast<float>(src[i]);
  const std::span<const float> x(f32a.data(), static_cast<size_t>(n));
  const std::span<uint8_t> out(send.data(), up_bytes);
  const bool share = cfg.shared_scale && up->spec().id == CodecId::kTernGrad && cfg.algorithm == Algorithm::kCompressedGd;
  if (share && !scales.empty()) {
    up->compute_scales(x, scales);
    comm.allreduce(scales.data(), scales_max.data(), scales.size(), DataType::kF32, ReduceOp::kMax, nullptr);
    up->encode_with_scales(x, scales_max, up_key(rank), out);
  } else {
    up->encode(x, up_key(rank), out);
  }
  if (cfg.track_norms) {
    decode_own(*up, send.data(), up_key(rank), f32b);
    double err = 0;
    for (int64_t i = 0; i < n; ++i) err += (static_cast<double>(f32b[i]) - src[i]) * (static_cast<double>(f32b[i]) - src[i]);
    s.compression_error_sq = err;
  }
  detail::NvtxRange comm_range("gcomp communicate");
  comm.allgather(send.data(), recv.data(), up_bytes, nullptr);
  s.bytes_up += up_bytes;
  s.bytes_received += up_bytes * static_cast<size_t>(P - 1);
}

// out = (1/P) sum_j decode(message j), accumulated in rank order in double.
void Session::Impl::mean_of_messages(const Codec& codec, const uint8_t* msgs, size_t stride, bool uplink_keys,
                                     std::vector<double>& out, int shard) {
  detail::NvtxRange range("gcomp decode");
  const int64_t m = codec.num_elems();
  std::fill(out.begin(), out.begin() + m, 0.0);
  for (int j = 0; j < P; ++j) {
    const RngKey key = uplink_keys ? up_key(j, shard) : down_key(shard);
    decode_own(codec, msgs + stride * static_cast<size_t>(j), key, f32b);
    for (int64_t i = 0; i < m; ++i) out[i] += static_cast<double>(f32b[i]);
  }
  const double inv = 1.0 / static_cast<double>(P);
  for (int64_t i = 0; i < m; ++i) out[i] *= inv;
}

// mean = (1/P) sum_j decode(C(src_j)); with err: err = src - decode(C(src)) for this rank.
void Session::Impl::compress_mean(const std::vector<double>& src, std::vector<double>& mean, std::vector<double>* err,
                                  StepStats& s) {
  allgather_messages(src, s);
  if (err) {
    decode_own(*up, recv.data() + up_bytes * static_cast<size_t>(rank), up_key(rank), f32b);
    for (int64_t i = 0; i < n; ++i) (*err)[i] = src[i] - static_cast<double>(f32b[i]);
  }
  mean_of_messages(*up, recv.data(), up_bytes, true, mean);
}

// Two-way round (§8.3/§8.4): workers send C(p) and keep e = p - C(p); the server averages the
// decoded messages, adds its error, sends C~(p~) and keeps e~ = p~ - C~(p~). result = decode(C~(p~)).
void Session::Impl::two_way_round(const std::vector<double>& p, std::vector<double>& e, std::vector<double>& server_err,
                                  std::vector<double>& result, StepStats& s) {
  if (cfg.server == ServerMode::kReplicated) {
    compress_mean(p, acc, &e, s);
    for (int64_t i = 0; i < n; ++i) work[i] = server_err[i] + acc[i];
    for (int64_t i = 0; i < n; ++i) f32a[i] = static_cast<float>(work[i]);
    down->encode(std::span<const float>(f32a.data(), static_cast<size_t>(n)), down_key(), std::span<uint8_t>(send2.data(), down_bytes));
    decode_own(*down, send2.data(), down_key(), f32b);
    for (int64_t i = 0; i < n; ++i) {
      result[i] = static_cast<double>(f32b[i]);
      server_err[i] = work[i] - result[i];
    }
    s.bytes_down += down_bytes;
    return;
  }
  // Sharded: encode each shard of p for its owner, alltoall, server step on the own shard, allgather.
  for (int64_t i = 0; i < n; ++i) f32a[i] = static_cast<float>(p[i]);
  std::fill(send.begin(), send.end(), uint8_t{0});
  for (int r = 0; r < P; ++r) {
    const int64_t b = shard_begin[r], len = shard_begin[r + 1] - b;
    up_shard[r]->encode(std::span<const float>(f32a.data() + b, static_cast<size_t>(len)), up_key(rank, r),
                        std::span<uint8_t>(send.data() + up_bytes * static_cast<size_t>(r), up_shard[r]->encoded_bytes()));
    up_shard[r]->decode(std::span<const uint8_t>(send.data() + up_bytes * static_cast<size_t>(r), up_shard[r]->encoded_bytes()),
                        up_key(rank, r), std::span<float>(f32b.data() + b, static_cast<size_t>(len)));
    s.bytes_up += up_shard[r]->encoded_bytes();
  }
  for (int64_t i = 0; i < n; ++i) e[i] = p[i] - static_cast<double>(f32b[i]);
  comm.alltoall(send.data(), recv.data(), up_bytes, nullptr);
  s.bytes_received += up_bytes * static_cast<size_t>(P - 1);
  // Server role for shard `rank`.
  const Codec& upc = *up_shard[rank];
  const int64_t mb = shard_begin[rank], mlen = shard_begin[rank + 1] - mb;
  std::fill(acc.begin(), acc.begin() + mlen, 0.0);
  for (int j = 0; j < P; ++j) {
    upc.decode(std::span<const uint8_t>(recv.data() + up_bytes * static_cast<size_t>(j), upc.encoded_bytes()), up_key(j, rank),
               std::span<float>(f32b.data(), static_cast<size_t>(mlen)));
    for (int64_t i = 0; i < mlen; ++i) acc[i] += static_cast<double>(f32b[i]);
  }
  for (int64_t i = 0; i < mlen; ++i) {
    work[i] = server_err[i] + acc[i] * (1.0 / static_cast<double>(P));
    f32a[i] = static_cast<float>(work[i]);
  }
  const Codec& dnc = *down_shard[rank];
  std::fill(send2.begin(), send2.end(), uint8_t{0});
  dnc.encode(std::span<const float>(f32a.data(), static_cast<size_t>(mlen)), down_key(rank),
             std::span<uint8_t>(send2.data(), dnc.encoded_bytes()));
  comm.allgather(send2.data(), recv2.data(), down_bytes, nullptr);
  s.bytes_received += down_bytes * static_cast<size_t>(P - 1);
  for (int r = 0; r < P; ++r) {
    const int64_t b = shard_begin[r], len = shard_begin[r + 1] - b;
    down_shard[r]->decode(std::span<const uint8_t>(recv2.data() + down_bytes * static_cast<size_t>(r), down_shard[r]->encoded_bytes()),
                          down_key(r), std::span<float>(f32b.data() + b, static_cast<size_t>(len)));
    s.bytes_down += down_shard[r]->encoded_bytes();
  }
  for (int64_t i = 0; i < n; ++i) result[i] = static_cast<double>(f32b[i]);
  for (int64_t i = 0; i < mlen; ++i) server_err[i] = work[i] - result[mb + i];
}

StepStats Session::Impl::run(std::span<const double> grad_in, std::span<double> u) {
  detail::NvtxRange step_range("gcomp step");
  GCOMP_EXPECTS(static_cast<int64_t>(grad_in.size()) == n && static_cast<int64_t>(u.size()) == n,
                gcompErrorInvalidArgument,
                "step: gradient and update must have " + std::to_string(n) + " elements (got " +
                    std::to_string(grad_in.size()) + " and " + std::to_string(u.size()) + ")");
  StepStats s;
  // Non-finite check, agreed by all ranks before any state changes.
  int64_t bad = 0;
  for (double v : grad_in) bad |= std::isfinite(v) ? 0 : 1;
  int64_t any_bad = 0;
  comm.allreduce(&bad, &any_bad, 1, DataType::kI64, ReduceOp::kMax, nullptr);
  if (any_bad && cfg.nonfinite == NonFinitePolicy::kError)
    GCOMP_FAIL(gcompErrorNonFinite, std::string("non-finite gradient on ") + (bad ? "this rank" : "another rank") +
                                        " at step " + std::to_string(k) + "; state unchanged");
  if (any_bad && cfg.nonfinite == NonFinitePolicy::kSkip) {
    std::fill(u.begin(), u.end(), 0.0);
    s.step = k;
    s.skipped = true;
    return s;
  }
  for (auto& [name, saved] : rollback) {
    const auto first = S(name).begin() + static_cast<std::ptrdiff_t>(rollback_offset(name));
    std::copy(first, first + static_cast<std::ptrdiff_t>(saved.size()), saved.begin());
  }
  struct Restore {
    Impl& impl;
    bool committed = false;
    ~Restore() {
      if (committed) return;
      for (auto& [name, saved] : impl.rollback)
        std::copy(saved.begin(), saved.end(),
                  impl.S(name).begin() + static_cast<std::ptrdiff_t>(impl.rollback_offset(name)));
    }
  } restore{*this};
  // The gradient this step consumes (bounded delay: the one from max(0, k - tau)).
  const double* g = grad_in.data();
  if (bad) {  // kZero
    for (int64_t i = 0; i < n; ++i) work[i] = std::isfinite(grad_in[i]) ? grad_in[i] : 0.0;
    g = work.data();
  }
  if (cfg.delay > 0) {
    auto& q = S("delay_queue");
    const size_t slots = static_cast<size_t>(cfg.delay) + 1;
    std::copy(g, g + n, q.begin() + static_cast<std::ptrdiff_t>((k % slots) * static_cast<size_t>(n)));
    const uint64_t src = k >= static_cast<uint64_t>(cfg.delay) ? k - static_cast<uint64_t>(cfg.delay) : 0;
    g = q.data() + (src % slots) * static_cast<size_t>(n);
  }
  grad_buf.assign(g, g + n);
  const double lr = cfg.lr;
  const double mu = cfg.momentum;

  switch (cfg.algorithm) {
    case Algorithm::kGd:
    case Algorithm::kCompressedGd: {
      compress_mean(grad_buf, acc, nullptr, s);
      if (mu > 0) {
        auto& m = S("momentum");
        for (int64_t i = 0; i < n; ++i) {
          m[i] = mu * m[i] + acc[i];
          u[i] = lr * m[i];
        }
      } else {
        for (int64_t i = 0; i < n; ++i) u[i] = lr * acc[i];
      }
      break;
    }
    case Algorithm::kSignSgdMv: {
      allgather_messages(grad_buf, s);
      std::fill(acc.begin(), acc.end(), 0.0);
      for (int j = 0; j < P; ++j) {
        decode_own(*up, recv.data() + up_bytes * static_cast<size_t>(j), up_key(j), f32b);
        for (int64_t i = 0; i < n; ++i) acc[i] += static_cast<double>(f32b[i]);
      }
      for (int64_t i = 0; i < n; ++i) {
        const double v = acc[i] > 0 ? 1.0 : (acc[i] < 0 ? -1.0 : (cfg.tie_to_zero ? 0.0 : 1.0));
        u[i] = lr * v;
      }
      s.bytes_down += static_cast<size_t>((n + 7) / 8);  // the vote is one sign per element
      break;
    }
    case Algorithm::kEfSgd: {
      auto& e = S("error");
      std::vector<double>& p = grad_buf;  // p = lr * d + e, in place
      if (mu > 0) {
        auto& m = S("momentum");
        for (int64_t i = 0; i < n; ++i) {
          m[i] = mu * m[i] + p[i];
          const double d = cfg.nesterov ? p[i] + mu * m[i] : m[i];
          p[i] = lr * d + e[i];
        }
      } else {
        for (int64_t i = 0; i < n; ++i) p[i] = lr * p[i] + e[i];
      }
      compress_mean(p, acc, &e, s);
      for (int64_t i = 0; i < n; ++i) u[i] = acc[i];
      break;
    }
    case Algorithm::kDiana: {
      auto& hi = S("shift_worker");
      auto& h = S("shift_server");
      for (int64_t i = 0; i < n; ++i) grad_buf[i] = grad_buf[i] - hi[i];  // delta_i = g_i - h_i
      allgather_messages(grad_buf, s);
      decode_own(*up, recv.data() + up_bytes * static_cast<size_t>(rank), up_key(rank), f32b);
      for (int64_t i = 0; i < n; ++i) hi[i] += alpha * static_cast<double>(f32b[i]);
      mean_of_messages(*up, recv.data(), up_bytes, true, acc);
      if (mu > 0) {
        auto& v = S("momentum");
        for (int64_t i = 0; i < n; ++i) {
          v[i] = mu * v[i] + (h[i] + acc[i]);
          u[i] = lr * v[i];
        }
      } else {
        for (int64_t i = 0; i < n; ++i) u[i] = lr * (h[i] + acc[i]);
      }
      for (int64_t i = 0; i < n; ++i) h[i] += alpha * acc[i];
      break;
    }
    case Algorithm::kDistEfSgdm: {
      auto& e = S("error");
      auto& m = S("momentum");
      std::vector<double>& p = grad_buf;
      for (int64_t i = 0; i < n; ++i) {
        m[i] = mu * m[i] + p[i];
        const double d = cfg.nesterov ? mu * m[i] + p[i] : m[i];
        p[i] = e[i] + lr * d;
      }
      two_way_round(p, e, S("server_error"), acc, s);
      for (int64_t i = 0; i < n; ++i) u[i] = acc[i];
      break;
    }
    case Algorithm::kDoubleSqueeze: {
      auto& e = S("error");
      std::vector<double>& v = grad_buf;
      for (int64_t i = 0; i < n; ++i) v[i] = v[i] + e[i];
      two_way_round(v, e, S("server_error"), acc, s);
      for (int64_t i = 0; i < n; ++i) u[i] = lr * acc[i];
      break;
    }
    case Algorithm::kHessianEc: {
      detail::NvtxRange range("gcomp update");
      auto& e = S("error");
      std::vector<double>& v = grad_buf;
      switch (cfg.compensation) {
        case Compensation::kNone: break;
        case Compensation::kClassical:
          for (int64_t i = 0; i < n; ++i) v[i] += e[i];
          break;
        case Compensation::kHessian:
          cfg.hessian_product(std::span<const double>(e.data(), e.size()), std::span<double>(acc.data(), acc.size()));
          for (int64_t i = 0; i < n; ++i) v[i] += e[i] - lr * acc[i];
          break;
        case Compensation::kDiagonal:
          cfg.hessian_diagonal(std::span<double>(acc.data(), acc.size()));
          for (int64_t i = 0; i < n; ++i) v[i] += e[i] - lr * acc[i] * e[i];
          break;
      }
      compress_mean(v, acc, &e, s);
      if (cfg.compensation == Compensation::kNone) std::fill(e.begin(), e.end(), 0.0);
      for (int64_t i = 0; i < n; ++i) u[i] = lr * acc[i];
      break;
    }
  }
  if (cfg.track_norms) {
    for (const char* name : {"error", "shift_worker"}) {
      auto it = st.find(name);
      if (it == st.end()) continue;
      for (double v : it->second) s.memory_norm_sq += v * v;
    }
  }
  restore.committed = true;
  ++k;
  s.step = k;
  if (n > 0) {
    s.bits_per_element_up = 8.0 * static_cast<double>(s.bytes_up) / static_cast<double>(n);
    s.bits_per_element_down = 8.0 * static_cast<double>(s.bytes_down) / static_cast<double>(n);
  }
  return s;
}

// ------------------------------------------------------------------------------------------------

Session::Session(Communicator& comm, Layout layout, SessionConfig config)
    : impl_(std::make_unique<Impl>(comm, std::move(layout), std::move(config))) {
  impl_->setup();
}

Session::~Session() = default;

// fp32 backends: the gradient rounded to fp32, the fp32 update widened back (exact).
StepStats Session::Impl::f32_step_host(std::span<const double> grad, std::span<double> update) {
  GCOMP_EXPECTS(static_cast<int64_t>(grad.size()) == n && static_cast<int64_t>(update.size()) == n,
                gcompErrorInvalidArgument,
                "step: gradient and update must have " + std::to_string(n) + " elements (got " +
                    std::to_string(grad.size()) + " and " + std::to_string(update.size()) + ")");
  for (size_t i = 0; i < hg.size(); ++i) hg[i] = static_cast<float>(grad[i]);
  const StepStats stats = f32->run_host(hg.data(), hu.data());
  for (size_t i = 0; i < hu.size(); ++i) update[i] = static_cast<double>(hu[i]);
  return stats;
}

void Session::Impl::f32_snapshot() const {
  snapshot.clear();
  for (const auto& [name, a] : f32->arrays()) {
    std::vector<float> h(a.size);
    f32->ops().to_host(h.data(), a.data, a.size);
    snapshot[name].assign(h.begin(), h.end());
  }
}

StepStats Session::step(std::span<const double> grad, std::span<double> update) {
  if (impl_->f32) return impl_->f32_step_host(grad, update);
  return impl_->run(grad, update);
}

StepStats Session::step(std::span<const float> grad, std::span<float> update) {
  if (impl_->f32) {
    const auto n = static_cast<size_t>(impl_->n);
    GCOMP_EXPECTS(grad.size() == n && update.size() == n, gcompErrorInvalidArgument,
                  "step: gradient and update must have " + std::to_string(n) + " elements (got " +
                      std::to_string(grad.size()) + " and " + std::to_string(update.size()) + ")");
    // Through the session's own update buffer: `update` is written only on success.
    const StepStats s = impl_->f32->run_host(grad.data(), impl_->hu.data());
    std::copy(impl_->hu.begin(), impl_->hu.end(), update.begin());
    return s;
  }
  std::vector<double> g(grad.begin(), grad.end()), u(update.size());
  const StepStats s = impl_->run(g, u);
  for (size_t i = 0; i < u.size(); ++i) update[i] = static_cast<float>(u[i]);
  return s;
}

StepStats Session::step_bf16(std::span<const uint16_t> grad, std::span<double> update) {
  std::vector<double> g(grad.size());
  for (size_t i = 0; i < g.size(); ++i) g[i] = static_cast<double>(detail::bf16_to_float(grad[i]));
  return step(std::span<const double>(g), update);
}

StepStats Session::step_f16(std::span<const uint16_t> grad, std::span<double> update) {
  std::vector<double> g(grad.size());
  for (size_t i = 0; i < g.size(); ++i) g[i] = static_cast<double>(detail::f16_to_float(grad[i]));
  return step(std::span<const double>(g), update);
}

StepStats Session::step_device(const void* d_grad, GradType type, float* d_update, Stream stream) {
  GCOMP_EXPECTS(impl_->cfg.backend == Backend::kCuda, gcompErrorNotSupported,
                std::string("step_device needs the cuda backend; this session's backend is ") +
                    backend_name(impl_->cfg.backend));
  GCOMP_EXPECTS(impl_->n == 0 || (d_grad != nullptr && d_update != nullptr), gcompErrorInvalidArgument,
                "step_device: d_grad and d_update must not be null");
  GCOMP_EXPECTS(type == GradType::kF32 || type == GradType::kBF16 || type == GradType::kF16, gcompErrorInvalidArgument,
                "step_device: unknown gradient type " + std::to_string(static_cast<int>(type)));
  detail::VecOps& ops = impl_->f32->ops();
  // The step on the caller's stream; afterwards the session's own stream again (ordered after it),
  // so the host API and the checkpoint functions never use a stream the caller may have destroyed.
  ops.set_stream(stream);
  StepStats s;
  try {
    s = impl_->f32->run(d_grad, type);
    ops.copy(d_update, impl_->f32->update_buffer(), static_cast<size_t>(impl_->n));
  } catch (...) {
    try {
      ops.use_own_stream();  // switches back first, whatever the CUDA calls after it report
    } catch (...) {
    }
    throw;  // the step's error is the one to report
  }
  ops.use_own_stream();
  return s;
}

gcompStatus_t Session::device_status(uint64_t* index) {
  if (!impl_->f32) {
    if (index != nullptr) *index = UINT64_MAX;
    return gcompSuccess;
  }
  return impl_->f32->ops().device_status(index);
}

StepStats Session::apply(std::span<const double> grad, std::span<double> x) {
  std::vector<double> upd(x.size());
  const StepStats s = step(grad, std::span<double>(upd));
  for (size_t i = 0; i < x.size(); ++i) x[i] -= upd[i];
  if (!s.skipped) apply_prox(impl_->cfg.prox, impl_->cfg.lr * impl_->cfg.prox_lambda, x);
  return s;
}

uint64_t Session::step_count() const { return impl_->f32 ? impl_->f32->step_count() : impl_->k; }
const SessionConfig& Session::config() const { return impl_->cfg; }
const Layout& Session::layout() const { return impl_->layout; }
const Codec& Session::uplink_codec() const { return *impl_->up; }
double Session::alpha() const { return impl_->alpha; }

std::vector<std::pair<std::string, const std::vector<double>*>> Session::state() const {
  std::vector<std::pair<std::string, const std::vector<double>*>> out;
  if (impl_->f32) impl_->f32_snapshot();
  for (const auto& [name, v] : impl_->f32 ? impl_->snapshot : impl_->st) out.emplace_back(name, &v);
  return out;
}

void Session::save(const std::string& path, const Extras& extras) const {
  detail::CheckpointData d;
  d.config_digest = fnv1a64(impl_->cfg.canonical() + ";layout=" + std::to_string(impl_->layout.digest()));
  d.rank = static_cast<uint32_t>(impl_->rank);
  d.world = static_cast<uint32_t>(impl_->P);
  d.step = step_count();
  if (impl_->f32) impl_->f32_snapshot();
  for (const auto& [name, v] : impl_->f32 ? impl_->snapshot : impl_->st) d.arrays.emplace_back(name, v);
  for (const auto& [name, v] : extras) d.arrays.emplace_back("extra:" + name, *v);
  detail::write_checkpoint(path, d);
}

void Session::load(const std::string& path, const Extras& extras) {
  const detail::CheckpointData d = detail::read_checkpoint(path);
  const uint64_t want = fnv1a64(impl_->cfg.canonical() + ";layout=" + std::to_string(impl_->layout.digest()));
  GCOMP_EXPECTS(d.config_digest == want, gcompErrorMismatch,
                "checkpoint '" + path + "' was written by a session with another configuration or layout");
  GCOMP_EXPECTS(d.world == static_cast<uint32_t>(impl_->P), gcompErrorMismatch,
                "checkpoint '" + path + "' is from a world of " + std::to_string(d.world) + " ranks, this one has " +
                    std::to_string(impl_->P));
  GCOMP_EXPECTS(d.rank == static_cast<uint32_t>(impl_->rank), gcompErrorMismatch,
                "checkpoint '" + path + "' belongs to rank " + std::to_string(d.rank) + ", not rank " +
                    std::to_string(impl_->rank));
  std::map<std::string, std::vector<double>> next, extra;
  for (const auto& [name, v] : d.arrays) (name.rfind("extra:", 0) == 0 ? extra[name.substr(6)] : next[name]) = v;
  if (impl_->f32) impl_->f32_snapshot();  // names and sizes of the fp32 state
  const auto& current = impl_->f32 ? impl_->snapshot : impl_->st;
  GCOMP_EXPECTS(next.size() == current.size() && extra.size() == extras.size(), gcompErrorMismatch,
                "checkpoint '" + path + "' has other state arrays");
  for (const auto& [name, v] : extras) {
    auto it = extra.find(name);
    GCOMP_EXPECTS(it != extra.end() && it->second.size() == v->size(), gcompErrorMismatch,
                  "checkpoint '" + path + "': array '" + name + "' is missing or has the wrong size");
  }
  for (const auto& [name, v] : current) {
    auto it = next.find(name);
    GCOMP_EXPECTS(it != next.end() && it->second.size() == v.size(), gcompErrorMismatch,
                  "checkpoint '" + path + "': state '" + name + "' is missing or has the wrong size");
  }
  if (impl_->f32) {
    // fp32 state: every value must be an fp32 number (the file holds it widened exactly).
    std::map<std::string, std::vector<float>> f;
    for (const auto& [name, v] : next) {
      auto& out = f[name];
      out.resize(v.size());
      for (size_t i = 0; i < v.size(); ++i) {
        out[i] = static_cast<float>(v[i]);
        GCOMP_EXPECTS(static_cast<double>(out[i]) == v[i] || (std::isnan(v[i]) && std::isnan(out[i])),
                      gcompErrorCorruptPayload,
                      "checkpoint '" + path + "': state '" + name + "' element " + std::to_string(i) +
                          " is not an fp32 value");
      }
    }
    for (const auto& [name, a] : impl_->f32->arrays()) impl_->f32->ops().from_host(a.data, f[name].data(), a.size);
    impl_->f32->set_step_count(d.step);
    for (const auto& [name, v] : extras) *v = extra[name];
    return;
  }
  impl_->st = std::move(next);
  impl_->k = d.step;
  for (const auto& [name, v] : extras) *v = extra[name];
}

}  // namespace gcomp
