// SPDX-License-Identifier: Apache-2.0
// NCCL resolved at run time with dlopen (nccl_loader.hpp). Linking libnccl instead would bind the
// process to whichever libnccl.so.2 the loader sees first; a second NCCL with the same soname
// (PyTorch's pip wheel ships one) is then never loaded, and its users fail on missing symbols.
#include "host/comm/nccl_loader.hpp"

#include "host/common/env.hpp"

#include <gcomp/error.hpp>

#include <dlfcn.h>
#include <link.h>

#include <optional>
#include <cstdlib>
#include <string>
#include <vector>

// The NCCL found next to the CUDA toolkit at configure time (host/comm/CMakeLists.txt), tried last.
#if !defined(GCOMP_NCCL_FALLBACK_PATH)
#define GCOMP_NCCL_FALLBACK_PATH ""
#endif

namespace gcomp::detail {
namespace {

constexpr const char* kSoname = "libnccl.so.2";

struct LoadResult {
  NcclApi api;
  std::string error;  // empty on success
};

std::string last_dl_error() {
  const char* text = ::dlerror();
  return text != nullptr ? text : "unknown dynamic loader error";
}

/// dlopen with RTLD_LOCAL: NCCL's symbols stay out of the global namespace, so they never
/// interpose on another copy that a later library brings along.
void* open_library(const std::string& name, std::string* why) {
  static_cast<void>(::dlerror());
  void* handle = ::dlopen(name.c_str(), RTLD_NOW | RTLD_LOCAL);
  if (handle == nullptr) *why = last_dl_error();
  return handle;
}

std::string loaded_path(void* handle, const std::string& fallback) {
  const link_map* map = nullptr;
  if (::dlinfo(handle, RTLD_DI_LINKMAP, &map) == 0 && map != nullptr && map->l_name != nullptr &&
      map->l_name[0] != '\0') {
    return map->l_name;
  }
  return fallback;
}

template <class Fn>
bool resolve(void* handle, const char* symbol, Fn* out, std::string* why) {
  static_cast<void>(::dlerror());
  void* address = ::dlsym(handle, symbol);
  if (address == nullptr) {
    *why = std::string("it has no ") + symbol + " (" + last_dl_error() + ")";
    return false;
  }
  *out = reinterpret_cast<Fn>(address);
  return true;
}

/// Resolves every entry point and checks the version; "" on success, else why not.
std::string bind_api(void* handle, NcclApi* api) {
  std::string why;
  const bool ok = resolve(handle, "ncclGetVersion", &api->GetVersion, &why) &&
                  resolve(handle, "ncclGetUniqueId", &api->GetUniqueId, &why) &&
                  resolve(handle, "ncclCommInitRankConfig", &api->CommInitRankConfig, &why) &&
                  resolve(handle, "ncclCommFinalize", &api->CommFinalize, &why) &&
                  resolve(handle, "ncclCommDestroy", &api->CommDestroy, &why) &&
                  resolve(handle, "ncclCommAbort", &api->CommAbort, &why) &&
                  resolve(handle, "ncclCommGetAsyncError", &api->CommGetAsyncError, &why) &&
                  resolve(handle, "ncclGetErrorString", &api->GetErrorString, &why) &&
                  resolve(handle, "ncclGetLastError", &api->GetLastError, &why) &&
                  resolve(handle, "ncclAllGather", &api->AllGather, &why) &&
                  resolve(handle, "ncclAllReduce", &api->AllReduce, &why) &&
                  resolve(handle, "ncclBroadcast", &api->Broadcast, &why) &&
                  resolve(handle, "ncclSend", &api->Send, &why) && resolve(handle, "ncclRecv", &api->Recv, &why) &&
                  resolve(handle, "ncclGroupStart", &api->GroupStart, &why) &&
                  resolve(handle, "ncclGroupEnd", &api->GroupEnd, &why);
  if (!ok) return why;
  int version = 0;
  const ncclResult_t rc = api->GetVersion(&version);
  if (rc != ncclSuccess) {
    return "ncclGetVersion failed with NCCL result " + std::to_string(static_cast<int>(rc));
  }
  if (version < kMinNcclVersionCode) {
    return "it is NCCL " + nccl_version_string(version) + "; the nccl backend needs NCCL " +
           nccl_version_string(kMinNcclVersionCode) +
           " or newer (non-blocking ncclCommInitRankConfig, ncclCommFinalize)";
  }
  api->version = version;
  return {};
}

LoadResult load() {
  LoadResult result;
  const std::optional<std::string> forced = env_string(EnvVarId::kNcclLibrary);
  std::vector<std::string> candidates;
  if (forced) {
    candidates.push_back(*forced);
  } else {
    candidates.emplace_back(kSoname);
    const std::string fallback = GCOMP_NCCL_FALLBACK_PATH;
    if (!fallback.empty() && fallback != kSoname) candidates.push_back(fallback);
  }

  std::string attempts;
  for (const std::string& name : candidates) {
    std::string why;
    void* handle = open_library(name, &why);
    if (handle != nullptr) {
      const std::string path = loaded_path(handle, name);
      why = bind_api(handle, &result.api);
      if (why.empty()) {
        result.api.path = path;  // the handle stays open for the life of the process
        return result;
      }
      result.api = NcclApi{};
      static_cast<void>(::dlclose(handle));
      why = path + ": " + why;
    }
    if (!attempts.empty()) attempts += "; ";
    attempts += why;
  }
  if (forced) {
    result.error = "cannot use NCCL from GCOMP_NCCL_LIBRARY=" + candidates.front() + ": " + attempts;
  } else {
    std::string tried;
    for (const std::string& name : candidates) tried += (tried.empty() ? "" : ", ") + name;
    result.error = "cannot use NCCL (tried " + tried + "): " + attempts +
                   "; install NCCL or set GCOMP_NCCL_LIBRARY to the path of a libnccl.so.2";
  }
  return result;
}

const LoadResult& loaded() {
  static const LoadResult result = load();  // initialized once, thread-safe
  return result;
}

}  // namespace

const NcclApi& nccl_api() {
  const LoadResult& result = loaded();
  if (!result.error.empty()) GCOMP_FAIL(gcompErrorNotSupported, result.error);
  return result.api;
}

std::string nccl_load_error() { return loaded().error; }

std::string nccl_version_string(int code) {
  // NCCL_VERSION(X, Y, Z): X*1000 + Y*100 + Z up to 2.8, X*10000 + Y*100 + Z from 2.9 on.
  const int major = code >= 10000 ? code / 10000 : code / 1000;
  const int minor = code >= 10000 ? (code % 10000) / 100 : (code % 1000) / 100;
  return std::to_string(major) + "." + std::to_string(minor) + "." + std::to_string(code % 100);
}

}  // namespace gcomp::detail
