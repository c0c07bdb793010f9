// SPDX-License-Identifier: Apache-2.0
// The environment registry (host/common/env.hpp): parsing and range errors, the table in
// docs/environment.md row for row, and no getenv outside host/common/env.cpp.
#include "host/common/env.hpp"

#include <gcomp/error.hpp>

#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <limits>
#include <sstream>
#include <string>
#include <vector>

namespace {

using gcomp::detail::env_int;
using gcomp::detail::env_string;
using gcomp::detail::EnvType;
using gcomp::detail::EnvVar;
using gcomp::detail::EnvVarId;
using gcomp::detail::kEnvVars;

std::string read_text(const std::filesystem::path& path) {
  std::ifstream f(path, std::ios::binary);
  std::stringstream s;
  s << f.rdbuf();
  return s.str();
}

/// The docs row of one variable: | `NAME` | type | accepted | default | meaning |
std::string docs_row(const EnvVar& v) {
  std::string accepted = "text";
  if (v.type == EnvType::kInt) {
    const bool open = v.max_value >= gcomp::detail::kEnvIntMax;
    accepted = open ? "integer >= " + std::to_string(v.min_value)
                    : "integer " + std::to_string(v.min_value) + ".." + std::to_string(v.max_value);
  }
  return std::string("| `") + v.name + "` | " + accepted + " | " + v.default_text + " | " + v.meaning + " |";
}

class ScopedEnv {
 public:
  ScopedEnv(const char* name, const char* value) : name_(name) {
    if (const char* old = std::getenv(name)) old_ = old, had_ = true;
    if (value != nullptr) {
      ::setenv(name, value, 1);
    } else {
      ::unsetenv(name);
    }
  }
  ~ScopedEnv() {
    if (had_) {
      ::setenv(name_, old_.c_str(), 1);
    } else {
      ::unsetenv(name_);
    }
  }

 private:
  const char* name_;
  std::string old_;
  bool had_ = false;
};

TEST(EnvRegistryTest, IntegersParseWithinTheirRangeAndElseNameTheVariable) {
  {
    const ScopedEnv e("MASTER_PORT", nullptr);
    EXPECT_FALSE(env_int(EnvVarId::kMasterPort).has_value());
  }
  {
    const ScopedEnv e("MASTER_PORT", "");
    EXPECT_FALSE(env_int(EnvVarId::kMasterPort).has_value());
  }
  {
    const ScopedEnv e("MASTER_PORT", "29500");
    EXPECT_EQ(env_int(EnvVarId::kMasterPort), 29500);
  }
  for (const char* bad : {"0", "65536", "-1", "12x", "x", " 80", "99999999999999999999999"}) {
    const ScopedEnv e("MASTER_PORT", bad);
    try {
      static_cast<void>(env_int(EnvVarId::kMasterPort));
      ADD_FAILURE() << "MASTER_PORT=" << bad << " was accepted";
    } catch (const gcomp::Error& err) {
      EXPECT_EQ(err.status(), gcompErrorInvalidArgument) << bad;
      const std::string what = err.what();
      EXPECT_NE(what.find("MASTER_PORT must be an integer in 1..65535"), std::string::npos) << what;
      EXPECT_NE(what.find(std::string("\"") + bad + "\""), std::string::npos) << what;
    }
  }
}

TEST(EnvRegistryTest, StringsAreUnsetWhenEmpty) {
  {
    const ScopedEnv e("GCOMP_NCCL_ID_FILE", "");
    EXPECT_FALSE(env_string(EnvVarId::kNcclIdFile).has_value());
  }
  const ScopedEnv e("GCOMP_NCCL_ID_FILE", "/tmp/id");
  EXPECT_EQ(env_string(EnvVarId::kNcclIdFile), "/tmp/id");
}

TEST(EnvRegistryTest, DocsTableMatchesTheCodeTable) {
  const std::string docs = read_text(std::filesystem::path(GCOMP_SOURCE_DIR) / "docs" / "environment.md");
  const std::string begin = "<!-- env-table: generated from host/common/env.hpp, checked by EnvRegistryTest -->";
  const size_t a = docs.find(begin);
  ASSERT_NE(a, std::string::npos) << "docs/environment.md lacks the marker " << begin;
  const size_t b = docs.find("<!-- end env-table -->", a);
  ASSERT_NE(b, std::string::npos);
  std::vector<std::string> rows;
  std::istringstream lines(docs.substr(a + begin.size(), b - a - begin.size()));
  for (std::string line; std::getline(lines, line);) {
    if (line.rfind("| `", 0) == 0) rows.push_back(line);
  }
  ASSERT_EQ(rows.size(), std::size(kEnvVars)) << "docs/environment.md and kEnvVars list different variables";
  for (size_t i = 0; i < rows.size(); ++i) EXPECT_EQ(rows[i], docs_row(kEnvVars[i])) << "row " << i;
}

TEST(EnvRegistryTest, NothingElseReadsTheEnvironment) {
  const std::filesystem::path root(GCOMP_SOURCE_DIR);
  std::vector<std::string> offenders;
  int scanned = 0;
  for (const char* dir : {"bench", "cuda", "examples", "host", "include", "python", "tools"}) {
    if (!std::filesystem::exists(root / dir)) continue;
    for (const auto& entry : std::filesystem::recursive_directory_iterator(root / dir)) {
      const std::string ext = entry.path().extension().string();
      if (!entry.is_regular_file() ||
          (ext != ".c" && ext != ".h" && ext != ".cpp" && ext != ".hpp" && ext != ".cu" && ext != ".cuh")) {
        continue;
      }
      const std::string rel = std::filesystem::relative(entry.path(), root).generic_string();
      if (rel == "host/common/env.cpp") continue;
      ++scanned;
      if (read_text(entry.path()).find("getenv") != std::string::npos) offenders.push_back(rel);
    }
  }
  EXPECT_GT(scanned, 50);
  EXPECT_TRUE(offenders.empty()) << "read the environment through host/common/env.hpp instead: "
                                 << ::testing::PrintToString(offenders);
}

}  // namespace
