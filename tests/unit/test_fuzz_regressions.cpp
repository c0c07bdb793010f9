// SPDX-License-Identifier: Apache-2.0
// Replays every fuzzer reproducer under tests/data/fuzz-regressions/<target>/ (and the seed corpus
// tests/fuzz/corpus/<target>/) through the entry point of that libFuzzer target
// (tests/fuzz/fuzz_entry.hpp). Each input must be accepted or rejected with gcomp::Error; any other
// exception (including a FuzzBug invariant) fails, and a crash or sanitizer report kills the test.
#include "fuzz/fuzz_entry.hpp"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <functional>
#include <iterator>
#include <map>
#include <string>
#include <vector>

namespace {

namespace fs = std::filesystem;
using Entry = std::function<void(std::span<const uint8_t>)>;

const std::map<std::string, Entry>& entries() {
  static const std::map<std::string, Entry> m = {
      {"frame", gcomp::fuzz::frame},           {"raw_decode", gcomp::fuzz::raw_decode},
      {"encode", gcomp::fuzz::encode},         {"spec", gcomp::fuzz::spec},
      {"checkpoint", gcomp::fuzz::checkpoint}, {"manifest", gcomp::fuzz::manifest},
      {"libsvm", gcomp::fuzz::libsvm},         {"capi", gcomp::fuzz::capi},
  };
  return m;
}

std::vector<uint8_t> read_bytes(const fs::path& p) {
  std::ifstream f(p, std::ios::binary);
  return {std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>()};
}

/// Replays every regular file of root/<target>/; returns how many inputs ran.
size_t replay(const fs::path& root) {
  size_t count = 0;
  if (!fs::is_directory(root)) return 0;
  for (const auto& dir : fs::directory_iterator(root)) {
    if (!dir.is_directory()) continue;
    const std::string target = dir.path().filename().string();
    const auto it = entries().find(target);
    EXPECT_NE(it, entries().end()) << "no fuzz entry point named '" << target << "' (folder " << dir.path() << ")";
    if (it == entries().end()) continue;
    std::vector<fs::path> files;
    for (const auto& f : fs::directory_iterator(dir.path()))
      if (f.is_regular_file() && f.path().filename().string()[0] != '.') files.push_back(f.path());
    std::sort(files.begin(), files.end());
    for (const fs::path& file : files) {
      SCOPED_TRACE(file.string());
      const std::vector<uint8_t> bytes = read_bytes(file);
      try {
        it->second(bytes);
      } catch (const gcomp::Error&) {
        // expected rejection
      } catch (const std::exception& e) {
        ADD_FAILURE() << target << ": unexpected exception for " << file << ": " << e.what();
      }
      ++count;
    }
  }
  return count;
}

TEST(FuzzRegressions, ReproducersOnlyRaiseGcompErrors) {
  const size_t n = replay(fs::path(GCOMP_TEST_DATA_DIR) / "fuzz-regressions");
  RecordProperty("inputs", static_cast<int>(n));
  if (n == 0) GTEST_SKIP() << "no reproducers in tests/data/fuzz-regressions";
}

TEST(FuzzRegressions, SeedCorpusOnlyRaisesGcompErrors) {
  const size_t n = replay(fs::path(GCOMP_SOURCE_DIR) / "tests" / "fuzz" / "corpus");
  EXPECT_GT(n, 0u) << "the seed corpus tests/fuzz/corpus is missing";
}

}  // namespace
