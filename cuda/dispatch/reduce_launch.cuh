// SPDX-License-Identifier: Apache-2.0
// Host side of the block-scale reduction (cuda/quant/block_reduce.cuh), shared by the elementwise
// and coded launchers: phase 1 (a warp per tile; single-tile blocks finish there), then phase 2 for
// the plan's blocks of more than one tile (a CUDA block each), when there are any.
#pragma once

#include "cuda/common/cuda_check.cuh"
#include "cuda/dispatch/plan.cuh"
#include "cuda/quant/block_reduce.cuh"

namespace gcomp::cuda::detail {

/// kWithMax: phase 1 also leaves every block's max |x| in ws.aux_f (reduce_tiles_kernel), which is
/// zeroed here first.
template <bool kWithMax = false, class Op, class OpOfBlock>
void launch_block_reduce(const DevicePlan& plan, const Workspace& ws, Input in, OpOfBlock op_of_block, Op op,
                         const FinishArgs& fin, cudaStream_t stream) {
  if constexpr (kWithMax)
    GCOMP_CUDA_TRY(cudaMemsetAsync(fin.aux_f, 0, static_cast<size_t>(plan.num_blocks) * sizeof(float), stream));
  GCOMP_LAUNCH((reduce_tiles_kernel<Op, OpOfBlock, kWithMax>),
               grid_for(plan.num_tiles, kWarpsPerBlock, plan.max_blocks), kThreads, stream, in, op_of_block,
               plan.tile_begin, plan.tile_block, plan.blocks, plan.block_tile, plan.num_tiles, ws.tile_vals, fin);
  if (plan.num_multi_blocks > 0)
    GCOMP_LAUNCH((combine_blocks_kernel<Op>), grid_for(plan.num_multi_blocks, 1, plan.max_blocks), kThreads, stream, op,
                 plan.multi_blocks, plan.num_multi_blocks, plan.block_tile, plan.blocks, ws.tile_vals, fin);
}

}  // namespace gcomp::cuda::detail
