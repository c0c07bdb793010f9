// SPDX-License-Identifier: Apache-2.0
/// @file cuda.hpp
/// @brief GPU codecs: the CUDA implementation of every CPU reference codec (codec.hpp).
///
/// A DeviceCodec is built from the same (CodecSpec, Layout) as the CPU codec and produces
/// byte-identical payloads for the same RngKey, and bit-identical decodes (docs/gpu.md). It is
/// host-compiler clean: no CUDA header is needed to include it; the stream is the runtime's
/// `cudaStream_t` (`CUstream_st*`), forward-declared here.
///
/// Every operation is enqueue-only on the given stream: no allocation, no host synchronization,
/// so a sequence of calls can be captured in a CUDA graph. Scratch memory comes from the caller:
/// a device buffer of at least workspace_bytes() bytes, 256-byte aligned (any cudaMalloc pointer).
///
/// Errors:
///  - argument, configuration and launch errors throw gcomp::Error at the call (gcompErrorInvalidArgument,
///    gcompErrorWorkspaceTooSmall, gcompErrorCuda with the CUDA error string);
///  - data errors (NaN/Inf in the input of an encode, a corrupt payload in a decode) cannot be seen by
///    the host without a sync. They are written to the device status word at the start of the
///    workspace (see DeviceStatus); read_status() syncs the stream and returns it. What the outputs
///    hold then: the EF/DIANA memories are always untouched. The payload of an encode is untouched,
///    except for plain sign, natural, identity and grid, whose one pass over the input checks as
///    it writes: their payload is then unspecified (it must not be sent). The output of a decode is
///    unspecified for dither, terngrad, natdither, sign, natural, identity, grid and sdither, whose
///    decode reads each payload once and validates as it decodes; the other codecs validate first
///    and leave it untouched. Either way the status word reports the error, and the next call
///    resets it.
///
/// @code
///   gcomp::Layout layout({4096, 1000});
///   gcomp::cuda::DeviceCodec codec("dither:levels=4,block=512", layout);
///   void* d_payload; void* d_ws;
///   cudaMalloc(&d_payload, codec.encoded_bytes());
///   cudaMalloc(&d_ws, codec.workspace_bytes());
///   codec.encode(d_x, key, d_payload, d_ws, codec.workspace_bytes(), stream);   // enqueue only
///   if (gcomp::cuda::read_status(d_ws, stream) != gcompSuccess) { ... }          // syncs
/// @endcode
///
/// Thread safety: a DeviceCodec is immutable after construction; calls on different streams with
/// different workspaces may run concurrently. Calls that share a workspace must be stream-ordered.
#pragma once

#include <gcomp/codec.hpp>
#include <gcomp/gcomp.h>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

struct CUstream_st;

namespace gcomp::cuda {

/// The CUDA runtime stream type (`cudaStream_t`); nullptr is the legacy default stream.
using Stream = CUstream_st*;

namespace detail {
struct DeviceCodecAccess;  // the Session's fused encode and decode paths (cuda/dispatch/device_codec_access.hpp)
}  // namespace detail

/// Layout of the device status word at byte 0 of every workspace. Every public call resets it on
/// its stream first; kernels set `code` once (first error wins) and lower `index` to the smallest
/// element index involved (the first element of the offending block for block-scaled codecs; the
/// payload element or group for corrupt payloads; payload number * 2^40 + position in decode_reduce).
struct DeviceStatus {
  uint32_t code;      ///< gcompStatus_t: gcompSuccess, gcompErrorNonFinite, gcompErrorCorruptPayload, or
                      ///< gcompErrorInvalidArgument (encode_with_scales: a negative or non-finite scale)
  uint32_t reserved;  ///< zero
  uint64_t index;     ///< UINT64_MAX when no error
};

/// True when the runtime sees at least one CUDA device; otherwise `why` (if given) gets the reason
/// (the CUDA error string, or "no CUDA device").
bool device_available(std::string* why = nullptr);

/// GPU codec for one (CodecSpec, Layout). Construction uploads the block/tile tables to the
/// current device (the one allocation it makes) and sizes the workspace; it is movable, not
/// copyable, and must be destroyed while its device context is alive.
class DeviceCodec {
 public:
  /// @throws gcomp::Error gcompErrorInvalidArgument (spec/layout), gcompErrorCuda (no device, OOM).
  DeviceCodec(const CodecSpec& spec, const Layout& layout);
  DeviceCodec(std::string_view spec, const Layout& layout);
  ~DeviceCodec();
  DeviceCodec(DeviceCodec&&) noexcept;
  DeviceCodec& operator=(DeviceCodec&&) noexcept;
  DeviceCodec(const DeviceCodec&) = delete;
  DeviceCodec& operator=(const DeviceCodec&) = delete;

  [[nodiscard]] const CodecSpec& spec() const;
  [[nodiscard]] const Layout& layout() const;
  [[nodiscard]] int64_t num_elems() const;
  /// Exact payload size in bytes: the same as the CPU codec's encoded_bytes().
  [[nodiscard]] size_t encoded_bytes() const;
  /// Scratch bytes every call of this codec needs (the largest over all operations, including
  /// topk_sampled). Always >= sizeof(DeviceStatus).
  [[nodiscard]] size_t workspace_bytes() const;

  /// Number of fp32 block scales in the payload: the CPU codec's num_scales().
  [[nodiscard]] int64_t num_scales() const;

  /// payload = C(x). @param[in] d_x device, num_elems floats. @param[out] d_payload device,
  /// encoded_bytes(), 4-byte aligned. NaN/Inf in d_x: status gcompErrorNonFinite (index: the first
  /// element of the offending block, or the element); the payload is untouched, or unspecified for
  /// plain sign, natural, identity and grid (see "Errors" above).
  void encode(const float* d_x, const RngKey& key, void* d_payload, void* d_workspace, size_t workspace_bytes,
              Stream stream) const;

  /// Shared scales, step 1 (TernGrad scaler sharing; the CPU's Codec::compute_scales): the
  /// num_scales() block scales encode() would use, computed by the same kernels in the same order,
  /// so they are bit-identical to the CPU codec's. Codecs: dither, terngrad, natdither, sdither.
  /// @param[in]  d_x      device, num_elems floats.
  /// @param[out] d_scales device, num_scales() floats, 4-byte aligned, not inside the workspace.
  ///             A non-finite scale: status gcompErrorNonFinite (index: the block's first element)
  ///             and d_scales untouched.
  /// @throws gcomp::Error gcompErrorNotSupported for the other codecs (as the CPU codec).
  void compute_scales(const float* d_x, float* d_scales, void* d_workspace, size_t workspace_bytes,
                      Stream stream) const;

  /// Shared scales, step 2 (the CPU's Codec::encode_with_scales): payload = C(x) with the given
  /// block scales instead of x's own (e.g. their max over the ranks, an allreduce kMax of the
  /// compute_scales() outputs), byte-identical to the CPU codec for the same scales and key. Each
  /// scale must be >= the block's own scale for the result to stay unbiased (not checked).
  /// @param[in] d_scales device, num_scales() floats, 4-byte aligned, not inside the workspace.
  /// Data errors, in the CPU codec's order: NaN/Inf in d_x: status gcompErrorNonFinite; else a
  /// negative or non-finite scale: status gcompErrorInvalidArgument (index: the block's first
  /// element). On either, the payload is untouched.
  /// @throws gcomp::Error gcompErrorNotSupported for codecs without shareable scales.
  void encode_with_scales(const float* d_x, const float* d_scales, const RngKey& key, void* d_payload,
                          void* d_workspace, size_t workspace_bytes, Stream stream) const;

  /// d_out = decode(payload). `key` matters only for randk (seed, stream offset; the step and
  /// rank come from the payload) and spherical (the codebook's seed, step, rank and stream offset).
  /// Corrupt payload: status gcompErrorCorruptPayload; d_out untouched, or unspecified for the
  /// one-pass decoders (see "Errors" above).
  void decode(const void* d_payload, const RngKey& key, float* d_out, void* d_workspace, size_t workspace_bytes,
              Stream stream) const;

  /// d_out[i] = d_out[i] + weight * decode(payload)[i] (unfused multiply-add, as on the CPU).
  /// Sparse codecs touch only the selected elements, exactly like the CPU codec.
  void decode_accumulate(const void* d_payload, const RngKey& key, float weight, float* d_out, void* d_workspace,
                         size_t workspace_bytes, Stream stream) const;

  /// Error feedback in one call: payload = C(p), e = p - decode(payload). d_p and d_e may alias
  /// (in-place update of the memory). Fused into the encode pass for every codec.
  void encode_ef(const float* d_p, float* d_e, const RngKey& key, void* d_payload, void* d_workspace,
                 size_t workspace_bytes, Stream stream) const;

  /// DIANA (spec §8.1): delta = g - h, payload = Q(delta), h = h + alpha * decode(payload), with
  /// exactly the CPU rounding (Codec::encode_diana). d_g and d_h must not alias. No delta buffer:
  /// delta is recomputed from g and h in every pass.
  void encode_diana(const float* d_g, float* d_h, float alpha, const RngKey& key, void* d_payload, void* d_workspace,
                    size_t workspace_bytes, Stream stream) const;

  /// out = 0; for j = 0..P-1: out = out + w_j * decode(payload_j, key_j), in rank order,
  /// bit-identical to P CPU decode_accumulate calls, payload j with its own key. Payload j starts at
  /// d_payloads + j * stride bytes (stride a multiple of 4, >= encoded_bytes()).
  /// @param h_weights host array of P weights, or nullptr for all 1.
  /// @param h_keys host array of P keys: h_keys[j] is the key payload j was encoded with (the
  ///        sender's rank, step and stream). randk reads its seed and stream offset (step and rank
  ///        come from the payload); spherical regenerates payload j's codebook from it, so a wrong
  ///        key decodes other values. nullptr is accepted only for the codecs whose decode reads no
  ///        key (every codec but randk and spherical): gcompErrorInvalidArgument otherwise.
  /// Any corrupt payload: status gcompErrorCorruptPayload (index: payload j * 2^40 + position);
  /// d_out untouched, or unspecified for the one-pass decoders (see "Errors" above).
  void decode_reduce(const void* d_payloads, size_t stride, int num_payloads, const float* h_weights,
                     const RngKey* h_keys, float* d_out, void* d_workspace, size_t workspace_bytes,
                     Stream stream) const;

  /// True when decode, decode_accumulate and decode_reduce read the RngKey (randk, spherical).
  [[nodiscard]] bool decode_reads_key() const;

  /// decode_reduce of received messages of different sizes (docs/wire-format.md §6): payload j
  /// occupies the first d_sizes[j] bytes of its slot (a full payload, or a short one of a
  /// variable-length codec, as allgatherv/alltoallv deliver them). Each size is checked against the
  /// payload's length field exactly as the CPU codec does (status gcompErrorCorruptPayload, index
  /// j << 40, d_out untouched), and the bytes of each slot after its message are zeroed, so the
  /// buffer is writable. @param d_sizes device array of num_payloads sizes.
  void decode_reduce(void* d_payloads, size_t stride, int num_payloads, const uint64_t* d_sizes, const float* h_weights,
                     const RngKey* h_keys, float* d_out, void* d_workspace, size_t workspace_bytes,
                     Stream stream) const;

  /// The first step of that decode_reduce alone, for callers that decode the payloads one by one
  /// (decode, decode_accumulate): the size rule for each payload (status gcompErrorCorruptPayload,
  /// index j << 40) and the slot tails zeroed. Enqueue-only; the status word is this call's.
  void prepare_received(void* d_payloads, size_t stride, int num_payloads, const uint64_t* d_sizes, void* d_workspace,
                        size_t workspace_bytes, Stream stream) const;

  /// True for sdither and topk with index=rice: the CPU codec's variable_length().
  [[nodiscard]] bool variable_length() const;
  /// Byte offset of the u32 length field of a variable-length payload (the CPU codec's
  /// length_prefix_bytes() - 4): copy those 4 bytes to the host to learn the used size.
  /// @throws gcomp::Error gcompErrorNotSupported for a fixed-size codec.
  [[nodiscard]] size_t length_field_offset() const;
  /// The used size a length field gives (the CPU codec's used_bytes_for_length); encoded_bytes()
  /// for a fixed-size codec. @throws gcomp::Error gcompErrorCorruptPayload above the worst case.
  [[nodiscard]] size_t used_bytes_for_length(uint64_t length_field) const;

  /// topk only: DGC-style sampled threshold (spec §4.4). A strided sample of |x| (start drawn from
  /// philox_word(key, kStreamSelect, 0)) gives a threshold, adapted up to 10 rounds (x0.8 while
  /// fewer than 0.8 k elements pass); more than 1.3 k candidates (or fewer than k) fall back to the
  /// exact selection, otherwise the first k candidates in index order are taken. The payload is a
  /// valid topk payload with exactly k entries, but not necessarily the exact top-k.
  void topk_sampled(const float* d_x, const RngKey& key, void* d_payload, void* d_workspace, size_t workspace_bytes,
                    Stream stream) const;

 private:
  friend struct detail::DeviceCodecAccess;
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

/// Diagnostics: d_out[i] = the spherical codebook normal of index first + i (docs/wire-format.md
/// §3.8), computed on the device by the same code as the CPU's detail::codebook_normal, so the two
/// agree bit for bit (tested). Enqueue-only. @param d_out device, count doubles.
/// @throws gcomp::Error gcompErrorInvalidArgument (indices beyond 2^50), gcompErrorCuda.
void codebook_normals(const RngKey& key, uint64_t first, int64_t count, double* d_out, Stream stream);

/// Waits for `stream` (cudaStreamSynchronize: this call syncs) and returns the status word of a
/// workspace used on it. @param[out] index if non-null, gets DeviceStatus::index.
/// @throws gcomp::Error gcompErrorCuda when the copy or the sync fails.
gcompStatus_t read_status(const void* d_workspace, Stream stream, uint64_t* index = nullptr);

}  // namespace gcomp::cuda
