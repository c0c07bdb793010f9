// SPDX-License-Identifier: Apache-2.0
// libFuzzer target: gcomp::fuzz::encode (tests/fuzz/fuzz_entry.hpp): every codec's encode on
// arbitrary float bits. A gcomp::Error is an expected rejection; any other exception or a broken
// invariant (a finite input called non-finite, a finite input decoding to Inf) traps.
#include "fuzz/fuzz_entry.hpp"
#include "fuzz/fuzz_main.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  return gcomp::fuzz::run_one(gcomp::fuzz::encode, data, size);
}
