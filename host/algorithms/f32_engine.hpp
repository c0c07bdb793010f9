// SPDX-License-Identifier: Apache-2.0
// The fp32 orchestration of the host-f32 and cuda Session backends (spec/ALGORITHMS.md §3.3, §4.3,
// §6, §7, §8; docs/algorithms.md "Backends"), written once over VecOps.
#pragma once

#include "host/algorithms/vec_ops.hpp"

#include <map>
#include <string>
#include <vector>

namespace gcomp::detail {

class F32Engine {
 public:
  /// `shard_begin`: the P + 1 element offsets of the sharded server (empty otherwise); `alpha`:
  /// DIANA's shift step in use. The caller has validated the configuration and checked agreement.
  F32Engine(Communicator& comm, const Layout& layout, const SessionConfig& cfg, double alpha,
            std::vector<int64_t> shard_begin, std::unique_ptr<VecOps> ops);

  /// One round on buffers of the ops' memory space; the update lands in update_buffer().
  StepStats run(const void* grad, GradType type);
  /// Host buffers: uploads the gradient, runs, downloads the update (device: syncs).
  StepStats run_host(const float* h_grad, float* h_update);

  [[nodiscard]] const float* update_buffer() const { return u_; }
  [[nodiscard]] VecOps& ops() { return *ops_; }
  [[nodiscard]] uint64_t step_count() const { return k_; }
  void set_step_count(uint64_t k) { k_ = k; }

  struct Array {
    float* data;
    size_t size;
  };
  [[nodiscard]] const std::map<std::string, Array>& arrays() const { return st_; }

 private:
  RngKey up_key(int r, int shard = -1) const;
  RngKey down_key(int shard = -1) const;
  const std::vector<RngKey>& up_keys(int shard);
  void compress_mean(const float* src, float* err, StepStats& s);
  void two_way_round(const float* p, float* e, float* server_err, float* result, StepStats& s);
  double own_error(const float* src);
  void track(StepStats& s);

  SessionConfig cfg_;
  std::unique_ptr<VecOps> ops_;
  int P_ = 1, rank_ = 0;
  size_t n_ = 0;
  uint64_t k_ = 0;
  float lr_ = 0, mu_ = 0, alpha_ = 0, inv_p_ = 1;
  bool share_scale_ = false;

  int up_ = -1, down_ = -1;              // whole-vector codecs
  std::vector<int> up_shard_, down_shard_;
  std::vector<int64_t> shard_begin_;
  size_t up_bytes_ = 0, down_bytes_ = 0;    // message sizes (sharded: max over shards)
  size_t up_stride_ = 0, down_stride_ = 0;  // rounded up to 4 bytes (device decode_reduce)

  float *gin_ = nullptr, *work_ = nullptr, *tmp_ = nullptr, *tmp2_ = nullptr, *acc_ = nullptr,
        *res_ = nullptr, *u_ = nullptr;
  uint8_t *send_ = nullptr, *recv_ = nullptr, *send2_ = nullptr, *recv2_ = nullptr;
  std::vector<RngKey> keys_;
  std::vector<float> h_a_, h_b_;  // host scratch: hessian callbacks, norms
  std::vector<double> h_d_, h_d2_;

  std::map<std::string, Array> st_;
  // Arrays a step may write, with a copy taken at its start: a step that throws restores them.
  struct Saved {
    std::string name;
    float* copy;
    size_t size;
  };
  std::vector<Saved> rollback_;
};

}  // namespace gcomp::detail
