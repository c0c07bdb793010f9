// SPDX-License-Identifier: Apache-2.0
// Device entries of the elementwise codecs (plan, workspace, encode, decode; DeviceCodecEntry in
// plan.cuh): dither, terngrad, natdither (cuda/quant), sign (cuda/sign), natural (cuda/natural) and
// identity (cuda/identity), with the fused EF/DIANA variants and the decode-reduce of P payloads
// (cuda/fused); and the shared-scale launches of every codec with shareable scales.
#include "cuda/common/common_kernels.cuh"
#include "cuda/common/cuda_check.cuh"
#include "cuda/dispatch/decode_launch.cuh"
#include "cuda/dispatch/plan.cuh"
#include "cuda/dispatch/reduce_launch.cuh"
#include "cuda/fused/decode_elements.cuh"
#include "cuda/identity/identity_kernels.cuh"
#include "cuda/natural/natural_kernels.cuh"
#include "cuda/quant/block_reduce.cuh"
#include "cuda/quant/quant_kernels.cuh"
#include "cuda/sign/sign_kernels.cuh"
#include "host/codecs/registry.hpp"

#include <gcomp/detail/codec_math.hpp>
#include <gcomp/detail/reduce.hpp>

#include <algorithm>
#include <type_traits>

namespace gcomp::cuda::detail {

namespace {

using gcomp::detail::AbsMaxOp;
using gcomp::detail::AbsSumOp;
using gcomp::detail::CenteredSquareSumOp;
using gcomp::detail::PowSumOp;
using gcomp::detail::SquareSumOp;
using gcomp::detail::SumOp;

DenseParams dense_params(const DevicePlan& plan) {
  return DenseParams{
      plan.map, plan.blocks, plan.n, plan.num_blocks, plan.levels, plan.nbits, plan.id == CodecId::kNatDither};
}

SignParams sign_params(const DevicePlan& plan) { return SignParams{plan.map, plan.blocks, plan.n, plan.num_scales}; }

/// Grids of the quad layout (cuda/common/lanes.hpp): warps per 128-element span, threads per quad.
unsigned span_grid(const DevicePlan& plan) {
  return grid_for(gcomp::detail::ceil_div(plan.n, int64_t{lanes::kSpanElems}), kWarpsPerBlock, plan.max_blocks);
}
unsigned quad_grid(const DevicePlan& plan) {
  return grid_for(gcomp::detail::ceil_div(plan.n, int64_t{lanes::kQuadElems}), kThreads, plan.max_blocks);
}

/// The dense quantize pass, by quantizer and fused update.
void quantize_planes(const DevicePlan& plan, const Workspace& ws, Input in, const float* scales, const RngKey& key,
                     uint8_t* d_payload, Fuse fuse, float* d_mem, float alpha, cudaStream_t stream) {
  const DenseParams d = dense_params(plan);
  const unsigned grid = span_grid(plan);
  const bool nat = d.natural;
  if (fuse == Fuse::kNone && !nat)
    GCOMP_LAUNCH((quantize_planes_kernel<false, Fuse::kNone>), grid, kThreads, stream, d, in, scales, key, d_payload,
                 d_mem, alpha, ws.status);
  else if (fuse == Fuse::kNone)
    GCOMP_LAUNCH((quantize_planes_kernel<true, Fuse::kNone>), grid, kThreads, stream, d, in, scales, key, d_payload,
                 d_mem, alpha, ws.status);
  else if (fuse == Fuse::kEF && !nat)
    GCOMP_LAUNCH((quantize_planes_kernel<false, Fuse::kEF>), grid, kThreads, stream, d, in, scales, key, d_payload,
                 d_mem, alpha, ws.status);
  else if (fuse == Fuse::kEF)
    GCOMP_LAUNCH((quantize_planes_kernel<true, Fuse::kEF>), grid, kThreads, stream, d, in, scales, key, d_payload,
                 d_mem, alpha, ws.status);
  else if (!nat)
    GCOMP_LAUNCH((quantize_planes_kernel<false, Fuse::kDiana>), grid, kThreads, stream, d, in, scales, key, d_payload,
                 d_mem, alpha, ws.status);
  else
    GCOMP_LAUNCH((quantize_planes_kernel<true, Fuse::kDiana>), grid, kThreads, stream, d, in, scales, key, d_payload,
                 d_mem, alpha, ws.status);
}

/// An elementwise encode kernel template `K<kFuse, kCheck>` of the codecs without block scales
/// (plain sign, natural, identity): the plain encode checks finiteness in its one pass (the payload
/// is then unspecified on a non-finite input); the fused EF/DIANA variants check first, in a pass
/// of their own, so that the memory is never written on a non-finite input, unless the plan says
/// the memory may be left unspecified (DevicePlan::fold_check: the Session's second buffers).
template <class Launch>
void checked_encode(const DevicePlan& plan, const Workspace& ws, Input in, Fuse fuse, cudaStream_t stream,
                    Launch launch) {
  if (fuse == Fuse::kNone) {
    launch(std::integral_constant<Fuse, Fuse::kNone>{}, std::true_type{});
    return;
  }
  if (plan.fold_check) {
    if (fuse == Fuse::kEF)
      launch(std::integral_constant<Fuse, Fuse::kEF>{}, std::true_type{});
    else
      launch(std::integral_constant<Fuse, Fuse::kDiana>{}, std::true_type{});
    return;
  }
  GCOMP_LAUNCH(check_finite_kernel, quad_grid(plan), kThreads, stream, in, plan.n, ws.status);
  if (fuse == Fuse::kEF)
    launch(std::integral_constant<Fuse, Fuse::kEF>{}, std::false_type{});
  else
    launch(std::integral_constant<Fuse, Fuse::kDiana>{}, std::false_type{});
}

NaturalParams natural_params(const DevicePlan& plan) { return NaturalParams{plan.n, plan.groups}; }

FinishArgs finish_args(const DevicePlan& plan, const Workspace& ws, Finish kind) {
  return FinishArgs{kind, plan.norm, plan.p, plan.clip, ws.scales, ws.aux_f, ws.aux_d, ws.status};
}

/// Both phases of one block reduction (block_reduce.cuh).
template <class Op, class OpOfBlock>
void reduce_blocks(const DevicePlan& plan, const Workspace& ws, Input in, OpOfBlock op_of_block, Op op, FinishArgs fin,
                   cudaStream_t stream) {
  launch_block_reduce(plan, ws, in, op_of_block, op, fin, stream);
}

template <class Op>
void reduce_blocks(const DevicePlan& plan, const Workspace& ws, Input in, Op op, Finish kind, cudaStream_t stream) {
  reduce_blocks(plan, ws, in, SameOp<Op>{op}, op, finish_args(plan, ws, kind), stream);
}

/// The scales of a dense codec into ws.scales (status on a non-finite scale).
void dense_scales(const DevicePlan& plan, const Workspace& ws, Input in, cudaStream_t stream) {
  if (plan.id == CodecId::kTernGrad) {
    if (plan.clip <= 0.0) {
      reduce_blocks(plan, ws, in, AbsMaxOp{}, Finish::kMax, stream);
      return;
    }
    // One pass for the block's mean and max |x| (ws.aux_d, ws.aux_f), then the centered pass.
    launch_block_reduce<true>(plan, ws, in, SameOp<SumOp>{SumOp{}}, SumOp{}, finish_args(plan, ws, Finish::kStoreMean),
                              stream);
    reduce_blocks(plan, ws, in, CenteredOpOfBlock{ws.aux_d}, CenteredSquareSumOp{0.0},
                  finish_args(plan, ws, Finish::kTernClip), stream);
    return;
  }
  switch (plan.norm) {
    case gcomp::detail::kNormL1: reduce_blocks(plan, ws, in, AbsSumOp{}, Finish::kNorm, stream); break;
    case gcomp::detail::kNormL2: reduce_blocks(plan, ws, in, SquareSumOp{}, Finish::kNorm, stream); break;
    case gcomp::detail::kNormLinf: reduce_blocks(plan, ws, in, AbsMaxOp{}, Finish::kNorm, stream); break;
    default: reduce_blocks(plan, ws, in, PowSumOp{plan.p}, Finish::kNorm, stream); break;
  }
}

// ---- encode, decode and scales of each codec ----------------------------------------------------

void dense_encode(const DevicePlan& plan, const Workspace& ws, Input in, const RngKey& key, uint8_t* d_payload,
                  Fuse fuse, float* d_mem, float alpha, cudaStream_t stream) {
  if (plan.n == 0) return;
  dense_scales(plan, ws, in, stream);
  quantize_planes(plan, ws, in, ws.scales, key, d_payload, fuse, d_mem, alpha, stream);
}

void dense_encode_scaled(const DevicePlan& plan, const Workspace& ws, Input in, const float* d_scales,
                         const RngKey& key, uint8_t* d_payload, cudaStream_t stream) {
  if (plan.n == 0) return;
  quantize_planes(plan, ws, in, d_scales, key, d_payload, Fuse::kNone, nullptr, 0.0f, stream);
}

void dense_scales_entry(const DevicePlan& plan, const Workspace& ws, Input in, cudaStream_t stream) {
  dense_scales(plan, ws, in, stream);
}

void sign_encode(const DevicePlan& plan, const Workspace& ws, Input in, const RngKey&, uint8_t* d_payload, Fuse f,
                 float* d_mem, float alpha, cudaStream_t stream) {
  if (plan.n == 0) return;
  const SignParams d = sign_params(plan);
  const auto launch = [&](auto fz, auto check) {
    GCOMP_LAUNCH((encode_sign_kernel<decltype(fz)::value, decltype(check)::value>), span_grid(plan), kThreads, stream,
                 d, in, ws.scales, d_payload, d_mem, alpha, ws.status);
  };
  if (!plan.scaled) {
    checked_encode(plan, ws, in, f, stream, launch);
    return;
  }
  reduce_blocks(plan, ws, in, AbsSumOp{}, Finish::kMeanAbs, stream);  // a non-finite x: a non-finite scale
  if (f == Fuse::kNone) launch(std::integral_constant<Fuse, Fuse::kNone>{}, std::false_type{});
  if (f == Fuse::kEF) launch(std::integral_constant<Fuse, Fuse::kEF>{}, std::false_type{});
  if (f == Fuse::kDiana) launch(std::integral_constant<Fuse, Fuse::kDiana>{}, std::false_type{});
}

void natural_encode(const DevicePlan& plan, const Workspace& ws, Input in, const RngKey& key, uint8_t* d_payload,
                    Fuse f, float* d_mem, float alpha, cudaStream_t stream) {
  if (plan.n == 0) return;
  const NaturalParams d = natural_params(plan);
  checked_encode(plan, ws, in, f, stream, [&](auto fz, auto check) {
    GCOMP_LAUNCH((encode_natural_kernel<decltype(fz)::value, decltype(check)::value>), span_grid(plan), kThreads,
                 stream, d, in, key, d_payload, d_mem, alpha, ws.status);
  });
}

void identity_encode(const DevicePlan& plan, const Workspace& ws, Input in, const RngKey&, uint8_t* d_payload, Fuse f,
                     float* d_mem, float alpha, cudaStream_t stream) {
  if (plan.n == 0) return;
  checked_encode(plan, ws, in, f, stream, [&](auto fz, auto check) {
    GCOMP_LAUNCH((encode_identity_kernel<decltype(fz)::value, decltype(check)::value>), quad_grid(plan), kThreads,
                 stream, in, plan.n, reinterpret_cast<float*>(d_payload), d_mem, alpha, ws.status);
  });
}

/// The decode of codec decoder `Dec` built from the plan by `make`, stored by `store`.
template <class MakeDecoder, class Store = PlainStore>
void decode_quads_with(MakeDecoder make, const DevicePlan& plan, const Workspace& ws, const uint8_t* d_payloads,
                       size_t stride, int num_payloads, const float* h_weights, DecodeMode mode, float* d_out,
                       cudaStream_t stream, const Store& store = Store{}) {
  if (plan.n == 0) return;
  launch_decode_quads(make(plan), plan, ws, d_payloads, stride, num_payloads, h_weights, mode, d_out, stream, store);
}

/// The DeviceCodecEntry::decode_store of the codec whose decoder `make` builds (weights all 1).
template <class MakeDecoder>
void decode_store_with(MakeDecoder make, const DevicePlan& plan, const Workspace& ws, const uint8_t* d_payloads,
                       size_t stride, int num_payloads, DecodeMode mode, const SessionStore& store, float* d_out,
                       cudaStream_t stream) {
  decode_quads_with(make, plan, ws, d_payloads, stride, num_payloads, nullptr, mode, d_out, stream, store);
}

DenseQuadDecoder<false> make_dither(const DevicePlan& p) { return DenseQuadDecoder<false>{dense_params(p)}; }
DenseQuadDecoder<true> make_natdither(const DevicePlan& p) { return DenseQuadDecoder<true>{dense_params(p)}; }
SignQuadDecoder make_sign(const DevicePlan& p) { return SignQuadDecoder{sign_params(p)}; }
NaturalQuadDecoder make_natural(const DevicePlan& p) { return NaturalQuadDecoder{natural_params(p)}; }
IdentityQuadDecoder make_identity(const DevicePlan& p) { return IdentityQuadDecoder{p.n}; }

/// DeviceCodecEntry::decode of the quad codec whose decoder `kMake` builds.
template <auto kMake>
void quad_decode(const DevicePlan& plan, const Workspace& ws, const uint8_t* d_payloads, size_t stride,
                 int num_payloads, const float* h_weights, DecodeMode mode, const RngKey*, float* d_out,
                 cudaStream_t stream) {
  decode_quads_with(kMake, plan, ws, d_payloads, stride, num_payloads, h_weights, mode, d_out, stream);
}

/// DeviceCodecEntry::decode_store of the quad codec whose decoder `kMake` builds.
template <auto kMake>
void quad_decode_store(const DevicePlan& plan, const Workspace& ws, const uint8_t* d_payloads, size_t stride,
                       int num_payloads, DecodeMode mode, const RngKey*, const SessionStore& store, float* d_out,
                       cudaStream_t stream) {
  decode_store_with(kMake, plan, ws, d_payloads, stride, num_payloads, mode, store, d_out, stream);
}

// ---- plans and workspace parts ------------------------------------------------------------------

/// dither, natdither, terngrad: the quantizer (terngrad: one level, l_inf, one block per segment),
/// its block tables and one scale per block.
void dense_plan(DevicePlanner& planner, const CodecSpec& spec) {
  DevicePlan& p = planner.plan;
  const DitherOptions q = gcomp::detail::dither_quantizer(spec);
  p.levels = q.levels;
  p.norm = static_cast<uint32_t>(q.norm);
  p.p = q.p;
  p.nbits = static_cast<int>(gcomp::detail::ceil_log2_u64(uint64_t{p.levels} + 1));
  if (const auto* t = spec.options_if<TernGradOptions>()) p.clip = t->clip;
  if (p.clip > 0.0) p.input_reads = 3;  // mean and max, centered squares, quantize
  planner.upload_tables(q.block);
  p.num_scales = p.num_blocks;
  p.loads_view = true;
}

/// terngrad with clip: the per-block max |x| and mean of the clip threshold.
void terngrad_workspace(const DevicePlan& plan, WorkspaceLayout& wl, Carver& c) {
  if (plan.clip <= 0.0) return;
  const auto m = static_cast<size_t>(plan.num_blocks);
  wl.aux_f = c.take(m * sizeof(float));
  wl.aux_d = c.take(m * sizeof(double));
}

/// sign: block tables and scales when scaled (scale=l1), nothing for plain signs.
void sign_plan(DevicePlanner& planner, const CodecSpec& spec) {
  DevicePlan& p = planner.plan;
  const SignOptions& o = spec.options<SignOptions>();
  p.scaled = o.scaled;
  p.loads_view = true;
  if (!o.scaled) return;
  planner.upload_tables(o.block);
  p.num_scales = p.num_blocks;
}

/// natural and identity: nothing beyond the common fields (their encodes are quad kernels).
void quad_plan(DevicePlanner& planner, const CodecSpec&) { planner.plan.loads_view = true; }

}  // namespace

extern const DeviceCodecEntry kIdentityDevice{.plan = quad_plan,
                                              .workspace = nullptr,
                                              .encode = identity_encode,
                                              .decode = quad_decode<make_identity>,
                                              .decode_store = quad_decode_store<make_identity>};
extern const DeviceCodecEntry kDitherDevice{.plan = dense_plan,
                                            .workspace = nullptr,
                                            .encode = dense_encode,
                                            .decode = quad_decode<make_dither>,
                                            .decode_store = quad_decode_store<make_dither>,
                                            .scales = dense_scales_entry,
                                            .encode_scaled = dense_encode_scaled};
extern const DeviceCodecEntry kTernGradDevice{.plan = dense_plan,
                                              .workspace = terngrad_workspace,
                                              .encode = dense_encode,
                                              .decode = quad_decode<make_dither>,
                                              .decode_store = quad_decode_store<make_dither>,
                                              .scales = dense_scales_entry,
                                              .encode_scaled = dense_encode_scaled};
extern const DeviceCodecEntry kNatDitherDevice{.plan = dense_plan,
                                               .workspace = nullptr,
                                               .encode = dense_encode,
                                               .decode = quad_decode<make_natdither>,
                                               .decode_store = quad_decode_store<make_natdither>,
                                               .scales = dense_scales_entry,
                                               .encode_scaled = dense_encode_scaled};
extern const DeviceCodecEntry kSignDevice{.plan = sign_plan,
                                          .workspace = nullptr,
                                          .encode = sign_encode,
                                          .decode = quad_decode<make_sign>,
                                          .decode_store = quad_decode_store<make_sign>};
extern const DeviceCodecEntry kNaturalDevice{.plan = quad_plan,
                                             .workspace = nullptr,
                                             .encode = natural_encode,
                                             .decode = quad_decode<make_natural>,
                                             .decode_store = quad_decode_store<make_natural>};

void launch_shared_scales(const DeviceCodecEntry& entry, const DevicePlan& plan, const Workspace& ws, Input in,
                          float* d_scales, bool inf_on_error, cudaStream_t stream) {
  GCOMP_EXPECTS(entry.scales != nullptr, gcompErrorInternal, "launch_shared_scales: the codec has no shareable scales");
  if (plan.n == 0 || plan.num_blocks == 0) return;
  // The scales encode() computes, by the same launches, into ws.scales; copied out only when every
  // scale is finite (the CPU codec throws before it returns any), else +Inf with inf_on_error.
  entry.scales(plan, ws, in, stream);
  GCOMP_LAUNCH(copy_scales_kernel, grid_for(plan.num_blocks, kThreads, plan.max_blocks), kThreads, stream, ws.scales,
               d_scales, plan.num_blocks, inf_on_error, ws.status);
}

void launch_encode_with_scales(const DeviceCodecEntry& entry, const DevicePlan& plan, const Workspace& ws, Input in,
                               const float* d_scales, const RngKey& key, uint8_t* d_payload, bool check_input,
                               cudaStream_t stream) {
  GCOMP_EXPECTS(entry.encode_scaled != nullptr, gcompErrorInternal,
                "launch_encode_with_scales: the codec has no shareable scales");
  // The CPU codec's order: non-finite input (gcompErrorNonFinite) first, then the scales
  // (gcompErrorInvalidArgument); the writing kernels skip once either is reported. Without
  // check_input (the Session's shared scales: a non-finite x made its block's scale, and so the
  // max, non-finite), the input is read by the encode pass alone and a non-finite scale is the
  // non-finite gradient's gcompErrorNonFinite.
  if (plan.n > 0) {
    if (check_input) GCOMP_LAUNCH(check_finite_kernel, quad_grid(plan), kThreads, stream, in, plan.n, ws.status);
    const uint32_t nonfinite = check_input ? gcompErrorInvalidArgument : gcompErrorNonFinite;
    GCOMP_LAUNCH(check_scales_kernel, grid_for(plan.num_blocks, kThreads, plan.max_blocks), kThreads, stream, d_scales,
                 plan.blocks, plan.num_blocks, nonfinite, ws.status);
  }
  entry.encode_scaled(plan, ws, in, d_scales, key, d_payload, stream);
}

}  // namespace gcomp::cuda::detail
