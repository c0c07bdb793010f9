// SPDX-License-Identifier: Apache-2.0
// The cuda Session backend against its CPU twin (host-f32): for every algorithm, several sizes and
// layouts, on local ranks (payloads staged through pinned host memory), the device session's
// updates and state must equal the twin's bit for bit, step after step. Gradients go in through
// step_device() on a non-default stream (fp32 and bf16) and through the host API. Skips without a
// device.
#include "algorithms/session_cases.hpp"
#include "gpu/gpu_test_util.hpp"

#include <gcomp/comm.hpp>
#include <gcomp/detail/half.hpp>
#include <gcomp/session.hpp>

#include <cmath>
#include <cstring>
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
  std::vector<std::vector<std::pair<std::string, std::vector<double>>>> st_host(kSessRanks), st_dev(kSessRanks);
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
      std::vector<std::pair<std::string, std::vector<double>>> st;
      for (const auto& [name, v] : s.state()) st.emplace_back(name, *v);
      EXPECT_EQ(s.device_status(), gcompSuccess);
      if (stream != nullptr) (void)cudaStreamDestroy(stream);
      std::lock_guard<std::mutex> lock(m);
      (backend == Backend::kCuda ? u_dev : u_host)[r] = us;
      (backend == Backend::kCuda ? st_dev : st_host)[r] = st;
    });
  }
  for (int r = 0; r < kSessRanks; ++r) {
    for (int k = 0; k < kSteps; ++k) {
      const auto& a = u_host[r][k];
      const auto& b = u_dev[r][k];
      ASSERT_EQ(a.size(), b.size());
      for (size_t i = 0; i < a.size(); ++i)
        ASSERT_EQ(std::memcmp(&a[i], &b[i], sizeof(float)), 0)
            << "rank " << r << " step " << k << " element " << i << ": host-f32 " << a[i] << ", cuda " << b[i];
    }
    ASSERT_EQ(st_host[r].size(), st_dev[r].size());
    for (size_t a = 0; a < st_host[r].size(); ++a) {
      EXPECT_EQ(st_host[r][a].first, st_dev[r][a].first);
      EXPECT_TRUE(st_host[r][a].second == st_dev[r][a].second) << "state " << st_host[r][a].first << " rank " << r;
    }
  }
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

// step_device on a caller's stream that is destroyed right after the call (no sync), then the host
// API, state() and a checkpoint: they run on the session's own stream, after the step's work, and
// equal the host-f32 twin bit for bit. A session that kept using the last step_device stream would
// fail here or run on a destroyed (possibly recycled) handle.
TEST_F(GpuSessionMisc, HostApiAfterTheCallerStreamIsDestroyed) {
  const int64_t n = 4097;
  const std::string path = testing::TempDir() + "/gpu_sess_stream_ckpt";
  for (const char* name : {"diana", "compressed_gd_spherical"}) {
    std::vector<std::vector<float>> dev_updates, twin_updates;
    std::vector<std::pair<std::string, std::vector<double>>> dev_state, twin_state;
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
        std::vector<std::pair<std::string, std::vector<double>>> st;
        for (const auto& [key, v] : s.state()) st.emplace_back(key, *v);
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

}  // namespace
}  // namespace gcomp::test
