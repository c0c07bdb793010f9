// SPDX-License-Identifier: Apache-2.0
// The one place that reads the environment (host/common/env.hpp).
#include "host/common/env.hpp"

#include <gcomp/error.hpp>

#include <cerrno>
#include <cstdlib>
#include <string>

namespace gcomp::detail {

std::optional<std::string> env_string(EnvVarId id) {
  const char* text = std::getenv(env_var(id).name);
  if (text == nullptr || *text == '\0') return std::nullopt;
  return std::string(text);
}

std::optional<int64_t> env_int(EnvVarId id) {
  const EnvVar& var = env_var(id);
  GCOMP_EXPECTS(var.type == EnvType::kInt, gcompErrorInternal, std::string(var.name) + " is not an integer variable");
  const std::optional<std::string> text = env_string(id);
  if (!text) return std::nullopt;
  // Digits with an optional minus sign, nothing else (strtoll alone would skip leading blanks).
  const char first = (*text)[0];
  const bool starts_well = (first >= '0' && first <= '9') || first == '-';
  errno = 0;
  char* end = nullptr;
  const long long value = std::strtoll(text->c_str(), &end, 10);
  GCOMP_EXPECTS(starts_well && errno == 0 && end != text->c_str() && *end == '\0' && value >= var.min_value &&
                    value <= var.max_value,
                gcompErrorInvalidArgument,
                std::string(var.name) + " must be an integer in " + std::to_string(var.min_value) + ".." +
                    std::to_string(var.max_value) + ", got \"" + *text + "\"");
  return static_cast<int64_t>(value);
}

}  // namespace gcomp::detail
