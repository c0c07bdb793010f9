// SPDX-License-Identifier: Apache-2.0
// Lane functions of the quad layout of the elementwise kernels, host-compilable (GCOMP_HD, no CUDA
// intrinsics) so that tests/unit/test_gpu_lanes.cpp runs them on a simulated warp against the CPU
// codecs: the kernels add only the warp exchange (__shfl_xor_sync) around them.
//
// Quad layout: a thread handles the 4 consecutive elements 4q .. 4q + 3 (one Philox block, one
// 16-byte load); a warp handles a span of 128 elements, lane l the quad 32 s + l. The bit-plane
// group of 32 elements g (0..3 in the span) is held by lanes 8 g .. 8 g + 7, lane m = l % 8 of the
// group holding bits 4 m .. 4 m + 3 of every plane word of the group.
//
// Plane words: each lane packs, for up to 8 planes, the 4 bits of its quad into one nibble per
// plane (plane_nibbles: nibble p = plane first + p). The 8 lanes of a group then transpose that
// 8 x 8 matrix of nibbles in three exchange stages (transpose_stage with lane distance 4, 2, 1):
// afterwards lane m holds the group's whole word of plane first + m, with lane m' 's bits at
// 4 m' .. 4 m' + 3, i.e. bit j of the word is element 32 g + j: the layout of the wire format.
#pragma once

#include <gcomp/detail/codec_math.hpp>
#include <gcomp/detail/grid.hpp>
#include <gcomp/detail/hd.hpp>
#include <gcomp/detail/payload_rules.hpp>
#include <gcomp/detail/philox.hpp>
#include <gcomp/detail/sparse.hpp>

#include <cstdint>

/// Full unrolling of the loops over a quad's elements in device code, so that the per-element
/// arrays stay in registers (a runtime index would put them on the stack). The kernels' .cuh files
/// write `#pragma unroll` themselves: nvcc refuses a _Pragma inside a lambda.
#if defined(__CUDA_ARCH__)
#define GCOMP_QUAD_UNROLL _Pragma("unroll")
#else
#define GCOMP_QUAD_UNROLL
#endif

namespace gcomp::cuda::lanes {

inline constexpr int kQuadElems = 4;                ///< elements per thread
inline constexpr int kSpanElems = 32 * kQuadElems;  ///< elements per warp and span
inline constexpr int kLanesPerGroup = 8;            ///< lanes holding one 32-element group
inline constexpr int kPlanesPerPass = 8;            ///< planes one transpose carries

/// Nibbles of planes first .. first + 7 of a quad: nibble p holds bit j = the plane bit of element
/// j, where plane 0 is the sign (negative[j]) and plane 1 + k is bit k of level[j]. Planes past
/// `planes` are zero.
GCOMP_HD uint32_t plane_nibbles(const uint32_t (&level)[kQuadElems], const bool (&negative)[kQuadElems], int first,
                                int planes) {
  uint32_t x = 0;
  GCOMP_QUAD_UNROLL
  for (int p = 0; p < kPlanesPerPass; ++p) {
    const int plane = first + p;
    if (plane >= planes) break;
    uint32_t nib = 0;
    GCOMP_QUAD_UNROLL
    for (int j = 0; j < kQuadElems; ++j) {
      const uint32_t bit = plane == 0 ? (negative[j] ? 1u : 0u) : (level[j] >> (plane - 1)) & 1u;
      nib |= bit << j;
    }
    x |= nib << (4 * p);
  }
  return x;
}

/// The nibbles of bit positions with (position & d) == 0 (d = 1, 2, 4): the half a lane with
/// (m & d) == 0 keeps in stage d.
GCOMP_HD uint32_t transpose_keep_mask(int d) { return d == 4 ? 0x0000ffffu : (d == 2 ? 0x00ff00ffu : 0x0f0f0f0fu); }

/// One stage of the 8 x 8 nibble transpose over the 8 lanes of a group. `x`: this lane's word,
/// `y`: the word of lane m ^ d (the exchange partner), m = lane % 8. A lane with (m & d) == 0
/// keeps its low half of each 2d-nibble block and takes its partner's low half into the high half;
/// the other lane keeps its high half and takes its partner's high half into its low half. After
/// the stages d = 4, 2, 1 lane m holds nibble p of lane p's word in position p, for every p.
GCOMP_HD uint32_t transpose_stage(uint32_t x, uint32_t y, int lane, int d) {
  const uint32_t keep = transpose_keep_mask(d);
  const int shift = 4 * d;
  if ((lane & d) == 0) return (x & keep) | ((y << shift) & ~keep);
  return (x & ~keep) | ((y >> shift) & keep);
}

/// The group-word contribution of one lane's nibble: bits 4 m .. 4 m + 3.
GCOMP_HD uint32_t nibble_at(uint32_t nibble, int lane) { return (nibble & 0xfu) << (4 * (lane % kLanesPerGroup)); }

/// This lane's 4 bits of a group word (bit j: element 4 m + j of the group).
GCOMP_HD uint32_t nibble_of(uint32_t word, int lane) { return (word >> (4 * (lane % kLanesPerGroup))) & 0xfu; }

/// Levels of the quad's 4 elements from the group's nbits level plane words, one read of each;
/// returns the OR of the quad's nibbles (the validation of the padding bits uses it).
GCOMP_HD uint32_t quad_levels(const uint32_t* planes, int nbits, int lane, uint32_t (&level)[kQuadElems]) {
  uint32_t any = 0;
  GCOMP_QUAD_UNROLL
  for (int j = 0; j < kQuadElems; ++j) level[j] = 0u;
  for (int k = 0; k < nbits; ++k) {
    const uint32_t nib = nibble_of(planes[k], lane);
    any |= nib;
    GCOMP_QUAD_UNROLL
    for (int j = 0; j < kQuadElems; ++j) level[j] |= ((nib >> j) & 1u) << k;
  }
  return any;
}

/// Element -> quantization block (the device's BlockMap): blocks never cross segments and are
/// uniform inside a segment (the last one of a segment may be short). seg_off holds S + 1 offsets
/// (the last is n), seg_block0 the first block of each segment, seg_bsize its block size (>= 1).
/// The division is 32-bit when the offset and the block size allow (every segment below 2^32).
GCOMP_HD int64_t block_of(const int64_t* seg_off, const int64_t* seg_block0, const int64_t* seg_bsize,
                          int64_t num_segments, int64_t i) {
  // Largest s with seg_off[s] <= i: that segment is non-empty and holds i, since seg_off[S] = n > i.
  int64_t lo = 0;
  int64_t hi = num_segments - 1;
  while (lo < hi) {
    const int64_t mid = lo + (hi - lo + 1) / 2;
    if (seg_off[mid] <= i)
      lo = mid;
    else
      hi = mid - 1;
  }
  const int64_t off = i - seg_off[lo];
  const int64_t bsize = seg_bsize[lo];
  const int64_t within = (off >> 32) == 0 && (bsize >> 32) == 0
                             ? static_cast<int64_t>(static_cast<uint32_t>(off) / static_cast<uint32_t>(bsize))
                             : off / bsize;
  return seg_block0[lo] + within;
}

/// The blocks of the quad's live elements: block[0] from block_of, the next ones by walking the
/// block offsets (blocks[b + 1] is the first element after block b), as blocks may be shorter
/// than a quad.
GCOMP_HD void quad_blocks(int64_t first_block, const int64_t* blocks, int64_t first, int live,
                          int64_t (&block)[kQuadElems]) {
  int64_t b = first_block;
  int64_t end = blocks[b + 1];
  GCOMP_QUAD_UNROLL
  for (int j = 0; j < kQuadElems; ++j) {
    if (j < live) {
      while (first + j >= end) end = blocks[++b + 1];
    }
    block[j] = b;
  }
}

/// One quantized quad of the dense plane codecs (dither, terngrad: kNatural = false; natdither:
/// true): the group functions of codec_math.hpp with the quad's one Philox block; elements past
/// `live` are level 0, positive (the CPU's zero padding).
template <bool kNatural>
GCOMP_HD void quantize_quad(const float (&y)[kQuadElems], const float (&nu)[kQuadElems], uint32_t levels,
                            const gcomp::detail::Philox4x32& r, int live, uint32_t (&level)[kQuadElems],
                            bool (&negative)[kQuadElems]) {
  gcomp::detail::Quantized q[kQuadElems];
  if constexpr (kNatural)
    gcomp::detail::natdither_quantize4(y, nu, levels, r, q);
  else
    gcomp::detail::dither_quantize4(y, nu, levels, r, q);
  GCOMP_QUAD_UNROLL
  for (int j = 0; j < kQuadElems; ++j) {
    level[j] = j < live ? q[j].level : 0u;
    negative[j] = j < live && q[j].negative;
  }
}

/// Number of the quad's elements inside [0, n): 0 .. 4.
GCOMP_HD int quad_live(int64_t first, int64_t n) {
  const int64_t left = n - first;
  return left <= 0 ? 0 : (left >= kQuadElems ? kQuadElems : static_cast<int>(left));
}

// ---------------------------------------------------------------------------------------------
// grid (spec §6.1, wire format §3.9): n fields of B bits (two's complement of the level), packed
// LSB first into little-endian words. Quad q holds the fields of elements 4q .. 4q + 3.
// Whole-byte widths (B = 8, 16, 32: kBytes = B / 8) give a quad exactly the kBytes words
// kBytes q .. kBytes q + kBytes - 1 (one 4-, 8- or 16-byte access); other widths read the quad's
// bit window [4 q B, 4 q B + 4 B) word by word (grid_read_quad).
// ---------------------------------------------------------------------------------------------

/// The B-bit field of a level (its two's complement, truncated).
GCOMP_HD uint32_t grid_field(int64_t level, uint32_t bits) {
  return static_cast<uint32_t>(static_cast<uint64_t>(level) & ((uint64_t{1} << bits) - 1u));
}

/// The level of a B-bit field (sign extension).
GCOMP_HD int64_t grid_field_level(uint32_t field, uint32_t bits) {
  return (field >> (bits - 1u)) != 0u ? static_cast<int64_t>(field) - (int64_t{1} << bits)
                                      : static_cast<int64_t>(field);
}

/// Levels of a quad's live elements by `level(x_j)`, level 0 past `live` (the CPU's zero padding).
template <class Level>
GCOMP_HD void grid_quad_levels(const float (&x)[kQuadElems], int live, Level&& level, int64_t (&out)[kQuadElems]) {
  GCOMP_QUAD_UNROLL
  for (int j = 0; j < kQuadElems; ++j) out[j] = j < live ? level(x[j]) : int64_t{0};
}

/// The kBytes payload words of a quad of whole-byte fields (B = 8 kBytes): word k holds fields
/// k (4 / kBytes) .. in ascending byte order, the layout of pack_fields for these widths.
template <int kBytes>
GCOMP_HD void grid_pack_quad(const int64_t (&level)[kQuadElems], uint32_t (&word)[kBytes]) {
  static_assert(kBytes == 1 || kBytes == 2 || kBytes == 4);
  constexpr int kPerWord = kQuadElems / kBytes;
  GCOMP_QUAD_UNROLL
  for (int k = 0; k < kBytes; ++k) {
    uint32_t w = 0;
    GCOMP_QUAD_UNROLL
    for (int f = 0; f < kPerWord; ++f) w |= grid_field(level[k * kPerWord + f], 8u * kBytes) << (8 * kBytes * f);
    word[k] = w;
  }
}

/// The 4 fields of a quad's kBytes words (the inverse of grid_pack_quad).
template <int kBytes>
GCOMP_HD void grid_unpack_quad(const uint32_t (&word)[kBytes], uint32_t (&field)[kQuadElems]) {
  static_assert(kBytes == 1 || kBytes == 2 || kBytes == 4);
  constexpr int kPerWord = kQuadElems / kBytes;
  constexpr uint32_t kMask = kBytes == 4 ? 0xffffffffu : (1u << (8 * kBytes)) - 1u;
  GCOMP_QUAD_UNROLL
  for (int j = 0; j < kQuadElems; ++j) field[j] = (word[j / kPerWord] >> (8 * kBytes * (j % kPerWord))) & kMask;
}

/// The live fields of the quad at `first` of a B-bit stream (any B in 1 .. 32), fields past `live`
/// 0: every word of the quad's bit window that holds a live field is read once (FieldReader), and
/// no word past the last live field (so never past the payload).
GCOMP_HD void grid_read_quad(const uint32_t* words, int64_t first, int live, uint32_t bits,
                             uint32_t (&field)[kQuadElems]) {
  GCOMP_QUAD_UNROLL
  for (int j = 0; j < kQuadElems; ++j) field[j] = 0u;
  if (live <= 0) return;
  gcomp::detail::FieldReader reader([words](uint64_t w) { return words[w]; }, first, bits);
  GCOMP_QUAD_UNROLL
  for (int j = 0; j < kQuadElems; ++j)
    if (j < live) field[j] = reader.next();
}

/// The decoded values step * level of a quad's live fields, and GridCodec::validate's field rule
/// on them (grid_field_ok: no -2^(B-1)): returns the first live j that breaks it, or -1.
GCOMP_HD int grid_quad_values(const uint32_t (&field)[kQuadElems], int live, uint32_t bits, double step,
                              float (&v)[kQuadElems]) {
  int bad = -1;
  GCOMP_QUAD_UNROLL
  for (int j = 0; j < kQuadElems; ++j)
    if (j < live) {
      if (bad < 0 && !gcomp::detail::grid_field_ok(field[j], bits)) bad = j;
      v[j] = gcomp::detail::grid_value(grid_field_level(field[j], bits), step);
    }
  return bad;
}

/// The quad that checks the padding of a grid payload (GridCodec::validate: the bits after the
/// last field, all in the last word, are 0): the one holding element n - 1.
GCOMP_HD bool grid_checks_padding(int64_t first, int live, int64_t n) { return live > 0 && first + live == n; }

}  // namespace gcomp::cuda::lanes
