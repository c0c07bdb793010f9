// SPDX-License-Identifier: Apache-2.0
// Checkpoint sets (include/gcomp/checkpoint.hpp): per-rank Session checkpoints committed by a
// manifest that names the step and every rank file's size and digest.
#include <gcomp/checkpoint.hpp>

#include "host/algorithms/checkpoint.hpp"

#include <gcomp/io.hpp>

#include <algorithm>
#include <cctype>
#include <cstdio>
#include <filesystem>
#include <random>

namespace gcomp {

namespace {

/// The largest manifest read (a world of 2^20 ranks plus caller text fits many times over).
constexpr uint64_t kMaxManifestBytes = uint64_t{1} << 28;

std::string rank_file(const std::string& path, uint64_t step, uint32_t nonce, int rank) {
  char tag[48];
  std::snprintf(tag, sizeof tag, ".s%llu-%08x.rank%d", static_cast<unsigned long long>(step), nonce, rank);
  return path + tag;
}

uint64_t digest_of(const std::vector<uint8_t>& bytes) {
  return fnv1a64(std::string_view(reinterpret_cast<const char*>(bytes.data()), bytes.size()));
}

std::vector<uint8_t> read_whole(const std::string& path, const char* what, uint64_t limit) {
  io::InputFile f(path, what);
  return f.read_all(f.regular() ? UINT64_MAX : limit, "the size limit");
}

/// What one rank reports in an agreement step.
struct Report {
  int32_t status = gcompSuccess;
  uint32_t pad = 0;
  uint64_t a = 0;
  uint64_t b = 0;
};

std::vector<Report> agree(Communicator& comm, const Report& mine) {
  std::vector<Report> all(static_cast<size_t>(comm.size()));
  comm.host_allgather(&mine, all.data(), sizeof(Report));
  return all;
}

gcompStatus_t status_of(const std::exception_ptr& e) {
  try {
    std::rethrow_exception(e);
  } catch (const Error& err) {
    return err.status();
  } catch (const std::bad_alloc&) {
    return gcompErrorOutOfMemory;
  } catch (...) {
    return gcompErrorInternal;
  }
}

/// Throws on every rank when a rank's report is a failure, with the same message everywhere: the
/// failing ranks' own reasons (gathered; a failure path, so the extra collectives cost nothing).
void throw_if_any_failed(Communicator& comm, const std::vector<Report>& all, const std::exception_ptr& own,
                         const std::string& what) {
  gcompStatus_t status = gcompSuccess;
  for (const Report& r : all)
    if (r.status != gcompSuccess && status == gcompSuccess) status = static_cast<gcompStatus_t>(r.status);
  if (status == gcompSuccess) return;
  std::string reason;
  if (own) {
    try {
      std::rethrow_exception(own);
    } catch (const std::exception& e) {
      reason = e.what();
    }
  }
  const auto ranks = static_cast<size_t>(comm.size());
  const uint64_t length = reason.size();
  std::vector<uint64_t> lengths(ranks);
  comm.host_allgather(&length, lengths.data(), sizeof length);
  const size_t longest = static_cast<size_t>(*std::max_element(lengths.begin(), lengths.end()));
  reason.resize(longest, '\0');
  std::string texts(longest * ranks, '\0');
  if (longest > 0) comm.host_allgather(reason.data(), texts.data(), longest);
  std::string message = what + ":";
  for (size_t r = 0; r < ranks; ++r) {
    if (all[r].status == gcompSuccess) continue;
    message += " rank " + std::to_string(r) + ": " + texts.substr(r * longest, static_cast<size_t>(lengths[r])) + ";";
  }
  message.pop_back();
  GCOMP_FAIL(status, message);
}

/// Removes this rank's files of other saves of the set at `path` (older sets, or files a crashed
/// save left), keeping `keep`.
void remove_other_rank_files(const std::string& path, int rank, const std::string& keep) {
  namespace fs = std::filesystem;
  const fs::path p(path);
  const fs::path dir = p.has_parent_path() ? p.parent_path() : fs::path(".");
  const std::string prefix = p.filename().string() + ".s";
  const std::string suffix = ".rank" + std::to_string(rank);
  const std::string kept = fs::path(keep).filename().string();
  std::error_code ec;
  for (fs::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec)) {
    const std::string name = it->path().filename().string();
    if (name == kept || name.size() <= prefix.size() + suffix.size() || name.rfind(prefix, 0) != 0 ||
        name.compare(name.size() - suffix.size(), suffix.size(), suffix) != 0)
      continue;
    // s<digits>-<8 hex digits>, nothing else between prefix and suffix.
    const std::string mid = name.substr(prefix.size(), name.size() - prefix.size() - suffix.size());
    const size_t dash = mid.find('-');
    if (dash == 0 || dash == std::string::npos || mid.size() - dash - 1 != 8 ||
        !std::all_of(mid.begin(), mid.begin() + static_cast<std::ptrdiff_t>(dash),
                     [](char c) { return c >= '0' && c <= '9'; }) ||
        !std::all_of(mid.begin() + static_cast<std::ptrdiff_t>(dash) + 1, mid.end(),
                     [](char c) { return std::isxdigit(static_cast<unsigned char>(c)) != 0; }))
      continue;
    std::error_code rm;
    fs::remove(it->path(), rm);
  }
}

}  // namespace

void save_checkpoint_set(Communicator& comm, const Session& session, const std::string& path,
                         const Session::Extras& extras, uint64_t data_digest, const std::string& app) {
  const int rank = comm.rank();
  const std::string what = "checkpoint set '" + printable(path) + "' not saved";
  // 1. The nonce that names this save's files: rank 0's.
  Report nonce_report;
  if (rank == 0) nonce_report.a = std::random_device{}();
  const uint32_t nonce = static_cast<uint32_t>(agree(comm, nonce_report)[0].a);
  const uint64_t step = session.step_count();
  const std::string mine = rank_file(path, step, nonce, rank);

  // 2. Every rank writes its file and reads it back for its digest.
  Report wrote;
  std::exception_ptr own;
  try {
    if (rank == 0) io::check_output(path, io::OutputOptions{"checkpoint manifest", {}, true});
    session.save(mine, extras);
    const std::vector<uint8_t> bytes = read_whole(mine, "checkpoint", uint64_t{1} << 40);
    wrote.a = bytes.size();
    wrote.b = digest_of(bytes);
  } catch (...) {
    own = std::current_exception();
    wrote.status = status_of(own);
  }
  const std::vector<Report> files = agree(comm, wrote);
  bool all_wrote = std::all_of(files.begin(), files.end(), [](const Report& r) { return r.status == gcompSuccess; });
  if (!all_wrote) {
    std::error_code ec;
    std::filesystem::remove(mine, ec);
    throw_if_any_failed(comm, files, own, what + " (the previous set is unchanged)");
  }

  // 3. The commit: rank 0 writes the manifest; everyone learns whether it did.
  Report committed;
  if (rank == 0) {
    try {
      detail::SetManifest m;
      m.step = step;
      m.world = static_cast<uint32_t>(comm.size());
      m.nonce = nonce;
      m.data_digest = data_digest;
      m.app = app;
      for (const Report& f : files) m.files.emplace_back(f.a, f.b);
      io::write_file(path, detail::encode_manifest(m), io::OutputOptions{"checkpoint manifest", {}, true});
    } catch (...) {
      own = std::current_exception();
      committed.status = status_of(own);
    }
  }
  const std::vector<Report> commit = agree(comm, committed);
  if (commit[0].status != gcompSuccess) {
    std::error_code ec;
    std::filesystem::remove(mine, ec);
    throw_if_any_failed(comm, commit, own, what + " (the manifest was not written; the previous set is unchanged)");
  }
  // 4. Committed: the files of older sets are no longer named by the manifest.
  remove_other_rank_files(path, rank, mine);
}

CheckpointSetInfo read_checkpoint_set_info(const std::string& path) {
  const detail::SetManifest m = detail::parse_manifest(read_whole(path, "checkpoint set manifest", kMaxManifestBytes),
                                                       "'" + printable(path) + "'");
  return CheckpointSetInfo{m.step, static_cast<int>(m.world), m.data_digest, m.app};
}

CheckpointSetInfo load_checkpoint_set(Communicator& comm, Session& session, const std::string& path,
                                      const Session::Extras& extras, uint64_t data_digest) {
  const int rank = comm.rank();
  const std::string shown = "checkpoint set '" + printable(path) + "'";
  detail::SetManifest m;
  std::string mine;
  std::exception_ptr own;
  Report checked;
  // 1. Every check that can fail, before any state changes.
  try {
    const std::vector<uint8_t> manifest = read_whole(path, "checkpoint set manifest", kMaxManifestBytes);
    m = detail::parse_manifest(manifest, "'" + printable(path) + "'");
    GCOMP_EXPECTS(m.world == static_cast<uint32_t>(comm.size()), gcompErrorMismatch,
                  shown + " is from a world of " + std::to_string(m.world) + " ranks, this one has " +
                      std::to_string(comm.size()));
    GCOMP_EXPECTS(m.data_digest == data_digest, gcompErrorMismatch,
                  shown + " was written for other data (data digest " + std::to_string(m.data_digest) +
                      ", this run's is " + std::to_string(data_digest) +
                      "): another data file, or another loss, regularization or batch size");
    mine = rank_file(path, m.step, m.nonce, rank);
    const auto& [want_bytes, want_digest] = m.files[static_cast<size_t>(rank)];
    std::vector<uint8_t> bytes;
    try {
      bytes = read_whole(mine, "checkpoint", want_bytes + 1);
    } catch (const Error& e) {
      GCOMP_FAIL(e.status(), shown + " is partial: the file of rank " + std::to_string(rank) + " at step " +
                                 std::to_string(m.step) + " cannot be read (" + e.what() + ")");
    }
    GCOMP_EXPECTS(bytes.size() == want_bytes && digest_of(bytes) == want_digest, gcompErrorCorruptPayload,
                  shown + ": the file '" + printable(mine) + "' of rank " + std::to_string(rank) + " (" +
                      std::to_string(bytes.size()) + " bytes) does not match the manifest's step " +
                      std::to_string(m.step) + " (" + std::to_string(want_bytes) +
                      " bytes, another digest): a mixed or damaged set is refused");
  } catch (...) {
    own = std::current_exception();
    checked.status = status_of(own);
  }
  throw_if_any_failed(comm, agree(comm, checked), own, shown + " not loaded (no state changed)");
  // 2. Load (the configuration was agreed at setup, so a mismatch fails on every rank alike).
  Report loaded;
  try {
    session.load(mine, extras);
  } catch (...) {
    own = std::current_exception();
    loaded.status = status_of(own);
  }
  throw_if_any_failed(comm, agree(comm, loaded), own, shown + " not loaded");
  return CheckpointSetInfo{m.step, static_cast<int>(m.world), m.data_digest, m.app};
}

}  // namespace gcomp
