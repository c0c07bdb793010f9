// SPDX-License-Identifier: Apache-2.0
/// @file sdither_merge.hpp
/// @brief The element math of sdither's merged decode-reduce (cuda/sdither/sdither_merge_kernels.cuh):
/// a batch of P payloads decoded a group of chunks at a time, each payload's chunk walked once into
/// a staging slice of one byte per element (its level and sign), then the slices added element by
/// element in payload order, so that the output is read and written once per batch instead of once
/// per payload.
///
/// Per element the merge evaluates what the CPU codec's decode_reduce (and the per-payload chunk
/// walk, sdither_decode_chunk) evaluates, in the same order: v = dither_value(level, negative,
/// scale of the element's block in that payload, s), +0.0f between records, and the sum
/// accumulate(sum, weight_j, v) payload after payload, from +0.0f or from out. The same functions
/// run on the host (tests/unit/test_sdither_merge.cpp against the CPU codec's decode_reduce) and in
/// the kernel.
#pragma once

#include <gcomp/detail/codec_math.hpp>
#include <gcomp/detail/elias.hpp>
#include <gcomp/detail/hd.hpp>
#include <gcomp/detail/payload_rules.hpp>

#include <cstdint>

namespace gcomp::detail {

/// Bytes of one CTA's staging area (one byte per element and payload): a chunk of C elements
/// stages kSdStageBytes / C payloads at once.
inline constexpr int64_t kSdStageBytes = 32768;
/// Largest s a staging byte holds (level in bits 0-6, the sign in bit 7).
inline constexpr uint32_t kSdStageMaxLevels = 127;
/// Most payloads of one merge (the kernels' weight list: kMaxWeights).
inline constexpr int kSdMergeMaxPayloads = 64;

/// Payloads per merged batch for chunks of `chunk` elements and s = `levels`: how many staging
/// slices of `chunk` bytes fit kSdStageBytes, at most kSdMergeMaxPayloads; 0 when the merge does
/// not apply (s above kSdStageMaxLevels, or fewer than two slices fit): those keep the decode
/// payload after payload.
GCOMP_HD int sdither_merge_batch(int64_t chunk, uint32_t levels) {
  if (chunk < 1 || levels > kSdStageMaxLevels) return 0;
  const int64_t fit = kSdStageBytes / chunk;
  if (fit < 2) return 0;
  return fit < kSdMergeMaxPayloads ? static_cast<int>(fit) : kSdMergeMaxPayloads;
}

/// Walker threads of one CTA of the merge (the kernels' block size): one per (payload, chunk) walk.
inline constexpr int kSdMergeWalkers = 256;

/// Chunks per CTA of a merged batch of `count` (1 <= count <= sdither_merge_batch) payloads: as
/// many consecutive chunks as fit the staging area (count slices of the group's elements) with a
/// walker thread for each payload's walk of each chunk; at least 1. Short chunks thus share a
/// CTA (chunk 64, 8 payloads: 32 chunks, 2048 elements); the default chunk 4096 takes one.
GCOMP_HD int64_t sdither_merge_group(int64_t chunk, int count) {
  const int64_t by_stage = kSdStageBytes / (chunk * count);
  const int64_t by_walkers = kSdMergeWalkers / count;
  const int64_t g = by_stage < by_walkers ? by_stage : by_walkers;
  return g < 1 ? 1 : g;
}

/// The staging byte of a record (1 <= level <= kSdStageMaxLevels); 0 stands for no record.
GCOMP_HD uint8_t sdither_stage_item(uint32_t level, bool negative) {
  return static_cast<uint8_t>((level & 0x7fu) | (negative ? 0x80u : 0u));
}

/// The decoded value of a staging byte: +0.0f for no record, else dither_value of its level and
/// sign with `scale`, the scale of the element's block.
GCOMP_HD float sdither_stage_value(uint8_t item, float scale, uint32_t levels) {
  if (item == 0u) return 0.0f;
  return dither_value(item & 0x7fu, (item & 0x80u) != 0u, scale, levels);
}

/// Walks the records of one chunk of `len` >= 1 elements [begin, begin + len) (stream bits
/// [pos, end) of `words`) once, with the checks of sdither_decode_chunk (sdither_walk_chunk's
/// rules, then sdither_record_ok of each record), and writes each record's staging byte to
/// items[rel] (rel = index - begin < len). `items` must hold len zero bytes: elements without a
/// record are not written. `blocks`: block offsets, `scales` the payload's block scales, `b` the
/// block of element `begin`. Requires levels <= kSdStageMaxLevels. Returns kSdOk or the first
/// problem (then the items from the offending record on are not written).
GCOMP_HD uint32_t sdither_stage_chunk(const uint32_t* words, uint64_t pos, uint64_t end, uint32_t code, uint32_t levels,
                                      int64_t begin, int64_t len, const float* scales, const int64_t* blocks, int64_t b,
                                      uint8_t* items) {
  return sdither_walk_chunk(words, pos, end, code, levels, len, [&](int64_t rel, bool negative, uint32_t level) {
    const int64_t i = begin + rel;
    while (i >= blocks[b + 1]) ++b;
    if (!sdither_record_ok(level, levels, scales[b])) return false;
    items[rel] = sdither_stage_item(level, negative);
    return true;
  });
}

/// The sum of one element over `count` staged payloads in payload order: from `sum` (+0.0f for
/// the first batch of a reduce, else out), sum = accumulate(sum, weights[j], v_j) with v_j the
/// value of the byte items[j * stride] (sdither_stage_value). The element's block comes from
/// block_of(), called at its first record only; scale_at(j, b) is payload j's scale of block b.
template <class Weights, class BlockOf, class ScaleAt>
GCOMP_HD float sdither_merge_element(float sum, const uint8_t* items, int64_t stride, int count, const Weights& weights,
                                     const BlockOf& block_of, const ScaleAt& scale_at, uint32_t levels) {
  int64_t b = -1;
  for (int j = 0; j < count; ++j) {
    const uint8_t item = items[static_cast<int64_t>(j) * stride];
    float scale = 0.0f;
    if (item != 0u) {
      if (b < 0) b = block_of();
      scale = scale_at(j, b);
    }
    sum = accumulate(sum, weights[j], sdither_stage_value(item, scale, levels));
  }
  return sum;
}

}  // namespace gcomp::detail
