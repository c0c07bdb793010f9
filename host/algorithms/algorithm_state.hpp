// SPDX-License-Identifier: Apache-2.0
// What every Session backend derives the same way from its configuration: which algorithms have a
// server step, the layout of a server shard, and the state arrays a rank owns (their names are
// the checkpoint's, so the cpu, host-f32 and cuda backends must agree on them).
#pragma once

#include <gcomp/codec.hpp>
#include <gcomp/session.hpp>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

namespace gcomp::detail {

/// dist-ef-sgdm and doublesqueeze compress again on the way back (a server step).
inline bool two_way(Algorithm a) { return a == Algorithm::kDistEfSgdm || a == Algorithm::kDoubleSqueeze; }

/// The segments of `layout` inside elements [begin, end): one piece per segment the range
/// intersects, so blocks restart at the shard boundary; a single empty segment for an empty range.
inline std::vector<int64_t> shard_segments(const Layout& layout, int64_t begin, int64_t end) {
  std::vector<int64_t> segs;
  for (size_t s = 0; s < layout.segments().size(); ++s) {
    const int64_t b = std::max(layout.segment_offset(s), begin);
    const int64_t e = std::min(layout.segment_offset(s + 1), end);
    if (e > b) segs.push_back(e - b);
  }
  if (segs.empty()) segs.push_back(0);
  return segs;
}

/// Name and length of each state array of a rank: n elements each, except the server error of a
/// sharded two-way run (`shard` elements, this rank's shard) and the delay queue (tau + 1 slots).
inline std::vector<std::pair<std::string, size_t>> state_arrays(const SessionConfig& cfg, size_t n, size_t shard) {
  std::vector<std::pair<std::string, size_t>> out;
  const size_t server = cfg.server == ServerMode::kSharded ? shard : n;
  const bool momentum = cfg.momentum > 0;
  switch (cfg.algorithm) {
    case Algorithm::kGd:
    case Algorithm::kCompressedGd:
      if (momentum) out.emplace_back("momentum", n);
      break;
    case Algorithm::kSignSgdMv: break;
    case Algorithm::kEfSgd:
      out.emplace_back("error", n);
      if (momentum) out.emplace_back("momentum", n);
      break;
    case Algorithm::kDiana:
      out.emplace_back("shift_worker", n);
      out.emplace_back("shift_server", n);
      if (momentum) out.emplace_back("momentum", n);
      break;
    case Algorithm::kDistEfSgdm:
      out.emplace_back("error", n);
      out.emplace_back("momentum", n);
      out.emplace_back("server_error", server);
      break;
    case Algorithm::kDoubleSqueeze:
      out.emplace_back("error", n);
      out.emplace_back("server_error", server);
      break;
    case Algorithm::kHessianEc: out.emplace_back("error", n); break;
  }
  if (cfg.delay > 0) out.emplace_back("delay_queue", n * static_cast<size_t>(cfg.delay + 1));
  return out;
}

}  // namespace gcomp::detail
