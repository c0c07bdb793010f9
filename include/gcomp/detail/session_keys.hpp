// SPDX-License-Identifier: Apache-2.0
/// @file session_keys.hpp
/// @brief Where every message of a Session step draws its random bits, how the sharded server cuts
/// the flat buffer, and the per-(step, worker) delay draw, written once for the engine
/// (host/algorithms/engine.cpp), the device ops and gcomp-bench (docs/algorithms.md "Contract").
///
/// Keys (RngKey = {seed, rank, step, stream_offset}) of the messages of step k:
///  - uplink, whole vector, of rank r:           {seed, r, k, 0}
///  - downlink of the replicated server:         {seed, kServerRankId, k, kStreamDownlink}
///  - uplink of rank r for server shard s:       {seed, r, k, 16 (s + 1)}
///  - downlink of shard s (encoded by rank s):   {seed, s, k, 16 (s + 1) + kStreamDownlink}
/// These values are part of the payload bytes of every randomized codec: never change them.
#pragma once

#include <gcomp/detail/hd.hpp>
#include <gcomp/detail/philox.hpp>

namespace gcomp::detail {

/// RngKey rank of the replicated server's downlink encoder (no worker has this rank).
inline constexpr uint32_t kServerRankId = 0xffffffffu;

/// Stream offset of server shard s's messages (the uplink; + kStreamDownlink on the downlink).
GCOMP_HD uint32_t shard_stream_offset(int shard) { return 16u * static_cast<uint32_t>(shard + 1); }

/// Key of rank r's whole-vector uplink message at step k.
GCOMP_HD RngKey uplink_key(uint64_t seed, uint32_t rank, uint32_t step) { return RngKey{seed, rank, step, 0u}; }

/// Key of rank r's uplink message for server shard s at step k (sharded two-way server).
GCOMP_HD RngKey uplink_shard_key(uint64_t seed, uint32_t rank, uint32_t step, int shard) {
  return RngKey{seed, rank, step, shard_stream_offset(shard)};
}

/// Key of the replicated server's whole-vector downlink message at step k.
GCOMP_HD RngKey downlink_key(uint64_t seed, uint32_t step) {
  return RngKey{seed, kServerRankId, step, static_cast<uint32_t>(kStreamDownlink)};
}

/// Key of shard s's downlink message at step k; rank s encodes it.
GCOMP_HD RngKey downlink_shard_key(uint64_t seed, uint32_t step, int shard) {
  return RngKey{seed, static_cast<uint32_t>(shard), step, shard_stream_offset(shard) + kStreamDownlink};
}

/// First element of server shard r of a flat buffer of n elements over p ranks: floor(r n / p),
/// computed without the overflow of r * n. Shard r is [shard_begin(n, p, r), shard_begin(n, p, r + 1)).
GCOMP_HD int64_t shard_begin(int64_t n, int p, int r) { return (n / p) * r + ((n % p) * r) / p; }

/// Random stream of the per-(step, worker) delay draw (DelayMode::kRandom). Distinct from every
/// codec stream (0..2, +8 on the downlink, +16 (s + 1) per shard).
inline constexpr uint32_t kStreamDelay = 7;

/// The delay tau_k^i in {0, ..., bound} of worker `rank` at step k: Philox word 0 of
/// {seed, rank, k} on kStreamDelay, mapped by (word * (bound + 1)) >> 32 (each value has
/// probability 1/(bound + 1) to within 2^-32). Every rank can compute any rank's delay.
GCOMP_HD uint32_t random_delay(uint64_t seed, uint32_t rank, uint32_t step, uint32_t bound) {
  const uint32_t w = philox_word(RngKey{seed, rank, step, 0u}, kStreamDelay, 0);
  return static_cast<uint32_t>((static_cast<uint64_t>(w) * (static_cast<uint64_t>(bound) + 1u)) >> 32);
}

}  // namespace gcomp::detail
