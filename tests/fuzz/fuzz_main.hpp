// SPDX-License-Identifier: Apache-2.0
/// @file fuzz_main.hpp
/// @brief The libFuzzer side of an entry point: gcomp::Error is an expected rejection, anything
/// else (another exception, a FuzzBug) prints its message and traps so that libFuzzer records the
/// input as a crash.
#pragma once

#include <gcomp/error.hpp>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <exception>
#include <span>

namespace gcomp::fuzz {

template <class Entry>
int run_one(Entry&& entry, const uint8_t* data, size_t size) {
  try {
    entry(std::span<const uint8_t>(data, size));
  } catch (const gcomp::Error&) {
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "gcomp fuzz: unexpected exception: %s\n", e.what());
    __builtin_trap();
  } catch (...) {
    std::fprintf(stderr, "gcomp fuzz: unexpected non-standard exception\n");
    __builtin_trap();
  }
  return 0;
}

}  // namespace gcomp::fuzz
