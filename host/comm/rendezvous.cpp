// SPDX-License-Identifier: Apache-2.0
// Launcher variables and the TCP / file rendezvous used to bootstrap the nccl backend.
#include "host/comm/rendezvous.hpp"

#include "host/comm/comm_internal.hpp"
#include "host/common/env.hpp"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <limits>
#include <memory>
#include <thread>
#include <utility>
#include <vector>

namespace gcomp::detail {
namespace {

// ---- sockets -----------------------------------------------------------------------------------

class Fd {
 public:
  Fd() = default;
  explicit Fd(int fd) : fd_(fd) {}
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  Fd(Fd&& other) noexcept : fd_(std::exchange(other.fd_, -1)) {}
  Fd& operator=(Fd&& other) noexcept {
    if (this != &other) {
      reset();
      fd_ = std::exchange(other.fd_, -1);
    }
    return *this;
  }
  ~Fd() { reset(); }
  [[nodiscard]] int get() const { return fd_; }
  void reset() {
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
  }

 private:
  int fd_ = -1;
};

[[noreturn]] void fail_errno(const std::string& what) {
  GCOMP_FAIL(gcompErrorIo, "rendezvous: " + what + ": " + std::strerror(errno));
}

void set_nonblocking(int fd) {
  const int flags = ::fcntl(fd, F_GETFL, 0);
  if (flags < 0 || ::fcntl(fd, F_SETFL, flags | O_NONBLOCK) < 0) fail_errno("fcntl(O_NONBLOCK)");
}

int remaining_ms(const Deadline& deadline, int cap_ms) {
  const auto left =
      std::chrono::duration_cast<std::chrono::milliseconds>(deadline.when() - Deadline::Clock::now()).count();
  return static_cast<int>(std::clamp<int64_t>(left, 0, cap_ms));
}

/// Waits until @p fd is ready for @p events; false on deadline.
bool wait_fd(int fd, short events, const Deadline& deadline) {
  for (;;) {
    pollfd p{fd, events, 0};
    const int rc = ::poll(&p, 1, remaining_ms(deadline, 1000));
    if (rc > 0) return true;
    if (rc < 0 && errno != EINTR) fail_errno("poll");
    if (deadline.expired()) return false;
  }
}

[[noreturn]] void fail_timeout(const std::string& what, int64_t timeout_ms) {
  GCOMP_FAIL(gcompErrorTimeout, "rendezvous: " + what + " timed out after " + std::to_string(timeout_ms) + " ms");
}

void read_full(int fd, void* data, size_t bytes, const Deadline& deadline, int64_t timeout_ms,
               const std::string& what) {
  auto* out = static_cast<std::byte*>(data);
  size_t done = 0;
  while (done < bytes) {
    const ssize_t n = ::recv(fd, out + done, bytes - done, 0);
    if (n > 0) {
      done += static_cast<size_t>(n);
      continue;
    }
    if (n == 0) {
      GCOMP_FAIL(gcompErrorIo, "rendezvous: " + what + ": connection closed after " + std::to_string(done) + " of " +
                                   std::to_string(bytes) + " bytes");
    }
    if (errno == EINTR) continue;
    if (errno != EAGAIN && errno != EWOULDBLOCK) fail_errno(what);
    if (!wait_fd(fd, POLLIN, deadline)) fail_timeout(what, timeout_ms);
  }
}

void write_full(int fd, const void* data, size_t bytes, const Deadline& deadline, int64_t timeout_ms,
                const std::string& what) {
  const auto* in = static_cast<const std::byte*>(data);
  size_t done = 0;
  while (done < bytes) {
    const ssize_t n = ::send(fd, in + done, bytes - done, MSG_NOSIGNAL);
    if (n >= 0) {
      done += static_cast<size_t>(n);
      continue;
    }
    if (errno == EINTR) continue;
    if (errno != EAGAIN && errno != EWOULDBLOCK) fail_errno(what);
    if (!wait_fd(fd, POLLOUT, deadline)) fail_timeout(what, timeout_ms);
  }
}

struct AddrInfoDeleter {
  void operator()(addrinfo* info) const noexcept { ::freeaddrinfo(info); }
};
using AddrInfoPtr = std::unique_ptr<addrinfo, AddrInfoDeleter>;

AddrInfoPtr resolve(const std::string& host, int port, bool passive) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = passive ? AI_PASSIVE : 0;
  addrinfo* result = nullptr;
  const std::string service = std::to_string(port);
  const int rc = ::getaddrinfo(host.c_str(), service.c_str(), &hints, &result);
  GCOMP_EXPECTS(rc == 0 && result != nullptr, gcompErrorInvalidArgument,
                "rendezvous: cannot resolve MASTER_ADDR \"" + host + "\": " + ::gai_strerror(rc));
  return AddrInfoPtr(result);
}

constexpr uint32_t kHelloMagic = 0x47435256;  // "GCRV"
constexpr uint32_t kProtocolVersion = 1;

/// Sent by each peer to rank 0.
struct Hello {
  uint32_t magic = kHelloMagic;
  uint32_t version = kProtocolVersion;
  int32_t world_size = 0;
  int32_t rank = 0;
  uint64_t blob_bytes = 0;
};

/// Rank 0's answer; the blob follows when status is kReplyOk.
enum ReplyStatus : int32_t {
  kReplyOk = 0,
  kReplyBadHello = 1,
  kReplyWorldSize = 2,
  kReplyBadRank = 3,
  kReplyBlobSize = 4,
};

const char* reply_text(int32_t status) {
  switch (status) {
    case kReplyBadHello: return "rank 0 rejected the hello (protocol magic or version differs)";
    case kReplyWorldSize: return "rank 0 has a different WORLD_SIZE";
    case kReplyBadRank: return "rank 0 rejected this rank (out of range or already connected)";
    case kReplyBlobSize: return "rank 0 has a different id size";
    default: return "rank 0 sent an unknown status";
  }
}

void serve_blob(const std::string& host, int port, int world_size, std::span<const std::byte> blob,
                int64_t timeout_ms) {
  const Deadline deadline(timeout_ms);
  const AddrInfoPtr addrs = resolve(host, port, true);
  Fd listener;
  int bind_errno = 0;
  for (const addrinfo* a = addrs.get(); a != nullptr; a = a->ai_next) {
    Fd fd(::socket(a->ai_family, a->ai_socktype, a->ai_protocol));
    if (fd.get() < 0) continue;
    const int one = 1;
    ::setsockopt(fd.get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (::bind(fd.get(), a->ai_addr, a->ai_addrlen) == 0 && ::listen(fd.get(), world_size) == 0) {
      listener = std::move(fd);
      break;
    }
    bind_errno = errno;
  }
  if (listener.get() < 0) {
    errno = bind_errno;
    fail_errno("rank 0 cannot listen on " + host + ":" + std::to_string(port));
  }
  set_nonblocking(listener.get());

  std::vector<bool> served(static_cast<size_t>(world_size), false);
  int remaining = world_size - 1;
  while (remaining > 0) {
    if (!wait_fd(listener.get(), POLLIN, deadline)) {
      std::vector<int> missing;
      for (int r = 1; r < world_size; ++r) {
        if (!served[static_cast<size_t>(r)]) missing.push_back(r);
      }
      fail_timeout("rank 0 waiting for ranks " + join_ranks(missing) + " on " + host + ":" + std::to_string(port),
                   timeout_ms);
    }
    Fd peer(::accept(listener.get(), nullptr, nullptr));
    if (peer.get() < 0) {
      if (errno == EINTR || errno == EAGAIN || errno == EWOULDBLOCK || errno == ECONNABORTED) {
        continue;
      }
      fail_errno("accept");
    }
    set_nonblocking(peer.get());
    Hello hello;
    read_full(peer.get(), &hello, sizeof(hello), deadline, timeout_ms, "reading a peer's hello");
    int32_t status = kReplyOk;
    if (hello.magic != kHelloMagic || hello.version != kProtocolVersion) {
      status = kReplyBadHello;
    } else if (hello.world_size != world_size) {
      status = kReplyWorldSize;
    } else if (hello.rank <= 0 || hello.rank >= world_size || served[static_cast<size_t>(hello.rank)]) {
      status = kReplyBadRank;
    } else if (hello.blob_bytes != blob.size()) {
      status = kReplyBlobSize;
    }
    write_full(peer.get(), &status, sizeof(status), deadline, timeout_ms, "answering a peer");
    if (status == kReplyBadHello) continue;  // not a gcomp peer: ignore it, keep serving
    if (status == kReplyWorldSize) {
      GCOMP_FAIL(gcompErrorMismatch, "rendezvous: rank " + std::to_string(hello.rank) + " has WORLD_SIZE " +
                                         std::to_string(hello.world_size) + " but rank 0 has " +
                                         std::to_string(world_size));
    }
    if (status != kReplyOk) {
      GCOMP_FAIL(gcompErrorInvalidArgument, "rendezvous: rank 0 rejected a peer claiming rank " +
                                                std::to_string(hello.rank) + ": " + reply_text(status));
    }
    write_full(peer.get(), blob.data(), blob.size(), deadline, timeout_ms, "sending the id");
    served[static_cast<size_t>(hello.rank)] = true;
    --remaining;
  }
}

/// One non-blocking connect attempt; an invalid Fd when the peer is not (yet) reachable.
Fd try_connect(const addrinfo* a, const Deadline& deadline) {
  Fd fd(::socket(a->ai_family, a->ai_socktype, a->ai_protocol));
  if (fd.get() < 0) fail_errno("socket");
  set_nonblocking(fd.get());
  if (::connect(fd.get(), a->ai_addr, a->ai_addrlen) == 0) return fd;
  if (errno != EINPROGRESS) return Fd();
  if (!wait_fd(fd.get(), POLLOUT, deadline)) return Fd();
  int error = 0;
  socklen_t len = sizeof(error);
  if (::getsockopt(fd.get(), SOL_SOCKET, SO_ERROR, &error, &len) != 0 || error != 0) return Fd();
  return fd;
}

void fetch_blob(const std::string& host, int port, int rank, int world_size, std::span<std::byte> blob,
                int64_t timeout_ms) {
  const Deadline deadline(timeout_ms);
  const AddrInfoPtr addrs = resolve(host, port, false);
  const std::string where = host + ":" + std::to_string(port);
  Fd fd;
  while (fd.get() < 0) {
    for (const addrinfo* a = addrs.get(); a != nullptr && fd.get() < 0; a = a->ai_next) {
      fd = try_connect(a, deadline);
    }
    if (fd.get() >= 0) break;
    if (deadline.expired()) fail_timeout("rank " + std::to_string(rank) + " connecting to " + where, timeout_ms);
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  Hello hello;
  hello.world_size = world_size;
  hello.rank = rank;
  hello.blob_bytes = blob.size();
  write_full(fd.get(), &hello, sizeof(hello), deadline, timeout_ms, "sending the hello to " + where);
  int32_t status = kReplyOk;
  read_full(fd.get(), &status, sizeof(status), deadline, timeout_ms, "reading rank 0's answer");
  if (status == kReplyWorldSize) {
    GCOMP_FAIL(gcompErrorMismatch, "rendezvous: rank " + std::to_string(rank) + " (WORLD_SIZE " +
                                       std::to_string(world_size) + "): " + reply_text(status));
  }
  GCOMP_EXPECTS(status == kReplyOk, gcompErrorInvalidArgument,
                "rendezvous: rank " + std::to_string(rank) + ": " + reply_text(status));
  read_full(fd.get(), blob.data(), blob.size(), deadline, timeout_ms, "reading the id from " + where);
}

// ---- file --------------------------------------------------------------------------------------

constexpr char kFileMagic[8] = {'G', 'C', 'O', 'M', 'P', 'I', 'D', '1'};

}  // namespace

LauncherEnv read_launcher_env() {
  const auto get = [](EnvVarId id) { return static_cast<int>(env_int(id).value_or(-1)); };
  LauncherEnv env;
  env.rank = get(EnvVarId::kRank);
  env.world_size = get(EnvVarId::kWorldSize);
  env.local_rank = get(EnvVarId::kLocalRank);
  if (env.local_rank < 0) env.local_rank = get(EnvVarId::kOmpiCommWorldLocalRank);
  env.master_addr = env_string(EnvVarId::kMasterAddr).value_or("");
  env.master_port = get(EnvVarId::kMasterPort);
  return env;
}

void tcp_broadcast_blob(const std::string& host, int port, int rank, int world_size, std::span<std::byte> blob,
                        int64_t timeout_ms) {
  GCOMP_EXPECTS(world_size >= 1 && rank >= 0 && rank < world_size, gcompErrorInvalidArgument,
                "rendezvous: rank " + std::to_string(rank) + " outside 0..WORLD_SIZE-1 (WORLD_SIZE " +
                    std::to_string(world_size) + ")");
  GCOMP_EXPECTS(!host.empty(), gcompErrorInvalidArgument,
                "rendezvous: MASTER_ADDR is not set (needed for the TCP bootstrap)");
  GCOMP_EXPECTS(port >= 1 && port <= 65535, gcompErrorInvalidArgument,
                "rendezvous: MASTER_PORT must be in 1..65535, got " + std::to_string(port));
  if (world_size == 1) return;
  if (rank == 0) {
    serve_blob(host, port, world_size, blob, timeout_ms);
  } else {
    fetch_blob(host, port, rank, world_size, blob, timeout_ms);
  }
}

void file_broadcast_blob(const std::string& path, int rank, std::span<std::byte> blob, int64_t timeout_ms) {
  GCOMP_EXPECTS(!path.empty(), gcompErrorInvalidArgument,
                "rendezvous: the id file path is empty (set GCOMP_NCCL_ID_FILE)");
  const uint64_t blob_bytes = blob.size();
  if (rank == 0) {
    const std::string tmp = path + ".tmp." + std::to_string(::getpid());
    {
      std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
      out.write(kFileMagic, sizeof(kFileMagic));
      out.write(reinterpret_cast<const char*>(&blob_bytes), sizeof(blob_bytes));
      out.write(reinterpret_cast<const char*>(blob.data()), static_cast<std::streamsize>(blob.size()));
      out.close();
      GCOMP_EXPECTS(out.good(), gcompErrorIo, "rendezvous: cannot write the id file " + tmp);
    }
    if (std::rename(tmp.c_str(), path.c_str()) != 0) {
      const int saved = errno;
      std::remove(tmp.c_str());
      errno = saved;
      fail_errno("cannot rename " + tmp + " to " + path);
    }
    return;
  }
  const Deadline deadline(timeout_ms);
  Backoff backoff;
  for (;;) {
    std::ifstream in(path, std::ios::binary);
    if (in) {
      char magic[sizeof(kFileMagic)] = {};
      uint64_t stored_bytes = 0;
      in.read(magic, sizeof(magic));
      in.read(reinterpret_cast<char*>(&stored_bytes), sizeof(stored_bytes));
      GCOMP_EXPECTS(in.good() && std::memcmp(magic, kFileMagic, sizeof(magic)) == 0, gcompErrorCorruptPayload,
                    "rendezvous: " + path + " is not a gcomp id file (bad magic or truncated)");
      GCOMP_EXPECTS(stored_bytes == blob_bytes, gcompErrorMismatch,
                    "rendezvous: " + path + " holds a " + std::to_string(stored_bytes) + "-byte id, expected " +
                        std::to_string(blob_bytes));
      in.read(reinterpret_cast<char*>(blob.data()), static_cast<std::streamsize>(blob.size()));
      GCOMP_EXPECTS(in.good(), gcompErrorCorruptPayload, "rendezvous: " + path + " is truncated");
      return;
    }
    if (deadline.expired()) {
      fail_timeout("rank " + std::to_string(rank) + " waiting for the id file " + path, timeout_ms);
    }
    backoff.pause();
  }
}

}  // namespace gcomp::detail
