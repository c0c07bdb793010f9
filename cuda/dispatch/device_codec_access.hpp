// SPDX-License-Identifier: Apache-2.0
// The encode paths of the cuda Session backend (cuda/session/device_ops.cu) that the public
// DeviceCodec calls do not offer: each is one of those calls with its input formed as the kernels
// load it, or a check left out where the Session has already made it. Same kernels, same bits,
// same status word; implemented in cuda/dispatch/device_codec.cu.
#pragma once

#include <gcomp/cuda.hpp>

#include <cstddef>

namespace gcomp::cuda::detail {

struct DeviceCodecAccess {
  /// True when encode_ef_lincomb reads less than a lincomb pass into a buffer followed by
  /// encode_ef: the encode reads its input in fewer than 3 full passes (8 B/el each for p formed
  /// from x and y, against 12 B/el for storing p and then 4 B/el per pass). False for topk (3
  /// passes: the same bytes, more on its fallback path) and terngrad with clip (3: the same bytes).
  static bool forms_lincomb_cheaper(const DeviceCodec& k);

  /// encode_ef of p = lincomb_f(a, x[i], b, y[i]) (gcomp/detail/session_math.hpp: the bits the
  /// Session's lincomb() would store), p formed in every pass that reads it and never stored:
  /// payload = C(p), e = p - decode(payload). d_e must not alias d_x or d_y (checked).
  static void encode_ef_lincomb(const DeviceCodec& k, float a, const float* d_x, float b, const float* d_y, float* d_e,
                                const RngKey& key, void* d_payload, void* d_workspace, size_t workspace_bytes,
                                Stream stream);

  /// DeviceCodec::encode_diana with the new memory in d_h_out: payload = Q(g - h), h_out = h +
  /// alpha decode(payload); h is only read (d_h_out == d_h: the public in-place call). d_h_out
  /// must not alias d_g. The dense codecs write every element of h_out in their encode pass; the
  /// codecs whose update writes the selected elements only (topk, randk) copy h into h_out first,
  /// so h_out is then written even when the encode reports a data error.
  static void encode_diana(const DeviceCodec& k, const float* d_g, const float* d_h, float* d_h_out, float alpha,
                           const RngKey& key, void* d_payload, void* d_workspace, size_t workspace_bytes,
                           Stream stream);

  /// DeviceCodec::compute_scales for scaler sharing: on a non-finite scale (status
  /// gcompErrorNonFinite) every entry of d_scales becomes +Inf instead of staying untouched, so
  /// the max over the ranks is +Inf on every rank (as the host-f32 twin sends), whatever the
  /// allreduce's max does with NaN.
  static void compute_shared_scales(const DeviceCodec& k, const float* d_x, float* d_scales, void* d_workspace,
                                    size_t workspace_bytes, Stream stream);

  /// DeviceCodec::encode_with_scales of the Session, whose scales are the max over the ranks of
  /// compute_shared_scales outputs of these x: no pass of its own over x for non-finite values
  /// (a non-finite x gives its block a non-finite scale, which compute_shared_scales reported and
  /// which makes the max +Inf); a non-finite scale is status gcompErrorNonFinite (a non-finite
  /// gradient on some rank), a negative one gcompErrorInvalidArgument. The payload is untouched on
  /// either.
  static void encode_with_shared_scales(const DeviceCodec& k, const float* d_x, const float* d_scales,
                                        const RngKey& key, void* d_payload, void* d_workspace, size_t workspace_bytes,
                                        Stream stream);
};

}  // namespace gcomp::cuda::detail
