// SPDX-License-Identifier: Apache-2.0
// gcomp::cuda::DeviceCodec: argument checks at the boundary, the one workspace planner, the device
// block/tile tables, and dispatch to the launchers of cuda/dispatch/*_launch.cu.
#include "cuda/common/cuda_check.cuh"
#include "cuda/dispatch/plan.cuh"
#include "host/codecs/registry.hpp"
#include "host/codecs/spherical.hpp"

#include <gcomp/cuda.hpp>
#include <gcomp/detail/codec_math.hpp>
#include <gcomp/detail/elias.hpp>
#include <gcomp/detail/norms.hpp>
#include <gcomp/detail/reduce.hpp>
#include <gcomp/detail/rice.hpp>
#include <gcomp/detail/sparse.hpp>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

namespace gcomp::cuda {

namespace {

using detail::DecodeMode;
using detail::Fuse;
using detail::Input;

constexpr size_t kAlign = 256;

size_t align_up(size_t v) { return (v + kAlign - 1) / kAlign * kAlign; }

// Kernel family, shareable and block scales: the codec's registry entry (host/codecs/registry.hpp).
using gcomp::detail::codec_descriptor;
using gcomp::detail::GpuFamily;
bool is_sparse(CodecId id) { return codec_descriptor(id).gpu == GpuFamily::kSparse; }
bool is_dense(CodecId id) { return codec_descriptor(id).gpu == GpuFamily::kDense; }
/// sdither, spherical, grid: cuda/dispatch/coded_launch.cu.
bool is_coded(CodecId id) { return codec_descriptor(id).gpu == GpuFamily::kCoded; }
bool has_shareable_scales(CodecId id) { return codec_descriptor(id).shareable_scales; }
/// Codecs with fp32 block scales from the fixed-order reduction (block_reduce.cuh).
bool has_block_scales(const CodecSpec& spec) {
  auto* const scales = codec_descriptor(spec.id()).block_scales;
  return scales != nullptr && scales(spec);
}
std::string gpu_codec_names() {
  std::string s;
  for (const gcomp::detail::CodecDescriptor& d : gcomp::detail::codec_registry()) {
    if (d.gpu != GpuFamily::kNone) s += (s.empty() ? "" : ", ") + std::string(d.name);
  }
  return s;
}
std::string shareable_codec_names() {
  std::string s;
  for (const gcomp::detail::CodecDescriptor& d : gcomp::detail::codec_registry()) {
    if (d.shareable_scales) s += (s.empty() ? "" : ", ") + std::string(d.name);
  }
  return s;
}

/// Offsets of the workspace parts (npos: absent). Built once by plan_workspace; carve() turns them
/// into pointers, so the size query and the calls cannot drift apart (STYLE.md §7).
struct WorkspaceLayout {
  static constexpr size_t npos = ~size_t{0};
  size_t scales = npos, aux_f = npos, aux_d = npos, tile_vals = npos, select = npos;
  size_t cnt_a = npos, cnt_b = npos, off_a = npos, off_b = npos, scan_temp = npos, idx = npos, sample = npos;
  size_t hist = npos, cand_key = npos, cand_idx = npos;
  size_t sd_last = npos, sd_first = npos, sd_rest = npos, sd_prev = npos, sd_off = npos, sd_total = npos;
  size_t rice_len = npos, rice_off = npos, rice_temp = npos;
  size_t total = 0;
};

class Carver {
 public:
  explicit Carver(size_t start) : end_(start) {}
  size_t take(size_t bytes) {
    if (bytes == 0) return WorkspaceLayout::npos;
    const size_t off = align_up(end_);
    end_ = off + bytes;
    return off;
  }
  [[nodiscard]] size_t end() const { return align_up(end_); }

 private:
  size_t end_;
};

/// Owner of the device tables: a member, so a constructor that throws after the upload frees them.
struct DeviceFree {
  void operator()(int64_t* p) const noexcept { (void)cudaFree(p); }
};
using DeviceTables = std::unique_ptr<int64_t, DeviceFree>;

template <class T>
T* part(void* base, size_t off) {
  return off == WorkspaceLayout::npos ? nullptr : reinterpret_cast<T*>(static_cast<uint8_t*>(base) + off);
}

}  // namespace

struct DeviceCodec::Impl {
  CodecSpec spec;
  Layout layout;
  size_t payload_bytes = 0;
  int64_t num_scales = 0;  ///< the CPU codec's num_scales()
  detail::DevicePlan plan;
  WorkspaceLayout wl;
  DeviceTables tables;  ///< the one allocation: block/tile tables (and spherical betas)

  Impl(const CodecSpec& s, const Layout& l) : spec(s), layout(l) {
    GCOMP_EXPECTS(codec_descriptor(spec.id()).gpu != GpuFamily::kNone, gcompErrorNotSupported,
                  "DeviceCodec: no GPU kernels for codec '" + std::string(spec.name()) +
                      "' (GPU codecs: " + gpu_codec_names() + ")");
    const std::unique_ptr<Codec> cpu = make_codec(spec, layout);  // validates spec vs layout
    payload_bytes = cpu->encoded_bytes();
    num_scales = cpu->num_scales();
    build_plan(*cpu);
    plan_varlen(*cpu);
    plan_workspace();
  }

  ~Impl() = default;
  Impl(const Impl&) = delete;
  Impl& operator=(const Impl&) = delete;

  void build_plan(const Codec& cpu) {
    detail::DevicePlan& p = plan;
    p.id = spec.id();
    if (const auto* t = spec.options_if<TernGradOptions>()) p.clip = t->clip;
    if (const auto* s = spec.options_if<SignOptions>()) p.scaled = s->scaled;
    if (const auto* r = spec.options_if<RandKOptions>()) p.unbiased = r->unbiased;
    int64_t block = 0;  // quantization block of the dither family and sign (0: one per segment)
    if (is_dense(p.id) || p.id == CodecId::kSDither) {
      const DitherOptions q = gcomp::detail::dither_quantizer(spec);
      p.levels = q.levels;
      p.norm = static_cast<uint32_t>(q.norm);
      p.p = q.p;
      block = q.block;
    }
    if (const auto* s = spec.options_if<SignOptions>()) block = s->block;
    p.nbits = static_cast<int>(gcomp::detail::ceil_log2_u64(uint64_t{p.levels} + 1));
    p.n = layout.num_elems();
    p.groups = gcomp::detail::ceil_div(p.n, gcomp::detail::kGroupElems);
    p.payload_bytes = payload_bytes;
    int device = 0;
    int sms = 0;
    GCOMP_CUDA_TRY(cudaGetDevice(&device));
    GCOMP_CUDA_TRY(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device));
    p.max_blocks = static_cast<int64_t>(std::max(sms, 1)) * 8;

    if (is_sparse(p.id)) {
      p.k = gcomp::detail::sparse_k_of(spec, p.n);
      p.index_bits = static_cast<int>(gcomp::detail::ceil_log2_u64(static_cast<uint64_t>(p.n)));
      p.sel_tiles = gcomp::detail::ceil_div(p.n, detail::kSelectTile);
      p.cand_cap = std::min<int64_t>(p.n, p.n / 16 + 4096);
      p.scan_temp_bytes = p.sel_tiles > 0 ? detail::query_scan_temp_bytes(p.sel_tiles) : 0;
      const auto* const topk = spec.options_if<TopKOptions>();
      if (topk != nullptr && p.n > 0) plan_sample();
      if (topk != nullptr && topk->index == IndexCode::kRice) plan_rice(cpu);
      return;
    }
    if (is_coded(p.id)) {
      plan_coded(cpu, block);
      return;
    }
    const bool scaled_sign = p.id == CodecId::kSign && p.scaled;
    if (!is_dense(p.id) && !scaled_sign) return;
    upload_tables(block);
    p.num_scales = p.num_blocks;
  }

  /// sdither (§5.2(a)), spherical (§5.2(b)), grid (§6.1): sizes from the CPU codec's formulas.
  void plan_coded(const Codec& cpu, int64_t block) {
    detail::DevicePlan& p = plan;
    if (const auto* g = spec.options_if<GridOptions>()) {
      p.bits = g->level_bits;
      p.step = g->quantum;
      return;
    }
    if (const auto* s = spec.options_if<SphericalOptions>()) {
      p.bits = s->index_bits;
      p.norm = gcomp::detail::kNormL2;
      p.unscaled = s->unscaled;
      // beta(len, B) of every distinct block length (host quadrature, the CPU codec's cache).
      std::vector<int64_t> lens;
      const std::vector<int64_t> blocks = block_offsets(layout, s->dim);
      for (size_t b = 0; b + 1 < blocks.size(); ++b) lens.push_back(blocks[b + 1] - blocks[b]);
      std::sort(lens.begin(), lens.end());
      lens.erase(std::unique(lens.begin(), lens.end()), lens.end());
      std::vector<int64_t> betas(lens.size());
      for (size_t k = 0; k < lens.size(); ++k) {
        const double beta = gcomp::detail::cached_spherical_beta(lens[k], s->index_bits);
        std::memcpy(&betas[k], &beta, sizeof beta);
      }
      const size_t at = upload_tables(s->dim, lens, betas);
      p.num_betas = static_cast<int64_t>(lens.size());
      p.beta_len = tables.get() + at;
      p.beta_val = reinterpret_cast<const double*>(tables.get() + at + lens.size());
      p.num_scales = p.num_blocks;
      p.index_words = gcomp::detail::ceil_div(p.num_blocks * static_cast<int64_t>(s->index_bits), 32);
      return;
    }
    const SDitherOptions& sd = spec.options<SDitherOptions>();
    p.code = sd.code == EliasCode::kDelta ? gcomp::detail::kEliasDelta : gcomp::detail::kEliasGamma;
    p.chunk = sd.chunk;
    p.num_chunks = gcomp::detail::ceil_div(p.n, sd.chunk);
    p.sd_tiles = gcomp::detail::ceil_div(p.n, detail::kSDitherTile);
    upload_tables(block);
    p.num_scales = p.num_blocks;
    // encoded_bits() = 32 (m + 1 + D) + Wbits exactly (integers below 2^53).
    p.worst_bits = static_cast<int64_t>(cpu.encoded_bits()) - 32 * (p.num_blocks + 1 + p.num_chunks);
    p.stream_words = gcomp::detail::ceil_div(p.worst_bits, 32);
    GCOMP_EXPECTS(payload_bytes == static_cast<size_t>(4 * (p.num_blocks + 1 + p.num_chunks + p.stream_words)),
                  gcompErrorInternal, "DeviceCodec: sdither payload size disagrees with the CPU codec");
  }

  /// Short payloads (docs/wire-format.md §6): where the length field and the stream are, from the
  /// CPU codec (stream_offset = the used size of T = 0; its encoded_bits() is 8 stream_offset + Wbits).
  void plan_varlen(const Codec& cpu) {
    gcomp::detail::VarlenLayout& v = plan.varlen;
    v.full_bytes = payload_bytes;
    if (!cpu.variable_length()) return;
    v.variable = true;
    v.length_offset = cpu.length_prefix_bytes() - 4;
    v.stream_offset = cpu.used_bytes_for_length(0);
    v.worst_bits = static_cast<uint64_t>(cpu.encoded_bits()) - 8 * v.stream_offset;
    GCOMP_EXPECTS(gcomp::detail::varlen_used_bytes(v, v.worst_bits) == payload_bytes &&
                      cpu.used_bytes_for_length(v.worst_bits) == payload_bytes,
                  gcompErrorInternal, "DeviceCodec: variable-length sizes disagree with the CPU codec");
  }

  /// topk index=rice (docs/wire-format.md §3.4.1): the CPU codec's parameters and sizes.
  void plan_rice(const Codec& cpu) {
    detail::DevicePlan& p = plan;
    p.rice = true;
    p.rice_b = gcomp::detail::rice_param(p.n, p.k);
    p.rice_dir = gcomp::detail::rice_dir_entries(p.k);
    p.rice_worst_bits = static_cast<int64_t>(gcomp::detail::rice_worst_bits(p.n, p.k, p.rice_b));
    p.rice_words = gcomp::detail::ceil_div(p.rice_worst_bits, 32);
    p.rice_scan_temp_bytes = detail::query_rice_scan_temp_bytes(p.k);
    GCOMP_EXPECTS(
        payload_bytes == static_cast<size_t>(4 * (p.k + 1 + p.rice_dir + p.rice_words)) && cpu.variable_length(),
        gcompErrorInternal, "DeviceCodec: topk index=rice payload size disagrees with the CPU codec");
  }

  /// spec §4.4 sampling (synxlin): stride = ceil(n / max(ceil(0.01 n), ceil(2/rho)) / 32) * 32 + 1,
  /// lowered by 8 while n / stride is below the target; everything when n <= ceil(2/rho).
  void plan_sample() {
    detail::DevicePlan& p = plan;
    const double n = static_cast<double>(p.n);
    const double rho = static_cast<double>(p.k) / n;
    const double target = std::max(std::ceil(0.01 * n), std::ceil(2.0 / rho));
    int64_t stride = 1;
    if (n > std::ceil(2.0 / rho)) {
      stride = static_cast<int64_t>(std::ceil(n / target / 32.0)) * 32 + 1;
      while (stride > 8 && n / static_cast<double>(stride) < target) stride -= 8;
      stride = std::clamp<int64_t>(stride, 1, p.n);
    }
    p.sample_stride = stride;
    p.sample_start = 0;  // drawn per call from the RngKey (sample_start_for)
    // Sized for the largest sample (start 0); a call with start > 0 takes one or a few fewer.
    p.sample_count = gcomp::detail::ceil_div(p.n, stride);
    p.sample_k = 0;
  }

  /// Uploads the block/tile tables (and `extra_a`, `extra_b` after them); returns the offset of
  /// extra_a in the tables. The copy has completed when it returns (a pageable cudaMemcpy may
  /// return before its DMA does), so the kernels of any stream read the tables.
  size_t upload_tables(int64_t block, const std::vector<int64_t>& extra_a = {},
                       const std::vector<int64_t>& extra_b = {}) {
    detail::DevicePlan& p = plan;
    const std::vector<int64_t>& segs = layout.segments();
    const int64_t num_segments = static_cast<int64_t>(segs.size());
    std::vector<int64_t> seg_off(segs.size() + 1), seg_block0(segs.size()), seg_bsize(segs.size());
    std::vector<int64_t> blocks = block_offsets(layout, block);
    const int64_t m = static_cast<int64_t>(blocks.size()) - 1;
    int64_t running = 0;
    for (size_t s = 0; s < segs.size(); ++s) {
      seg_off[s] = layout.segment_offset(s);
      seg_block0[s] = running;
      const int64_t len = segs[s];
      seg_bsize[s] = len == 0 ? 1 : (block > 0 ? block : len);
      running += len == 0 ? 0 : gcomp::detail::ceil_div(len, seg_bsize[s]);
    }
    seg_off[segs.size()] = layout.num_elems();
    GCOMP_EXPECTS(running == m, gcompErrorInternal, "DeviceCodec: block table disagrees with block_offsets");
    std::vector<int64_t> block_tile(static_cast<size_t>(m) + 1);
    std::vector<int64_t> tile_begin, tile_block;
    for (int64_t b = 0; b < m; ++b) {
      block_tile[b] = static_cast<int64_t>(tile_begin.size());
      for (int64_t o = blocks[b]; o < blocks[b + 1]; o += gcomp::detail::kTileElems) {
        tile_begin.push_back(o);
        tile_block.push_back(b);
      }
    }
    block_tile[m] = static_cast<int64_t>(tile_begin.size());
    p.num_blocks = m;
    p.num_tiles = static_cast<int64_t>(tile_begin.size());
    std::vector<int64_t> multi;  // blocks of more than one tile: phase 2 of the scale reduction
    for (int64_t b = 0; b < m; ++b)
      if (block_tile[b + 1] - block_tile[b] > 1) multi.push_back(b);
    p.num_multi_blocks = static_cast<int64_t>(multi.size());

    std::vector<int64_t> all;
    auto append = [&all](const std::vector<int64_t>& v) {
      const size_t at = all.size();
      all.insert(all.end(), v.begin(), v.end());
      return at;
    };
    const size_t o_seg_off = append(seg_off), o_seg_block0 = append(seg_block0), o_seg_bsize = append(seg_bsize);
    const size_t o_blocks = append(blocks), o_block_tile = append(block_tile);
    const size_t o_tile_begin = append(tile_begin), o_tile_block = append(tile_block), o_multi = append(multi);
    const size_t o_extra = append(extra_a);
    append(extra_b);
    int64_t* raw = nullptr;
    GCOMP_CUDA_TRY(cudaMalloc(reinterpret_cast<void**>(&raw), all.size() * sizeof(int64_t)));
    tables.reset(raw);
    GCOMP_CUDA_TRY(cudaMemcpy(raw, all.data(), all.size() * sizeof(int64_t), cudaMemcpyHostToDevice));
    GCOMP_CUDA_TRY(cudaStreamSynchronize(nullptr));
    const int64_t* d_tables = raw;
    p.map = detail::BlockMap{d_tables + o_seg_off, d_tables + o_seg_block0, d_tables + o_seg_bsize, num_segments};
    p.blocks = d_tables + o_blocks;
    p.block_tile = d_tables + o_block_tile;
    p.tile_begin = d_tables + o_tile_begin;
    p.tile_block = d_tables + o_tile_block;
    p.multi_blocks = d_tables + o_multi;
    return o_extra;
  }

  void plan_workspace() {
    const detail::DevicePlan& p = plan;
    Carver c(sizeof(DeviceStatus));
    const auto m = static_cast<size_t>(p.num_blocks);
    if (has_block_scales(spec)) {
      wl.scales = c.take(m * sizeof(float));
      wl.tile_vals = c.take(static_cast<size_t>(p.num_tiles) * sizeof(double));
      if (p.id == CodecId::kTernGrad && p.clip > 0.0) {
        wl.aux_f = c.take(m * sizeof(float));
        wl.aux_d = c.take(m * sizeof(double));
      }
    }
    if (is_sparse(p.id) && p.n > 0) {
      const size_t tiles = static_cast<size_t>(p.sel_tiles);
      wl.select = c.take(sizeof(detail::SelectState));
      wl.hist = c.take(detail::kSelectBins * sizeof(unsigned long long));
      wl.cand_key = c.take(static_cast<size_t>(p.cand_cap) * sizeof(uint32_t));
      wl.cand_idx = c.take(static_cast<size_t>(p.cand_cap) * sizeof(int64_t));
      wl.cnt_a = c.take(tiles * sizeof(int64_t));
      wl.cnt_b = c.take(tiles * sizeof(int64_t));
      wl.off_a = c.take(tiles * sizeof(int64_t));
      wl.off_b = c.take(tiles * sizeof(int64_t));
      wl.scan_temp = c.take(p.scan_temp_bytes);
      if (p.id == CodecId::kTopK) {
        wl.idx = c.take(static_cast<size_t>(p.k) * sizeof(int64_t));
        wl.sample = c.take(static_cast<size_t>(p.sample_count) * sizeof(float));
      }
      if (p.rice) {
        wl.rice_len = c.take(static_cast<size_t>(p.k) * sizeof(int64_t));
        wl.rice_off = c.take(static_cast<size_t>(p.k) * sizeof(int64_t));
        wl.rice_temp = c.take(p.rice_scan_temp_bytes);
      }
    }
    if (p.id == CodecId::kSpherical) wl.idx = c.take(m * sizeof(int64_t));
    if (p.id == CodecId::kSDither) {
      const size_t tiles = static_cast<size_t>(p.sd_tiles) * sizeof(int64_t);
      wl.sd_last = c.take(tiles);
      wl.sd_first = c.take(tiles);
      wl.sd_rest = c.take(tiles);
      wl.sd_prev = c.take(tiles);
      wl.sd_off = c.take(tiles);
      wl.sd_total = c.take(sizeof(int64_t));
    }
    wl.total = c.end();
  }

  [[nodiscard]] detail::Workspace carve(void* base) const {
    detail::Workspace w;
    w.status = static_cast<DeviceStatus*>(base);
    w.scales = part<float>(base, wl.scales);
    w.aux_f = part<float>(base, wl.aux_f);
    w.aux_d = part<double>(base, wl.aux_d);
    w.tile_vals = part<double>(base, wl.tile_vals);
    w.select = part<detail::SelectState>(base, wl.select);
    w.hist = part<unsigned long long>(base, wl.hist);
    w.cand_key = part<uint32_t>(base, wl.cand_key);
    w.cand_idx = part<int64_t>(base, wl.cand_idx);
    w.cnt_a = part<int64_t>(base, wl.cnt_a);
    w.cnt_b = part<int64_t>(base, wl.cnt_b);
    w.off_a = part<int64_t>(base, wl.off_a);
    w.off_b = part<int64_t>(base, wl.off_b);
    w.scan_temp = part<void>(base, wl.scan_temp);
    w.idx = part<int64_t>(base, wl.idx);
    w.sample = part<float>(base, wl.sample);
    w.rice_len = part<int64_t>(base, wl.rice_len);
    w.rice_off = part<int64_t>(base, wl.rice_off);
    w.rice_temp = part<void>(base, wl.rice_temp);
    w.sd = detail::SDitherTiles{part<int64_t>(base, wl.sd_last), part<int64_t>(base, wl.sd_first),
                                part<int64_t>(base, wl.sd_rest), part<int64_t>(base, wl.sd_prev),
                                part<int64_t>(base, wl.sd_off),  part<int64_t>(base, wl.sd_total)};
    return w;
  }

  /// Boundary checks shared by every call; resets the status word on the stream.
  detail::Workspace begin_call(const char* what, void* d_workspace, size_t workspace_bytes, Stream stream) const {
    GCOMP_EXPECTS(d_workspace != nullptr, gcompErrorInvalidArgument, std::string(what) + ": workspace is null");
    GCOMP_EXPECTS(reinterpret_cast<uintptr_t>(d_workspace) % kAlign == 0, gcompErrorInvalidArgument,
                  std::string(what) + ": workspace must be 256-byte aligned");
    GCOMP_EXPECTS(workspace_bytes >= wl.total, gcompErrorWorkspaceTooSmall,
                  std::string(what) + ": workspace has " + std::to_string(workspace_bytes) + " bytes, needs " +
                      std::to_string(wl.total));
    auto* st = static_cast<uint8_t*>(d_workspace);
    GCOMP_CUDA_TRY(cudaMemsetAsync(st, 0, offsetof(DeviceStatus, index), stream));
    GCOMP_CUDA_TRY(cudaMemsetAsync(st + offsetof(DeviceStatus, index), 0xff, sizeof(uint64_t), stream));
    return carve(d_workspace);
  }

  /// randk regenerates its indices from the key, spherical its codebook.
  [[nodiscard]] bool reads_key() const { return plan.id == CodecId::kRandK || plan.id == CodecId::kSpherical; }

  void check_vector(const char* what, const char* name, const void* ptr) const {
    GCOMP_EXPECTS(plan.n == 0 || ptr != nullptr, gcompErrorInvalidArgument,
                  std::string(what) + ": " + name + " is null");
    GCOMP_EXPECTS(reinterpret_cast<uintptr_t>(ptr) % 4 == 0, gcompErrorInvalidArgument,
                  std::string(what) + ": " + name + " must be 4-byte aligned");
  }

  void encode(const char* what, Input in, const RngKey& key, void* d_payload, Fuse fuse, float* d_mem, float alpha,
              bool sampled, void* d_workspace, size_t workspace_bytes, Stream stream) const {
    check_vector(what, "input", in.x);
    check_vector(what, "payload", payload_bytes > 0 ? d_payload : nullptr);
    if (fuse != Fuse::kNone) check_vector(what, "memory", d_mem);
    const detail::Workspace w = begin_call(what, d_workspace, workspace_bytes, stream);
    auto* payload = static_cast<uint8_t*>(d_payload);
    if (is_sparse(plan.id)) {
      detail::DevicePlan p = plan;
      if (sampled) {
        p.sample_start = static_cast<int64_t>(gcomp::detail::philox_word(key, gcomp::detail::kStreamSelect, 0) %
                                              static_cast<uint64_t>(p.sample_stride));
        p.sample_count = gcomp::detail::ceil_div(p.n - p.sample_start, p.sample_stride);
        const double ks =
            std::ceil(static_cast<double>(p.k) / static_cast<double>(p.n) * static_cast<double>(p.sample_count));
        p.sample_k = std::clamp<int64_t>(static_cast<int64_t>(ks), 1, p.sample_count);
      }
      detail::launch_sparse_encode(p, w, in, key, payload, fuse, d_mem, alpha, sampled, stream);
    } else if (is_coded(plan.id)) {
      detail::launch_coded_encode(plan, w, in, key, payload, fuse, d_mem, alpha, stream);
    } else {
      detail::launch_elementwise_encode(plan, w, in, key, payload, fuse, d_mem, alpha, stream);
    }
  }

  void check_shareable(const char* what) const {
    GCOMP_EXPECTS(has_shareable_scales(plan.id), gcompErrorNotSupported,
                  std::string(what) + ": " + std::string(spec.name()) + " has no shareable scales (" +
                      shareable_codec_names() + " have)");
  }

  void compute_scales(const float* d_x, float* d_scales, void* d_workspace, size_t workspace_bytes,
                      Stream stream) const {
    const char* what = "compute_scales";
    check_shareable(what);
    check_vector(what, "input", d_x);
    check_vector(what, "scales", num_scales > 0 ? d_scales : nullptr);
    const detail::Workspace w = begin_call(what, d_workspace, workspace_bytes, stream);
    detail::launch_shared_scales(plan, w, Input{d_x, nullptr}, d_scales, stream);
  }

  void encode_with_scales(const float* d_x, const float* d_scales, const RngKey& key, void* d_payload,
                          void* d_workspace, size_t workspace_bytes, Stream stream) const {
    const char* what = "encode_with_scales";
    check_shareable(what);
    check_vector(what, "input", d_x);
    check_vector(what, "scales", num_scales > 0 ? d_scales : nullptr);
    check_vector(what, "payload", payload_bytes > 0 ? d_payload : nullptr);
    const detail::Workspace w = begin_call(what, d_workspace, workspace_bytes, stream);
    detail::launch_encode_with_scales(plan, w, Input{d_x, nullptr}, d_scales, key, static_cast<uint8_t*>(d_payload),
                                      stream);
  }

  /// `keys`: count host keys, payload j's at keys[j] (nullptr only for codecs that read none).
  void decode(const char* what, const void* d_payloads, size_t stride, int count, const float* h_weights,
              DecodeMode mode, const RngKey* keys, float* d_out, void* d_workspace, size_t workspace_bytes,
              Stream stream, const uint64_t* d_sizes = nullptr) const {
    check_vector(what, "output", d_out);
    GCOMP_EXPECTS(count >= 0, gcompErrorInvalidArgument, std::string(what) + ": negative payload count");
    GCOMP_EXPECTS(count == 0 || keys != nullptr || !reads_key(), gcompErrorInvalidArgument,
                  std::string(what) + ": " + std::string(spec.name()) +
                      " payloads are decoded with the key they were encoded with; pass one key per payload");
    if (count > 0) check_vector(what, "payload", payload_bytes > 0 ? d_payloads : nullptr);
    GCOMP_EXPECTS(
        count <= 1 || (stride >= payload_bytes && stride % 4 == 0), gcompErrorInvalidArgument,
        std::string(what) + ": payload stride must be a multiple of 4 and >= " + std::to_string(payload_bytes));
    const detail::Workspace w = begin_call(what, d_workspace, workspace_bytes, stream);
    const auto* payloads = static_cast<const uint8_t*>(d_payloads);
    if (d_sizes != nullptr && count > 0) {
      // Received messages: the size rule and zeroed slot tails first (the caller passed the
      // buffer as writable: decode_reduce with sizes).
      GCOMP_EXPECTS(
          stride % 4 == 0 && stride >= payload_bytes, gcompErrorInvalidArgument,
          std::string(what) + ": payload stride must be a multiple of 4 and >= " + std::to_string(payload_bytes));
      detail::launch_prepare_received(plan, w, const_cast<uint8_t*>(payloads), stride, count, d_sizes, stream);
    }
    if (is_sparse(plan.id))
      detail::launch_sparse_decode(plan, w, payloads, stride, count, h_weights, mode, keys, d_out, stream);
    else if (is_coded(plan.id))
      detail::launch_coded_decode(plan, w, payloads, stride, count, h_weights, mode, keys, d_out, stream);
    else
      detail::launch_elementwise_decode(plan, w, payloads, stride, count, h_weights, mode, d_out, stream);
  }
};

bool device_available(std::string* why) {
  int count = 0;
  const cudaError_t err = cudaGetDeviceCount(&count);
  if (err != cudaSuccess) {
    (void)cudaGetLastError();
    if (why != nullptr) *why = cudaGetErrorString(err);
    return false;
  }
  if (count == 0) {
    if (why != nullptr) *why = "no CUDA device";
    return false;
  }
  return true;
}

DeviceCodec::DeviceCodec(const CodecSpec& spec, const Layout& layout) : impl_(std::make_unique<Impl>(spec, layout)) {}
DeviceCodec::DeviceCodec(std::string_view spec, const Layout& layout) : DeviceCodec(CodecSpec::parse(spec), layout) {}
DeviceCodec::~DeviceCodec() = default;
DeviceCodec::DeviceCodec(DeviceCodec&&) noexcept = default;
DeviceCodec& DeviceCodec::operator=(DeviceCodec&&) noexcept = default;

const CodecSpec& DeviceCodec::spec() const { return impl_->spec; }
const Layout& DeviceCodec::layout() const { return impl_->layout; }
int64_t DeviceCodec::num_elems() const { return impl_->plan.n; }
size_t DeviceCodec::encoded_bytes() const { return impl_->payload_bytes; }
size_t DeviceCodec::workspace_bytes() const { return impl_->wl.total; }
int64_t DeviceCodec::num_scales() const { return impl_->num_scales; }

void DeviceCodec::compute_scales(const float* d_x, float* d_scales, void* d_workspace, size_t workspace_bytes,
                                 Stream stream) const {
  impl_->compute_scales(d_x, d_scales, d_workspace, workspace_bytes, stream);
}

void DeviceCodec::encode_with_scales(const float* d_x, const float* d_scales, const RngKey& key, void* d_payload,
                                     void* d_workspace, size_t workspace_bytes, Stream stream) const {
  impl_->encode_with_scales(d_x, d_scales, key, d_payload, d_workspace, workspace_bytes, stream);
}

void DeviceCodec::encode(const float* d_x, const RngKey& key, void* d_payload, void* d_workspace,
                         size_t workspace_bytes, Stream stream) const {
  impl_->encode("encode", Input{d_x, nullptr}, key, d_payload, Fuse::kNone, nullptr, 0.0f, false, d_workspace,
                workspace_bytes, stream);
}

void DeviceCodec::encode_ef(const float* d_p, float* d_e, const RngKey& key, void* d_payload, void* d_workspace,
                            size_t workspace_bytes, Stream stream) const {
  impl_->encode("encode_ef", Input{d_p, nullptr}, key, d_payload, Fuse::kEF, d_e, 0.0f, false, d_workspace,
                workspace_bytes, stream);
}

void DeviceCodec::encode_diana(const float* d_g, float* d_h, float alpha, const RngKey& key, void* d_payload,
                               void* d_workspace, size_t workspace_bytes, Stream stream) const {
  GCOMP_EXPECTS(impl_->plan.n == 0 || d_g != d_h, gcompErrorInvalidArgument, "encode_diana: g and h must not alias");
  impl_->check_vector("encode_diana", "h", d_h);
  impl_->encode("encode_diana", Input{d_g, d_h}, key, d_payload, Fuse::kDiana, d_h, alpha, false, d_workspace,
                workspace_bytes, stream);
}

void DeviceCodec::topk_sampled(const float* d_x, const RngKey& key, void* d_payload, void* d_workspace,
                               size_t workspace_bytes, Stream stream) const {
  GCOMP_EXPECTS(impl_->spec.id() == CodecId::kTopK, gcompErrorNotSupported,
                "topk_sampled: only the topk codec has a sampled-threshold path");
  impl_->encode("topk_sampled", Input{d_x, nullptr}, key, d_payload, Fuse::kNone, nullptr, 0.0f, true, d_workspace,
                workspace_bytes, stream);
}

void DeviceCodec::decode(const void* d_payload, const RngKey& key, float* d_out, void* d_workspace,
                         size_t workspace_bytes, Stream stream) const {
  impl_->decode("decode", d_payload, impl_->payload_bytes, 1, nullptr, DecodeMode::kOverwrite, &key, d_out, d_workspace,
                workspace_bytes, stream);
}

void DeviceCodec::decode_accumulate(const void* d_payload, const RngKey& key, float weight, float* d_out,
                                    void* d_workspace, size_t workspace_bytes, Stream stream) const {
  impl_->decode("decode_accumulate", d_payload, impl_->payload_bytes, 1, &weight, DecodeMode::kAccumulate, &key, d_out,
                d_workspace, workspace_bytes, stream);
}

void DeviceCodec::decode_reduce(const void* d_payloads, size_t stride, int num_payloads, const float* h_weights,
                                const RngKey* h_keys, float* d_out, void* d_workspace, size_t workspace_bytes,
                                Stream stream) const {
  impl_->decode("decode_reduce", d_payloads, stride, num_payloads, h_weights, DecodeMode::kReduce, h_keys, d_out,
                d_workspace, workspace_bytes, stream);
}

bool DeviceCodec::decode_reads_key() const { return impl_->reads_key(); }

void DeviceCodec::decode_reduce(void* d_payloads, size_t stride, int num_payloads, const uint64_t* d_sizes,
                                const float* h_weights, const RngKey* h_keys, float* d_out, void* d_workspace,
                                size_t workspace_bytes, Stream stream) const {
  GCOMP_EXPECTS(d_sizes != nullptr || num_payloads == 0, gcompErrorInvalidArgument, "decode_reduce: d_sizes is null");
  impl_->decode("decode_reduce", d_payloads, stride, num_payloads, h_weights, DecodeMode::kReduce, h_keys, d_out,
                d_workspace, workspace_bytes, stream, d_sizes);
}

void DeviceCodec::prepare_received(void* d_payloads, size_t stride, int num_payloads, const uint64_t* d_sizes,
                                   void* d_workspace, size_t workspace_bytes, Stream stream) const {
  GCOMP_EXPECTS(num_payloads >= 0, gcompErrorInvalidArgument, "prepare_received: negative payload count");
  if (num_payloads == 0) return;
  GCOMP_EXPECTS(d_payloads != nullptr && d_sizes != nullptr, gcompErrorInvalidArgument,
                "prepare_received: null payloads or sizes");
  GCOMP_EXPECTS(
      stride % 4 == 0 && stride >= impl_->payload_bytes, gcompErrorInvalidArgument,
      "prepare_received: payload stride must be a multiple of 4 and >= " + std::to_string(impl_->payload_bytes));
  const detail::Workspace w = impl_->begin_call("prepare_received", d_workspace, workspace_bytes, stream);
  detail::launch_prepare_received(impl_->plan, w, static_cast<uint8_t*>(d_payloads), stride, num_payloads, d_sizes,
                                  stream);
}

bool DeviceCodec::variable_length() const { return impl_->plan.varlen.variable; }

size_t DeviceCodec::length_field_offset() const {
  GCOMP_EXPECTS(impl_->plan.varlen.variable, gcompErrorNotSupported,
                std::string(impl_->spec.name()) + " payloads have a fixed size and no length field");
  return static_cast<size_t>(impl_->plan.varlen.length_offset);
}

size_t DeviceCodec::used_bytes_for_length(uint64_t length_field) const {
  const gcomp::detail::VarlenLayout& v = impl_->plan.varlen;
  if (!v.variable) return impl_->payload_bytes;
  GCOMP_EXPECTS(length_field <= v.worst_bits, gcompErrorCorruptPayload,
                "corrupt " + std::string(impl_->spec.name()) + " payload: length field " +
                    std::to_string(length_field) + " exceeds the worst case " + std::to_string(v.worst_bits));
  return static_cast<size_t>(gcomp::detail::varlen_used_bytes(v, length_field));
}

void codebook_normals(const RngKey& key, uint64_t first, int64_t count, double* d_out, Stream stream) {
  GCOMP_EXPECTS(count >= 0, gcompErrorInvalidArgument, "codebook_normals: negative count");
  GCOMP_EXPECTS(count == 0 || d_out != nullptr, gcompErrorInvalidArgument, "codebook_normals: output is null");
  GCOMP_EXPECTS(first < (uint64_t{1} << 50) && static_cast<uint64_t>(count) <= (uint64_t{1} << 50) - first,
                gcompErrorInvalidArgument, "codebook_normals: codebook indices must stay below 2^50");
  detail::launch_codebook_normals(key, first, count, d_out, stream);
}

gcompStatus_t read_status(const void* d_workspace, Stream stream, uint64_t* index) {
  GCOMP_EXPECTS(d_workspace != nullptr, gcompErrorInvalidArgument, "read_status: workspace is null");
  DeviceStatus h{};
  GCOMP_CUDA_TRY(cudaMemcpyAsync(&h, d_workspace, sizeof h, cudaMemcpyDeviceToHost, stream));
  GCOMP_CUDA_TRY(cudaStreamSynchronize(stream));
  if (index != nullptr) *index = h.index;
  return static_cast<gcompStatus_t>(h.code);
}

}  // namespace gcomp::cuda
