// SPDX-License-Identifier: Apache-2.0
// The device plan of one DeviceCodec (codec parameters, device tables) and its workspace carve-up,
// plus the launchers implemented by the per-family translation units. Layers (STYLE.md §5):
// DeviceCodec (argument checks) -> launchers here (pick kernels, carve workspace, launch, check)
// -> thin __global__ kernels -> block/warp helpers -> GCOMP_HD math of include/gcomp/detail.
#pragma once

#include "cuda/common/device_types.cuh"
#include "cuda/fused/decode_store.cuh"

#include <gcomp/codec.hpp>
#include <gcomp/detail/fused_memory.hpp>
#include <gcomp/detail/varlen.hpp>

#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <vector>

namespace gcomp::cuda::detail {

/// Elements per selection tile of topk/randk (16 block-scan rounds of 256 threads).
inline constexpr int64_t kSelectTile = 4096;

/// sdither encode tiles: 256 threads x 16 consecutive elements (cuda/sdither/sdither_kernels.cuh).
inline constexpr int kSDitherItems = 16;
inline constexpr int64_t kSDitherTile = 256 * kSDitherItems;

/// sdither encode state in the workspace: CUB's tile state of the single-pass scan
/// (cub::ScanTileState of the spans, plan.sd_state_bytes from its AllocationSize) and the counter
/// that hands out the tiles in order (cuda/sdither/sdither_kernels.cuh).
struct SDitherScan {
  void* state = nullptr;
  unsigned* next_tile = nullptr;
};

/// Bins of the first digit of the exact selection (the top 12 key bits), the largest histogram.
inline constexpr int kSelectBins = 4096;

/// topk_sampled's adaptation rounds (spec §4.4), all counted in one pass over x: per tile, the ten
/// rounds' counts (each < 2^16) packed two per 32-bit word.
inline constexpr int kAdaptRounds = 10;
inline constexpr int kRoundWords = kAdaptRounds / 2;
static_assert(kAdaptRounds % 2 == 0 && kSelectTile < 65536, "two 16-bit round counts per word");

/// Radix-select state (cuda/topk/radix_select.cuh), one per workspace.
struct SelectState {
  uint32_t prefix;  ///< the threshold key T, built digit by digit (exact mode)
  uint32_t mode;    ///< kSelectExact or kSelectTruncate
  int64_t k_rem;    ///< elements equal to T (exact) / at or above T (truncate) still to take
  uint32_t step;    ///< randk: the key stream (from the RngKey or the payload header)
  uint32_t rank;
  float thr;                 ///< topk_sampled: current magnitude threshold
  int32_t round;             ///< topk_sampled: adaptation rounds done
  int32_t done;              ///< topk_sampled: adaptation finished
  uint32_t path;             ///< kPathCandidates or kPathFull: where the digits after the first are found
  unsigned long long count;  ///< topk_sampled: elements with |x| >= thr
  unsigned long long round_count[kAdaptRounds];  ///< topk_sampled: elements with |x| >= each round's thr
  unsigned long long candidates;                 ///< candidate path: keys compacted so far
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
  int merge_batch = 1;                   ///< topk, randk decode: payloads per tile-merge launch
  bool rice = false;                     ///< topk index=rice (cuda/topk/rice_kernels.cuh)
  uint32_t rice_b = 0;                   ///< index=rice: Rice parameter b
  int64_t rice_dir = 0;                  ///< index=rice: directory entries D
  int64_t rice_worst_bits = 0;           ///< index=rice: Wbits
  int64_t rice_words = 0;                ///< index=rice: W = ceil(Wbits / 32)
  size_t rice_scan_temp_bytes = 0;       ///< index=rice: CUB scan temp for k items
  size_t sd_state_bytes = 0;             ///< sdither: cub::ScanTileState::AllocationSize(sd_tiles)
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
  /// Full passes over the input of an EF encode (the scale or check pass and the encode pass: 2;
  /// topk 3, terngrad with clip 3; the exact top-k's fallback for many equal magnitudes reads more).
  /// The Session forms its p = a x + b y in every pass (8 B/el each) only below 3, where that reads
  /// less than storing p first (12 B/el, then 4 B/el per pass).
  int input_reads = 2;
  /// The Session's EF and DIANA encodes, whose memory is a second state buffer that a failed step
  /// drops: the encode pass itself reports a non-finite input (no check_finite_kernel pass first);
  /// the memory, like the payload, is then unspecified. The public DeviceCodec calls keep the check
  /// (their memory must stay untouched). Set on a copy of the plan per call.
  bool fold_check = false;
  /// Every encode kernel of the codec loads its input through load_input_quad, viewed_element or a
  /// view instantiation (the quad layout: identity, sign, natural, dither, natdither, terngrad, grid
  /// with bits 8, 16, 32; grid's other widths and spherical: kView kernels; sdither:
  /// viewed_element; topk: ViewMagnitudeKey in every pass; randk: its check pass and the scatter's
  /// gather), so its input may be the Session's gradient view (Input::src: bf16 / f16 widened,
  /// NaN/Inf as +0 on load). Set by the codec's plan (every device codec); DeviceCodec's encode
  /// refuses a view otherwise.
  bool loads_view = false;

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
  double own[4] = {};        ///< a codec's own parameters (set by its entry's plan; none uses them yet)

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
  void* scan_temp = nullptr;        ///< scan_temp_bytes
  int64_t* idx = nullptr;           ///< k selected indices (topk); decode: merge_batch lists of k (rice, randk)
  float* sample = nullptr;          ///< sample_count magnitudes (topk_sampled)
  uint32_t* round_cnt = nullptr;    ///< topk_sampled: sel_tiles x kRoundWords packed per-tile round counts
  SDitherScan sd{};                 ///< sdither: the encode's tile scan state and tile counter
  int64_t* rice_len = nullptr;      ///< topk index=rice: k code lengths (decode: group sums)
  int64_t* rice_off = nullptr;      ///< topk index=rice: k code offsets (decode: index before each group)
  void* rice_temp = nullptr;        ///< topk index=rice: rice_scan_temp_bytes
  int64_t* merge_starts = nullptr;  ///< topk, randk decode: merge_batch x (tiles + 1) per-tile entry offsets
  void* scratch = nullptr;          ///< a codec's own scratch (WorkspaceLayout::scratch)
};

/// What the fused encode pass also updates (the shared enum of gcomp/detail/fused_memory.hpp).
using Fuse = gcomp::detail::FuseMode;

/// Decode flavours: overwrite (P = 1), accumulate onto out (P = 1), reduce (out = 0 first).
enum class DecodeMode { kOverwrite, kAccumulate, kReduce };

/// topk index=rice (cuda/dispatch/rice_launch.cu): the index stream of a payload whose values the
/// selection wrote and whose indices are in ws.idx; the checks of P payloads (status word; payload
/// j's errors at j << 40); one checked payload's k indices into d_idx (nothing when the status is
/// set), for the tile merge of cuda/dispatch/sparse_launch.cu.
void launch_rice_pack(const DevicePlan& plan, const Workspace& ws, uint8_t* d_payload, cudaStream_t stream);
void launch_rice_validate(const DevicePlan& plan, const Workspace& ws, const uint8_t* d_payloads, size_t stride,
                          int num_payloads, cudaStream_t stream);
void launch_rice_indices(const DevicePlan& plan, const Workspace& ws, const uint8_t* d_payload, uint64_t base,
                         int64_t* d_idx, cudaStream_t stream);
/// Received payloads of sizes d_sizes at stride: the size rule, then the slot tails zeroed
/// (cuda/common/varlen_kernels.cuh, cuda/dispatch/rice_launch.cu).
void launch_prepare_received(const DevicePlan& plan, const Workspace& ws, uint8_t* d_payloads, size_t stride, int count,
                             const uint64_t* d_sizes, cudaStream_t stream);
/// CUB scan temp storage for the Rice code offsets of `items` indices (0 for none).
size_t query_rice_scan_temp_bytes(int64_t items);

/// d_out[i] = codebook normal first + i (include/gcomp/detail/spherical.hpp), for the CPU==GPU test.
void launch_codebook_normals(const RngKey& key, uint64_t first, int64_t count, double* d_out, cudaStream_t stream);

/// Offsets of the workspace parts in bytes (npos: absent). Built once by the planner of
/// cuda/dispatch/device_codec.cu (the common parts, then the codec entry's own); carving turns them
/// into the pointers of Workspace, so the size query and the calls cannot drift apart (STYLE.md §7).
struct WorkspaceLayout {
  static constexpr size_t npos = ~size_t{0};
  size_t scales = npos, aux_f = npos, aux_d = npos, tile_vals = npos, select = npos;
  size_t cnt_a = npos, cnt_b = npos, off_a = npos, off_b = npos, scan_temp = npos, idx = npos, sample = npos;
  size_t round_cnt = npos;
  size_t hist = npos, cand_key = npos, cand_idx = npos;
  size_t sd_state = npos, sd_next = npos;
  size_t rice_len = npos, rice_off = npos, rice_temp = npos, merge_starts = npos;
  size_t scratch = npos;  ///< a codec's own scratch (Workspace::scratch)
  size_t total = 0;
};

/// Lays out workspace parts one after another, each 256-byte aligned.
class Carver {
 public:
  static constexpr size_t kAlign = 256;
  explicit Carver(size_t start) : end_(start) {}
  /// Offset of a new part of @p bytes (npos for none).
  size_t take(size_t bytes) {
    if (bytes == 0) return WorkspaceLayout::npos;
    const size_t off = align_up(end_);
    end_ = off + bytes;
    return off;
  }
  [[nodiscard]] size_t end() const { return align_up(end_); }
  static size_t align_up(size_t v) { return (v + kAlign - 1) / kAlign * kAlign; }

 private:
  size_t end_;
};

/// Owner of the device tables: a member, so a constructor that throws after the upload frees them.
struct DeviceFree {
  void operator()(int64_t* p) const noexcept { (void)cudaFree(p); }
};
using DeviceTables = std::unique_ptr<int64_t, DeviceFree>;

/// What a codec entry's plan function builds on (implemented in cuda/dispatch/device_codec.cu):
/// the plan with its common fields set (id, n, groups, payload_bytes, max_blocks), the layout, the
/// CPU codec of the same spec (its sizes and formulas) and the upload of the device tables.
class DevicePlanner {
 public:
  DevicePlanner(DevicePlan& p, const Layout& l, const Codec& c, DeviceTables& t)
      : plan(p), layout(l), cpu(c), tables_(t) {}
  DevicePlan& plan;
  const Layout& layout;
  const Codec& cpu;
  /// Uploads the block/tile tables of blocks of @p block elements (0: one per segment; plan.map,
  /// blocks, block_tile, tile_begin, tile_block, multi_blocks, num_blocks, num_tiles), followed by
  /// @p extra_a and @p extra_b; returns the index of extra_a in tables(). The copy has completed
  /// when it returns (a pageable cudaMemcpy may return before its DMA does), so the kernels of
  /// any stream read the tables.
  size_t upload_tables(int64_t block, const std::vector<int64_t>& extra_a = {},
                       const std::vector<int64_t>& extra_b = {});
  /// The device tables (after upload_tables).
  [[nodiscard]] const int64_t* tables() const { return tables_.get(); }

 private:
  DeviceTables& tables_;
};

/// One GPU codec's device path. Its registry descriptor names it (host/codecs/registry.cpp,
/// `device`) and the codec's own launcher file defines it; DeviceCodec builds the plan, the
/// workspace and every launch from it alone (no list of codecs in cuda/dispatch).
struct DeviceCodecEntry {
  /// The codec's plan fields and tables (the common ones are set).
  void (*plan)(DevicePlanner& planner, const CodecSpec& spec);
  /// The codec's workspace parts after the common ones (the status word; with block scales
  /// (registry `block_scales`) scales and tile_vals); nullable.
  void (*workspace)(const DevicePlan& plan, WorkspaceLayout& wl, Carver& carver);
  /// encode / encode_ef / encode_diana (fuse), one payload.
  void (*encode)(const DevicePlan& plan, const Workspace& ws, Input in, const RngKey& key, uint8_t* d_payload,
                 Fuse fuse, float* d_mem, float alpha, cudaStream_t stream);
  /// Decodes `num_payloads` payloads `stride` bytes apart: overwrite, accumulate or the reduce in
  /// rank order; `keys` holds payload j's key at keys[j] (null only when !reads_key).
  void (*decode)(const DevicePlan& plan, const Workspace& ws, const uint8_t* d_payloads, size_t stride,
                 int num_payloads, const float* h_weights, DecodeMode mode, const RngKey* keys, float* d_out,
                 cudaStream_t stream);
  /// The decode with the Session's step in its final store (nullable; every codec has one): as
  /// `decode` with all weights 1 and mode kOverwrite or kReduce, the values of the last launch
  /// stored by `store` (cuda/fused/decode_store.cuh; d_out is the accumulator of the launches
  /// before the last).
  void (*decode_store)(const DevicePlan& plan, const Workspace& ws, const uint8_t* d_payloads, size_t stride,
                       int num_payloads, DecodeMode mode, const RngKey* keys, const SessionStore& store, float* d_out,
                       cudaStream_t stream) = nullptr;
  /// Shareable scales (registry `shareable_scales`): the block scales encode uses, into ws.scales.
  void (*scales)(const DevicePlan& plan, const Workspace& ws, Input in, cudaStream_t stream) = nullptr;
  /// Shareable scales: the message for the given device scales (the input and scale checks ran).
  void (*encode_scaled)(const DevicePlan& plan, const Workspace& ws, Input in, const float* d_scales, const RngKey& key,
                        uint8_t* d_payload, cudaStream_t stream) = nullptr;
  /// DeviceCodec::topk_sampled: the encode with a sampled threshold (nullable; topk).
  void (*encode_sampled)(const DevicePlan& plan, const Workspace& ws, Input in, const RngKey& key, uint8_t* d_payload,
                         Fuse fuse, float* d_mem, float alpha, cudaStream_t stream) = nullptr;
  /// The decode reads the payload's key (randk indices, spherical codebook).
  bool reads_key = false;
  /// The fused memory update writes the selected elements only (topk, randk: the others keep
  /// their memory). A DIANA encode into a separate output h_out copies h there first; the dense
  /// codecs write every element of h_out from h = in.y in their encode pass.
  bool selected_memory = false;
  /// With selected_memory: a DIANA encode into a separate h_out (DevicePlan::fold_check) writes
  /// every element of h_out in its scatter pass, the unselected ones from h = in.y, which that pass
  /// already loads for its keys (topk: |g - h|): no copy of h first.
  bool diana_full_memory = false;
};

/// Shared block scales (DeviceCodec::compute_scales / encode_with_scales, codecs whose entry has
/// `scales`): launch_shared_scales computes the scales encode() would use by the same launches
/// into ws.scales, then copies them to d_scales (num_blocks floats) unless the status word reports
/// an error (then d_scales is untouched, or all +Inf with inf_on_error: the Session's sharing).
/// launch_encode_with_scales: the input check (gcompErrorNonFinite; check_input only) and the
/// scale check (a negative scale gcompErrorInvalidArgument; a non-finite one the same, or without
/// check_input gcompErrorNonFinite), then the entry's encode_scaled with the given d_scales.
void launch_shared_scales(const DeviceCodecEntry& entry, const DevicePlan& plan, const Workspace& ws, Input in,
                          float* d_scales, bool inf_on_error, cudaStream_t stream);
void launch_encode_with_scales(const DeviceCodecEntry& entry, const DevicePlan& plan, const Workspace& ws, Input in,
                               const float* d_scales, const RngKey& key, uint8_t* d_payload, bool check_input,
                               cudaStream_t stream);

/// CUB scan temp storage for `items` int64 values (queried once at construction).
size_t query_scan_temp_bytes(int64_t items);

}  // namespace gcomp::cuda::detail
