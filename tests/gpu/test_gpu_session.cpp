// SPDX-License-Identifier: Apache-2.0
// The cuda Session backend against its CPU twin (host-f32): for every algorithm, several sizes and
// layouts, on local ranks (payloads staged through pinned host memory), the device session's
// updates and state must equal the twin's bit for bit, step after step. Gradients go in through
// step_device() on a non-default stream (fp32, bf16 and f16, with and without nonfinite = zero) and
// through the host API. Skips without a device.
#include "algorithms/session_cases.hpp"
#include "gpu/gpu_test_util.hpp"

#include <gcomp/comm.hpp>
#include <gcomp/detail/half.hpp>
#include <gcomp/session.hpp>

#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <functional>
#include <memory>
#include <limits>
#include <string>
#include <mutex>
#include <tuple>

namespace gcomp::test {
namespace {

using SessCase = SessionCase;

const std::vector<std::vector<int64_t>> kLayouts = {{1}, {33}, {23, 1, 40}, {4096, 1000, 7}};

SessionConfig sess_config(const SessCase& c, Backend backend) { return session_case_config(c, backend); }

std::vector<float> grad_of(int rank, int step, int64_t n) {
  std::vector<float> g(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i)
    g[i] = static_cast<float>(std::sin(0.37 * static_cast<double>(i + 1) + 1.3 * rank + 0.71 * step) *
                              (1.0 + 0.1 * static_cast<double>(i % 7)));
  return g;
}

using StateList = std::vector<std::pair<std::string, std::vector<double>>>;

/// A copy of the session's named state arrays (Session::state() is valid until the next step).
StateList state_of(const Session& s) {
  StateList out;
  for (const auto& [name, v] : s.state()) out.emplace_back(name, *v);
  return out;
}

/// One rank's device run equals its host-f32 twin's bit for bit: the update of every step, then the
/// final state (names and values). `what` names the run in the messages. Callers wrap it in
/// ASSERT_NO_FATAL_FAILURE, so that the first differing element ends the test.
void expect_same_run(const std::vector<std::vector<float>>& u_host, const std::vector<std::vector<float>>& u_dev,
                     const StateList& st_host, const StateList& st_dev, const std::string& what) {
  ASSERT_EQ(u_host.size(), u_dev.size()) << what;
  for (size_t k = 0; k < u_host.size(); ++k) {
    const auto& a = u_host[k];
    const auto& b = u_dev[k];
    ASSERT_EQ(a.size(), b.size()) << what << " step " << k;
    for (size_t i = 0; i < a.size(); ++i)
      ASSERT_EQ(std::memcmp(&a[i], &b[i], sizeof(float)), 0)
          << what << " step " << k << " element " << i << ": host-f32 " << a[i] << ", cuda " << b[i];
  }
  ASSERT_EQ(st_host.size(), st_dev.size()) << what;
  for (size_t a = 0; a < st_host.size(); ++a) {
    EXPECT_EQ(st_host[a].first, st_dev[a].first) << what;
    EXPECT_TRUE(st_host[a].second == st_dev[a].second) << "state " << st_host[a].first << " " << what;
  }
}

using Param = std::tuple<SessCase, std::vector<int64_t>>;

class GpuSessionTest : public GpuParamFixture<Param> {};

constexpr int kSessRanks = 3;
constexpr int kSteps = 12;

TEST_P(GpuSessionTest, DeviceStepsEqualTheHostF32TwinBitForBit) {
  const SessCase& c = std::get<0>(GetParam());
  const Layout layout(std::get<1>(GetParam()));
  const int64_t n = layout.num_elems();
  if (c.server == ServerMode::kSharded && n < kSessRanks) GTEST_SKIP() << "fewer elements than ranks";
  // Per rank, per step: updates (host twin, device); final state.
  std::vector<std::vector<std::vector<float>>> u_host(kSessRanks), u_dev(kSessRanks);
  std::vector<StateList> st_host(kSessRanks), st_dev(kSessRanks);
  std::mutex m;
  for (Backend backend : {Backend::kHostF32, Backend::kCuda}) {
    run_local(kSessRanks, [&](Communicator& comm) {
      const int r = comm.rank();
      Session s(comm, layout, sess_config(c, backend));
      std::vector<std::vector<float>> us;
      cudaStream_t stream = nullptr;
      if (backend == Backend::kCuda) GCOMP_TEST_CUDA(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
      DeviceBuffer<float> d_g(static_cast<size_t>(n), stream), d_u(static_cast<size_t>(n), stream);
      for (int k = 0; k < kSteps; ++k) {
        const std::vector<float> g = grad_of(r, k, n);
        std::vector<float> u(static_cast<size_t>(n));
        if (backend == Backend::kHostF32) {
          (void)s.step(std::span<const float>(g), std::span<float>(u));
        } else if (k % 2 == 0) {
          d_g.upload(g);
          (void)s.step_device(d_g.get(), GradType::kF32, d_u.get(), stream);
          GCOMP_TEST_CUDA(cudaStreamSynchronize(stream));
          u = d_u.download();
        } else {
          (void)s.step(std::span<const float>(g), std::span<float>(u));  // host API on the device backend
        }
        us.push_back(u);
      }
      const StateList st = state_of(s);
      EXPECT_EQ(s.device_status(), gcompSuccess);
      if (stream != nullptr) (void)cudaStreamDestroy(stream);
      std::lock_guard<std::mutex> lock(m);
      (backend == Backend::kCuda ? u_dev : u_host)[r] = us;
      (backend == Backend::kCuda ? st_dev : st_host)[r] = st;
    });
  }
  for (int r = 0; r < kSessRanks; ++r)
    ASSERT_NO_FATAL_FAILURE(expect_same_run(u_host[r], u_dev[r], st_host[r], st_dev[r], "rank " + std::to_string(r)));
}

INSTANTIATE_TEST_SUITE_P(AllAlgorithms, GpuSessionTest,
                         testing::Combine(testing::ValuesIn(kSessionCases), testing::ValuesIn(kLayouts)),
                         [](const auto& param_info) {
                           std::string s = std::get<0>(param_info.param).name;
                           for (int64_t v : std::get<1>(param_info.param)) s += "_" + std::to_string(v);
                           return s;
                         });

class GpuSessionMisc : public GpuFixture {};

TEST_F(GpuSessionMisc, Bf16DeviceGradientsEqualTheirWidenedValues) {
  const int64_t n = 1000;
  SessionConfig cfg = sess_config(session_case("diana"), Backend::kCuda);
  run_local(1, [&](Communicator& comm) {
    Session a(comm, Layout(n), cfg), b(comm, Layout(n), cfg);
    std::vector<uint16_t> bf(static_cast<size_t>(n));
    std::vector<float> wide(static_cast<size_t>(n));
    for (int64_t i = 0; i < n; ++i) {
      bf[i] = static_cast<uint16_t>(0x3f00 + (i * 97) % 0x300);
      wide[i] = detail::bf16_to_float(bf[i]);
    }
    DeviceBuffer<uint16_t> d_bf(bf, stream_);
    DeviceBuffer<float> d_w(wide, stream_), d_ua(static_cast<size_t>(n), stream_),
        d_ub(static_cast<size_t>(n), stream_);
    for (int k = 0; k < 3; ++k) {
      (void)a.step_device(d_bf.get(), GradType::kBF16, d_ua.get(), stream_);
      (void)b.step_device(d_w.get(), GradType::kF32, d_ub.get(), stream_);
      sync();
      EXPECT_TRUE(d_ua.download() == d_ub.download());
    }
  });
}

// The Session's gradient view (docs/gpu.md "Session on the GPU"): bf16 / f16 device gradients are
// loaded and widened by the kernels that read them, and nonfinite = zero maps NaN/Inf to +0 as they
// load, instead of a widened / zeroed copy; where a consumer cannot load the view (the delay queue)
// the copy stays. Either way every update and the final state must equal the host-f32 twin's, which
// is given the exactly widened fp32 gradient (and zeroes it itself), bit for bit.
enum class GradMode { kBf16, kF16, kF32Zero, kBf16Zero, kF16Zero, kBf16Skip };

GradType type_of(GradMode m) {
  switch (m) {
    case GradMode::kBf16:
    case GradMode::kBf16Zero:
    case GradMode::kBf16Skip: return GradType::kBF16;
    case GradMode::kF16:
    case GradMode::kF16Zero: return GradType::kF16;
    case GradMode::kF32Zero: return GradType::kF32;
  }
  return GradType::kF32;
}

const char* mode_name(GradMode m) {
  switch (m) {
    case GradMode::kBf16: return "bf16";
    case GradMode::kF16: return "f16";
    case GradMode::kF32Zero: return "f32_zero";
    case GradMode::kBf16Zero: return "bf16_zero";
    case GradMode::kF16Zero: return "f16_zero";
    case GradMode::kBf16Skip: return "bf16_skip";
  }
  return "?";
}

// Rank r's gradient at step k: 16-bit patterns in `bits` (bf16 / f16; empty for fp32) and the exact
// widening, the twin's input. Normal values in [1/8, 2) of both signs, every 97th entry subnormal
// (in the 16-bit type: a subnormal of bf16 or f16), and with `nonfinite` every 53rd entry NaN or
// +-Inf (negative NaN included).
std::vector<float> typed_grad(GradType type, int r, int k, int64_t n, bool nonfinite, std::vector<uint16_t>& bits) {
  std::vector<float> wide(static_cast<size_t>(n));
  bits.assign(type == GradType::kF32 ? 0 : static_cast<size_t>(n), 0);
  for (int64_t i = 0; i < n; ++i) {
    uint32_t h = static_cast<uint32_t>(i + 1) * 2654435761u ^ static_cast<uint32_t>(r * 40503 + k * 9973 + 7);
    h ^= h >> 15;
    h *= 2246822519u;
    h ^= h >> 13;
    const bool neg = (h & 1u) != 0;
    const bool sub = i % 97 == 5;
    const bool bad = nonfinite && i % 53 == 7;
    const bool nan = bad && (h >> 1) % 3 == 0;
    const auto I = static_cast<size_t>(i);
    if (type == GradType::kF32) {
      float v = static_cast<float>(0.125 + 1.875 * static_cast<double>(h >> 8) / 16777216.0);
      if (sub) v = std::ldexp(static_cast<float>(1 + (h >> 8) % 1000), -140);
      if (bad) v = nan ? std::nanf("") : std::numeric_limits<float>::infinity();
      wide[I] = neg ? -v : v;
      continue;
    }
    const auto sign = static_cast<uint16_t>(neg ? 0x8000u : 0u);
    const bool bf = type == GradType::kBF16;
    uint32_t b = bf ? 0x3e00u + (h >> 8) % 0x200u : 0x3000u + (h >> 8) % 0x1000u;
    if (sub) b = 1u + (h >> 8) % (bf ? 0x7fu : 0x3ffu);
    if (bad) b = nan ? (bf ? 0x7fc1u : 0x7e01u) : (bf ? 0x7f80u : 0x7c00u);
    bits[I] = static_cast<uint16_t>(sign | b);
    wide[I] = bf ? detail::bf16_to_float(bits[I]) : detail::f16_to_float(bits[I]);
  }
  return wide;
}

// Cases of the gradient-view suite alone (beside kSessionCases): the Session feeds the gradient
// itself to the encoders of topk (exact, index=rice), randk, grid (bits 12 and 5: the warp-per-32
// encoder), sdither and spherical in compressed-gd (encode of g), DIANA (g - h) and EF-SGD (p = a x
// + b y formed as loaded).
constexpr SessionCase kViewOnlyCases[] = {
    {"compressed_gd_topk", Algorithm::kCompressedGd, "topk:k=9", "identity", 0.0, ServerMode::kReplicated, 0},
    {"compressed_gd_topk_rice", Algorithm::kCompressedGd, "topk:ratio=0.05,index=rice", "identity", 0.0,
     ServerMode::kReplicated, 0},
    {"compressed_gd_randk", Algorithm::kCompressedGd, "randk:k=9,unbiased=1", "identity", 0.0, ServerMode::kReplicated,
     0},
    {"diana_topk", Algorithm::kDiana, "topk:k=7", "identity", 0.0, ServerMode::kReplicated, 0},  // alpha 0.25
    {"ef_sgd_randk", Algorithm::kEfSgd, "randk:k=9,unbiased=0", "identity", 0.0, ServerMode::kReplicated, 0},
    {"compressed_gd_grid12", Algorithm::kCompressedGd, "grid:step=0.01,bits=12", "identity", 0.0,
     ServerMode::kReplicated, 0},
    {"ef_sgd_grid5", Algorithm::kEfSgd, "grid:step=0.05,bits=5", "identity", 0.0, ServerMode::kReplicated, 0},
    {"compressed_gd_sdither", Algorithm::kCompressedGd, "sdither:levels=2,norm=linf,block=64,chunk=33", "identity", 0.0,
     ServerMode::kReplicated, 0},
    {"ef_sgd_spherical", Algorithm::kEfSgd, "spherical:block=8,bits=3", "identity", 0.0, ServerMode::kReplicated, 0},
};

const SessCase& view_case(const std::string& name) {
  for (const SessionCase& c : kViewOnlyCases)
    if (name == c.name) return c;
  return session_case(name);
}

using ViewParam = std::tuple<std::string, GradMode>;

class GpuSessionViewTest : public GpuParamFixture<ViewParam> {};

TEST_P(GpuSessionViewTest, TypedAndZeroedDeviceGradientsEqualTheHostF32Twin) {
  const SessCase& c = view_case(std::get<0>(GetParam()));
  const GradMode mode = std::get<1>(GetParam());
  const GradType type = type_of(mode);
  const bool zero = mode == GradMode::kF32Zero || mode == GradMode::kBf16Zero || mode == GradMode::kF16Zero;
  const bool skip = mode == GradMode::kBf16Skip;
  // Odd segment sizes: the sharded servers' shards start at odd offsets (2-byte aligned views).
  const Layout layout(std::vector<int64_t>{517, 3, 40});
  const int64_t n = layout.num_elems();
  constexpr int kViewSteps = 8;
  std::vector<std::vector<std::vector<float>>> u_host(kSessRanks), u_dev(kSessRanks);
  std::vector<std::vector<int>> skipped_host(kSessRanks), skipped_dev(kSessRanks);
  std::vector<StateList> st_host(kSessRanks), st_dev(kSessRanks);
  std::mutex m;
  for (Backend backend : {Backend::kHostF32, Backend::kCuda}) {
    run_local(kSessRanks, [&](Communicator& comm) {
      const int r = comm.rank();
      SessionConfig cfg = sess_config(c, backend);
      if (std::string_view(c.name) == "diana_topk") cfg.alpha = 0.25;  // a biased codec: alpha given
      cfg.nonfinite = zero ? NonFinitePolicy::kZero : skip ? NonFinitePolicy::kSkip : NonFinitePolicy::kError;
      Session s(comm, layout, cfg);
      cudaStream_t stream = nullptr;
      if (backend == Backend::kCuda) GCOMP_TEST_CUDA(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
      DeviceBuffer<uint16_t> d_16(static_cast<size_t>(n), stream);
      DeviceBuffer<float> d_32(static_cast<size_t>(n), stream), d_u(static_cast<size_t>(n), stream);
      std::vector<std::vector<float>> us;
      std::vector<int> sk;
      for (int k = 0; k < kViewSteps; ++k) {
        // zero: NaN/Inf in every rank's gradient at every step; skip: in rank 1's at steps 3 and 7.
        const bool bad = zero || (skip && r == 1 && k % 4 == 3);
        std::vector<uint16_t> bits;
        const std::vector<float> wide = typed_grad(type, r, k, n, bad, bits);
        std::vector<float> u(static_cast<size_t>(n));
        StepStats st;
        if (backend == Backend::kHostF32) {
          st = s.step(std::span<const float>(wide), std::span<float>(u));
        } else if (k % 2 == 0) {
          if (type == GradType::kF32) {
            d_32.upload(wide);
            st = s.step_device(d_32.get(), type, d_u.get(), stream);
          } else {
            d_16.upload(bits);
            st = s.step_device(d_16.get(), type, d_u.get(), stream);
          }
          GCOMP_TEST_CUDA(cudaStreamSynchronize(stream));
          u = d_u.download();
        } else {
          st = s.step(std::span<const float>(wide), std::span<float>(u));  // host API: the view of gin_ itself
        }
        us.push_back(u);
        sk.push_back(st.skipped ? 1 : 0);
      }
      const StateList state = state_of(s);
      EXPECT_EQ(s.device_status(), gcompSuccess);
      if (stream != nullptr) (void)cudaStreamDestroy(stream);
      std::lock_guard<std::mutex> lock(m);
      (backend == Backend::kCuda ? u_dev : u_host)[r] = us;
      (backend == Backend::kCuda ? skipped_dev : skipped_host)[r] = sk;
      (backend == Backend::kCuda ? st_dev : st_host)[r] = state;
    });
  }
  for (int r = 0; r < kSessRanks; ++r) {
    EXPECT_EQ(skipped_host[r], skipped_dev[r]) << "rank " << r;
    if (skip) {
      EXPECT_EQ(skipped_dev[r][3], 1) << "rank " << r;
    }
    ASSERT_NO_FATAL_FAILURE(expect_same_run(u_host[r], u_dev[r], st_host[r], st_dev[r],
                                            std::string(mode_name(mode)) + " rank " + std::to_string(r)));
  }
}

// EF-SGD with a dense (dither, scaled sign with momentum, unscaled sign, grid bits=5, spherical)
// and a sparse codec (topk and topk index=rice: the lincomb pass loads the view; randk: its encode
// forms p from the view), DIANA (dither, sdither; topk and randk load g - h from the view),
// compressed-gd with dither (and TernGrad's shared scales), topk, topk index=rice, randk, grid
// bits=12 and sdither (their encodes load g), Signum (the
// momentum's lincomb loads the view as y), two-way rounds (sharded: views from odd shard offsets;
// replicated), hessian-ec (host callbacks beside the view), spherical, and a delayed configuration
// (the queue stores the gradient: the copy stays).
const std::vector<std::string> kViewCases = {"ef_sgd_dither",
                                             "ef_sgd_topk",
                                             "ef_sgd_topk_rice",
                                             "ef_sgd_randk",
                                             "ef_sgd_sign_momentum",
                                             "ef_sgd_sign_unscaled",
                                             "diana",
                                             "diana_randk",
                                             "diana_topk",
                                             "compressed_gd_topk",
                                             "compressed_gd_topk_rice",
                                             "compressed_gd_randk",
                                             "compressed_gd_grid12",
                                             "ef_sgd_grid5",
                                             "compressed_gd_sdither",
                                             "diana_sdither",
                                             "ef_sgd_spherical",
                                             "qsgd",
                                             "terngrad_shared",
                                             "signum",
                                             "dist_ef_sgdm_sharded",
                                             "doublesqueeze_sharded",
                                             "doublesqueeze_replicated",
                                             "hessian_ec_full",
                                             "compressed_gd_spherical",
                                             "gd_momentum_delay"};

INSTANTIATE_TEST_SUITE_P(GradientViews, GpuSessionViewTest,
                         testing::Combine(testing::ValuesIn(kViewCases),
                                          testing::Values(GradMode::kBf16, GradMode::kF16, GradMode::kF32Zero,
                                                          GradMode::kBf16Zero, GradMode::kF16Zero,
                                                          GradMode::kBf16Skip)),
                         [](const auto& param_info) {
                           return std::get<0>(param_info.param) + "_" + mode_name(std::get<1>(param_info.param));
                         });

// nonfinite = error and skip on local ranks (a host communicator: the messages and their status
// words staged through pinned memory). Rank 1's gradient holds a NaN at step 2 and an Inf at step 4.
// Where the engine agrees late (docs/algorithms.md "Non-finite gradients": no delay, not hessian-ec)
// the device's encode reports the non-finite input, the staged status word tells a non-finite
// gradient from a failure of the algorithm's own values, and the policy decides the step on every
// rank; elsewhere the agreement comes before the step. Either way each rank's outcome of every step
// (the update; or the error's status and whether it names this rank or another), the step counts
// and the final state must equal the host-f32 twin's, and the device status must stay clean (the
// errors the encode reported on the decided steps are dropped).
using PolicyParam = std::tuple<SessCase, NonFinitePolicy>;

/// One rank's outcome of one step: the update (empty when the step threw), the thrown gcomp::Error's
/// status and message, the skipped flag, and step_count() after the step.
struct StepOutcome {
  std::vector<float> u;
  int status = 0;
  std::string what;
  bool skipped = false;
  uint64_t count = 0;
  /// Where the message says the non-finite gradient was: 1 this rank, 2 another rank, 0 neither.
  [[nodiscard]] int where() const {
    return what.find("on this rank") != std::string::npos      ? 1
           : what.find("on another rank") != std::string::npos ? 2
                                                               : 0;
  }
};

/// Both backends' runs of case c under `policy` on kSessRanks local ranks, `steps` steps, rank r's
/// gradient at step k grad_of(r, k) changed by spoil(r, k, g): per backend, rank and step the
/// outcome, and per rank the final state. The cuda session takes every other step through
/// step_device on `stream`, the others through the host API; its device status must be clean at
/// the end.
struct TwinRuns {
  std::vector<std::vector<StepOutcome>> host, dev;
  std::vector<StateList> st_host, st_dev;
};

TwinRuns run_policy_twins(const SessCase& c, NonFinitePolicy policy, int steps,
                          const std::function<void(int, int, std::vector<float>&)>& spoil, cudaStream_t stream) {
  const Layout layout(std::vector<int64_t>{517, 3, 40});
  const int64_t n = layout.num_elems();
  TwinRuns t;
  t.host.resize(kSessRanks);
  t.dev.resize(kSessRanks);
  t.st_host.resize(kSessRanks);
  t.st_dev.resize(kSessRanks);
  std::mutex m;
  for (Backend backend : {Backend::kHostF32, Backend::kCuda}) {
    run_local(kSessRanks, [&](Communicator& comm) {
      const int r = comm.rank();
      SessionConfig cfg = sess_config(c, backend);
      cfg.nonfinite = policy;
      Session s(comm, layout, cfg);
      DeviceBuffer<float> d_g(static_cast<size_t>(n), stream), d_u(static_cast<size_t>(n), stream);
      std::vector<StepOutcome> outs;
      for (int k = 0; k < steps; ++k) {
        std::vector<float> g = grad_of(r, k, n);
        spoil(r, k, g);
        StepOutcome o;
        o.u.assign(static_cast<size_t>(n), 0.0f);
        try {
          StepStats st;
          if (backend == Backend::kCuda && k % 2 == 0) {
            d_g.upload(g);
            st = s.step_device(d_g.get(), GradType::kF32, d_u.get(), stream);
            GCOMP_TEST_CUDA(cudaStreamSynchronize(stream));
            o.u = d_u.download();
          } else {
            st = s.step(std::span<const float>(g), std::span<float>(o.u));
          }
          o.skipped = st.skipped;
        } catch (const Error& e) {
          o.u.clear();
          o.status = static_cast<int>(e.status());
          o.what = e.what();
        }
        o.count = s.step_count();
        outs.push_back(o);
      }
      const StateList st = state_of(s);
      EXPECT_EQ(s.device_status(), gcompSuccess) << "rank " << r;
      std::lock_guard<std::mutex> lock(m);
      (backend == Backend::kCuda ? t.dev : t.host)[static_cast<size_t>(r)] = outs;
      (backend == Backend::kCuda ? t.st_dev : t.st_host)[static_cast<size_t>(r)] = st;
    });
  }
  return t;
}

/// Equal bit for bit, except that any two NaNs count as equal: a NaN that arithmetic creates (Inf -
/// Inf of an overflowed state) has the x86 default NaN's bits on the host and the canonical CUDA
/// NaN's on the device.
template <class F>
bool same_bits_or_nan(const std::vector<F>& a, const std::vector<F>& b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i)
    if (std::memcmp(&a[i], &b[i], sizeof(F)) != 0 && !(std::isnan(a[i]) && std::isnan(b[i]))) return false;
  return true;
}

class GpuSessionPolicyTest : public GpuParamFixture<PolicyParam> {};

TEST_P(GpuSessionPolicyTest, NonFiniteGradientsEqualTheHostF32Twin) {
  const SessCase& c = std::get<0>(GetParam());
  const NonFinitePolicy policy = std::get<1>(GetParam());
  constexpr int kPolicySteps = 7;
  const TwinRuns t = run_policy_twins(
      c, policy, kPolicySteps,
      [](int r, int k, std::vector<float>& g) {
        if (r == 1 && k == 2) g[g.size() / 2] = std::nanf("");
        if (r == 1 && k == 4) g.back() = -std::numeric_limits<float>::infinity();
      },
      stream_);
  for (int r = 0; r < kSessRanks; ++r) {
    const auto R = static_cast<size_t>(r);
    ASSERT_EQ(t.host[R].size(), t.dev[R].size());
    for (size_t k = 0; k < t.host[R].size(); ++k) {
      const StepOutcome& h = t.host[R][k];
      const StepOutcome& d = t.dev[R][k];
      EXPECT_TRUE(h.status == d.status && h.where() == d.where() && h.skipped == d.skipped && h.count == d.count &&
                  h.u.size() == d.u.size() && std::memcmp(h.u.data(), d.u.data(), h.u.size() * sizeof(float)) == 0)
          << "rank " << r << " step " << k << ": host-f32 status " << h.status << " '" << h.what << "' skipped "
          << h.skipped << " count " << h.count << "; cuda status " << d.status << " '" << d.what << "' skipped "
          << d.skipped << " count " << d.count;
    }
    // The twin itself: the bad steps are decided on every rank, the others run.
    for (const int k : {2, 4}) {
      const StepOutcome& h = t.host[R][static_cast<size_t>(k)];
      if (policy == NonFinitePolicy::kSkip) {
        EXPECT_TRUE(h.skipped) << "rank " << r << " step " << k;
      } else {
        EXPECT_EQ(h.status, static_cast<int>(gcompErrorNonFinite)) << "rank " << r << " step " << k;
        EXPECT_EQ(h.where(), r == 1 ? 1 : 2) << "rank " << r << " step " << k;
      }
    }
    EXPECT_EQ(t.host[R].back().count, static_cast<uint64_t>(kPolicySteps - 2)) << "rank " << r;
    EXPECT_TRUE(t.st_host[R] == t.st_dev[R]) << "final state, rank " << r;
  }
}

INSTANTIATE_TEST_SUITE_P(AllAlgorithms, GpuSessionPolicyTest,
                         testing::Combine(testing::ValuesIn(kSessionCases),
                                          testing::Values(NonFinitePolicy::kError, NonFinitePolicy::kSkip)),
                         [](const auto& param_info) {
                           return std::string(std::get<0>(param_info.param).name) +
                                  (std::get<1>(param_info.param) == NonFinitePolicy::kSkip ? "_skip" : "_error");
                         });

// A codec that refuses a finite gradient (an overflow of the algorithm's own values: rank 1's
// gradient is 3e38 everywhere at step 2, finite in fp32, whose l2/l1 block norms and sums overflow)
// on local ranks. The cuda encode records gcompErrorNonFinite on the device; when the message is
// staged the gradient is scanned (the late agreement, nonfinite = error: DeviceOps::staged_word),
// finds nothing, and the word is the codec's status, so the step fails on every rank as on the
// twin instead of being decided by the policy; with nonfinite = zero there is no agreement and the
// word is the status as it is. Codecs that do not overflow on it run the step. Per rank and step
// the status, the update, the step count and the final state must equal the twin's (any two NaNs
// equal: an overflowed state may make them); a rank whose twin names the failed rank ("failed on
// rank N") gets the same message. (The failed rank's own message is the twin codec's text, thrown
// where it failed, against the device's "failed on this rank": only the status is compared there.)
class GpuSessionOverflowTest : public GpuParamFixture<PolicyParam> {};

TEST_P(GpuSessionOverflowTest, FiniteGradientRefusedByTheCodecFailsAsOnTheHostF32Twin) {
  const TwinRuns t = run_policy_twins(
      std::get<0>(GetParam()), std::get<1>(GetParam()), 5,
      [](int r, int k, std::vector<float>& g) {
        if (r == 1 && k == 2) std::fill(g.begin(), g.end(), 3e38f);
      },
      stream_);
  for (int r = 0; r < kSessRanks; ++r) {
    const auto R = static_cast<size_t>(r);
    ASSERT_EQ(t.host[R].size(), t.dev[R].size());
    for (size_t k = 0; k < t.host[R].size(); ++k) {
      const StepOutcome& h = t.host[R][k];
      const StepOutcome& d = t.dev[R][k];
      EXPECT_EQ(h.status, d.status) << "rank " << r << " step " << k << ": host-f32 '" << h.what << "', cuda '"
                                    << d.what << "'";
      EXPECT_EQ(h.count, d.count) << "rank " << r << " step " << k;
      EXPECT_TRUE(same_bits_or_nan(h.u, d.u)) << "rank " << r << " step " << k << ": the updates differ";
      if (h.what.find("failed on rank ") != std::string::npos) {
        EXPECT_EQ(h.what, d.what) << "rank " << r << " step " << k;
      }
    }
    ASSERT_EQ(t.st_host[R].size(), t.st_dev[R].size());
    for (size_t a = 0; a < t.st_host[R].size(); ++a) {
      EXPECT_EQ(t.st_host[R][a].first, t.st_dev[R][a].first);
      EXPECT_TRUE(same_bits_or_nan(t.st_host[R][a].second, t.st_dev[R][a].second))
          << "final state " << t.st_host[R][a].first << ", rank " << r;
    }
  }
}

INSTANTIATE_TEST_SUITE_P(AllAlgorithms, GpuSessionOverflowTest,
                         testing::Combine(testing::ValuesIn(kSessionCases),
                                          testing::Values(NonFinitePolicy::kError, NonFinitePolicy::kZero)),
                         [](const auto& param_info) {
                           return std::string(std::get<0>(param_info.param).name) +
                                  (std::get<1>(param_info.param) == NonFinitePolicy::kZero ? "_zero" : "_error");
                         });

// step_device on a caller's stream that is destroyed right after the call (no sync), then the host
// API, state() and a checkpoint: they run on the session's own stream, after the step's work, and
// equal the host-f32 twin bit for bit. A session that kept using the last step_device stream would
// fail here or run on a destroyed (possibly recycled) handle.
TEST_F(GpuSessionMisc, HostApiAfterTheCallerStreamIsDestroyed) {
  const int64_t n = 4097;
  const std::string path = testing::TempDir() + "/gpu_sess_stream_ckpt";
  for (const char* name : {"diana", "compressed_gd_spherical"}) {
    std::vector<std::vector<float>> dev_updates, twin_updates;
    StateList dev_state, twin_state;
    for (Backend backend : {Backend::kCuda, Backend::kHostF32}) {
      run_local(1, [&](Communicator& comm) {
        Session s(comm, Layout(n), sess_config(session_case(name), backend));
        std::vector<std::vector<float>> us;
        DeviceBuffer<float> d_g(static_cast<size_t>(n), stream_), d_u(static_cast<size_t>(n), stream_);
        for (int k = 0; k < 6; ++k) {
          const std::vector<float> g = grad_of(0, k, n);
          std::vector<float> u(static_cast<size_t>(n));
          if (backend == Backend::kCuda && k % 2 == 0) {
            d_g.upload(g);
            cudaStream_t caller = nullptr;
            GCOMP_TEST_CUDA(cudaStreamCreateWithFlags(&caller, cudaStreamNonBlocking));
            (void)s.step_device(d_g.get(), GradType::kF32, d_u.get(), caller);
            GCOMP_TEST_CUDA(cudaStreamDestroy(caller));  // the step may still be running
            GCOMP_TEST_CUDA(cudaDeviceSynchronize());
            u = d_u.download();
          } else {
            (void)s.step(std::span<const float>(g), std::span<float>(u));
          }
          us.push_back(u);
        }
        EXPECT_EQ(s.device_status(), gcompSuccess);
        const StateList st = state_of(s);
        s.save(path);
        Session t(comm, Layout(n), sess_config(session_case(name), backend));
        t.load(path);
        std::vector<float> u1(static_cast<size_t>(n)), u2(static_cast<size_t>(n));
        (void)s.step(std::span<const float>(grad_of(0, 6, n)), std::span<float>(u1));
        (void)t.step(std::span<const float>(grad_of(0, 6, n)), std::span<float>(u2));
        EXPECT_TRUE(u1 == u2) << name << ": resumed session differs";
        us.push_back(u1);
        (backend == Backend::kCuda ? dev_updates : twin_updates) = us;
        (backend == Backend::kCuda ? dev_state : twin_state) = st;
      });
    }
    ASSERT_EQ(dev_updates.size(), twin_updates.size());
    for (size_t k = 0; k < dev_updates.size(); ++k)
      EXPECT_TRUE(std::memcmp(dev_updates[k].data(), twin_updates[k].data(), dev_updates[k].size() * sizeof(float)) ==
                  0)
          << name << " step " << k;
    EXPECT_TRUE(dev_state == twin_state) << name;
  }
}

// sdither's merged decode-reduce runs in batches of sdither_merge_batch(chunk, s) payloads and
// applies the Session's step in the store of the last batch only (the earlier ones keep their
// partial sums in the scratch accumulator: coded_launch.cu sdither_merge_batched). A chunk of
// 16384 holds two payloads a batch, so the 3 local ranks reduce in a batch of 2 (plain store) and
// one of 1 (the step's store): the mean times lr (compressed-gd), DIANA's server step, and the
// two-way server's p~ = e~ + mean of each shard (sharded doublesqueeze) with the downlink decode
// times lr. Every update and the final state must equal the host-f32 twin's bit for bit.
TEST_F(GpuSessionMisc, SditherMergedBatchesStoreTheStepInTheLastBatch) {
  const Layout layout(std::vector<int64_t>{40000, 7});
  const int64_t n = layout.num_elems();
  const char* spec = "sdither:levels=2,norm=l2,block=512,chunk=16384";
  const SessionCase cases[] = {
      {"compressed_gd_sdither_16384", Algorithm::kCompressedGd, spec, "identity", 0.0, ServerMode::kReplicated, 0},
      {"diana_sdither_16384", Algorithm::kDiana, spec, "identity", 0.0, ServerMode::kReplicated, 0},
      {"doublesqueeze_sharded_sdither_16384", Algorithm::kDoubleSqueeze, spec, spec, 0.0, ServerMode::kSharded, 0},
  };
  for (const SessionCase& c : cases) {
    SCOPED_TRACE(c.name);
    std::vector<std::vector<std::vector<float>>> u_host(kSessRanks), u_dev(kSessRanks);
    std::vector<StateList> st_host(kSessRanks), st_dev(kSessRanks);
    std::mutex m;
    for (Backend backend : {Backend::kHostF32, Backend::kCuda}) {
      run_local(kSessRanks, [&](Communicator& comm) {
        const int r = comm.rank();
        Session s(comm, layout, sess_config(c, backend));
        DeviceBuffer<float> d_g(static_cast<size_t>(n), stream_), d_u(static_cast<size_t>(n), stream_);
        std::vector<std::vector<float>> us;
        for (int k = 0; k < 4; ++k) {
          const std::vector<float> g = grad_of(r, k, n);
          std::vector<float> u(static_cast<size_t>(n));
          if (backend == Backend::kCuda && k % 2 == 0) {
            d_g.upload(g);
            (void)s.step_device(d_g.get(), GradType::kF32, d_u.get(), stream_);
            GCOMP_TEST_CUDA(cudaStreamSynchronize(stream_));
            u = d_u.download();
          } else {
            (void)s.step(std::span<const float>(g), std::span<float>(u));
          }
          us.push_back(u);
        }
        const StateList st = state_of(s);
        EXPECT_EQ(s.device_status(), gcompSuccess) << "rank " << r;
        std::lock_guard<std::mutex> lock(m);
        (backend == Backend::kCuda ? u_dev : u_host)[r] = us;
        (backend == Backend::kCuda ? st_dev : st_host)[r] = st;
      });
    }
    for (int r = 0; r < kSessRanks; ++r)
      ASSERT_NO_FATAL_FAILURE(expect_same_run(u_host[r], u_dev[r], st_host[r], st_dev[r],
                                              std::string(c.name) + " rank " + std::to_string(r)));
  }
}

TEST_F(GpuSessionMisc, NonFiniteSkipAndCheckpointResume) {
  const int64_t n = 257;
  SessionConfig cfg = sess_config(session_case("dist_ef_sgdm_sharded"), Backend::kCuda);
  cfg.nonfinite = NonFinitePolicy::kSkip;
  const std::string path = testing::TempDir() + "/gpu_sess_ckpt";
  run_local(1, [&](Communicator& comm) {
    Session s(comm, Layout(n), cfg);
    std::vector<float> u(static_cast<size_t>(n));
    for (int k = 0; k < 4; ++k) (void)s.step(std::span<const float>(grad_of(0, k, n)), std::span<float>(u));
    std::vector<float> bad = grad_of(0, 4, n);
    bad[5] = std::nanf("");
    EXPECT_TRUE(s.step(std::span<const float>(bad), std::span<float>(u)).skipped);
    EXPECT_EQ(s.step_count(), 4u);
    s.save(path);
    std::vector<float> u1(static_cast<size_t>(n)), u2(static_cast<size_t>(n));
    (void)s.step(std::span<const float>(grad_of(0, 5, n)), std::span<float>(u1));
    Session t(comm, Layout(n), cfg);
    t.load(path);
    (void)t.step(std::span<const float>(grad_of(0, 5, n)), std::span<float>(u2));
    EXPECT_TRUE(u1 == u2);
  });
}

// The cuda Session on a device communicator: nccl with one rank on the one GPU. Its own paths run
// here and nowhere else in this suite (the other tests use local ranks, whose messages are staged
// through pinned host memory): the update computed in d_update itself, the messages and the
// non-finite agreement on the status words the device writes (a scan of the gradient gated on the
// step's status record, no host sync of its own; before the step for the delay and hessian-ec
// cases: nccl allreduce of the flags), the status
// read by device_status() instead of the step. For every session case, each update and the final
// state must equal the host-f32 twin's (one local rank) bit for bit; also under nonfinite = skip
// and error with a NaN in the gradient at step 3 (skipped with a zero update, or gcompErrorNonFinite
// "on this rank"; state and step count kept; the device status clean afterwards).
TEST_F(GpuSessionMisc, OneRankNcclSessionsEqualTheHostF32Twin) {
  if (!nccl_available()) GTEST_SKIP() << "built without the nccl backend";
  if (const std::string why = nccl_unusable(); !why.empty()) GTEST_SKIP() << "nccl unusable: " << why;
  int device = 0;
  GCOMP_TEST_CUDA(cudaGetDevice(&device));
  NcclOptions options;
  options.bootstrap = NcclBootstrap::kFile;
  options.rank = 0;
  options.world_size = 1;
  options.device = device;
  options.timeout_ms = 60000;
  options.id_file = testing::TempDir() + "gcomp_session_nccl_id_" + std::to_string(::getpid());
  const std::unique_ptr<Communicator> nccl = make_nccl_communicator(options);
  std::remove(options.id_file.c_str());
  const Layout layout(std::vector<int64_t>{517, 3, 40});
  const int64_t n = layout.num_elems();
  const auto N = static_cast<size_t>(n);
  constexpr int kNcclSteps = 6;
  for (const SessCase& c : kSessionCases) {
    const std::string name = c.name;
    for (const int policy : {0, 1, 2}) {  // none, skip, error
      const bool bad = policy != 0;
      SCOPED_TRACE(name + (policy == 1 ? " (nonfinite = skip)" : policy == 2 ? " (nonfinite = error)" : ""));
      const auto config = [&](Backend backend) {
        SessionConfig cfg = sess_config(c, backend);
        cfg.nonfinite = policy == 1 ? NonFinitePolicy::kSkip : NonFinitePolicy::kError;
        return cfg;
      };
      const auto grad = [&](int k) {
        std::vector<float> g = grad_of(0, k, n);
        if (bad && k == 3) g[N / 2] = std::nanf("");
        return g;
      };
      // Per step: skipped (1), thrown gcompErrorNonFinite naming this rank (2), else 0.
      std::vector<std::vector<float>> u_host, u_dev;
      std::vector<int> skipped_host, skipped_dev;
      StateList st_host, st_dev;
      const auto outcome = [](auto&& run_step) {
        try {
          return run_step().skipped ? 1 : 0;
        } catch (const Error& e) {
          const bool mine = std::string(e.what()).find("on this rank") != std::string::npos;
          return e.status() == gcompErrorNonFinite && mine ? 2 : 3;
        }
      };
      run_local(1, [&](Communicator& local) {
        Session s(local, layout, config(Backend::kHostF32));
        for (int k = 0; k < kNcclSteps; ++k) {
          const std::vector<float> g = grad(k);
          std::vector<float> u(N);
          skipped_host.push_back(outcome([&] { return s.step(std::span<const float>(g), std::span<float>(u)); }));
          u_host.push_back(skipped_host.back() >= 2 ? std::vector<float>() : u);
        }
        st_host = state_of(s);
      });
      {
        Session s(*nccl, layout, config(Backend::kCuda));
        DeviceBuffer<float> d_g(N, stream_), d_u(N, stream_);
        for (int k = 0; k < kNcclSteps; ++k) {
          d_g.upload(grad(k));
          skipped_dev.push_back(outcome([&] { return s.step_device(d_g.get(), GradType::kF32, d_u.get(), stream_); }));
          sync();
          u_dev.push_back(skipped_dev.back() >= 2 ? std::vector<float>() : d_u.download());
        }
        // The errors the encode reported on the decided step are not reported later.
        EXPECT_EQ(s.device_status(), gcompSuccess);
        EXPECT_EQ(s.step_count(), static_cast<uint64_t>(bad ? kNcclSteps - 1 : kNcclSteps));
        st_dev = state_of(s);
      }
      EXPECT_EQ(skipped_host, skipped_dev);
      if (bad) {
        EXPECT_EQ(skipped_host[3], policy == 1 ? 1 : 2);
      }
      ASSERT_NO_FATAL_FAILURE(expect_same_run(u_host, u_dev, st_host, st_dev, "nccl"));
    }
  }
}

}  // namespace
}  // namespace gcomp::test
