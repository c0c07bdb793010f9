// SPDX-License-Identifier: Apache-2.0
// The fp32 orchestration shared by the host-f32 and cuda Session backends. Every array is fp32 in
// the ops' memory space; every elementwise update is one VecOps call whose math is
// gcomp/detail/session_math.hpp; means are decode-reduces in rank order 0..P-1 times fp32(1/P).
// The update order of each algorithm is spec/ALGORITHMS.md §8, as in the double CPU backend
// (session.cpp); where fp32 needs a rounding choice, it is named in docs/algorithms.md "Backends".
#include "host/algorithms/f32_engine.hpp"

#include "host/algorithms/algorithm_state.hpp"

#include "host/common/nvtx.hpp"

#include <algorithm>
#include <cmath>

namespace gcomp::detail {

namespace {
constexpr uint32_t kServerRankId = 0xffffffffu;  // as the CPU backend: the replicated server's encoder
size_t round4(size_t b) { return (b + 3) / 4 * 4; }
}  // namespace

F32Engine::F32Engine(Communicator& comm, const Layout& layout, const SessionConfig& cfg, double alpha,
                     std::vector<int64_t> shard_begin, std::unique_ptr<VecOps> ops)
    : cfg_(cfg), ops_(std::move(ops)), shard_begin_(std::move(shard_begin)) {
  P_ = comm.size();
  rank_ = comm.rank();
  n_ = static_cast<size_t>(layout.num_elems());
  lr_ = static_cast<float>(cfg.lr);
  mu_ = static_cast<float>(cfg.momentum);
  alpha_ = static_cast<float>(alpha);
  inv_p_ = static_cast<float>(1.0 / static_cast<double>(P_));
  VecOps& o = *ops_;

  const CodecSpec up_spec = CodecSpec::parse(cfg.algorithm == Algorithm::kGd ? "identity" : cfg.codec);
  share_scale_ = cfg.shared_scale && up_spec.id == CodecId::kTernGrad && cfg.algorithm == Algorithm::kCompressedGd;
  up_ = o.add_codec(up_spec, layout, share_scale_);
  up_bytes_ = o.encoded_bytes(up_);
  if (two_way(cfg.algorithm)) {
    const CodecSpec down_spec = CodecSpec::parse(cfg.server_codec);
    if (cfg.server == ServerMode::kReplicated) {
      down_ = o.add_codec(down_spec, layout, false);
      down_bytes_ = o.encoded_bytes(down_);
    } else {
      up_bytes_ = 0;
      for (int r = 0; r < P_; ++r) {
        const Layout segs(shard_segments(layout, shard_begin_[r], shard_begin_[r + 1]));
        up_shard_.push_back(o.add_codec(up_spec, segs, false));
        down_shard_.push_back(o.add_codec(down_spec, segs, false));
        up_bytes_ = std::max(up_bytes_, o.encoded_bytes(up_shard_.back()));
        down_bytes_ = std::max(down_bytes_, o.encoded_bytes(down_shard_.back()));
      }
    }
  }
  up_stride_ = round4(up_bytes_);
  down_stride_ = round4(down_bytes_);
  const size_t per_rank = std::max(up_stride_, down_stride_);
  const size_t all = std::max<size_t>(per_rank * static_cast<size_t>(P_), 1);
  o.reserve_staging(all);
  send_ = o.alloc_bytes(all);
  recv_ = o.alloc_bytes(all);
  send2_ = o.alloc_bytes(std::max<size_t>(down_stride_, 1));
  recv2_ = o.alloc_bytes(std::max<size_t>(down_stride_ * static_cast<size_t>(P_), 1));
  for (float** b : {&gin_, &work_, &tmp_, &tmp2_, &acc_, &res_, &u_}) *b = o.alloc_f32(n_);
  keys_.resize(static_cast<size_t>(P_));
  if (cfg.algorithm == Algorithm::kHessianEc || cfg.track_norms) {
    h_a_.resize(n_);
    h_b_.resize(n_);
    h_d_.resize(n_);
    h_d2_.resize(n_);
  }

  const size_t mine = cfg.server == ServerMode::kSharded && two_way(cfg.algorithm)
                          ? static_cast<size_t>(shard_begin_[rank_ + 1] - shard_begin_[rank_])
                          : n_;
  for (const auto& [name, size] : state_arrays(cfg, n_, mine)) st_[name] = Array{o.alloc_f32(size), size};
  // Every array a step writes is saved at its start (the delay queue: only the slot it writes), so
  // a step that fails anywhere (collective, codec, callback) leaves the state as it was.
  for (const auto& [name, a] : st_) {
    const size_t size = name == "delay_queue" ? n_ : a.size;
    rollback_.push_back(Saved{name, o.alloc_f32(size), size});
  }
}

RngKey F32Engine::up_key(int r, int shard) const {
  return RngKey{cfg_.seed, static_cast<uint32_t>(r), static_cast<uint32_t>(k_),
                shard < 0 ? 0u : 16u * static_cast<uint32_t>(shard + 1)};
}

RngKey F32Engine::down_key(int shard) const {
  if (shard < 0) return RngKey{cfg_.seed, kServerRankId, static_cast<uint32_t>(k_), kStreamDownlink};
  return RngKey{cfg_.seed, static_cast<uint32_t>(shard), static_cast<uint32_t>(k_),
                16u * static_cast<uint32_t>(shard + 1) + kStreamDownlink};
}

const std::vector<RngKey>& F32Engine::up_keys(int shard) {
  for (int j = 0; j < P_; ++j) keys_[static_cast<size_t>(j)] = up_key(j, shard);
  return keys_;
}

// acc = fp32(1/P) * sum_j decode(C(src_j)) in rank order; with err: err = src - decode(C(src)).
void F32Engine::compress_mean(const float* src, float* err, StepStats& s) {
  VecOps& o = *ops_;
  {
    NvtxRange r("gcomp encode");
    if (err != nullptr)
      o.encode_ef(up_, src, err, up_key(rank_), send_);
    else if (share_scale_)
      o.encode_shared_scale(up_, src, up_key(rank_), send_);
    else
      o.encode(up_, src, up_key(rank_), send_);
  }
  if (cfg_.track_norms) s.compression_error_sq = own_error(src);
  {
    NvtxRange r("gcomp communicate");
    o.allgather(send_, recv_, up_stride_);
  }
  s.bytes_up += up_bytes_;
  s.bytes_received += up_stride_ * static_cast<size_t>(P_ - 1);
  NvtxRange r("gcomp decode");
  o.decode_reduce(up_, recv_, up_stride_, P_, up_keys(-1), acc_);
  o.scale(acc_, inv_p_, acc_, n_);
}

// §8.3/§8.4: workers send C(p) and keep e = p - C(p); the server averages the decoded messages,
// adds its error, sends C~(p~) and keeps e~ = p~ - C~(p~). result = decode(C~(p~)).
void F32Engine::two_way_round(const float* p, float* e, float* server_err, float* result, StepStats& s) {
  VecOps& o = *ops_;
  if (cfg_.server == ServerMode::kReplicated) {
    compress_mean(p, e, s);
    o.lincomb(work_, 1.0f, server_err, 1.0f, acc_, n_);
    o.encode_ef(down_, work_, server_err, down_key(), send2_);
    o.decode(down_, send2_, down_key(), result);
    s.bytes_down += down_bytes_;
    return;
  }
  for (int r = 0; r < P_; ++r) {
    const auto b = static_cast<size_t>(shard_begin_[r]);
    o.encode_ef(up_shard_[r], p + b, e + b, up_key(rank_, r), send_ + up_stride_ * static_cast<size_t>(r));
    s.bytes_up += o.encoded_bytes(up_shard_[r]);
  }
  o.alltoall(send_, recv_, up_stride_);
  s.bytes_received += up_stride_ * static_cast<size_t>(P_ - 1);
  const auto mlen = static_cast<size_t>(shard_begin_[rank_ + 1] - shard_begin_[rank_]);
  o.decode_reduce(up_shard_[rank_], recv_, up_stride_, P_, up_keys(rank_), acc_);
  o.scale(acc_, inv_p_, acc_, mlen);
  o.lincomb(work_, 1.0f, server_err, 1.0f, acc_, mlen);
  o.encode_ef(down_shard_[rank_], work_, server_err, down_key(rank_), send2_);
  o.allgather(send2_, recv2_, down_stride_);
  s.bytes_received += down_stride_ * static_cast<size_t>(P_ - 1);
  for (int r = 0; r < P_; ++r) {
    const auto b = static_cast<size_t>(shard_begin_[r]);
    o.decode(down_shard_[r], recv2_ + down_stride_ * static_cast<size_t>(r), down_key(r), result + b);
    s.bytes_down += o.encoded_bytes(down_shard_[r]);
  }
}

// |decode(own uplink message) - src|^2, summed in double in index order on the host.
double F32Engine::own_error(const float* src) {
  ops_->decode(up_, send_, up_key(rank_), res_);
  ops_->to_host(h_a_.data(), res_, n_);
  ops_->to_host(h_b_.data(), src, n_);
  double e2 = 0;
  for (size_t i = 0; i < n_; ++i) {
    const double d = static_cast<double>(h_a_[i]) - static_cast<double>(h_b_[i]);
    e2 += d * d;
  }
  return e2;
}

void F32Engine::track(StepStats& s) {
  for (const char* name : {"error", "shift_worker"}) {
    auto it = st_.find(name);
    if (it == st_.end()) continue;
    ops_->to_host(h_a_.data(), it->second.data, it->second.size);
    for (size_t i = 0; i < it->second.size; ++i) s.memory_norm_sq += static_cast<double>(h_a_[i]) * h_a_[i];
  }
}

StepStats F32Engine::run(const void* grad, GradType type) {
  NvtxRange step_range("gcomp step");
  VecOps& o = *ops_;
  StepStats s;
  o.begin_step();
  o.widen(grad, type, gin_, n_);
  if (cfg_.nonfinite == NonFinitePolicy::kZero) {
    // Finite entries are kept bit for bit, so no agreement is needed (and none is waited for).
    o.zero_nonfinite(gin_, n_);
  } else {
    int64_t bad = 0, any_bad = 0;
    o.nonfinite_agree(gin_, n_, &bad, &any_bad);
    if (any_bad && cfg_.nonfinite == NonFinitePolicy::kError)
      GCOMP_FAIL(gcompErrorNonFinite, std::string("non-finite gradient on ") + (bad ? "this rank" : "another rank") +
                                          " at step " + std::to_string(k_) + "; state unchanged");
    if (any_bad) {  // kSkip
      o.fill_zero(u_, n_);
      s.step = k_;
      s.skipped = true;
      return s;
    }
  }
  const size_t slots = static_cast<size_t>(cfg_.delay) + 1;
  auto slot_offset = [&](const std::string& name) { return name == "delay_queue" ? (k_ % slots) * n_ : size_t{0}; };
  for (const Saved& sv : rollback_) o.copy(sv.copy, st_.at(sv.name).data + slot_offset(sv.name), sv.size);
  try {
    const float* g = gin_;
    if (cfg_.delay > 0) {
      float* q = st_.at("delay_queue").data;
      o.copy(q + (k_ % slots) * n_, gin_, n_);
      const uint64_t src = k_ >= static_cast<uint64_t>(cfg_.delay) ? k_ - static_cast<uint64_t>(cfg_.delay) : 0;
      g = q + (src % slots) * n_;
    }
    const float lr = lr_, mu = mu_;
    const bool momentum = cfg_.momentum > 0;
    auto S = [&](const char* name) { return st_.at(name).data; };
    switch (cfg_.algorithm) {
      case Algorithm::kGd:
      case Algorithm::kCompressedGd:
        compress_mean(g, nullptr, s);
        if (momentum) {
          o.lincomb(S("momentum"), mu, S("momentum"), 1.0f, acc_, n_);  // m = mu m + mean
          o.scale(u_, lr, S("momentum"), n_);
        } else {
          o.scale(u_, lr, acc_, n_);
        }
        break;
      case Algorithm::kSignSgdMv:
        o.encode(up_, g, up_key(rank_), send_);
        o.allgather(send_, recv_, up_stride_);
        s.bytes_up += up_bytes_;
        s.bytes_received += up_stride_ * static_cast<size_t>(P_ - 1);
        o.decode_reduce(up_, recv_, up_stride_, P_, up_keys(-1), acc_);  // sum of signs
        o.vote(u_, acc_, lr, cfg_.tie_to_zero, n_);
        s.bytes_down += (n_ + 7) / 8;
        break;
      case Algorithm::kEfSgd: {
        float* e = S("error");
        if (momentum) {
          float* m = S("momentum");
          o.lincomb(m, mu, m, 1.0f, g, n_);  // m = mu m + g
          const float* d = m;
          if (cfg_.nesterov) {
            o.lincomb(tmp_, 1.0f, g, mu, m, n_);  // d = g + mu m
            d = tmp_;
          }
          o.lincomb(work_, lr, d, 1.0f, e, n_);  // p = lr d + e
        } else {
          o.lincomb(work_, lr, g, 1.0f, e, n_);
        }
        compress_mean(work_, e, s);
        o.copy(u_, acc_, n_);
        break;
      }
      case Algorithm::kDiana: {
        float* hi = S("shift_worker");
        float* h = S("shift_server");
        if (cfg_.track_norms) o.lincomb(tmp2_, 1.0f, g, -1.0f, hi, n_);  // delta, before h_i moves
        o.encode_diana(up_, g, hi, alpha_, up_key(rank_), send_);      // h_i += alpha Q(g - h_i)
        if (cfg_.track_norms) s.compression_error_sq = own_error(tmp2_);
        o.allgather(send_, recv_, up_stride_);
        s.bytes_up += up_bytes_;
        s.bytes_received += up_stride_ * static_cast<size_t>(P_ - 1);
        o.decode_reduce(up_, recv_, up_stride_, P_, up_keys(-1), acc_);
        o.scale(acc_, inv_p_, acc_, n_);
        o.lincomb(tmp_, 1.0f, h, 1.0f, acc_, n_);  // g^ = h + mean
        if (momentum) {
          o.lincomb(S("momentum"), mu, S("momentum"), 1.0f, tmp_, n_);
          o.scale(u_, lr, S("momentum"), n_);
        } else {
          o.scale(u_, lr, tmp_, n_);
        }
        o.lincomb(h, 1.0f, h, alpha_, acc_, n_);  // h += alpha mean
        break;
      }
      case Algorithm::kDistEfSgdm: {
        float* e = S("error");
        float* m = S("momentum");
        o.lincomb(m, mu, m, 1.0f, g, n_);  // m = mu m + g
        const float* d = m;
        if (cfg_.nesterov) {
          o.lincomb(tmp_, mu, m, 1.0f, g, n_);  // d = mu m + g
          d = tmp_;
        }
        o.lincomb(work_, 1.0f, e, lr, d, n_);  // p = e + lr d
        two_way_round(work_, e, S("server_error"), res_, s);
        o.copy(u_, res_, n_);
        break;
      }
      case Algorithm::kDoubleSqueeze: {
        float* e = S("error");
        o.lincomb(work_, 1.0f, g, 1.0f, e, n_);  // v = g + e
        two_way_round(work_, e, S("server_error"), res_, s);
        o.scale(u_, lr, res_, n_);
        break;
      }
      case Algorithm::kHessianEc: {
        NvtxRange range("gcomp update");
        float* e = S("error");
        switch (cfg_.compensation) {
          case Compensation::kNone: o.copy(work_, g, n_); break;
          case Compensation::kClassical: o.lincomb(work_, 1.0f, g, 1.0f, e, n_); break;
          case Compensation::kHessian:
          case Compensation::kDiagonal: {
            // The callbacks are host functions over double arrays: stage e (exact widening) and
            // round their result to fp32 once.
            o.to_host(h_a_.data(), e, n_);
            for (size_t i = 0; i < n_; ++i) h_d_[i] = static_cast<double>(h_a_[i]);
            if (cfg_.compensation == Compensation::kHessian)
              cfg_.hessian_product(std::span<const double>(h_d_.data(), n_), std::span<double>(h_d2_.data(), n_));
            else
              cfg_.hessian_diagonal(std::span<double>(h_d2_.data(), n_));
            for (size_t i = 0; i < n_; ++i) h_b_[i] = static_cast<float>(h_d2_[i]);
            o.from_host(tmp_, h_b_.data(), n_);
            o.scale(tmp_, lr, tmp_, n_);                          // t = lr (H e)   or lr diag(H)
            if (cfg_.compensation == Compensation::kDiagonal) o.mul(tmp_, tmp_, e, n_);  // t = t e
            o.lincomb(tmp_, 1.0f, e, -1.0f, tmp_, n_);            // t = e - t
            o.lincomb(work_, 1.0f, g, 1.0f, tmp_, n_);            // v = g + t
            break;
          }
        }
        compress_mean(work_, cfg_.compensation == Compensation::kNone ? nullptr : e, s);
        o.scale(u_, lr, acc_, n_);
        break;
      }
    }
    if (cfg_.track_norms) track(s);
    o.end_step();
  } catch (...) {
    for (const Saved& sv : rollback_) o.copy(st_.at(sv.name).data + slot_offset(sv.name), sv.copy, sv.size);
    throw;
  }
  ++k_;
  s.step = k_;
  if (n_ > 0) {
    s.bits_per_element_up = 8.0 * static_cast<double>(s.bytes_up) / static_cast<double>(n_);
    s.bits_per_element_down = 8.0 * static_cast<double>(s.bytes_down) / static_cast<double>(n_);
  }
  return s;
}

StepStats F32Engine::run_host(const float* h_grad, float* h_update) {
  ops_->from_host(gin_, h_grad, n_);
  const StepStats s = run(gin_, GradType::kF32);
  ops_->to_host(h_update, u_, n_);
  return s;
}

}  // namespace gcomp::detail
