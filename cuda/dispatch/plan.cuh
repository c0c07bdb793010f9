// SPDX-License-Identifier: Apache-2.0
// The device plan of one DeviceCodec (codec parameters, device tables) and its workspace carve-up,
// plus the launchers implemented by the per-family translation units. Layers (STYLE.md §5):
// DeviceCodec (argument checks) -> launchers here (pick kernels, carve workspace, launch, check)
// -> thin __global__ kernels -> block/warp helpers -> GCOMP_HD math of include/gcomp/detail.
#pragma once

#include "cuda/common/device_types.cuh"

#include <gcomp/codec.hpp>
#include <gcomp/detail/fused_memory.hpp>
#include <gcomp/detail/varlen.hpp>

#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>

namespace gcomp::cuda::detail {

/// Elements per selection tile of topk/randk (16 block-scan rounds of 256 threads).
inline constexpr int64_t kSelectTile = 4096;

/// sdither encode tiles: 256 threads x 16 consecutive elements (cuda/sdither/sdither_kernels.cuh).
inline constexpr int kSDitherItems = 16;
inline constexpr int64_t kSDitherTile = 256 * kSDitherItems;

/// sdither encode state in the workspace, one entry per tile (plus the stream total).
struct SDitherTiles {
  int64_t* last = nullptr;   ///< last nonzero element of the tile, -1 if none
  int64_t* first = nullptr;  ///< first nonzero element of the tile, -1 if none
  int64_t* rest = nullptr;   ///< record bits of the tile without the first record's gap code
  int64_t* prev = nullptr;   ///< last nonzero element before the tile, -1 if none
  int64_t* off = nullptr;    ///< stream bit offset of the tile's first record
  int64_t* total = nullptr;  ///< one value: T, the stream bits of the message
};

/// Bins of the first digit of the exact selection (the top 12 key bits), the largest histogram.
inline constexpr int kSelectBins = 4096;

/// Radix-select state (cuda/topk/radix_select.cuh), one per workspace.
struct SelectState {
  uint32_t prefix;  ///< the threshold key T, built digit by digit (exact mode)
  uint32_t mode;    ///< kSelectExact or kSelectTruncate
  int64_t k_rem;    ///< elements equal to T (exact) / at or above T (truncate) still to take
  uint32_t step;    ///< randk: the key stream (from the RngKey or the payload header)
  uint32_t rank;
  float thr;                      ///< topk_sampled: current magnitude threshold
  int32_t round;                  ///< topk_sampled: adaptation rounds done
  int32_t done;                   ///< topk_sampled: adaptation finished
  uint32_t path;                  ///< kPathCandidates or kPathFull: where the digits after the first are found
  unsigned long long count;       ///< topk_sampled: elements with |x| >= thr
  unsigned long long candidates;  ///< candidate path: keys compacted so far
};

/// Everything a launcher needs to know about the codec; plain data, passed by const reference.
struct DevicePlan {
  CodecId id = CodecId::kIdentity;
  uint32_t levels = 1;
  uint32_t norm = 2;
  double p = 2.0;
  double clip = 0.0;
  bool scaled = true;
  bool unbiased = true;
  int nbits = 1;
  int64_t n = 0;
  int64_t num_blocks = 0;                ///< quantization blocks (scales), dense and sign
  int64_t num_scales = 0;                ///< fp32 scales in the payload
  int64_t num_tiles = 0;                 ///< reduction tiles over all blocks
  int64_t groups = 0;                    ///< ceil(n / 32)
  int64_t k = 0;                         ///< topk/randk
  int index_bits = 0;                    ///< topk
  bool rice = false;                     ///< topk index=rice (cuda/topk/rice_kernels.cuh)
  uint32_t rice_b = 0;                   ///< index=rice: Rice parameter b
  int64_t rice_dir = 0;                  ///< index=rice: directory entries D
  int64_t rice_worst_bits = 0;           ///< index=rice: Wbits
  int64_t rice_words = 0;                ///< index=rice: W = ceil(Wbits / 32)
  size_t rice_scan_temp_bytes = 0;       ///< index=rice: CUB scan temp for k items
  gcomp::detail::VarlenLayout varlen{};  ///< length field and stream of a variable-length payload
  int64_t sel_tiles = 0;                 ///< ceil(n / kSelectTile): topk/randk selection tiles
  int64_t cand_cap = 0;                  ///< candidate buffer of the three-pass selection (n / 16 + 4096, at most n)
  size_t scan_temp_bytes = 0;
  int64_t sample_start = 0;  ///< topk_sampled (host-computed)
  int64_t sample_stride = 1;
  int64_t sample_count = 0;
  int64_t sample_k = 0;
  int64_t max_blocks = 1;  ///< grid cap: SM count * blocks per SM
  size_t payload_bytes = 0;

  // sdither (spec §5.2(a)), spherical (§5.2(b)), grid (§6.1)
  uint32_t code = 1;         ///< sdither: kEliasGamma or kEliasDelta
  int64_t chunk = 4096;      ///< sdither: elements per directory chunk
  int64_t num_chunks = 0;    ///< sdither: ceil(n / chunk)
  int64_t sd_tiles = 0;      ///< sdither: ceil(n / kSDitherTile) encode tiles
  int64_t worst_bits = 0;    ///< sdither: worst-case record bits (the stream buffer holds them)
  int64_t stream_words = 0;  ///< sdither: ceil(worst_bits / 32)
  uint32_t bits = 8;         ///< spherical: index bits B; grid: level bits B
  bool unscaled = false;     ///< spherical
  double step = 0.0;         ///< grid
  int64_t index_words = 0;   ///< spherical: ceil(m B / 32)
  int64_t num_betas = 0;     ///< spherical: distinct block lengths (table below)

  // device tables (owned by the DeviceCodec)
  BlockMap map{};
  const int64_t* blocks = nullptr;        ///< num_blocks + 1 element offsets
  const int64_t* block_tile = nullptr;    ///< num_blocks + 1 tile offsets
  const int64_t* tile_begin = nullptr;    ///< num_tiles first elements
  const int64_t* tile_block = nullptr;    ///< num_tiles owning blocks
  const int64_t* multi_blocks = nullptr;  ///< the blocks of more than one tile (phase 2 of the scales)
  int64_t num_multi_blocks = 0;
  const int64_t* beta_len = nullptr;  ///< spherical: num_betas distinct block lengths, ascending
  const double* beta_val = nullptr;   ///< spherical: beta(len, B) of each (host quadrature)
};

/// Pointers into the caller's workspace (a 256-byte aligned carve-up made by one planner).
struct Workspace {
  DeviceStatus* status = nullptr;
  float* scales = nullptr;      ///< num_blocks
  float* aux_f = nullptr;       ///< num_blocks (terngrad with clip: max |x|)
  double* aux_d = nullptr;      ///< num_blocks (terngrad with clip: mean)
  double* tile_vals = nullptr;  ///< num_tiles
  SelectState* select = nullptr;
  unsigned long long* hist = nullptr;  ///< kSelectBins digit counters
  uint32_t* cand_key = nullptr;        ///< cand_cap candidate keys (the first digit's bin)
  int64_t* cand_idx = nullptr;         ///< and their element indices
  int64_t* cnt_a = nullptr;            ///< sel_tiles each
  int64_t* cnt_b = nullptr;
  int64_t* off_a = nullptr;
  int64_t* off_b = nullptr;
  void* scan_temp = nullptr;    ///< scan_temp_bytes
  int64_t* idx = nullptr;       ///< k selected indices (topk)
  float* sample = nullptr;      ///< sample_count magnitudes (topk_sampled)
  SDitherTiles sd{};            ///< sdither: per-tile scan state (sd_tiles each)
  int64_t* rice_len = nullptr;  ///< topk index=rice: k code lengths (decode: group sums)
  int64_t* rice_off = nullptr;  ///< topk index=rice: k code offsets (decode: index before each group)
  void* rice_temp = nullptr;    ///< topk index=rice: rice_scan_temp_bytes
};

/// What the fused encode pass also updates (the shared enum of gcomp/detail/fused_memory.hpp).
using Fuse = gcomp::detail::FuseMode;

/// Decode flavours: overwrite (P = 1), accumulate onto out (P = 1), reduce (out = 0 first).
enum class DecodeMode { kOverwrite, kAccumulate, kReduce };

/// Dense and elementwise codecs (dither, terngrad, natdither, sign, natural, identity).
void launch_elementwise_encode(const DevicePlan& plan, const Workspace& ws, Input in, const RngKey& key,
                               uint8_t* d_payload, Fuse fuse, float* d_mem, float alpha, cudaStream_t stream);
void launch_elementwise_decode(const DevicePlan& plan, const Workspace& ws, const uint8_t* d_payloads, size_t stride,
                               int num_payloads, const float* h_weights, DecodeMode mode, float* d_out,
                               cudaStream_t stream);

/// topk and randk. `sampled` selects the DGC-style threshold path (topk only).
void launch_sparse_encode(const DevicePlan& plan, const Workspace& ws, Input in, const RngKey& key, uint8_t* d_payload,
                          Fuse fuse, float* d_mem, float alpha, bool sampled, cudaStream_t stream);
/// Decodes: `keys` holds num_payloads host keys (payload j's at keys[j]); randk reads them.
void launch_sparse_decode(const DevicePlan& plan, const Workspace& ws, const uint8_t* d_payloads, size_t stride,
                          int num_payloads, const float* h_weights, DecodeMode mode, const RngKey* keys, float* d_out,
                          cudaStream_t stream);

/// topk index=rice (cuda/dispatch/rice_launch.cu): the index stream of a payload whose values the
/// selection wrote and whose indices are in ws.idx; the validating decode of P payloads.
void launch_rice_pack(const DevicePlan& plan, const Workspace& ws, uint8_t* d_payload, cudaStream_t stream);
void launch_rice_decode(const DevicePlan& plan, const Workspace& ws, const uint8_t* d_payloads, size_t stride,
                        int num_payloads, const float* h_weights, DecodeMode mode, float* d_out, cudaStream_t stream);
/// Received payloads of sizes d_sizes at stride: the size rule, then the slot tails zeroed
/// (cuda/common/varlen_kernels.cuh, cuda/dispatch/rice_launch.cu).
void launch_prepare_received(const DevicePlan& plan, const Workspace& ws, uint8_t* d_payloads, size_t stride, int count,
                             const uint64_t* d_sizes, cudaStream_t stream);
/// CUB scan temp storage for the Rice code offsets of `items` indices (0 for none).
size_t query_rice_scan_temp_bytes(int64_t items);

/// sdither, spherical and grid (cuda/dispatch/coded_launch.cu).
void launch_coded_encode(const DevicePlan& plan, const Workspace& ws, Input in, const RngKey& key, uint8_t* d_payload,
                         Fuse fuse, float* d_mem, float alpha, cudaStream_t stream);
/// `keys`: num_payloads host keys (payload j's at keys[j]); spherical reads them.
void launch_coded_decode(const DevicePlan& plan, const Workspace& ws, const uint8_t* d_payloads, size_t stride,
                         int num_payloads, const float* h_weights, DecodeMode mode, const RngKey* keys, float* d_out,
                         cudaStream_t stream);
/// d_out[i] = codebook normal first + i (include/gcomp/detail/spherical.hpp), for the CPU==GPU test.
void launch_codebook_normals(const RngKey& key, uint64_t first, int64_t count, double* d_out, cudaStream_t stream);

/// Shared block scales (DeviceCodec::compute_scales / encode_with_scales; dither, terngrad,
/// natdither, sdither). launch_shared_scales: the scales encode() would use, computed by the same
/// launches into ws.scales, then copied to d_scales (num_blocks floats) unless the status word
/// reports an error. launch_encode_with_scales: the encode pass alone with the given d_scales,
/// after the input check (gcompErrorNonFinite) and the scale check (gcompErrorInvalidArgument).
void launch_shared_scales(const DevicePlan& plan, const Workspace& ws, Input in, float* d_scales, cudaStream_t stream);
void launch_encode_with_scales(const DevicePlan& plan, const Workspace& ws, Input in, const float* d_scales,
                               const RngKey& key, uint8_t* d_payload, cudaStream_t stream);
/// The sdither parts of the two (cuda/dispatch/coded_launch.cu): scales into ws.scales; the
/// message for given scales (no input or scale check).
void launch_coded_scales(const DevicePlan& plan, const Workspace& ws, Input in, cudaStream_t stream);
void launch_coded_encode_scaled(const DevicePlan& plan, const Workspace& ws, Input in, const float* scales,
                                const RngKey& key, uint8_t* d_payload, cudaStream_t stream);

/// CUB scan temp storage for `items` int64 values (queried once at construction).
size_t query_scan_temp_bytes(int64_t items);

}  // namespace gcomp::cuda::detail
