// SPDX-License-Identifier: Apache-2.0
/// @file sdither_decode.hpp
/// @brief One chunk of the sdither decode in one walk of its records (spec/ALGORITHMS.md §5.2(a),
/// docs/wire-format.md §3.7): the GPU decode kernel (cuda/sdither/sdither_kernels.cuh) runs it per
/// chunk, and the CPU tests run the same function against the codec (tests/unit/test_sdither.cpp).
#pragma once

#include <gcomp/detail/codec_math.hpp>
#include <gcomp/detail/elias.hpp>
#include <gcomp/detail/hd.hpp>
#include <gcomp/detail/payload_rules.hpp>

#include <cstdint>

namespace gcomp::detail {

/// Decodes the `len` >= 1 elements [begin, begin + len) of a chunk whose records are stream bits
/// [pos, end) of `words`, reading them once: sdither_walk_chunk parses each record by the format's
/// rules, the record is checked (sdither_record_ok: a level in 1 .. s, no record in a block whose
/// scale is 0) and only then put: put(i, v) for every element in increasing index order, v the
/// record's dither_value, 0 between records and after the last. `blocks` are the block offsets,
/// `scales` the block scales, `b` the block of element `begin`. Returns kSdOk when the chunk
/// parses into whole records ending at `end`, else the first problem; then the elements from the
/// offending record on (and the zeros just before it) were not put.
template <class Put>
GCOMP_HD uint32_t sdither_decode_chunk(const uint32_t* words, uint64_t pos, uint64_t end, uint32_t code,
                                       uint32_t levels, int64_t begin, int64_t len, const float* scales,
                                       const int64_t* blocks, int64_t b, Put&& put) {
  int64_t next = begin;
  const uint32_t st =
      sdither_walk_chunk(words, pos, end, code, levels, len, [&](int64_t rel, bool negative, uint32_t level) {
        const int64_t i = begin + rel;
        while (i >= blocks[b + 1]) ++b;
        if (!sdither_record_ok(level, levels, scales[b])) return false;
        for (; next < i; ++next) put(next, 0.0f);
        put(i, dither_value(level, negative, scales[b], levels));
        next = i + 1;
        return true;
      });
  if (st != kSdOk) return st;
  for (; next < begin + len; ++next) put(next, 0.0f);
  return kSdOk;
}

}  // namespace gcomp::detail
