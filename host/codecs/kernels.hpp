// SPDX-License-Identifier: Apache-2.0
// CPU kernels of the codecs: the loops of encode, decode and decode-reduce over a range of
// elements, in SIMD (Google Highway, instruction set chosen at run time: AVX-512, AVX2, SSE4 or
// the portable EMU128) and as a scalar reference written directly from the GCOMP_HD element math.
// Both produce the same bits for every input: the SIMD kernels compute the same IEEE operations
// lane by lane (contraction is off), and where they take a faster exact route (the reciprocal
// forms of codec_math.hpp) lanes it cannot decide fall back to the element function.
//
// Ranges are given by pointers already offset to their first element; "coded" levels are
// level | (negative << 31). The codecs split buffers into pieces and call these per piece
// (host/codecs/*.cpp); the thread pool runs the pieces.
#pragma once

#include <gcomp/detail/philox.hpp>

#include <cstdint>
#include <string>
#include <vector>

namespace gcomp::detail::kernels {

/// Sign bit of a coded level.
inline constexpr uint32_t kNegativeBit = 0x80000000u;

// ------------------------------------------------------------------------------ dispatch

/// The instruction set the kernels run with: a Highway target name ("AVX3", "AVX2", "SSE4",
/// "EMU128", ...) or "scalar" (the reference kernels: builds without Highway, or forced).
std::string active_target();

/// Targets this build and CPU can run: (id, name) pairs, the best first, "scalar" (id -1) last.
std::vector<std::pair<int64_t, std::string>> available_targets();

/// For tests and benchmarks: run the kernels with one target of available_targets() (-1: the
/// scalar reference), or 0 to go back to the best one. Not thread-safe against running kernels.
void force_target(int64_t target);

// ------------------------------------------------------------------------------ kernels

/// words[4k + j] = philox_block(key, stream, first_q + k).v[j] for k < num_q.
void philox_words(const RngKey& key, uint32_t stream, uint64_t first_q, int64_t num_q, uint32_t* words);

enum class ReduceOp { kAbsSum, kSquareSum, kSum, kCenteredSquareSum, kAbsMax };

/// The value of one tile x[0, len), 0 < len <= kTileElems, in the order of reduce.hpp (lanes,
/// then the halving tree over the lanes). `mean` is used by kCenteredSquareSum only.
double reduce_tile(ReduceOp op, const float* x, int64_t len, double mean);

/// Index of the first NaN or Inf in x[0, n), or -1.
int64_t find_nonfinite(const float* x, int64_t n);

/// coded[i] = dither (natural = false) or natdither level of x[i] with scale nu, s = levels and
/// uniform01(words[i]), for i < len: exactly dither_quantize / natdither_quantize.
void quantize(bool natural, const float* x, int64_t len, float nu, uint32_t levels, const uint32_t* words,
              uint32_t* coded);

/// The nonzero dither levels of x[0, len) with scale nu, s = levels and uniform01(words[i]), in
/// increasing i: idx[k] = first + i and coded[k] = the coded level of x[i]; returns their count
/// (idx and coded hold len entries). Exactly the nonzeros of quantize(false, ...): sdither's encode,
/// where at levels = 1 almost every level is 0.
int64_t dither_nonzeros(const float* x, int64_t len, float nu, uint32_t levels, const uint32_t* words, uint32_t first,
                        uint32_t* idx, uint32_t* coded);

/// Largest s for which quantize_planes takes its single-precision route (wider s: quantize and
/// pack_planes).
inline constexpr uint32_t kQuantizePlanesMaxLevels = 1024;

/// The reciprocal quantize_planes takes per element: quantize_recip_f (codec_math.hpp), s / nu
/// for dither and 1 / nu for natdither in float, when it is a normal float; else 0 (the element
/// math then decides every element).
float plane_reciprocal(bool natural, float nu, uint32_t levels);

/// quantize and pack_planes in one pass over num_groups whole groups of 32 elements (s <=
/// kQuantizePlanesMaxLevels, natdither s <= kNatDitherRcpMaxLevels): element i has scale nu[i],
/// recip[i] = plane_reciprocal(natural, nu[i], levels) and word words[i] (`uniform`: nu[0] and
/// recip[0] for every element); writes num_groups (1 + nbits) words. Lanes past the buffer's end
/// must hold x = 0.
void quantize_planes(bool natural, const float* x, const float* nu, const float* recip, const uint32_t* words,
                     int64_t num_groups, uint32_t levels, int nbits, uint32_t* out, bool uniform = false);

/// Bit planes of num_groups groups of 32 coded levels: group g writes 1 + nbits words at
/// out + g (1 + nbits) (sign plane, then level bit k), as docs/wire-format.md says.
void pack_planes(const uint32_t* coded, int64_t num_groups, int nbits, uint32_t* out);

/// out[g] bit j = [x[32 g + j] < 0] for g < num_groups.
void sign_words(const float* x, int64_t num_groups, uint32_t* out);

/// Decodes elements first .. first + len - 1 of the plane groups at `groups` (group g at
/// groups + g (1 + nbits); nbits = 0: sign plane only, level 0): v = table[level], negated when
/// the sign bit is set; out[i] = v, or out[i] + weight * v when `accumulate`. table has
/// 2^nbits entries (levels above the codec's s never reach here: validation rejects them).
void decode_planes(const uint32_t* groups, int nbits, int64_t first, int64_t len, const float* table, float weight,
                   bool accumulate, float* out);

/// The first of the whole plane groups g0 .. g1 - 1 at `groups` (group g at bytes 4 g (1 + nbits)
/// on; any alignment) with a lane that plane_group_bad_lanes(.., nbits, s, level_check) flags, or -1.
int64_t plane_groups_first_bad(const uint8_t* groups, int nbits, uint32_t s, bool level_check, int64_t g0, int64_t g1);

/// Natural compression of x[0, len) with words[i] (natural_exponent_code): codes[i] one byte each;
/// the sign bits (code != 0 and x < 0) of 32-element group g in signs[g], for the groups that
/// x[0, len) covers (len a multiple of 32, or the buffer's end: missing lanes are 0).
void natural_encode(const float* x, int64_t len, const uint32_t* words, uint8_t* codes, uint32_t* signs);

/// natural_value of elements first .. first + len - 1 (codes and signs of the whole payload).
void natural_decode(const uint8_t* codes, const uint32_t* signs, int64_t first, int64_t len, float weight,
                    bool accumulate, float* out);

/// True when one of num_groups whole groups of 32 natural codes is invalid: a code 255, or a sign
/// bit on a zero code.
bool natural_invalid(const uint8_t* codes, const uint32_t* signs, int64_t num_groups);

/// levels[i] = grid_level(x[i], step, bits) for i < len (inv_step = grid_inverse_step(step)).
void grid_levels(const float* x, int64_t len, double step, double inv_step, uint32_t bits, int32_t* levels);

/// The whole-byte fields (bits 8 or 16, little-endian two's complement) of grid_level_f(x[i], step,
/// c, bits), c = grid_inverse_step_f(step, bits), for i < len, written to fields[0, len * bits / 8)
/// (any alignment). With `stream`, whole aligned vectors go out with streaming stores
/// (stream_fence() must run before the fields are read on another thread).
void grid_encode_fields(const float* x, int64_t len, double step, float c, uint32_t bits, bool stream, uint8_t* fields);

/// The LSB-first stream of `bits`-bit two's complement fields of levels[0, len), written from
/// bit 0 of words[0]; len * bits is a multiple of 32, or the last word is zero-padded.
void pack_fields(const int32_t* levels, int64_t len, uint32_t bits, uint32_t* words);

/// Sign-extended fields first .. first + len - 1 of such a stream.
void unpack_fields(const uint32_t* words, int64_t first, int64_t len, uint32_t bits, int32_t* levels);

/// out[i] = grid_value(levels[i], step), or out[i] + weight * that, for i < len.
void grid_decode(const int32_t* levels, int64_t len, double step, float weight, bool accumulate, float* out);

/// grid_decode of fields first .. first + len - 1 of a stream of whole-byte fields (bits 8 or
/// 16), read straight from the little-endian payload bytes `fields` (any alignment).
void grid_decode_fields(const uint8_t* fields, int64_t first, int64_t len, uint32_t bits, double step, float weight,
                        bool accumulate, float* out);

/// Index of the first of the whole-byte fields (bits 8 or 16) at fields[0, len) that holds the
/// most negative pattern (0x80, 0x8000: never written by the encoder), or -1.
int64_t grid_first_bad_field(const uint8_t* fields, int64_t len, uint32_t bits);

/// out[i] = out[i] + weight * v[i] for i < len (accumulate(), never fused).
void axpy(const float* v, int64_t len, float weight, float* out);

/// dst[i] = the little-endian float at src + 4 i, for i < len (src of any alignment: a payload),
/// with non-temporal (streaming) stores for the whole vectors of dst that are aligned, plain
/// stores for the rest: the lines are written without being read first and do not stay in cache.
/// For outputs far larger than the caches (pieces.hpp, stream_min_bytes); stream_fence() must run
/// on the writing thread before another thread reads dst.
void stream_copy(const uint8_t* src, int64_t len, float* dst);

/// dst[i] = +0 for i < len, with streaming stores as stream_copy.
void stream_zero(int64_t len, float* dst);

/// Orders the streaming stores of this thread before its later stores (sfence on x86).
void stream_fence();

/// Top-k order keys: ord[i] = 0x7fffffff - (bits of |x[i]|), so that a smaller key comes first in
/// the top-k order (larger |x|; NaN and Inf, above every finite value, get keys below 2^23).
void topk_order_keys(const float* x, int64_t len, uint32_t* ord);

/// Writes the positions i < len with keys[i] <= threshold to idx, in increasing order; returns
/// their count (idx holds len entries).
int64_t select_at_most(const uint32_t* keys, int64_t len, uint32_t threshold, uint32_t* idx);

// ------------------------------------------------------------------------------ reference

/// Every kernel once: X(name, HighwayName, return type, (parameters), (arguments)). The build
/// defines from this list the reference declarations below, the Highway exports and the run-time
/// dispatch (kernels_simd.cpp), and the forwarding to the reference kernels of builds without SIMD
/// (kernels_nosimd.cpp, and the HWY_SCALAR target). A new kernel is one line here, its documented
/// declaration above, its reference form (kernels_ref.cpp) and its Highway form (kernels_simd.cpp).
#define GCOMP_CPU_KERNELS(X)                                                                                           \
  X(philox_words, PhiloxWords, void,                                                                                   \
    (const RngKey& key, uint32_t stream, uint64_t first_q, int64_t num_q, uint32_t* words),                            \
    (key, stream, first_q, num_q, words))                                                                              \
  X(reduce_tile, ReduceTile, double, (ReduceOp op, const float* x, int64_t len, double mean), (op, x, len, mean))      \
  X(find_nonfinite, FindNonfinite, int64_t, (const float* x, int64_t n), (x, n))                                       \
  X(quantize, Quantize, void,                                                                                          \
    (bool natural, const float* x, int64_t len, float nu, uint32_t levels, const uint32_t* words, uint32_t* coded),    \
    (natural, x, len, nu, levels, words, coded))                                                                       \
  X(dither_nonzeros, DitherNonzeros, int64_t,                                                                          \
    (const float* x, int64_t len, float nu, uint32_t levels, const uint32_t* words, uint32_t first, uint32_t* idx,     \
     uint32_t* coded),                                                                                                 \
    (x, len, nu, levels, words, first, idx, coded))                                                                    \
  X(pack_planes, PackPlanes, void, (const uint32_t* coded, int64_t num_groups, int nbits, uint32_t* out),              \
    (coded, num_groups, nbits, out))                                                                                   \
  X(quantize_planes, QuantizePlanes, void,                                                                             \
    (bool natural, const float* x, const float* nu, const float* recip, const uint32_t* words, int64_t num_groups,     \
     uint32_t levels, int nbits, uint32_t* out, bool uniform),                                                         \
    (natural, x, nu, recip, words, num_groups, levels, nbits, out, uniform))                                           \
  X(sign_words, SignWords, void, (const float* x, int64_t num_groups, uint32_t* out), (x, num_groups, out))            \
  X(decode_planes, DecodePlanes, void,                                                                                 \
    (const uint32_t* groups, int nbits, int64_t first, int64_t len, const float* table, float weight, bool accumulate, \
     float* out),                                                                                                      \
    (groups, nbits, first, len, table, weight, accumulate, out))                                                       \
  X(plane_groups_first_bad, PlaneGroupsFirstBad, int64_t,                                                              \
    (const uint8_t* groups, int nbits, uint32_t s, bool level_check, int64_t g0, int64_t g1),                          \
    (groups, nbits, s, level_check, g0, g1))                                                                           \
  X(natural_encode, NaturalEncode, void,                                                                               \
    (const float* x, int64_t len, const uint32_t* words, uint8_t* codes, uint32_t* signs),                             \
    (x, len, words, codes, signs))                                                                                     \
  X(natural_decode, NaturalDecode, void,                                                                               \
    (const uint8_t* codes, const uint32_t* signs, int64_t first, int64_t len, float weight, bool accumulate,           \
     float* out),                                                                                                      \
    (codes, signs, first, len, weight, accumulate, out))                                                               \
  X(natural_invalid, NaturalInvalid, bool, (const uint8_t* codes, const uint32_t* signs, int64_t num_groups),          \
    (codes, signs, num_groups))                                                                                        \
  X(grid_levels, GridLevels, void,                                                                                     \
    (const float* x, int64_t len, double step, double inv_step, uint32_t bits, int32_t* levels),                       \
    (x, len, step, inv_step, bits, levels))                                                                            \
  X(grid_encode_fields, GridEncodeFields, void,                                                                        \
    (const float* x, int64_t len, double step, float c, uint32_t bits, bool stream, uint8_t* fields),                  \
    (x, len, step, c, bits, stream, fields))                                                                           \
  X(pack_fields, PackFields, void, (const int32_t* levels, int64_t len, uint32_t bits, uint32_t* words),               \
    (levels, len, bits, words))                                                                                        \
  X(unpack_fields, UnpackFields, void,                                                                                 \
    (const uint32_t* words, int64_t first, int64_t len, uint32_t bits, int32_t* levels),                               \
    (words, first, len, bits, levels))                                                                                 \
  X(grid_decode, GridDecode, void,                                                                                     \
    (const int32_t* levels, int64_t len, double step, float weight, bool accumulate, float* out),                      \
    (levels, len, step, weight, accumulate, out))                                                                      \
  X(grid_decode_fields, GridDecodeFields, void,                                                                        \
    (const uint8_t* fields, int64_t first, int64_t len, uint32_t bits, double step, float weight, bool accumulate,     \
     float* out),                                                                                                      \
    (fields, first, len, bits, step, weight, accumulate, out))                                                         \
  X(grid_first_bad_field, GridFirstBadField, int64_t, (const uint8_t* fields, int64_t len, uint32_t bits),             \
    (fields, len, bits))                                                                                               \
  X(axpy, Axpy, void, (const float* v, int64_t len, float weight, float* out), (v, len, weight, out))                  \
  X(topk_order_keys, TopkOrderKeys, void, (const float* x, int64_t len, uint32_t* ord), (x, len, ord))                 \
  X(select_at_most, SelectAtMost, int64_t, (const uint32_t* keys, int64_t len, uint32_t threshold, uint32_t* idx),     \
    (keys, len, threshold, idx))                                                                                       \
  X(stream_copy, StreamCopy, void, (const uint8_t* src, int64_t len, float* dst), (src, len, dst))                     \
  X(stream_zero, StreamZero, void, (int64_t len, float* dst), (len, dst))

namespace ref {
#define GCOMP_DECLARE_REF_KERNEL(name, fn, ret, params, args) ret name params;
GCOMP_CPU_KERNELS(GCOMP_DECLARE_REF_KERNEL)
#undef GCOMP_DECLARE_REF_KERNEL
}  // namespace ref

}  // namespace gcomp::detail::kernels
