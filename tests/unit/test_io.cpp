// SPDX-License-Identifier: Apache-2.0
// The output and input rules of include/gcomp/io.hpp (DESIGN.md §4, docs/hardening.md "Files"):
// regular files replaced atomically with their mode kept, special files written through and never
// replaced, links followed, hard links / directories / the input itself refused, a failed write
// (injected with RLIMIT_FSIZE in a child process) leaving the target untouched and no temporary.
#include <gcomp/io.hpp>

#include <gtest/gtest.h>

#include <cerrno>
#include <csignal>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <thread>
#include <vector>

#include <fcntl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>
#include <unistd.h>

namespace {

namespace fs = std::filesystem;
using gcomp::io::OutputOptions;

class IoTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/gcomp-io-test.XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
  }
  void TearDown() override {
    std::error_code ec;
    fs::remove_all(dir_, ec);
  }
  std::string path(const std::string& name) const { return dir_ + "/" + name; }
  static std::string read(const std::string& p) {
    std::ifstream f(p, std::ios::binary);
    return {std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>()};
  }
  static void put(const std::string& p, const std::string& text) { std::ofstream(p, std::ios::binary) << text; }
  static mode_t mode_of(const std::string& p) {
    struct stat st {};
    EXPECT_EQ(::lstat(p.c_str(), &st), 0);
    return st.st_mode;
  }
  /// Names in the directory besides `keep`: temporary files that a write left behind.
  std::vector<std::string> strays(const std::vector<std::string>& keep) const {
    std::vector<std::string> out;
    for (const auto& e : fs::directory_iterator(dir_)) {
      const std::string name = e.path().filename().string();
      if (std::find(keep.begin(), keep.end(), name) == keep.end()) out.push_back(name);
    }
    return out;
  }
  std::string dir_;
};

/// Expects gcomp::Error(gcompErrorIo) whose message contains `part`.
template <class Fn>
void expect_io_error(Fn&& fn, const std::string& part) {
  try {
    fn();
    ADD_FAILURE() << "no error; expected one containing '" << part << "'";
  } catch (const gcomp::Error& e) {
    EXPECT_EQ(e.status(), gcompErrorIo) << e.what();
    EXPECT_NE(std::string(e.what()).find(part), std::string::npos) << e.what();
  }
}

TEST_F(IoTest, NewFileGetsTheUmaskModeAndTheBytes) {
  const mode_t mask = ::umask(022);
  gcomp::io::write_file(path("new.json"), std::string_view("{\"a\": 1}\n"));
  ::umask(mask);
  EXPECT_EQ(read(path("new.json")), "{\"a\": 1}\n");
  EXPECT_EQ(mode_of(path("new.json")) & 07777, 0644u);
  EXPECT_TRUE(strays({"new.json"}).empty());
}

TEST_F(IoTest, RegularFileIsReplacedAndKeepsItsMode) {
  put(path("out"), "old contents that are longer");
  ASSERT_EQ(::chmod(path("out").c_str(), 0600), 0);
  gcomp::io::write_file(path("out"), std::string_view("new"));
  EXPECT_EQ(read(path("out")), "new");
  EXPECT_EQ(mode_of(path("out")) & 07777, 0600u);
  EXPECT_TRUE(strays({"out"}).empty());
}

TEST_F(IoTest, SymlinkIsFollowedAndKept) {
  put(path("target"), "old");
  ASSERT_EQ(::chmod(path("target").c_str(), 0640), 0);
  ASSERT_EQ(::symlink("target", path("link").c_str()), 0);
  gcomp::io::write_file(path("link"), std::string_view("through the link"));
  EXPECT_TRUE(S_ISLNK(mode_of(path("link"))));
  EXPECT_EQ(read(path("target")), "through the link");
  EXPECT_EQ(mode_of(path("target")) & 07777, 0640u);
  ASSERT_EQ(::symlink("missing", path("dangling").c_str()), 0);
  expect_io_error([&] { gcomp::io::write_file(path("dangling"), std::string_view("x")); }, "missing file");
  EXPECT_FALSE(fs::exists(path("missing")));
}

TEST_F(IoTest, RefusedTargetsAreLeftAlone) {
  put(path("a"), "first name");
  ASSERT_EQ(::link(path("a").c_str(), path("b").c_str()), 0);
  expect_io_error([&] { gcomp::io::write_file(path("b"), std::string_view("x")); }, "2 hard links");
  EXPECT_EQ(read(path("a")), "first name");
  fs::create_directory(path("sub"));
  expect_io_error([&] { gcomp::io::write_file(path("sub"), std::string_view("x")); }, "is a directory");
  expect_io_error([&] { gcomp::io::write_file(path("nodir/x"), std::string_view("x")); }, "No such file");
  expect_io_error([&] { gcomp::io::write_file(path("a/x"), std::string_view("x")); }, "Not a directory");
  EXPECT_TRUE(strays({"a", "b", "sub"}).empty());
}

TEST_F(IoTest, TheInputIsNeverOverwritten) {
  put(path("in.f32"), "input bytes");
  ASSERT_EQ(::symlink("in.f32", path("alias").c_str()), 0);
  const OutputOptions opt{"--out", {path("alias")}, true};
  expect_io_error([&] { gcomp::io::check_output(path("in.f32"), opt); }, "same file as the input");
  expect_io_error([&] { gcomp::io::write_file(path("in.f32"), std::string_view("x"), opt); }, "same file as the input");
  EXPECT_EQ(read(path("in.f32")), "input bytes");
  EXPECT_TRUE(gcomp::io::same_file(path("alias"), path("in.f32")));
  EXPECT_FALSE(gcomp::io::same_file(path("alias"), path("nothing")));
}

TEST_F(IoTest, FifoIsWrittenThroughNeverReplaced) {
  ASSERT_EQ(::mkfifo(path("fifo").c_str(), 0600), 0);
  // Nobody reads: refused at once instead of blocking.
  expect_io_error([&] { gcomp::io::write_file(path("fifo"), std::string_view("x")); }, "nobody reads");
  std::string got;
  std::thread reader([&] { got = read(path("fifo")); });
  // The reader opens the FIFO asynchronously: retry until it is there.
  for (int i = 0;; ++i) {
    try {
      gcomp::io::write_file(path("fifo"), std::string_view("through the fifo"));
      break;
    } catch (const gcomp::Error&) {
      ASSERT_LT(i, 500) << "the reader never opened the FIFO";
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
  }
  reader.join();
  EXPECT_EQ(got, "through the fifo");
  EXPECT_TRUE(S_ISFIFO(mode_of(path("fifo"))));
}

TEST_F(IoTest, CharacterDeviceIsWrittenThroughAndAFailedWriteIsAnError) {
  // A private node of the full device (1, 7): every write fails with ENOSPC. Needs CAP_MKNOD.
  if (::mknod(path("full").c_str(), S_IFCHR | 0600, makedev(1, 7)) != 0)
    GTEST_SKIP() << "mknod of a character device is not permitted here (" << std::strerror(errno) << ")";
  expect_io_error([&] { gcomp::io::write_file(path("full"), std::string_view("x")); }, "No space left");
  EXPECT_TRUE(S_ISCHR(mode_of(path("full"))));
  EXPECT_TRUE(strays({"full"}).empty());
}

TEST_F(IoTest, FailedWriteLeavesTheTargetAndNoTemporary) {
  put(path("keep.json"), "previous results");
  // A child process with a 1 KiB file size limit (SIGXFSZ ignored, so write() fails with EFBIG)
  // writes 64 KiB: the write fails, the old file stays and the temporary file is removed.
  const pid_t pid = ::fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    std::signal(SIGXFSZ, SIG_IGN);
    const rlimit lim{1024, 1024};
    ::setrlimit(RLIMIT_FSIZE, &lim);
    try {
      gcomp::io::write_file(path("keep.json"), std::string(65536, 'x'));
    } catch (const gcomp::Error& e) {
      _exit(std::string(e.what()).find("write failed") != std::string::npos ? 3 : 4);
    }
    _exit(0);
  }
  int status = 0;
  ASSERT_EQ(::waitpid(pid, &status, 0), pid);
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 3) << "3: the write failed with a message; 0: it claimed success";
  EXPECT_EQ(read(path("keep.json")), "previous results");
  EXPECT_TRUE(strays({"keep.json"}).empty());
}

TEST_F(IoTest, CheckOutputProbesWithoutLeavingFiles) {
  const gcomp::io::OutputTarget t = gcomp::io::check_output(path("later.json"));
  EXPECT_EQ(t.kind, gcomp::io::OutputKind::kNew);
  put(path("old"), "x");
  EXPECT_EQ(gcomp::io::check_output(path("old")).kind, gcomp::io::OutputKind::kRegular);
  EXPECT_TRUE(strays({"old"}).empty());
}

TEST_F(IoTest, InputsAreBounded) {
  fs::create_directory(path("d"));
  expect_io_error([&] { gcomp::io::InputFile f(path("d"), "--in"); }, "is a directory");
  expect_io_error([&] { gcomp::io::InputFile f(path("none"), "--in"); }, "cannot open");
  put(path("small"), "0123456789");
  {
    gcomp::io::InputFile f(path("small"), "--in");
    EXPECT_TRUE(f.regular());
    EXPECT_EQ(f.read_all(10, "the limit").size(), 10u);
  }
  {
    gcomp::io::InputFile f(path("small"), "--in");
    expect_io_error([&] { (void)f.read_all(9, "the limit"); }, "more than the limit");
  }
  // A pipe that never ends is cut at the limit (the writer then sees EPIPE, not SIGPIPE).
  const auto old_pipe = std::signal(SIGPIPE, SIG_IGN);
  ASSERT_EQ(::mkfifo(path("pipe").c_str(), 0600), 0);
  std::thread writer([&] {
    const int fd = ::open(path("pipe").c_str(), O_WRONLY);
    const std::string chunk(4096, 'z');
    for (int i = 0; i < 64; ++i)
      if (::write(fd, chunk.data(), chunk.size()) < 0) break;
    ::close(fd);
  });
  {
    gcomp::io::InputFile f(path("pipe"), "--in");
    EXPECT_FALSE(f.regular());
    expect_io_error([&] { (void)f.read_all(100000, "the limit"); }, "not a regular file");
  }
  writer.join();
  std::signal(SIGPIPE, old_pipe);
}

TEST(IoMemory, AllocationsBeyondMemoryAreRefusedBeforehand) {
  try {
    gcomp::io::check_allocation(UINT64_MAX - 1, "a payload claiming 2^62 elements");
    if (gcomp::io::available_memory() != UINT64_MAX) ADD_FAILURE() << "no error";
  } catch (const gcomp::Error& e) {
    EXPECT_EQ(e.status(), gcompErrorOutOfMemory);
    EXPECT_NE(std::string(e.what()).find("a payload claiming"), std::string::npos) << e.what();
  }
  EXPECT_NO_THROW(gcomp::io::check_allocation(1024, "a small buffer"));
}

TEST(Printable, ControlBytesAndNulAreEscaped) {
  const std::string raw("a\x1b[31mred\0b", 11);
  EXPECT_EQ(gcomp::printable(raw), "a\\x1b[31mred\\x00b");
  EXPECT_EQ(gcomp::printable(gcomp::printable(raw)), gcomp::printable(raw)) << "idempotent";
  EXPECT_EQ(gcomp::printable(std::string(300, 'q'), 4), "qqqq... (300 bytes)");
}

}  // namespace
