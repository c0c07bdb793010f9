// SPDX-License-Identifier: Apache-2.0
/// @file env.hpp
/// @brief Every environment variable gcomp reads, in one table.
///
/// The library, the tools and gcomp-bench read the environment only through env_int() and
/// env_string() with an EnvVarId of this table; no other file reads the environment (EnvRegistryTest
/// checks it, and that docs/environment.md lists every row as written here). A variable that is
/// unset or empty takes its default; a set value that does not parse, or lies outside the row's
/// range, is an error that names the variable, the accepted range and the value (DESIGN.md §4:
/// no silent fallback).
#pragma once

#include <cstdint>
#include <limits>
#include <optional>
#include <string>

namespace gcomp::detail {

/// How a variable's text is read.
enum class EnvType : int {
  kInt = 0,     ///< a decimal integer within [min_value, max_value]
  kString = 1,  ///< any non-empty text (a path, a host name)
};

/// Index of a row of kEnvVars (the rows are in this order).
enum class EnvVarId : int {
  kCpuThreads = 0,
  kCommTimeoutMs,
  kNcclLibrary,
  kNcclIdFile,
  kRank,
  kWorldSize,
  kLocalRank,
  kOmpiCommWorldLocalRank,
  kOmpiCommWorldSize,
  kPmiSize,
  kMasterAddr,
  kMasterPort,
  kCount
};

/// One environment variable: its name, type, accepted range, default and meaning.
struct EnvVar {
  EnvVarId id;
  const char* name;
  EnvType type;
  int64_t min_value;         ///< kInt: smallest accepted value
  int64_t max_value;         ///< kInt: largest accepted value
  const char* default_text;  ///< what applies when the variable is unset or empty
  const char* meaning;
};

inline constexpr int64_t kEnvIntMax = std::numeric_limits<int>::max();

/// The table. docs/environment.md holds the same rows for users; keep both in step.
inline constexpr EnvVar kEnvVars[] = {
    {EnvVarId::kCpuThreads, "GCOMP_CPU_THREADS", EnvType::kInt, 1, 256,
     "the CPUs this process may run on (sched_getaffinity), at most 16",
     "threads one CPU codec call may use (gcomp::cpu_threads(); set_cpu_threads() overrides it)"},
    {EnvVarId::kCommTimeoutMs, "GCOMP_COMM_TIMEOUT_MS", EnvType::kInt, 1, std::numeric_limits<int64_t>::max(),
     "300000 (kDefaultCommTimeoutMs)",
     "how long a communicator waits for its peers, in milliseconds, when the options give 0"},
    {EnvVarId::kNcclLibrary, "GCOMP_NCCL_LIBRARY", EnvType::kString, 0, 0,
     "libnccl.so.2, then the NCCL found at build time",
     "the NCCL shared library loaded on the first use of the nccl backend (read once per process)"},
    {EnvVarId::kNcclIdFile, "GCOMP_NCCL_ID_FILE", EnvType::kString, 0, 0, "none (TCP bootstrap via MASTER_ADDR)",
     "file through which rank 0 hands the NCCL unique id to the other ranks, when NcclOptions::id_file is empty"},
    {EnvVarId::kRank, "RANK", EnvType::kInt, 0, kEnvIntMax, "none (the options' rank)",
     "launcher (torchrun): this process's rank, for the nccl backend"},
    {EnvVarId::kWorldSize, "WORLD_SIZE", EnvType::kInt, 1, kEnvIntMax, "none (the options' world size)",
     "launcher (torchrun): number of ranks, for the nccl backend; gcomp-bench: one rank per process"},
    {EnvVarId::kLocalRank, "LOCAL_RANK", EnvType::kInt, 0, kEnvIntMax, "OMPI_COMM_WORLD_LOCAL_RANK",
     "launcher (torchrun): rank on this node, picks the CUDA device of the nccl backend"},
    {EnvVarId::kOmpiCommWorldLocalRank, "OMPI_COMM_WORLD_LOCAL_RANK", EnvType::kInt, 0, kEnvIntMax,
     "none (rank modulo the number of devices)",
     "launcher (Open MPI mpiexec): rank on this node, when LOCAL_RANK is unset"},
    {EnvVarId::kOmpiCommWorldSize, "OMPI_COMM_WORLD_SIZE", EnvType::kInt, 1, kEnvIntMax, "none",
     "launcher (Open MPI mpiexec): gcomp-bench --backend nccl runs one rank per process when set"},
    {EnvVarId::kPmiSize, "PMI_SIZE", EnvType::kInt, 1, kEnvIntMax, "none",
     "launcher (PMI: MPICH, Slurm): gcomp-bench --backend nccl runs one rank per process when set"},
    {EnvVarId::kMasterAddr, "MASTER_ADDR", EnvType::kString, 0, 0, "none",
     "launcher (torchrun): host of rank 0 for the TCP bootstrap of the nccl backend"},
    {EnvVarId::kMasterPort, "MASTER_PORT", EnvType::kInt, 1, 65535, "none",
     "launcher (torchrun): port of rank 0 for the TCP bootstrap of the nccl backend"},
};

static_assert(sizeof(kEnvVars) / sizeof(kEnvVars[0]) == static_cast<size_t>(EnvVarId::kCount),
              "kEnvVars needs one row per EnvVarId");
constexpr bool env_rows_in_order() {
  for (int i = 0; i < static_cast<int>(EnvVarId::kCount); ++i) {
    if (static_cast<int>(kEnvVars[i].id) != i) return false;
  }
  return true;
}
static_assert(env_rows_in_order(), "kEnvVars rows must follow the order of EnvVarId");

/// The row of @p id.
[[nodiscard]] constexpr const EnvVar& env_var(EnvVarId id) { return kEnvVars[static_cast<int>(id)]; }

/// The value of an integer variable; nullopt when unset or empty.
/// @throws gcomp::Error gcompErrorInvalidArgument when set to anything but a decimal integer in the
///         row's range (the message names the variable, the range and the text).
[[nodiscard]] std::optional<int64_t> env_int(EnvVarId id);

/// The text of a variable; nullopt when unset or empty.
[[nodiscard]] std::optional<std::string> env_string(EnvVarId id);

}  // namespace gcomp::detail
