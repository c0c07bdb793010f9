// SPDX-License-Identifier: Apache-2.0
// Types shared by every kernel: the device status word, the input loader (plain x, the DIANA
// difference g - h, or the Session's p = a x + b y), the element -> quantization-block map, and
// the launch geometry.
#pragma once

#include "cuda/common/lanes.hpp"

#include <gcomp/cuda.hpp>
#include <gcomp/detail/codec_math.hpp>
#include <gcomp/detail/fused_memory.hpp>
#include <gcomp/detail/grad_source.hpp>
#include <gcomp/detail/hd.hpp>
#include <gcomp/detail/reduce.hpp>
#include <gcomp/detail/session_math.hpp>

#include <cuda_runtime.h>

#include <cstdint>
#include <type_traits>

namespace gcomp::cuda::detail {

inline constexpr int kThreads = 256;  ///< threads per CUDA block of every kernel
inline constexpr int kWarpsPerBlock = kThreads / 32;
inline constexpr unsigned kFullMask = 0xffffffffu;
inline constexpr int kMaxWeights = 64;  ///< payloads per decode-reduce launch (weights by value)

static_assert(kThreads == gcomp::detail::kLanes, "one CUDA block per reduction tile (reduce.hpp)");

/// Sets the status word: first error code wins, index is lowered to the smallest reported.
__device__ inline void raise_status(DeviceStatus* st, uint32_t code, uint64_t index) {
  atomicCAS(&st->code, 0u, code);
  atomicMin(reinterpret_cast<unsigned long long*>(&st->index), static_cast<unsigned long long>(index));
}

/// True when an earlier kernel of this call reported a data error (outputs must stay untouched).
__device__ inline bool status_failed(const DeviceStatus* st) {
  return *static_cast<const volatile uint32_t*>(&st->code) != 0u;
}

/// The encoder input, formed as it is loaded: x[i], or with a second operand y the combination
/// lincomb_f(a, x[i], b, y[i]) (gcomp/detail/session_math.hpp): the DIANA difference g - h with a
/// = 1, b = -1 (diana_delta_f: the CPU's delta buffer, bit for bit), or the Session's p = a x + b y
/// (the bits lincomb_kernel would store). Recomputed in every pass that reads it, so no pass
/// stores it first.
///
/// `src` (gcomp/detail/grad_source.hpp) says how x is stored: kSrcF32, the floats at x; else the
/// Session's gradient view (step_device's bf16 / f16 gradient, nonfinite = zero): x points at the
/// stored elements, widened exactly and/or zeroed as they load (load_src: the bits of the copy
/// widen / zero_nonfinite would store). load_input_quad and load_view_quad read a view by quads
/// (one 8-byte load of a bf16 / f16 quad where it is 8-byte aligned, else element by element),
/// viewed() one element (a view is never aligned16(), so the 16-byte loop of every quad kernel is
/// the fp32 code alone); load_quad and the element accessor operator() read fp32 only, so a codec whose
/// kernels use them on its input never gets a view (DevicePlan::loads_view, checked by
/// DeviceCodec's encode). The sparse selections (cuda/topk/radix_select.cuh) have view
/// instantiations of their kernels (ViewMagnitudeKey), so their fp32 code stays as it was.
struct Input {
  const float* x;
  const float* y = nullptr;  ///< the second operand; null: the input is x itself
  float a = 1.0f;            ///< with y: the factors of x and y
  float b = -1.0f;
  uint32_t src = gcomp::detail::kSrcF32;  ///< how x is stored (uniform: the same for every element)

  /// The input element from the operands' elements (y given).
  __device__ float of(float xv, float yv) const { return gcomp::detail::lincomb_f(a, xv, b, yv); }
  /// Element i of fp32 operands (src kSrcF32).
  __device__ float operator()(int64_t i) const { return y == nullptr ? x[i] : of(x[i], y[i]); }
  /// Element i of a gradient view (src not kSrcF32): x's element loaded as stored.
  __device__ float viewed(int64_t i) const {
    const float xv = gcomp::detail::load_src(x, src, i);
    return y == nullptr ? xv : of(xv, y[i]);
  }
  /// fp32 x and both pointers 16-byte aligned: quads starting at a multiple of 4 load as one float4 each.
  __device__ bool aligned16() const {
    return src == gcomp::detail::kSrcF32 && (reinterpret_cast<uintptr_t>(x) & 15u) == 0 &&
           (reinterpret_cast<uintptr_t>(y) & 15u) == 0;
  }
  /// x alone, as stored (DIANA's g of the input g - h).
  __device__ Input x_only() const { return Input{x, nullptr, 1.0f, -1.0f, src}; }
};

/// Input::viewed(i) out of line (the operands by value): a kernel that loads a gradient view in an
/// unrolled loop (randk's scatter, sdither's tile load) makes one call per element instead of
/// inlining the widening into every unrolled step (code size, registers).
__device__ __noinline__ inline float viewed_element(const float* x, const float* y, float a, float b, uint32_t src,
                                                    int64_t i) {
  return Input{x, y, a, b, src}.viewed(i);
}

/// Four consecutive elements of one thread (the quad layout of cuda/common/lanes.hpp).
struct Quad {
  float v[lanes::kQuadElems];
};

/// Elements first .. first + live - 1 of the input (the rest 0): one 16-byte load per pointer when
/// the quad is whole and `vec` (Input::aligned16() and `first` a multiple of 4), else element loads.
/// Each element is Input::of of its operands either way (the same single roundings).
__device__ inline Quad load_quad(const Input& in, int64_t first, int live, bool vec) {
  Quad q{{0.0f, 0.0f, 0.0f, 0.0f}};
  if (live == lanes::kQuadElems && vec) {
    const float4 a = __ldg(reinterpret_cast<const float4*>(in.x + first));
    if (in.y != nullptr) {
      const float4 b = __ldg(reinterpret_cast<const float4*>(in.y + first));
      q = Quad{{in.of(a.x, b.x), in.of(a.y, b.y), in.of(a.z, b.z), in.of(a.w, b.w)}};
    } else {
      q = Quad{{a.x, a.y, a.z, a.w}};
    }
    return q;
  }
#pragma unroll
  for (int j = 0; j < lanes::kQuadElems; ++j)
    if (j < live) q.v[j] = in(first + j);
  return q;
}

/// Elements first .. first + live - 1 of a gradient view (Input::src not kSrcF32; the rest 0). The
/// four 16-bit patterns of a bf16 / f16 quad are gathered into one 64-bit word: one 8-byte load
/// when the quad is whole, x 8-byte aligned and `first` a multiple of 4 (the same for every quad
/// of a launch in the quad kernels, whose quads start at multiples of 4: warps do not diverge on
/// it), else (the tail quad, a view whose start is not 8-byte aligned, a block-scale tile starting
/// off a multiple of 4) 2-byte loads of the live elements. Then each element is src_value of its
/// bits (src_raw_in_word: load_src's floats bit for bit), one element at a time in a loop that is
/// not unrolled (so the widening adds as few registers as it can to the kernels it shares with the
/// fp32 paths), rotated into place: after 4 turns v[j] holds element first + j. An fp32 view with
/// kSrcZero loads element by element (src_raw); y, where given, too.
__device__ inline Quad load_view_quad(const Input& in, int64_t first, int live) {
  const bool half = gcomp::detail::src_bytes(in.src) == 2u;
  const auto* xs = reinterpret_cast<const uint16_t*>(in.x) + first;  // a 16-bit view's quad
  uint64_t word = 0;  // a 16-bit view: the quad's four patterns (0 past live)
  if (half) {
    if (live == lanes::kQuadElems && (reinterpret_cast<uintptr_t>(in.x) & 7u) == 0 && (first & 3) == 0) {
      const uint2 w = __ldg(reinterpret_cast<const uint2*>(xs));
      word = static_cast<uint64_t>(w.y) << 32 | w.x;
    } else {
#pragma unroll 1
      for (int j = 0; j < live; ++j) word |= static_cast<uint64_t>(xs[j]) << (16 * j);
    }
  }
  Quad q{{0.0f, 0.0f, 0.0f, 0.0f}};
#pragma unroll 1
  for (int j = 0; j < lanes::kQuadElems; ++j) {
    float e = 0.0f;
    if (j < live) {
      const uint32_t raw =
          half ? gcomp::detail::src_raw_in_word(word, 0) : gcomp::detail::src_raw(in.x, in.src, first + j);
      const float xv = gcomp::detail::src_value(raw, in.src);
      e = in.y == nullptr ? xv : in.of(xv, in.y[first + j]);
    }
    q = Quad{{q.v[1], q.v[2], q.v[3], e}};
    word >>= 16;
  }
  return q;
}

/// load_quad of an encoder's input, which may be the Session's gradient view (Input::src): a view
/// is never `vec` (aligned16() is false), so where vec is a compile-time true (the 16-byte loop of
/// the quad kernels) this is load_quad itself; a view loads by load_view_quad.
__device__ inline Quad load_input_quad(const Input& in, int64_t first, int live, bool vec) {
  if (vec || in.src == gcomp::detail::kSrcF32) return load_quad(in, first, live, vec);
  return load_view_quad(in, first, live);
}

/// Stores the live elements of a quad to dst[first ..]: one 16-byte store when whole and `vec`.
__device__ inline void store_quad(float* dst, int64_t first, int live, bool vec, const Quad& q) {
  if (live == lanes::kQuadElems && vec) {
    *reinterpret_cast<float4*>(dst + first) = make_float4(q.v[0], q.v[1], q.v[2], q.v[3]);
    return;
  }
#pragma unroll
  for (int j = 0; j < lanes::kQuadElems; ++j)
    if (j < live) dst[first + j] = q.v[j];
}

/// Loads the live elements of a quad of dst (for accumulate modes), like load_quad.
__device__ inline Quad load_out_quad(const float* dst, int64_t first, int live, bool vec) {
  Quad q{{0.0f, 0.0f, 0.0f, 0.0f}};
  if (live == lanes::kQuadElems && vec) {
    const float4 a = *reinterpret_cast<const float4*>(dst + first);
    return Quad{{a.x, a.y, a.z, a.w}};
  }
#pragma unroll
  for (int j = 0; j < lanes::kQuadElems; ++j)
    if (j < live) q.v[j] = dst[first + j];
  return q;
}

__device__ inline bool aligned16(const void* p) { return (reinterpret_cast<uintptr_t>(p) & 15u) == 0; }

/// 32 x 32-bit warp exchange of the 8 x 8 nibble transpose (lanes.hpp): lane m of each 8-lane
/// group ends with the group's word of plane first + m.
__device__ inline uint32_t transpose_nibbles(uint32_t x, int lane) {
#pragma unroll
  for (int d = 4; d >= 1; d /= 2) x = lanes::transpose_stage(x, __shfl_xor_sync(0xffffffffu, x, d), lane, d);
  return x;
}

/// OR of the 8 lanes' nibbles of a group, each at its position (the one-plane case: sign words).
__device__ inline uint32_t gather_nibbles(uint32_t nibble, int lane) {
  uint32_t x = lanes::nibble_at(nibble, lane);
  x |= __shfl_xor_sync(0xffffffffu, x, 1);
  x |= __shfl_xor_sync(0xffffffffu, x, 2);
  x |= __shfl_xor_sync(0xffffffffu, x, 4);
  return x;
}

/// Element -> quantization block. Blocks never cross segments and are uniform inside a segment
/// (the last one of a segment may be short), so the block of i is found from its segment.
struct BlockMap {
  const int64_t* seg_off;     ///< num_segments + 1 offsets (last = n)
  const int64_t* seg_block0;  ///< index of the first block of each segment
  const int64_t* seg_bsize;   ///< block size of each segment (>= 1)
  int64_t num_segments;

  __device__ int64_t block_of(int64_t i) const {
    return lanes::block_of(seg_off, seg_block0, seg_bsize, num_segments, i);
  }
};

/// Weights of up to kMaxWeights payloads, passed by value (no host-to-device copy on the stream).
struct WeightList {
  float w[kMaxWeights];
};

__device__ inline int64_t global_thread() { return static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; }
__device__ inline int64_t grid_threads() { return static_cast<int64_t>(gridDim.x) * blockDim.x; }
__device__ inline int64_t global_warp() { return global_thread() / 32; }
__device__ inline int64_t grid_warps() { return grid_threads() / 32; }

/// The spans (lanes::kSpanElems elements, a warp's 32 quads) of n elements, warp-strided over the
/// grid: span(s, std::true_type{}) for the whole spans when `vec` (their quads take 16-byte loads
/// and stores), then span(s, std::false_type{}) for the rest (element loads and stores).
template <class Span>
__device__ inline void for_each_span(int64_t n, bool vec, Span&& span) {
  const int64_t spans = gcomp::detail::ceil_div(n, int64_t{lanes::kSpanElems});
  const int64_t whole = vec ? n / lanes::kSpanElems : 0;
  for (int64_t s = global_warp(); s < whole; s += grid_warps()) span(s, std::true_type{});
  for (int64_t s = whole + global_warp(); s < spans; s += grid_warps()) span(s, std::false_type{});
}

/// What an encoder compresses in a quad: the input `in`, and for DIANA (kFuse kDiana, in = g - h:
/// a = 1, b = -1) also the base h = in.y, returned in `h` for the memory update, which writes the
/// separate output memory (h_out) or h itself (in place). h takes plain loads, not the read-only
/// path: in place, this pass writes it. The difference is the same single fp32 rounding as the
/// CPU's delta buffer.
template <gcomp::detail::FuseMode kFuse>
__device__ inline Quad load_encode_quad(const Input& in, int64_t first, int live, bool vec, Quad& h) {
  if constexpr (kFuse == gcomp::detail::FuseMode::kDiana) {
    const Quad g = load_input_quad(in.x_only(), first, live, vec);
    h = load_out_quad(in.y, first, live, vec);
    Quad x;
#pragma unroll
    for (int j = 0; j < lanes::kQuadElems; ++j) x.v[j] = gcomp::detail::diana_delta_f(g.v[j], h.v[j]);
    return x;
  } else {
    return load_input_quad(in, first, live, vec);
  }
}

/// The fused EF/DIANA memory update of a quad (nothing for kNone): mem = fused_memory(mode, base,
/// alpha, v_j) with base x (EF) or h (DIANA) and v_j = value(j), the decoded element j.
template <gcomp::detail::FuseMode kFuse, class Value>
__device__ inline void store_fused_memory(float* mem, int64_t first, int live, bool vec, const Quad& x, const Quad& h,
                                          float alpha, Value&& value) {
  if constexpr (kFuse != gcomp::detail::FuseMode::kNone) {
    if (live <= 0) return;
    Quad out;
#pragma unroll
    for (int j = 0; j < lanes::kQuadElems; ++j)
      out.v[j] =
          gcomp::detail::fused_memory(kFuse, kFuse == gcomp::detail::FuseMode::kEF ? x.v[j] : h.v[j], alpha, value(j));
    store_quad(mem, first, live, vec, out);
  }
}

/// Blocks for a grid-stride kernel over `work` items of `per_block` items each, capped at
/// `max_blocks` (a multiple of the SM count) and at least `min_blocks`.
inline unsigned grid_for(int64_t work, int64_t per_block, int64_t max_blocks, int64_t min_blocks = 1) {
  if (work <= 0) return 0;
  int64_t g = (work + per_block - 1) / per_block;
  if (g > max_blocks) g = max_blocks;
  if (g < min_blocks) g = min_blocks;
  return static_cast<unsigned>(g);
}

}  // namespace gcomp::cuda::detail
