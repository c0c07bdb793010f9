// SPDX-License-Identifier: Apache-2.0
/// @file io.hpp
/// @brief The files gcomp writes and reads (tool outputs, checkpoints), under one set of rules
/// (DESIGN.md §4, docs/hardening.md "Files"):
///
///  - A regular output file is written to a new temporary file in the target's directory and
///    renamed over the target only when every byte has been written, flushed and the file closed
///    without error; the target keeps its permission bits (and owner, when allowed). A failure
///    leaves the target as it was and removes the temporary file.
///  - A character device or FIFO is written through (opened without truncation, never replaced),
///    so `/dev/null`, `/dev/stdout` and `>(cmd)` work; a failed write there is an error too
///    (`/dev/full`). A FIFO without a reader is refused instead of blocking.
///  - A symbolic link is followed: its final target gets the rules above and the link stays. A link
///    to a missing file is refused.
///  - Refused: a directory, a block device, a socket, a regular file with several hard links (a
///    rename would split it from its other names), the same file (device and inode) as one of the
///    run's inputs, a missing or unwritable directory.
///
/// Every function throws gcomp::Error(gcompErrorIo) with a message that names the output
/// (`OutputOptions::what`), the path and the reason.
#pragma once

#include <gcomp/error.hpp>

#include <cstdint>
#include <cstdio>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace gcomp::io {

/// How an output is checked and written.
struct OutputOptions {
  /// The output's name in messages, e.g. "--json" or "checkpoint".
  std::string what = "output";
  /// Files the output must not be (compared by device and inode, symbolic links followed): the
  /// run's inputs. Paths that do not exist are ignored.
  std::vector<std::string> inputs;
  /// fsync the file before the rename and its directory after it (regular files).
  bool durable = true;
};

/// What an output path leads to.
enum class OutputKind {
  kNew,      ///< nothing there yet: a new regular file is created
  kRegular,  ///< a regular file, replaced by rename
  kSpecial,  ///< a character device or FIFO, written through
};

/// An output path after check_output().
struct OutputTarget {
  std::string path;  ///< the path that is written (the final target of a symbolic link)
  OutputKind kind = OutputKind::kNew;
};

/// @brief Checks, before any work, that @p path can take an output under the rules above: refuses
/// what the rules refuse and probes the directory by creating and removing a temporary file.
/// @throws gcomp::Error(gcompErrorIo) naming opt.what, the path and the reason.
OutputTarget check_output(const std::string& path, const OutputOptions& opt = {});

/// @brief Writes @p bytes to @p path under the rules above (check_output() first).
/// @throws gcomp::Error(gcompErrorIo); the target is then untouched (a special file may have
///         received part of the bytes).
void write_file(const std::string& path, std::span<const uint8_t> bytes, const OutputOptions& opt = {});
/// @brief write_file() of text.
void write_file(const std::string& path, std::string_view text, const OutputOptions& opt = {});

/// @brief True when @p a and @p b exist and are the same file (device and inode, symbolic links
/// followed).
[[nodiscard]] bool same_file(const std::string& a, const std::string& b);

/// @brief Flushes stdout and throws gcomp::Error(gcompErrorIo) when anything written to it was
/// lost (a failed write or flush: `> /dev/full`, a closed pipe). Tools call it before exiting 0.
void flush_stdout();

/// @brief An input file opened for reading: directories and sockets refused; a regular file's size
/// is known before reading, other files (pipes, devices) are read until end of file.
class InputFile {
 public:
  /// @throws gcomp::Error(gcompErrorIo) naming @p what when @p path cannot be opened, is a
  ///         directory or a socket.
  InputFile(const std::string& path, std::string what = "input");
  ~InputFile();
  InputFile(const InputFile&) = delete;
  InputFile& operator=(const InputFile&) = delete;

  /// True for a regular file (size() is then its size at open).
  [[nodiscard]] bool regular() const { return regular_; }
  [[nodiscard]] uint64_t size() const { return size_; }
  [[nodiscard]] const std::string& path() const { return path_; }

  /// Reads up to @p bytes (fewer only at end of file); returns the count.
  size_t read(void* data, size_t bytes);
  /// Reads everything left, refusing (gcompErrorIo, naming @p limit_name) more than @p max_bytes
  /// bytes before allocating for them.
  std::vector<uint8_t> read_all(uint64_t max_bytes, std::string_view limit_name);

 private:
  std::string path_;
  std::string what_;
  int fd_ = -1;
  bool regular_ = false;
  uint64_t size_ = 0;
};

/// @brief Bytes of memory available for new allocations (MemAvailable of /proc/meminfo), or
/// UINT64_MAX when unknown.
[[nodiscard]] uint64_t available_memory();

/// @brief Refuses (gcompErrorOutOfMemory, naming @p what) an allocation of @p bytes that exceeds
/// available_memory(): checked before allocating for sizes that come from untrusted input.
void check_allocation(uint64_t bytes, std::string_view what);

/// @brief Refuses (gcompErrorIo, naming @p what) an output of @p bytes that does not fit in the free
/// space of the file system of @p path's directory (regular outputs only; best effort).
void check_space(const std::string& path, uint64_t bytes, std::string_view what);

}  // namespace gcomp::io
