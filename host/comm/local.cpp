// SPDX-License-Identifier: Apache-2.0
// local backend: P ranks are threads of one process sharing host memory.
//
// Every collective is two rendezvous on the group's shared state (mutex + condition variable with
// a generation counter): "arrive", after which each rank sees the buffer pointers of all ranks and
// copies or reduces directly from its peers' buffers into its own, and "depart", after which no
// rank reads a peer's buffer any more, so the buffers may be reused. A rank that waits first spins
// briefly on the generation counter (when the group has no more ranks than hardware threads)
// before it sleeps on the condition variable: a wake-up costs tens of microseconds, more than a
// small collective's whole work (docs/communicators.md "local"). A rank whose send buffer
// overlaps its receive buffer (other than the documented in-place allgather position) publishes a
// private copy instead, so peers never read bytes that are being overwritten.
#include "host/comm/comm_internal.hpp"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <exception>
#include <mutex>
#include <thread>

namespace gcomp {
namespace {

using detail::CollectiveDesc;
using detail::CollectiveKind;

/// How long a waiting rank spins on the generation counter before it sleeps: about one
/// condition-variable wake-up of a VM's idle core, so that a peer arriving within that time costs
/// no wake-up, and a late one costs the spinner at most this much CPU time. A spin that ends
/// without the peers halves the next one (they may be waiting for this core: the scheduler tends
/// to put two threads that wake each other on one core when the others are busy), down to none
/// below kMinSpinUs; then every kProbeEvery-th wait spins kSpinUs / 4 to find out whether spinning
/// pays again. A spin that sees the peers arrive restores kSpinUs.
constexpr int64_t kSpinUs = 50;
constexpr int64_t kMinSpinUs = 4;
constexpr int kProbeEvery = 64;

/// One step of a spin-wait: tells the core that this is a spin loop (x86 PAUSE, Arm YIELD).
inline void spin_pause() noexcept {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#elif defined(__aarch64__) || defined(__arm__)
  asm volatile("yield" ::: "memory");
#endif
}

struct LocalSlot {
  CollectiveDesc desc;
  const std::byte* send = nullptr;
  std::byte* recv = nullptr;
  const size_t* sizes = nullptr;  ///< alltoallv: the size of each send slot
};

/// State shared by the ranks of one local group. Guarded by `mutex`.
struct LocalGroup {
  LocalGroup(int num_ranks_in, int64_t timeout_ms_in)
      : num_ranks(num_ranks_in),
        timeout_ms(timeout_ms_in),
        slots(static_cast<size_t>(num_ranks_in)),
        phases_entered(static_cast<size_t>(num_ranks_in), 0),
        exited(static_cast<size_t>(num_ranks_in), false),
        may_spin(static_cast<unsigned>(num_ranks_in) <= std::thread::hardware_concurrency()) {}

  const int num_ranks;
  const int64_t timeout_ms;
  std::mutex mutex;
  std::condition_variable cv;
  std::vector<LocalSlot> slots;
  std::vector<uint64_t> phases_entered;  ///< per rank: rendezvous phases it has entered
  std::vector<bool> exited;              ///< per rank: communicator destroyed or thread done
  uint64_t phase = 0;                    ///< generation: index of the phase being assembled
  /// `phase`, also readable without the mutex (written under it): what a spinning rank watches.
  std::atomic<uint64_t> phase_seen{0};
  /// Waiting ranks spin before they sleep: only when every rank can have a hardware thread, so a
  /// spinner never keeps the rank it waits for off the CPU for long.
  const bool may_spin;
  int arrived = 0;  ///< ranks that entered `phase`
  bool aborted = false;
  std::string abort_reason;

  void abort_locked(std::string reason) {
    if (aborted) return;
    aborted = true;
    abort_reason = std::move(reason);
    cv.notify_all();
  }
};

class LocalCommunicator final : public Communicator {
 public:
  LocalCommunicator(std::shared_ptr<LocalGroup> group, int rank)
      : group_(std::move(group)),
        rank_(rank),
        peers_(static_cast<size_t>(group_->num_ranks)),
        inputs_(static_cast<size_t>(group_->num_ranks)),
        descs_(static_cast<size_t>(group_->num_ranks)) {}

  ~LocalCommunicator() override { mark_exited(); }

  int rank() const override { return rank_; }
  int size() const override { return group_->num_ranks; }
  const char* backend() const override { return "local"; }
  MemorySpace memory_space() const override { return MemorySpace::kHost; }

  void allgather(const void* send, void* recv, size_t bytes_per_rank, Stream) override {
    const size_t total = detail::checked_mul(bytes_per_rank, ranks(), "allgather");
    check_buffer(send, bytes_per_rank, "allgather send");
    check_buffer(recv, total, "allgather recv");
    auto* recv_bytes = static_cast<std::byte*>(recv);
    std::byte* own_block = recv_bytes == nullptr ? nullptr : recv_bytes + static_cast<size_t>(rank_) * bytes_per_rank;
    const std::byte* published = static_cast<const std::byte*>(send);
    if (published != own_block) published = stage_if_overlapping(send, bytes_per_rank, recv, total);
    const CollectiveDesc desc = next_desc(CollectiveKind::kAllgather, bytes_per_rank);
    collective(desc, published, recv_bytes, nullptr, [&] {
      if (bytes_per_rank == 0) return;
      for (size_t j = 0; j < ranks(); ++j) {
        std::byte* dst = recv_bytes + j * bytes_per_rank;
        if (peers_[j].send != dst) std::memcpy(dst, peers_[j].send, bytes_per_rank);
      }
    });
  }

  void alltoall(const void* send, void* recv, size_t bytes_per_peer, Stream) override {
    const size_t total = detail::checked_mul(bytes_per_peer, ranks(), "alltoall");
    check_buffer(send, total, "alltoall send");
    check_buffer(recv, total, "alltoall recv");
    auto* recv_bytes = static_cast<std::byte*>(recv);
    const std::byte* published = stage_if_overlapping(send, total, recv, total);
    const CollectiveDesc desc = next_desc(CollectiveKind::kAlltoall, bytes_per_peer);
    collective(desc, published, recv_bytes, nullptr, [&] {
      if (bytes_per_peer == 0) return;
      const size_t offset = static_cast<size_t>(rank_) * bytes_per_peer;
      for (size_t j = 0; j < ranks(); ++j) {
        std::memcpy(recv_bytes + j * bytes_per_peer, peers_[j].send + offset, bytes_per_peer);
      }
    });
  }

  void allgatherv(const void* send, size_t send_bytes, void* recv, size_t max_bytes_per_rank, size_t* recv_bytes,
                  Stream) override {
    const size_t total = detail::checked_mul(max_bytes_per_rank, ranks(), "allgatherv");
    check_buffer(send, send_bytes, "allgatherv send");
    check_buffer(recv, total, "allgatherv recv");
    check_buffer(recv_bytes, ranks(), "allgatherv recv_bytes");
    auto* recv_p = static_cast<std::byte*>(recv);
    std::byte* own_block = recv_p == nullptr ? nullptr : recv_p + static_cast<size_t>(rank_) * max_bytes_per_rank;
    const std::byte* published = static_cast<const std::byte*>(send);
    // Staging only when the message overlaps the slots of the peers (which this rank writes).
    if (published != own_block) published = stage_if_overlapping(send, send_bytes, recv, total);
    CollectiveDesc desc = next_desc(CollectiveKind::kAllgatherv, max_bytes_per_rank);
    desc.max_send = send_bytes;
    collective(desc, published, recv_p, nullptr, [&] {
      for (size_t j = 0; j < ranks(); ++j) {
        const auto bytes = static_cast<size_t>(peers_[j].desc.max_send);
        std::byte* dst = recv_p + j * max_bytes_per_rank;
        if (bytes > 0 && peers_[j].send != dst) std::memcpy(dst, peers_[j].send, bytes);
        recv_bytes[j] = bytes;
      }
    });
  }

  void alltoallv(const void* send, const size_t* send_bytes, void* recv, size_t max_bytes_per_peer, size_t* recv_bytes,
                 Stream) override {
    const size_t total = detail::checked_mul(max_bytes_per_peer, ranks(), "alltoallv");
    check_buffer(send, total, "alltoallv send");
    check_buffer(recv, total, "alltoallv recv");
    check_buffer(send_bytes, ranks(), "alltoallv send_bytes");
    check_buffer(recv_bytes, ranks(), "alltoallv recv_bytes");
    // Own copy of the sizes: peers read them, and send_bytes may alias recv_bytes.
    send_sizes_.assign(send_bytes, send_bytes + ranks());
    auto* recv_p = static_cast<std::byte*>(recv);
    const std::byte* published = stage_if_overlapping(send, total, recv, total);
    CollectiveDesc desc = next_desc(CollectiveKind::kAlltoallv, max_bytes_per_peer);
    desc.max_send = *std::max_element(send_sizes_.begin(), send_sizes_.end());
    collective(desc, published, recv_p, send_sizes_.data(), [&] {
      const size_t offset = static_cast<size_t>(rank_) * max_bytes_per_peer;
      for (size_t j = 0; j < ranks(); ++j) {
        const size_t bytes = peers_[j].sizes[rank_];
        if (bytes > 0) std::memcpy(recv_p + j * max_bytes_per_peer, peers_[j].send + offset, bytes);
        recv_bytes[j] = bytes;
      }
    });
  }

  void allreduce(const void* send, void* recv, size_t count, DataType type, ReduceOp op, Stream) override {
    const size_t bytes = detail::checked_mul(count, data_type_bytes(type), "allreduce");
    GCOMP_EXPECTS(op == ReduceOp::kSum || op == ReduceOp::kMax, gcompErrorInvalidArgument,
                  "allreduce: unknown ReduceOp value " + std::to_string(static_cast<int32_t>(op)));
    check_buffer(send, bytes, "allreduce send");
    check_buffer(recv, bytes, "allreduce recv");
    auto* recv_bytes = static_cast<std::byte*>(recv);
    // Even exact in-place needs a private copy: peers read this rank's input while it writes.
    const std::byte* published = stage_if_overlapping(send, bytes, recv, bytes);
    CollectiveDesc desc = next_desc(CollectiveKind::kAllreduce, count);
    desc.type = static_cast<int32_t>(type);
    desc.op = static_cast<int32_t>(op);
    collective(desc, published, recv_bytes, nullptr, [&] {
      for (size_t j = 0; j < ranks(); ++j) inputs_[j] = peers_[j].send;
      detail::reduce_rank_order(inputs_.data(), size(), recv_bytes, count, type, op);
    });
  }

  void broadcast(void* buf, size_t bytes, int root, Stream) override {
    GCOMP_EXPECTS(root >= 0 && root < size(), gcompErrorInvalidArgument,
                  "broadcast: root " + std::to_string(root) + " outside 0.." + std::to_string(size() - 1));
    check_buffer(buf, bytes, "broadcast buf");
    auto* data = static_cast<std::byte*>(buf);
    CollectiveDesc desc = next_desc(CollectiveKind::kBroadcast, bytes);
    desc.root = root;
    collective(desc, data, data, nullptr, [&] {
      if (rank_ != root && bytes > 0) std::memcpy(data, peers_[static_cast<size_t>(root)].send, bytes);
    });
  }

  void barrier() override {
    const CollectiveDesc desc = next_desc(CollectiveKind::kBarrier, 0);
    collective(desc, nullptr, nullptr, nullptr, [] {});
  }

  void abort(std::string_view reason) noexcept override {
    try {
      const std::lock_guard lock(group_->mutex);
      group_->abort_locked("rank " + std::to_string(rank_) + " aborted: " + std::string(reason));
    } catch (...) {
      // Out of memory while building the reason: abort without it.
      const std::lock_guard lock(group_->mutex);
      group_->aborted = true;
      group_->cv.notify_all();
    }
  }

  bool is_aborted() const noexcept override {
    const std::lock_guard lock(group_->mutex);
    return group_->aborted;
  }

  /// Marks this rank as gone: peers waiting for it fail instead of waiting for the timeout.
  void mark_exited() noexcept {
    const std::lock_guard lock(group_->mutex);
    group_->exited[static_cast<size_t>(rank_)] = true;
    group_->cv.notify_all();
  }

 private:
  size_t ranks() const { return static_cast<size_t>(group_->num_ranks); }

  static void check_buffer(const void* ptr, size_t bytes, const char* what) {
    GCOMP_EXPECTS(ptr != nullptr || bytes == 0, gcompErrorInvalidArgument,
                  std::string(what) + " is null but " + std::to_string(bytes) + " bytes are needed");
  }

  CollectiveDesc next_desc(CollectiveKind kind, size_t bytes) {
    CollectiveDesc desc;
    desc.kind = static_cast<int32_t>(kind);
    desc.seq = seq_++;
    desc.bytes = bytes;
    return desc;
  }

  const std::byte* stage_if_overlapping(const void* send, size_t send_bytes, const void* recv, size_t recv_bytes) {
    if (!detail::ranges_overlap(send, send_bytes, recv, recv_bytes)) {
      return static_cast<const std::byte*>(send);
    }
    staging_.resize(send_bytes);
    std::memcpy(staging_.data(), send, send_bytes);
    return staging_.data();
  }

  /// Runs one collective: arrive, validate, `move_data` (outside the lock), depart.
  template <class MoveData>
  void collective(const CollectiveDesc& desc, const std::byte* send, std::byte* recv, const size_t* sizes,
                  MoveData&& move_data) {
    LocalGroup& g = *group_;
    {
      std::unique_lock lock(g.mutex);
      throw_if_aborted(desc);
      g.slots[static_cast<size_t>(rank_)] = LocalSlot{desc, send, recv, sizes};
      rendezvous(lock, desc);
      std::copy(g.slots.begin(), g.slots.end(), peers_.begin());
    }
    for (size_t j = 0; j < ranks(); ++j) descs_[j] = peers_[j].desc;
    const std::string mismatch = detail::check_descs(descs_.data(), size());
    // Variable-length collectives: every message within the bound, checked by every rank on the
    // same descriptors before any data moves.
    const bool varlen = desc.kind == static_cast<int32_t>(CollectiveKind::kAllgatherv) ||
                        desc.kind == static_cast<int32_t>(CollectiveKind::kAlltoallv);
    const std::string too_big = mismatch.empty() && varlen ? detail::check_message_bounds(descs_.data(), size()) : "";
    if (mismatch.empty() && too_big.empty()) move_data();
    {
      std::unique_lock lock(g.mutex);
      rendezvous(lock, desc);
    }
    if (!mismatch.empty()) GCOMP_FAIL(gcompErrorMismatch, mismatch);
    if (!too_big.empty()) GCOMP_FAIL(gcompErrorInvalidArgument, too_big);
  }

  void throw_if_aborted(const CollectiveDesc& desc) const {
    const LocalGroup& g = *group_;
    if (!g.aborted) return;
    GCOMP_FAIL(gcompErrorTimeout, detail::describe(desc) + " on rank " + std::to_string(rank_) +
                                      " (local backend): communicator aborted: " + g.abort_reason);
  }

  /// The spin before a rank sleeps in rendezvous() (kSpinUs): without the lock, on the generation
  /// counter. The wait that follows decides with the lock held, so a spin that ends early or late
  /// changes nothing but the time.
  void spin(std::unique_lock<std::mutex>& lock, uint64_t my_phase) {
    int64_t budget = spin_us_;
    if (budget == 0) {
      if (++unspun_ < kProbeEvery) return;
      budget = kSpinUs / 4;
    }
    unspun_ = 0;
    const LocalGroup& g = *group_;
    lock.unlock();
    const auto until = std::chrono::steady_clock::now() + std::chrono::microseconds(budget);
    bool arrived = false;
    for (unsigned i = 1;; ++i) {
      if (g.phase_seen.load(std::memory_order_acquire) != my_phase) {
        arrived = true;
        break;
      }
      spin_pause();
      if (i % 64 == 0 && std::chrono::steady_clock::now() >= until) break;
    }
    lock.lock();
    spin_us_ = arrived ? kSpinUs : (budget / 2 >= kMinSpinUs ? budget / 2 : 0);
  }

  /// Reusable generation barrier over all ranks of the group; the caller holds `lock`.
  void rendezvous(std::unique_lock<std::mutex>& lock, const CollectiveDesc& desc) {
    LocalGroup& g = *group_;
    const uint64_t my_phase = g.phase;
    g.phases_entered[static_cast<size_t>(rank_)] = my_phase + 1;
    if (++g.arrived == g.num_ranks) {
      g.arrived = 0;
      ++g.phase;
      g.phase_seen.store(g.phase, std::memory_order_release);
      g.cv.notify_all();
      return;
    }
    if (g.may_spin && !g.aborted) spin(lock, my_phase);
    const detail::Deadline deadline(g.timeout_ms);
    while (g.phase == my_phase) {
      throw_if_aborted(desc);
      std::vector<int> missing;
      bool any_exited = false;
      for (int r = 0; r < g.num_ranks; ++r) {
        if (g.phases_entered[static_cast<size_t>(r)] <= my_phase) {
          missing.push_back(r);
          any_exited = any_exited || g.exited[static_cast<size_t>(r)];
        }
      }
      if (any_exited) {
        std::vector<int> gone;
        for (const int r : missing) {
          if (g.exited[static_cast<size_t>(r)]) gone.push_back(r);
        }
        g.abort_locked(detail::describe(desc) + ": rank" + (gone.size() == 1 ? " " : "s ") + detail::join_ranks(gone) +
                       " exited without joining it");
        throw_if_aborted(desc);
      }
      if (deadline.expired()) {
        g.abort_locked(detail::describe(desc) + " timed out after " + std::to_string(g.timeout_ms) +
                       " ms (local backend, rank " + std::to_string(rank_) + " of " + std::to_string(g.num_ranks) +
                       "): ranks that did not arrive: " + detail::join_ranks(missing));
        GCOMP_FAIL(gcompErrorTimeout, g.abort_reason + "; communicator aborted");
      }
      if (!detail::interrupt_check_installed()) {
        g.cv.wait_until(lock, deadline.when());
        continue;
      }
      // An interrupt check (Ctrl-C in Python) runs every kInterruptPoll, without the group lock.
      g.cv.wait_until(lock, std::min(deadline.when(), detail::Deadline::Clock::now() + detail::kInterruptPoll));
      lock.unlock();
      const bool interrupted = detail::wait_interrupted();
      lock.lock();
      if (interrupted && g.phase == my_phase) {
        g.abort_locked(detail::describe(desc) + " interrupted on rank " + std::to_string(rank_) + " (local backend)");
        throw_if_aborted(desc);
      }
    }
  }

  std::shared_ptr<LocalGroup> group_;
  int rank_;
  uint64_t seq_ = 0;
  std::vector<LocalSlot> peers_;
  std::vector<const void*> inputs_;
  std::vector<CollectiveDesc> descs_;
  std::vector<std::byte> staging_;
  std::vector<size_t> send_sizes_;
  int64_t spin_us_ = kSpinUs;  ///< the next spin's length (spin())
  int unspun_ = 0;             ///< waits without a spin since the last one
};

}  // namespace

std::vector<std::unique_ptr<Communicator>> make_local_group(int num_ranks, const LocalOptions& options) {
  GCOMP_EXPECTS(num_ranks >= 1, gcompErrorInvalidArgument,
                "make_local_group: num_ranks must be >= 1, got " + std::to_string(num_ranks));
  auto group = std::make_shared<LocalGroup>(num_ranks, resolve_comm_timeout_ms(options.timeout_ms));
  std::vector<std::unique_ptr<Communicator>> comms;
  comms.reserve(static_cast<size_t>(num_ranks));
  for (int r = 0; r < num_ranks; ++r) comms.push_back(std::make_unique<LocalCommunicator>(group, r));
  return comms;
}

namespace {

std::string exception_text(const std::exception_ptr& error) {
  try {
    std::rethrow_exception(error);
  } catch (const std::exception& e) {
    return e.what();
  } catch (...) {
    return "unknown exception";
  }
}

bool is_timeout(const std::exception_ptr& error) {
  try {
    std::rethrow_exception(error);
  } catch (const Error& e) {
    return e.status() == gcompErrorTimeout;
  } catch (...) {
    return false;
  }
}

}  // namespace

void run_local(int num_ranks, const std::function<void(Communicator&)>& fn, const LocalOptions& options) {
  auto comms = make_local_group(num_ranks, options);
  const auto ranks = static_cast<size_t>(num_ranks);
  std::vector<std::exception_ptr> errors(ranks);
  std::vector<uint64_t> error_order(ranks, 0);
  std::atomic<uint64_t> next_order{0};

  const auto body = [&](size_t r) {
    auto& comm = static_cast<LocalCommunicator&>(*comms[r]);
    try {
      fn(comm);
    } catch (...) {
      errors[r] = std::current_exception();
      error_order[r] = next_order.fetch_add(1);
      comm.abort("its function threw: " + exception_text(errors[r]));
    }
    comm.mark_exited();
  };

  std::vector<std::thread> threads;
  threads.reserve(ranks);
  std::exception_ptr spawn_error;
  try {
    for (size_t r = 0; r < ranks; ++r) threads.emplace_back(body, r);
  } catch (...) {
    spawn_error = std::current_exception();
    for (size_t r = threads.size(); r < ranks; ++r) {
      auto& comm = static_cast<LocalCommunicator&>(*comms[r]);
      comm.abort("its thread could not be started: " + exception_text(spawn_error));
      comm.mark_exited();
    }
  }
  for (auto& t : threads) t.join();
  if (spawn_error) std::rethrow_exception(spawn_error);

  size_t first = ranks;
  size_t first_non_timeout = ranks;
  for (size_t r = 0; r < ranks; ++r) {
    if (!errors[r]) continue;
    if (first == ranks || error_order[r] < error_order[first]) first = r;
    if (!is_timeout(errors[r]) && (first_non_timeout == ranks || error_order[r] < error_order[first_non_timeout])) {
      first_non_timeout = r;
    }
  }
  if (first_non_timeout != ranks) std::rethrow_exception(errors[first_non_timeout]);
  if (first != ranks) std::rethrow_exception(errors[first]);
}

}  // namespace gcomp
