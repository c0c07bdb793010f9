// SPDX-License-Identifier: Apache-2.0
// The output and input rules of include/gcomp/io.hpp (docs/hardening.md "Files").
#include <gcomp/io.hpp>

#include <atomic>
#include <cerrno>
#include <climits>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <memory>
#include <random>

#include <fcntl.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

namespace gcomp::io {

namespace {

std::string errno_text(int err) { return std::strerror(err); }

[[noreturn]] void fail(std::string_view what, const std::string& path, const std::string& why) {
  GCOMP_FAIL(gcompErrorIo, std::string(what) + " '" + printable(path) + "': " + why);
}

std::string dir_of(const std::string& path) {
  const size_t slash = path.find_last_of('/');
  if (slash == std::string::npos) return ".";
  if (slash == 0) return "/";
  return path.substr(0, slash);
}

std::string base_of(const std::string& path) {
  const size_t slash = path.find_last_of('/');
  return slash == std::string::npos ? path : path.substr(slash + 1);
}

/// A file descriptor closed on destruction (errors of that close are ignored: the paths that
/// care close explicitly and check).
class Fd {
 public:
  explicit Fd(int fd = -1) : fd_(fd) {}
  ~Fd() {
    if (fd_ >= 0) ::close(fd_);
  }
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  [[nodiscard]] int get() const { return fd_; }
  /// Closes now; returns 0 or the errno of a failed close.
  int close() {
    const int fd = fd_;
    fd_ = -1;
    if (fd < 0) return 0;
    return ::close(fd) == 0 ? 0 : errno;
  }

 private:
  int fd_;
};

/// Writes all bytes; returns 0 or the errno of the failed write.
int write_all(int fd, const uint8_t* data, size_t bytes) {
  while (bytes > 0) {
    const size_t chunk = bytes < (size_t{1} << 30) ? bytes : (size_t{1} << 30);
    const ssize_t n = ::write(fd, data, chunk);
    if (n < 0) {
      if (errno == EINTR) continue;
      return errno;
    }
    if (n == 0) return EIO;
    data += n;
    bytes -= static_cast<size_t>(n);
  }
  return 0;
}

/// A temporary file next to the target: created with O_EXCL (mode 0666 less the umask, as any new
/// file), removed on destruction unless committed.
class TempFile {
 public:
  TempFile(const std::string& dir, const std::string& base, std::string_view what, const std::string& target) {
    static std::atomic<uint64_t> counter{0};
    std::random_device rd;
    for (int attempt = 0; attempt < 100; ++attempt) {
      char suffix[64];
      std::snprintf(suffix, sizeof suffix, ".gcomp-tmp.%d.%llu.%08x", static_cast<int>(::getpid()),
                    static_cast<unsigned long long>(counter.fetch_add(1)), static_cast<unsigned>(rd()));
      path_ = (dir == "/" ? std::string("/") : dir + "/") + "." + base + suffix;
      const int fd = ::open(path_.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0666);
      if (fd >= 0) {
        fd_ = std::make_unique<Fd>(fd);
        return;
      }
      if (errno != EEXIST) {
        const int err = errno;
        path_.clear();
        fail(what, target, "cannot create a file in directory '" + printable(dir) + "': " + errno_text(err));
      }
    }
    path_.clear();
    fail(what, target, "cannot create a temporary file in directory '" + printable(dir) + "'");
  }
  ~TempFile() {
    fd_.reset();
    if (!path_.empty()) ::unlink(path_.c_str());
  }
  TempFile(const TempFile&) = delete;
  TempFile& operator=(const TempFile&) = delete;
  [[nodiscard]] int fd() const { return fd_->get(); }
  [[nodiscard]] const std::string& path() const { return path_; }
  int close() { return fd_->close(); }
  void committed() { path_.clear(); }

 private:
  std::string path_;
  std::unique_ptr<Fd> fd_;
};

struct Checked {
  OutputTarget target;
  struct stat st {};  // of target.path when it exists
};

Checked check_target(const std::string& path, const OutputOptions& opt) {
  const std::string_view what = opt.what;
  if (path.empty()) GCOMP_FAIL(gcompErrorIo, std::string(what) + ": the path is empty");
  Checked c;
  c.target.path = path;
  struct stat lst {};
  if (::lstat(path.c_str(), &lst) != 0) {
    if (errno != ENOENT) fail(what, path, errno_text(errno));
    // A new file: its directory must exist.
    const std::string dir = dir_of(path);
    struct stat dst {};
    if (::stat(dir.c_str(), &dst) != 0) fail(what, path, "directory '" + printable(dir) + "': " + errno_text(errno));
    if (!S_ISDIR(dst.st_mode)) fail(what, path, "'" + printable(dir) + "' is not a directory");
    if (!path.empty() && path.back() == '/') fail(what, path, "the path names a directory");
    c.target.kind = OutputKind::kNew;
    return c;
  }
  if (::stat(path.c_str(), &c.st) != 0) {
    const int err = errno;
    fail(what, path,
         S_ISLNK(lst.st_mode) && err == ENOENT ? std::string("is a symbolic link to a missing file (refused)")
                                               : errno_text(err));
  }
  if (S_ISLNK(lst.st_mode) && S_ISREG(c.st.st_mode)) {
    // Replaced by rename: the link's final target, in its own directory. (A link to a pipe or a
    // device, e.g. /dev/stdout or /dev/fd/N, is opened through the link.)
    char* resolved = ::realpath(path.c_str(), nullptr);
    if (resolved == nullptr) fail(what, path, "cannot resolve the symbolic link: " + errno_text(errno));
    c.target.path = resolved;
    std::free(resolved);
    // The resolved name must still lead to that file (not so for a deleted file behind /proc/self/fd).
    struct stat again {};
    if (::lstat(c.target.path.c_str(), &again) != 0 || again.st_dev != c.st.st_dev || again.st_ino != c.st.st_ino)
      fail(what, path, "leads to a file without a name to replace (refused)");
  }
  const mode_t m = c.st.st_mode;
  if (S_ISDIR(m)) fail(what, path, "is a directory");
  if (S_ISBLK(m))
    fail(what, path, "is a block device (refused: gcomp writes regular files, FIFOs and character devices)");
  if (S_ISSOCK(m)) fail(what, path, "is a socket");
  if (S_ISCHR(m) || S_ISFIFO(m)) {
    c.target.kind = OutputKind::kSpecial;
    return c;
  }
  if (!S_ISREG(m)) fail(what, path, "is not a regular file, FIFO or character device");
  if (c.st.st_nlink > 1)
    fail(what, path,
         "has " + std::to_string(c.st.st_nlink) +
             " hard links (refused: replacing it would split it from its other names, writing in place "
             "could leave it half-written; remove the other links or write elsewhere)");
  for (const std::string& in : opt.inputs) {
    struct stat ist {};
    if (::stat(in.c_str(), &ist) == 0 && ist.st_dev == c.st.st_dev && ist.st_ino == c.st.st_ino)
      fail(what, path, "is the same file as the input '" + printable(in) + "' (refused: it would destroy the input)");
  }
  c.target.kind = OutputKind::kRegular;
  return c;
}

/// Opens a character device or FIFO for writing through; a FIFO without a reader is refused.
int open_special(const std::string& path, std::string_view what, const std::string& shown) {
  const int fd = ::open(path.c_str(), O_WRONLY | O_NONBLOCK | O_NOCTTY | O_CLOEXEC);
  if (fd < 0) {
    const int err = errno;
    fail(what, shown, err == ENXIO ? std::string("is a FIFO that nobody reads") : errno_text(err));
  }
  const int flags = ::fcntl(fd, F_GETFL);
  if (flags >= 0) static_cast<void>(::fcntl(fd, F_SETFL, flags & ~O_NONBLOCK));
  return fd;
}

}  // namespace

OutputTarget check_output(const std::string& path, const OutputOptions& opt) {
  const Checked c = check_target(path, opt);
  if (c.target.kind == OutputKind::kSpecial) return c.target;
  // Probe: the directory takes a new file (permissions, read-only file system, quota).
  TempFile probe(dir_of(c.target.path), base_of(c.target.path), opt.what, path);
  return c.target;
}

void write_file(const std::string& path, std::span<const uint8_t> bytes, const OutputOptions& opt) {
  const Checked c = check_target(path, opt);
  const std::string_view what = opt.what;
  if (c.target.kind == OutputKind::kSpecial) {
    Fd fd(open_special(c.target.path, what, path));
    if (const int err = write_all(fd.get(), bytes.data(), bytes.size()); err != 0)
      fail(what, path, "write failed: " + errno_text(err));
    if (const int err = fd.close(); err != 0) fail(what, path, "close failed: " + errno_text(err));
    return;
  }
  const std::string dir = dir_of(c.target.path);
  TempFile tmp(dir, base_of(c.target.path), what, path);
  if (c.target.kind == OutputKind::kRegular) {
    // Keep the target's permission bits, and its owner where this process may set it.
    if (::fchmod(tmp.fd(), c.st.st_mode & 07777) != 0)
      fail(what, path, "cannot set the mode of '" + printable(tmp.path()) + "': " + errno_text(errno));
    if (c.st.st_uid != ::geteuid() || c.st.st_gid != ::getegid()) {
      if (::fchown(tmp.fd(), c.st.st_uid, c.st.st_gid) == 0)
        static_cast<void>(::fchmod(tmp.fd(), c.st.st_mode & 07777));  // chown clears set-id bits
    }
  }
  if (const int err = write_all(tmp.fd(), bytes.data(), bytes.size()); err != 0)
    fail(what, path, "write failed: " + errno_text(err) + " (the target is unchanged)");
  if (opt.durable && ::fsync(tmp.fd()) != 0)
    fail(what, path, "fsync failed: " + errno_text(errno) + " (the target is unchanged)");
  if (const int err = tmp.close(); err != 0)
    fail(what, path, "close failed: " + errno_text(err) + " (the target is unchanged)");
  // The target may have changed since the check: never rename over anything but a regular file.
  struct stat now {};
  if (::lstat(c.target.path.c_str(), &now) == 0 && !S_ISREG(now.st_mode))
    fail(what, path, "changed into a file that is not regular while it was written (refused)");
  if (::rename(tmp.path().c_str(), c.target.path.c_str()) != 0)
    fail(what, path, "rename failed: " + errno_text(errno) + " (the target is unchanged)");
  tmp.committed();
  if (opt.durable) {
    Fd d(::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    if (d.get() >= 0) static_cast<void>(::fsync(d.get()));
  }
}

void write_file(const std::string& path, std::string_view text, const OutputOptions& opt) {
  write_file(path, std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(text.data()), text.size()), opt);
}

bool same_file(const std::string& a, const std::string& b) {
  struct stat sa {
  }, sb{};
  return ::stat(a.c_str(), &sa) == 0 && ::stat(b.c_str(), &sb) == 0 && sa.st_dev == sb.st_dev && sa.st_ino == sb.st_ino;
}

void flush_stdout() {
  errno = 0;
  const bool flushed = std::fflush(stdout) == 0;
  const int err = errno;
  if (flushed && std::ferror(stdout) == 0) return;
  GCOMP_FAIL(gcompErrorIo, "cannot write standard output" + (err != 0 ? ": " + errno_text(err) : std::string()) +
                               " (the output is incomplete)");
}

InputFile::InputFile(const std::string& path, std::string what) : path_(path), what_(std::move(what)) {
  fd_ = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOCTTY);
  if (fd_ < 0) fail(what_, path_, "cannot open: " + errno_text(errno));
  struct stat st {};
  if (::fstat(fd_, &st) != 0) {
    const int err = errno;
    ::close(fd_);
    fd_ = -1;
    fail(what_, path_, errno_text(err));
  }
  if (S_ISDIR(st.st_mode) || S_ISSOCK(st.st_mode)) {
    ::close(fd_);
    fd_ = -1;
    fail(what_, path_, S_ISDIR(st.st_mode) ? "is a directory" : "is a socket");
  }
  regular_ = S_ISREG(st.st_mode);
  size_ = regular_ ? static_cast<uint64_t>(st.st_size) : 0;
}

InputFile::~InputFile() {
  if (fd_ >= 0) ::close(fd_);
}

size_t InputFile::read(void* data, size_t bytes) {
  auto* p = static_cast<uint8_t*>(data);
  size_t done = 0;
  while (done < bytes) {
    const ssize_t n = ::read(fd_, p + done, bytes - done);
    if (n < 0) {
      if (errno == EINTR) continue;
      fail(what_, path_, "read failed: " + errno_text(errno));
    }
    if (n == 0) break;
    done += static_cast<size_t>(n);
  }
  return done;
}

std::vector<uint8_t> InputFile::read_all(uint64_t max_bytes, std::string_view limit_name) {
  std::vector<uint8_t> out;
  if (regular_) {
    if (size_ > max_bytes)
      fail(what_, path_,
           "has " + std::to_string(size_) + " bytes, more than " + std::string(limit_name) + " (" +
               std::to_string(max_bytes) + ")");
    check_allocation(size_, what_ + " '" + printable(path_) + "'");
    out.resize(static_cast<size_t>(size_));
    out.resize(read(out.data(), out.size()));
    // A file that grew while it was read: the rest must still fit under the limit.
    uint8_t extra[4096];
    for (;;) {
      const size_t n = read(extra, sizeof extra);
      if (n == 0) break;
      if (out.size() + n > max_bytes)
        fail(what_, path_, "grew past " + std::string(limit_name) + " (" + std::to_string(max_bytes) + " bytes)");
      out.insert(out.end(), extra, extra + n);
    }
    return out;
  }
  uint8_t chunk[1 << 16];
  for (;;) {
    const size_t n = read(chunk, sizeof chunk);
    if (n == 0) break;
    if (out.size() + n > max_bytes)
      fail(what_, path_,
           "is not a regular file and gives more than " + std::string(limit_name) + " (" + std::to_string(max_bytes) +
               " bytes)");
    out.insert(out.end(), chunk, chunk + n);
  }
  return out;
}

uint64_t available_memory() {
  std::ifstream f("/proc/meminfo");
  std::string key;
  uint64_t kib = 0;
  std::string unit;
  while (f >> key >> kib) {
    std::getline(f, unit);
    if (key == "MemAvailable:") return kib > UINT64_MAX / 1024 ? UINT64_MAX : kib * 1024;
  }
  return UINT64_MAX;
}

void check_allocation(uint64_t bytes, std::string_view what) {
  const uint64_t avail = available_memory();
  if (bytes <= avail) return;
  GCOMP_FAIL(gcompErrorOutOfMemory, std::string(what) + " needs " + std::to_string(bytes) + " bytes of memory, " +
                                        std::to_string(avail) + " are available (refused before allocating)");
}

void check_space(const std::string& path, uint64_t bytes, std::string_view what) {
  std::string dir = dir_of(path);
  if (char* resolved = ::realpath(path.c_str(), nullptr)) {
    struct stat st {};
    const bool special = ::stat(resolved, &st) == 0 && !S_ISREG(st.st_mode);
    dir = dir_of(resolved);
    std::free(resolved);
    if (special) return;
  }
  struct statvfs vfs {};
  if (::statvfs(dir.c_str(), &vfs) != 0) return;
  const uint64_t unit = vfs.f_frsize != 0 ? vfs.f_frsize : vfs.f_bsize;
  if (unit == 0 || vfs.f_bavail > UINT64_MAX / unit) return;
  const uint64_t free_bytes = static_cast<uint64_t>(vfs.f_bavail) * unit;
  if (bytes <= free_bytes) return;
  fail(what, path,
       "needs " + std::to_string(bytes) + " bytes, the file system has " + std::to_string(free_bytes) +
           " free (refused before writing)");
}

}  // namespace gcomp::io
