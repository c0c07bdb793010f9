// SPDX-License-Identifier: Apache-2.0
// SIMD kernels of the CPU codecs (host/codecs/kernels.hpp) with Google Highway: this file is
// compiled once per instruction set (foreach_target.h) and HWY_DYNAMIC_DISPATCH picks the best one
// the CPU supports at run time. Every kernel computes, lane by lane, the IEEE operations of the
// element math (no contraction: the build passes -ffp-contract=off), so its bits equal the scalar
// reference kernels' (kernels_ref.cpp); tests/unit/test_kernels.cpp compares them on every target.
// Where the math divides in double (dither, natdither, grid), a lane computes the quotient with a
// reciprocal and brackets it (codec_math.hpp, dither_quantize_rcp): lanes whose bracket straddles
// a level boundary (about 2^-48 of them) are redone by the element function.

#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "host/codecs/kernels_simd.cpp"
#include <hwy/foreach_target.h>  // IWYU pragma: keep
#include <hwy/cache_control.h>
#include <hwy/highway.h>

#include "host/codecs/kernels.hpp"

#include <gcomp/detail/codec_math.hpp>
#include <gcomp/detail/grid.hpp>
#include <gcomp/detail/reduce.hpp>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <type_traits>

HWY_BEFORE_NAMESPACE();
namespace gcomp::detail::kernels {
namespace HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;

#if HWY_TARGET == HWY_SCALAR
// The portable fallback (a CPU without SSE4, or a compiler whose Highway has no EMU128 target): the
// reference kernels.
#define GCOMP_FORWARD_TO_REF(name, fn, ret, params, args) \
  ret fn params { return ref::name args; }
GCOMP_CPU_KERNELS(GCOMP_FORWARD_TO_REF)
#undef GCOMP_FORWARD_TO_REF
#else
// ------------------------------------------------------------------------------ helpers

/// Bits of a mask (lane j -> bit j), for any lane count up to 64.
template <class D, class M>
HWY_INLINE uint64_t mask_bits(D d, M m) {
  // Read back exactly the bytes StoreMaskBits writes: a wider load would miss store forwarding.
  constexpr size_t kBytes = (hn::MaxLanes(D()) + 7) / 8;
  uint8_t bytes[8];
  hn::StoreMaskBits(d, m, bytes);
  if constexpr (kBytes == 1) {
    return bytes[0];
  } else if constexpr (kBytes == 2) {
    uint16_t v;
    std::memcpy(&v, bytes, 2);
    return v;
  } else if constexpr (kBytes <= 4) {
    uint32_t v = 0;
    std::memcpy(&v, bytes, kBytes);
    return v;
  } else {
    uint64_t v = 0;
    std::memcpy(&v, bytes, kBytes);
    return v;
  }
}

/// The encode kernels read x once, front to back, from memory (64 MiB inputs) while doing several
/// cycles of work per element: without help the hardware prefetchers of one core keep too few
/// lines in flight, and the loop waits on memory between bursts of compute. Each loop therefore
/// prefetches the line kPrefetchFloats floats (16 KiB) ahead of the one it reads, once per line
/// (measured on the 2-core AVX-512 VM: the l2 block-scale pass 0.62 -> 0.46 ns per element).
constexpr int64_t kPrefetchFloats = 4096;

HWY_INLINE void prefetch_ahead(const float* p) { hwy::Prefetch(p + kPrefetchFloats); }

/// Lane j holds 1 << j (j < 32).
template <class DU>
HWY_INLINE hn::Vec<DU> lane_bits(DU du) {
  return hn::Shl(hn::Set(du, 1u), hn::Iota(du, 0));
}

// ------------------------------------------------------------------------------ Philox

// The counters live in the low halves of 64-bit lanes (a block per lane): one MulEven gives the
// whole 64-bit product of a round's multiply, its high word is one shift away, and its low word
// is already in place (the high halves carry junk that MulEven ignores and no XOR moves down).

/// kV independent vectors of blocks through the 10 rounds together: one round's multiplies take
/// several cycles, and independent vectors keep the multiplier busy meanwhile.
template <int kV, class D64>
HWY_INLINE void philox_rounds64(D64 d, hn::Vec<D64> (&c0)[kV], hn::Vec<D64> (&c1)[kV], hn::Vec<D64> (&c2)[kV],
                                hn::Vec<D64> (&c3)[kV], const uint32_t* k0, const uint32_t* k1) {
  const hn::Repartition<uint32_t, D64> d32;
  const auto m0 = hn::Set(d32, kPhiloxM0);
  const auto m1 = hn::Set(d32, kPhiloxM1);
#pragma GCC unroll 10
  for (int r = 0; r < 10; ++r) {
    const auto rk0 = hn::Set(d, k0[r]);
    const auto rk1 = hn::Set(d, k1[r]);
#pragma GCC unroll 8
    for (int v = 0; v < kV; ++v) {
      const auto p0 = hn::MulEven(hn::BitCast(d32, c0[v]), m0);  // hi0:lo0
      const auto p1 = hn::MulEven(hn::BitCast(d32, c2[v]), m1);  // hi1:lo1
      // hi moved down by a swap of the 32-bit halves (a shuffle: the shift port also runs the
      // multiplies); lo lands in the high half as junk
      c0[v] = hn::Xor(hn::Xor(hn::BitCast(d, hn::Shuffle2301(hn::BitCast(d32, p1))), c1[v]), rk0);
      c1[v] = p1;
      c2[v] = hn::Xor(hn::Xor(hn::BitCast(d, hn::Shuffle2301(hn::BitCast(d32, p0))), c3[v]), rk1);
      c3[v] = p0;
    }
  }
}

void PhiloxWords64(const RngKey& key, uint32_t stream, uint64_t first_q, int64_t num_q, uint32_t* words) {
  constexpr int kV = 4;
  const hn::ScalableTag<uint64_t> d;
  const hn::Repartition<uint32_t, decltype(d)> d32;
  const int64_t lanes = static_cast<int64_t>(hn::Lanes(d));
  const PhiloxRoundKeys rk = philox_round_keys(key.seed);
  const uint32_t s = stream + key.stream_offset;
  int64_t k = 0;
  while (k + kV * lanes <= num_q) {
    const uint64_t q = first_q + static_cast<uint64_t>(k);
    if ((q & 0xffffffffull) + static_cast<uint64_t>(kV * lanes) > 0x100000000ull) break;  // the low word wraps
    hn::Vec<decltype(d)> c0[kV], c1[kV], c2[kV], c3[kV];
    for (int v = 0; v < kV; ++v) {
      c0[v] = hn::Iota(d, (q & 0xffffffffull) + static_cast<uint64_t>(v * lanes));
      c1[v] = hn::Set(d, static_cast<uint32_t>(q >> 32) | (s << 16));
      c2[v] = hn::Set(d, key.rank);
      c3[v] = hn::Set(d, key.step);
    }
    philox_rounds64<kV>(d, c0, c1, c2, c3, rk.k0, rk.k1);
    for (int v = 0; v < kV; ++v) {
      // (word 0, word 1) and (word 2, word 3) of each block as 64-bit pairs, then interleaved.
      const auto w01 = hn::BitCast(d, hn::OddEven(hn::BitCast(d32, hn::ShiftLeft<32>(c1[v])), hn::BitCast(d32, c0[v])));
      const auto w23 = hn::BitCast(d, hn::OddEven(hn::BitCast(d32, hn::ShiftLeft<32>(c3[v])), hn::BitCast(d32, c2[v])));
      hn::StoreInterleaved2(w01, w23, d, reinterpret_cast<uint64_t*>(words + 4 * (k + v * lanes)));
    }
    k += kV * lanes;
  }
  if (k < num_q) ref::philox_words(key, stream, first_q + static_cast<uint64_t>(k), num_q - k, words + 4 * k);
}

// Without AVX-512 (no three-input logic op, fewer lanes) a block per 32-bit lane is faster: the
// high words of even and odd lanes come from two MulEven and are blended back.
template <class D>
HWY_INLINE void mul_hi_lo(D d, hn::Vec<D> a, uint32_t m, hn::Vec<D>& hi, hn::Vec<D>& lo) {
  const hn::RepartitionToWide<D> dw;
  const auto vm = hn::Set(d, m);
  const auto even = hn::MulEven(a, vm);                                                      // lanes 0, 2, ...
  const auto odd = hn::MulEven(hn::BitCast(d, hn::ShiftRight<32>(hn::BitCast(dw, a))), vm);  // lanes 1, 3, ...
  hi = hn::OddEven(hn::BitCast(d, odd), hn::BitCast(d, hn::ShiftRight<32>(even)));
  lo = hn::OddEven(hn::BitCast(d, hn::ShiftLeft<32>(odd)), hn::BitCast(d, even));
}

template <int kV, class D>
HWY_INLINE void philox_rounds32(D d, hn::Vec<D> (&c0)[kV], hn::Vec<D> (&c1)[kV], hn::Vec<D> (&c2)[kV],
                                hn::Vec<D> (&c3)[kV], const uint32_t* k0, const uint32_t* k1) {
  for (int r = 0; r < 10; ++r) {
    const auto rk0 = hn::Set(d, k0[r]);
    const auto rk1 = hn::Set(d, k1[r]);
#pragma GCC unroll 8
    for (int v = 0; v < kV; ++v) {
      hn::Vec<D> hi0, lo0, hi1, lo1;
      mul_hi_lo(d, c0[v], kPhiloxM0, hi0, lo0);
      mul_hi_lo(d, c2[v], kPhiloxM1, hi1, lo1);
      c0[v] = hn::Xor(hn::Xor(hi1, c1[v]), rk0);
      c1[v] = lo1;
      c2[v] = hn::Xor(hn::Xor(hi0, c3[v]), rk1);
      c3[v] = lo0;
    }
  }
}

void PhiloxWords32(const RngKey& key, uint32_t stream, uint64_t first_q, int64_t num_q, uint32_t* words) {
  constexpr int kV = 4;
  const hn::ScalableTag<uint32_t> d;
  const int64_t lanes = static_cast<int64_t>(hn::Lanes(d));
  const PhiloxRoundKeys rk = philox_round_keys(key.seed);
  const uint32_t s = stream + key.stream_offset;
  int64_t k = 0;
  while (k + kV * lanes <= num_q) {
    const uint64_t q = first_q + static_cast<uint64_t>(k);
    if ((q & 0xffffffffull) + static_cast<uint64_t>(kV * lanes) > 0x100000000ull) break;  // the low word wraps
    hn::Vec<decltype(d)> c0[kV], c1[kV], c2[kV], c3[kV];
    for (int v = 0; v < kV; ++v) {
      c0[v] = hn::Iota(d, static_cast<uint32_t>(q) + static_cast<uint32_t>(v * lanes));
      c1[v] = hn::Set(d, static_cast<uint32_t>(q >> 32) | (s << 16));
      c2[v] = hn::Set(d, key.rank);
      c3[v] = hn::Set(d, key.step);
    }
    philox_rounds32<kV>(d, c0, c1, c2, c3, rk.k0, rk.k1);
    for (int v = 0; v < kV; ++v) hn::StoreInterleaved4(c0[v], c1[v], c2[v], c3[v], d, words + 4 * (k + v * lanes));
    k += kV * lanes;
  }
  if (k < num_q) ref::philox_words(key, stream, first_q + static_cast<uint64_t>(k), num_q - k, words + 4 * k);
}

void PhiloxWords(const RngKey& key, uint32_t stream, uint64_t first_q, int64_t num_q, uint32_t* words) {
#if HWY_TARGET <= HWY_AVX3
  PhiloxWords64(key, stream, first_q, num_q, words);
#else
  PhiloxWords32(key, stream, first_q, num_q, words);
#endif
}

// ------------------------------------------------------------------------------ reductions

template <ReduceOp kOp, class DD>
HWY_INLINE hn::Vec<DD> reduce_term(DD dd, hn::Vec<DD> v, double mean) {
  if constexpr (kOp == ReduceOp::kAbsSum) return hn::Abs(v);
  if constexpr (kOp == ReduceOp::kSquareSum) return hn::Mul(v, v);
  if constexpr (kOp == ReduceOp::kSum) return v;
  if constexpr (kOp == ReduceOp::kCenteredSquareSum) {
    const auto c = hn::Sub(v, hn::Set(dd, mean));
    return hn::Mul(c, c);
  }
  if constexpr (kOp == ReduceOp::kAbsMax)
    return hn::IfThenElse(hn::IsFinite(v), hn::Abs(v), hn::Set(dd, bits_double(0x7ff0000000000000ull)));
}

template <ReduceOp kOp, class DD>
HWY_INLINE hn::Vec<DD> reduce_combine(hn::Vec<DD> a, hn::Vec<DD> b) {
  if constexpr (kOp == ReduceOp::kAbsMax)
    return hn::Max(a, b);  // no NaN reaches here: non-finite terms are +Inf
  else
    return hn::Add(a, b);
}

template <ReduceOp kOp, class Op>
double ReduceTileT(const Op& op, const float* x, int64_t len, double mean) {
  const hn::ScalableTag<double> dd;
  const hn::Rebind<float, decltype(dd)> df;
  const int64_t lanes = static_cast<int64_t>(hn::Lanes(dd));
  HWY_ALIGN double acc_lanes[kLanes];
  const int64_t rows = len / kLanes;
  const int64_t rem = len % kLanes;
  // Four vectors of lane accumulators at a time: each lane still adds its rows in order, and the
  // four independent chains hide the latency of the add (one chain ran at a quarter of the rate).
  int64_t l0 = 0;
  for (; l0 + 4 * lanes <= kLanes; l0 += 4 * lanes) {
    auto a0 = hn::Set(dd, op.identity()), a1 = a0, a2 = a0, a3 = a0;
    for (int64_t r = 0; r < rows; ++r) {
      const float* row = x + r * kLanes + l0;
      // This strip of lanes, 16 rows further on (the next tile's rows once past this one): a
      // strip of 4 vectors is 2 lines of a row for AVX-512, 1 for AVX2, half a line for SSE4.
      for (int64_t o = 0; o < 4 * lanes; o += 16) hwy::Prefetch(row + 16 * kLanes + o);
      a0 = reduce_combine<kOp, decltype(dd)>(a0, reduce_term<kOp>(dd, hn::PromoteTo(dd, hn::LoadU(df, row)), mean));
      a1 = reduce_combine<kOp, decltype(dd)>(a1,
                                             reduce_term<kOp>(dd, hn::PromoteTo(dd, hn::LoadU(df, row + lanes)), mean));
      a2 = reduce_combine<kOp, decltype(dd)>(
          a2, reduce_term<kOp>(dd, hn::PromoteTo(dd, hn::LoadU(df, row + 2 * lanes)), mean));
      a3 = reduce_combine<kOp, decltype(dd)>(
          a3, reduce_term<kOp>(dd, hn::PromoteTo(dd, hn::LoadU(df, row + 3 * lanes)), mean));
    }
    hn::Store(a0, dd, acc_lanes + l0);
    hn::Store(a1, dd, acc_lanes + l0 + lanes);
    hn::Store(a2, dd, acc_lanes + l0 + 2 * lanes);
    hn::Store(a3, dd, acc_lanes + l0 + 3 * lanes);
  }
  for (; l0 < kLanes; l0 += lanes) {
    auto acc = hn::Set(dd, op.identity());
    for (int64_t r = 0; r < rows; ++r)
      acc = reduce_combine<kOp, decltype(dd)>(
          acc, reduce_term<kOp>(dd, hn::PromoteTo(dd, hn::LoadU(df, x + r * kLanes + l0)), mean));
    hn::Store(acc, dd, acc_lanes + l0);
  }
  for (int64_t l = 0; l < rem; ++l) acc_lanes[l] = op.combine(acc_lanes[l], op.term(x[rows * kLanes + l]));
  int64_t s = kLanes / 2;
  for (; s >= lanes; s /= 2)
    for (int64_t i = 0; i < s; i += lanes)
      hn::Store(reduce_combine<kOp, decltype(dd)>(hn::Load(dd, acc_lanes + i), hn::Load(dd, acc_lanes + i + s)), dd,
                acc_lanes + i);
  for (; s >= 1; s /= 2)
    for (int64_t i = 0; i < s; ++i) acc_lanes[i] = op.combine(acc_lanes[i], acc_lanes[i + s]);
  return acc_lanes[0];
}

double ReduceTile(ReduceOp op, const float* x, int64_t len, double mean) {
  switch (op) {
    case ReduceOp::kAbsSum: return ReduceTileT<ReduceOp::kAbsSum>(AbsSumOp{}, x, len, mean);
    case ReduceOp::kSquareSum: return ReduceTileT<ReduceOp::kSquareSum>(SquareSumOp{}, x, len, mean);
    case ReduceOp::kSum: return ReduceTileT<ReduceOp::kSum>(SumOp{}, x, len, mean);
    case ReduceOp::kCenteredSquareSum:
      return ReduceTileT<ReduceOp::kCenteredSquareSum>(CenteredSquareSumOp{mean}, x, len, mean);
    case ReduceOp::kAbsMax: return ReduceTileT<ReduceOp::kAbsMax>(AbsMaxOp{}, x, len, mean);
  }
  return 0.0;
}

int64_t FindNonfinite(const float* x, int64_t n) {
  const hn::ScalableTag<uint32_t> du;
  const int64_t lanes = static_cast<int64_t>(hn::Lanes(du));
  const auto exp_mask = hn::Set(du, 0x7f800000u);
  const uint32_t* bits = reinterpret_cast<const uint32_t*>(x);
  int64_t i = 0;
  for (; i + 4 * lanes <= n; i += 4 * lanes) {
    for (int64_t o = 0; o < 4 * lanes; o += 16) prefetch_ahead(x + i + o);
    const auto a = hn::And(hn::LoadU(du, bits + i), exp_mask);
    const auto b = hn::And(hn::LoadU(du, bits + i + lanes), exp_mask);
    const auto c = hn::And(hn::LoadU(du, bits + i + 2 * lanes), exp_mask);
    const auto e = hn::And(hn::LoadU(du, bits + i + 3 * lanes), exp_mask);
    const auto bad =
        hn::Or(hn::Or(hn::Eq(a, exp_mask), hn::Eq(b, exp_mask)), hn::Or(hn::Eq(c, exp_mask), hn::Eq(e, exp_mask)));
    if (!hn::AllFalse(du, bad)) return ref::find_nonfinite(x + i, 4 * lanes) + i;
  }
  const int64_t tail = ref::find_nonfinite(x + i, n - i);
  return tail < 0 ? -1 : tail + i;
}

// ------------------------------------------------------------------------------ dither

/// dither_level of each lane of r (clamp to s, floor, compare with u), as doubles.
template <class DD>
HWY_INLINE hn::Vec<DD> dither_level_v(DD dd, hn::Vec<DD> r, hn::Vec<DD> s, hn::Vec<DD> u) {
  r = hn::Min(r, s);
  const auto fl = hn::Floor(r);
  return hn::Add(fl, hn::IfThenElseZero(hn::Lt(u, hn::Sub(r, fl)), hn::Set(dd, 1.0)));
}

/// natdither_level of each lane of r > 0 (s <= kNatDitherRcpMaxLevels), as doubles.
template <class DD>
HWY_INLINE hn::Vec<DD> natdither_level_v(DD dd, hn::Vec<DD> r, double s, hn::Vec<DD> u) {
  const hn::RebindToUnsigned<DD> du;
  const auto bits = hn::BitCast(du, r);
  // biased exponent E as a double (exact: 2^52 + E - 2^52), j = E - 1023 + s
  const auto e_biased = hn::Sub(hn::BitCast(dd, hn::Or(hn::ShiftRight<52>(bits), hn::Set(du, 0x4330000000000000ull))),
                                hn::Set(dd, 4503599627370496.0));
  const auto j = hn::Add(e_biased, hn::Set(dd, s - 1023.0));
  // tau between 2^e and 2^(e+1): r 2^-e - 1 (the mantissa of r in [1, 2), minus 1); below the
  // first level: r / 2^(1-s) = r 2^(s-1). Both exact.
  const auto mant =
      hn::BitCast(dd, hn::Or(hn::And(bits, hn::Set(du, 0x000fffffffffffffull)), hn::Set(du, 0x3ff0000000000000ull)));
  const auto small = hn::Lt(j, hn::Set(dd, 1.0));
  const auto tau =
      hn::IfThenElse(small, hn::Mul(r, hn::Set(dd, bits_double(static_cast<uint64_t>(1023 + s - 1) << 52))),
                     hn::Sub(mant, hn::Set(dd, 1.0)));
  const auto base = hn::IfThenZeroElse(small, j);
  const auto level = hn::Add(base, hn::IfThenElseZero(hn::Lt(u, tau), hn::Set(dd, 1.0)));
  return hn::IfThenElse(hn::Ge(r, hn::Set(dd, 1.0)), hn::Set(dd, s), level);
}

void Quantize(bool natural, const float* x, int64_t len, float nu, uint32_t levels, const uint32_t* words,
              uint32_t* coded) {
  if (nu == 0.0f) {
    std::fill(coded, coded + len, 0u);
    return;
  }
  if (natural && levels > kNatDitherRcpMaxLevels) {
    ref::quantize(natural, x, len, nu, levels, words, coded);
    return;
  }
  const hn::ScalableTag<double> dd;
  const hn::Rebind<float, decltype(dd)> df;
  const hn::Rebind<uint32_t, decltype(dd)> du;
  const hn::Rebind<int32_t, decltype(dd)> di;
  const int64_t lanes = static_cast<int64_t>(hn::Lanes(dd));
  const double inv = 1.0 / static_cast<double>(nu);
  const double sd = static_cast<double>(levels);
  const auto v_s = hn::Set(dd, sd);
  const auto v_inv = hn::Set(dd, inv);
  const auto v_slack = hn::Set(dd, kQuotientSlack);
  const auto v_u_scale = hn::Set(dd, 5.9604644775390625e-8);  // 2^-24
  const auto sign_bit = hn::Set(du, kNegativeBit);
  const auto zero_f = hn::Zero(df);
  int64_t i = 0;
  for (; i + lanes <= len; i += lanes) {
    const auto xf = hn::LoadU(df, x + i);
    const auto y = hn::PromoteTo(dd, xf);
    const auto u = hn::Mul(hn::PromoteTo(dd, hn::BitCast(di, hn::ShiftRight<8>(hn::LoadU(du, words + i)))), v_u_scale);
    const auto a = natural ? hn::Abs(y) : hn::Mul(v_s, hn::Abs(y));
    const auto q = hn::Mul(a, v_inv);
    const auto dq = hn::Mul(q, v_slack);
    hn::Vec<decltype(dd)> lo, hi;
    if (natural) {
      lo = natdither_level_v(dd, hn::Sub(q, dq), sd, u);
      hi = natdither_level_v(dd, hn::Add(q, dq), sd, u);
    } else {
      lo = dither_level_v(dd, hn::Sub(q, dq), v_s, u);
      hi = dither_level_v(dd, hn::Add(q, dq), v_s, u);
    }
    const auto level = hn::BitCast(du, hn::DemoteTo(di, lo));
    const auto negative = hn::And(hn::Ne(level, hn::Zero(du)), hn::RebindMask(du, hn::Lt(xf, zero_f)));
    hn::StoreU(hn::Or(level, hn::IfThenElseZero(negative, sign_bit)), du, coded + i);
    const auto straddle = hn::Ne(lo, hi);
    if (HWY_UNLIKELY(!hn::AllFalse(dd, straddle))) {
      const uint64_t m = mask_bits(dd, straddle);
      for (int64_t j = 0; j < lanes; ++j)
        if ((m >> j) & 1u) ref::quantize(natural, x + i + j, 1, nu, levels, words + i + j, coded + i + j);
    }
  }
  ref::quantize(natural, x + i, len - i, nu, levels, words + i, coded + i);
}

/// dither_level of each lane of r >= 0 in single precision (exact: floor and r - floor(r) of a
/// float are floats).
template <class DF>
HWY_INLINE hn::Vec<DF> dither_level_f(DF df, hn::Vec<DF> r, hn::Vec<DF> s, hn::Vec<DF> u) {
  r = hn::Min(r, s);
  const auto fl = hn::Floor(r);
  return hn::Add(fl, hn::IfThenElseZero(hn::Lt(u, hn::Sub(r, fl)), hn::Set(df, 1.0f)));
}

/// natdither_level of each lane of a normal float r > 0 (s <= kNatDitherRcpMaxLevels), exactly.
template <class DF>
HWY_INLINE hn::Vec<DF> natdither_level_f(DF df, hn::Vec<DF> r, float s, hn::Vec<DF> u) {
  const hn::RebindToUnsigned<DF> du;
  const hn::RebindToSigned<DF> di;
  const auto bits = hn::BitCast(du, r);
  const auto j =
      hn::ConvertTo(df, hn::Add(hn::BitCast(di, hn::ShiftRight<23>(bits)), hn::Set(di, static_cast<int32_t>(s) - 127)));
  const auto mant = hn::BitCast(df, hn::Or(hn::And(bits, hn::Set(du, 0x7fffffu)), hn::Set(du, 0x3f800000u)));
  const auto small = hn::Lt(j, hn::Set(df, 1.0f));
  const auto tau = hn::IfThenElse(small, hn::Mul(r, hn::Set(df, bits_float(static_cast<uint32_t>(127 + s - 1) << 23))),
                                  hn::Sub(mant, hn::Set(df, 1.0f)));
  const auto level = hn::Add(hn::IfThenZeroElse(small, j), hn::IfThenElseZero(hn::Lt(u, tau), hn::Set(df, 1.0f)));
  return hn::IfThenElse(hn::Ge(r, hn::Set(df, 1.0f)), hn::Set(df, s), level);
}

/// Single-precision dither levels of the lanes of y (the bracket of dither_quantize_f): lo's level
/// is r's wherever `redo` is false.
template <class DF>
HWY_INLINE void dither_levels_f(DF df, hn::Vec<DF> ay, hn::Vec<DF> q, hn::Vec<DF> u, hn::Vec<DF> s, hn::Vec<DF>& lo,
                                hn::Mask<DF>& redo) {
  const auto dq = hn::Mul(q, hn::Set(df, kFloatQuotientSlack));
  lo = dither_level_f(df, hn::Sub(q, dq), s, u);
  const auto hi = dither_level_f(df, hn::Add(q, dq), s, u);
  const auto in_range = hn::And(hn::Ge(q, hn::Set(df, kFloatQuotientMin)), hn::Le(q, hn::Set(df, kFloatQuotientMax)));
  redo = hn::Or(hn::Ne(lo, hi), hn::Not(hn::Or(in_range, hn::Eq(ay, hn::Zero(df)))));
}

// dither_nonzeros: dither_quantize_f lane by lane, after a test that proves most lanes 0 (at
// levels = 1 with an l2 scale almost all are). Let r = RN_d(s|y|/nu) be the quotient of the element
// math, c = quantize_recip_f(nu) = RN_f(s/nu) >= (s/nu)(1 - 2^-24) (normal), c' = RN_f(c (1 + 2^-16))
// 2^24 (the scaling exact, or Inf) and p = RN_f(|y| c'). A lane whose u' = u 2^24 (the integer
// words >> 8) satisfies u' > p has level 0:
//  - p normal: p >= |y| c' (1 - 2^-24) >= 2^24 (s|y|/nu) (1 - 2^-24)^3 (1 + 2^-16) > 2^24 r, so
//    r < u < 1: floor(r) = 0 and u < r - 0 is false;
//  - p below 2^-126 (or 0, underflow): s|y|/nu < 2^-125 and r < 2^-124 < 2^-24 <= u (u' > p >= 0
//    means u' >= 1): level 0 as well.
// u = 0 (u' = 0) never passes (u' > p is false for p >= 0), nor does a NaN or an infinite p. A
// vector of passing lanes costs a product and a comparison; the others get the whole bracket, the
// element math where it straddles, and their nonzeros' positions and coded levels compressed to
// the outputs.
int64_t DitherNonzeros(const float* x, int64_t len, float nu, uint32_t levels, const uint32_t* words, uint32_t first,
                       uint32_t* idx, uint32_t* coded) {
  if (nu == 0.0f) return 0;
  const float recip = quantize_recip_f(false, nu, levels);
  if (recip == 0.0f) return ref::dither_nonzeros(x, len, nu, levels, words, first, idx, coded);
  const hn::ScalableTag<float> df;
  const hn::RebindToUnsigned<decltype(df)> du;
  const hn::RebindToSigned<decltype(df)> di;
  const int64_t lanes = static_cast<int64_t>(hn::Lanes(df));
  const auto v_s = hn::Set(df, static_cast<float>(levels));  // exact: recip != 0 means s <= 2^24
  const auto v_rc = hn::Set(df, recip);
  const auto v_pass = hn::Set(df, (recip * 1.0000152587890625f) * 16777216.0f);  // c (1 + 2^-16), then 2^24
  const auto v_u_scale = hn::Set(df, 5.9604644775390625e-8f);                    // 2^-24
  const auto zero = hn::Zero(df);
  const auto sign_bit = hn::Set(du, kNegativeBit);
  HWY_ALIGN uint32_t patch[hn::MaxLanes(decltype(du)())];
  int64_t count = 0, i = 0;
  for (; i + lanes <= len; i += lanes) {
    if (i % 16 == 0) prefetch_ahead(x + i);
    const auto y = hn::LoadU(df, x + i);
    const auto ay = hn::Abs(y);
    const auto u24 = hn::ConvertTo(df, hn::BitCast(di, hn::ShiftRight<8>(hn::LoadU(du, words + i))));
    if (HWY_LIKELY(hn::AllTrue(df, hn::Gt(u24, hn::Mul(ay, v_pass))))) continue;
    const auto q = hn::Mul(ay, v_rc);
    hn::Vec<decltype(df)> lo;
    hn::Mask<decltype(df)> redo;
    dither_levels_f(df, ay, q, hn::Mul(u24, v_u_scale), v_s, lo, redo);
    // lo <= s <= 2^24 is an integer: exact; a lane to redo may hold anything and is replaced
    auto c = hn::BitCast(du, hn::ConvertTo(di, lo));
    c = hn::Or(c, hn::IfThenElseZero(hn::RebindMask(du, hn::And(hn::Ne(lo, zero), hn::Lt(y, zero))), sign_bit));
    if (HWY_UNLIKELY(!hn::AllFalse(df, redo))) {
      hn::Store(c, du, patch);
      const uint64_t m = mask_bits(df, redo);
      for (int64_t j = 0; j < lanes; ++j)
        if ((m >> j) & 1u) ref::quantize(false, x + i + j, 1, nu, levels, words + i + j, patch + j);
      c = hn::Load(du, patch);
    }
    const auto nonzero = hn::Ne(hn::AndNot(sign_bit, c), hn::Zero(du));
    const auto pos = hn::Iota(du, first + static_cast<uint32_t>(i));
    const size_t k = hn::CompressBlendedStore(pos, nonzero, du, idx + count);
    hn::CompressBlendedStore(c, nonzero, du, coded + count);
    count += static_cast<int64_t>(k);
  }
  return count + ref::dither_nonzeros(x + i, len - i, nu, levels, words + i, first + static_cast<uint32_t>(i),
                                      idx + count, coded + count);
}

// Single-precision route of quantize_planes: dither_quantize_f / natdither_quantize_f of
// codec_math.hpp lane by lane (their comment proves the bracket): q = |y| * recip with recip =
// quantize_recip_f(nu), the level at both ends of [q - q 2^-20, q + q 2^-20] evaluated exactly on
// floats. Lanes where the ends disagree (about 2^-19 q of them), where q is outside [2^-100, 2^100]
// (underflow, overflow, recip = 0: no normal single-precision reciprocal) are redone by the
// element math. q = 0 with y = 0 or nu = 0 is level 0, as in the element math.
template <bool kNatural, int kBits, bool kUniform>
void QuantizePlanesT(const float* x, const float* nu, const float* recip, const uint32_t* words, int64_t num_groups,
                     uint32_t levels, uint32_t* out) {
  const hn::ScalableTag<float> df;
  const hn::RebindToUnsigned<decltype(df)> du;
  const hn::RebindToSigned<decltype(df)> di;
  constexpr int kLanesF = static_cast<int>(hn::MaxLanes(decltype(df)()));
  const float sf = static_cast<float>(levels);
  const auto v_s = hn::Set(df, sf);
  const auto v_slack = hn::Set(df, kFloatQuotientSlack);       // 2^-20
  const auto v_u_scale = hn::Set(df, 5.9604644775390625e-8f);  // 2^-24
  const auto v_min = hn::Set(df, kFloatQuotientMin);           // 2^-100
  const auto v_max = hn::Set(df, kFloatQuotientMax);           // 2^100
  const auto v_2p23 = hn::Set(df, 8388608.0f);                 // level + 2^23: the level in the low bits
  const auto zero = hn::Zero(df);
  // kUniform: one scale for every element (nu[0], recip[0]), held in registers.
  const auto nu_all = hn::Set(df, nu[0]);
  const auto recip_all = hn::Set(df, recip[0]);
  HWY_ALIGN uint32_t patch[kLanesF];
  for (int64_t g = 0; g < num_groups; ++g) {
    prefetch_ahead(x + g * kGroupElems);
    prefetch_ahead(x + g * kGroupElems + 16);
    [[maybe_unused]] uint32_t w[1 + kBits] = {};
    for (int o = 0; o < kGroupElems; o += kLanesF) {
      const int64_t i = g * kGroupElems + o;
      const auto y = hn::LoadU(df, x + i);
      const auto ay = hn::Abs(y);
      const auto rc = kUniform ? recip_all : hn::LoadU(df, recip + i);
      const auto q = hn::Mul(ay, rc);
      const auto u =
          hn::Mul(hn::ConvertTo(df, hn::BitCast(di, hn::ShiftRight<8>(hn::LoadU(du, words + i)))), v_u_scale);
      const auto dq = hn::Mul(q, v_slack);
      hn::Vec<decltype(df)> lo, hi;
      if constexpr (kNatural) {
        lo = natdither_level_f(df, hn::Sub(q, dq), sf, u);
        hi = natdither_level_f(df, hn::Add(q, dq), sf, u);
      } else {
        lo = dither_level_f(df, hn::Sub(q, dq), v_s, u);
        hi = dither_level_f(df, hn::Add(q, dq), v_s, u);
      }
      auto level_bits = hn::BitCast(du, hn::Add(lo, v_2p23));
      auto negative = hn::RebindMask(du, hn::And(hn::Ne(lo, zero), hn::Lt(y, zero)));
      const auto in_range = hn::And(hn::Ge(q, v_min), hn::Le(q, v_max));
      // q = 0 is exact only for y = 0 or nu = 0: a scale above 2^126 has no normal reciprocal
      // (recip = 0) and its lanes are redone (issue 18 #11: max |x| near FLT_MAX quantized to 0).
      const auto exact_zero =
          hn::And(hn::Eq(q, zero), hn::Or(hn::Eq(ay, zero), hn::Eq(kUniform ? nu_all : hn::LoadU(df, nu + i), zero)));
      const auto redo = hn::Or(hn::Ne(lo, hi), hn::Not(hn::Or(in_range, exact_zero)));
      if (HWY_UNLIKELY(!hn::AllFalse(df, redo))) {
        hn::Store(hn::Or(level_bits, hn::IfThenElseZero(negative, hn::Set(du, kNegativeBit))), du, patch);
        const uint64_t m = mask_bits(df, redo);
        for (int j = 0; j < kLanesF; ++j)
          if ((m >> j) & 1u) {
            ref::quantize(kNatural, x + i + j, 1, nu[kUniform ? 0 : i + j], levels, words + i + j, patch + j);
            patch[j] = (patch[j] & kNegativeBit) | (0x4b000000u + (patch[j] & ~kNegativeBit));  // bits of level + 2^23
          }
        const auto patched = hn::Load(du, patch);
        negative = hn::TestBit(patched, hn::Set(du, kNegativeBit));
        level_bits = hn::And(patched, hn::Set(du, ~kNegativeBit));
      }
      if constexpr (kLanesF % 8 == 0) {
        // The planes' bits of these lanes are whole bytes of the group's words (little-endian,
        // lane j at bit j): the masks are stored there directly. Shifting and OR-ing them into
        // words instead, GCC packed the planes into a vector (shift, narrow) on the critical path.
        uint8_t* bytes = reinterpret_cast<uint8_t*>(out + g * (1 + kBits)) + o / 8;
        hn::StoreMaskBits(du, negative, bytes);
        for (int k = 0; k < kBits; ++k)
          hn::StoreMaskBits(du, hn::TestBit(level_bits, hn::Set(du, 1u << k)), bytes + 4 * (1 + k));
      } else {
        w[0] |= static_cast<uint32_t>(mask_bits(du, negative) << o);
#pragma GCC unroll 16
        for (int k = 0; k < kBits; ++k)
          w[1 + k] |= static_cast<uint32_t>(mask_bits(du, hn::TestBit(level_bits, hn::Set(du, 1u << k))) << o);
      }
    }
    if constexpr (kLanesF % 8 != 0) std::memcpy(out + g * (1 + kBits), w, sizeof(w));
  }
}

template <bool kNatural, bool kUniform>
void QuantizePlanesN(const float* x, const float* nu, const float* recip, const uint32_t* words, int64_t num_groups,
                     uint32_t levels, int nbits, uint32_t* out) {
  switch (nbits) {
    case 1: return QuantizePlanesT<kNatural, 1, kUniform>(x, nu, recip, words, num_groups, levels, out);
    case 2: return QuantizePlanesT<kNatural, 2, kUniform>(x, nu, recip, words, num_groups, levels, out);
    case 3: return QuantizePlanesT<kNatural, 3, kUniform>(x, nu, recip, words, num_groups, levels, out);
    case 4: return QuantizePlanesT<kNatural, 4, kUniform>(x, nu, recip, words, num_groups, levels, out);
    case 5: return QuantizePlanesT<kNatural, 5, kUniform>(x, nu, recip, words, num_groups, levels, out);
    case 6: return QuantizePlanesT<kNatural, 6, kUniform>(x, nu, recip, words, num_groups, levels, out);
    case 7: return QuantizePlanesT<kNatural, 7, kUniform>(x, nu, recip, words, num_groups, levels, out);
    case 8: return QuantizePlanesT<kNatural, 8, kUniform>(x, nu, recip, words, num_groups, levels, out);
    case 9: return QuantizePlanesT<kNatural, 9, kUniform>(x, nu, recip, words, num_groups, levels, out);
    case 10: return QuantizePlanesT<kNatural, 10, kUniform>(x, nu, recip, words, num_groups, levels, out);
    case 11: return QuantizePlanesT<kNatural, 11, kUniform>(x, nu, recip, words, num_groups, levels, out);
    default: ref::quantize_planes(kNatural, x, nu, recip, words, num_groups, levels, nbits, out, kUniform);
  }
}

void QuantizePlanes(bool natural, const float* x, const float* nu, const float* recip, const uint32_t* words,
                    int64_t num_groups, uint32_t levels, int nbits, uint32_t* out, bool uniform) {
  if (hn::MaxLanes(hn::ScalableTag<float>()) > kGroupElems) {
    ref::quantize_planes(natural, x, nu, recip, words, num_groups, levels, nbits, out, uniform);
    return;
  }
  if (natural && uniform)
    QuantizePlanesN<true, true>(x, nu, recip, words, num_groups, levels, nbits, out);
  else if (natural)
    QuantizePlanesN<true, false>(x, nu, recip, words, num_groups, levels, nbits, out);
  else if (uniform)
    QuantizePlanesN<false, true>(x, nu, recip, words, num_groups, levels, nbits, out);
  else
    QuantizePlanesN<false, false>(x, nu, recip, words, num_groups, levels, nbits, out);
}

void PackPlanes(const uint32_t* coded, int64_t num_groups, int nbits, uint32_t* out) {
  const hn::ScalableTag<uint32_t> du;
  const int lanes = static_cast<int>(hn::Lanes(du));
  if (lanes > kGroupElems) {
    ref::pack_planes(coded, num_groups, nbits, out);
    return;
  }
  const int words = group_words(nbits);
  const auto sign_bit = hn::Set(du, kNegativeBit);
  for (int64_t g = 0; g < num_groups; ++g) {
    uint32_t w[1 + 32] = {};
    for (int o = 0; o < kGroupElems; o += lanes) {
      const auto c = hn::LoadU(du, coded + g * kGroupElems + o);
      w[0] |= static_cast<uint32_t>(mask_bits(du, hn::TestBit(c, sign_bit)) << o);
      for (int k = 0; k < nbits; ++k)
        w[1 + k] |= static_cast<uint32_t>(mask_bits(du, hn::TestBit(c, hn::Set(du, 1u << k))) << o);
    }
    std::memcpy(out + g * words, w, sizeof(uint32_t) * static_cast<size_t>(words));
  }
}

void SignWords(const float* x, int64_t num_groups, uint32_t* out) {
  const hn::ScalableTag<float> df;
  const int lanes = static_cast<int>(hn::Lanes(df));
  if (lanes > kGroupElems) {
    ref::sign_words(x, num_groups, out);
    return;
  }
  const auto zero = hn::Zero(df);
  for (int64_t g = 0; g < num_groups; ++g) {
    prefetch_ahead(x + g * kGroupElems);
    prefetch_ahead(x + g * kGroupElems + 16);
    uint32_t w = 0;
    for (int o = 0; o < kGroupElems; o += lanes)
      w |= static_cast<uint32_t>(mask_bits(df, hn::Lt(hn::LoadU(df, x + g * kGroupElems + o), zero)) << o);
    out[g] = w;
  }
}

/// The plane bits of lanes [o, o + lanes) of a group word (o a multiple of lanes) as a mask: with
/// 8 lanes or more these are whole bytes of the word, loaded straight into a mask register
/// (AVX-512: one kmov) instead of a broadcast, shift and lane test.
template <class DU>
HWY_INLINE hn::Mask<DU> plane_mask(DU du, const uint32_t* word, int o) {
  if constexpr (hn::MaxLanes(DU()) >= 8) {
    return hn::LoadMaskBits(du, reinterpret_cast<const uint8_t*>(word) + o / 8);
  } else {
    return hn::TestBit(hn::Set(du, *word >> o), lane_bits(du));
  }
}

#if HWY_TARGET <= HWY_AVX3
/// AVX-512: a | b, resp. a ^ b, in the lanes of m, a elsewhere, in one masked instruction (the
/// compiler does not fold IfThenElse(m, Or(a, b), a) into one).
constexpr bool kMaskedOps = true;
HWY_INLINE hn::Vec512<uint32_t> masked_or(hn::Mask512<uint32_t> m, hn::Vec512<uint32_t> a, hn::Vec512<uint32_t> b) {
  return hn::Vec512<uint32_t>{_mm512_mask_or_epi32(a.raw, m.raw, a.raw, b.raw)};
}
HWY_INLINE hn::Vec512<uint32_t> masked_xor(hn::Mask512<uint32_t> m, hn::Vec512<uint32_t> a, hn::Vec512<uint32_t> b) {
  return hn::Vec512<uint32_t>{_mm512_mask_xor_epi32(a.raw, m.raw, a.raw, b.raw)};
}
#else
constexpr bool kMaskedOps = false;  // vector masks: an AND and an OR / XOR
#endif

/// DecodePlanes for a fixed plane count and mode, from element i of the range on (its lane offset
/// in the group a multiple of the lane count). The loop walks whole groups with the lane offset
/// known at compile time (no division per vector); the groups' words are read as mask bytes.
template <int kBits, bool kAccumulate, class DF>
HWY_INLINE int64_t decode_planes_t(DF df, const uint32_t* groups, int64_t first, int64_t i, int64_t len,
                                   const float* table, float weight, float* out) {
  const hn::RebindToUnsigned<DF> du;
  const hn::RebindToSigned<DF> di;
  const int64_t lanes = static_cast<int64_t>(hn::Lanes(df));
  constexpr int kWords = 1 + kBits;
  constexpr bool kLookup = (1 << kBits) <= hn::MaxLanes(DF());
  constexpr bool kMaskRegisters = kMaskedOps && hn::MaxLanes(DF()) == 16;  // masks in k registers
  // The table in one register (a call may cover a single block: only its entries are copied)
  auto table_vec = hn::Zero(df);
  if constexpr (kLookup && kBits > 0) {
    HWY_ALIGN float padded[hn::MaxLanes(DF())];
    std::memcpy(padded, table, sizeof(float) << kBits);
    std::fill(padded + (1 << kBits), padded + hn::MaxLanes(DF()), 0.0f);
    table_vec = hn::Load(df, padded);
  }
  const auto v_weight = hn::Set(df, weight);
  const auto sign_bit = hn::Set(du, 0x80000000u);
  const auto v_zero_level = hn::Set(df, table[0]);
  // One vector: lanes [o, o + lanes) of the group at w, to out[0, lanes).
  const auto one = [&](const uint32_t* w, int o, float* dst) HWY_ATTR {
    hn::Vec<DF> v;
    if constexpr (kBits == 0) {
      v = v_zero_level;
    } else {
      auto level = hn::IfThenElseZero(plane_mask(du, w + 1, o), hn::Set(du, 1u));
#pragma GCC unroll 8
      for (int k = 1; k < kBits; ++k) {
        const auto m = plane_mask(du, w + 1 + k, o);
        const auto bit = hn::Set(du, 1u << k);
        // AVX-512: one masked OR (vpord{k}) per plane; vector masks: an AND and an OR
        if constexpr (kMaskRegisters)
          level = masked_or(m, level, bit);
        else
          level = hn::Or(level, hn::IfThenElseZero(m, bit));
      }
      if constexpr (kLookup)
        v = hn::TableLookupLanes(table_vec, hn::IndicesFromVec(df, hn::BitCast(di, level)));
      else
        v = hn::GatherIndex(df, table, hn::BitCast(di, level));
    }
    // negate: flip the sign bit where the sign plane is set (AVX-512: one masked XOR)
    const auto negative = plane_mask(du, w, o);
    if constexpr (kMaskRegisters)
      v = hn::BitCast(df, masked_xor(negative, hn::BitCast(du, v), sign_bit));
    else
      v = hn::BitCast(df, hn::Xor(hn::BitCast(du, v), hn::IfThenElseZero(negative, sign_bit)));
    if constexpr (kAccumulate) v = hn::Add(hn::LoadU(df, dst), hn::Mul(v_weight, v));
    hn::StoreU(v, df, dst);
  };
  const uint32_t* w = groups + ((first + i) / kGroupElems) * kWords;
  int o = static_cast<int>((first + i) % kGroupElems);
  for (; o != 0 && i + lanes <= len; i += lanes) {  // the rest of a group entered in its middle
    one(w, o, out + i);
    o += static_cast<int>(lanes);
    if (o == kGroupElems) {
      o = 0;
      w += kWords;
    }
  }
  if (o != 0) return i;
  for (; i + kGroupElems <= len; i += kGroupElems, w += kWords) {
#pragma GCC unroll 8
    for (int oo = 0; oo < kGroupElems; oo += static_cast<int>(hn::MaxLanes(DF()))) one(w, oo, out + i + oo);
  }
  for (o = 0; i + lanes <= len; i += lanes, o += static_cast<int>(lanes)) one(w, o, out + i);
  return i;
}

template <int kBits, class DF>
HWY_INLINE int64_t decode_planes_n(DF df, const uint32_t* groups, int64_t first, int64_t i, int64_t len,
                                   const float* table, float weight, bool accumulate, float* out) {
  return accumulate ? decode_planes_t<kBits, true>(df, groups, first, i, len, table, weight, out)
                    : decode_planes_t<kBits, false>(df, groups, first, i, len, table, weight, out);
}

void DecodePlanes(const uint32_t* groups, int nbits, int64_t first, int64_t len, const float* table, float weight,
                  bool accumulate, float* out) {
  const hn::ScalableTag<float> df;
  const int64_t lanes = static_cast<int64_t>(hn::Lanes(df));
  if (lanes > kGroupElems || nbits > 8) {
    ref::decode_planes(groups, nbits, first, len, table, weight, accumulate, out);
    return;
  }
  // head: up to the first element whose lane offset in its group is a multiple of `lanes`
  int64_t i = std::min<int64_t>(len, (lanes - first % lanes) % lanes);
  ref::decode_planes(groups, nbits, first, i, table, weight, accumulate, out);
  switch (nbits) {
    case 0: i = decode_planes_n<0>(df, groups, first, i, len, table, weight, accumulate, out); break;
    case 1: i = decode_planes_n<1>(df, groups, first, i, len, table, weight, accumulate, out); break;
    case 2: i = decode_planes_n<2>(df, groups, first, i, len, table, weight, accumulate, out); break;
    case 3: i = decode_planes_n<3>(df, groups, first, i, len, table, weight, accumulate, out); break;
    case 4: i = decode_planes_n<4>(df, groups, first, i, len, table, weight, accumulate, out); break;
    case 5: i = decode_planes_n<5>(df, groups, first, i, len, table, weight, accumulate, out); break;
    case 6: i = decode_planes_n<6>(df, groups, first, i, len, table, weight, accumulate, out); break;
    case 7: i = decode_planes_n<7>(df, groups, first, i, len, table, weight, accumulate, out); break;
    default: i = decode_planes_n<8>(df, groups, first, i, len, table, weight, accumulate, out); break;
  }
  ref::decode_planes(groups, nbits, first + i, len - i, table, weight, accumulate, out + i);
}

/// PlaneGroupsFirstBad for 1 to 3 planes: a vector of groups at a time, their words split into
/// a sign vector and plane vectors by LoadInterleaved, then plane_group_bad_lanes lane-wise.
template <int kBits>
int64_t plane_groups_first_bad_t(const uint32_t* words, uint32_t s, bool level_check, int64_t g0, int64_t g1) {
  const hn::ScalableTag<uint32_t> du;
  const int64_t lanes = static_cast<int64_t>(hn::Lanes(du));
  constexpr int kWords = 1 + kBits;
  const auto zero = hn::Zero(du);
  int64_t g = g0;
  for (; g + lanes <= g1; g += lanes) {
    const uint32_t* p = words + g * kWords;
    for (int64_t o = 0; o < kWords * lanes; o += 16) hwy::Prefetch(p + o + kPrefetchFloats);
    hn::Vec<decltype(du)> sign, pl[3];
    if constexpr (kBits == 1) hn::LoadInterleaved2(du, p, sign, pl[0]);
    if constexpr (kBits == 2) hn::LoadInterleaved3(du, p, sign, pl[0], pl[1]);
    if constexpr (kBits == 3) hn::LoadInterleaved4(du, p, sign, pl[0], pl[1], pl[2]);
    auto nonzero = zero, above = zero, equal = hn::Not(zero);
    for (int k = kBits - 1; k >= 0; --k) {
      nonzero = hn::Or(nonzero, pl[k]);
      if (level_check) {
        if ((s >> k) & 1u) {
          equal = hn::And(equal, pl[k]);
        } else {
          above = hn::Or(above, hn::And(equal, pl[k]));
          equal = hn::AndNot(pl[k], equal);
        }
      }
    }
    const auto bad = hn::Or(hn::AndNot(nonzero, sign), above);
    const auto hit = hn::Ne(bad, zero);
    if (HWY_UNLIKELY(!hn::AllFalse(du, hit))) return g + static_cast<int64_t>(hn::FindKnownFirstTrue(du, hit));
  }
  return ref::plane_groups_first_bad(reinterpret_cast<const uint8_t*>(words), kBits, s, level_check, g, g1);
}

int64_t PlaneGroupsFirstBad(const uint8_t* groups, int nbits, uint32_t s, bool level_check, int64_t g0, int64_t g1) {
  if (reinterpret_cast<uintptr_t>(groups) % sizeof(uint32_t) == 0) {
    const uint32_t* words = reinterpret_cast<const uint32_t*>(groups);
    switch (nbits) {
      case 1: return plane_groups_first_bad_t<1>(words, s, level_check, g0, g1);
      case 2: return plane_groups_first_bad_t<2>(words, s, level_check, g0, g1);
      case 3: return plane_groups_first_bad_t<3>(words, s, level_check, g0, g1);
      default: break;
    }
  }
  return ref::plane_groups_first_bad(groups, nbits, s, level_check, g0, g1);
}

// ------------------------------------------------------------------------------ natural

void NaturalEncode(const float* x, int64_t len, const uint32_t* words, uint8_t* codes, uint32_t* signs) {
  const hn::ScalableTag<uint32_t> du;
  const hn::Rebind<uint8_t, decltype(du)> d8;
  const hn::RebindToSigned<decltype(du)> di;
  const int lanes = static_cast<int>(hn::Lanes(du));
  if (lanes > kGroupElems) {
    ref::natural_encode(x, len, words, codes, signs);
    return;
  }
  const uint32_t* xb = reinterpret_cast<const uint32_t*>(x);
  const int64_t full = len / kGroupElems;
  for (int64_t g = 0; g < full; ++g) {
    prefetch_ahead(x + g * kGroupElems);
    prefetch_ahead(x + g * kGroupElems + 16);
    uint32_t sw = 0;
    for (int o = 0; o < kGroupElems; o += lanes) {
      const int64_t i = g * kGroupElems + o;
      const auto bits = hn::LoadU(du, xb + i);
      const auto mag = hn::And(bits, hn::Set(du, 0x7fffffffu));
      auto e = hn::ShiftRight<23>(mag);
      const auto mant = hn::And(mag, hn::Set(du, 0x7fffffu));
      const auto thr = hn::ShiftRight<9>(hn::LoadU(du, words + i));
      e = hn::Add(e, hn::IfThenElseZero(hn::Gt(mant, thr), hn::Set(du, 1u)));
      e = hn::Min(e, hn::Set(du, 254u));
      hn::StoreU(hn::DemoteTo(d8, hn::BitCast(di, e)), d8, codes + i);
      // negative: code != 0 and x < 0 (the sign bit set on a nonzero magnitude)
      const auto neg = hn::And(hn::Ne(e, hn::Zero(du)), hn::Ne(mag, bits));
      sw |= static_cast<uint32_t>(mask_bits(du, neg) << o);
    }
    signs[g] = sw;
  }
  const int64_t done = full * kGroupElems;
  if (done < len) ref::natural_encode(x + done, len - done, words + done, codes + done, signs + full);
}

void NaturalDecode(const uint8_t* codes, const uint32_t* signs, int64_t first, int64_t len, float weight,
                   bool accumulate, float* out) {
  const hn::ScalableTag<float> df;
  const hn::RebindToUnsigned<decltype(df)> du;
  const hn::Rebind<uint8_t, decltype(du)> d8;
  const int64_t lanes = static_cast<int64_t>(hn::Lanes(df));
  if (lanes > kGroupElems) {
    ref::natural_decode(codes, signs, first, len, weight, accumulate, out);
    return;
  }
  int64_t i = std::min<int64_t>(len, (lanes - first % lanes) % lanes);
  ref::natural_decode(codes, signs, first, i, weight, accumulate, out);
  const auto bitsel = lane_bits(du);
  const auto v_weight = hn::Set(df, weight);
  for (; i + lanes <= len; i += lanes) {
    const int64_t e = first + i;
    const auto code = hn::PromoteTo(du, hn::LoadU(d8, codes + e));
    const auto neg = hn::TestBit(hn::Set(du, signs[e / kGroupElems] >> (e % kGroupElems)), bitsel);
    // code 0 is +0 (validation rejects a sign bit on a zero code)
    auto v = hn::BitCast(df, hn::Or(hn::ShiftLeft<23>(code), hn::IfThenElseZero(neg, hn::Set(du, 0x80000000u))));
    if (accumulate) v = hn::Add(hn::LoadU(df, out + i), hn::Mul(v_weight, v));
    hn::StoreU(v, df, out + i);
  }
  ref::natural_decode(codes, signs, first + i, len - i, weight, accumulate, out + i);
}

bool NaturalInvalid(const uint8_t* codes, const uint32_t* signs, int64_t num_groups) {
  const hn::ScalableTag<uint8_t> d8;
  constexpr int64_t kLanes8 = static_cast<int64_t>(hn::MaxLanes(decltype(d8)()));
  if (kLanes8 > 64) return ref::natural_invalid(codes, signs, num_groups);
  const auto zero = hn::Zero(d8);
  const auto max_code = hn::Set(d8, uint8_t{255});
  int64_t g = 0;
  for (; g + 2 <= num_groups; g += 2) {  // 64 codes: two groups
    uint64_t zeros = 0;
    auto bad = hn::MaskFromVec(zero);
    for (int64_t o = 0; o < 64; o += kLanes8) {
      const auto v = hn::LoadU(d8, codes + g * kGroupElems + o);
      zeros |= mask_bits(d8, hn::Eq(v, zero)) << o;
      bad = hn::Or(bad, hn::Eq(v, max_code));
    }
    const uint64_t sign_bits = signs[g] | (static_cast<uint64_t>(signs[g + 1]) << 32);
    if (!hn::AllFalse(d8, bad) || (sign_bits & zeros) != 0u) return true;
  }
  return ref::natural_invalid(codes + g * kGroupElems, signs + g, num_groups - g);
}

// ------------------------------------------------------------------------------ grid

void GridLevels(const float* x, int64_t len, double step, double inv_step, uint32_t bits, int32_t* levels) {
  if (inv_step == 0.0) {
    ref::grid_levels(x, len, step, inv_step, bits, levels);
    return;
  }
  const hn::ScalableTag<double> dd;
  const hn::Rebind<float, decltype(dd)> df;
  const hn::Rebind<int32_t, decltype(dd)> di;
  const int64_t lanes = static_cast<int64_t>(hn::Lanes(dd));
  const double lim = static_cast<double>((int64_t{1} << (bits - 1)) - 1);
  const auto v_lim = hn::Set(dd, lim);
  const auto v_nlim = hn::Set(dd, -lim);
  const auto v_inv = hn::Set(dd, inv_step);
  const auto v_slack = hn::Set(dd, kQuotientSlack);
  int64_t i = 0;
  for (; i + lanes <= len; i += lanes) {
    if (i % 16 == 0) prefetch_ahead(x + i);
    const auto q = hn::Mul(hn::PromoteTo(dd, hn::LoadU(df, x + i)), v_inv);
    const auto dq = hn::Mul(hn::Abs(q), v_slack);
    const auto lo = hn::Max(hn::Min(hn::Round(hn::Sub(q, dq)), v_lim), v_nlim);
    const auto hi = hn::Max(hn::Min(hn::Round(hn::Add(q, dq)), v_lim), v_nlim);
    hn::StoreU(hn::DemoteTo(di, lo), di, levels + i);
    const auto straddle = hn::Ne(lo, hi);
    if (HWY_UNLIKELY(!hn::AllFalse(dd, straddle))) {
      const uint64_t m = mask_bits(dd, straddle);
      for (int64_t j = 0; j < lanes; ++j)
        if ((m >> j) & 1u) levels[i + j] = static_cast<int32_t>(grid_level(x[i + j], step, bits));
    }
  }
  ref::grid_levels(x + i, len - i, step, inv_step, bits, levels + i);
}

/// grid_level_f of the lanes of xv (levels as int32), and in `bad` the lanes the division must
/// decide (the bracket straddles a half-integer, |q| > 2^100 or NaN, c = 0).
template <class DF>
HWY_INLINE hn::Vec<hn::RebindToSigned<DF>> grid_levels_f(DF df, hn::Vec<DF> xv, hn::Vec<DF> c, hn::Vec<DF> lim,
                                                         hn::Mask<DF>& bad) {
  const auto q = hn::Mul(xv, c);
  const auto aq = hn::Abs(q);
  const auto d = hn::Mul(aq, hn::Set(df, kFloatQuotientSlack));
  const auto nlim = hn::Neg(lim);
  const auto lo = hn::Round(hn::Min(hn::Max(hn::Sub(q, d), nlim), lim));  // grid_level_of_f
  const auto hi = hn::Round(hn::Min(hn::Max(hn::Add(q, d), nlim), lim));
  bad = hn::Or(hn::Ne(lo, hi), hn::Not(hn::Le(aq, hn::Set(df, kFloatQuotientMax))));  // also NaN
  return hn::ConvertTo(hn::RebindToSigned<DF>(), lo);
}

/// GridEncodeFields for one field width: kFields fields per output vector of bytes.
template <int kBits, bool kStream>
HWY_INLINE int64_t grid_encode_fields(const float* x, int64_t len, double step, float c, uint8_t* fields) {
  const hn::ScalableTag<float> df;
  const hn::RebindToSigned<decltype(df)> di;
  using TF = std::conditional_t<kBits == 16, int16_t, int8_t>;
  const hn::Repartition<TF, decltype(df)> dt;  // one output vector
  const hn::Half<decltype(dt)> dt2;
  const hn::Rebind<TF, decltype(di)> dt1;  // the fields of one float vector
  const hn::Repartition<uint8_t, decltype(dt)> db;
  constexpr int64_t kBytes = kBits / 8;
  const int64_t lanes = static_cast<int64_t>(hn::Lanes(df));
  const int64_t per = static_cast<int64_t>(hn::Lanes(dt));  // fields per output vector
  const auto v_c = hn::Set(df, c);
  const auto v_lim = hn::Set(df, static_cast<float>((int32_t{1} << (kBits - 1)) - 1));
  HWY_ALIGN TF patch[hn::MaxLanes(dt)];
  int64_t i = 0;
  for (; i + per <= len; i += per) {
    for (int64_t o = 0; o < per; o += 16) prefetch_ahead(x + i + o);
    hn::Mask<decltype(df)> bad[4];
    hn::Vec<decltype(dt)> out;
    if constexpr (kBits == 16) {
      const auto a = hn::DemoteTo(dt1, grid_levels_f(df, hn::LoadU(df, x + i), v_c, v_lim, bad[0]));
      const auto b = hn::DemoteTo(dt1, grid_levels_f(df, hn::LoadU(df, x + i + lanes), v_c, v_lim, bad[1]));
      out = hn::Combine(dt, b, a);
    } else {
      const auto a = hn::DemoteTo(dt1, grid_levels_f(df, hn::LoadU(df, x + i), v_c, v_lim, bad[0]));
      const auto b = hn::DemoteTo(dt1, grid_levels_f(df, hn::LoadU(df, x + i + lanes), v_c, v_lim, bad[1]));
      const auto e = hn::DemoteTo(dt1, grid_levels_f(df, hn::LoadU(df, x + i + 2 * lanes), v_c, v_lim, bad[2]));
      const auto f = hn::DemoteTo(dt1, grid_levels_f(df, hn::LoadU(df, x + i + 3 * lanes), v_c, v_lim, bad[3]));
      out = hn::Combine(dt, hn::Combine(dt2, f, e), hn::Combine(dt2, b, a));
    }
    constexpr int kParts = 32 / kBits;
    auto any = bad[0];
    for (int k = 1; k < kParts; ++k) any = hn::Or(any, bad[k]);
    if (HWY_UNLIKELY(!hn::AllFalse(df, any))) {
      hn::Store(out, dt, patch);
      for (int k = 0; k < kParts; ++k) {
        const uint64_t m = mask_bits(df, bad[k]);
        for (int64_t j = 0; j < lanes; ++j)
          if ((m >> j) & 1u) {
            const int64_t at = k * lanes + j;
            patch[at] = static_cast<TF>(grid_level_cold(x[i + at], step, kBits));
          }
      }
      out = hn::Load(dt, patch);
    }
    const auto bytes = hn::BitCast(db, out);
    if constexpr (kStream)
      hn::Stream(bytes, db, fields + kBytes * i);
    else
      hn::StoreU(bytes, db, fields + kBytes * i);
  }
  return i;
}

void GridEncodeFields(const float* x, int64_t len, double step, float c, uint32_t bits, bool stream, uint8_t* fields) {
  if ((bits != 8 && bits != 16) || c == 0.0f) {
    ref::grid_encode_fields(x, len, step, c, bits, stream, fields);
    return;
  }
  const int64_t size = bits / 8;
  int64_t i = 0;
  if (stream) {
    // fields up to the first vector-aligned one in plain stores, when there is one
    const uintptr_t vec = hn::Lanes(hn::ScalableTag<uint8_t>());
    const uintptr_t a = reinterpret_cast<uintptr_t>(fields);
    const int64_t head = static_cast<int64_t>(((vec - a % vec) % vec) / static_cast<uintptr_t>(size));
    if (a % static_cast<uintptr_t>(size) == 0 && head <= len) {
      ref::grid_encode_fields(x, head, step, c, bits, false, fields);
      i = head;
    } else {
      stream = false;
    }
  }
  if (bits == 16)
    i += stream ? grid_encode_fields<16, true>(x + i, len - i, step, c, fields + 2 * i)
                : grid_encode_fields<16, false>(x + i, len - i, step, c, fields + 2 * i);
  else
    i += stream ? grid_encode_fields<8, true>(x + i, len - i, step, c, fields + i)
                : grid_encode_fields<8, false>(x + i, len - i, step, c, fields + i);
  ref::grid_encode_fields(x + i, len - i, step, c, bits, false, fields + size * i);
}

// Fields of 8 and 16 bits are whole bytes: plain little-endian stores and loads through bytes
// (which alias anything), vectorized by the compiler for each target.
void PackFields(const int32_t* levels, int64_t len, uint32_t bits, uint32_t* words) {
  uint8_t* bytes = reinterpret_cast<uint8_t*>(words);
  if (bits == 16) {
    for (int64_t i = 0; i < len; ++i) {
      const uint16_t v = static_cast<uint16_t>(levels[i]);
      std::memcpy(bytes + 2 * i, &v, 2);
    }
    if (len % 2) std::memset(bytes + 2 * len, 0, 2);
  } else if (bits == 8) {
    for (int64_t i = 0; i < len; ++i) bytes[i] = static_cast<uint8_t>(levels[i]);
    for (int64_t i = len; i % 4 != 0; ++i) bytes[i] = 0;
  } else if (bits == 32) {
    std::memcpy(words, levels, sizeof(int32_t) * static_cast<size_t>(len));
  } else {
    ref::pack_fields(levels, len, bits, words);
  }
}

void UnpackFields(const uint32_t* words, int64_t first, int64_t len, uint32_t bits, int32_t* levels) {
  const uint8_t* bytes = reinterpret_cast<const uint8_t*>(words);
  if (bits == 16) {
    for (int64_t i = 0; i < len; ++i) {
      int16_t v;
      std::memcpy(&v, bytes + 2 * (first + i), 2);
      levels[i] = v;
    }
  } else if (bits == 8) {
    for (int64_t i = 0; i < len; ++i) levels[i] = static_cast<int8_t>(bytes[first + i]);
  } else if (bits == 32) {
    std::memcpy(levels, words + first, sizeof(int32_t) * static_cast<size_t>(len));
  } else {
    ref::unpack_fields(words, first, len, bits, levels);
  }
}

void GridDecode(const int32_t* levels, int64_t len, double step, float weight, bool accumulate, float* out) {
  const hn::ScalableTag<double> dd;
  const hn::Rebind<float, decltype(dd)> df;
  const hn::Rebind<int32_t, decltype(dd)> di;
  const int64_t lanes = static_cast<int64_t>(hn::Lanes(dd));
  const auto v_step = hn::Set(dd, step);
  const auto v_weight = hn::Set(df, weight);
  int64_t i = 0;
  for (; i + lanes <= len; i += lanes) {
    auto v = hn::DemoteTo(df, hn::Mul(v_step, hn::PromoteTo(dd, hn::LoadU(di, levels + i))));
    if (accumulate) v = hn::Add(hn::LoadU(df, out + i), hn::Mul(v_weight, v));
    hn::StoreU(v, df, out + i);
  }
  ref::grid_decode(levels + i, len - i, step, weight, accumulate, out + i);
}

/// True when grid_value(level, step) equals float(level) * float(step) for every |level| < 2^23:
/// step is a normal float, so the exact product (at most 24 + 23 significant bits, far inside the
/// double range) is what step * double(level) computes, and both forms round that product once
/// to float (the float multiply rounds it correctly by IEEE 754).
HWY_INLINE bool grid_step_is_float(double step) {
  const float f = static_cast<float>(step);
  return static_cast<double>(f) == step && std::fabs(f) >= std::numeric_limits<float>::min() &&
         std::fabs(f) <= std::numeric_limits<float>::max();
}

template <bool kAccumulate, int kBits, class DF>
HWY_INLINE int64_t grid_fields_float(DF df, const uint8_t* fields, int64_t first, int64_t len, float step, float weight,
                                     float* out) {
  const hn::RebindToSigned<DF> di;
  const hn::Rebind<int16_t, decltype(di)> d16;
  const hn::Repartition<uint8_t, decltype(d16)> d16_bytes;
  const hn::Rebind<int8_t, decltype(di)> d8;
  const int64_t lanes = static_cast<int64_t>(hn::Lanes(df));
  const auto v_step = hn::Set(df, step);
  const auto v_weight = hn::Set(df, weight);
  int64_t i = 0;
  for (; i + lanes <= len; i += lanes) {
    const int64_t e = first + i;
    hn::Vec<decltype(di)> level;
    if constexpr (kBits == 16)
      level = hn::PromoteTo(di, hn::BitCast(d16, hn::LoadU(d16_bytes, fields + 2 * e)));
    else
      level = hn::PromoteTo(di, hn::LoadU(d8, reinterpret_cast<const int8_t*>(fields) + e));
    auto v = hn::Mul(hn::ConvertTo(df, level), v_step);
    if constexpr (kAccumulate) v = hn::Add(hn::LoadU(df, out + i), hn::Mul(v_weight, v));
    hn::StoreU(v, df, out + i);
  }
  return i;
}

void GridDecodeFields(const uint8_t* fields, int64_t first, int64_t len, uint32_t bits, double step, float weight,
                      bool accumulate, float* out) {
  if (bits != 8 && bits != 16) {
    ref::grid_decode_fields(fields, first, len, bits, step, weight, accumulate, out);
    return;
  }
  int64_t i = 0;
  if (grid_step_is_float(step)) {
    const hn::ScalableTag<float> df;
    const float f = static_cast<float>(step);
    if (bits == 16)
      i = accumulate ? grid_fields_float<true, 16>(df, fields, first, len, f, weight, out)
                     : grid_fields_float<false, 16>(df, fields, first, len, f, weight, out);
    else
      i = accumulate ? grid_fields_float<true, 8>(df, fields, first, len, f, weight, out)
                     : grid_fields_float<false, 8>(df, fields, first, len, f, weight, out);
  } else {  // levels to int32 scratch, then the double product of GridDecode
    HWY_ALIGN int32_t levels[256];
    for (; i + 256 <= len; i += 256) {
      for (int64_t j = 0; j < 256; ++j) {
        const int64_t e = first + i + j;
        if (bits == 16) {
          int16_t v;
          std::memcpy(&v, fields + 2 * e, 2);
          levels[j] = v;
        } else {
          levels[j] = static_cast<int8_t>(fields[e]);
        }
      }
      GridDecode(levels, 256, step, weight, accumulate, out + i);
    }
  }
  ref::grid_decode_fields(fields, first + i, len - i, bits, step, weight, accumulate, out + i);
}

template <class D>
HWY_INLINE int64_t first_equal(D d, const uint8_t* fields, int64_t len, typename hn::TFromD<D> pattern, uint32_t bits) {
  const hn::Repartition<uint8_t, D> d_bytes;
  const int64_t lanes = static_cast<int64_t>(hn::Lanes(d));
  constexpr int64_t kSize = sizeof(hn::TFromD<D>);
  const auto bad = hn::Set(d, pattern);
  const auto load = [&](int64_t i) { return hn::BitCast(d, hn::LoadU(d_bytes, fields + kSize * i)); };
  int64_t i = 0;
  for (; i + 4 * lanes <= len; i += 4 * lanes) {
    for (int64_t o = 0; o < 4 * lanes * kSize; o += 64) hwy::Prefetch(fields + kSize * i + o + 4 * kPrefetchFloats);
    const auto hit = hn::Or(hn::Or(hn::Eq(load(i), bad), hn::Eq(load(i + lanes), bad)),
                            hn::Or(hn::Eq(load(i + 2 * lanes), bad), hn::Eq(load(i + 3 * lanes), bad)));
    if (HWY_UNLIKELY(!hn::AllFalse(d, hit))) return ref::grid_first_bad_field(fields + kSize * i, 4 * lanes, bits) + i;
  }
  const int64_t tail = ref::grid_first_bad_field(fields + kSize * i, len - i, bits);
  return tail < 0 ? -1 : tail + i;
}

int64_t GridFirstBadField(const uint8_t* fields, int64_t len, uint32_t bits) {
  if (bits == 16) return first_equal(hn::ScalableTag<uint16_t>(), fields, len, uint16_t{0x8000}, bits);
  if (bits == 8) return first_equal(hn::ScalableTag<uint8_t>(), fields, len, uint8_t{0x80}, bits);
  return ref::grid_first_bad_field(fields, len, bits);
}

// ------------------------------------------------------------------------------ identity

void Axpy(const float* v, int64_t len, float weight, float* out) {
  const hn::ScalableTag<float> df;
  const int64_t lanes = static_cast<int64_t>(hn::Lanes(df));
  const auto w = hn::Set(df, weight);
  int64_t i = 0;
  for (; i + lanes <= len; i += lanes)
    hn::StoreU(hn::Add(hn::LoadU(df, out + i), hn::Mul(w, hn::LoadU(df, v + i))), df, out + i);
  ref::axpy(v + i, len - i, weight, out + i);
}

// ------------------------------------------------------------------------------ streaming stores

/// Elements before the first whole vector of dst that is aligned for hn::Stream (all of len when
/// dst is not even 4-byte aligned).
template <class DF>
HWY_INLINE int64_t stream_head(DF df, int64_t len, const float* dst) {
  const uintptr_t bytes = hn::Lanes(df) * sizeof(float);
  const uintptr_t a = reinterpret_cast<uintptr_t>(dst);
  if (a % sizeof(float) != 0) return len;
  return std::min<int64_t>(len, static_cast<int64_t>(((bytes - a % bytes) % bytes) / sizeof(float)));
}

void StreamCopy(const uint8_t* src, int64_t len, float* dst) {
  const hn::ScalableTag<float> df;
  const hn::Repartition<uint8_t, decltype(df)> d8;
  const int64_t lanes = static_cast<int64_t>(hn::Lanes(df));
  int64_t i = stream_head(df, len, dst);
  ref::stream_copy(src, i, dst);
  for (; i + 2 * lanes <= len; i += 2 * lanes) {
    const auto a = hn::BitCast(df, hn::LoadU(d8, src + 4 * i));
    const auto b = hn::BitCast(df, hn::LoadU(d8, src + 4 * (i + lanes)));
    hn::Stream(a, df, dst + i);
    hn::Stream(b, df, dst + i + lanes);
  }
  for (; i + lanes <= len; i += lanes) hn::Stream(hn::BitCast(df, hn::LoadU(d8, src + 4 * i)), df, dst + i);
  ref::stream_copy(src + 4 * i, len - i, dst + i);
}

void StreamZero(int64_t len, float* dst) {
  const hn::ScalableTag<float> df;
  const int64_t lanes = static_cast<int64_t>(hn::Lanes(df));
  int64_t i = stream_head(df, len, dst);
  ref::stream_zero(i, dst);
  const auto zero = hn::Zero(df);
  for (; i + lanes <= len; i += lanes) hn::Stream(zero, df, dst + i);
  ref::stream_zero(len - i, dst + i);
}

// ------------------------------------------------------------------------------ sparse

void TopkOrderKeys(const float* x, int64_t len, uint32_t* ord) {
  const hn::ScalableTag<uint32_t> du;
  const int64_t lanes = static_cast<int64_t>(hn::Lanes(du));
  const auto mag = hn::Set(du, 0x7fffffffu);
  const uint32_t* xb = reinterpret_cast<const uint32_t*>(x);
  int64_t i = 0;
  for (; i + lanes <= len; i += lanes) {
    if (i % 16 == 0) prefetch_ahead(x + i);
    hn::StoreU(hn::Sub(mag, hn::And(hn::LoadU(du, xb + i), mag)), du, ord + i);
  }
  ref::topk_order_keys(x + i, len - i, ord + i);
}

int64_t SelectAtMost(const uint32_t* keys, int64_t len, uint32_t threshold, uint32_t* idx) {
  const hn::ScalableTag<uint32_t> du;
  const hn::RebindToSigned<decltype(du)> di;
  const int64_t lanes = static_cast<int64_t>(hn::Lanes(du));
  // unsigned key <= threshold as a signed comparison of both with the top bit flipped
  const auto bias = hn::Set(du, 0x80000000u);
  const auto t = hn::BitCast(di, hn::Set(du, threshold ^ 0x80000000u));
  auto pos = hn::Iota(du, 0u);
  const auto step = hn::Set(du, static_cast<uint32_t>(lanes));
  int64_t count = 0, i = 0;
  for (; i + lanes <= len; i += lanes, pos = hn::Add(pos, step)) {
    const auto hit = hn::RebindMask(du, hn::Not(hn::Gt(hn::BitCast(di, hn::Xor(hn::LoadU(du, keys + i), bias)), t)));
    if (hn::AllFalse(du, hit)) continue;
    count += static_cast<int64_t>(hn::CompressBlendedStore(pos, hit, du, idx + count));
  }
  for (; i < len; ++i)
    if (keys[i] <= threshold) idx[count++] = static_cast<uint32_t>(i);
  return count;
}

#endif  // HWY_TARGET == HWY_SCALAR

}  // namespace HWY_NAMESPACE
}  // namespace gcomp::detail::kernels
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
#include <hwy/cache_control.h>

#include <atomic>

namespace gcomp::detail::kernels {

#define GCOMP_EXPORT_KERNEL(name, fn, ret, params, args) HWY_EXPORT(fn);
GCOMP_CPU_KERNELS(GCOMP_EXPORT_KERNEL)
#undef GCOMP_EXPORT_KERNEL

namespace {
std::atomic<bool> g_reference{false};
bool reference() { return g_reference.load(std::memory_order_relaxed); }
}  // namespace

std::string active_target() {
  if (reference()) return "scalar";
  // The target HWY_DYNAMIC_DISPATCH picks: the best of the supported and compiled ones.
  const std::vector<int64_t> targets = hwy::SupportedAndGeneratedTargets();
  return targets.empty() ? "scalar" : hwy::TargetName(targets.front());
}

std::vector<std::pair<int64_t, std::string>> available_targets() {
  std::vector<std::pair<int64_t, std::string>> out;
  hwy::SetSupportedTargetsForTest(0);
  for (int64_t t : hwy::SupportedAndGeneratedTargets()) out.emplace_back(t, hwy::TargetName(t));
  out.emplace_back(-1, "scalar");
  return out;
}

void force_target(int64_t target) {
  g_reference.store(target == -1, std::memory_order_relaxed);
  hwy::SetSupportedTargetsForTest(target > 0 ? target : 0);
}

// Each kernel: the reference form when forced (force_target(-1)), else the best target's.
#define GCOMP_DISPATCH_KERNEL(name, fn, ret, params, args) \
  ret name params {                                        \
    if (reference()) return ref::name args;                \
    return HWY_DYNAMIC_DISPATCH(fn) args;                  \
  }
GCOMP_CPU_KERNELS(GCOMP_DISPATCH_KERNEL)
#undef GCOMP_DISPATCH_KERNEL

void stream_fence() { hwy::FlushStream(); }

}  // namespace gcomp::detail::kernels
#endif  // HWY_ONCE
