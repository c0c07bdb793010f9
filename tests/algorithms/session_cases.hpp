// SPDX-License-Identifier: Apache-2.0
// One configuration per algorithm variant of the Session, shared by the host-f32 tests
// (tests/algorithms/test_session_f32.cpp) and the cuda-vs-twin GPU tests
// (tests/gpu/test_gpu_session.cpp), so both backends are checked on the same set.
#pragma once

#include <gcomp/error.hpp>
#include <gcomp/session.hpp>

#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace gcomp::test {

struct SessionCase {
  const char* name;
  Algorithm algo;
  const char* codec;
  const char* server_codec;
  double momentum;
  ServerMode server;
  int delay;
  DelayMode delay_mode = DelayMode::kFixed;  ///< kTable: session_case_delay_table()
};

inline constexpr SessionCase kSessionCases[] = {
    {"gd", Algorithm::kGd, "identity", "identity", 0.0, ServerMode::kReplicated, 0},
    {"gd_momentum_delay", Algorithm::kGd, "identity", "identity", 0.5, ServerMode::kReplicated, 2},
    {"qsgd", Algorithm::kCompressedGd, "dither:levels=2,norm=l2,block=8", "identity", 0.0, ServerMode::kReplicated, 0},
    {"terngrad_shared", Algorithm::kCompressedGd, "terngrad", "identity", 0.5, ServerMode::kReplicated, 0},
    {"terngrad_clip_shared", Algorithm::kCompressedGd, "terngrad:clip=2.5", "identity", 0.0, ServerMode::kReplicated,
     0},
    {"compressed_gd_delay", Algorithm::kCompressedGd, "dither:levels=1,norm=linf", "identity", 0.0,
     ServerMode::kReplicated, 3},
    {"signsgd_mv", Algorithm::kSignSgdMv, "sign:scale=none", "identity", 0.0, ServerMode::kReplicated, 0},
    {"ef_sgd_topk", Algorithm::kEfSgd, "topk:k=5", "identity", 0.0, ServerMode::kReplicated, 0},
    {"ef_sgd_sign_momentum", Algorithm::kEfSgd, "sign:block=8", "identity", 0.9, ServerMode::kReplicated, 0},
    {"diana", Algorithm::kDiana, "dither:levels=1,norm=linf,block=8", "identity", 0.0, ServerMode::kReplicated, 0},
    {"diana_momentum", Algorithm::kDiana, "natural", "identity", 0.5, ServerMode::kReplicated, 0},
    {"dist_ef_sgdm_replicated", Algorithm::kDistEfSgdm, "sign:block=8", "sign:block=8", 0.5, ServerMode::kReplicated,
     0},
    {"dist_ef_sgdm_sharded", Algorithm::kDistEfSgdm, "sign:block=8", "sign:block=8", 0.9, ServerMode::kSharded, 0},
    {"doublesqueeze_replicated", Algorithm::kDoubleSqueeze, "randk:k=9", "natural", 0.0, ServerMode::kReplicated, 0},
    {"doublesqueeze_sharded", Algorithm::kDoubleSqueeze, "dither:levels=3,norm=l2", "topk:k=5", 0.0,
     ServerMode::kSharded, 0},
    {"hessian_ec_classical", Algorithm::kHessianEc, "natural", "identity", 0.0, ServerMode::kReplicated, 0},
    {"hessian_ec_full", Algorithm::kHessianEc, "sign:block=16", "identity", 0.0, ServerMode::kReplicated, 0},
    {"hessian_ec_diagonal", Algorithm::kHessianEc, "natural", "identity", 0.0, ServerMode::kReplicated, 0},
    // Spherical codebooks depend on the sender's key (rank, step): the decode-reduce of the ranks'
    // messages must decode message j with rank j's key, replicated and sharded.
    {"compressed_gd_spherical", Algorithm::kCompressedGd, "spherical:block=8,bits=4", "identity", 0.0,
     ServerMode::kReplicated, 0},
    {"dist_ef_sgdm_sharded_spherical", Algorithm::kDistEfSgdm, "spherical:block=8,bits=3", "sign:block=8", 0.5,
     ServerMode::kSharded, 0},
    {"signum", Algorithm::kSignSgdMv, "sign:scale=none", "identity", 0.9, ServerMode::kReplicated, 0},
    {"doublesqueeze_momentum_sharded", Algorithm::kDoubleSqueeze, "sign:block=8", "sign:block=8", 0.9,
     ServerMode::kSharded, 0},
    {"compressed_gd_random_delay", Algorithm::kCompressedGd, "dither:levels=2,norm=l2,block=8", "identity", 0.0,
     ServerMode::kReplicated, 3, DelayMode::kRandom},
    {"ef_sgd_table_delay", Algorithm::kEfSgd, "topk:k=5", "identity", 0.5, ServerMode::kReplicated, 2,
     DelayMode::kTable},
    // Variable-length codecs (issue 16): messages travel at their used size, one-way (allgatherv)
    // and two-way (replicated; sharded: alltoallv up, allgatherv down).
    {"diana_sdither", Algorithm::kDiana, "sdither:levels=1,norm=l2", "identity", 0.0, ServerMode::kReplicated, 0},
    {"ef_sgd_topk_rice", Algorithm::kEfSgd, "topk:k=5,index=rice", "identity", 0.5, ServerMode::kReplicated, 0},
    {"dist_ef_sgdm_replicated_varlen", Algorithm::kDistEfSgdm, "topk:k=7,index=rice", "sdither:levels=2,norm=linf", 0.5,
     ServerMode::kReplicated, 0},
    {"doublesqueeze_sharded_varlen", Algorithm::kDoubleSqueeze, "sdither:levels=1,norm=l2,block=8",
     "topk:k=3,index=rice", 0.0, ServerMode::kSharded, 0},
    // The cuda backend's fused encode inputs: DIANA with a codec that updates the selected
    // elements only (h copied into the second buffer first), EF-SGD's p = lr g + e formed by the
    // dense encoder's scale and quantize passes as they load it.
    {"diana_randk", Algorithm::kDiana, "randk:k=9,unbiased=1", "identity", 0.0, ServerMode::kReplicated, 0},
    {"ef_sgd_dither", Algorithm::kEfSgd, "dither:levels=3,norm=l2,block=8", "identity", 0.0, ServerMode::kReplicated,
     0},
    // The cuda backend's EF encodes without a check pass before them (their memory is the second
    // buffer of the error array): grid's quad kernel and unscaled sign check in their one pass.
    {"ef_sgd_grid", Algorithm::kEfSgd, "grid:step=0.01,bits=8", "identity", 0.0, ServerMode::kReplicated, 0},
    {"ef_sgd_sign_unscaled", Algorithm::kEfSgd, "sign:scale=none", "identity", 0.0, ServerMode::kReplicated, 0},
    // The cuda backend's sparse tile merge with the Session step in its store: topk index words
    // under the two-way server's p~ = e~ + mean, randk's downlink decode times a (replicated).
    {"doublesqueeze_replicated_topk", Algorithm::kDoubleSqueeze, "topk:k=9", "randk:k=7,unbiased=0", 0.0,
     ServerMode::kReplicated, 0},
    // DIANA with topk: the cuda backend's scatter writes every element of the new h (h itself where
    // not selected) instead of a copy of h first.
    {"diana_topk", Algorithm::kDiana, "topk:k=7", "identity", 0.0, ServerMode::kReplicated, 0},
};

/// The delay table of the kTable cases: 12 delays in [0, 2], whole rows for 1, 2, 3, 4 or 6 ranks.
inline std::vector<int32_t> session_case_delay_table() { return {0, 2, 1, 1, 0, 2, 2, 2, 0, 1, 0, 0}; }

/// The case called `name` (a test-suite typo is a hard failure, not a silent default).
inline const SessionCase& session_case(std::string_view name) {
  for (const SessionCase& c : kSessionCases)
    if (name == c.name) return c;
  GCOMP_FAIL(gcompErrorInvalidArgument, "no session test case named " + std::string(name));
}

/// The case's configuration: lr 0.05, seed 19, `backend`. hessian-ec gets H = 1.375 I (the mean
/// Hessian of the test objectives, whose rank-r gradient is (x - c)(1 + r/4) over 4 ranks) and,
/// for the diagonal variant, a non-uniform diagonal around it.
inline SessionConfig session_case_config(const SessionCase& c, Backend backend) {
  SessionConfig cfg;
  cfg.algorithm = c.algo;
  cfg.codec = c.codec;
  cfg.server_codec = c.server_codec;
  cfg.momentum = c.momentum;
  cfg.server = c.server;
  cfg.delay = c.delay;
  cfg.delay_mode = c.delay_mode;
  if (c.delay_mode == DelayMode::kTable) cfg.delay_table = session_case_delay_table();
  cfg.lr = 0.05;
  cfg.seed = 19;
  cfg.backend = backend;
  // A biased codec has no auto alpha (1/(omega + 1)): DIANA with topk takes a fixed one.
  if (c.algo == Algorithm::kDiana && std::string_view(c.codec).starts_with("topk")) cfg.alpha = 0.25;
  if (c.algo == Algorithm::kHessianEc) {
    const std::string_view name = c.name;
    cfg.compensation = name == "hessian_ec_full"       ? Compensation::kHessian
                       : name == "hessian_ec_diagonal" ? Compensation::kDiagonal
                                                       : Compensation::kClassical;
    cfg.hessian_product = [](std::span<const double> v, std::span<double> out) {
      for (size_t i = 0; i < v.size(); ++i) out[i] = 1.375 * v[i];
    };
    cfg.hessian_diagonal = [](std::span<double> out) {
      for (size_t i = 0; i < out.size(); ++i) out[i] = 1.375 + 0.01 * static_cast<double>(i % 9);
    };
  }
  return cfg;
}

}  // namespace gcomp::test
