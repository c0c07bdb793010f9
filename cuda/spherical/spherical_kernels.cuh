// SPDX-License-Identifier: Apache-2.0
// spherical (spec/ALGORITHMS.md §5.2(b)): per block of m_l <= m_b elements, the fp32 l2 norm (the
// dither l2 reduction of cuda/quant/block_reduce.cuh) and the B-bit index of the best of 2^B
// Gaussian codewords regenerated from Philox. Payload (docs/wire-format.md §3.8,
// host/codecs/spherical.cpp): m f32 norms, then the m indices packed LSB first.
//
// The codebook normals are the GCOMP_HD functions of include/gcomp/detail/spherical.hpp
// (philox_block, box_muller with det_log / det_sincos_turns: binary64 + - * / and sqrt only), and
// the build passes --fmad=false, so every normal, dot product and score has the CPU's bits.
//
// Encode: one warp per block. Lane l scores the codewords j = l, l + 32, ... in increasing j
// (dot and squared norm summed in increasing k, as the CPU), keeping the first j with the largest
// score; a __shfl_xor_sync butterfly on (score, j) then picks the largest score, ties to the
// smaller j: the CPU's "first j with the largest score". The winner's squared norm travels with it,
// so the fused EF/DIANA update regenerates only codeword j* (its norm2 is the sum the decoder
// recomputes, in the same order). The indices go to the workspace and are packed with
// pack_index_word, one thread per output word.
// Decode: one thread per block regenerates codeword j*, sums its squared norm in increasing k and
// writes f32(F * (g_k / sqrt(n2))), F = nu / beta(m_l, B) (host quadrature, uploaded per length).
#pragma once

#include "cuda/common/device_types.cuh"
#include "cuda/fused/decode_store.cuh"
#include <gcomp/detail/fused_memory.hpp>

#include <gcomp/detail/codec_math.hpp>
#include <gcomp/detail/philox.hpp>
#include <gcomp/detail/sparse.hpp>
#include <gcomp/detail/spherical.hpp>

namespace gcomp::cuda::detail {

struct SphericalParams {
  const int64_t* blocks;  ///< num_blocks + 1 element offsets
  int64_t num_blocks;
  int64_t index_words;
  uint32_t bits;
  bool unscaled;
  const int64_t* beta_len;  ///< distinct block lengths, ascending
  const double* beta_val;
  int64_t num_betas;
};

/// F = nu / beta(len, B), or nu when unscaled (binary64, as SphericalCodec::decode_impl).
__device__ inline double spherical_factor(const SphericalParams& p, float nu, int64_t len) {
  if (p.unscaled) return static_cast<double>(nu);
  int64_t lo = 0;
  int64_t hi = p.num_betas - 1;
  while (lo < hi) {
    const int64_t mid = lo + (hi - lo) / 2;
    if (p.beta_len[mid] < len)
      lo = mid + 1;
    else
      hi = mid;
  }
  return static_cast<double>(nu) / p.beta_val[lo];
}

/// Codebook normals of increasing indices t, reusing the Philox block (4 normals) and the
/// Box-Muller pair (2 normals) of the previous call: the value of t is codebook_normal(key, t).
struct CodebookNormals {
  gcomp::detail::RngKey key;
  uint64_t q = ~uint64_t{0};
  uint64_t pair = ~uint64_t{0};
  gcomp::detail::Philox4x32 w{};
  double c = 0.0;
  double s = 0.0;

  __device__ explicit CodebookNormals(const gcomp::detail::RngKey& k) : key(k) {}
  __device__ double operator()(uint64_t t) {
    using namespace gcomp::detail;
    if ((t >> 1) != pair) {
      if ((t >> 2) != q) {
        q = t >> 2;
        w = philox_block(key, kStreamCodebook, q);
      }
      pair = t >> 1;
      const bool hi = (t & 2u) != 0u;  // words 2p, 2p + 1 with p = (t mod 4) / 2 (no local-memory indexing)
      box_muller(hi ? w.v[2] : w.v[0], hi ? w.v[3] : w.v[1], c, s);
    }
    return (t & 1u) ? s : c;
  }
};

/// Search (and fused update: fuse 0 none, 1 EF e = p - v, 2 DIANA mem = h + alpha v, h = in.y). Writes the
/// norms into the payload and the indices into `index`. kView: x is the Session's gradient view
/// (Input::viewed: bf16 / f16 widened, NaN/Inf as +0 as they load; its own instantiation, so the
/// fp32 one keeps its code).
template <bool kView>
__global__ void __launch_bounds__(kThreads)
    spherical_encode_kernel(SphericalParams p, Input in, const float* norms, gcomp::detail::RngKey key, int64_t* index,
                            uint8_t* payload, gcomp::detail::FuseMode fuse, float* mem, float alpha,
                            const DeviceStatus* status) {
  using namespace gcomp::detail;
  if (status_failed(status)) return;
  float* out_norms = reinterpret_cast<float*>(payload);
  const int lane = static_cast<int>(threadIdx.x & 31u);
  const uint64_t num_codewords = uint64_t{1} << p.bits;
  for (int64_t b = global_warp(); b < p.num_blocks; b += grid_warps()) {
    const int64_t begin = p.blocks[b];
    const int64_t len = p.blocks[b + 1] - begin;
    const float nu = norms[b];
    double best = bits_double(0xfff0000000000000ull);  // -Inf: every real score beats it
    uint64_t best_j = ~uint64_t{0};
    double best_n2 = 0.0;
    if (nu != 0.0f) {  // warp-uniform
      for (uint64_t j = static_cast<uint64_t>(lane); j < num_codewords; j += 32) {
        CodebookNormals g(key);
        uint64_t t = codebook_index(static_cast<uint64_t>(begin), p.bits, j, static_cast<uint64_t>(len), 0);
        double dot = 0.0;
        double n2 = 0.0;
        for (int64_t k = 0; k < len; ++k, ++t) {
          const double gk = g(t);
          dot = dot + gk * static_cast<double>(kView ? in.viewed(begin + k) : in(begin + k));
          n2 = n2 + gk * gk;
        }
        const double score = codeword_score(dot, n2);
        if (score > best) {
          best = score;
          best_j = j;
          best_n2 = n2;
        }
      }
      for (int s = 16; s >= 1; s /= 2) {
        const double ob = __shfl_xor_sync(kFullMask, best, s);
        const uint64_t oj = __shfl_xor_sync(kFullMask, best_j, s);
        const double on2 = __shfl_xor_sync(kFullMask, best_n2, s);
        if (ob > best || (ob == best && oj < best_j)) {
          best = ob;
          best_j = oj;
          best_n2 = on2;
        }
      }
    } else {
      best_j = 0;  // a zero block sends index 0 and decodes to 0
    }
    if (lane == 0) {
      out_norms[b] = nu;
      index[b] = static_cast<int64_t>(best_j);
    }
    if (fuse != gcomp::detail::FuseMode::kNone) {
      __syncwarp();  // every lane has read its inputs before any lane updates the memory (EF in place)
      const double factor = nu != 0.0f ? spherical_factor(p, nu, len) : 0.0;
      CodebookNormals g(key);
      for (int64_t k = lane; k < len; k += 32) {
        const int64_t i = begin + k;
        const float v = nu != 0.0f
                            ? spherical_value(factor,
                                              g(codebook_index(static_cast<uint64_t>(begin), p.bits, best_j,
                                                               static_cast<uint64_t>(len), static_cast<uint64_t>(k))),
                                              best_n2)
                            : 0.0f;
        const float base = fuse == gcomp::detail::FuseMode::kEF ? (kView ? in.viewed(i) : in(i)) : in.y[i];
        mem[i] = fused_memory(fuse, base, alpha, v);
      }
    }
    __syncwarp();
  }
}

/// The index words of the payload (one thread per word, no atomics).
__global__ void __launch_bounds__(kThreads)
    spherical_pack_kernel(SphericalParams p, const int64_t* index, uint8_t* payload, const DeviceStatus* status) {
  if (status_failed(status)) return;
  uint32_t* words = reinterpret_cast<uint32_t*>(payload + 4 * p.num_blocks);
  for (int64_t w = global_thread(); w < p.index_words; w += grid_threads())
    words[w] = gcomp::detail::pack_index_word(index, p.num_blocks, static_cast<int>(p.bits), w);
}

/// SphericalCodec::validate: norms finite and >= +0 (not -0), index 0 where the norm is 0, zero
/// padding after the last index. Status index: index_base + the block's first element, or + n.
__global__ void __launch_bounds__(kThreads)
    spherical_validate_kernel(SphericalParams p, const uint8_t* payload, uint64_t index_base, DeviceStatus* status) {
  using namespace gcomp::detail;
  const float* nus = reinterpret_cast<const float*>(payload);
  const uint32_t* words = reinterpret_cast<const uint32_t*>(payload + 4 * p.num_blocks);
  for (int64_t b = global_thread(); b < p.num_blocks; b += grid_threads()) {
    const float s = nus[b];
    const bool bad = !is_finite_f(s) || s < 0.0f || float_bits(s) == 0x80000000u ||
                     (s == 0.0f && read_packed_field(words, b, p.bits) != 0u);
    if (bad) raise_status(status, gcompErrorCorruptPayload, index_base + static_cast<uint64_t>(p.blocks[b]));
  }
  const int64_t used = p.num_blocks * static_cast<int64_t>(p.bits);
  if (global_thread() == 0 && used % 32 != 0 && (words[used / 32] >> (used % 32)) != 0u)
    raise_status(status, gcompErrorCorruptPayload, index_base + static_cast<uint64_t>(p.blocks[p.num_blocks]));
}

/// Decode of one validated payload, one thread per block: mode 0 s = v; otherwise
/// s = accumulate(from_zero ? 0 : out, weight, v); s stored by `store` (cuda/fused/decode_store.cuh:
/// PlainStore out = s; the Session's SessionStore, on the last payload only, its step of s).
template <class Store>
__global__ void __launch_bounds__(kThreads)
    spherical_decode_kernel(SphericalParams p, const uint8_t* payload, gcomp::detail::RngKey key, float weight,
                            int mode, bool from_zero, float* out, const DeviceStatus* status, Store store) {
  using namespace gcomp::detail;
  if (status_failed(status)) return;
  const float* nus = reinterpret_cast<const float*>(payload);
  const uint32_t* words = reinterpret_cast<const uint32_t*>(payload + 4 * p.num_blocks);
  for (int64_t b = global_thread(); b < p.num_blocks; b += grid_threads()) {
    const int64_t begin = p.blocks[b];
    const int64_t len = p.blocks[b + 1] - begin;
    const float nu = nus[b];
    double n2 = 0.0;
    double factor = 0.0;
    uint64_t t0 = 0;
    if (nu != 0.0f) {
      const uint64_t j = read_packed_field(words, b, p.bits);
      t0 = codebook_index(static_cast<uint64_t>(begin), p.bits, j, static_cast<uint64_t>(len), 0);
      CodebookNormals g(key);
      for (int64_t k = 0; k < len; ++k) {
        const double gk = g(t0 + static_cast<uint64_t>(k));
        n2 = n2 + gk * gk;
      }
      factor = spherical_factor(p, nu, len);
    }
    CodebookNormals g(key);
    for (int64_t k = 0; k < len; ++k) {
      const float v = nu != 0.0f ? spherical_value(factor, g(t0 + static_cast<uint64_t>(k)), n2) : 0.0f;
      const int64_t i = begin + k;
      store_element(store, out, i, mode == 0 ? v : accumulate(from_zero ? 0.0f : out[i], weight, v));
    }
  }
}

/// out[i] = codebook_normal(key, first + i): the CPU == GPU check of the codebook regeneration.
__global__ void __launch_bounds__(kThreads)
    codebook_normals_kernel(gcomp::detail::RngKey key, uint64_t first, int64_t count, double* out) {
  for (int64_t i = global_thread(); i < count; i += grid_threads())
    out[i] = gcomp::detail::codebook_normal(key, first + static_cast<uint64_t>(i));
}

}  // namespace gcomp::cuda::detail
