// SPDX-License-Identifier: Apache-2.0
// The encode and decode paths of the cuda Session backend (cuda/session/device_ops.cu) that the
// public DeviceCodec calls do not offer: each is one of those calls with its input formed as the
// kernels load it, a check left out where the Session has already made it, or (decode) the
// Session's step in the decoders' last store. Same kernels, same bits, same status word;
// implemented in cuda/dispatch/device_codec.cu.
#pragma once

#include "cuda/dispatch/session_decode.hpp"

#include <gcomp/cuda.hpp>
#include <gcomp/detail/grad_source.hpp>

#include <cstddef>
#include <cstdint>

namespace gcomp::cuda::detail {

/// An encoder input x as stored: the floats at `data` (kSrcF32, implicit from a float pointer), or
/// (codecs with loads_views) the Session's gradient view (gcomp/detail/grad_source.hpp, cuda/common/device_types.cuh
/// `Input::src`): bf16 / f16 elements widened exactly as the kernels load them, and/or NaN/Inf
/// loaded as +0; the payload and memories are those of the encode of the widened / zeroed copy.
struct Source {
  const void* data = nullptr;
  uint32_t src = gcomp::detail::kSrcF32;
  Source(const float* x) : data(x) {}  // NOLINT(google-explicit-constructor): fp32 is the plain case
  Source(const void* x, uint32_t s) : data(x), src(s) {}
};

struct DeviceCodecAccess {
  /// True when the codec's encodes take a gradient view as x (DevicePlan::loads_view: every device
  /// codec, topk's exact, sampled and index=rice encodes included); a codec without it would need
  /// the floats (gcompErrorInternal for a view).
  static bool loads_views(const DeviceCodec& k);

  /// DeviceCodec::encode of the input x as stored (a gradient view: the bytes read are its own);
  /// `sampled`: DeviceCodec::topk_sampled instead (topk only).
  static void encode(const DeviceCodec& k, const Source& x, const RngKey& key, void* d_payload, void* d_workspace,
                     size_t workspace_bytes, Stream stream, bool sampled = false);

  /// True when encode_ef_lincomb reads less than a lincomb pass into a buffer followed by
  /// encode_ef: the encode reads its input in fewer than 3 full passes (8 B/el each for p formed
  /// from x and y, against 12 B/el for storing p and then 4 B/el per pass). False for topk (3
  /// passes: the same bytes, more on its fallback path) and terngrad with clip (3: the same bytes).
  static bool forms_lincomb_cheaper(const DeviceCodec& k);

  /// encode_ef of p = lincomb_f(a, x[i], b, y[i]) (gcomp/detail/session_math.hpp: the bits the
  /// Session's lincomb() would store), p formed in every pass that reads it and never stored:
  /// payload = C(p), e = p - decode(payload). d_e must not alias x or d_y (checked). d_e is a
  /// buffer a failed step drops (the Session's second buffer of its error array): the encode reports
  /// a non-finite p in its own pass (DevicePlan::fold_check), e is then unspecified.
  static void encode_ef_lincomb(const DeviceCodec& k, float a, const Source& x, float b, const float* d_y, float* d_e,
                                const RngKey& key, void* d_payload, void* d_workspace, size_t workspace_bytes,
                                Stream stream);

  /// DeviceCodec::encode_ef into a memory d_e that a failed step drops (d_e != d_p, checked): no
  /// check pass of its own before the fused encode (DevicePlan::fold_check), e is then unspecified
  /// on a non-finite p. The payload and e equal encode_ef's when p is finite.
  static void encode_ef_unchecked(const DeviceCodec& k, const float* d_p, float* d_e, const RngKey& key,
                                  void* d_payload, void* d_workspace, size_t workspace_bytes, Stream stream);

  /// DeviceCodec::encode_diana with the new memory in d_h_out: payload = Q(g - h), h_out = h +
  /// alpha decode(payload); h is only read (d_h_out == d_h: the public in-place call). d_h_out
  /// must not alias g. The dense codecs write every element of h_out in their encode pass; the
  /// codecs whose update writes the selected elements only (topk, randk) copy h into h_out first,
  /// so h_out is then written even when the encode reports a data error. With d_h_out != d_h (the
  /// Session's second buffer, dropped by a failed step) the encode reports a non-finite g - h in
  /// its own pass (DevicePlan::fold_check): h_out is then unspecified.
  static void encode_diana(const DeviceCodec& k, const Source& g, const float* d_h, float* d_h_out, float alpha,
                           const RngKey& key, void* d_payload, void* d_workspace, size_t workspace_bytes,
                           Stream stream);

  /// DeviceCodec::compute_scales for scaler sharing: on a non-finite scale (status
  /// gcompErrorNonFinite) every entry of d_scales becomes +Inf instead of staying untouched, so
  /// the max over the ranks is +Inf on every rank (as the host-f32 twin sends), whatever the
  /// allreduce's max does with NaN.
  static void compute_shared_scales(const DeviceCodec& k, const Source& x, float* d_scales, void* d_workspace,
                                    size_t workspace_bytes, Stream stream);

  /// DeviceCodec::encode_with_scales of the Session, whose scales are the max over the ranks of
  /// compute_shared_scales outputs of these x: no pass of its own over x for non-finite values
  /// (a non-finite x gives its block a non-finite scale, which compute_shared_scales reported and
  /// which makes the max +Inf); a non-finite scale is status gcompErrorNonFinite (a non-finite
  /// gradient on some rank), a negative one gcompErrorInvalidArgument. The payload is untouched on
  /// either.
  static void encode_with_shared_scales(const DeviceCodec& k, const Source& x, const float* d_scales, const RngKey& key,
                                        void* d_payload, void* d_workspace, size_t workspace_bytes, Stream stream);

  /// True for the codecs with the fused store (their device entry's decode_store): dither,
  /// terngrad, natdither, sign, natural, identity, grid (the quad decoders' store), topk and randk
  /// (the tile merge's store, cuda/topk/sparse_merge_kernels.cuh), sdither and spherical (the
  /// last payload's walk or block loop): every device codec.
  static bool has_decode_store(const DeviceCodec& codec);

  /// DeviceCodec::decode_reduce (with the size rule of d_sizes when given, else every payload
  /// full; every weight 1), the sum stored by `step`. d_acc: n floats of scratch (the partial sums
  /// of the launches before the last: batches of kMaxWeights payloads, or of the plan's
  /// merge_batch for topk index=rice and randk; the sum itself for StoreKind::kScale, then
  /// a * sum). As
  /// decode_reduce, the outputs are unspecified when a payload is corrupt (the status word says so).
  static void decode_reduce_store(const DeviceCodec& codec, void* d_payloads, size_t stride, int num_payloads,
                                  const uint64_t* d_sizes, const RngKey* h_keys, float* d_acc, const SessionStep& step,
                                  void* d_workspace, size_t workspace_bytes, Stream stream);

  /// DeviceCodec::decode of one payload (a received message of *d_size bytes when d_size is given:
  /// prepare_received's size rule and zeroed tail first), out = a * decode (step.kind kScale).
  static void decode_store(const DeviceCodec& codec, void* d_payload, const uint64_t* d_size, const RngKey& key,
                           float* d_out, const SessionStep& step, void* d_workspace, size_t workspace_bytes,
                           Stream stream);

 private:
  static void check_step(const char* what, const DeviceCodec& codec, const SessionStep& step);
};

}  // namespace gcomp::cuda::detail
