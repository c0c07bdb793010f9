// SPDX-License-Identifier: Apache-2.0
// The Session step that the quad-layout decoders (dense planes, sign, natural, identity, grid), the
// sparse tile merge (topk, randk) and the sdither and spherical decoders (their last payload's
// launch) apply in their final store (cuda/fused/decode_store.cuh) for the cuda Session's decode
// entries (DeviceCodecAccess::decode_reduce_store / decode_store,
// cuda/dispatch/device_codec_access.hpp), so that the mean, the vote, the two-way server step and
// DIANA's server step cost no pass of their own. Not public API. Host-compilable: the GPU tests
// use it too.
#pragma once

#include <cstdint>

namespace gcomp::cuda::detail {

/// The Session step a fused store applies, s being the value decode / decode_reduce would store
/// (the sum of the decoded messages, or the one decoded message):
///  - kScale:      out = a s                              (decode_reduce_scale without u, decode_scale)
///  - kScaleTwice: u = b (a s), out not written          (decode_reduce_scale with u)
///  - kMeanAdd:    w = y + a s, out not written          (decode_mean_add)
///  - kVote:       u = b vote(s), out not written        (decode_vote, b = lr, tie_to_zero)
///  - kDiana:      g = y + a s, u = b g (scale_u) or g; w = y + alpha (a s); out not written
///                 (decode_diana: y = h, w = h_out)
/// The element math is gcomp/detail/session_math.hpp. u, w and y must not overlap out or each
/// other. Everything is 4-byte aligned; a quad takes 16-byte accesses when out and every array
/// are 16-byte aligned.
enum class StoreKind : int { kScale, kScaleTwice, kMeanAdd, kVote, kDiana };

struct SessionStep {
  StoreKind kind = StoreKind::kScale;
  float a = 1.0f;
  float b = 1.0f;
  float alpha = 0.0f;
  bool tie_to_zero = false;
  bool scale_u = true;
  const float* y = nullptr;
  float* u = nullptr;
  float* w = nullptr;
};

}  // namespace gcomp::cuda::detail
