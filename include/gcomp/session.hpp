// SPDX-License-Identifier: Apache-2.0
/// @file session.hpp
/// @brief The orchestrator: one Session per rank runs a compressed distributed algorithm around a
/// codec and a communicator (spec/ALGORITHMS.md §8, DESIGN.md §2-3).
///
/// Each rank builds a Session with the same configuration and calls step() once per iteration
/// with its local gradient. step() writes the update u that every rank applies as x <- x - u
/// (apply() does that, plus the proximal step of DIANA). All ranks obtain bit-identical updates.
///
/// Backends (SessionConfig::backend, docs/algorithms.md "Backends"):
///  - kCpu (default): state (EF memories, DIANA shifts, momentum, server errors) is kept in double;
///    the messages themselves are the codec's fp32 payloads.
///  - kCuda: state in fp32 device memory; every step is a sequence of DeviceCodec calls and small
///    CUDA kernels enqueued on the caller's stream (step_device()).
///  - kHostF32: the CUDA backend's CPU twin: the same fp32 orchestration over the CPU codecs and
///    plain loops. For one seed, kCuda and kHostF32 produce bit-identical updates and state.
/// Buffers are sized at construction on every backend.
#pragma once

#include <gcomp/codec.hpp>
#include <gcomp/comm.hpp>

#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <vector>

namespace gcomp {

/// Algorithms, by their names in configs and on the command line.
enum class Algorithm {
  kGd,             ///< "gd": uncompressed averaging, u = lr * mean g (+ momentum)
  kCompressedGd,   ///< "compressed-gd": u = lr * mean Q(g_i) (+ momentum); QSGD, TernGrad (§8.5)
  kSignSgdMv,      ///< "signsgd-mv": u = lr * sgn(sum_i sgn(g_i)) (§3.3), codec sign:scale=none
  kEfSgd,          ///< "ef-sgd": p = lr*d + e, u = mean C(p_i), e = p - C(p) (§8.2, §4.3 with topk)
  kDiana,          ///< "diana": shifts h_i, h; u = lr * (beta v + h + mean Q(g_i - h_i)) (§8.1)
  kDistEfSgdm,     ///< "dist-ef-sgdm": two-way EF with momentum (§8.3)
  kDoubleSqueeze,  ///< "doublesqueeze": two-way EF, lr after compression (§8.4)
  kHessianEc,      ///< "hessian-ec": v = g + A e, u = lr * mean Q(v_i), e = v - Q(v) (§6)
};

/// Error-compensation matrix of hessian-ec: A = 0, I, I - lr*H, or I - lr*diag(H).
enum class Compensation { kNone, kClassical, kHessian, kDiagonal };

/// What a step does with NaN/Inf in any rank's gradient (DESIGN.md §4).
enum class NonFinitePolicy {
  kError,  ///< every rank throws gcompErrorNonFinite; state untouched
  kSkip,   ///< the step is a no-op on every rank: u = 0, state and step counter untouched
  kZero,   ///< non-finite entries are replaced by 0 and the step runs
};

/// Where the server role of two-way algorithms runs.
/// Same order as gcompServerMode_t; names in <gcomp/names.hpp>.
enum class ServerMode {
  kReplicated,  ///< every rank runs the whole-vector server step on the allgathered messages
  kSharded,     ///< rank r owns element shard r: alltoall up, server step, allgather down
};

enum class Regularizer { kNone, kL1, kL2 };

/// Where the state lives and the step runs (part of the agreement and of the checkpoint digest).
enum class Backend {
  kCpu,      ///< "cpu": double state on the host (the reference backend)
  kHostF32,  ///< "host-f32": fp32 state on the host; the CPU twin of kCuda, bit for bit
  kCuda,     ///< "cuda": fp32 state in device memory; steps enqueued on a CUDA stream
};

Backend parse_backend(std::string_view name);
const char* backend_name(Backend b);

/// Element type of a gradient handed to step_device().
enum class GradType { kF32, kBF16, kF16 };

/// How the delays tau_k^i of the bounded-delay mode are chosen (spec/ALGORITHMS.md §7.1): worker i
/// consumes at step k the gradient it was given at step max(0, k - tau_k^i), 0 <= tau_k^i <= delay.
enum class DelayMode {
  kFixed,   ///< tau_k^i = delay for every step and worker (default)
  kTable,   ///< tau_k^i = delay_table[(k mod R) * P + i], R = delay_table.size() / P rows, cyclic
  kRandom,  ///< tau_k^i uniform in {0, ..., delay}, drawn from (seed, i, k) (detail/session_keys.hpp)
};

/// Configuration of a Session. Every rank must pass an equal configuration (checked at setup).
struct SessionConfig {
  Algorithm algorithm = Algorithm::kGd;
  std::string codec = "identity";         ///< uplink codec spec
  std::string server_codec = "identity";  ///< downlink codec spec (dist-ef-sgdm, doublesqueeze)
  double lr = 0.1;                        ///< gamma / eta
  double alpha = -1.0;                    ///< DIANA shift step; < 0: 1/(omega+1) of the codec
  /// beta / mu in [0, 1). Every algorithm but hessian-ec (which rejects it) has a momentum form
  /// (docs/algorithms.md "Update orders"); signsgd-mv with momentum is Signum.
  double momentum = 0.0;
  bool nesterov = true;  ///< ef-sgd, dist-ef-sgdm and doublesqueeze momentum form
  int delay = 0;         ///< tau: the delay bound (kFixed: every gradient is tau steps late)
  DelayMode delay_mode = DelayMode::kFixed;
  /// kTable: R rows of P (world size) delays, row-major, each in [0, delay]; row k mod R is step k's.
  std::vector<int32_t> delay_table;
  uint64_t seed = 0;
  Regularizer prox = Regularizer::kNone;  ///< DIANA prox_{lr R} applied by apply()
  double prox_lambda = 0.0;
  NonFinitePolicy nonfinite = NonFinitePolicy::kError;
  bool tie_to_zero = true;   ///< signsgd-mv: a tied vote gives 0 (else +1)
  bool shared_scale = true;  ///< compressed-gd with terngrad: max scale over ranks
  ServerMode server = ServerMode::kReplicated;
  Compensation compensation = Compensation::kHessian;
  /// Fill StepStats::memory_norm_sq and compression_error_sq (one extra pass over the data).
  bool track_norms = false;
  /// Fill StepStats::encode_us, comm_us, decode_us and update_us (cuda: CUDA events, and the step
  /// syncs its stream once at the end to read them). Not part of the agreement.
  bool time_phases = false;
  /// Where the state lives and the step runs. kHostF32 and kCuda keep fp32 state (spec §8.1
  /// caution 2: DIANA then plateaus near 1e-7..1e-10 instead of reaching 1e-10 and below).
  Backend backend = Backend::kCpu;
  /// hessian-ec: out = H v at the current point (full Hessian), called by step() on this rank.
  std::function<void(std::span<const double> v, std::span<double> out)> hessian_product;
  /// hessian-ec with kDiagonal: diag(H) at the current point, written into out.
  std::function<void(std::span<double> out)> hessian_diagonal;

  /// Canonical text of every field that must agree across ranks and checkpoints.
  [[nodiscard]] std::string canonical() const;
};

Algorithm parse_algorithm(std::string_view name);
const char* algorithm_name(Algorithm a);

/// What one step did.
struct StepStats {
  uint64_t step = 0;          ///< the step counter after this step
  bool skipped = false;       ///< kSkip policy dropped the step
  size_t bytes_up = 0;        ///< compressed bytes this rank sent for its own message
  size_t bytes_down = 0;      ///< compressed bytes of the server message(s) this rank received
  size_t bytes_received = 0;  ///< all bytes the collectives delivered to this rank
  double bits_per_element_up = 0.0;
  double bits_per_element_down = 0.0;
  /// With track_norms: |memory|^2 of this rank after the step (EF error e_i, or DIANA shift h_i),
  /// and |C(p) - p|^2 of this rank's uplink message; 0 otherwise.
  double memory_norm_sq = 0.0;
  double compression_error_sq = 0.0;
  /// With time_phases: wall time of the step's phases on this rank, in microseconds. encode: the
  /// input check and pre-ops, encode; comm: the collectives (the non-finite agreement included);
  /// decode: decode-reduce and decode; update: the post-ops that write state and the update.
  double encode_us = 0.0, comm_us = 0.0, decode_us = 0.0, update_us = 0.0;
};

/// One rank's side of a distributed compressed algorithm.
class Session {
 public:
  /// Builds the session, sizes every buffer, and checks that all ranks agree on configuration and
  /// layout (throws gcompErrorMismatch on every rank otherwise).
  Session(Communicator& comm, Layout layout, SessionConfig config);
  ~Session();
  Session(const Session&) = delete;
  Session& operator=(const Session&) = delete;

  /// One round: reads this rank's gradient, writes the update u (x <- x - u). Collective: every
  /// rank calls it with the same step. Thread-compatible (one thread per Session).
  /// `update` is written only when the step succeeds; it may alias `grad` (the gradient is read
  /// completely before the update is written). No allocation in a step: the conversions between
  /// the caller's type and the state type (double <-> fp32) go through buffers the session
  /// allocates at the first step of that kind.
  StepStats step(std::span<const double> grad, std::span<double> update);
  /// fp32 buffers: on host-f32 the gradient is used as is (no conversion, no copy); on cpu it is
  /// widened exactly to double and the update rounded to fp32.
  StepStats step(std::span<const float> grad, std::span<float> update);
  /// 16-bit gradients (raw bits of bfloat16 or IEEE fp16), widened exactly on input, so these
  /// equal step() on the widened values bit for bit.
  StepStats step_bf16(std::span<const uint16_t> grad, std::span<double> update);
  StepStats step_f16(std::span<const uint16_t> grad, std::span<double> update);
  /// step() followed by x <- prox(x - u).
  StepStats apply(std::span<const double> grad, std::span<double> x);

  /// kCuda only: one round on device buffers, enqueued on `stream`.
  /// @param[in]  d_grad   device memory, num_elems elements of `type` (bf16/f16 are widened exactly
  ///                      to fp32 by the first kernel; the state is fp32).
  /// @param[out] d_update device memory, num_elems floats; written only when the step succeeds (with
  ///                      a device communicator the device's data errors are reported by
  ///                      device_status(), not by the step, which then writes d_update as it
  ///                      computes the update; with a host communicator the update is computed in
  ///                      the session's buffer and copied out last). It may alias d_grad.
  /// @param[in]  stream   CUDA stream (nullptr: the legacy default stream); every kernel, copy and
  ///                      (nccl) collective of the step goes on it.
  /// Host synchronization (docs/gpu.md "Session on the GPU"): with a device communicator (nccl),
  /// after each exchange the peers' 4-byte status words are read with a stream sync (one exchange
  /// per step for the one-way algorithms, two for the two-way rounds; a variable-length codec adds
  /// a read of each message's length field and reads each received word on its own), whatever the
  /// nonfinite policy: kError/kSkip agree on those words, with no sync of their own (with a delay
  /// or hessian-ec the agreement comes before the step: a flag allreduce and one 8-byte read); with
  /// a host communicator (local, mpi) the payloads are staged through pinned host buffers
  /// allocated at construction, which syncs the stream before each collective and once at the end
  /// of the step (codec status check). hessian-ec with kHessian/kDiagonal stages
  /// the callbacks through host memory (syncs). TernGrad scaler sharing runs on the device
  /// (DeviceCodec::compute_scales, allreduce max, encode_with_scales): no extra sync with a device
  /// communicator, one (the scales to the host) with a host communicator.
  /// Determinism: bit-identical to a kHostF32 session with the same configuration and seed.
  /// @throws gcomp::Error gcompErrorNotSupported on another backend; as step() otherwise. On a
  ///         thrown error the state is untouched (the step's new values were written to second
  ///         buffers, which it drops).
  StepStats step_device(const void* d_grad, GradType type, float* d_update, Stream stream);

  /// kCuda: syncs the stream of the last step and returns the first codec data error (status word,
  /// DeviceStatus) recorded by the steps since the last check, then clears it. With a device
  /// communicator the step does not throw such errors (a non-finite intermediate, e.g. overflowing
  /// state), whatever the nonfinite policy, so this is where they surface; such a step is
  /// committed, and its update and the state it wrote are unspecified (restore a checkpoint). The
  /// errors of a step that the policy decided (a non-finite gradient with kError/kSkip) are
  /// dropped, not reported here. gcompSuccess on other backends.
  gcompStatus_t device_status(uint64_t* index = nullptr);

  [[nodiscard]] uint64_t step_count() const;
  [[nodiscard]] const SessionConfig& config() const;
  [[nodiscard]] const Layout& layout() const;
  [[nodiscard]] const Codec& uplink_codec() const;
  /// DIANA's alpha in use (after auto), else 0.
  [[nodiscard]] double alpha() const;

  /// Named state arrays of this rank (EF memories, shifts, momentum, server errors, delay queue).
  /// A snapshot in double (fp32 state widened exactly; kCuda: copied from the device, syncs), sorted
  /// by name, valid until the next call of state() or a step.
  [[nodiscard]] std::vector<std::pair<std::string, const std::vector<double>*>> state() const;

  /// Caller arrays stored next to the session state (e.g. the parameters x of a training loop).
  using Extras = std::vector<std::pair<std::string, std::vector<double>*>>;

  /// Writes this rank's state, and `extras`, to `path` (via a temporary file and rename). Not
  /// collective; each rank writes its own file.
  void save(const std::string& path, const Extras& extras = {}) const;
  /// Restores state written by save() of a session with the same configuration, layout, rank and
  /// world size, and the same extras (by name and size). On any error (gcompErrorIo,
  /// gcompErrorCorruptPayload, gcompErrorMismatch) the running state and the extras are untouched.
  /// fp32 backends store their state converted exactly to double (same GCKP format); loading a
  /// value that is not an fp32 number fails with gcompErrorCorruptPayload.
  void load(const std::string& path, const Extras& extras = {});

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

/// prox of lr * R, in place: l1 soft-threshold or l2 shrink x / (1 + lr * lambda).
void apply_prox(Regularizer r, double lr_lambda, std::span<double> x);

}  // namespace gcomp
