// SPDX-License-Identifier: Apache-2.0
// The element math of the Session's fused decode stores (gcomp/detail/session_math.hpp:
// scale_twice_f, mean_add_f, diana_server_f, with mul_rn and vote_f) against the separate calls of
// the host-f32 backend (VecOps<float>::scale, lincomb, vote) that they replace, bit for bit, over
// signed zeros, NaN, infinities, subnormals and the factors 1. The CUDA decoders' store
// (cuda/fused/decode_store.cuh) calls these functions; the GPU suites compare the cuda Session with
// the host-f32 twin.
#include <gcomp/detail/session_math.hpp>

#include "host/algorithms/vec_ops.hpp"

#include <gcomp/comm.hpp>

#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <memory>
#include <vector>

namespace {

namespace d = gcomp::detail;

uint32_t bits_of(float v) {
  uint32_t u;
  std::memcpy(&u, &v, 4);
  return u;
}

/// The same bits, or both NaN: the payload of a NaN result with two NaN operands is not fixed by
/// IEEE 754 (x86 returns the first operand's, and a compiler may swap the operands of a commutative
/// add; the GPU returns its canonical NaN), so only NaN-ness is compared there.
testing::AssertionResult same_bits(float got, float want) {
  if (bits_of(got) == bits_of(want) || (std::isnan(got) && std::isnan(want))) return testing::AssertionSuccess();
  return testing::AssertionFailure() << "got " << got << " (0x" << std::hex << bits_of(got) << "), want " << want
                                     << " (0x" << bits_of(want) << ")";
}

float from_bits(uint32_t u) {
  float v;
  std::memcpy(&v, &u, 4);
  return v;
}

/// Values of the sums, states and factors: signed zeros, NaN of both signs, infinities, the
/// smallest and a larger subnormal, the smallest normal, exact and inexact values, near overflow.
std::vector<float> special_values() {
  return {0.0f,
          -0.0f,
          std::numeric_limits<float>::quiet_NaN(),
          from_bits(0xffc00001u),
          std::numeric_limits<float>::infinity(),
          -std::numeric_limits<float>::infinity(),
          from_bits(1u),
          -from_bits(0x00012345u),
          std::numeric_limits<float>::min(),
          1.0f,
          -1.0f,
          0.1f,
          -2.5f,
          1.0f / 3.0f,
          3e38f,
          -1.7e38f,
          7.0f};
}

std::vector<float> factors() { return {1.0f, -1.0f, 0.5f, 0.25f, 1.0f / 3.0f, 1e-3f, 3.0f, 0.0f, 1e-40f, 2e38f}; }

class SessionMathTest : public testing::Test {
 protected:
  void SetUp() override {
    comms_ = gcomp::make_local_group(1);
    ops_ = d::make_host_ops<float>(*comms_[0]);
    const std::vector<float> v = special_values();
    for (float a : v) {
      for (float b : v) {
        y_.push_back(a);
        s_.push_back(b);
      }
    }
    n_ = s_.size();
  }

  [[nodiscard]] std::vector<float> buffer() const { return std::vector<float>(n_, 0.0f); }

  std::vector<std::unique_ptr<gcomp::Communicator>> comms_;
  std::unique_ptr<d::VecOps<float>> ops_;
  std::vector<float> y_, s_;  // every pair of special values
  size_t n_ = 0;
};

// decode_reduce_scale: scale(out, a, sum), then scale(u, b, out)
TEST_F(SessionMathTest, ScaleTwiceEqualsTwoScaleCalls) {
  auto t = buffer(), u = buffer();
  for (float a : factors()) {
    for (float b : factors()) {
      ops_->scale(t.data(), a, s_.data(), n_);
      ops_->scale(u.data(), b, t.data(), n_);
      for (size_t i = 0; i < n_; ++i) {
        ASSERT_TRUE(same_bits(d::mul_rn(a, s_[i]), t[i])) << a << " * " << s_[i];
        ASSERT_TRUE(same_bits(d::scale_twice_f(a, b, s_[i]), u[i])) << b << " * " << a << " * " << s_[i];
      }
    }
  }
}

// decode_mean_add: scale(t, a, sum), then lincomb(w, 1, y, 1, t)
TEST_F(SessionMathTest, MeanAddEqualsScaleThenLincomb) {
  auto t = buffer(), w = buffer();
  for (float a : factors()) {
    ops_->scale(t.data(), a, s_.data(), n_);
    ops_->lincomb(w.data(), 1.0f, y_.data(), 1.0f, t.data(), n_);
    for (size_t i = 0; i < n_; ++i)
      ASSERT_TRUE(same_bits(d::mean_add_f(y_[i], a, s_[i]), w[i])) << y_[i] << " + " << a << " * " << s_[i];
  }
}

// decode_diana: scale(mean, a, sum); lincomb(g, 1, h, 1, mean); scale(u, lr, g);
// lincomb(h_out, 1, h, alpha, mean)
TEST_F(SessionMathTest, DianaServerEqualsItsFourCalls) {
  auto mean = buffer(), g = buffer(), u = buffer(), h_out = buffer();
  const float* h = y_.data();
  for (float a : {1.0f, 0.5f, 1.0f / 3.0f, 0.125f}) {
    for (float alpha : factors()) {
      for (float lr : {1.0f, 0.1f, 1e-40f}) {
        ops_->scale(mean.data(), a, s_.data(), n_);
        ops_->lincomb(g.data(), 1.0f, h, 1.0f, mean.data(), n_);
        ops_->scale(u.data(), lr, g.data(), n_);
        ops_->lincomb(h_out.data(), 1.0f, h, alpha, mean.data(), n_);
        for (size_t i = 0; i < n_; ++i) {
          const d::DianaServer r = d::diana_server_f(h[i], a, alpha, s_[i]);
          ASSERT_TRUE(same_bits(r.g, g[i])) << h[i] << " + " << a << " * " << s_[i];
          ASSERT_TRUE(same_bits(d::mul_rn(lr, r.g), u[i])) << lr << " * g";
          ASSERT_TRUE(same_bits(r.h_out, h_out[i])) << h[i] << " + " << alpha << " * " << a << " * " << s_[i];
        }
      }
    }
  }
}

// decode_vote: vote(u, acc, lr, tie)
TEST_F(SessionMathTest, VoteEqualsTheVoteCall) {
  auto u = buffer();
  for (float lr : factors()) {
    for (bool tie : {false, true}) {
      ops_->vote(u.data(), s_.data(), lr, tie, n_);
      for (size_t i = 0; i < n_; ++i)
        ASSERT_TRUE(same_bits(d::vote_f(s_[i], lr, tie), u[i])) << s_[i] << " lr " << lr << " tie " << tie;
    }
  }
}

// The factor 1 changes no bit of a number (the fused stores rely on no such identity: they
// evaluate every product the separate calls evaluate); the signed zeros stay apart.
TEST(SessionMathIdentities, SignedZerosAndUnitFactors) {
  EXPECT_EQ(bits_of(d::scale_twice_f(1.0f, 1.0f, -0.0f)), bits_of(-0.0f));
  EXPECT_EQ(bits_of(d::mean_add_f(-0.0f, 1.0f, -0.0f)), bits_of(-0.0f));
  EXPECT_EQ(bits_of(d::mean_add_f(0.0f, 1.0f, -0.0f)), bits_of(0.0f));
  EXPECT_EQ(bits_of(d::scale_twice_f(1.0f, 1.0f, from_bits(1u))), 1u);
  const d::DianaServer r = d::diana_server_f(-0.0f, 0.5f, 1.0f, -0.0f);
  EXPECT_EQ(bits_of(r.g), bits_of(-0.0f));
  EXPECT_EQ(bits_of(r.h_out), bits_of(-0.0f));
  EXPECT_TRUE(
      std::isnan(d::mean_add_f(std::numeric_limits<float>::infinity(), 1.0f, -std::numeric_limits<float>::infinity())));
  EXPECT_EQ(bits_of(d::vote_f(-0.0f, 0.5f, true)), bits_of(0.0f));
  EXPECT_EQ(bits_of(d::vote_f(-0.0f, 0.5f, false)), bits_of(0.5f));
}

}  // namespace
