// SPDX-License-Identifier: Apache-2.0
// sdither (spec/ALGORITHMS.md §5.2(a)): the dither quantizer with the nonzeros sent as chunked
// Elias-coded records. Payload (docs/wire-format.md §3.7, host/codecs/sdither.cpp):
//   m f32 scales | u32 T | D u32 chunk offsets | W u32 record stream, zero padded to the worst case.
//
// Encode: the block scales (the l2 / l_inf pass of cuda/quant/block_reduce.cuh: one read of x),
// then two kernels of which only the second reads x:
//   1. sdither_init_kernel: the part that does not depend on x: CUB's tile state of the scan
//      (ScanTileState::InitializeStatus, one thread per tile, as CUB's own scan init kernel), the
//      tile counter, the scales into the payload and the W stream words zeroed (the records are
//      then stored or ORed in; the padding after T stays 0).
//   2. sdither_encode_kernel, ONE pass over x: tiles of kSDitherTile elements (one CUDA block, 16
//      consecutive elements per thread) in the order of a global tile counter. A tile quantizes its
//      elements once (dither_quantize4, the group form of dither's encode: the draws and levels of
//      dither, equal to dither_quantize with philox_word(key, 0, i)),
//      summarizes each thread's elements as an SDitherSpan (include/gcomp/detail/sdither_scan.hpp:
//      first and last nonzero, record bits without the first gap code) and scans the spans with
//      cub::BlockScan, the tile's prefix coming from its predecessors by decoupled look-back
//      (cub::TilePrefixCallbackOp over cub::ScanTileState; the combine SDitherCombine completes
//      the first gap of the right span with the last nonzero of the left one). Each thread then
//      knows the span of every element before its own: its first stream bit and the previous
//      nonzero. It writes its records through SDitherWordWriter (words inside its bit range with
//      plain stores, the at most two words shared with a neighbour with atomicOr into the zeroed
//      stream: OR commutes, so the words do not depend on the order), the directory entry of every
//      chunk start among its elements, and T (the last thread of the last tile); then, fused, the
//      EF or DIANA memory of its elements.
// Every kernel returns at once when the scale pass reported a non-finite input, so the payload and
// the memory stay untouched; no n-sized scratch (the tile state is a few words per tile).
//
// Decode, payload after payload, two kernels each: sdither_validate_header_kernel checks the
// header without walking the stream (T, scales, directory, padding), then sdither_decode_kernel
// reads the stream once: one thread per chunk runs sdither_walk_chunk
// (include/gcomp/detail/elias.hpp), the parser of the format's validation rules, and writes every
// element of the chunk (zeros between records) in increasing index order as the records pass the
// rules. As for the other one-pass decoders, a corrupt payload sets the status and leaves the
// output unspecified. A decode-reduce of several payloads runs the header kernels of a batch, then
// one merged walk of the batch (cuda/sdither/sdither_merge_kernels.cuh: the output read and
// written once per batch) where the chunk and s allow it (sdither_merge_batch).
#pragma once

#include "cuda/common/device_types.cuh"
#include <gcomp/detail/fused_memory.hpp>
#include "cuda/dispatch/plan.cuh"
#include "cuda/fused/decode_store.cuh"

#include <gcomp/detail/codec_math.hpp>
#include <gcomp/detail/payload_rules.hpp>
#include <gcomp/detail/elias.hpp>
#include <gcomp/detail/philox.hpp>
#include <gcomp/detail/sdither_decode.hpp>
#include <gcomp/detail/sdither_scan.hpp>

#include <cub/agent/single_pass_scan_operators.cuh>
#include <cub/block/block_exchange.cuh>
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

/// Payload parts (all 4-byte aligned: the payload is).
__device__ inline uint32_t* sd_header(const SDitherParams& p, uint8_t* payload) {
  return reinterpret_cast<uint32_t*>(payload + 4 * p.num_blocks);
}
__device__ inline const uint32_t* sd_header(const SDitherParams& p, const uint8_t* payload) {
  return reinterpret_cast<const uint32_t*>(payload + 4 * p.num_blocks);
}

/// The tile state of the encode's single-pass scan (its bytes: SdTileState::AllocationSize, in
/// the workspace as plan.sd_state_bytes) and the look-back that reads it.
using SdTileState = cub::ScanTileState<gcomp::detail::SDitherSpan, false>;
using SdPrefix = cub::TilePrefixCallbackOp<gcomp::detail::SDitherSpan, gcomp::detail::SDitherCombine, SdTileState>;

using SdExchange = cub::BlockExchange<float, kThreads, kSDitherItems>;
using SdSpanScan = cub::BlockScan<gcomp::detail::SDitherSpan, kThreads>;

/// Shared memory of the encode: the exchanges, or the scan with its look-back (CUB's agent keeps
/// the two scan parts side by side: the look-back runs inside the block scan).
struct SdTemp {
  union {
    typename SdExchange::TempStorage exchange;
    struct {
      typename SdPrefix::TempStorage prefix;
      typename SdSpanScan::TempStorage scan;
    } scan;
  };
  /// items[j][t]: element j of thread t (sdither_item: level and sign), read back by the
  /// thread's own record walk (conflict free; keeps the 16 levels out of registers)
  uint32_t items[kSDitherItems][kThreads];
  int tile;  ///< the tile this block took from the counter
};

/// Loads tile `begin` (coalesced, striped), transposes it to 16 consecutive elements per thread
/// (from i0 = begin + 16 tid) and quantizes them exactly as the CPU does, into items[j][tid]. With
/// a fuse mode, x[j] becomes what the memory update needs of item j: EF the new memory
/// fused_memory(kEF, x, -, v), DIANA the decoded value v (dither_value; 0 for level 0). A
/// __syncthreads follows the transpose (tmp.exchange is reusable on return). x may be the
/// Session's gradient view (Input::src: bf16 / f16 widened, NaN/Inf as +0 as they load): a uniform
/// branch to viewed_element, out of line, so the kernel is not instantiated twice (its code is
/// large) and the fp32 loads keep their form.
__device__ inline void sd_quantize_tile(const SDitherParams& p, Input in, const float* scales,
                                        const gcomp::detail::RngKey& key, int64_t begin, gcomp::detail::FuseMode fuse,
                                        float alpha, SdTemp& tmp, float (&x)[kSDitherItems]) {
  using namespace gcomp::detail;
  const int tid = static_cast<int>(threadIdx.x);
#pragma unroll
  for (int j = 0; j < kSDitherItems; ++j) {
    const int64_t i = begin + static_cast<int64_t>(j) * kThreads + tid;
    const bool view = in.src != gcomp::detail::kSrcF32;
    x[j] = i >= p.n ? 0.0f : (view ? viewed_element(in.x, in.y, in.a, in.b, in.src, i) : in(i));
  }
  SdExchange(tmp.exchange).StripedToBlocked(x);
  __syncthreads();
  const int64_t i0 = begin + static_cast<int64_t>(tid) * kSDitherItems;
  int64_t b = i0 < p.n ? p.map.block_of(i0) : 0;
#pragma unroll
  for (int g = 0; g < kSDitherItems / 4; ++g) {
    // i0 is a multiple of 16: the group of items 4g .. 4g + 3 is Philox block i0/4 + g, quantized
    // by the group form of dither's encode (dither_quantize4: single precision, equal to
    // dither_quantize); items past n are y = 0 (level 0).
    float y[4];
    float nu[4];
#pragma unroll
    for (int k = 0; k < 4; ++k) {
      const int64_t i = i0 + 4 * g + k;
      y[k] = 0.0f;
      nu[k] = 0.0f;
      if (i < p.n) {
        while (i >= p.blocks[b + 1]) ++b;
        y[k] = x[4 * g + k];
        nu[k] = scales[b];
      }
    }
    const Philox4x32 rnd = philox_block(key, kStreamElement, static_cast<uint64_t>(i0 >> 2) + g);
    Quantized q[4];
    dither_quantize4(y, nu, p.levels, rnd, q);
#pragma unroll
    for (int k = 0; k < 4; ++k) {
      const int j = 4 * g + k;
      tmp.items[j][tid] = sdither_item(q[k].level, q[k].negative);
      if (fuse != FuseMode::kNone) {
        const float v = dither_value(q[k].level, q[k].negative, nu[k], p.levels);
        x[j] = fuse == FuseMode::kEF ? fused_memory(FuseMode::kEF, x[j], alpha, v) : v;
      }
    }
  }
}

/// Step 1 (does not read x): the tile state (CUB's InitializeStatus: thread g initializes tile g,
/// so the grid covers the tiles), the tile counter, the scales into the payload and the stream
/// words zeroed.
__global__ void __launch_bounds__(kThreads)
    sdither_init_kernel(SDitherParams p, const float* scales, SdTileState state, unsigned* next_tile, uint8_t* payload,
                        const DeviceStatus* status) {
  if (status_failed(status)) return;
  state.InitializeStatus(static_cast<int>(p.tiles));
  if (global_thread() == 0) *next_tile = 0u;
  float* out_scales = reinterpret_cast<float*>(payload);
  for (int64_t b = global_thread(); b < p.num_blocks; b += grid_threads()) out_scales[b] = scales[b];
  uint32_t* stream = sd_header(p, payload) + 1 + p.num_chunks;
  for (int64_t w = global_thread(); w < p.stream_words; w += grid_threads()) stream[w] = 0u;
}

/// Step 2, the one pass over x: records, directory, T and the fused memory update (fuse: none,
/// EF e = p - v, DIANA mem = h + alpha v with h = in.y), tile by tile in counter order.
///
/// Forward progress of the look-back: a block takes its next tile from the counter (atomicAdd)
/// only after it has finished its previous one, and a tile's look-back waits only on tiles with
/// smaller numbers, which the counter handed out earlier, to blocks that were therefore already
/// running when it did (no assumption on the order in which the hardware starts blocks or on how
/// many are resident). Such a predecessor publishes its own aggregate (SetPartial, inside the
/// callback, before it looks back itself) after loading and quantizing its tile, which waits on
/// nothing; tile 0 publishes its inclusive prefix without waiting. So every wait ends. No block
/// leaves a taken tile unpublished: the status word is read once, before the first tile, and the
/// guard below skips writes, never the scan.
__global__ void __launch_bounds__(kThreads)
    sdither_encode_kernel(SDitherParams p, Input in, const float* scales, gcomp::detail::RngKey key, SdTileState state,
                          unsigned* next_tile, uint8_t* payload, gcomp::detail::FuseMode fuse, float* mem, float alpha,
                          DeviceStatus* status) {
  using namespace gcomp::detail;
  __shared__ SdTemp tmp;
  if (status_failed(status)) return;
  uint32_t* header = sd_header(p, payload);
  uint32_t* dir = header + 1;
  uint32_t* stream = dir + p.num_chunks;
  const SDitherCombine op{p.chunk, p.code};
  const int tiles = static_cast<int>(p.tiles);
  for (;;) {
    if (threadIdx.x == 0) tmp.tile = static_cast<int>(atomicAdd(next_tile, 1u));
    __syncthreads();
    const int t = tmp.tile;
    if (t >= tiles) return;  // the same t in every thread
    const int64_t begin = static_cast<int64_t>(t) * kSDitherTile;
    float v[kSDitherItems];
    sd_quantize_tile(p, in, scales, key, begin, fuse, alpha, tmp, v);
    const int64_t i0 = begin + static_cast<int64_t>(threadIdx.x) * kSDitherItems;
    const uint32_t(*items)[kThreads] = tmp.items;
    const auto item = [items](int j) { return items[j][threadIdx.x]; };  // this thread's own writes
    const SDitherSpan own = sdither_items_span<kSDitherItems>(i0, item, p.levels, op);
    // `before`: the span of every element before this thread's (all earlier tiles included).
    SDitherSpan before;
    if (t == 0) {
      SDitherSpan tile_span;
      SdSpanScan(tmp.scan.scan).ExclusiveScan(own, before, sdither_span_none(), op, tile_span);
      if (threadIdx.x == 0) state.SetInclusive(0, tile_span);
    } else {
      SdPrefix prefix(state, tmp.scan.prefix, op, t);
      SdSpanScan(tmp.scan.scan).ExclusiveScan(own, before, op, prefix);
    }
    __syncthreads();  // tmp is the exchange's again
    const int64_t lo = sdither_span_bits(before, op.chunk, op.code);
    const int64_t hi = sdither_span_bits(op(before, own), op.chunk, op.code);
    if (hi <= p.worst_bits) {
      auto store = [stream](uint64_t w, uint32_t bits) { stream[w] = bits; };
      auto or_word = [stream](uint64_t w, uint32_t bits) { atomicOr(stream + w, bits); };
      SDitherWordWriter<decltype(store), decltype(or_word)> out{store, or_word, static_cast<uint64_t>(lo),
                                                                static_cast<uint64_t>(hi)};
      (void)sdither_write_items<kSDitherItems>(
          out, [dir](int64_t c, uint64_t bit) { dir[c] = static_cast<uint32_t>(bit); }, i0, item, before, p.n, p.levels,
          op);
      out.flush();
      if (t == tiles - 1 && threadIdx.x == kThreads - 1) header[0] = static_cast<uint32_t>(hi);  // T
    } else {
      // Cannot happen (the worst case bounds every message); guards the stream buffer regardless.
      raise_status(status, gcompErrorInternal, static_cast<uint64_t>(p.n));
    }
    if (fuse != FuseMode::kNone) {
      SdExchange(tmp.exchange).BlockedToStriped(v);
#pragma unroll
      for (int j = 0; j < kSDitherItems; ++j) {
        const int64_t i = begin + static_cast<int64_t>(j) * kThreads + threadIdx.x;
        if (i < p.n) mem[i] = fuse == FuseMode::kEF ? v[j] : fused_memory(FuseMode::kDiana, in.y[i], alpha, v[j]);
      }
    }
    __syncthreads();  // tmp (and tmp.tile) reusable
  }
}

// ------------------------------------------------------------------------------------ decode

/// SDitherCodec::parse's payload-level checks: T <= Wbits, scales finite and >= +0, dir[0] = 0,
/// offsets non-decreasing and <= T, no records when n = 0, zero stream bits from T on.
/// Status index: index_base + the first element of the block / chunk, or + n. No walk of the
/// stream: sdither_decode_kernel (or the merged decode-reduce, sdither_merge_kernels.cuh) walks it
/// once, after this kernel. `walkable` (the merged decode-reduce's word, else null): lowered to
/// `slot` (atomicMin) when this payload's header fails or its check does not run because an
/// earlier error is set, so that the merge walks only the payloads before it.
__global__ void __launch_bounds__(kThreads)
    sdither_validate_header_kernel(SDitherParams p, const uint8_t* payload, uint64_t index_base, DeviceStatus* status,
                                   unsigned* walkable, unsigned slot) {
  using namespace gcomp::detail;
  const auto fail = [&](uint64_t at) {
    raise_status(status, gcompErrorCorruptPayload, index_base + at);
    if (walkable != nullptr) atomicMin(walkable, slot);
  };
  if (status_failed(status)) {  // an earlier payload (or the size rule) failed
    if (walkable != nullptr && threadIdx.x == 0) atomicMin(walkable, slot);
    return;
  }
  const uint32_t* header = sd_header(p, payload);
  const uint32_t total = header[0];
  if (static_cast<int64_t>(total) > p.worst_bits || (p.num_chunks == 0 && total != 0u)) {
    if (global_thread() == 0) fail(static_cast<uint64_t>(p.n));
    return;
  }
  const float* scales = reinterpret_cast<const float*>(payload);
  for (int64_t b = global_thread(); b < p.num_blocks; b += grid_threads()) {
    if (!scale_ok(scales[b])) fail(static_cast<uint64_t>(p.blocks[b]));
  }
  const uint32_t* dir = header + 1;
  for (int64_t c = global_thread(); c < p.num_chunks; c += grid_threads()) {
    const bool bad = (c == 0 && dir[0] != 0u) || (c > 0 && dir[c] < dir[c - 1]) || dir[c] > total;
    if (bad) fail(static_cast<uint64_t>(c * p.chunk));
  }
  const uint32_t* stream = dir + p.num_chunks;
  const int64_t w0 = static_cast<int64_t>(total / 32u);
  for (int64_t w = w0 + global_thread(); w < p.stream_words; w += grid_threads()) {
    const uint32_t keep = (w == w0 && total % 32u != 0u) ? ((1u << (total % 32u)) - 1u) : 0u;
    if ((stream[w] & ~keep) != 0u) fail(static_cast<uint64_t>(p.n));
  }
}

/// Decode of one payload in one walk per chunk, one thread per chunk: sdither_decode_chunk
/// (include/gcomp/detail/sdither_decode.hpp, the function the CPU tests run) checks the format's
/// rules on every record as sdither_walk_chunk reads it (whole records ending at the chunk's end,
/// levels <= s, none in a block whose scale is 0: sdither_record_ok), and the thread writes each
/// element once its record passed: mode 0 out = v; otherwise out = accumulate(from_zero ? 0 : out,
/// weight, v) for every element (v = 0 between records). A chunk that does not parse raises
/// gcompErrorCorruptPayload at index_base + its first element; what it (or any other chunk of the
/// payload) wrote is then unspecified (DeviceCodec::decode). Runs only when the header checks
/// passed (sdither_validate_header_kernel just before: the offsets are then within the stream)
/// and no earlier payload failed. The element is stored by `store` (cuda/fused/decode_store.cuh):
/// PlainStore writes out; the Session's SessionStore, given to the last payload's walk only,
/// applies its step to the element's sum (out of the payloads before it, read here) and writes
/// the step's outputs instead.
template <class Store>
__global__ void __launch_bounds__(kThreads)
    sdither_decode_kernel(SDitherParams p, const uint8_t* payload, uint64_t index_base, float weight, int mode,
                          bool from_zero, float* out, DeviceStatus* status, Store store) {
  using namespace gcomp::detail;
  if (status_failed(status)) return;
  const float* scales = reinterpret_cast<const float*>(payload);
  const uint32_t* header = sd_header(p, payload);
  const uint32_t* dir = header + 1;
  const uint32_t* stream = dir + p.num_chunks;
  auto put = [&](int64_t i, float v) {
    store_element(store, out, i, mode == 0 ? v : accumulate(from_zero ? 0.0f : out[i], weight, v));
  };
  for (int64_t c = global_thread(); c < p.num_chunks; c += grid_threads()) {
    const int64_t begin = c * p.chunk;
    const int64_t len = (p.n - begin < p.chunk ? p.n - begin : p.chunk);
    const uint64_t end = c + 1 < p.num_chunks ? dir[c + 1] : header[0];
    const uint32_t st = sdither_decode_chunk(stream, dir[c], end, p.code, p.levels, begin, len, scales, p.blocks,
                                             p.map.block_of(begin), put);
    // On a corrupt chunk the rest of it stays as it is: the output is unspecified.
    if (st != kSdOk) raise_status(status, gcompErrorCorruptPayload, index_base + static_cast<uint64_t>(begin));
  }
}

}  // namespace gcomp::cuda::detail
