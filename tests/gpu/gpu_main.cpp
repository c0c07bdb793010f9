// SPDX-License-Identifier: Apache-2.0
// main() of gcomp_gpu_tests: without a usable CUDA device, one line with the reason and exit 77
// (CTest's SKIP_RETURN_CODE), instead of running every case only for each to skip. Listing the
// tests (--gtest_list_tests, used to register one CTest test per suite) works without a device.
#include <gcomp/cuda.hpp>

#include <gtest/gtest.h>

#include <cstdio>
#include <string>

int main(int argc, char** argv) {
  testing::InitGoogleTest(&argc, argv);
  std::string why;
  if (!GTEST_FLAG_GET(list_tests) && !gcomp::cuda::device_available(&why)) {
    std::printf("gcomp_gpu_tests: skipped, no CUDA device: %s\n", why.c_str());
    return 77;
  }
  return RUN_ALL_TESTS();
}
