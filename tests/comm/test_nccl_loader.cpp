// SPDX-License-Identifier: Apache-2.0
// NCCL loaded at run time (host/comm/nccl_loader.cpp). No GPU needed: make_nccl_communicator()
// loads NCCL before any rendezvous or device check. The outcome of loading is kept for the life
// of a process, so each case with its own GCOMP_NCCL_LIBRARY runs in a fresh process (a
// "threadsafe" death test re-executes this binary with only that case selected).
#include <gcomp/comm.hpp>

#include <gtest/gtest.h>

#include <cstdio>
#include <cstdlib>
#include <string>

namespace {

constexpr const char* kMissing = "/nonexistent/gcomp-test/libnccl-missing.so.2";

/// In the child: creates a one-rank communicator (file bootstrap, so nothing waits for a peer)
/// with GCOMP_NCCL_LIBRARY=@p library and exits 0 when it fails with gcompErrorNotSupported
/// naming @p library, printing the message; exits 1 otherwise.
[[noreturn]] void expect_not_supported_in_child(const char* library) {
  ::setenv("GCOMP_NCCL_LIBRARY", library, 1);
  gcomp::NcclOptions options;
  options.bootstrap = gcomp::NcclBootstrap::kFile;
  options.rank = 0;
  options.world_size = 1;
  options.id_file = "/nonexistent/gcomp-test/nccl-id";
  options.timeout_ms = 1000;
  try {
    const auto comm = gcomp::make_nccl_communicator(options);
    std::fprintf(stderr, "make_nccl_communicator succeeded\n");
  } catch (const gcomp::Error& e) {
    const std::string message = e.what();
    const std::string unusable = gcomp::nccl_unusable();
    std::fprintf(stderr, "status %d: %s\nnccl_unusable: %s\n", static_cast<int>(e.status()), message.c_str(),
                 unusable.c_str());
    const bool ok = e.status() == gcompErrorNotSupported && message.find(library) != std::string::npos &&
                    message.find("make_nccl_communicator") != std::string::npos &&
                    unusable.find(library) != std::string::npos && gcomp::nccl_library().empty() &&
                    gcomp::nccl_version() == 0;
    std::exit(ok ? 0 : 1);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "unexpected exception: %s\n", e.what());
  }
  std::exit(1);
}

class CommNcclLoaderTest : public testing::Test {
 protected:
  void SetUp() override { GTEST_FLAG_SET(death_test_style, "threadsafe"); }
};

TEST_F(CommNcclLoaderTest, MissingLibraryIsNotSupportedAndNamesThePath) {
  const std::string expected = "status " + std::to_string(gcompErrorNotSupported) +
                               ": make_nccl_communicator: cannot use NCCL from "
                               "GCOMP_NCCL_LIBRARY=/nonexistent/gcomp-test/"
                               "libnccl-missing\\.so\\.2: .*cannot open shared object file";
  EXPECT_EXIT(expect_not_supported_in_child(kMissing), testing::ExitedWithCode(0), expected);
}

TEST_F(CommNcclLoaderTest, LibraryWithoutNcclSymbolsIsNotSupported) {
  // libm is always there and exports no NCCL entry point.
  EXPECT_EXIT(expect_not_supported_in_child("libm.so.6"), testing::ExitedWithCode(0),
              "GCOMP_NCCL_LIBRARY=libm\\.so\\.6: .*libm\\.so\\.6: it has no ncclGetVersion");
}

TEST(CommNcclLoader, DefaultSearchFindsASupportedNccl) {
  if (const char* forced = std::getenv("GCOMP_NCCL_LIBRARY"); forced != nullptr && *forced) {
    GTEST_SKIP() << "GCOMP_NCCL_LIBRARY is set (" << forced << ")";
  }
  // The build found NCCL next to the CUDA toolkit (GCOMP_HAVE_NCCL), so the default search ends
  // with that file at the latest.
  const std::string path = gcomp::nccl_library();
  ASSERT_FALSE(path.empty()) << gcomp::nccl_unusable();
  EXPECT_NE(path.find("libnccl"), std::string::npos) << path;
  EXPECT_GE(gcomp::nccl_version(), 21400);
  const std::string why = gcomp::nccl_unusable();
  EXPECT_TRUE(why.empty() || why.find("CUDA device") != std::string::npos) << why;
}

}  // namespace
