// SPDX-License-Identifier: Apache-2.0
// Launchers of topk index=rice (cuda/topk/rice_kernels.cuh): the index stream of an encode whose
// selection left the indices in ws.idx, the checks of P payloads, and a checked payload parsed to
// its index list (the tile merge of cuda/dispatch/sparse_launch.cu writes the output). And
// the check of received short payloads of any variable-length codec (cuda/common/varlen_kernels.cuh).
#include "cuda/common/common_kernels.cuh"
#include "cuda/common/cuda_check.cuh"
#include "cuda/dispatch/plan.cuh"
#include "cuda/common/varlen_kernels.cuh"
#include "cuda/topk/rice_kernels.cuh"

#include <cub/device/device_scan.cuh>

#include <algorithm>

namespace gcomp::cuda::detail {

namespace {

int64_t rice_groups(const DevicePlan& plan) { return plan.rice_dir + (plan.k > 0 ? 1 : 0); }

void exclusive_sum(const DevicePlan& plan, const Workspace& ws, const int64_t* in, int64_t* out, int64_t items,
                   cudaStream_t stream) {
  if (items <= 0) return;
  size_t bytes = plan.rice_scan_temp_bytes;
  GCOMP_CUDA_TRY(cub::DeviceScan::ExclusiveSum(ws.rice_temp, bytes, in, out, items, stream));
}

/// Group sums and their exclusive scan (ws.rice_len: sums, ws.rice_off: index before each group).
void rice_group_bases(const DevicePlan& plan, const Workspace& ws, const uint8_t* payload, uint64_t base,
                      cudaStream_t stream) {
  const int64_t groups = rice_groups(plan);
  GCOMP_LAUNCH(rice_group_sum_kernel, grid_for(groups, kThreads, plan.max_blocks), kThreads, stream, plan, payload,
               base, ws.rice_len, ws.status);
  exclusive_sum(plan, ws, ws.rice_len, ws.rice_off, groups, stream);
}

}  // namespace

size_t query_rice_scan_temp_bytes(int64_t items) { return items > 0 ? query_scan_temp_bytes(items) : 0; }

void launch_rice_pack(const DevicePlan& plan, const Workspace& ws, uint8_t* d_payload, cudaStream_t stream) {
  if (plan.k == 0) return;
  const unsigned grid_k = grid_for(plan.k, kThreads, plan.max_blocks);
  GCOMP_LAUNCH(rice_len_kernel, grid_k, kThreads, stream, plan, ws.idx, ws.rice_len, ws.status);
  exclusive_sum(plan, ws, ws.rice_len, ws.rice_off, plan.k, stream);
  GCOMP_LAUNCH(rice_zero_kernel, grid_for(plan.rice_words, kThreads, plan.max_blocks), kThreads, stream, plan,
               d_payload, ws.status);
  GCOMP_LAUNCH(rice_write_kernel, grid_k, kThreads, stream, plan, ws.idx, ws.rice_len, ws.rice_off, d_payload,
               ws.status);
}

void launch_prepare_received(const DevicePlan& plan, const Workspace& ws, uint8_t* d_payloads, size_t stride, int count,
                             const uint64_t* d_sizes, cudaStream_t stream) {
  const int64_t words = static_cast<int64_t>((plan.varlen.full_bytes + 3u) / 4u);
  GCOMP_LAUNCH(prepare_received_kernel, grid_for(std::max<int64_t>(words, 1) * count, kThreads, plan.max_blocks),
               kThreads, stream, plan.varlen, d_payloads, stride, count, d_sizes, ws.status);
}

void launch_rice_validate(const DevicePlan& plan, const Workspace& ws, const uint8_t* d_payloads, size_t stride,
                          int num_payloads, cudaStream_t stream) {
  if (plan.n == 0) return;
  const unsigned grid_check = grid_for(std::max(std::max(plan.k, plan.rice_dir), std::max(plan.rice_words, int64_t{1})),
                                       kThreads, plan.max_blocks);
  for (int j = 0; j < num_payloads; ++j) {
    const uint8_t* pj = d_payloads + static_cast<size_t>(j) * stride;
    const uint64_t base = static_cast<uint64_t>(j) << 40;
    GCOMP_LAUNCH(rice_check_kernel, grid_check, kThreads, stream, plan, pj, base, ws.status);
    rice_group_bases(plan, ws, pj, base, stream);
    GCOMP_LAUNCH(rice_total_kernel, 1, 1, stream, plan, ws.rice_len, ws.rice_off, base, ws.status);
  }
}

void launch_rice_indices(const DevicePlan& plan, const Workspace& ws, const uint8_t* d_payload, uint64_t base,
                         int64_t* d_idx, cudaStream_t stream) {
  if (plan.k == 0) return;
  rice_group_bases(plan, ws, d_payload, base, stream);
  GCOMP_LAUNCH(rice_indices_kernel, grid_for(rice_groups(plan), kThreads, plan.max_blocks), kThreads, stream, plan,
               d_payload, ws.rice_off, d_idx, ws.status);
}

}  // namespace gcomp::cuda::detail
