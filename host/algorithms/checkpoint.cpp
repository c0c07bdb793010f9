// SPDX-License-Identifier: Apache-2.0
#include "host/algorithms/checkpoint.hpp"

#include <gcomp/error.hpp>
#include <gcomp/io.hpp>
#include <gcomp/wire.hpp>

#include <cstring>

namespace gcomp::detail {

namespace {

constexpr uint32_t kMagic = 0x504b4347u;  // "GCKP"
constexpr uint32_t kVersion = 1;
/// A checkpoint read from a pipe or device (not a regular file) is refused past this size.
constexpr uint64_t kMaxStreamCheckpoint = uint64_t{1} << 30;

template <class T>
void put(std::vector<uint8_t>& out, T v) {
  uint8_t bytes[sizeof(T)];
  std::memcpy(bytes, &v, sizeof(T));
  out.insert(out.end(), bytes, bytes + sizeof(T));
}

struct Reader {
  const std::vector<uint8_t>& b;
  size_t pos = 0;
  const std::string& what;
  // Reads stop at the trailing CRC (the caller checked the minimum size), so pos <= b.size() - 4.
  template <class T>
  T get() {
    if (b.size() - 4 - pos < sizeof(T)) GCOMP_FAIL(gcompErrorCorruptPayload, "checkpoint " + what + " is truncated");
    T v;
    std::memcpy(&v, b.data() + pos, sizeof(T));
    pos += sizeof(T);
    return v;
  }
};

}  // namespace

void write_checkpoint(const std::string& path, const CheckpointData& d) {
  std::vector<uint8_t> out;
  put(out, kMagic);
  put(out, kVersion);
  put(out, d.config_digest);
  put(out, d.rank);
  put(out, d.world);
  put(out, d.step);
  put(out, static_cast<uint32_t>(d.arrays.size()));
  for (const auto& [name, v] : d.arrays) {
    put(out, static_cast<uint32_t>(name.size()));
    out.insert(out.end(), name.begin(), name.end());
    put(out, static_cast<uint64_t>(v.size()));
    const auto* raw = reinterpret_cast<const uint8_t*>(v.data());
    out.insert(out.end(), raw, raw + 8 * v.size());
  }
  put(out, crc32(out));
  io::write_file(path, out, io::OutputOptions{"checkpoint", {}, true});
}

CheckpointData parse_checkpoint(const std::vector<uint8_t>& bytes, const std::string& what) {
  if (bytes.size() < 40) GCOMP_FAIL(gcompErrorCorruptPayload, "checkpoint " + what + " is truncated");
  uint32_t stored;
  std::memcpy(&stored, bytes.data() + bytes.size() - 4, 4);
  Reader r{bytes, 0, what};
  if (r.get<uint32_t>() != kMagic) GCOMP_FAIL(gcompErrorCorruptPayload, what + " is not a gcomp checkpoint");
  const uint32_t version = r.get<uint32_t>();
  if (version != kVersion)
    GCOMP_FAIL(gcompErrorCorruptPayload, "checkpoint " + what + " has version " + std::to_string(version) +
                                             ", this build reads version " + std::to_string(kVersion));
  if (crc32(std::span<const uint8_t>(bytes.data(), bytes.size() - 4)) != stored)
    GCOMP_FAIL(gcompErrorCorruptPayload, "checkpoint " + what + " fails its checksum");
  CheckpointData d;
  d.config_digest = r.get<uint64_t>();
  d.rank = r.get<uint32_t>();
  d.world = r.get<uint32_t>();
  d.step = r.get<uint64_t>();
  const uint32_t count = r.get<uint32_t>();
  for (uint32_t a = 0; a < count; ++a) {
    const uint32_t len = r.get<uint32_t>();
    if (bytes.size() - 4 - r.pos < len) GCOMP_FAIL(gcompErrorCorruptPayload, "checkpoint " + what + " is truncated");
    std::string name(reinterpret_cast<const char*>(bytes.data() + r.pos), len);
    r.pos += len;
    const uint64_t n = r.get<uint64_t>();
    if ((bytes.size() - 4 - r.pos) / 8 < n)
      GCOMP_FAIL(gcompErrorCorruptPayload, "checkpoint " + what + " is truncated");
    std::vector<double> v(n);
    if (n) std::memcpy(v.data(), bytes.data() + r.pos, 8 * n);
    r.pos += 8 * n;
    d.arrays.emplace_back(std::move(name), std::move(v));
  }
  if (r.pos != bytes.size() - 4) GCOMP_FAIL(gcompErrorCorruptPayload, "checkpoint " + what + " has trailing bytes");
  return d;
}

namespace {
constexpr uint32_t kSetMagic = 0x534b4347u;  // "GCKS"
constexpr uint32_t kSetVersion = 1;
}  // namespace

std::vector<uint8_t> encode_manifest(const SetManifest& m) {
  std::vector<uint8_t> out(40 + m.app.size() + 16 * m.files.size() + 4);
  size_t pos = 0;
  auto put_at = [&](const void* v, size_t n) {
    if (n > 0) std::memcpy(out.data() + pos, v, n);
    pos += n;
  };
  const uint64_t app = m.app.size();
  put_at(&kSetMagic, 4);
  put_at(&kSetVersion, 4);
  put_at(&m.step, 8);
  put_at(&m.world, 4);
  put_at(&m.nonce, 4);
  put_at(&m.data_digest, 8);
  put_at(&app, 8);
  put_at(m.app.data(), m.app.size());
  for (const auto& [bytes, digest] : m.files) {
    put_at(&bytes, 8);
    put_at(&digest, 8);
  }
  const uint32_t crc = crc32(std::span<const uint8_t>(out.data(), pos));
  put_at(&crc, 4);
  return out;
}

SetManifest parse_manifest(const std::vector<uint8_t>& bytes, const std::string& what) {
  auto bad = [&](const std::string& why) {
    GCOMP_FAIL(gcompErrorCorruptPayload, "checkpoint set manifest " + what + ": " + why);
  };
  if (bytes.size() < 44) bad("truncated (" + std::to_string(bytes.size()) + " bytes)");
  Reader r{bytes, 0, what};
  if (r.get<uint32_t>() != kSetMagic) bad("not a gcomp checkpoint set manifest");
  const uint32_t version = r.get<uint32_t>();
  if (version != kSetVersion)
    bad("version " + std::to_string(version) + ", this build reads version " + std::to_string(kSetVersion));
  uint32_t stored = 0;
  std::memcpy(&stored, bytes.data() + bytes.size() - 4, 4);
  if (crc32(std::span<const uint8_t>(bytes.data(), bytes.size() - 4)) != stored) bad("fails its checksum");
  SetManifest m;
  m.step = r.get<uint64_t>();
  m.world = r.get<uint32_t>();
  m.nonce = r.get<uint32_t>();
  m.data_digest = r.get<uint64_t>();
  const uint64_t app = r.get<uint64_t>();
  const size_t left = bytes.size() - 4 - r.pos;
  if (app > left) bad("truncated");
  m.app.assign(reinterpret_cast<const char*>(bytes.data() + r.pos), static_cast<size_t>(app));
  r.pos += static_cast<size_t>(app);
  if (m.world == 0) bad("names no rank");
  if ((bytes.size() - 4 - r.pos) / 16 != m.world || (bytes.size() - 4 - r.pos) % 16 != 0)
    bad("lists " + std::to_string((bytes.size() - 4 - r.pos) / 16) + " rank files for a world of " +
        std::to_string(m.world));
  m.files.reserve(m.world);
  for (uint32_t k = 0; k < m.world; ++k) {
    const uint64_t size = r.get<uint64_t>();
    const uint64_t digest = r.get<uint64_t>();
    m.files.emplace_back(size, digest);
  }
  return m;
}

CheckpointData read_checkpoint(const std::string& path) {
  io::InputFile f(path, "checkpoint");
  const std::vector<uint8_t> bytes = f.read_all(f.regular() ? UINT64_MAX : kMaxStreamCheckpoint, "1 GiB");
  return parse_checkpoint(bytes, "'" + printable(path) + "'");
}

}  // namespace gcomp::detail
