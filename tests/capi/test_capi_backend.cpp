// SPDX-License-Identifier: Apache-2.0
// C ABI of the session backends: gcompSessionConfig_t::backend (appended; configs from the older
// header size still accepted), host-f32 through the C ABI equals the C++ Session, and
// gcompSessionStepDevice's argument and backend checks (its device run is in tests/gpu).
#include <gcomp/comm.hpp>
#include <gcomp/gcomp.h>
#include <gcomp/session.hpp>

#include <gtest/gtest.h>

#include <cstddef>
#include <cstring>
#include <string>
#include <vector>

namespace {

testing::AssertionResult fails_with(gcompStatus_t st, gcompStatus_t want, const char* needle) {
  if (st != want)
    return testing::AssertionFailure() << "status " << st << " (" << gcompGetLastError() << "), want " << want;
  if (std::string(gcompGetLastError()).find(needle) == std::string::npos)
    return testing::AssertionFailure() << "message '" << gcompGetLastError() << "' lacks '" << needle << "'";
  return testing::AssertionSuccess();
}

gcompGradType_t bad_type() {
  gcompGradType_t t;
  const int v = 3;
  std::memcpy(&t, &v, sizeof v);
  return t;
}

class CapiBackend : public testing::Test {
 protected:
  void SetUp() override { ASSERT_EQ(gcompCommCreateLocalGroup(1, 60000, &comm_), gcompSuccess); }
  void TearDown() override {
    EXPECT_EQ(gcompSessionDestroy(s_), gcompSuccess);
    EXPECT_EQ(gcompCommDestroy(comm_), gcompSuccess);
  }
  gcompComm_t comm_ = nullptr;
  gcompSession_t s_ = nullptr;
  const int64_t n_ = 21;
};

TEST_F(CapiBackend, DefaultIsCpuAndBadValuesAreRejected) {
  gcompSessionConfig_t cfg = GCOMP_SESSION_CONFIG_INITIALIZER;
  EXPECT_EQ(cfg.backend, gcompBackendCpu);
  const int three = 3;
  std::memcpy(&cfg.backend, &three, sizeof three);
  EXPECT_TRUE(fails_with(gcompSessionCreate(&s_, comm_, &cfg, &n_, 1), gcompErrorInvalidArgument, "config->backend"));
  EXPECT_EQ(s_, nullptr);
}

TEST_F(CapiBackend, ConfigFromTheHeaderBeforeBackendIsAccepted) {
  gcompSessionConfig_t cfg = GCOMP_SESSION_CONFIG_INITIALIZER;
  cfg.size = offsetof(gcompSessionConfig_t, backend);
  const int junk = 99;  // past the caller's struct: never read
  std::memcpy(&cfg.backend, &junk, sizeof junk);
  ASSERT_EQ(gcompSessionCreate(&s_, comm_, &cfg, &n_, 1), gcompSuccess) << gcompGetLastError();
  cfg.size = offsetof(gcompSessionConfig_t, backend) + 1;
  gcompSession_t other = nullptr;
  EXPECT_TRUE(fails_with(gcompSessionCreate(&other, comm_, &cfg, &n_, 1), gcompErrorInvalidArgument, "config->size"));
}

TEST_F(CapiBackend, HostF32EqualsCppAndStepDeviceNeedsCuda) {
  gcompSessionConfig_t cfg = GCOMP_SESSION_CONFIG_INITIALIZER;
  cfg.algorithm = "diana";
  cfg.codec_spec = "dither:levels=1,norm=linf,block=4";
  cfg.seed = 5;
  cfg.backend = gcompBackendHostF32;
  ASSERT_EQ(gcompSessionCreate(&s_, comm_, &cfg, &n_, 1), gcompSuccess) << gcompGetLastError();
  gcomp::SessionConfig cpp;
  cpp.algorithm = gcomp::Algorithm::kDiana;
  cpp.codec = cfg.codec_spec;
  cpp.seed = 5;
  cpp.backend = gcomp::Backend::kHostF32;
  std::vector<float> g(static_cast<size_t>(n_)), u(g.size()), v(g.size());
  gcomp::run_local(1, [&](gcomp::Communicator& comm) {
    gcomp::Session ref(comm, gcomp::Layout(n_), cpp);
    for (int k = 0; k < 5; ++k) {
      for (size_t i = 0; i < g.size(); ++i) g[i] = static_cast<float>(0.3 * static_cast<double>(i) - k);
      gcompStepStats_t st = GCOMP_STEP_STATS_INITIALIZER;
      ASSERT_EQ(gcompSessionStepF32(s_, g.data(), u.data(), &st), gcompSuccess) << gcompGetLastError();
      (void)ref.step(std::span<const float>(g), std::span<float>(v));
      EXPECT_EQ(std::memcmp(u.data(), v.data(), u.size() * sizeof(float)), 0) << "step " << k;
    }
  });
  // The device entry point refuses a host backend, and its arguments are checked first.
  float dummy = 0;
  EXPECT_TRUE(fails_with(gcompSessionStepDevice(s_, &dummy, gcompGradFloat32, &dummy, nullptr, nullptr),
                         gcompErrorNotSupported, "cuda backend"));
  EXPECT_TRUE(fails_with(gcompSessionStepDevice(s_, nullptr, gcompGradFloat32, &dummy, nullptr, nullptr),
                         gcompErrorInvalidArgument, "d_grad"));
  EXPECT_TRUE(fails_with(gcompSessionStepDevice(s_, &dummy, bad_type(), &dummy, nullptr, nullptr),
                         gcompErrorInvalidArgument, "type"));
  uint64_t steps = 0;
  ASSERT_EQ(gcompSessionStepCount(s_, &steps), gcompSuccess);
  EXPECT_EQ(steps, 5u);
}

TEST_F(CapiBackend, CudaBackendWithoutDeviceFailsAtCreate) {
  gcompSessionConfig_t cfg = GCOMP_SESSION_CONFIG_INITIALIZER;
  cfg.backend = gcompBackendCuda;
  const gcompStatus_t st = gcompSessionCreate(&s_, comm_, &cfg, &n_, 1);
  if (st == gcompSuccess) GTEST_SKIP() << "a CUDA device is present; tests/gpu covers this backend";
  EXPECT_TRUE(fails_with(st, gcompErrorNotSupported, "cuda"));
  EXPECT_EQ(s_, nullptr);
}

}  // namespace
