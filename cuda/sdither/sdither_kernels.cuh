// SPDX-License-Identifier: Apache-2.0
// sdither (spec/ALGORITHMS.md §5.2(a)): the dither quantizer with the nonzeros sent as chunked
// Elias-coded records. Payload (docs/wire-format.md §3.7, host/codecs/sdither.cpp):
//   m f32 scales | u32 T | D u32 chunk offsets | W u32 record stream, zero padded to the worst case.
//
// Encode. Record k's stream position is the sum of the record bits of all nonzeros before it in
// global index order, and a record's gap needs the previous nonzero of its chunk, so the encode is
// a two-level scan over tiles of kSDitherTile elements (one CUDA block, 16 consecutive elements
// per thread), independent of the chunk size:
//   1. sdither_count_kernel: per tile, quantize (dither_quantize with philox_word(key, 0, i), the
//      draws and levels of dither), and record the tile's first and last nonzero and its record
//      bits without the gap code of its first record (a cub::BlockScan max gives every thread the
//      last nonzero before it inside the tile);
//   2. sdither_scan_tiles_kernel: one CUDA block scans the tiles in index order (cub::BlockScan,
//      256 tiles per round): the last nonzero before each tile (max) completes the first gap, and
//      an exclusive sum gives each tile's first stream bit and T;
//   3. sdither_zero_stream_kernel zeroes the W stream words, then sdither_write_kernel quantizes
//      again, block-scans the bits of each thread's records, writes them with atomicOr through
//      sdither_write_record_with (bitwise OR commutes, so the words do not depend on the order of
//      the atomics), the directory entry of every chunk start (the stream bit at that element),
//      the scales and T; and, fused, the EF or DIANA memory of its elements.
// The input is read twice and the levels recomputed (no n-sized scratch); every kernel returns at
// once when the scale pass reported a non-finite input, so the payload and memory stay untouched.
//
// Decode: one thread per chunk runs sdither_walk_chunk (include/gcomp/detail/elias.hpp), the
// parser of the format's validation rules, over its chunk: first a validating pass over every
// payload (header, padding and chunk kernels), then the decode pass, which writes every element
// of the chunk (zeros between records) in increasing index order.
#pragma once

#include "cuda/common/device_types.cuh"
#include <gcomp/detail/fused_memory.hpp>
#include "cuda/dispatch/plan.cuh"

#include <gcomp/detail/codec_math.hpp>
#include <gcomp/detail/payload_rules.hpp>
#include <gcomp/detail/elias.hpp>
#include <gcomp/detail/philox.hpp>

#include <cub/block/block_exchange.cuh>
#include <cub/block/block_reduce.cuh>
#include <cub/block/block_scan.cuh>

namespace gcomp::cuda::detail {

struct SDitherParams {
  BlockMap map;
  const int64_t* blocks;  ///< num_blocks + 1 element offsets
  int64_t n;
  int64_t num_blocks;
  int64_t chunk;
  int64_t num_chunks;
  int64_t tiles;
  int64_t stream_words;
  int64_t worst_bits;
  uint32_t levels;
  uint32_t code;
};

struct SdMax {
  __device__ int64_t operator()(int64_t a, int64_t b) const { return a < b ? b : a; }
};
struct SdMin {
  __device__ int64_t operator()(int64_t a, int64_t b) const { return b < a ? b : a; }
};

__device__ inline int64_t sd_max(int64_t a, int64_t b) { return a < b ? b : a; }

/// Payload parts (all 4-byte aligned: the payload is).
__device__ inline uint32_t* sd_header(const SDitherParams& p, uint8_t* payload) {
  return reinterpret_cast<uint32_t*>(payload + 4 * p.num_blocks);
}
__device__ inline const uint32_t* sd_header(const SDitherParams& p, const uint8_t* payload) {
  return reinterpret_cast<const uint32_t*>(payload + 4 * p.num_blocks);
}

/// The element before the chunk of element i: a chunk's first gap counts from it.
__device__ inline int64_t sd_chunk_floor(const SDitherParams& p, int64_t i) { return i / p.chunk * p.chunk - 1; }

using SdExchange = cub::BlockExchange<float, kThreads, kSDitherItems>;
using SdScan = cub::BlockScan<int64_t, kThreads>;
using SdReduce = cub::BlockReduce<int64_t, kThreads>;

union SdTemp {
  typename SdExchange::TempStorage exchange;
  typename SdScan::TempStorage scan;
  typename SdReduce::TempStorage reduce;
};

/// One tile as seen by one thread: elements i0 .. i0 + 15 (blocked), their levels and signs.
struct SdItems {
  int64_t i0;
  uint32_t level[kSDitherItems];
  uint32_t negative;  ///< bit j: element i0 + j is negative
};

/// Loads tile `begin` (coalesced, striped), transposes it to 16 consecutive elements per thread and
/// quantizes them exactly as the CPU does. With `values`, x[j] becomes the decoded value of item j
/// (dither_value; 0 for level 0). Ends with __syncthreads (tmp reusable).
__device__ inline void sd_quantize_tile(const SDitherParams& p, Input in, const float* scales,
                                        const gcomp::detail::RngKey& key, int64_t begin, bool values, SdTemp& tmp,
                                        SdItems& it, float (&x)[kSDitherItems]) {
  using namespace gcomp::detail;
  const int tid = static_cast<int>(threadIdx.x);
#pragma unroll
  for (int j = 0; j < kSDitherItems; ++j) {
    const int64_t i = begin + static_cast<int64_t>(j) * kThreads + tid;
    x[j] = i < p.n ? in(i) : 0.0f;
  }
  SdExchange(tmp.exchange).StripedToBlocked(x);
  __syncthreads();
  it.i0 = begin + static_cast<int64_t>(tid) * kSDitherItems;
  it.negative = 0u;
  int64_t b = it.i0 < p.n ? p.map.block_of(it.i0) : 0;
  Philox4x32 rnd{};
#pragma unroll
  for (int j = 0; j < kSDitherItems; ++j) {
    const int64_t i = it.i0 + j;
    it.level[j] = 0u;
    if (i >= p.n) {
      x[j] = 0.0f;
      continue;
    }
    while (i >= p.blocks[b + 1]) ++b;
    // i0 is a multiple of 16, so the Philox blocks of the items are i0/4, ..., i0/4 + 3.
    if ((j & 3) == 0) rnd = philox_block(key, kStreamElement, static_cast<uint64_t>(i) >> 2);
    const float scale = scales[b];
    const Quantized q = dither_quantize(x[j], scale, p.levels, uniform01(rnd.v[j & 3]));
    it.level[j] = q.level;
    if (q.negative) it.negative |= 1u << j;
    if (values) x[j] = dither_value(q.level, q.negative, scale, p.levels);
  }
}

/// Last nonzero element of the thread's items (-1 if none).
__device__ inline int64_t sd_last_nonzero(const SdItems& it) {
  int64_t last = -1;
#pragma unroll
  for (int j = 0; j < kSDitherItems; ++j)
    if (it.level[j] != 0u) last = it.i0 + j;
  return last;
}

/// Step 1: per tile, last and first nonzero and the record bits without the first gap code.
__global__ void __launch_bounds__(kThreads)
    sdither_count_kernel(SDitherParams p, Input in, const float* scales, gcomp::detail::RngKey key, SDitherTiles sd,
                         const DeviceStatus* status) {
  using namespace gcomp::detail;
  __shared__ SdTemp tmp;
  if (status_failed(status)) return;
  for (int64_t t = blockIdx.x; t < p.tiles; t += gridDim.x) {
    SdItems it;
    float x[kSDitherItems];
    sd_quantize_tile(p, in, scales, key, t * kSDitherTile, false, tmp, it, x);
    int64_t first = -1;
    int64_t last = -1;
    int64_t bits = 0;
#pragma unroll
    for (int j = 0; j < kSDitherItems; ++j) {
      if (it.level[j] == 0u) continue;
      const int64_t i = it.i0 + j;
      if (last >= 0)
        bits += elias_len(p.code, static_cast<uint64_t>(i - sd_max(last, sd_chunk_floor(p, i))));
      else
        first = i;
      bits += 1 + (p.levels > 1u ? elias_len(p.code, it.level[j]) : 0u);
      last = i;
    }
    int64_t before = -1;
    int64_t tile_last = -1;
    SdScan(tmp.scan).ExclusiveScan(last, before, SdMax{}, tile_last);
    if (threadIdx.x == 0) before = -1;  // undefined for thread 0
    __syncthreads();
    int64_t tile_first = INT64_MAX;
    if (first >= 0) {
      if (before >= 0)
        bits += elias_len(p.code, static_cast<uint64_t>(first - sd_max(before, sd_chunk_floor(p, first))));
      else
        tile_first = first;  // the tile's first nonzero: its gap needs the tiles before (step 2)
    }
    const int64_t rest = SdReduce(tmp.reduce).Sum(bits);
    __syncthreads();
    const int64_t tf = SdReduce(tmp.reduce).Reduce(tile_first, SdMin{});
    if (threadIdx.x == 0) {
      sd.last[t] = tile_last;
      sd.first[t] = tf == INT64_MAX ? -1 : tf;
      sd.rest[t] = rest;
    }
    __syncthreads();
  }
}

/// Step 2 (one CUDA block): the last nonzero before each tile, each tile's first stream bit, T.
__global__ void __launch_bounds__(kThreads)
    sdither_scan_tiles_kernel(SDitherParams p, SDitherTiles sd, DeviceStatus* status) {
  using namespace gcomp::detail;
  __shared__ typename SdScan::TempStorage tmp;
  if (status_failed(status)) return;
  int64_t carry_last = -1;
  int64_t carry_bits = 0;
  for (int64_t base = 0; base < p.tiles; base += kThreads) {
    const int64_t t = base + threadIdx.x;
    const bool live = t < p.tiles;
    const int64_t last = live ? sd.last[t] : -1;
    int64_t before = -1;
    int64_t round_last = -1;
    SdScan(tmp).ExclusiveScan(last, before, SdMax{}, round_last);
    before = threadIdx.x == 0 ? carry_last : sd_max(before, carry_last);
    __syncthreads();
    int64_t bits = 0;
    if (live) {
      bits = sd.rest[t];
      const int64_t f = sd.first[t];
      if (f >= 0) bits += elias_len(p.code, static_cast<uint64_t>(f - sd_max(before, sd_chunk_floor(p, f))));
    }
    int64_t off = 0;
    int64_t round_bits = 0;
    SdScan(tmp).ExclusiveSum(bits, off, round_bits);
    __syncthreads();
    if (live) {
      sd.prev[t] = before;
      sd.off[t] = carry_bits + off;
    }
    carry_last = sd_max(carry_last, round_last);
    carry_bits += round_bits;
  }
  if (threadIdx.x == 0) {
    *sd.total = carry_bits;
    // Cannot happen (the worst case bounds every message); guards the stream buffer regardless.
    if (carry_bits > p.worst_bits) raise_status(status, gcompErrorInternal, static_cast<uint64_t>(p.n));
  }
}

/// Step 3a: the stream words start zeroed (the records are ORed in; the padding stays 0).
__global__ void __launch_bounds__(kThreads)
    sdither_zero_stream_kernel(SDitherParams p, uint8_t* payload, const DeviceStatus* status) {
  if (status_failed(status)) return;
  uint32_t* stream = sd_header(p, payload) + 1 + p.num_chunks;
  for (int64_t w = global_thread(); w < p.stream_words; w += grid_threads()) stream[w] = 0u;
}

/// Step 3b: records, directory, scales, T and the fused memory update (fuse: 0 none, 1 EF
/// e = p - v, 2 DIANA h = h + alpha v).
__global__ void __launch_bounds__(kThreads)
    sdither_write_kernel(SDitherParams p, Input in, const float* scales, gcomp::detail::RngKey key, SDitherTiles sd,
                         uint8_t* payload, gcomp::detail::FuseMode fuse, float* mem, float alpha,
                         const DeviceStatus* status) {
  using namespace gcomp::detail;
  __shared__ SdTemp tmp;
  if (status_failed(status)) return;
  float* out_scales = reinterpret_cast<float*>(payload);
  for (int64_t b = global_thread(); b < p.num_blocks; b += grid_threads()) out_scales[b] = scales[b];
  uint32_t* header = sd_header(p, payload);
  if (global_thread() == 0) header[0] = static_cast<uint32_t>(*sd.total);
  uint32_t* dir = header + 1;
  uint32_t* stream = dir + p.num_chunks;
  auto or_word = [stream](uint64_t w, uint32_t bits) {
    if (bits != 0u) atomicOr(stream + w, bits);
  };
  for (int64_t t = blockIdx.x; t < p.tiles; t += gridDim.x) {
    const int64_t begin = t * kSDitherTile;
    SdItems it;
    float v[kSDitherItems];
    sd_quantize_tile(p, in, scales, key, begin, fuse != gcomp::detail::FuseMode::kNone, tmp, it, v);
    const int64_t tile_before = sd.prev[t];
    int64_t before = -1;
    int64_t tile_last = -1;
    SdScan(tmp.scan).ExclusiveScan(sd_last_nonzero(it), before, SdMax{}, tile_last);
    before = threadIdx.x == 0 ? tile_before : sd_max(before, tile_before);
    __syncthreads();
    int64_t bits = 0;
    int64_t prev = before;
#pragma unroll
    for (int j = 0; j < kSDitherItems; ++j) {
      if (it.level[j] == 0u) continue;
      const int64_t i = it.i0 + j;
      bits += sdither_record_bits(p.code, static_cast<uint64_t>(i - sd_max(prev, sd_chunk_floor(p, i))), it.level[j],
                                  p.levels);
      prev = i;
    }
    int64_t off = 0;
    int64_t tile_bits = 0;
    SdScan(tmp.scan).ExclusiveSum(bits, off, tile_bits);
    __syncthreads();
    uint64_t pos = static_cast<uint64_t>(sd.off[t] + off);
    prev = before;
#pragma unroll
    for (int j = 0; j < kSDitherItems; ++j) {
      const int64_t i = it.i0 + j;
      if (i < p.n && i % p.chunk == 0) dir[i / p.chunk] = static_cast<uint32_t>(pos);
      if (it.level[j] == 0u) continue;
      const uint64_t gap = static_cast<uint64_t>(i - sd_max(prev, sd_chunk_floor(p, i)));
      pos =
          sdither_write_record_with(or_word, pos, p.code, gap, ((it.negative >> j) & 1u) != 0u, it.level[j], p.levels);
      prev = i;
    }
    if (fuse != gcomp::detail::FuseMode::kNone) {
      SdExchange(tmp.exchange).BlockedToStriped(v);
#pragma unroll
      for (int j = 0; j < kSDitherItems; ++j) {
        const int64_t i = begin + static_cast<int64_t>(j) * kThreads + threadIdx.x;
        if (i < p.n) mem[i] = fused_memory(fuse, fuse == gcomp::detail::FuseMode::kEF ? in(i) : mem[i], alpha, v[j]);
      }
    }
    __syncthreads();
  }
}

// ------------------------------------------------------------------------------------ decode

/// SDitherCodec::parse's payload-level checks: T <= Wbits, scales finite and >= +0, dir[0] = 0,
/// offsets non-decreasing and <= T, no records when n = 0, zero stream bits from T on.
/// Status index: index_base + the first element of the block / chunk, or + n.
__global__ void __launch_bounds__(kThreads)
    sdither_validate_header_kernel(SDitherParams p, const uint8_t* payload, uint64_t index_base, DeviceStatus* status) {
  using namespace gcomp::detail;
  const uint32_t* header = sd_header(p, payload);
  const uint32_t total = header[0];
  if (static_cast<int64_t>(total) > p.worst_bits || (p.num_chunks == 0 && total != 0u)) {
    if (global_thread() == 0) raise_status(status, gcompErrorCorruptPayload, index_base + static_cast<uint64_t>(p.n));
    return;
  }
  const float* scales = reinterpret_cast<const float*>(payload);
  for (int64_t b = global_thread(); b < p.num_blocks; b += grid_threads()) {
    if (!scale_ok(scales[b]))
      raise_status(status, gcompErrorCorruptPayload, index_base + static_cast<uint64_t>(p.blocks[b]));
  }
  const uint32_t* dir = header + 1;
  for (int64_t c = global_thread(); c < p.num_chunks; c += grid_threads()) {
    const bool bad = (c == 0 && dir[0] != 0u) || (c > 0 && dir[c] < dir[c - 1]) || dir[c] > total;
    if (bad) raise_status(status, gcompErrorCorruptPayload, index_base + static_cast<uint64_t>(c * p.chunk));
  }
  const uint32_t* stream = dir + p.num_chunks;
  const int64_t w0 = static_cast<int64_t>(total / 32u);
  for (int64_t w = w0 + global_thread(); w < p.stream_words; w += grid_threads()) {
    const uint32_t keep = (w == w0 && total % 32u != 0u) ? ((1u << (total % 32u)) - 1u) : 0u;
    if ((stream[w] & ~keep) != 0u)
      raise_status(status, gcompErrorCorruptPayload, index_base + static_cast<uint64_t>(p.n));
  }
}

/// Every chunk parses into whole records (sdither_walk_chunk), none in a block whose scale is 0.
/// Runs only when the header checks passed (the offsets are then within the stream).
__global__ void __launch_bounds__(kThreads)
    sdither_validate_chunks_kernel(SDitherParams p, const uint8_t* payload, uint64_t index_base, DeviceStatus* status) {
  using namespace gcomp::detail;
  if (status_failed(status)) return;
  const float* scales = reinterpret_cast<const float*>(payload);
  const uint32_t* header = sd_header(p, payload);
  const uint32_t* dir = header + 1;
  const uint32_t* stream = dir + p.num_chunks;
  for (int64_t c = global_thread(); c < p.num_chunks; c += grid_threads()) {
    const int64_t begin = c * p.chunk;
    const int64_t len = (p.n - begin < p.chunk ? p.n - begin : p.chunk);
    const uint64_t end = c + 1 < p.num_chunks ? dir[c + 1] : header[0];
    int64_t b = p.map.block_of(begin);
    const uint32_t st =
        sdither_walk_chunk(stream, dir[c], end, p.code, p.levels, len, [&](int64_t rel, bool, uint32_t level) {
          const int64_t i = begin + rel;
          while (i >= p.blocks[b + 1]) ++b;
          return sdither_record_ok(level, p.levels, scales[b]);
        });
    if (st != kSdOk) raise_status(status, gcompErrorCorruptPayload, index_base + static_cast<uint64_t>(begin));
  }
}

/// Decode of one validated payload, one thread per chunk: mode 0 out = v; otherwise
/// out = accumulate(from_zero ? 0 : out, weight, v) for every element (v = 0 between records).
__global__ void __launch_bounds__(kThreads)
    sdither_decode_kernel(SDitherParams p, const uint8_t* payload, float weight, int mode, bool from_zero, float* out,
                          const DeviceStatus* status) {
  using namespace gcomp::detail;
  if (status_failed(status)) return;
  const float* scales = reinterpret_cast<const float*>(payload);
  const uint32_t* header = sd_header(p, payload);
  const uint32_t* dir = header + 1;
  const uint32_t* stream = dir + p.num_chunks;
  auto put = [&](int64_t i, float v) { out[i] = mode == 0 ? v : accumulate(from_zero ? 0.0f : out[i], weight, v); };
  for (int64_t c = global_thread(); c < p.num_chunks; c += grid_threads()) {
    const int64_t begin = c * p.chunk;
    const int64_t end_elem = (p.n - begin < p.chunk ? p.n : begin + p.chunk);
    const uint64_t end = c + 1 < p.num_chunks ? dir[c + 1] : header[0];
    int64_t b = p.map.block_of(begin);
    int64_t next = begin;
    (void)sdither_walk_chunk(stream, dir[c], end, p.code, p.levels, end_elem - begin,
                             [&](int64_t rel, bool negative, uint32_t level) {
                               const int64_t i = begin + rel;
                               while (i >= p.blocks[b + 1]) ++b;
                               for (; next < i; ++next) put(next, 0.0f);
                               put(i, dither_value(level, negative, scales[b], p.levels));
                               next = i + 1;
                               return true;
                             });
    for (; next < end_elem; ++next) put(next, 0.0f);
  }
}

}  // namespace gcomp::cuda::detail
