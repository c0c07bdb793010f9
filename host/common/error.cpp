// SPDX-License-Identifier: Apache-2.0
#include <gcomp/error.hpp>

#include <cstring>

namespace gcomp {

std::string printable(std::string_view text, size_t max_chars) {
  std::string out;
  const size_t shown = text.size() < max_chars ? text.size() : max_chars;
  out.reserve(shown);
  static const char kHex[] = "0123456789abcdef";
  for (size_t i = 0; i < shown; ++i) {
    const auto c = static_cast<unsigned char>(text[i]);
    if (c >= 0x20 && c < 0x7f) {
      out += static_cast<char>(c);
    } else {
      out += "\\x";
      out += kHex[c >> 4];
      out += kHex[c & 15];
    }
  }
  if (shown < text.size()) out += "... (" + std::to_string(text.size()) + " bytes)";
  return out;
}

}  // namespace gcomp

namespace gcomp::detail {

void throw_error(gcompStatus_t status, const char* file, int line, std::string message) {
  const char* base = std::strrchr(file, '/');
  base = base ? base + 1 : file;
  // what() is read as a C string: a NUL inside would cut the message short.
  if (message.find('\0') != std::string::npos) {
    std::string safe;
    for (const char c : message) safe += c == '\0' ? std::string("\\x00") : std::string(1, c);
    message = std::move(safe);
  }
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
