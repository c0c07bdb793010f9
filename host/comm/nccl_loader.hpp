// SPDX-License-Identifier: Apache-2.0
/// @file nccl_loader.hpp
/// @brief NCCL loaded at run time (docs/communicators.md "Which NCCL is used"). libgcomp does not
/// link libnccl: the entry points the nccl backend calls are resolved once, on first use, with
/// dlopen. nccl.h is used for its types only; calling an nccl* function directly is a link error.
///
/// Search order: the file named by the environment variable GCOMP_NCCL_LIBRARY when it is set
/// (nothing else is tried then); else "libnccl.so.2", which is the NCCL already in the process
/// when there is one (e.g. PyTorch's) and otherwise follows the dynamic loader's search; else the
/// NCCL found next to the CUDA toolkit when gcomp was configured.
#pragma once

#include <nccl.h>

#include <string>

namespace gcomp::detail {

/// Oldest NCCL the backend supports: ncclCommInitRankConfig with a non-blocking ncclConfig_t,
/// ncclCommFinalize and ncclGetLastError (NCCL 2.14).
inline constexpr int kMinNcclVersionCode = 21400;

/// The NCCL functions the nccl backend uses, resolved from one loaded library.
struct NcclApi {
  decltype(&::ncclGetVersion) GetVersion = nullptr;
  decltype(&::ncclGetUniqueId) GetUniqueId = nullptr;
  decltype(&::ncclCommInitRankConfig) CommInitRankConfig = nullptr;
  decltype(&::ncclCommFinalize) CommFinalize = nullptr;
  decltype(&::ncclCommDestroy) CommDestroy = nullptr;
  decltype(&::ncclCommAbort) CommAbort = nullptr;
  decltype(&::ncclCommGetAsyncError) CommGetAsyncError = nullptr;
  decltype(&::ncclGetErrorString) GetErrorString = nullptr;
  decltype(&::ncclGetLastError) GetLastError = nullptr;
  decltype(&::ncclAllGather) AllGather = nullptr;
  decltype(&::ncclAllReduce) AllReduce = nullptr;
  decltype(&::ncclBroadcast) Broadcast = nullptr;
  decltype(&::ncclSend) Send = nullptr;
  decltype(&::ncclRecv) Recv = nullptr;
  decltype(&::ncclGroupStart) GroupStart = nullptr;
  decltype(&::ncclGroupEnd) GroupEnd = nullptr;

  int version = 0;   ///< ncclGetVersion of the loaded library (e.g. 22809 for 2.28.9)
  std::string path;  ///< file the library was loaded from, as the dynamic loader reports it
};

/// The NCCL entry points, loaded on the first call (thread-safe; the outcome, success or failure,
/// is kept for the life of the process, and GCOMP_NCCL_LIBRARY is read only then).
/// @throws gcomp::Error(gcompErrorNotSupported) naming the library tried and dlerror() when NCCL
///         cannot be loaded, lacks an entry point, or is older than kMinNcclVersionCode.
[[nodiscard]] const NcclApi& nccl_api();

/// Empty when nccl_api() succeeds, else its error message. Loads NCCL on the first call.
[[nodiscard]] std::string nccl_load_error();

/// "2.28.9" for an ncclGetVersion code.
[[nodiscard]] std::string nccl_version_string(int code);

}  // namespace gcomp::detail
