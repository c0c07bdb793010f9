// SPDX-License-Identifier: Apache-2.0
/// @file checkpoint.hpp
/// @brief Checkpoint sets: the Session checkpoints of every rank of a job, committed together
/// (DESIGN.md §4 "crash during a checkpoint"; docs/hardening.md "Checkpoint sets").
///
/// A set at `path` is a manifest file `path` and one checkpoint file per rank,
/// `path.s<step>-<nonce>.rank<r>` (Session::save format). The manifest names the step, the world
/// size, a caller-supplied digest of the data the run trains on, a caller text (rank 0's), and the
/// size and FNV-1a 64 digest of every rank file. Writing the manifest (atomically, by rename) is
/// the commit: before it, the previous set is the one the manifest names, whole; after it, the new
/// one. A crash in between leaves rank files that no manifest names, which nothing reads. Loading
/// checks every rank's file against the manifest first, so a mixed set (files of different saves)
/// or a partial one (a file missing or cut short) is refused with a message, on every rank, before
/// any rank loads anything.
#pragma once

#include <gcomp/comm.hpp>
#include <gcomp/session.hpp>

#include <cstdint>
#include <string>

namespace gcomp {

/// What a set holds besides the rank files.
struct CheckpointSetInfo {
  uint64_t step = 0;         ///< Session::step_count() when it was saved
  int world = 0;             ///< number of ranks
  uint64_t data_digest = 0;  ///< as given to save_checkpoint_set
  std::string app;           ///< the caller text given to save_checkpoint_set on rank 0
};

/// @brief Saves every rank's session (and its @p extras) as one set at @p path. Collective over
/// @p comm (the session's communicator). Each rank writes its file (gcomp::io rules: temporary
/// file, fsync, rename) and reads it back for its digest; rank 0 then writes the manifest. After
/// the commit each rank removes its files of older sets at @p path.
/// @param data_digest digest of what the state depends on besides the session configuration (the
///        training data and problem), checked by load_checkpoint_set.
/// @param app caller text stored in the manifest (rank 0's; other ranks may pass anything).
/// @throws gcomp::Error on every rank when any rank fails, with the same message on every rank
///         (each failing rank and its reason); the previous set at @p path is then unchanged and
///         the new files are removed.
void save_checkpoint_set(Communicator& comm, const Session& session, const std::string& path,
                         const Session::Extras& extras = {}, uint64_t data_digest = 0, const std::string& app = {});

/// @brief Loads the set at @p path into every rank's session (and @p extras). Collective. Every rank
/// first checks the manifest and its own file against it; a corrupt manifest, another world size,
/// another @p data_digest, or a rank file that is missing, of another save or cut short makes every
/// rank throw (gcompErrorCorruptPayload, gcompErrorMismatch or gcompErrorIo) before any state
/// changes, with the same message on every rank naming each failing rank and its reason. Then each
/// rank runs Session::load() on its file.
/// @return the manifest's step, world, data digest and caller text.
CheckpointSetInfo load_checkpoint_set(Communicator& comm, Session& session, const std::string& path,
                                      const Session::Extras& extras = {}, uint64_t data_digest = 0);

/// @brief Reads and checks the manifest of the set at @p path (not collective; no rank file read).
/// @throws gcomp::Error(gcompErrorIo / gcompErrorCorruptPayload).
CheckpointSetInfo read_checkpoint_set_info(const std::string& path);

}  // namespace gcomp
