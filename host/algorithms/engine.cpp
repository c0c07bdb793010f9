// SPDX-License-Identifier: Apache-2.0
// The Session engine (engine.hpp): every algorithm's step, written once over VecOps<T>.
//
// Each elementwise update is one VecOps call (fp32: gcomp/detail/session_math.hpp on the host and
// in the kernels, so host-f32 and cuda round identically; double: the same expressions in double);
// means are decode-reduces in rank order 0..P-1 times T(1/P). The update order of each algorithm is
// spec/ALGORITHMS.md §8, listed in docs/algorithms.md "Update orders". Keys of every message:
// gcomp/detail/session_keys.hpp.
#include "host/algorithms/engine.hpp"

#include "host/algorithms/vec_ops.hpp"
#include "host/common/nvtx.hpp"

#include <gcomp/detail/half.hpp>
#include <gcomp/gcomp.h>
#include <gcomp/detail/session_keys.hpp>

#include <algorithm>
#include <cmath>
#include <exception>
#include <functional>
#include <new>
#include <type_traits>

namespace gcomp::detail {

std::vector<int64_t> shard_segments(const Layout& layout, int64_t begin, int64_t end) {
  std::vector<int64_t> segs;
  for (size_t s = 0; s < layout.segments().size(); ++s) {
    const int64_t b = std::max(layout.segment_offset(s), begin);
    const int64_t e = std::min(layout.segment_offset(s + 1), end);
    if (e > b) segs.push_back(e - b);
  }
  if (segs.empty()) segs.push_back(0);
  return segs;
}

namespace {

/// Name and length of each state array of a rank (the checkpoint's names): n elements each, except
/// the server error of a sharded two-way run (`shard` elements, this rank's shard) and the delay
/// queue (bound + 1 slots).
std::vector<std::pair<std::string, size_t>> state_arrays(const SessionConfig& cfg, size_t n, size_t shard) {
  std::vector<std::pair<std::string, size_t>> out;
  const size_t server = cfg.server == ServerMode::kSharded ? shard : n;
  const bool momentum = cfg.momentum > 0;
  switch (cfg.algorithm) {
    case Algorithm::kGd:
    case Algorithm::kCompressedGd:
    case Algorithm::kSignSgdMv:  // Signum: the worker's momentum before the sign
      if (momentum) out.emplace_back("momentum", n);
      break;
    case Algorithm::kEfSgd:
      out.emplace_back("error", n);
      if (momentum) out.emplace_back("momentum", n);
      break;
    case Algorithm::kDiana:
      out.emplace_back("shift_worker", n);
      out.emplace_back("shift_server", n);
      if (momentum) out.emplace_back("momentum", n);
      break;
    case Algorithm::kDistEfSgdm:
      out.emplace_back("error", n);
      out.emplace_back("momentum", n);
      out.emplace_back("server_error", server);
      break;
    case Algorithm::kDoubleSqueeze:
      out.emplace_back("error", n);
      if (momentum) out.emplace_back("momentum", n);
      out.emplace_back("server_error", server);
      break;
    case Algorithm::kHessianEc: out.emplace_back("error", n); break;
  }
  if (cfg.delay > 0) out.emplace_back("delay_queue", n * static_cast<size_t>(cfg.delay + 1));
  std::sort(out.begin(), out.end());
  return out;
}

size_t round4(size_t b) { return (b + 3) / 4 * 4; }

// Every message slot ends with its sender's status word (VecOps::put_status).
constexpr size_t kStatusBytes = 4;
// A value put_status never writes: the word in the buffer is not known on the host (the device
// wrote it, VecOps::begin_agreement), so the next exchange writes its word again.
constexpr int32_t kUnknownWord = INT32_MIN;

constexpr const char* kPhaseNames[kNumPhases] = {"gcomp encode", "gcomp communicate", "gcomp decode", "gcomp update"};

template <class T>
class EngineImpl final : public Engine {
 public:
  EngineImpl(Communicator& comm, const Layout& layout, const SessionConfig& cfg, double alpha,
             std::unique_ptr<VecOps<T>> ops);

  StepStats step(std::span<const double> grad, std::span<double> update) override;
  StepStats step(std::span<const float> grad, std::span<float> update) override;
  StepStats step16(std::span<const uint16_t> grad, GradType type, std::span<double> update) override;
  StepStats step_device(const void* d_grad, GradType type, float* d_update, Stream stream) override;
  [[nodiscard]] uint64_t step_count() const override { return k_; }
  [[nodiscard]] std::vector<std::pair<std::string, std::vector<double>>> state() override;
  void load(const std::map<std::string, std::vector<double>>& arrays, uint64_t step, const std::string& what) override;
  gcompStatus_t device_status(uint64_t* index) override { return ops_->device_status(index); }

 private:
  /// A state array, double-buffered: a step writes the new value into `next` (W()) and reads the
  /// old one from `data`; commit() swaps them once the step has succeeded, so a step that fails
  /// leaves `data` as it was without saving or restoring anything. The delay queue has one buffer
  /// (next is null): the one slot a step writes is written by commit().
  struct Array {
    T* data;
    T* next;
    size_t size;
    bool written;
  };
  /// Thrown by agree() under nonfinite = skip: run() ends the step as skipped.
  struct SkipStep {};

  /// One round: grad and out in the ops' memory space. The gradient is read completely before out
  /// is written; out is written only when the step succeeds (device: at the end of the step).
  /// grad16 (step_device): the gradient is the `type` elements there instead (grad unused), widened
  /// exactly.
  StepStats run(const T* grad, T* out, const void* grad16 = nullptr, GradType type = GradType::kF32);
  /// The gradient the step reads: grad; grad16 widened exactly; with nonfinite = zero its NaN/Inf
  /// as +0. Where the ops' kernels load that view (VecOps::view_input, view_input_) nothing is
  /// written and gin_ stands for it; else the copy is written into gin_.
  const T* gradient(const T* grad, const void* grad16, GradType type);
  /// run() on host buffers (the device stages them through its own).
  StepStats run_host(const T* h_grad, T* h_update);
  /// step() of the host API for either element type E: converted to T where E is not T.
  template <class E>
  StepStats step_host(std::span<const E> grad, std::span<E> update);
  void check_sizes(size_t grad, size_t update) const;
  T* host_in();   // staging of the gradient in T, n elements, allocated at first use
  T* host_out();  // staging of the update in T

  void enter(Phase p);
  RngKey up_key(int r, int shard = -1) const;
  RngKey down_key(int shard = -1) const;
  const std::vector<RngKey>& up_keys(int shard);
  int delay_now() const;
  void compress_mean(const T* src, T* err, StepStats& s, T* u = nullptr, T b = T{1});
  /// The uplink message of src into send_ (compress_mean's encode): with err, err = src - decode.
  void encode_uplink(const T* src, T* err, StepStats& s);
  /// compress_mean(p, err, s, u, b) of p = xa x + ya y (lincomb()'s bits) with error feedback:
  /// p is formed where the encode reads it (VecOps::encode_ef_lincomb), stored in work_ only
  /// where track_norms reads it back.
  void compress_mean_ef(T xa, const T* x, T ya, const T* y, T* err, StepStats& s, T* u = nullptr, T b = T{1});
  /// compress_mean_ef's encode alone.
  void encode_uplink_ef(T xa, const T* x, T ya, const T* y, T* err, StepStats& s);
  /// acc = fp32(1/P) * sum_j decode(message_j), and with u also u = b * acc in the same pass (acc
  /// then unspecified).
  void gather_uplink(StepStats& s, T* u = nullptr, T b = T{1});
  /// The exchange of the uplink message in send_ (gather_uplink's first half); returns the
  /// received sizes for the decode (nullptr: every message full) and enters Phase::kDecode.
  const size_t* exchange_uplink(StepStats& s);
  /// The two-way round of p = xa x + ya y (lincomb()'s bits): e = p - C(p) (the worker's new
  /// error), server error se -> se_out, u = a * decode(C~(p~)).
  void two_way_round(T xa, const T* x, T ya, const T* y, T* e, const T* se, T* se_out, T* u, T a, StepStats& s);
  void hessian_term(const T* e, T* t);
  double own_error(const T* src);
  void track(StepStats& s);
  /// State `name` as the step found it.
  T* S(const char* name) { return st_.at(name).data; }
  /// The buffer the step writes state `name` into (its new value; S() keeps the old one).
  T* W(const char* name) {
    Array& a = st_.at(name);
    a.written = true;
    return a.next;
  }
  /// The step succeeded: every array it wrote takes its new value; the delay queue's slot of this
  /// step takes `queued`, the gradient the step was given.
  void commit(const T* queued);
  /// The step failed: the new values are dropped (the state is as it was).
  void discard();
  /// A failure of this rank's part of a step (local()) that is a non-finite gradient, found
  /// without a pass of its own: the codec refused its input (every input of a worker encode is
  /// non-finite when the gradient is), and a scan of the gradient then tells a non-finite
  /// gradient from an overflow of the algorithm's own values.
  void classify_failure(gcompStatus_t status);
  /// The status word this rank sends: kNonFiniteGradientWord when classify_failure() found its
  /// gradient non-finite, else its kept failure's status (0 when none).
  [[nodiscard]] int32_t status_word() const { return grad_nonfinite_ ? kNonFiniteGradientWord : failed_status_; }
  /// The non-finite agreement of a late-agreement step, on the status words of its first
  /// exchange (peer_status_): when any rank's word is kNonFiniteGradientWord, the policy decides the
  /// step on every rank alike (error: gcompErrorNonFinite; skip: SkipStep). Else nothing.
  void agree();
  /// This rank's part of a step before a collective (encodes, callbacks). A failure is kept, not
  /// thrown, so that the rank still joins the collective that follows and tells every rank (the
  /// status word of its messages); exchange() then fails the step on every rank alike. Once a
  /// part failed, the later ones of the step are not run.
  template <class F>
  void local(F&& f);
  /// allgather (all_to_all = false: one slot) or alltoall (P slots) of `stride`-byte slots, with
  /// this rank's status word; afterwards, when any rank's status is not success, every rank
  /// throws: the failed rank its own error, the others one naming the first failed rank.
  void exchange(bool all_to_all, uint8_t* send, uint8_t* recv, size_t stride, int32_t& sent);
  /// exchange() of variable-length messages (allgatherv / alltoallv): the message of slot j is
  /// used[j] bytes, followed by this rank's status word; a failed rank sends the word alone.
  /// Afterwards recv_sizes_[j] is the size of the message received in slot j (without its word).
  /// A peer's size above the slot or shorter than a status word is gcompErrorCorruptPayload.
  void exchange_v(bool all_to_all, uint8_t* send, size_t* used, uint8_t* recv, size_t stride);
  /// After a collective: this rank's kept failure, else the first failed rank's status, is thrown.
  void verdict();
  /// The used size of codec c's message in `payload` (as local(): a failure is kept).
  size_t used_of(int c, const uint8_t* payload);
  size_t others(const std::vector<size_t>& sizes, size_t extra) const;

  SessionConfig cfg_;
  std::unique_ptr<VecOps<T>> ops_;
  int P_ = 1, rank_ = 0;
  size_t n_ = 0;
  uint64_t k_ = 0;
  T lr_{}, mu_{}, one_minus_mu_{}, alpha_{}, inv_p_{};
  bool share_scale_ = false;
  int delay_bound_ = 0;
  // Every consumer of the gradient in this configuration loads the ops' gradient view (device):
  // not the delay queue (it stores the gradient) nor track_norms (it reads it back on the host).
  bool view_input_ = false;

  int up_ = -1, down_ = -1;  // whole-vector codecs
  std::vector<int> up_shard_, down_shard_;
  std::vector<int64_t> shard_begin_;        // P + 1 offsets (sharded two-way only)
  size_t up_bytes_ = 0, down_bytes_ = 0;    // message sizes (sharded: max over shards)
  size_t up_stride_ = 0, down_stride_ = 0;  // rounded up to 4 bytes (device decode_reduce), + status word

  T *gin_ = nullptr, *work_ = nullptr, *tmp_ = nullptr, *tmp2_ = nullptr, *acc_ = nullptr, *res_ = nullptr,
    *u_ = nullptr;
  uint8_t *send_ = nullptr, *recv_ = nullptr, *send2_ = nullptr, *recv2_ = nullptr;
  int32_t sent_status_ = 0, sent2_status_ = 0;  // the status words now in send_ / send2_
  std::exception_ptr failed_;                   // local(): this step's failure, not yet reported
  int32_t failed_status_ = 0;
  // Late non-finite agreement (fp32 state: host-f32 and cuda; no delay, not hessian-ec;
  // docs/algorithms.md "Non-finite gradients"): the step runs its local part first and agrees on
  // the status words of its first exchange (no collective of its own), the gradient's non-finite
  // check folded into the codec's encode (device: the word found on the device,
  // VecOps::begin_agreement).
  bool late_agreement_ = false;
  bool agree_pending_ = false;   // this step has not agreed yet
  bool grad_nonfinite_ = false;  // this rank's gradient holds NaN/Inf (late agreement)
  const T* grad_ = nullptr;      // the gradient of the step in progress
  std::vector<int32_t> peer_status_;
  // Variable-length codecs (sdither, topk index=rice): their messages travel at their used size
  // (allgatherv / alltoallv); fixed-size codecs keep the plain collectives.
  bool up_var_ = false, down_var_ = false;
  std::vector<size_t> used_, send_sizes_, recv_sizes_;  // P entries each (host)
  std::vector<RngKey> keys_;
  std::vector<size_t> down_offsets_;  // P + 1 shard offsets (decode_scale)
  std::vector<T> h_a_, h_b_;          // host scratch: norms (and hessian callbacks of fp32 state)
  std::vector<double> h_d_, h_d2_;    // hessian callbacks of fp32 state
  std::vector<T> h_in_, h_out_;       // staging of the host API (first use)

  std::map<std::string, Array> st_;
  NvtxPhase nvtx_;
};

template <class T>
EngineImpl<T>::EngineImpl(Communicator& comm, const Layout& layout, const SessionConfig& cfg, double alpha,
                          std::unique_ptr<VecOps<T>> ops)
    : cfg_(cfg), ops_(std::move(ops)) {
  P_ = comm.size();
  rank_ = comm.rank();
  n_ = static_cast<size_t>(layout.num_elems());
  lr_ = static_cast<T>(cfg.lr);
  mu_ = static_cast<T>(cfg.momentum);
  one_minus_mu_ = static_cast<T>(1.0 - cfg.momentum);
  alpha_ = static_cast<T>(alpha);
  inv_p_ = static_cast<T>(1.0 / static_cast<double>(P_));
  delay_bound_ = cfg.delay;
  VecOps<T>& o = *ops_;
  if (cfg.time_phases) o.enable_timing();

  const CodecSpec up_spec = CodecSpec::parse(cfg.algorithm == Algorithm::kGd ? "identity" : cfg.codec);
  share_scale_ = cfg.shared_scale && up_spec.id() == CodecId::kTernGrad && cfg.algorithm == Algorithm::kCompressedGd;
  up_ = o.add_codec(up_spec, layout, share_scale_);
  up_bytes_ = o.encoded_bytes(up_);
  if (two_way(cfg.algorithm)) {
    const CodecSpec down_spec = CodecSpec::parse(cfg.server_codec);
    if (cfg.server == ServerMode::kReplicated) {
      down_ = o.add_codec(down_spec, layout, false);
      down_bytes_ = o.encoded_bytes(down_);
    } else {
      shard_begin_.resize(static_cast<size_t>(P_) + 1);
      for (int r = 0; r <= P_; ++r) shard_begin_[static_cast<size_t>(r)] = shard_begin(layout.num_elems(), P_, r);
      up_bytes_ = 0;
      for (int r = 0; r < P_; ++r) {
        const Layout segs(
            shard_segments(layout, shard_begin_[static_cast<size_t>(r)], shard_begin_[static_cast<size_t>(r) + 1]));
        up_shard_.push_back(o.add_codec(up_spec, segs, false));
        down_shard_.push_back(o.add_codec(down_spec, segs, false));
        up_bytes_ = std::max(up_bytes_, o.encoded_bytes(up_shard_.back()));
        down_bytes_ = std::max(down_bytes_, o.encoded_bytes(down_shard_.back()));
      }
    }
  }
  up_stride_ = round4(up_bytes_) + kStatusBytes;
  down_stride_ = round4(down_bytes_) + kStatusBytes;
  peer_status_.assign(static_cast<size_t>(P_), 0);
  up_var_ = o.variable_length(up_);  // the shards' codecs share the whole-vector one's spec
  if (two_way(cfg.algorithm))
    down_var_ = o.variable_length(cfg.server == ServerMode::kReplicated ? down_ : down_shard_.front());
  used_.assign(static_cast<size_t>(P_), 0);
  send_sizes_.assign(static_cast<size_t>(P_), 0);
  recv_sizes_.assign(static_cast<size_t>(P_), 0);
  const size_t per_rank = std::max(up_stride_, down_stride_);
  const size_t all = std::max<size_t>(per_rank * static_cast<size_t>(P_), 1);
  o.reserve_staging(all);
  send_ = o.alloc_bytes(all);
  recv_ = o.alloc_bytes(all);
  if (two_way(cfg.algorithm)) {
    send2_ = o.alloc_bytes(std::max<size_t>(down_stride_, 1));
    recv2_ = o.alloc_bytes(std::max<size_t>(down_stride_ * static_cast<size_t>(P_), 1));
  }
  // Work buffers, each only where an algorithm uses it.
  const Algorithm a = cfg.algorithm;
  const bool momentum = cfg.momentum > 0;
  if (cfg.nonfinite == NonFinitePolicy::kZero || o.on_device()) gin_ = o.alloc(n_);
  acc_ = o.alloc(n_);
  if (a == Algorithm::kEfSgd || two_way(a) || a == Algorithm::kHessianEc) work_ = o.alloc(n_);
  // dist-ef-sgdm keeps its momentum array at every mu (mu = 0 included), so its Nesterov direction
  // needs tmp_ whatever the momentum.
  if (((a == Algorithm::kEfSgd || a == Algorithm::kDoubleSqueeze) && momentum) || a == Algorithm::kDistEfSgdm)
    tmp_ = o.alloc(n_);
  if (a == Algorithm::kDiana || a == Algorithm::kHessianEc) tmp_ = o.alloc(n_);
  if (a == Algorithm::kDiana && cfg.track_norms) tmp2_ = o.alloc(n_);
  if (cfg.track_norms) res_ = o.alloc(n_);
  // The engine's own update buffer: on the device (the host API's steps run into it, and with a
  // host communicator every step, its errors surfacing at the end of the step), and for a delayed
  // step whose update buffer is the caller's gradient (run()).
  if (o.on_device() || !o.update_in_caller_buffer() || delay_bound_ > 0) u_ = o.alloc(n_);
  keys_.resize(static_cast<size_t>(P_));
  if (cfg.track_norms) {
    h_a_.resize(n_);
    h_b_.resize(n_);
  }
  if (a == Algorithm::kHessianEc && !std::is_same_v<T, double>) {
    h_a_.resize(n_);
    h_b_.resize(n_);
    h_d_.resize(n_);
    h_d2_.resize(n_);
  }

  const size_t mine =
      cfg.server == ServerMode::kSharded && two_way(a)
          ? static_cast<size_t>(shard_begin_[static_cast<size_t>(rank_) + 1] - shard_begin_[static_cast<size_t>(rank_)])
          : n_;
  // Every array a step may write has a second buffer that takes its new value (Array), so a step
  // that fails anywhere (collective, codec, callback, a peer's corrupt payload after the last
  // collective) leaves the state as it was, with no copy of it per step.
  for (const auto& [name, size] : state_arrays(cfg, n_, mine))
    st_[name] = Array{o.alloc(size), name == "delay_queue" ? nullptr : o.alloc(size), size, false};
  late_agreement_ = std::is_same_v<T, float> && (o.synchronous_errors() || o.agrees_on_device()) &&
                    cfg.nonfinite != NonFinitePolicy::kZero && delay_bound_ == 0 && a != Algorithm::kHessianEc;
  view_input_ = delay_bound_ == 0 && !cfg.track_norms;
}

template <class T>
void EngineImpl<T>::commit(const T* queued) {
  for (auto& [name, arr] : st_) {
    if (arr.next == nullptr) {  // the delay queue
      const size_t slots = static_cast<size_t>(delay_bound_) + 1;
      ops_->copy(arr.data + (k_ % slots) * n_, queued, n_);
    } else if (arr.written) {
      std::swap(arr.data, arr.next);
      arr.written = false;
    }
  }
}

template <class T>
void EngineImpl<T>::discard() {
  for (auto& kv : st_) kv.second.written = false;
}

template <class T>
void EngineImpl<T>::enter(Phase p) {
  nvtx_.enter(kPhaseNames[static_cast<int>(p)]);
  ops_->phase(p);
}

template <class T>
RngKey EngineImpl<T>::up_key(int r, int shard) const {
  const auto k = static_cast<uint32_t>(k_);
  return shard < 0 ? uplink_key(cfg_.seed, static_cast<uint32_t>(r), k)
                   : uplink_shard_key(cfg_.seed, static_cast<uint32_t>(r), k, shard);
}

template <class T>
RngKey EngineImpl<T>::down_key(int shard) const {
  const auto k = static_cast<uint32_t>(k_);
  return shard < 0 ? downlink_key(cfg_.seed, k) : downlink_shard_key(cfg_.seed, k, shard);
}

template <class T>
const std::vector<RngKey>& EngineImpl<T>::up_keys(int shard) {
  for (int j = 0; j < P_; ++j) keys_[static_cast<size_t>(j)] = up_key(j, shard);
  return keys_;
}

// tau_k^i of this rank at the current step (spec §7.1).
template <class T>
int EngineImpl<T>::delay_now() const {
  switch (cfg_.delay_mode) {
    case DelayMode::kFixed: return cfg_.delay;
    case DelayMode::kTable: {
      const size_t rows = cfg_.delay_table.size() / static_cast<size_t>(P_);
      return cfg_.delay_table[static_cast<size_t>(k_ % rows) * static_cast<size_t>(P_) + static_cast<size_t>(rank_)];
    }
    case DelayMode::kRandom:
      return static_cast<int>(random_delay(cfg_.seed, static_cast<uint32_t>(rank_), static_cast<uint32_t>(k_),
                                           static_cast<uint32_t>(cfg_.delay)));
  }
  return cfg_.delay;
}

template <class T>
template <class F>
void EngineImpl<T>::local(F&& f) {
  if (failed_) return;
  try {
    f();
  } catch (const Error& e) {
    failed_ = std::current_exception();
    failed_status_ = e.status();
    classify_failure(e.status());
  } catch (const std::bad_alloc&) {
    failed_ = std::current_exception();
    failed_status_ = gcompErrorOutOfMemory;
  } catch (...) {
    failed_ = std::current_exception();
    failed_status_ = gcompErrorInternal;
  }
}

template <class T>
void EngineImpl<T>::classify_failure(gcompStatus_t status) {
  if (agree_pending_ && status == gcompErrorNonFinite) grad_nonfinite_ = ops_->has_nonfinite(grad_, n_);
}

template <class T>
void EngineImpl<T>::agree() {
  if (!agree_pending_) return;
  agree_pending_ = false;
  const bool decided =
      std::find(peer_status_.begin(), peer_status_.end(), kNonFiniteGradientWord) != peer_status_.end();
  ops_->end_agreement(decided);
  if (!decided) return;
  // The policy decides the step; this rank's kept failure (its codec refusing the non-finite
  // input) and any other rank's failure are not reported. This rank's word is its own slot's
  // (the device classifies its gradient there, not on the host).
  const bool mine = grad_nonfinite_ || peer_status_[static_cast<size_t>(rank_)] == kNonFiniteGradientWord;
  failed_ = nullptr;
  failed_status_ = 0;
  grad_nonfinite_ = false;
  if (cfg_.nonfinite == NonFinitePolicy::kError)
    GCOMP_FAIL(gcompErrorNonFinite, std::string("non-finite gradient on ") + (mine ? "this rank" : "another rank") +
                                        " at step " + std::to_string(k_) + "; state unchanged");
  throw SkipStep{};
}

template <class T>
void EngineImpl<T>::exchange(bool all_to_all, uint8_t* send, uint8_t* recv, size_t stride, int32_t& sent) {
  VecOps<T>& o = *ops_;
  const int slots = all_to_all ? P_ : 1;
  const int32_t word = status_word();
  // The words stay in the buffer: rewritten only when they change, and in an agreeing exchange
  // (the device may write the word of its own finding).
  if (sent != word || agree_pending_) {
    o.put_status(send, stride, slots, word);
    sent = agree_pending_ && o.agrees_on_device() ? kUnknownWord : word;
  }
  if (all_to_all)
    o.alltoall(send, recv, stride);
  else
    o.allgather(send, recv, stride);
  o.get_status(recv, stride, P_, peer_status_.data());
  verdict();
}

template <class T>
void EngineImpl<T>::exchange_v(bool all_to_all, uint8_t* send, size_t* used, uint8_t* recv, size_t stride) {
  VecOps<T>& o = *ops_;
  const int slots = all_to_all ? P_ : 1;
  const int32_t word = status_word();
  for (int j = 0; j < slots; ++j) {
    const auto J = static_cast<size_t>(j);
    if (failed_) used[J] = 0;  // the status word alone
    send_sizes_[J] = used[J] + kStatusBytes;
    o.put_status(send + stride * J, send_sizes_[J], 1, word);  // right after the message
  }
  try {
    if (all_to_all)
      o.alltoallv(send, send_sizes_.data(), recv, stride, recv_sizes_.data());
    else
      o.allgatherv(send, send_sizes_[0], recv, stride, recv_sizes_.data());
  } catch (const Error& e) {
    // The engine's own messages never exceed their slot: a size above the bound is a peer's
    // corrupt message (the communicator refuses it on every rank before any data moves).
    if (e.status() != gcompErrorInvalidArgument) throw;
    GCOMP_FAIL(gcompErrorCorruptPayload, std::string("a peer's message size is impossible: ") + e.what());
  }
  int short_from = -1;
  for (int j = 0; j < P_; ++j) {
    size_t& got = recv_sizes_[static_cast<size_t>(j)];
    if (got < kStatusBytes) {
      if (short_from < 0) short_from = j;
      peer_status_[static_cast<size_t>(j)] = gcompSuccess;
      got = 0;
      continue;
    }
    o.get_status(recv + stride * static_cast<size_t>(j), got, 1, &peer_status_[static_cast<size_t>(j)]);
    got -= kStatusBytes;
  }
  agree();  // before the check of the sizes, as the agreement came before the exchange
  if (short_from >= 0 && !failed_)
    GCOMP_FAIL(gcompErrorCorruptPayload, "step " + std::to_string(k_) + ": the message of rank " +
                                             std::to_string(short_from) +
                                             " is shorter than its status word; state unchanged");
  verdict();
}

template <class T>
void EngineImpl<T>::verdict() {
  agree();
  if (failed_) {
    std::exception_ptr e = failed_;
    failed_ = nullptr;
    failed_status_ = 0;
    std::rethrow_exception(e);
  }
  for (int r = 0; r < P_; ++r) {
    const int32_t st = peer_status_[static_cast<size_t>(r)];
    if (st == gcompSuccess) continue;
    // A word that is no status (a corrupt message) is reported as such.
    const bool known = (st >= gcompErrorInvalidArgument && st <= gcompErrorOutOfMemory) || st == gcompErrorCuda;
    GCOMP_FAIL(known ? static_cast<gcompStatus_t>(st) : gcompErrorCorruptPayload,
               "step " + std::to_string(k_) + " failed on " +
                   (r == rank_ ? std::string("this rank") : "rank " + std::to_string(r)) +
                   (known ? std::string(" (") + gcompGetErrorString(static_cast<gcompStatus_t>(st)) + ")"
                          : " (its message carries an unknown status word " + std::to_string(st) + ")") +
                   "; every rank fails this step; state unchanged");
  }
}

template <class T>
size_t EngineImpl<T>::used_of(int c, const uint8_t* payload) {
  size_t used = 0;
  local([&] { used = ops_->used_bytes(c, payload); });
  return used;
}

// Bytes the collective delivered from the ranks other than this one (`extra` more per message).
template <class T>
size_t EngineImpl<T>::others(const std::vector<size_t>& sizes, size_t extra) const {
  size_t sum = 0;
  for (int j = 0; j < P_; ++j)
    if (j != rank_) sum += sizes[static_cast<size_t>(j)] + extra;
  return sum;
}

// acc = T(1/P) * sum_j decode(C(src_j)) in rank order; with err: err = src - decode(C(src)).
template <class T>
void EngineImpl<T>::compress_mean(const T* src, T* err, StepStats& s, T* u, T b) {
  encode_uplink(src, err, s);
  // acc = fp32(1/P) * sum; with u: u = b * (fp32(1/P) * sum) in the same pass, acc then unspecified
  // (the update of compressed-gd, hessian-ec and ef-sgd, which read acc no further)
  gather_uplink(s, u, b);
}

template <class T>
void EngineImpl<T>::encode_uplink(const T* src, T* err, StepStats& s) {
  VecOps<T>& o = *ops_;
  enter(Phase::kEncode);
  local([&] {
    if (err != nullptr)
      o.encode_ef(up_, src, err, up_key(rank_), send_);
    else if (share_scale_)
      o.encode_shared_scale(up_, src, up_key(rank_), send_);
    else
      o.encode(up_, src, up_key(rank_), send_);
    if (cfg_.track_norms) s.compression_error_sq = own_error(src);
  });
}

template <class T>
void EngineImpl<T>::compress_mean_ef(T xa, const T* x, T ya, const T* y, T* err, StepStats& s, T* u, T b) {
  encode_uplink_ef(xa, x, ya, y, err, s);
  gather_uplink(s, u, b);
}

template <class T>
void EngineImpl<T>::encode_uplink_ef(T xa, const T* x, T ya, const T* y, T* err, StepStats& s) {
  VecOps<T>& o = *ops_;
  if (cfg_.track_norms) {  // own_error() compares p with its decode
    o.lincomb(work_, xa, x, ya, y, n_);
    encode_uplink(work_, err, s);
    return;
  }
  enter(Phase::kEncode);
  local([&] { o.encode_ef_lincomb(up_, xa, x, ya, y, err, work_, up_key(rank_), send_, n_); });
}

// The one-way exchange of the uplink message in send_: every rank's message into recv_ (at its
// used size for a variable-length codec), counted, then acc_ = fp32(1/P) * sum_j decode(message_j)
// in rank order (and u = b * that when u is given).
template <class T>
void EngineImpl<T>::gather_uplink(StepStats& s, T* u, T b) {
  const size_t* sizes = exchange_uplink(s);
  ops_->decode_reduce_scale(up_, recv_, up_stride_, P_, sizes, up_keys(-1), inv_p_, acc_, b, u, n_);
}

template <class T>
const size_t* EngineImpl<T>::exchange_uplink(StepStats& s) {
  if (up_var_) {
    used_[0] = used_of(up_, send_);
    enter(Phase::kComm);
    exchange_v(false, send_, used_.data(), recv_, up_stride_);
    s.bytes_up += used_[0];
    s.bytes_received += others(recv_sizes_, kStatusBytes);
  } else {
    enter(Phase::kComm);
    exchange(false, send_, recv_, up_stride_, sent_status_);
    s.bytes_up += up_bytes_;
    s.bytes_received += up_stride_ * static_cast<size_t>(P_ - 1);
  }
  enter(Phase::kDecode);
  return up_var_ ? recv_sizes_.data() : nullptr;
}

// §8.3/§8.4: workers send C(p) and keep e = p - C(p); the server averages the decoded messages,
// adds its error, sends C~(p~) and keeps e~ = p~ - C~(p~). u = a * decode(C~(p~)), decoded and
// scaled in one pass. e and se_out are the second buffers of the error arrays.
template <class T>
void EngineImpl<T>::two_way_round(T xa, const T* x, T ya, const T* y, T* e, const T* se, T* se_out, T* u, T a,
                                  StepStats& s) {
  VecOps<T>& o = *ops_;
  if (cfg_.server == ServerMode::kReplicated) {
    // Every rank runs the whole-vector server step on the allgathered messages; the downlink message
    // is computed (and counted) but need not travel.
    encode_uplink_ef(xa, x, ya, y, e, s);  // p = xa x + ya y
    const size_t* sizes = exchange_uplink(s);
    // p~ = e~ + mean, as in the sharded round: where the encode reads it (host fp32), else in one
    // pass into work_ (device: in the decode's store), then encoded.
    if (o.mean_add_fusable(up_, recv_, up_stride_, P_, sizes, n_)) {
      enter(Phase::kEncode);
      o.encode_ef_mean_add(up_, recv_, up_stride_, P_, sizes, up_keys(-1), inv_p_, se, down_, down_key(), send2_,
                           se_out, n_);
    } else {
      o.decode_mean_add(up_, recv_, up_stride_, P_, sizes, up_keys(-1), inv_p_, acc_, se, work_, n_);
      enter(Phase::kEncode);
      o.encode_ef(down_, work_, se_out, down_key(), send2_);
    }
    enter(Phase::kDecode);
    const RngKey key = down_key();
    const size_t whole[2] = {0, n_};
    o.decode_scale(&down_, 1, send2_, down_stride_, nullptr, &key, whole, a, u);
    s.bytes_down += down_var_ ? o.used_bytes(down_, send2_) : down_bytes_;  // what it would send
    return;
  }
  // Sharded: shard r of every worker's message goes to rank r (alltoall), rank r runs the server
  // step of its shard and every rank gathers the P compressed shards (allgather). Variable-length
  // codecs: alltoallv and allgatherv at the used sizes.
  // The worker's shards of p are encoded where p is produced (host fp32: never stored).
  enter(Phase::kEncode);
  for (int r = 0; r < P_; ++r) {
    const auto b = static_cast<size_t>(shard_begin_[static_cast<size_t>(r)]);
    const auto len = static_cast<size_t>(shard_begin_[static_cast<size_t>(r) + 1]) - b;
    const int c = up_shard_[static_cast<size_t>(r)];
    uint8_t* slot = send_ + up_stride_ * static_cast<size_t>(r);
    local([&] { o.encode_ef_lincomb(c, xa, x + b, ya, y + b, e + b, work_ + b, up_key(rank_, r), slot, len); });
    if (up_var_) used_[static_cast<size_t>(r)] = used_of(c, slot);
  }
  enter(Phase::kComm);
  if (up_var_) {
    exchange_v(true, send_, used_.data(), recv_, up_stride_);
    for (int r = 0; r < P_; ++r) s.bytes_up += used_[static_cast<size_t>(r)];
    s.bytes_received += others(recv_sizes_, kStatusBytes);
  } else {
    exchange(true, send_, recv_, up_stride_, sent_status_);
    for (int r = 0; r < P_; ++r) s.bytes_up += o.encoded_bytes(up_shard_[static_cast<size_t>(r)]);
    s.bytes_received += up_stride_ * static_cast<size_t>(P_ - 1);
  }
  enter(Phase::kDecode);
  const auto mlen =
      static_cast<size_t>(shard_begin_[static_cast<size_t>(rank_) + 1] - shard_begin_[static_cast<size_t>(rank_)]);
  const int up_mine = up_shard_[static_cast<size_t>(rank_)];
  const int mine = down_shard_[static_cast<size_t>(rank_)];
  const size_t* sizes = up_var_ ? recv_sizes_.data() : nullptr;
  // p~ = e~ + mean of the shard's messages; C~(p~) and e~ = p~ - C~(p~). Where the ops can, p~ is
  // produced where the encode reads it, never stored (the time counts as encode); else in one
  // pass into work_ (p is read no more), then encoded.
  if (o.mean_add_fusable(up_mine, recv_, up_stride_, P_, sizes, mlen)) {
    enter(Phase::kEncode);
    local([&] {
      o.encode_ef_mean_add(up_mine, recv_, up_stride_, P_, sizes, up_keys(rank_), inv_p_, se, mine, down_key(rank_),
                           send2_, se_out, mlen);
    });
  } else {
    o.decode_mean_add(up_mine, recv_, up_stride_, P_, sizes, up_keys(rank_), inv_p_, acc_, se, work_, mlen);
    enter(Phase::kEncode);
    local([&] { o.encode_ef(mine, work_, se_out, down_key(rank_), send2_); });
  }
  if (down_var_) {
    used_[0] = used_of(mine, send2_);
    enter(Phase::kComm);
    exchange_v(false, send2_, used_.data(), recv2_, down_stride_);
    s.bytes_received += others(recv_sizes_, kStatusBytes);
  } else {
    enter(Phase::kComm);
    exchange(false, send2_, recv2_, down_stride_, sent2_status_);
    s.bytes_received += down_stride_ * static_cast<size_t>(P_ - 1);
  }
  enter(Phase::kDecode);
  down_offsets_.resize(static_cast<size_t>(P_) + 1);
  for (int r = 0; r < P_; ++r) {
    const auto R = static_cast<size_t>(r);
    keys_[R] = down_key(r);
    down_offsets_[R] = static_cast<size_t>(shard_begin_[R]);
    s.bytes_down += down_var_ ? recv_sizes_[R] : o.encoded_bytes(down_shard_[R]);
  }
  down_offsets_[static_cast<size_t>(P_)] = n_;
  o.decode_scale(down_shard_.data(), P_, recv2_, down_stride_, down_var_ ? recv_sizes_.data() : nullptr, keys_.data(),
                 down_offsets_.data(), a, u);
}

// hessian-ec's compensation t = A e - ... : t = e - lr (H e) (kHessian) or e - (lr diag(H)) e
// (kDiagonal). The callbacks are host functions over double arrays: double state is passed as is,
// fp32 state is widened (exactly) and their result rounded to fp32 once.
template <class T>
void EngineImpl<T>::hessian_term(const T* e, T* t) {
  VecOps<T>& o = *ops_;
  if constexpr (std::is_same_v<T, double>) {
    if (cfg_.compensation == Compensation::kHessian)
      cfg_.hessian_product(std::span<const double>(e, n_), std::span<double>(t, n_));
    else
      cfg_.hessian_diagonal(std::span<double>(t, n_));
  } else {
    o.to_host(h_a_.data(), e, n_);
    for (size_t i = 0; i < n_; ++i) h_d_[i] = static_cast<double>(h_a_[i]);
    if (cfg_.compensation == Compensation::kHessian)
      cfg_.hessian_product(std::span<const double>(h_d_.data(), n_), std::span<double>(h_d2_.data(), n_));
    else
      cfg_.hessian_diagonal(std::span<double>(h_d2_.data(), n_));
    for (size_t i = 0; i < n_; ++i) h_b_[i] = static_cast<T>(h_d2_[i]);
    o.from_host(t, h_b_.data(), n_);
  }
  o.scale(t, lr_, t, n_);                                                // t = lr (H e)  or lr diag(H)
  if (cfg_.compensation == Compensation::kDiagonal) o.mul(t, t, e, n_);  // t = t e
  o.lincomb(t, T{1}, e, T{-1}, t, n_);                                   // t = e - t
}

// |decode(own uplink message) - src|^2, summed in double in index order on the host.
template <class T>
double EngineImpl<T>::own_error(const T* src) {
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

template <class T>
void EngineImpl<T>::track(StepStats& s) {
  for (const char* name : {"error", "shift_worker"}) {
    auto it = st_.find(name);
    if (it == st_.end()) continue;
    const Array& a = it->second;  // the value this step leaves (not committed yet)
    ops_->to_host(h_a_.data(), a.written ? a.next : a.data, a.size);
    for (size_t i = 0; i < it->second.size; ++i)
      s.memory_norm_sq += static_cast<double>(h_a_[i]) * static_cast<double>(h_a_[i]);
  }
}

template <class T>
const T* EngineImpl<T>::gradient(const T* grad, const void* grad16, GradType type) {
  VecOps<T>& o = *ops_;
  const bool zero = cfg_.nonfinite == NonFinitePolicy::kZero;
  if (grad16 == nullptr && !zero) return grad;
  const void* src = grad16 != nullptr ? grad16 : static_cast<const void*>(grad);
  if (grad16 == nullptr) type = GradType::kF32;
  if (view_input_ && o.view_input(gin_, src, type, zero, n_)) return gin_;
  if (grad16 != nullptr) o.widen(grad16, type, gin_, n_);
  // Finite entries are kept bit for bit and every rank runs the step, so no agreement is needed
  // (and none is waited for).
  if (zero) o.zero_nonfinite(gin_, grad16 != nullptr ? gin_ : grad, n_);
  return gin_;
}

template <class T>
StepStats EngineImpl<T>::run(const T* grad, T* out, const void* grad16, GradType type) {
  NvtxRange step_range("gcomp step");
  struct ClosePhase {  // the phase ranges nest inside the step range, also on an exception
    NvtxPhase& p;
    ~ClosePhase() { p.close(); }
  } close_phase{nvtx_};
  VecOps<T>& o = *ops_;
  StepStats s;
  failed_ = nullptr;
  failed_status_ = 0;
  o.begin_step();
  enter(Phase::kEncode);
  // The gradient the step reads: the caller's, widened (bf16 / f16), or (nonfinite = zero) with
  // NaN/Inf -> 0; a view the kernels load where they all can, else a copy (gradient()).
  const T* g = gradient(grad, grad16, type);
  if (cfg_.nonfinite == NonFinitePolicy::kZero) {
    // every rank runs the step: no agreement
  } else if (late_agreement_) {
    agree_pending_ = true;  // agree(), on the status words of the first exchange
    grad_nonfinite_ = false;
    grad_ = g;
    o.begin_agreement(g, n_);
  } else {
    enter(Phase::kComm);
    int64_t bad = 0, any_bad = 0;
    o.nonfinite_agree(g, n_, &bad, &any_bad);
    if (any_bad && cfg_.nonfinite == NonFinitePolicy::kError)
      GCOMP_FAIL(gcompErrorNonFinite, std::string("non-finite gradient on ") + (bad ? "this rank" : "another rank") +
                                          " at step " + std::to_string(k_) + "; state unchanged");
    if (any_bad) {  // kSkip
      o.fill_zero(out, n_);
      s.step = k_;
      s.skipped = true;
      return s;
    }
    enter(Phase::kEncode);
  }
  // Where the update is computed: the caller's buffer when no error is thrown once the update is
  // being written (VecOps::update_in_caller_buffer: host, or a device communicator), else the
  // engine's own, copied out last. Also the engine's own when the step keeps its gradient for a
  // later step (the delay queue takes it at commit(), after the update is computed) and the
  // caller's update buffer overlaps that gradient (Session::step allows update to alias grad).
  const auto overlap = [&] {
    const std::less<const T*> before;
    return before(out, g + n_) && before(g, out + n_);
  };
  T* const u = o.update_in_caller_buffer() && !(delay_bound_ > 0 && overlap()) ? out : u_;
  const T* const given = g;  // what the delay queue keeps of this step (commit())
  try {
    if (delay_bound_ > 0) {
      // Bounded delay (spec §7.1): keep the last bound + 1 gradients; consume the one given at
      // step max(0, k - tau_k), encoded with the RNG step k at which it is consumed. The queue's
      // slot of this step is written when the step succeeds; this step's gradient is read where
      // it is (the slot it overwrites, step k - bound - 1's, is older than any step consumes).
      const size_t slots = static_cast<size_t>(delay_bound_) + 1;
      const auto tau = static_cast<uint64_t>(delay_now());
      const uint64_t src = k_ >= tau ? k_ - tau : 0;
      if (src != k_) g = S("delay_queue") + (src % slots) * n_;
    }
    const T lr = lr_, mu = mu_;
    const bool momentum = cfg_.momentum > 0;
    switch (cfg_.algorithm) {
      case Algorithm::kGd:
      case Algorithm::kCompressedGd:
        compress_mean(g, nullptr, s, momentum ? nullptr : u, lr);  // without momentum: u = lr mean, fused
        enter(Phase::kUpdate);
        if (momentum) {
          T* m = W("momentum");
          o.lincomb(m, mu, S("momentum"), T{1}, acc_, n_);  // m = mu m + mean
          o.scale(u, lr, m, n_);
        }
        break;
      case Algorithm::kSignSgdMv: {
        const T* v = g;
        if (momentum) {  // Signum (spec §3.3): m = mu m + (1 - mu) g, then the sign of m
          T* m = W("momentum");
          o.lincomb(m, mu, S("momentum"), one_minus_mu_, g, n_);
          v = m;
        }
        local([&] { o.encode(up_, v, up_key(rank_), send_); });
        const size_t* sizes = exchange_uplink(s);
        // acc = sum of signs; u = lr vote(acc) (device: in the decode's store, acc not stored)
        o.decode_vote(up_, recv_, up_stride_, P_, sizes, up_keys(-1), acc_, lr, cfg_.tie_to_zero, u, n_);
        enter(Phase::kUpdate);
        s.bytes_down += (n_ + 7) / 8;  // the vote is one sign per element
        break;
      }
      case Algorithm::kEfSgd: {
        const T* e = S("error");
        if (momentum) {
          T* m = W("momentum");
          o.lincomb(m, mu, S("momentum"), T{1}, g, n_);  // m = mu m + g
          const T* d = m;
          if (cfg_.nesterov) {
            o.lincomb(tmp_, T{1}, g, mu, m, n_);  // d = g + mu m
            d = tmp_;
          }
          compress_mean_ef(lr, d, T{1}, e, W("error"), s, u, T{1});  // p = lr d + e; u = 1 * mean = mean (exact)
        } else {
          compress_mean_ef(lr, g, T{1}, e, W("error"), s, u, T{1});  // p = lr g + e
        }
        enter(Phase::kUpdate);
        break;
      }
      case Algorithm::kDiana: {
        const T* hi = S("shift_worker");
        const T* h = S("shift_server");
        if (cfg_.track_norms) o.lincomb(tmp2_, T{1}, g, T{-1}, hi, n_);  // delta
        local([&] {
          o.encode_diana(up_, g, hi, W("shift_worker"), alpha_, up_key(rank_), send_);  // h_i + alpha Q(g - h_i)
          if (cfg_.track_norms) s.compression_error_sq = own_error(tmp2_);
        });
        const size_t* sizes = exchange_uplink(s);
        // mean = fp32(1/P) sum; g^ = h + mean (tmp_); h + alpha mean; without momentum u = lr g^
        // (device: in the decode's store, mean and g^ not stored)
        o.decode_diana(up_, recv_, up_stride_, P_, sizes, up_keys(-1), inv_p_, acc_, h, alpha_, W("shift_server"), tmp_,
                       lr, momentum ? nullptr : u, n_);
        enter(Phase::kUpdate);
        if (momentum) {
          T* m = W("momentum");
          o.lincomb(m, mu, S("momentum"), T{1}, tmp_, n_);  // m = mu m + g^
          o.scale(u, lr, m, n_);
        }
        break;
      }
      case Algorithm::kDistEfSgdm: {
        const T* e = S("error");
        T* m = W("momentum");
        o.lincomb(m, mu, S("momentum"), T{1}, g, n_);  // m = mu m + g
        const T* d = m;
        if (cfg_.nesterov) {
          o.lincomb(tmp_, mu, m, T{1}, g, n_);  // d = mu m + g
          d = tmp_;
        }
        // p = e + lr d; u = result
        two_way_round(T{1}, e, lr, d, W("error"), S("server_error"), W("server_error"), u, T{1}, s);
        enter(Phase::kUpdate);
        break;
      }
      case Algorithm::kDoubleSqueeze: {
        const T* e = S("error");
        const T* d = g;
        if (momentum) {  // §8.3's momentum in gradient units: m = mu m + g; d = g + mu m or m
          T* m = W("momentum");
          o.lincomb(m, mu, S("momentum"), T{1}, g, n_);
          d = m;
          if (cfg_.nesterov) {
            o.lincomb(tmp_, T{1}, g, mu, m, n_);
            d = tmp_;
          }
        }
        // v = d + e; u = lr result
        two_way_round(T{1}, d, T{1}, e, W("error"), S("server_error"), W("server_error"), u, lr, s);
        enter(Phase::kUpdate);
        break;
      }
      case Algorithm::kHessianEc: {
        const T* e = S("error");
        switch (cfg_.compensation) {  // u = lr mean, fused
          case Compensation::kNone: compress_mean(g, nullptr, s, u, lr); break;
          case Compensation::kClassical: compress_mean_ef(T{1}, g, T{1}, e, W("error"), s, u, lr); break;
          case Compensation::kHessian:
          case Compensation::kDiagonal:
            local([&] { hessian_term(e, tmp_); });
            compress_mean_ef(T{1}, g, T{1}, tmp_, W("error"), s, u, lr);  // v = g + t
            break;
        }
        enter(Phase::kUpdate);
        break;
      }
    }
    if (cfg_.track_norms) track(s);
    o.end_step();
  } catch (const SkipStep&) {  // nonfinite = skip, agreed late (agree())
    discard();
    o.fill_zero(out, n_);
    StepStats skipped;
    skipped.step = k_;
    skipped.skipped = true;
    return skipped;
  } catch (...) {
    discard();
    throw;
  }
  commit(given);
  if (u != out) o.copy(out, u, n_);
  if (cfg_.time_phases) {
    const std::array<double, kNumPhases> t = o.phase_times();
    s.encode_us = t[0];
    s.comm_us = t[1];
    s.decode_us = t[2];
    s.update_us = t[3];
  }
  ++k_;
  s.step = k_;
  if (n_ > 0) {
    s.bits_per_element_up = 8.0 * static_cast<double>(s.bytes_up) / static_cast<double>(n_);
    s.bits_per_element_down = 8.0 * static_cast<double>(s.bytes_down) / static_cast<double>(n_);
  }
  return s;
}

template <class T>
void EngineImpl<T>::check_sizes(size_t grad, size_t update) const {
  GCOMP_EXPECTS(grad == n_ && update == n_, gcompErrorInvalidArgument,
                "step: gradient and update must have " + std::to_string(n_) + " elements (got " + std::to_string(grad) +
                    " and " + std::to_string(update) + ")");
}

template <class T>
T* EngineImpl<T>::host_in() {
  if (h_in_.size() != n_) h_in_.resize(n_);
  return h_in_.data();
}

template <class T>
T* EngineImpl<T>::host_out() {
  if (h_out_.size() != n_) h_out_.resize(n_);
  return h_out_.data();
}

template <class T>
StepStats EngineImpl<T>::run_host(const T* h_grad, T* h_update) {
  VecOps<T>& o = *ops_;
  if (!o.on_device()) return run(h_grad, h_update);
  o.from_host(gin_, h_grad, n_);
  const StepStats s = run(gin_, u_);
  o.to_host(h_update, u_, n_);
  return s;
}

template <class T>
template <class E>
StepStats EngineImpl<T>::step_host(std::span<const E> grad, std::span<E> update) {
  check_sizes(grad.size(), update.size());
  if constexpr (std::is_same_v<T, E>) {
    return run_host(grad.data(), update.data());
  } else {
    // The gradient converted to the state type once (fp32 state: rounded; double state: widened
    // exactly), the update converted back (widened exactly; rounded to fp32).
    T* g = host_in();
    for (size_t i = 0; i < n_; ++i) g[i] = static_cast<T>(grad[i]);
    T* u = host_out();
    const StepStats s = run_host(g, u);
    for (size_t i = 0; i < n_; ++i) update[i] = static_cast<E>(u[i]);
    return s;
  }
}

template <class T>
StepStats EngineImpl<T>::step(std::span<const double> grad, std::span<double> update) {
  return step_host(grad, update);
}

template <class T>
StepStats EngineImpl<T>::step(std::span<const float> grad, std::span<float> update) {
  return step_host(grad, update);
}

template <class T>
StepStats EngineImpl<T>::step16(std::span<const uint16_t> grad, GradType type, std::span<double> update) {
  check_sizes(grad.size(), update.size());
  T* g = host_in();
  for (size_t i = 0; i < n_; ++i)
    g[i] = static_cast<T>(type == GradType::kBF16 ? bf16_to_float(grad[i]) : f16_to_float(grad[i]));
  if constexpr (std::is_same_v<T, double>) {
    return run_host(g, update.data());
  } else {
    T* u = host_out();
    const StepStats s = run_host(g, u);
    for (size_t i = 0; i < n_; ++i) update[i] = static_cast<double>(u[i]);
    return s;
  }
}

template <class T>
StepStats EngineImpl<T>::step_device(const void* d_grad, GradType type, float* d_update, Stream stream) {
  GCOMP_EXPECTS(
      ops_->on_device(), gcompErrorNotSupported,
      std::string("step_device needs the cuda backend; this session's backend is ") + backend_name(cfg_.backend));
  if constexpr (std::is_same_v<T, float>) {
    GCOMP_EXPECTS(n_ == 0 || (d_grad != nullptr && d_update != nullptr), gcompErrorInvalidArgument,
                  "step_device: d_grad and d_update must not be null");
    GCOMP_EXPECTS(type == GradType::kF32 || type == GradType::kBF16 || type == GradType::kF16,
                  gcompErrorInvalidArgument,
                  "step_device: unknown gradient type " + std::to_string(static_cast<int>(type)));
    // The step on the caller's stream; afterwards the session's own stream again (ordered after it),
    // so the host API and the checkpoint functions never use a stream the caller may have destroyed.
    ops_->set_stream(stream);
    StepStats s;
    try {
      // A 16-bit gradient is widened exactly: loaded as such by the kernels (view_input), or by a
      // first pass into gin_.
      if (type == GradType::kF32)
        s = run(static_cast<const float*>(d_grad), d_update);
      else
        s = run(nullptr, d_update, d_grad, type);
    } catch (...) {
      try {
        ops_->use_own_stream();  // switches back first, whatever the CUDA calls after it report
      } catch (...) {
      }
      throw;  // the step's error is the one to report
    }
    ops_->use_own_stream();
    return s;
  } else {
    (void)d_grad, (void)type, (void)d_update, (void)stream;
    GCOMP_FAIL(gcompErrorInternal, "device step on a double engine");
  }
}

template <class T>
std::vector<std::pair<std::string, std::vector<double>>> EngineImpl<T>::state() {
  std::vector<std::pair<std::string, std::vector<double>>> out;
  std::vector<T> h;
  for (const auto& [name, a] : st_) {
    h.resize(a.size);
    ops_->to_host(h.data(), a.data, a.size);
    out.emplace_back(name, std::vector<double>(h.begin(), h.end()));
  }
  return out;
}

template <class T>
void EngineImpl<T>::load(const std::map<std::string, std::vector<double>>& arrays, uint64_t step,
                         const std::string& what) {
  auto names = [](const auto& m) {
    std::string s;
    for (const auto& kv : m) s += (s.empty() ? "" : ", ") + kv.first;
    return "{" + s + "}";
  };
  GCOMP_EXPECTS(arrays.size() == st_.size(), gcompErrorMismatch,
                what + " holds the state arrays " + names(arrays) + ", this session has " + names(st_) +
                    " (another configuration, or a checkpoint of a gcomp that had no momentum for this algorithm)");
  std::map<std::string, std::vector<T>> next;
  for (const auto& [name, a] : st_) {
    auto it = arrays.find(name);
    GCOMP_EXPECTS(it != arrays.end() && it->second.size() == a.size, gcompErrorMismatch,
                  what + ": state '" + name + "' is missing or has the wrong size");
    auto& v = next[name];
    v.resize(a.size);
    for (size_t i = 0; i < a.size; ++i) {
      v[i] = static_cast<T>(it->second[i]);
      // fp32 state: the file holds each value widened exactly, so it must round-trip.
      GCOMP_EXPECTS(static_cast<double>(v[i]) == it->second[i] || (std::isnan(it->second[i]) && std::isnan(v[i])),
                    gcompErrorCorruptPayload,
                    what + ": state '" + name + "' element " + std::to_string(i) + " is not an fp32 value");
    }
  }
  for (const auto& [name, a] : st_) ops_->from_host(a.data, next[name].data(), a.size);
  k_ = step;
}

}  // namespace

SessionSetup validate_session(const SessionConfig& cfg, const Layout& layout, int world) {
  GCOMP_EXPECTS(cfg.delay >= 0, gcompErrorInvalidArgument, "delay must be >= 0");
  GCOMP_EXPECTS(std::isfinite(cfg.lr) && cfg.lr >= 0, gcompErrorInvalidArgument, "lr must be finite and >= 0");
  GCOMP_EXPECTS(cfg.momentum >= 0 && cfg.momentum < 1, gcompErrorInvalidArgument, "momentum must be in [0, 1)");
  GCOMP_EXPECTS(
      !(cfg.algorithm == Algorithm::kHessianEc && cfg.momentum > 0), gcompErrorInvalidArgument,
      "hessian-ec has no momentum form (its compensation A = I - lr H assumes the plain step "
      "x <- x - lr mean Q(v), spec/ALGORITHMS.md §6); use momentum 0, or ef-sgd for error feedback with momentum");
  switch (cfg.delay_mode) {
    case DelayMode::kFixed:
    case DelayMode::kRandom:
      GCOMP_EXPECTS(cfg.delay_table.empty(), gcompErrorInvalidArgument,
                    "delay_table is given but delay_mode is not table");
      break;
    case DelayMode::kTable: {
      const size_t p = static_cast<size_t>(world);
      GCOMP_EXPECTS(!cfg.delay_table.empty() && cfg.delay_table.size() % p == 0, gcompErrorInvalidArgument,
                    "delay_table must hold whole rows of " + std::to_string(world) + " delays (one per rank); it has " +
                        std::to_string(cfg.delay_table.size()) + " entries");
      for (size_t i = 0; i < cfg.delay_table.size(); ++i)
        GCOMP_EXPECTS(cfg.delay_table[i] >= 0 && cfg.delay_table[i] <= cfg.delay, gcompErrorInvalidArgument,
                      "delay_table[" + std::to_string(i) + "] (step row " + std::to_string(i / p) + ", rank " +
                          std::to_string(i % p) + ") is " + std::to_string(cfg.delay_table[i]) +
                          ", outside [0, delay = " + std::to_string(cfg.delay) + "]");
      break;
    }
    default:
      GCOMP_FAIL(gcompErrorInvalidArgument,
                 "delay_mode is " + std::to_string(static_cast<int>(cfg.delay_mode)) + "; valid: fixed, table, random");
  }
  SessionSetup out;
  const CodecSpec up_spec = CodecSpec::parse(cfg.algorithm == Algorithm::kGd ? "identity" : cfg.codec);
  if (cfg.algorithm == Algorithm::kSignSgdMv)
    GCOMP_EXPECTS(up_spec.id() == CodecId::kSign && !up_spec.options<SignOptions>().scaled, gcompErrorInvalidArgument,
                  "signsgd-mv sends plain signs: use codec sign:scale=none");
  if (cfg.algorithm == Algorithm::kHessianEc) {
    if (cfg.compensation == Compensation::kHessian)
      GCOMP_EXPECTS(static_cast<bool>(cfg.hessian_product), gcompErrorInvalidArgument,
                    "hessian-ec with full Hessian needs hessian_product");
    if (cfg.compensation == Compensation::kDiagonal)
      GCOMP_EXPECTS(static_cast<bool>(cfg.hessian_diagonal), gcompErrorInvalidArgument,
                    "hessian-ec with diagonal Hessian needs hessian_diagonal");
  }
  out.uplink = make_codec(up_spec, layout);
  if (two_way(cfg.algorithm)) {
    const CodecSpec down_spec = CodecSpec::parse(cfg.server_codec);
    if (cfg.server == ServerMode::kSharded) {
      // Shard s's messages use stream offset 16 (s + 1) (+ 8): the 16-bit stream id bounds the world.
      GCOMP_EXPECTS(world <= 4095, gcompErrorInvalidArgument,
                    "the sharded server supports up to 4095 ranks (this world has " + std::to_string(world) + ")");
      for (int r = 0; r < world; ++r) {
        const Layout segs(shard_segments(layout, shard_begin(layout.num_elems(), world, r),
                                         shard_begin(layout.num_elems(), world, r + 1)));
        (void)make_codec(up_spec, segs);
        (void)make_codec(down_spec, segs);
      }
    } else {
      (void)make_codec(down_spec, layout);
    }
  }
  if (cfg.algorithm == Algorithm::kDiana) {
    const Guarantee g = out.uplink->guarantee();
    if (cfg.alpha < 0) {
      GCOMP_EXPECTS(g.kind == Guarantee::Kind::kUnbiased, gcompErrorInvalidArgument,
                    "diana needs an unbiased codec for alpha=auto; give alpha explicitly");
      out.alpha = 1.0 / (g.omega + 1.0);
    } else {
      out.alpha = cfg.alpha;
    }
  }
  return out;
}

std::unique_ptr<Engine> make_engine(Communicator& comm, const Layout& layout, const SessionConfig& cfg, double alpha,
                                    const std::function<void()>& agree) {
  switch (cfg.backend) {
    case Backend::kCpu: {
      auto ops = make_host_ops<double>(comm);
      agree();
      return std::make_unique<EngineImpl<double>>(comm, layout, cfg, alpha, std::move(ops));
    }
    case Backend::kHostF32: {
      auto ops = make_host_ops<float>(comm);
      agree();
      return std::make_unique<EngineImpl<float>>(comm, layout, cfg, alpha, std::move(ops));
    }
    case Backend::kCuda: {
      auto ops = make_device_ops(comm);
      agree();
      return std::make_unique<EngineImpl<float>>(comm, layout, cfg, alpha, std::move(ops));
    }
  }
  GCOMP_FAIL(gcompErrorInvalidArgument, "unknown session backend " + std::to_string(static_cast<int>(cfg.backend)));
}

}  // namespace gcomp::detail
