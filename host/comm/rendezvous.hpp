// SPDX-License-Identifier: Apache-2.0
/// @file rendezvous.hpp
/// @brief Host-only bootstrap helpers: reading the launcher variables and handing a small blob
/// (the NCCL unique id) from rank 0 to every other rank over TCP or through a shared file.
/// Independent of CUDA and NCCL, so they build and are tested everywhere.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>

namespace gcomp::detail {

/// Launcher variables as set by torchrun and cluster launchers.
struct LauncherEnv {
  int rank = -1;            ///< RANK
  int world_size = -1;      ///< WORLD_SIZE
  int local_rank = -1;      ///< LOCAL_RANK, else OMPI_COMM_WORLD_LOCAL_RANK, else -1
  std::string master_addr;  ///< MASTER_ADDR, else ""
  int master_port = -1;     ///< MASTER_PORT, else -1
};

/// Reads the launcher variables. Unset ones keep their defaults; a set but malformed one (not an
/// integer, out of range) throws gcompErrorInvalidArgument naming the variable.
[[nodiscard]] LauncherEnv read_launcher_env();

/// Sends @p blob from rank 0 to ranks 1..world_size-1 over TCP. Rank 0 listens on
/// @p host:@p port and answers each peer's hello (magic, world size, rank) with the blob; peers
/// connect (retrying while rank 0 is not yet listening) and receive into @p blob. Every check
/// (duplicate rank, world-size disagreement, blob size) fails with a message. Gives up with
/// gcompErrorTimeout after @p timeout_ms.
void tcp_broadcast_blob(const std::string& host, int port, int rank, int world_size, std::span<std::byte> blob,
                        int64_t timeout_ms);

/// Sends @p blob from rank 0 to every other rank through the file @p path: rank 0 writes
/// `path.tmp.<pid>` and renames it to @p path (atomic); peers poll until the file exists and read
/// it. The path must be unique to the job: a file left by an earlier job would be read as-is.
/// Gives up with gcompErrorTimeout after @p timeout_ms.
void file_broadcast_blob(const std::string& path, int rank, std::span<std::byte> blob, int64_t timeout_ms);

}  // namespace gcomp::detail
