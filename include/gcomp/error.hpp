// SPDX-License-Identifier: Apache-2.0
/// @file error.hpp
/// @brief gcomp::Error and the precondition macro used throughout the library.
#pragma once

#include <gcomp/gcomp.h>

#include <stdexcept>
#include <string>
#include <string_view>

namespace gcomp {

/// Exception thrown by the C++ API. Carries the C status it maps to at the ABI boundary.
class Error : public std::runtime_error {
 public:
  Error(gcompStatus_t status, const std::string& message) : std::runtime_error(message), status_(status) {}
  [[nodiscard]] gcompStatus_t status() const noexcept { return status_; }

 private:
  gcompStatus_t status_;
};

/// @brief @p text made safe to quote in a message: printable ASCII kept, every other byte
/// (control characters and escape sequences, NUL, bytes >= 0x7f) written as \xNN, and at most
/// @p max_chars input bytes shown ("..." and the length after). For text from files and headers.
[[nodiscard]] std::string printable(std::string_view text, size_t max_chars = 240);

namespace detail {
[[noreturn]] void throw_error(gcompStatus_t status, const char* file, int line, std::string message);
}  // namespace detail

}  // namespace gcomp

/// Throws gcomp::Error(status, message) with file:line when `cond` is false.
/// `message` is any expression convertible to std::string.
#define GCOMP_EXPECTS(cond, status, message)                                            \
  do {                                                                                  \
    if (!(cond)) ::gcomp::detail::throw_error((status), __FILE__, __LINE__, (message)); \
  } while (0)

/// Unconditional throw, for switch defaults and parse failures.
#define GCOMP_FAIL(status, message) ::gcomp::detail::throw_error((status), __FILE__, __LINE__, (message))
