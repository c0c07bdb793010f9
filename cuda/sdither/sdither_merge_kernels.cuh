// SPDX-License-Identifier: Apache-2.0
// sdither's merged decode-reduce: a batch of payloads decoded chunk by chunk, the output (and, for
// the last batch, the Session step's store, cuda/fused/decode_store.cuh) read and written once per
// batch instead of once per payload (docs/performance.md "Passes over memory, per operation").
//
// Before the launch, sdither_validate_header_kernel (sdither_kernels.cuh) checks every payload of
// the batch in order, and records in the word `walkable` the first payload whose header failed or
// whose check did not run (an earlier error): payloads from there on are not walked. Then one CTA
// per group of `group` consecutive chunks (sdither_merge_group: one chunk at the default 4096,
// several when they are short), grid-stride over the groups:
//   1. the staging area, one byte per element and payload (gcomp/detail/sdither_merge.hpp), zeroed:
//      payload j's slice of the group at j * (the group's elements);
//   2. every payload's walk of every chunk of the group at once, one thread per (payload, chunk)
//      (the walkers spread over the warps): sdither_stage_chunk, the parser and record checks of
//      the per-payload decode, writes each record's level and sign into the slice; a chunk that
//      does not parse raises gcompErrorCorruptPayload at (first + j) 2^40 + the chunk's first
//      element, the index the per-payload decode reports;
//   3. every element of the group summed over the slices in payload order
//      (sdither_merge_element: accumulate(from_zero ? 0 : out, w_j, v_j), the CPU codec's
//      roundings) and stored once through the Store functor. Skipped when a header failed (the
//      output is then unspecified, as after any corrupt payload: DeviceCodec::decode).
// The status index therefore names the first corrupt payload in rank order as the per-payload
// decode does: a walk of payload j < walkable lowers it below every index of later payloads. Each
// stream bit is read once; nothing is written outside the staging area (a walk writes items[rel]
// with rel < its chunk's length only) or outside out[begin, begin + the group's elements).
#pragma once

#include "cuda/common/device_types.cuh"
#include "cuda/fused/decode_store.cuh"
#include "cuda/sdither/sdither_kernels.cuh"

#include <gcomp/detail/sdither_merge.hpp>

namespace gcomp::cuda::detail {

static_assert(gcomp::detail::kSdMergeMaxPayloads <= kMaxWeights, "a batch's weights are one WeightList");
static_assert(gcomp::detail::kSdMergeWalkers == kThreads, "one walker thread per (payload, chunk)");
static_assert(gcomp::detail::kSdStageBytes % 4 == 0, "the staging area is zeroed in words");

/// The merged decode-reduce of `count` payloads (payloads + j stride, j < count <=
/// sdither_merge_batch(chunk, levels)), payload first + j of the call, `group` chunks per CTA
/// (sdither_merge_group); described above.
template <class Store>
__global__ void __launch_bounds__(kThreads)
    sdither_merge_kernel(SDitherParams p, const uint8_t* __restrict__ payloads, size_t stride, int count, int first,
                         int64_t group, WeightList weights, bool from_zero, const unsigned* __restrict__ walkable,
                         float* out, DeviceStatus* status, Store store) {
  using namespace gcomp::detail;
  __shared__ uint32_t stage_words[kSdStageBytes / 4];
  uint8_t* const stage = reinterpret_cast<uint8_t*>(stage_words);
  if (count < 1 || count > kSdMergeMaxPayloads || group < 1 || count * group > kThreads ||
      static_cast<int64_t>(count) * group * p.chunk > kSdStageBytes) {
    // Cannot happen (the launcher's batch and group); guards the staging area regardless.
    if (global_thread() == 0) raise_status(status, gcompErrorInternal, static_cast<uint64_t>(p.n));
    return;
  }
  const unsigned ok = *walkable;  // set by the header kernels, which ran before this launch
  const int live = ok < static_cast<unsigned>(count) ? static_cast<int>(ok) : count;
  const int tid = static_cast<int>(threadIdx.x);
  const int walker = (tid & 31) * kWarpsPerBlock + (tid >> 5);  // lane 0 of every warp first
  const int wj = walker % count;                                // its payload
  const int64_t wg = walker / count;                            // its chunk in the group
  const int64_t span = group * p.chunk;
  const int64_t groups = (p.num_chunks + group - 1) / group;
  for (int64_t grp = blockIdx.x; grp < groups; grp += gridDim.x) {
    const int64_t begin = grp * span;
    const int64_t len = p.n - begin < span ? p.n - begin : span;  // the group's elements
    // 1. The slices (len bytes each, payload after payload) zeroed.
    const int64_t words = (static_cast<int64_t>(count) * len + 3) / 4;
    for (int64_t w = tid; w < words; w += kThreads) stage_words[w] = 0u;
    __syncthreads();
    // 2. The walks of the group's chunks, one thread per payload and chunk.
    const int64_t c = grp * group + wg;
    if (wj < live && wg < group && c < p.num_chunks) {
      const uint8_t* pj = payloads + static_cast<size_t>(wj) * stride;
      const float* scales = reinterpret_cast<const float*>(pj);
      const uint32_t* header = sd_header(p, pj);
      const uint32_t* dir = header + 1;
      const uint32_t* words_j = dir + p.num_chunks;
      const int64_t cbegin = c * p.chunk;
      const int64_t clen = p.n - cbegin < p.chunk ? p.n - cbegin : p.chunk;
      const uint64_t end = c + 1 < p.num_chunks ? dir[c + 1] : header[0];
      const uint32_t st =
          sdither_stage_chunk(words_j, dir[c], end, p.code, p.levels, cbegin, clen, scales, p.blocks,
                              p.map.block_of(cbegin), stage + static_cast<int64_t>(wj) * len + wg * p.chunk);
      if (st != kSdOk)
        raise_status(status, gcompErrorCorruptPayload,
                     (static_cast<uint64_t>(first + wj) << 40) + static_cast<uint64_t>(cbegin));
    }
    __syncthreads();
    // 3. Each element summed over the payloads in order and stored once.
    if (live == count) {
      for (int64_t r = tid; r < len; r += kThreads) {
        const int64_t i = begin + r;
        const auto block_of = [&]() { return p.map.block_of(i); };
        const auto scale_at = [&](int j, int64_t b) {
          return reinterpret_cast<const float*>(payloads + static_cast<size_t>(j) * stride)[b];
        };
        const float sum = sdither_merge_element(from_zero ? 0.0f : out[i], stage + r, len, count, weights.w, block_of,
                                                scale_at, p.levels);
        store_element(store, out, i, sum);
      }
    }
    __syncthreads();  // the staging area is reused by the next group
  }
}

}  // namespace gcomp::cuda::detail
