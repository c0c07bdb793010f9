// SPDX-License-Identifier: Apache-2.0
// gcomp::cuda::DeviceCodec: argument checks at the boundary, the one workspace planner, the device
// block/tile tables, and the calls of the codec's device entry (DeviceCodecEntry, plan.cuh), which
// its registry descriptor names: nothing here lists codecs.
#include "cuda/common/cuda_check.cuh"
#include "cuda/dispatch/device_codec_access.hpp"
#include "cuda/dispatch/plan.cuh"
#include "host/codecs/registry.hpp"

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

using detail::Carver;
using detail::DecodeMode;
using detail::DeviceCodecEntry;
using detail::DeviceTables;
using detail::Fuse;
using detail::Input;
using detail::WorkspaceLayout;

constexpr size_t kAlign = Carver::kAlign;

// The device entry, shareable and block scales: the codec's registry entry (host/codecs/registry.hpp).
using gcomp::detail::codec_descriptor;
bool has_shareable_scales(CodecId id) { return codec_descriptor(id).shareable_scales; }
/// Codecs with fp32 block scales from the fixed-order reduction (block_reduce.cuh).
bool has_block_scales(const CodecSpec& spec) {
  auto* const scales = codec_descriptor(spec.id()).block_scales;
  return scales != nullptr && scales(spec);
}
std::string gpu_codec_names() {
  std::string s;
  for (const gcomp::detail::CodecDescriptor& d : gcomp::detail::codec_registry()) {
    if (d.device != nullptr) s += (s.empty() ? "" : ", ") + std::string(d.name);
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

/// The device entry of @p spec's codec. @throws gcompErrorNotSupported when it has none.
const DeviceCodecEntry& device_entry(const CodecSpec& spec) {
  const DeviceCodecEntry* const entry = codec_descriptor(spec.id()).device;
  GCOMP_EXPECTS(entry != nullptr, gcompErrorNotSupported,
                "DeviceCodec: no GPU kernels for codec '" + std::string(spec.name()) +
                    "' (GPU codecs: " + gpu_codec_names() + ")");
  return *entry;
}

template <class T>
T* part(void* base, size_t off) {
  return off == WorkspaceLayout::npos ? nullptr : reinterpret_cast<T*>(static_cast<uint8_t*>(base) + off);
}

}  // namespace

namespace detail {

size_t DevicePlanner::upload_tables(int64_t block, const std::vector<int64_t>& extra_a,
                                    const std::vector<int64_t>& extra_b) {
  DevicePlan& p = plan;
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
  tables_.reset(raw);
  GCOMP_CUDA_TRY(cudaMemcpy(raw, all.data(), all.size() * sizeof(int64_t), cudaMemcpyHostToDevice));
  GCOMP_CUDA_TRY(cudaStreamSynchronize(nullptr));
  const int64_t* d_tables = raw;
  p.map = BlockMap{d_tables + o_seg_off, d_tables + o_seg_block0, d_tables + o_seg_bsize, num_segments};
  p.blocks = d_tables + o_blocks;
  p.block_tile = d_tables + o_block_tile;
  p.tile_begin = d_tables + o_tile_begin;
  p.tile_block = d_tables + o_tile_block;
  p.multi_blocks = d_tables + o_multi;
  return o_extra;
}

}  // namespace detail

struct DeviceCodec::Impl {
  CodecSpec spec;
  Layout layout;
  const DeviceCodecEntry& entry;  ///< the codec's device path (its registry entry's `device`)
  size_t payload_bytes = 0;
  int64_t num_scales = 0;  ///< the CPU codec's num_scales()
  detail::DevicePlan plan;
  WorkspaceLayout wl;
  DeviceTables tables;  ///< the one allocation: block/tile tables (and spherical betas)

  Impl(const CodecSpec& s, const Layout& l) : spec(s), layout(l), entry(device_entry(s)) {
    GCOMP_EXPECTS(
        codec_descriptor(spec.id()).shareable_scales == (entry.scales != nullptr && entry.encode_scaled != nullptr),
        gcompErrorInternal,
        "DeviceCodec: the registry's shareable scales of '" + std::string(spec.name()) +
            "' disagree with its device entry");
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

  /// The common fields, then the codec's own (its entry's plan).
  void build_plan(const Codec& cpu) {
    detail::DevicePlan& p = plan;
    p.id = spec.id();
    p.n = layout.num_elems();
    p.groups = gcomp::detail::ceil_div(p.n, gcomp::detail::kGroupElems);
    p.payload_bytes = payload_bytes;
    int device = 0;
    int sms = 0;
    GCOMP_CUDA_TRY(cudaGetDevice(&device));
    GCOMP_CUDA_TRY(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device));
    p.max_blocks = static_cast<int64_t>(std::max(sms, 1)) * 8;
    detail::DevicePlanner planner(p, layout, cpu, tables);
    entry.plan(planner, spec);
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

  /// The status word, the block scales and their reduction tiles (registry `block_scales`), then
  /// the codec's own parts (its entry's workspace).
  void plan_workspace() {
    const detail::DevicePlan& p = plan;
    Carver c(sizeof(DeviceStatus));
    if (has_block_scales(spec)) {
      wl.scales = c.take(static_cast<size_t>(p.num_blocks) * sizeof(float));
      wl.tile_vals = c.take(static_cast<size_t>(p.num_tiles) * sizeof(double));
    }
    if (entry.workspace != nullptr) entry.workspace(p, wl, c);
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
    w.round_cnt = part<uint32_t>(base, wl.round_cnt);
    w.rice_len = part<int64_t>(base, wl.rice_len);
    w.rice_off = part<int64_t>(base, wl.rice_off);
    w.rice_temp = part<void>(base, wl.rice_temp);
    w.merge_starts = part<int64_t>(base, wl.merge_starts);
    w.scratch = part<void>(base, wl.scratch);
    w.sd = detail::SDitherScan{part<void>(base, wl.sd_state), part<unsigned>(base, wl.sd_next)};
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
  [[nodiscard]] bool reads_key() const { return entry.reads_key; }

  void check_vector(const char* what, const char* name, const void* ptr) const {
    GCOMP_EXPECTS(plan.n == 0 || ptr != nullptr, gcompErrorInvalidArgument,
                  std::string(what) + ": " + name + " is null");
    GCOMP_EXPECTS(reinterpret_cast<uintptr_t>(ptr) % 4 == 0, gcompErrorInvalidArgument,
                  std::string(what) + ": " + name + " must be 4-byte aligned");
  }

  /// The input x: not null, aligned to its stored element (4 bytes for fp32, 2 for the Session's
  /// bf16 / f16 gradient view, Input::src).
  void check_input(const char* what, const Input& in) const {
    const uint32_t bytes = gcomp::detail::src_bytes(in.src);
    GCOMP_EXPECTS(plan.n == 0 || in.x != nullptr, gcompErrorInvalidArgument, std::string(what) + ": input is null");
    GCOMP_EXPECTS(reinterpret_cast<uintptr_t>(in.x) % bytes == 0, gcompErrorInvalidArgument,
                  std::string(what) + ": input must be " + std::to_string(bytes) + "-byte aligned");
    GCOMP_EXPECTS(in.src == gcomp::detail::kSrcF32 || plan.loads_view, gcompErrorInternal,
                  std::string(what) + ": " + std::string(spec.name()) + " cannot load a gradient view");
  }

  /// fold_check: DevicePlan::fold_check for this call (the Session's EF/DIANA memory).
  void encode(const char* what, Input in, const RngKey& key, void* d_payload, Fuse fuse, float* d_mem, float alpha,
              bool sampled, void* d_workspace, size_t workspace_bytes, Stream stream, bool fold_check = false) const {
    check_input(what, in);
    check_vector(what, "payload", payload_bytes > 0 ? d_payload : nullptr);
    if (fuse != Fuse::kNone) check_vector(what, "memory", d_mem);
    const detail::Workspace w = begin_call(what, d_workspace, workspace_bytes, stream);
    auto* payload = static_cast<uint8_t*>(d_payload);
    if (!sampled && !fold_check) {
      entry.encode(plan, w, in, key, payload, fuse, d_mem, alpha, stream);
      return;
    }
    if (!sampled) {
      detail::DevicePlan p = plan;
      p.fold_check = true;
      entry.encode(p, w, in, key, payload, fuse, d_mem, alpha, stream);
      return;
    }
    detail::DevicePlan p = plan;
    p.fold_check = fold_check;
    p.sample_start = static_cast<int64_t>(gcomp::detail::philox_word(key, gcomp::detail::kStreamSelect, 0) %
                                          static_cast<uint64_t>(p.sample_stride));
    p.sample_count = gcomp::detail::ceil_div(p.n - p.sample_start, p.sample_stride);
    const double ks =
        std::ceil(static_cast<double>(p.k) / static_cast<double>(p.n) * static_cast<double>(p.sample_count));
    p.sample_k = std::clamp<int64_t>(static_cast<int64_t>(ks), 1, p.sample_count);
    entry.encode_sampled(p, w, in, key, payload, fuse, d_mem, alpha, stream);
  }

  void check_shareable(const char* what) const {
    GCOMP_EXPECTS(has_shareable_scales(plan.id), gcompErrorNotSupported,
                  std::string(what) + ": " + std::string(spec.name()) + " has no shareable scales (" +
                      shareable_codec_names() + " have)");
  }

  /// inf_on_error: a failed computation leaves +Inf in every scale instead of nothing (sharing).
  void compute_scales(Input in, float* d_scales, void* d_workspace, size_t workspace_bytes, Stream stream,
                      bool inf_on_error = false) const {
    const char* what = "compute_scales";
    check_shareable(what);
    check_input(what, in);
    check_vector(what, "scales", num_scales > 0 ? d_scales : nullptr);
    const detail::Workspace w = begin_call(what, d_workspace, workspace_bytes, stream);
    detail::launch_shared_scales(entry, plan, w, in, d_scales, inf_on_error, stream);
  }

  /// check_input = false: no non-finite pass over x, and a non-finite scale is gcompErrorNonFinite
  /// (the Session's max of compute_scales outputs, DeviceCodecAccess::encode_with_shared_scales).
  void encode_with_scales(Input in, const float* d_scales, const RngKey& key, void* d_payload, void* d_workspace,
                          size_t workspace_bytes, Stream stream, bool check_x = true) const {
    const char* what = "encode_with_scales";
    check_shareable(what);
    check_input(what, in);
    check_vector(what, "scales", num_scales > 0 ? d_scales : nullptr);
    check_vector(what, "payload", payload_bytes > 0 ? d_payload : nullptr);
    const detail::Workspace w = begin_call(what, d_workspace, workspace_bytes, stream);
    detail::launch_encode_with_scales(entry, plan, w, in, d_scales, key, static_cast<uint8_t*>(d_payload), check_x,
                                      stream);
  }

  /// `keys`: count host keys, payload j's at keys[j] (nullptr only for codecs that read none).
  void decode(const char* what, const void* d_payloads, size_t stride, int count, const float* h_weights,
              DecodeMode mode, const RngKey* keys, float* d_out, void* d_workspace, size_t workspace_bytes,
              Stream stream, const uint64_t* d_sizes = nullptr, const detail::SessionStep* step = nullptr) const {
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
    if (step != nullptr) {
      entry.decode_store(plan, w, payloads, stride, count, mode, keys, detail::SessionStore{*step}, d_out, stream);
      return;
    }
    entry.decode(plan, w, payloads, stride, count, h_weights, mode, keys, d_out, stream);
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
  impl_->compute_scales(Input{d_x}, d_scales, d_workspace, workspace_bytes, stream);
}

void DeviceCodec::encode_with_scales(const float* d_x, const float* d_scales, const RngKey& key, void* d_payload,
                                     void* d_workspace, size_t workspace_bytes, Stream stream) const {
  impl_->encode_with_scales(Input{d_x}, d_scales, key, d_payload, d_workspace, workspace_bytes, stream);
}

void DeviceCodec::encode(const float* d_x, const RngKey& key, void* d_payload, void* d_workspace,
                         size_t workspace_bytes, Stream stream) const {
  impl_->encode("encode", Input{d_x}, key, d_payload, Fuse::kNone, nullptr, 0.0f, false, d_workspace, workspace_bytes,
                stream);
}

void DeviceCodec::encode_ef(const float* d_p, float* d_e, const RngKey& key, void* d_payload, void* d_workspace,
                            size_t workspace_bytes, Stream stream) const {
  impl_->encode("encode_ef", Input{d_p}, key, d_payload, Fuse::kEF, d_e, 0.0f, false, d_workspace, workspace_bytes,
                stream);
}

void DeviceCodec::encode_diana(const float* d_g, float* d_h, float alpha, const RngKey& key, void* d_payload,
                               void* d_workspace, size_t workspace_bytes, Stream stream) const {
  detail::DeviceCodecAccess::encode_diana(*this, d_g, d_h, d_h, alpha, key, d_payload, d_workspace, workspace_bytes,
                                          stream);
}

namespace detail {

bool DeviceCodecAccess::forms_lincomb_cheaper(const DeviceCodec& k) { return k.impl_->plan.input_reads < 3; }

bool DeviceCodecAccess::loads_views(const DeviceCodec& k) { return k.impl_->plan.loads_view; }

namespace {

/// The kernels' input of source x (with a second operand y and its factors).
Input input_of(const Source& x, const float* y = nullptr, float a = 1.0f, float b = -1.0f) {
  return Input{static_cast<const float*>(x.data), y, a, b, x.src};
}

}  // namespace

void DeviceCodecAccess::encode(const DeviceCodec& k, const Source& x, const RngKey& key, void* d_payload,
                               void* d_workspace, size_t workspace_bytes, Stream stream, bool sampled) {
  GCOMP_EXPECTS(!sampled || k.impl_->entry.encode_sampled != nullptr, gcompErrorNotSupported,
                "topk_sampled: only the topk codec has a sampled-threshold path");
  k.impl_->encode(sampled ? "topk_sampled" : "encode", input_of(x), key, d_payload, Fuse::kNone, nullptr, 0.0f, sampled,
                  d_workspace, workspace_bytes, stream);
}

void DeviceCodecAccess::encode_ef_lincomb(const DeviceCodec& k, float a, const Source& x, float b, const float* d_y,
                                          float* d_e, const RngKey& key, void* d_payload, void* d_workspace,
                                          size_t workspace_bytes, Stream stream) {
  const DeviceCodec::Impl& m = *k.impl_;
  const char* what = "encode_ef_lincomb";
  GCOMP_EXPECTS(m.plan.n == 0 || (d_e != x.data && d_e != d_y), gcompErrorInvalidArgument,
                std::string(what) + ": e must not alias x or y");
  m.check_vector(what, "y", d_y);
  m.encode(what, input_of(x, d_y, a, b), key, d_payload, Fuse::kEF, d_e, 0.0f, false, d_workspace, workspace_bytes,
           stream, true);
}

void DeviceCodecAccess::encode_ef_unchecked(const DeviceCodec& k, const float* d_p, float* d_e, const RngKey& key,
                                            void* d_payload, void* d_workspace, size_t workspace_bytes, Stream stream) {
  const DeviceCodec::Impl& m = *k.impl_;
  const char* what = "encode_ef";
  GCOMP_EXPECTS(m.plan.n == 0 || d_e != d_p, gcompErrorInvalidArgument, std::string(what) + ": e must not alias p");
  m.encode(what, Input{d_p}, key, d_payload, Fuse::kEF, d_e, 0.0f, false, d_workspace, workspace_bytes, stream, true);
}

void DeviceCodecAccess::encode_diana(const DeviceCodec& k, const Source& g, const float* d_h, float* d_h_out,
                                     float alpha, const RngKey& key, void* d_payload, void* d_workspace,
                                     size_t workspace_bytes, Stream stream) {
  const DeviceCodec::Impl& m = *k.impl_;
  const char* what = "encode_diana";
  GCOMP_EXPECTS(m.plan.n == 0 || (g.data != d_h && g.data != d_h_out), gcompErrorInvalidArgument,
                std::string(what) + ": g must not alias h or h_out");
  m.check_vector(what, "h", d_h);
  m.check_vector(what, "h_out", d_h_out);
  if (d_h_out != d_h && m.entry.selected_memory && !m.entry.diana_full_memory && m.plan.n > 0)
    GCOMP_CUDA_TRY(
        cudaMemcpyAsync(d_h_out, d_h, static_cast<size_t>(m.plan.n) * sizeof(float), cudaMemcpyDeviceToDevice, stream));
  m.encode(what, input_of(g, d_h, 1.0f, -1.0f), key, d_payload, Fuse::kDiana, d_h_out, alpha, false, d_workspace,
           workspace_bytes, stream, d_h_out != d_h);
}

void DeviceCodecAccess::compute_shared_scales(const DeviceCodec& k, const Source& x, float* d_scales, void* d_workspace,
                                              size_t workspace_bytes, Stream stream) {
  k.impl_->compute_scales(input_of(x), d_scales, d_workspace, workspace_bytes, stream, true);
}

void DeviceCodecAccess::encode_with_shared_scales(const DeviceCodec& k, const Source& x, const float* d_scales,
                                                  const RngKey& key, void* d_payload, void* d_workspace,
                                                  size_t workspace_bytes, Stream stream) {
  k.impl_->encode_with_scales(input_of(x), d_scales, key, d_payload, d_workspace, workspace_bytes, stream, false);
}

}  // namespace detail

void DeviceCodec::topk_sampled(const float* d_x, const RngKey& key, void* d_payload, void* d_workspace,
                               size_t workspace_bytes, Stream stream) const {
  GCOMP_EXPECTS(impl_->entry.encode_sampled != nullptr, gcompErrorNotSupported,
                "topk_sampled: only the topk codec has a sampled-threshold path (this codec is '" +
                    std::string(impl_->spec.name()) + "')");
  impl_->encode("topk_sampled", Input{d_x}, key, d_payload, Fuse::kNone, nullptr, 0.0f, true, d_workspace,
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

namespace detail {

bool DeviceCodecAccess::has_decode_store(const DeviceCodec& codec) {
  return codec.impl_->entry.decode_store != nullptr;
}

void DeviceCodecAccess::check_step(const char* what, const DeviceCodec& codec, const SessionStep& step) {
  const DeviceCodec::Impl& impl = *codec.impl_;
  GCOMP_EXPECTS(impl.entry.decode_store != nullptr, gcompErrorInternal,
                std::string(what) + ": " + std::string(impl.spec.name()) + " has no fused decode store");
  const StoreKind k = step.kind;
  if (k == StoreKind::kScaleTwice || k == StoreKind::kVote || k == StoreKind::kDiana)
    impl.check_vector(what, "u", step.u);
  if (k == StoreKind::kMeanAdd || k == StoreKind::kDiana) {
    impl.check_vector(what, "y", step.y);
    impl.check_vector(what, "w", step.w);
  }
}

void DeviceCodecAccess::decode_reduce_store(const DeviceCodec& codec, void* d_payloads, size_t stride, int num_payloads,
                                            const uint64_t* d_sizes, const RngKey* h_keys, float* d_acc,
                                            const SessionStep& step, void* d_workspace, size_t workspace_bytes,
                                            Stream stream) {
  const char* what = "decode_reduce (fused store)";
  check_step(what, codec, step);
  codec.impl_->decode(what, d_payloads, stride, num_payloads, nullptr, DecodeMode::kReduce, h_keys, d_acc, d_workspace,
                      workspace_bytes, stream, d_sizes, &step);
}

void DeviceCodecAccess::decode_store(const DeviceCodec& codec, void* d_payload, const uint64_t* d_size,
                                     const RngKey& key, float* d_out, const SessionStep& step, void* d_workspace,
                                     size_t workspace_bytes, Stream stream) {
  const char* what = "decode (fused store)";
  check_step(what, codec, step);
  GCOMP_EXPECTS(step.kind == StoreKind::kScale, gcompErrorInternal, std::string(what) + ": only kScale overwrites");
  // A received message (d_size given) in a slot of the payload size rounded up to 4 bytes, as
  // decode_received's prepare_received.
  const size_t stride = (codec.impl_->payload_bytes + 3) / 4 * 4;
  codec.impl_->decode(what, d_payload, stride, 1, nullptr, DecodeMode::kOverwrite, &key, d_out, d_workspace,
                      workspace_bytes, stream, d_size, &step);
}

}  // namespace detail

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
