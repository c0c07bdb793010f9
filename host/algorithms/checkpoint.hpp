// SPDX-License-Identifier: Apache-2.0
// Session checkpoint files: versioned, checksummed, written through a temporary file and rename.
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

namespace gcomp::detail {

struct CheckpointData {
  uint64_t config_digest = 0;
  uint32_t rank = 0;
  uint32_t world = 0;
  uint64_t step = 0;
  std::vector<std::pair<std::string, std::vector<double>>> arrays;
};

/// Layout (little-endian): "GCKP" u32 version=1, u64 config digest, u32 rank, u32 world, u64 step,
/// u32 array count, then per array: u32 name length, name bytes, u64 count, count x f64; last a
/// u32 CRC-32 of everything before it.
void write_checkpoint(const std::string& path, const CheckpointData& data);
/// @throws gcomp::Error gcompErrorIo (unreadable) or gcompErrorCorruptPayload (bad content).
CheckpointData read_checkpoint(const std::string& path);
/// Parses checkpoint bytes (the part of read_checkpoint after reading the file).
CheckpointData parse_checkpoint(const std::vector<uint8_t>& bytes, const std::string& what);

/// The manifest of a checkpoint set (include/gcomp/checkpoint.hpp): what commits the set.
struct SetManifest {
  uint64_t step = 0;
  uint32_t world = 0;
  uint32_t nonce = 0;                                ///< names this save's rank files: <path>.s<step>-<nonce>.rank<r>
  uint64_t data_digest = 0;                          ///< the caller's digest of its data and problem
  std::string app;                                   ///< the caller's text (rank 0's)
  std::vector<std::pair<uint64_t, uint64_t>> files;  ///< per rank: file bytes, FNV-1a 64 of them
};

/// Layout (little-endian): "GCKS" u32 version=1, u64 step, u32 world, u32 nonce, u64 data digest,
/// u64 app length, app bytes, world x (u64 bytes, u64 digest), u32 CRC-32 of everything before it.
std::vector<uint8_t> encode_manifest(const SetManifest& m);
/// @throws gcomp::Error(gcompErrorCorruptPayload) naming @p what and the problem.
SetManifest parse_manifest(const std::vector<uint8_t>& bytes, const std::string& what);

}  // namespace gcomp::detail
