// SPDX-License-Identifier: Apache-2.0
#include <gcomp/error.hpp>

#include <cstring>

namespace gcomp::detail {

void throw_error(gcompStatus_t status, const char* file, int line, std::string message) {
  const char* base = std::strrchr(file, '/');
  base = base ? base + 1 : file;
  throw Error(status, message + " [" + base + ":" + std::to_string(line) + "]");
}

}  // namespace gcomp::detail

extern "C" int gcompGetVersion(void) { return GCOMP_VERSION_CODE; }

extern "C" const char* gcompGetErrorString(gcompStatus_t status) {
  switch (status) {
    case gcompSuccess: return "success";
    case gcompErrorInvalidArgument: return "invalid argument";
    case gcompErrorNotSupported: return "not supported";
    case gcompErrorWorkspaceTooSmall: return "workspace too small";
    case gcompErrorCorruptPayload: return "corrupt payload";
    case gcompErrorNonFinite: return "non-finite gradient";
    case gcompErrorMismatch: return "configuration mismatch";
    case gcompErrorTimeout: return "timeout";
    case gcompErrorIo: return "i/o error";
    case gcompErrorOutOfMemory: return "out of memory";
    case gcompErrorCuda: return "CUDA error";
    case gcompErrorNccl: return "NCCL error";
    case gcompErrorMpi: return "MPI error";
    case gcompErrorInternal: return "internal error";
  }
  return "unknown status";
}
