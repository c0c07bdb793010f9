// SPDX-License-Identifier: Apache-2.0
// Launchers of the elementwise codecs: dither, terngrad, natdither (cuda/quant), sign (cuda/sign),
// natural (cuda/natural) and identity (cuda/identity), with the fused EF/DIANA variants and the
// decode-reduce of P payloads (cuda/fused).
#include "cuda/common/common_kernels.cuh"
#include "cuda/common/cuda_check.cuh"
#include "cuda/dispatch/decode_launch.cuh"
#include "cuda/dispatch/plan.cuh"
#include "cuda/fused/decode_elements.cuh"
#include "cuda/identity/identity_kernels.cuh"
#include "cuda/natural/natural_kernels.cuh"
#include "cuda/quant/block_reduce.cuh"
#include "cuda/quant/quant_kernels.cuh"
#include "cuda/sign/sign_kernels.cuh"

#include <gcomp/detail/reduce.hpp>

#include <algorithm>

namespace gcomp::cuda::detail {

namespace {

using gcomp::detail::AbsMaxOp;
using gcomp::detail::AbsSumOp;
using gcomp::detail::CenteredSquareSumOp;
using gcomp::detail::PowSumOp;
using gcomp::detail::SquareSumOp;
using gcomp::detail::SumOp;

DenseParams dense_params(const DevicePlan& plan) {
  return DenseParams{plan.map, plan.n, plan.num_blocks, plan.levels, plan.nbits, plan.id == CodecId::kNatDither};
}

SignParams sign_params(const DevicePlan& plan) { return SignParams{plan.map, plan.n, plan.num_scales}; }

NaturalParams natural_params(const DevicePlan& plan) { return NaturalParams{plan.n, plan.groups}; }

FinishArgs finish_args(const DevicePlan& plan, const Workspace& ws, Finish kind) {
  return FinishArgs{kind, plan.norm, plan.p, plan.clip, ws.scales, ws.aux_f, ws.aux_d, ws.status};
}

/// Both phases of one block reduction (block_reduce.cuh).
template <class Op, class OpOfBlock>
void reduce_blocks(const DevicePlan& plan, const Workspace& ws, Input in, OpOfBlock op_of_block, Op op,
                   FinishArgs fin, cudaStream_t stream) {
  GCOMP_LAUNCH((reduce_tiles_kernel<Op, OpOfBlock>), grid_for(plan.num_tiles, 1, plan.max_blocks), kThreads,
               stream, in, op_of_block, plan.tile_begin, plan.tile_block, plan.blocks, plan.num_tiles,
               ws.tile_vals);
  GCOMP_LAUNCH((combine_tiles_kernel<Op>), grid_for(plan.num_blocks, kWarpsPerBlock, plan.max_blocks), kThreads,
               stream, op, plan.block_tile, plan.blocks, plan.num_blocks, ws.tile_vals, fin);
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
    reduce_blocks(plan, ws, in, AbsMaxOp{}, Finish::kStoreMax, stream);
    reduce_blocks(plan, ws, in, SumOp{}, Finish::kStoreMean, stream);
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

int fuse_code(Fuse f) { return f == Fuse::kNone ? 0 : (f == Fuse::kEF ? 1 : 2); }

}  // namespace

void launch_elementwise_encode(const DevicePlan& plan, const Workspace& ws, Input in, const RngKey& key,
                               uint8_t* d_payload, Fuse fuse, float* d_mem, float alpha, cudaStream_t stream) {
  if (plan.n == 0) return;
  const int f = fuse_code(fuse);
  const unsigned grid_groups = grid_for(plan.groups, kWarpsPerBlock, plan.max_blocks);
  const unsigned grid_elems = grid_for(plan.n, kThreads, plan.max_blocks);
  switch (plan.id) {
    case CodecId::kDither:
    case CodecId::kTernGrad:
    case CodecId::kNatDither:
      dense_scales(plan, ws, in, stream);
      GCOMP_LAUNCH(quantize_planes_kernel, grid_groups, kThreads, stream, dense_params(plan), in, ws.scales, key,
                   d_payload, f, d_mem, alpha, ws.status);
      return;
    case CodecId::kSign:
      if (plan.scaled)
        reduce_blocks(plan, ws, in, AbsSumOp{}, Finish::kMeanAbs, stream);
      else
        GCOMP_LAUNCH(check_finite_kernel, grid_elems, kThreads, stream, in, plan.n, ws.status);
      GCOMP_LAUNCH(encode_sign_kernel, grid_groups, kThreads, stream, sign_params(plan), in, ws.scales, d_payload,
                   f, d_mem, alpha, ws.status);
      return;
    case CodecId::kNatural:
      GCOMP_LAUNCH(check_finite_kernel, grid_elems, kThreads, stream, in, plan.n, ws.status);
      GCOMP_LAUNCH(encode_natural_kernel, grid_groups, kThreads, stream, natural_params(plan), in, key, d_payload,
                   f, d_mem, alpha, ws.status);
      return;
    case CodecId::kIdentity:
      GCOMP_LAUNCH(check_finite_kernel, grid_elems, kThreads, stream, in, plan.n, ws.status);
      GCOMP_LAUNCH(encode_identity_kernel, grid_elems, kThreads, stream, in, plan.n,
                   reinterpret_cast<float*>(d_payload), f, d_mem, alpha, ws.status);
      return;
    default: GCOMP_FAIL(gcompErrorInternal, "launch_elementwise_encode: not an elementwise codec");
  }
}

void launch_shared_scales(const DevicePlan& plan, const Workspace& ws, Input in, float* d_scales, cudaStream_t stream) {
  if (plan.n == 0 || plan.num_blocks == 0) return;
  // The scales encode() computes, by the same launches, into ws.scales; copied out only when every
  // scale is finite (the CPU codec throws before it returns any).
  if (plan.id == CodecId::kSDither)
    launch_coded_scales(plan, ws, in, stream);
  else
    dense_scales(plan, ws, in, stream);
  GCOMP_LAUNCH(copy_if_ok_kernel, grid_for(plan.num_blocks, kThreads, plan.max_blocks), kThreads, stream, ws.scales,
               d_scales, plan.num_blocks, ws.status);
}

void launch_encode_with_scales(const DevicePlan& plan, const Workspace& ws, Input in, const float* d_scales,
                               const RngKey& key, uint8_t* d_payload, cudaStream_t stream) {
  // The CPU codec's order: non-finite input (gcompErrorNonFinite) first, then the scales
  // (gcompErrorInvalidArgument); the writing kernels skip once either is reported.
  if (plan.n > 0) {
    GCOMP_LAUNCH(check_finite_kernel, grid_for(plan.n, kThreads, plan.max_blocks), kThreads, stream, in, plan.n,
                 ws.status);
    GCOMP_LAUNCH(check_scales_kernel, grid_for(plan.num_blocks, kThreads, plan.max_blocks), kThreads, stream,
                 d_scales, plan.blocks, plan.num_blocks, ws.status);
  }
  if (plan.id == CodecId::kSDither) {
    launch_coded_encode_scaled(plan, ws, in, d_scales, key, d_payload, stream);
    return;
  }
  if (plan.n == 0) return;
  GCOMP_LAUNCH(quantize_planes_kernel, grid_for(plan.groups, kWarpsPerBlock, plan.max_blocks), kThreads, stream,
               dense_params(plan), in, d_scales, key, d_payload, 0, nullptr, 0.0f, ws.status);
}

void launch_elementwise_decode(const DevicePlan& plan, const Workspace& ws, const uint8_t* d_payloads,
                               size_t stride, int num_payloads, const float* h_weights, DecodeMode mode,
                               float* d_out, cudaStream_t stream) {
  if (plan.n == 0) return;
  const unsigned grid_groups = grid_for(plan.groups, kThreads, plan.max_blocks);
  const unsigned grid_elems = grid_for(plan.n, kThreads, plan.max_blocks);
  for (int j = 0; j < num_payloads; ++j) {
    const uint8_t* pj = d_payloads + static_cast<size_t>(j) * stride;
    const uint64_t base = static_cast<uint64_t>(j) << 40;
    switch (plan.id) {
      case CodecId::kDither:
      case CodecId::kTernGrad:
      case CodecId::kNatDither:
        GCOMP_LAUNCH(validate_planes_kernel, grid_groups, kThreads, stream, dense_params(plan), pj, base, ws.status);
        break;
      case CodecId::kSign:
        GCOMP_LAUNCH(validate_sign_kernel, grid_for(std::max<int64_t>(plan.num_scales, 1), kThreads, plan.max_blocks),
                     kThreads, stream, sign_params(plan), pj, base, ws.status);
        break;
      case CodecId::kNatural:
        GCOMP_LAUNCH(validate_natural_kernel, grid_elems, kThreads, stream, natural_params(plan), pj, base, ws.status);
        break;
      case CodecId::kIdentity:
        GCOMP_LAUNCH(validate_identity_kernel, grid_elems, kThreads, stream, plan.n, pj, base, ws.status);
        break;
      default: GCOMP_FAIL(gcompErrorInternal, "launch_elementwise_decode: not an elementwise codec");
    }
  }
  const auto run = [&](const auto& dec) {
    launch_decode_elements(dec, plan, ws, d_payloads, stride, num_payloads, h_weights, mode, d_out, stream);
  };
  switch (plan.id) {
    case CodecId::kDither:
    case CodecId::kTernGrad:
    case CodecId::kNatDither: run(DenseDecoder{dense_params(plan)}); return;
    case CodecId::kSign: run(SignDecoder{sign_params(plan)}); return;
    case CodecId::kNatural: run(NaturalDecoder{natural_params(plan)}); return;
    default: run(IdentityDecoder{}); return;
  }
}

}  // namespace gcomp::cuda::detail
