// SPDX-License-Identifier: Apache-2.0
// The element math the cuda encoders form their input with as they load it (cuda Input:
// lincomb_f of gcomp/detail/session_math.hpp, for the DIANA difference diana_delta_f and the
// Session's p = a x + b y), against the host sequence it replaces (the stored delta g - h, lincomb()'s two products and
// their sum), bit for bit on signed zeros, subnormals, the fp32 extremes and Inf (a NaN result: NaN). And the claim the
// Session's shared-scale encode rests on (cuda/dispatch/device_codec_access.hpp): a non-finite x gives its block a
// non-finite scale for every shareable codec's scale math (the GCOMP_HD reduction and finish functions the kernels
// run), and a rank that sends +Inf scales makes the max over the ranks non-finite whatever the allreduce's max does
// with NaN.
#include "host/codecs/internal.hpp"

#include <gcomp/detail/norms.hpp>
#include <gcomp/detail/reduce.hpp>
#include <gcomp/detail/session_math.hpp>

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

namespace {

using gcomp::detail::diana_delta_f;
using gcomp::detail::lincomb_f;

uint32_t bits_of(float v) {
  uint32_t u;
  std::memcpy(&u, &v, 4);
  return u;
}

/// The same bits, or both NaN: a NaN's sign and payload depend on the operand order the compiler
/// picks for a commutative operation (x86) and are canonical on the GPU; a NaN input fails the
/// encode either way.
testing::AssertionResult same_value(float got, float want) {
  if (std::isnan(got) && std::isnan(want)) return testing::AssertionSuccess();
  if (bits_of(got) == bits_of(want)) return testing::AssertionSuccess();
  return testing::AssertionFailure() << "got " << got << " (0x" << std::hex << bits_of(got) << "), want " << want
                                     << " (0x" << bits_of(want) << ")";
}

const std::vector<float>& special_values() {
  using L = std::numeric_limits<float>;
  static const std::vector<float> v = {
      0.0f,    -0.0f,    1.5f,     -3.25f,    0.1f,  L::denorm_min(), -L::denorm_min(), 1e-40f,
      -3e-39f, L::min(), L::max(), -L::max(), 3e38f, L::infinity(),   -L::infinity(),   L::quiet_NaN()};
  return v;
}

TEST(EncodeInputTest, FormsEqualTheHostSequenceBitForBit) {
  const float factors[] = {0.05f, 1.0f, -1.0f, -0.75f, 0.0f, -0.0f, 2.0f, 1e-30f, 3e38f};
  for (float x : special_values()) {
    for (float y : special_values()) {
      // DIANA: the CPU codec's delta buffer, g - h rounded once.
      volatile float delta = x - y;
      EXPECT_TRUE(same_value(diana_delta_f(x, y), delta)) << x << " - " << y;
      for (float a : factors) {
        for (float b : factors) {
          // lincomb(): each product rounded to fp32 on its own, then the sum (never fused).
          volatile float ax = a * x;
          volatile float by = b * y;
          volatile float p = ax + by;
          EXPECT_TRUE(same_value(lincomb_f(a, x, b, y), p)) << a << " * " << x << " + " << b << " * " << y;
        }
      }
    }
  }
}

// A shareable codec's scale of one block, as the kernels compute it (cuda/quant/block_reduce.cuh,
// cuda/dispatch/elementwise_launch.cu dense_scales, coded_launch.cu sdither_scales): the fixed-
// order reduction of reduce.hpp (the host's block_reduce runs the same order), then the finish.
enum class Scale { kL1, kL2, kLinf, kLp3, kTernGrad, kTernGradClip };

float block_scale(Scale s, const std::vector<float>& x) {
  using namespace gcomp::detail;
  const auto len = static_cast<int64_t>(x.size());
  switch (s) {
    case Scale::kL1: return finish_norm(kNormL1, block_reduce(AbsSumOp{}, x.data(), len), 1.0);
    case Scale::kL2: return finish_norm(kNormL2, block_reduce(SquareSumOp{}, x.data(), len), 2.0);
    case Scale::kLinf: return finish_norm(kNormLinf, block_reduce(AbsMaxOp{}, x.data(), len), 0.0);
    case Scale::kLp3: return finish_norm(kNormLp, block_reduce(PowSumOp{3.0}, x.data(), len), 3.0);
    case Scale::kTernGrad: return static_cast<float>(block_reduce(AbsMaxOp{}, x.data(), len));
    case Scale::kTernGradClip: {  // Finish::kStoreMax, kStoreMean, then kTernClip
      const auto mx = static_cast<float>(block_reduce(AbsMaxOp{}, x.data(), len));
      const double mean = block_reduce(SumOp{}, x.data(), len) / static_cast<double>(len);
      const double centered = block_reduce(CenteredSquareSumOp{mean}, x.data(), len);
      return is_finite_f(mx) ? terngrad_scale(mx, centered, len, 2.5) : mx;
    }
  }
  return 0.0f;
}

// dither (l1, l2, linf, lp), natdither (its dither's norms), terngrad with and without clip,
// sdither (l2, linf): every block holding a NaN or an Inf, at its first, a middle or its last
// element, alone or with the other infinity, among finite values up to the fp32 maximum, in
// blocks of one tile and of several (the multi-tile tree), has a non-finite scale.
TEST(SharedScaleTest, ANonFiniteInputGivesItsBlockANonFiniteScale) {
  using L = std::numeric_limits<float>;
  const Scale scales[] = {Scale::kL1, Scale::kL2, Scale::kLinf, Scale::kLp3, Scale::kTernGrad, Scale::kTernGradClip};
  for (const int64_t len :
       {int64_t{1}, int64_t{2}, int64_t{257}, int64_t{4096}, int64_t{4097}, int64_t{3 * 4096 + 5}}) {
    std::vector<float> base(static_cast<size_t>(len));
    for (int64_t i = 0; i < len; ++i)
      base[i] = (i % 5 == 0 ? L::max() : 0.001f * static_cast<float>(i % 97)) * (i % 2 == 0 ? 1.0f : -1.0f);
    for (const float bad : {L::quiet_NaN(), L::infinity(), -L::infinity()}) {
      for (const int64_t at : {int64_t{0}, len / 2, len - 1}) {
        for (const bool both_infinities : {false, true}) {
          std::vector<float> x = base;
          x[at] = bad;
          if (both_infinities && len > 1) x[at == 0 ? len - 1 : 0] = -bad;
          for (const Scale s : scales)
            EXPECT_FALSE(gcomp::detail::is_finite_f(block_scale(s, x)))
                << "scale " << static_cast<int>(s) << ", len " << len << ", " << bad << " at " << at;
        }
      }
    }
  }
}

// The device communicator's allreduce max of the shared scales: a rank whose scales failed sends
// +Inf for every block (copy_scales_kernel with inf_on_error), and the max over the ranks is then
// +Inf on every rank for every max an allreduce may use (one built on fmaxf drops a NaN: a NaN
// scale would not survive it), so every rank's encode_with_shared_scales fails.
TEST(SharedScaleTest, APeerThatSendsInfinityMakesEveryRanksMaxNonFinite) {
  using L = std::numeric_limits<float>;
  const float finite[] = {0.0f, 1.5f, L::max(), L::denorm_min()};
  const auto fmax_op = [](float a, float b) { return std::fmax(a, b); };
  const auto cmp_op = [](float a, float b) { return a < b ? b : a; };
  const auto std_op = [](float a, float b) { return std::max(a, b); };
  for (float f : finite) {
    EXPECT_FALSE(gcomp::detail::is_finite_f(fmax_op(L::infinity(), f)));
    EXPECT_FALSE(gcomp::detail::is_finite_f(fmax_op(f, L::infinity())));
    EXPECT_FALSE(gcomp::detail::is_finite_f(cmp_op(L::infinity(), f)));
    EXPECT_FALSE(gcomp::detail::is_finite_f(cmp_op(f, L::infinity())));
    EXPECT_FALSE(gcomp::detail::is_finite_f(std_op(L::infinity(), f)));
    EXPECT_FALSE(gcomp::detail::is_finite_f(std_op(f, L::infinity())));
    // Why not the NaN scale itself: a max that drops NaN would hide it from the other ranks.
    EXPECT_TRUE(gcomp::detail::is_finite_f(fmax_op(L::quiet_NaN(), f)));
  }
}

}  // namespace
