// SPDX-License-Identifier: Apache-2.0
// grid (spec/ALGORITHMS.md §6.1, §7.1): l = rint(x / step) clamped to +-(2^(B-1) - 1), stored as
// B-bit two's complement fields packed LSB first (docs/wire-format.md §3.9, host/codecs/grid.cpp).
//
// The level: grid_level_f (gcomp/detail/grid.hpp: the quotient in single precision with the
// reciprocal c = grid_inverse_step_f computed once on the host, a proven 2^-20 bracket, the
// division out of line for the rare element near a half-integer), the CPU's function, for every
// B <= 24; B = 25 .. 32 (levels not exact in float) take grid_level_rcp (double, no division).
//
// Encode, whole-byte widths (B = 8, 16, 32): a thread per quad (cuda/common/lanes.hpp), one
// 16-byte load of x when aligned, the quad's B / 2 bytes of fields stored as one 4-, 8- or 16-byte
// word group (grid_pack_quad). Other widths: one warp per group of 32 consecutive elements (its 32
// fields are exactly B words, so groups never share a word); lane j computes the field of element
// 32 g + j, lane k < B assembles word k of the group from the fields that overlap bits
// [32 k, 32 k + 32) with __shfl_sync, the same shifts as pack_index_word. Elements past n have
// field 0 (the CPU's zero padding). The fused EF/DIANA update is done by the thread that owns the
// element, with the decoded value grid_value(l): one pass, in place safe.
// Decode: decode_quads_kernel with GridQuadDecoder: each payload read once, GridCodec::validate's
// rules (grid_field_ok, zero padding) checked in the same pass.
#pragma once

#include "cuda/common/device_types.cuh"
#include <gcomp/detail/fused_memory.hpp>

#include <gcomp/detail/codec_math.hpp>
#include <gcomp/detail/payload_rules.hpp>
#include <gcomp/detail/grid.hpp>
#include <gcomp/detail/sparse.hpp>

namespace gcomp::cuda::detail {

struct GridParams {
  int64_t n;
  int64_t words;  ///< ceil(n B / 32)
  uint32_t bits;  ///< 2..32
  double step;
  double inv_step;  ///< grid_inverse_step(step): the levels of B > 24 by grid_level_rcp, no division
  float c;          ///< grid_inverse_step_f(step, bits): the levels of B <= 24 by grid_level_f
};

/// The level of x: grid_level_f (kFloat, B <= 24) or grid_level_rcp (B > 24); both equal grid_level.
template <bool kFloat>
__device__ inline int64_t grid_level_dev(float x, const GridParams& p) {
  if constexpr (kFloat)
    return gcomp::detail::grid_level_f(x, p.step, p.c, p.bits);
  else
    return gcomp::detail::grid_level_rcp(x, p.step, p.inv_step, p.bits);
}

/// Encode of the whole-byte widths (kBytes = B / 8: 1, 2 or 4), a thread per quad. kFuse: none,
/// EF (e = p - v) or DIANA (mem = in.y + alpha v: h_out, or h in place). kCheck: the non-finite check folded into
/// this pass (plain encode: one read of the input; the payload's content is then unspecified); the
/// fused variants run check_finite_kernel before, so that nothing is written on a non-finite input.
template <int kBytes, gcomp::detail::FuseMode kFuse, bool kCheck>
__global__ void __launch_bounds__(kThreads)
    grid_encode_quads_kernel(GridParams p, Input in, uint32_t* __restrict__ payload, float* mem, float alpha,
                             DeviceStatus* status) {
  using namespace gcomp::detail;
  if (status_failed(status)) return;
  const int64_t quads = ceil_div(p.n, int64_t{lanes::kQuadElems});
  // The vector path: 16-byte loads of x (and the memory), the quad's words as one 4-, 8- or 16-byte store.
  const bool vec = in.aligned16() && (reinterpret_cast<uintptr_t>(payload) & (4u * kBytes - 1u)) == 0 &&
                   (kFuse == FuseMode::kNone || aligned16(mem));
  const auto quad = [&](int64_t q, auto whole) {
    constexpr bool kWhole = decltype(whole)::value;
    const int64_t first = q * lanes::kQuadElems;
    const int live = kWhole ? lanes::kQuadElems : lanes::quad_live(first, p.n);
    [[maybe_unused]] Quad h{{0.0f, 0.0f, 0.0f, 0.0f}};
    const Quad x = load_encode_quad<kFuse>(in, first, live, kWhole, h);
    int64_t level[lanes::kQuadElems];
    lanes::grid_quad_levels(
        x.v, live, [&](float v) { return grid_level_dev<kBytes != 4>(v, p); }, level);
    if constexpr (kCheck) {
#pragma unroll
      for (int j = 0; j < lanes::kQuadElems; ++j)
        if (j < live && !is_finite_f(x.v[j]))
          raise_status(status, gcompErrorNonFinite, static_cast<uint64_t>(first + j));
    }
    uint32_t word[kBytes];
    lanes::grid_pack_quad<kBytes>(level, word);
    uint32_t* dst = payload + q * kBytes;
    if constexpr (kWhole) {
      if constexpr (kBytes == 1) *dst = word[0];
      if constexpr (kBytes == 2) *reinterpret_cast<uint2*>(dst) = make_uint2(word[0], word[1]);
      if constexpr (kBytes == 4) *reinterpret_cast<uint4*>(dst) = make_uint4(word[0], word[1], word[2], word[3]);
    } else {
#pragma unroll
      for (int k = 0; k < kBytes; ++k)
        if (q * kBytes + k < p.words) dst[k] = word[k];  // the tail quad: its words inside the payload
    }
    store_fused_memory<kFuse>(mem, first, live, kWhole, x, h, alpha,
                              [&](int j) { return grid_value(level[j], p.step); });
  };
  // Whole quads with aligned pointers take the vector path only; the rest element loads and word stores.
  const int64_t whole = vec ? p.n / lanes::kQuadElems : 0;
  for (int64_t q = global_thread(); q < whole; q += grid_threads()) quad(q, std::true_type{});
  for (int64_t q = whole + global_thread(); q < quads; q += grid_threads()) quad(q, std::false_type{});
}

/// Encode of the other widths, a warp per 32-element group (fuse: none, EF e = p - v, DIANA
/// mem = h + alpha v with h = in.y; gcomp/detail/fused_memory.hpp). `check`: the non-finite check folded into this
/// pass (plain encode: one read of the input; the payload's content is then unspecified); the fused
/// variants run check_finite_kernel before, so that nothing is written. kView: x is the Session's
/// gradient view (Input::viewed: bf16 / f16 widened, NaN/Inf as +0 as they load); its own
/// instantiations, so the fp32 ones keep their code.
template <bool kFloat, bool kView = false>
__global__ void __launch_bounds__(kThreads)
    grid_encode_kernel(GridParams p, Input in, uint32_t* __restrict__ payload, gcomp::detail::FuseMode fuse, bool check,
                       float* mem, float alpha, DeviceStatus* status) {
  using namespace gcomp::detail;
  if (status_failed(status)) return;
  const int lane = static_cast<int>(threadIdx.x & 31u);
  const int bits = static_cast<int>(p.bits);
  const int fields_per_word = 31 / bits + 2;  // bound on the fields overlapping one word
  const int first = (32 * lane) / bits;       // first field overlapping word `lane` of the group
  const int last = (32 * lane + 31) / bits;
  const int64_t num_groups = ceil_div(p.n, kGroupElems);
  for (int64_t g = global_warp(); g < num_groups; g += grid_warps()) {
    const int64_t i = g * kGroupElems + lane;
    const bool live = i < p.n;
    float x = 0.0f;
    int64_t level = 0;
    if (live) {
      x = kView ? in.viewed(i) : in(i);
      level = grid_level_dev<kFloat>(x, p);
      if (check && !is_finite_f(x)) raise_status(status, gcompErrorNonFinite, static_cast<uint64_t>(i));
    }
    const uint32_t field = lanes::grid_field(level, p.bits);
    uint32_t word = 0;
    for (int f = 0; f < fields_per_word; ++f) {
      const int src = first + f;
      const uint32_t v = __shfl_sync(kFullMask, field, src & 31);
      if (src <= last && src < kGroupElems) {
        const int shift = src * bits - 32 * lane;
        word |= shift >= 0 ? static_cast<uint32_t>(static_cast<uint64_t>(v) << shift)
                           : static_cast<uint32_t>(static_cast<uint64_t>(v) >> (-shift));
      }
    }
    const int64_t w = g * bits + lane;
    if (lane < bits && w < p.words) payload[w] = word;
    if (fuse != gcomp::detail::FuseMode::kNone && live) {
      const float v = grid_value(level, p.step);
      mem[i] = fused_memory(fuse, fuse == gcomp::detail::FuseMode::kEF ? x : in.y[i], alpha, v);
    }
  }
}

/// Quad decoder (decode_quads_kernel): the quad's fields, each payload word read once (kBytes = B / 8
/// for B = 8, 16, 32: the quad's kBytes words, one 4-, 8- or 16-byte load when aligned; kBytes = 0:
/// any width, grid_read_quad), with GridCodec::validate's rules on what it read: no field equal to
/// -2^(B-1) (grid_field_ok), zero padding after the last field (checked by the quad of element n - 1).
template <int kBytes>
struct GridQuadDecoder {
  GridParams p;
  __device__ void operator()(const uint8_t* payload, int64_t first, int live, int, uint64_t index_base,
                             DeviceStatus* status, float (&v)[lanes::kQuadElems]) const {
    if (live == 0) return;  // past n: no field, and the padding is the last quad's
    const uint32_t* words = reinterpret_cast<const uint32_t*>(payload);
    uint32_t field[lanes::kQuadElems];
    if constexpr (kBytes == 0) {
      lanes::grid_read_quad(words, first, live, p.bits, field);
    } else {
      const int64_t w0 = first / lanes::kQuadElems * kBytes;
      const uint32_t* src = words + w0;
      uint32_t w[kBytes];
      if (live == lanes::kQuadElems && (reinterpret_cast<uintptr_t>(payload) & (4u * kBytes - 1u)) == 0) {
        if constexpr (kBytes == 1) w[0] = __ldg(src);
        if constexpr (kBytes == 2) {
          const uint2 u = __ldg(reinterpret_cast<const uint2*>(src));
          w[0] = u.x;
          w[1] = u.y;
        }
        if constexpr (kBytes == 4) {
          const uint4 u = __ldg(reinterpret_cast<const uint4*>(src));
          w[0] = u.x;
          w[1] = u.y;
          w[2] = u.z;
          w[3] = u.w;
        }
      } else {
#pragma unroll
        for (int k = 0; k < kBytes; ++k) w[k] = w0 + k < p.words ? src[k] : 0u;  // the tail quad
      }
      lanes::grid_unpack_quad<kBytes>(w, field);
    }
    const int bad = lanes::grid_quad_values(field, live, p.bits, p.step, v);
    if (bad >= 0) raise_status(status, gcompErrorCorruptPayload, index_base + static_cast<uint64_t>(first + bad));
    if (lanes::grid_checks_padding(first, live, p.n) &&
        !gcomp::detail::padding_clear(words[p.words - 1], p.n * static_cast<int64_t>(p.bits)))
      raise_status(status, gcompErrorCorruptPayload, index_base + static_cast<uint64_t>(p.n));
  }
};

}  // namespace gcomp::cuda::detail
