// SPDX-License-Identifier: Apache-2.0
// Backend-independent parts of the communicator layer: enums, timeout resolution, collective
// descriptors, rank-order reduction and check_agreement.
#include "host/comm/comm_internal.hpp"
#include "host/common/env.hpp"

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <thread>
#include <type_traits>

namespace gcomp {

size_t data_type_bytes(DataType type) {
  switch (type) {
    case DataType::kF32: return 4;
    case DataType::kF64: return 8;
    case DataType::kI32: return 4;
    case DataType::kI64: return 8;
    case DataType::kU64: return 8;
  }
  GCOMP_FAIL(gcompErrorInvalidArgument, "unknown DataType value " + std::to_string(static_cast<int32_t>(type)) +
                                            " (valid: f32, f64, i32, i64, u64)");
}

const char* data_type_name(DataType type) noexcept {
  switch (type) {
    case DataType::kF32: return "f32";
    case DataType::kF64: return "f64";
    case DataType::kI32: return "i32";
    case DataType::kI64: return "i64";
    case DataType::kU64: return "u64";
  }
  return "unknown";
}

const char* reduce_op_name(ReduceOp op) noexcept {
  switch (op) {
    case ReduceOp::kSum: return "sum";
    case ReduceOp::kMax: return "max";
  }
  return "unknown";
}

int64_t resolve_comm_timeout_ms(int64_t requested_ms) {
  GCOMP_EXPECTS(requested_ms >= 0, gcompErrorInvalidArgument,
                "communicator timeout_ms must be >= 0 (0: default), got " + std::to_string(requested_ms));
  if (requested_ms > 0) return requested_ms;
  // GCOMP_COMM_TIMEOUT_MS (host/common/env.hpp: a positive integer, else an error naming it).
  return detail::env_int(detail::EnvVarId::kCommTimeoutMs).value_or(kDefaultCommTimeoutMs);
}

namespace {
std::atomic<WaitInterruptCheck> g_wait_interrupt{nullptr};
}  // namespace

void set_wait_interrupt_check(WaitInterruptCheck check) noexcept { g_wait_interrupt.store(check); }

bool detail::interrupt_check_installed() noexcept { return g_wait_interrupt.load() != nullptr; }

bool detail::wait_interrupted() {
  const WaitInterruptCheck check = g_wait_interrupt.load();
  return check != nullptr && check();
}

void Communicator::synchronize(Stream /*stream*/) {}

void Communicator::host_allgather(const void* send, void* recv, size_t bytes_per_rank) {
  allgather(send, recv, bytes_per_rank, nullptr);
}

void Communicator::allgatherv(const void* send, size_t send_bytes, void* recv, size_t max_bytes_per_rank,
                              size_t* recv_bytes, Stream stream) {
  // Generic form for subclasses outside gcomp: sizes (and the bound) over host_allgather, then
  // the messages at the full slot size. The gcomp backends override it.
  const auto ranks = static_cast<size_t>(size());
  GCOMP_EXPECTS(recv_bytes != nullptr, gcompErrorInvalidArgument, "allgatherv: recv_bytes is null");
  const size_t total = detail::checked_mul(max_bytes_per_rank, ranks, "allgatherv");
  const uint64_t mine[2] = {max_bytes_per_rank, send_bytes};
  std::vector<uint64_t> all(2 * ranks);
  host_allgather(mine, all.data(), sizeof(mine));
  std::vector<detail::CollectiveDesc> descs(ranks);
  for (size_t r = 0; r < ranks; ++r) {
    descs[r].kind = static_cast<int32_t>(detail::CollectiveKind::kAllgatherv);
    descs[r].bytes = all[2 * r];
    descs[r].max_send = all[2 * r + 1];
  }
  if (std::string m = detail::check_descs(descs.data(), size()); !m.empty()) {
    GCOMP_FAIL(gcompErrorMismatch, m);
  }
  if (std::string m = detail::check_message_bounds(descs.data(), size()); !m.empty()) {
    GCOMP_FAIL(gcompErrorInvalidArgument, m);
  }
  GCOMP_EXPECTS(send != nullptr || send_bytes == 0, gcompErrorInvalidArgument, "allgatherv: send is null");
  GCOMP_EXPECTS(recv != nullptr || total == 0, gcompErrorInvalidArgument, "allgatherv: recv is null");
  auto* own = static_cast<std::byte*>(recv) + static_cast<size_t>(rank()) * max_bytes_per_rank;
  // The full slot travels: copy the message into the own slot (in place when it is there).
  if (max_bytes_per_rank > 0 && send != own) {
    if (memory_space() == MemorySpace::kHost) {
      if (send_bytes > 0) std::memmove(own, send, send_bytes);  // send may be null when it is 0
    } else {
      GCOMP_FAIL(gcompErrorNotSupported,
                 "allgatherv on a device communicator without its own allgatherv: pass send == "
                 "recv + rank * max_bytes_per_rank");
    }
  }
  if (total > 0) allgather(own, recv, max_bytes_per_rank, stream);
  for (size_t r = 0; r < ranks; ++r) recv_bytes[r] = static_cast<size_t>(all[2 * r + 1]);
}

void Communicator::alltoallv(const void* send, const size_t* send_bytes, void* recv, size_t max_bytes_per_peer,
                             size_t* recv_bytes, Stream stream) {
  const auto ranks = static_cast<size_t>(size());
  GCOMP_EXPECTS(send_bytes != nullptr && recv_bytes != nullptr, gcompErrorInvalidArgument,
                "alltoallv: send_bytes and recv_bytes must not be null");
  const size_t total = detail::checked_mul(max_bytes_per_peer, ranks, "alltoallv");
  // Per rank: the bound, then its P message sizes.
  std::vector<uint64_t> mine(ranks + 1);
  mine[0] = max_bytes_per_peer;
  for (size_t j = 0; j < ranks; ++j) mine[j + 1] = send_bytes[j];
  std::vector<uint64_t> all((ranks + 1) * ranks);
  host_allgather(mine.data(), all.data(), (ranks + 1) * sizeof(uint64_t));
  std::vector<detail::CollectiveDesc> descs(ranks);
  for (size_t r = 0; r < ranks; ++r) {
    descs[r].kind = static_cast<int32_t>(detail::CollectiveKind::kAlltoallv);
    descs[r].bytes = all[r * (ranks + 1)];
    for (size_t j = 0; j < ranks; ++j) descs[r].max_send = std::max(descs[r].max_send, all[r * (ranks + 1) + 1 + j]);
  }
  if (std::string m = detail::check_descs(descs.data(), size()); !m.empty()) {
    GCOMP_FAIL(gcompErrorMismatch, m);
  }
  if (std::string m = detail::check_message_bounds(descs.data(), size()); !m.empty()) {
    GCOMP_FAIL(gcompErrorInvalidArgument, m);
  }
  GCOMP_EXPECTS((send != nullptr && recv != nullptr) || total == 0, gcompErrorInvalidArgument,
                "alltoallv: null send or recv buffer");
  if (total > 0) alltoall(send, recv, max_bytes_per_peer, stream);
  const auto me = static_cast<size_t>(rank());
  for (size_t j = 0; j < ranks; ++j) recv_bytes[j] = static_cast<size_t>(all[j * (ranks + 1) + 1 + me]);
}

uint64_t fnv1a64(std::string_view text) noexcept {
  uint64_t hash = 0xcbf29ce484222325ULL;
  for (const char c : text) {
    hash ^= static_cast<uint8_t>(c);
    hash *= 0x100000001b3ULL;
  }
  return hash;
}

namespace {

constexpr size_t kShownTextChars = 240;

std::string quoted(std::string_view text) {
  std::string out = "\"";
  out.append(text.substr(0, kShownTextChars));
  if (text.size() > kShownTextChars) out += "...";
  out += "\"";
  if (text.size() > kShownTextChars) out += " (" + std::to_string(text.size()) + " bytes)";
  return out;
}

}  // namespace

void check_agreement(Communicator& comm, std::string_view what_description, std::string_view canonical_text) {
  const int num_ranks = comm.size();
  const auto ranks = static_cast<size_t>(num_ranks);
  const uint64_t digest = fnv1a64(canonical_text);
  std::vector<uint64_t> digests(ranks);
  comm.host_allgather(&digest, digests.data(), sizeof(uint64_t));
  if (std::all_of(digests.begin(), digests.end(), [&](uint64_t d) { return d == digests[0]; })) {
    return;
  }

  const uint64_t length = canonical_text.size();
  std::vector<uint64_t> lengths(ranks);
  comm.host_allgather(&length, lengths.data(), sizeof(uint64_t));
  const size_t max_length = static_cast<size_t>(*std::max_element(lengths.begin(), lengths.end()));
  std::string padded(canonical_text);
  padded.resize(max_length, '\0');
  std::string all(detail::checked_mul(max_length, ranks, "check_agreement text"), '\0');
  if (max_length > 0) comm.host_allgather(padded.data(), all.data(), max_length);

  std::vector<std::string_view> texts(ranks);
  for (size_t r = 0; r < ranks; ++r) {
    texts[r] = std::string_view(all.data() + r * max_length, static_cast<size_t>(lengths[r]));
  }
  // Ranks grouped by distinct text, in order of first appearance; group 0 holds rank 0.
  std::vector<std::vector<int>> groups;
  std::vector<std::string_view> group_text;
  for (int r = 0; r < num_ranks; ++r) {
    const auto it = std::find(group_text.begin(), group_text.end(), texts[static_cast<size_t>(r)]);
    if (it == group_text.end()) {
      group_text.push_back(texts[static_cast<size_t>(r)]);
      groups.push_back({r});
    } else {
      groups[static_cast<size_t>(it - group_text.begin())].push_back(r);
    }
  }
  std::string message = std::string(what_description) + " differs across ranks:";
  if (groups.size() == 1) {
    // Equal texts with different digests cannot happen; report rather than ignore.
    GCOMP_FAIL(gcompErrorInternal, message + " digests differ but texts are equal");
  }
  for (size_t g = 1; g < groups.size(); ++g) {
    message += (g == 1 ? " " : "; ");
    message += "rank 0: " + quoted(group_text[0]) + " vs ";
    message +=
        (groups[g].size() == 1 ? "rank " : "ranks ") + detail::join_ranks(groups[g]) + ": " + quoted(group_text[g]);
  }
  std::vector<int> differing;
  for (size_t g = 1; g < groups.size(); ++g) {
    differing.insert(differing.end(), groups[g].begin(), groups[g].end());
  }
  std::sort(differing.begin(), differing.end());
  message += " (" + std::to_string(differing.size()) + " of " + std::to_string(num_ranks) +
             " ranks differ from rank 0: " + detail::join_ranks(differing) + ")";
  GCOMP_FAIL(gcompErrorMismatch, message);
}

namespace detail {

const char* collective_name(int32_t kind) noexcept {
  switch (static_cast<CollectiveKind>(kind)) {
    case CollectiveKind::kAllgather: return "allgather";
    case CollectiveKind::kAlltoall: return "alltoall";
    case CollectiveKind::kAllreduce: return "allreduce";
    case CollectiveKind::kBroadcast: return "broadcast";
    case CollectiveKind::kBarrier: return "barrier";
    case CollectiveKind::kAllgatherv: return "allgatherv";
    case CollectiveKind::kAlltoallv: return "alltoallv";
  }
  return "unknown collective";
}

std::string describe(const CollectiveDesc& desc) {
  std::string out = std::string(collective_name(desc.kind)) + " #" + std::to_string(desc.seq);
  switch (static_cast<CollectiveKind>(desc.kind)) {
    case CollectiveKind::kAllgather: return out + " (" + std::to_string(desc.bytes) + " bytes per rank)";
    case CollectiveKind::kAlltoall: return out + " (" + std::to_string(desc.bytes) + " bytes per peer)";
    case CollectiveKind::kAllreduce:
      return out + " (" + std::to_string(desc.bytes) + " x " + data_type_name(static_cast<DataType>(desc.type)) + ", " +
             reduce_op_name(static_cast<ReduceOp>(desc.op)) + ")";
    case CollectiveKind::kBroadcast:
      return out + " (" + std::to_string(desc.bytes) + " bytes from root " + std::to_string(desc.root) + ")";
    case CollectiveKind::kBarrier: return out;
    case CollectiveKind::kAllgatherv: return out + " (at most " + std::to_string(desc.bytes) + " bytes per rank)";
    case CollectiveKind::kAlltoallv: return out + " (at most " + std::to_string(desc.bytes) + " bytes per peer)";
  }
  return out;
}

std::string check_message_bounds(const CollectiveDesc* descs, int num_ranks) {
  std::string over;
  int count = 0;
  for (int r = 0; r < num_ranks; ++r) {
    if (descs[r].max_send <= descs[r].bytes) continue;
    over += (count++ == 0 ? "" : ", ") + std::string("rank ") + std::to_string(r) + " sends " +
            std::to_string(descs[r].max_send) + " bytes";
  }
  if (count == 0) return {};
  return describe(descs[0]) + ": message above the bound (" + over + "); no data moved";
}

std::string join_ranks(const std::vector<int>& ranks) {
  std::string out;
  for (size_t i = 0; i < ranks.size(); ++i) {
    if (i > 0) out += ",";
    out += std::to_string(ranks[i]);
  }
  return out;
}

std::string check_descs(const CollectiveDesc* descs, int num_ranks) {
  const auto same = [](const CollectiveDesc& a, const CollectiveDesc& b) {
    return a.kind == b.kind && a.type == b.type && a.op == b.op && a.root == b.root && a.seq == b.seq &&
           a.bytes == b.bytes;
  };
  std::vector<int> differing;
  for (int r = 1; r < num_ranks; ++r) {
    if (!same(descs[r], descs[0])) differing.push_back(r);
  }
  if (differing.empty()) return {};
  std::string message = "collective mismatch across ranks (ranks " + join_ranks(differing) +
                        " differ from rank 0): rank 0: " + describe(descs[0]);
  std::vector<bool> shown(static_cast<size_t>(num_ranks), false);
  for (const int r : differing) {
    if (shown[static_cast<size_t>(r)]) continue;
    std::vector<int> group;
    for (const int q : differing) {
      if (!shown[static_cast<size_t>(q)] && same(descs[q], descs[r])) {
        group.push_back(q);
        shown[static_cast<size_t>(q)] = true;
      }
    }
    message += (group.size() == 1 ? " vs rank " : " vs ranks ") + join_ranks(group) + ": " + describe(descs[r]);
  }
  return message;
}

namespace {

template <class T>
T combine(T acc, T value, ReduceOp op) noexcept {
  if (op == ReduceOp::kMax) {
    if constexpr (std::is_floating_point_v<T>) {
      if (std::isnan(acc)) return acc;
      if (std::isnan(value)) return value;
    }
    return value > acc ? value : acc;
  }
  if constexpr (std::is_floating_point_v<T>) {
    return acc + value;
  } else {
    using U = std::make_unsigned_t<T>;
    return static_cast<T>(static_cast<U>(static_cast<U>(acc) + static_cast<U>(value)));
  }
}

template <class T>
void reduce_typed(const void* const* inputs, int num_inputs, void* out, size_t count, ReduceOp op) {
  auto* dst = static_cast<T*>(out);
  for (size_t i = 0; i < count; ++i) {
    T acc = static_cast<const T*>(inputs[0])[i];
    for (int k = 1; k < num_inputs; ++k) acc = combine(acc, static_cast<const T*>(inputs[k])[i], op);
    dst[i] = acc;
  }
}

}  // namespace

void reduce_rank_order(const void* const* inputs, int num_inputs, void* out, size_t count, DataType type, ReduceOp op) {
  if (count == 0 || num_inputs <= 0) return;
  GCOMP_EXPECTS(op == ReduceOp::kSum || op == ReduceOp::kMax, gcompErrorInvalidArgument,
                "unknown ReduceOp value " + std::to_string(static_cast<int32_t>(op)) + " (valid: sum, max)");
  switch (type) {
    case DataType::kF32: reduce_typed<float>(inputs, num_inputs, out, count, op); return;
    case DataType::kF64: reduce_typed<double>(inputs, num_inputs, out, count, op); return;
    case DataType::kI32: reduce_typed<int32_t>(inputs, num_inputs, out, count, op); return;
    case DataType::kI64: reduce_typed<int64_t>(inputs, num_inputs, out, count, op); return;
    case DataType::kU64: reduce_typed<uint64_t>(inputs, num_inputs, out, count, op); return;
  }
  GCOMP_FAIL(gcompErrorInvalidArgument, "unknown DataType value " + std::to_string(static_cast<int32_t>(type)) +
                                            " (valid: f32, f64, i32, i64, u64)");
}

bool ranges_overlap(const void* a, size_t a_bytes, const void* b, size_t b_bytes) noexcept {
  if (a_bytes == 0 || b_bytes == 0) return false;
  const auto pa = reinterpret_cast<uintptr_t>(a);
  const auto pb = reinterpret_cast<uintptr_t>(b);
  return pa < pb + b_bytes && pb < pa + a_bytes;
}

size_t checked_mul(size_t a, size_t b, const char* what) {
  GCOMP_EXPECTS(b == 0 || a <= std::numeric_limits<size_t>::max() / b, gcompErrorInvalidArgument,
                std::string(what) + ": size " + std::to_string(a) + " x " + std::to_string(b) + " overflows size_t");
  return a * b;
}

void Backoff::pause() {
  ++polls_;
  if (polls_ <= 64) {
    std::this_thread::yield();
    return;
  }
  const int step = std::min(polls_ - 64, 20);
  std::this_thread::sleep_for(std::chrono::microseconds(50 * step));
}

}  // namespace detail
}  // namespace gcomp
