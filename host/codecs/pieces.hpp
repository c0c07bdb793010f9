// SPDX-License-Identifier: Apache-2.0
// How the CPU codecs split a buffer: pieces of kPieceElems elements (a multiple of 128, so a
// piece holds whole bit-plane groups of 32 and whole Philox groups of 4) run on the thread pool;
// a piece is processed in sub-ranges of kSubElems elements whose scratch stays in L1. The pieces
// depend on n only, never on the number of threads, so every result is bit-identical for any
// thread count (tests/unit/test_kernels.cpp checks 1, 2, 3 and 5 threads).
#pragma once

#include "host/codecs/internal.hpp"
#include "host/codecs/kernels.hpp"
#include "host/common/thread_pool.hpp"

#include <algorithm>
#include <functional>
#include <span>
#include <vector>

namespace gcomp::detail {

inline constexpr int64_t kPieceElems = int64_t{1} << 16;
inline constexpr int64_t kSubElems = 2048;
static_assert(kPieceElems % kSubElems == 0 && kSubElems % 128 == 0, "pieces hold whole groups");

inline int64_t num_pieces(int64_t n) { return ceil_div(n, kPieceElems); }

/// Largest staging buffer (bytes) an encode allocates to read x once (dense planes, natural):
/// glibc serves blocks below 32 MiB from its heap once one was freed, but maps larger ones afresh
/// on every call, and a page fault per 4 KiB then costs more than the pass over x that staging
/// saves (natural at 2^25 elements, 37.7 MB staged: 1.32 -> 1.41-1.45 ns per element). Larger
/// encodes keep their two passes.
inline constexpr int64_t kMaxStagingBytes = int64_t{30} << 20;

/// Runs f(begin, end) for every piece of [0, n): on the pool when n is large, else in order on
/// the calling thread.
template <class F>
void for_each_piece(int64_t n, F&& f) {
  const int64_t pieces = num_pieces(n);
  if (n < kParallelMinElems) {
    for (int64_t p = 0; p < pieces; ++p) f(p * kPieceElems, std::min(n, (p + 1) * kPieceElems));
    return;
  }
  parallel_for(pieces, [&](int64_t p) { f(p * kPieceElems, std::min(n, (p + 1) * kPieceElems)); });
}

/// Runs f(begin, end) for the sub-ranges of [begin, end).
template <class F>
void for_each_sub(int64_t begin, int64_t end, F&& f) {
  for (int64_t a = begin; a < end; a += kSubElems) f(a, std::min(end, a + kSubElems));
}

/// Output bytes from which a decode that overwrites its output writes it with streaming stores
/// (kernels::stream_copy): 4 x the per-core L2 (sysconf), within [4 MiB, 64 MiB]. Such an output
/// is out of the core's caches before its caller reads it anyway, and plain stores would first
/// read every line of it (on the development VM: 64 MiB of plain stores 11.9 ms, streaming 3.7 ms).
int64_t stream_min_bytes();

/// Tests: stream outputs from `bytes` on (0: every output), or back to the default (-1).
void set_stream_min_bytes(int64_t bytes);

/// The overwriting decode of out[0, n) by range(a, e, dst), which writes elements [a, e) to
/// dst[0, e - a), piece by piece on the pool: straight into out below stream_min_bytes(), else
/// through an L1 scratch and streaming stores.
template <class F>
void overwrite_pieces(int64_t n, float* out, F&& range) {
  if (4 * n < stream_min_bytes()) {
    for_each_piece(n, [&](int64_t begin, int64_t end) { range(begin, end, out + begin); });
    return;
  }
  for_each_piece(n, [&](int64_t begin, int64_t end) {
    alignas(64) float local[kSubElems];
    for_each_sub(begin, end, [&](int64_t a, int64_t e) {
      range(a, e, local);
      kernels::stream_copy(reinterpret_cast<const uint8_t*>(local), e - a, out + a);
    });
    kernels::stream_fence();  // before the pool hands the piece back
  });
}

/// Index of the block holding element i (blocks: start offsets and a final n).
inline int64_t block_of(const std::vector<int64_t>& blocks, int64_t i) {
  return static_cast<int64_t>(std::upper_bound(blocks.begin(), blocks.end(), i) - blocks.begin()) - 1;
}

/// Calls f(run_begin, run_end, block) for the parts of [begin, end) in one block each.
template <class F>
void for_each_run(const std::vector<int64_t>& blocks, int64_t begin, int64_t end, F&& f) {
  if (begin >= end) return;
  for (int64_t b = block_of(blocks, begin); begin < end; ++b) {
    const int64_t run_end = std::min(end, blocks[static_cast<size_t>(b) + 1]);
    f(begin, run_end, b);
    begin = run_end;
  }
}

/// Elements [begin, end) of an input that is not stored, written to dst[0, end - begin): the
/// source of Codec::encode_ef_from.
using ElementSource = Codec::Source;

/// The reduced value of every block [blocks[b], blocks[b + 1]) of x in the order of reduce.hpp:
/// tiles (kernels::reduce_tile) in parallel, then the halving tree over each block's tiles.
/// means[b] is the mean of block b for kCenteredSquareSum (else unused, may be empty).
/// on_tile (when given) runs on each tile [begin, end) right after its reduction, with the tile's
/// elements at `data` while they are in cache (a second use of x for the price of one read from
/// memory), on the tile's thread. With `source`, x is not read (it may be null): each tile is
/// produced by the source into an L1 scratch of kTileElems elements, reduced and handed to on_tile.
std::vector<double> reduce_blocks(const std::vector<int64_t>& blocks, const float* x, kernels::ReduceOp op,
                                  std::span<const double> means = {},
                                  const std::function<void(int64_t, int64_t, const float*)>* on_tile = nullptr,
                                  const ElementSource* source = nullptr);

/// Index of the first NaN or Inf in x[0, n), or -1 (parallel for large n).
int64_t find_nonfinite_parallel(const float* x, int64_t n);

}  // namespace gcomp::detail
