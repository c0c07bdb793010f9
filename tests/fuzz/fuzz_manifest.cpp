// SPDX-License-Identifier: Apache-2.0
// libFuzzer target: gcomp::fuzz::manifest (tests/fuzz/fuzz_entry.hpp). A gcomp::Error is an expected
// rejection; any other exception or a broken invariant traps.
#include "fuzz/fuzz_entry.hpp"
#include "fuzz/fuzz_main.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  return gcomp::fuzz::run_one(gcomp::fuzz::manifest, data, size);
}
