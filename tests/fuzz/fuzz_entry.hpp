// SPDX-License-Identifier: Apache-2.0
/// @file fuzz_entry.hpp
/// @brief The entry points shared by the libFuzzer targets (tests/fuzz/fuzz_*.cpp) and the replay of
/// their reproducers (tests/unit/test_fuzz_regressions.cpp). Each function feeds untrusted bytes to
/// one parser or decoder. A gcomp::Error is the expected rejection and propagates; any other
/// exception is a bug, and so is a broken invariant, reported by throwing FuzzBug.
#pragma once

#include <gcomp/codec.hpp>
#include <gcomp/gcomp.h>
#include <gcomp/wire.hpp>

#include "host/algorithms/checkpoint.hpp"
#include "tools/support/problems.hpp"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <span>
#include <stdexcept>
#include <string>
#include <string_view>
#include <system_error>
#include <vector>

#include <unistd.h>

namespace gcomp::fuzz {

/// A broken invariant found by a fuzz entry point (never thrown by the library itself).
struct FuzzBug : std::logic_error {
  using std::logic_error::logic_error;
};

/// Largest decoded buffer the harness allocates for a frame (the frame itself may describe more
/// elements, e.g. a random-k message of a huge layout; the harness then only validates it).
inline constexpr int64_t kMaxDecodeElems = int64_t{1} << 22;

/// For an accepted payload: its used bytes alone (a short payload) and the zero-padded full form are
/// accepted too and decode to `decoded` bit for bit (docs/wire-format.md §6).
inline void check_short_equals_full(const Codec& codec, std::span<const uint8_t> payload, const RngKey& key,
                                    const std::vector<float>& decoded) {
  if (!codec.variable_length()) return;
  const size_t used = codec.used_bytes(payload);
  if (used > payload.size()) throw FuzzBug("an accepted payload's used_bytes exceeds its size");
  std::vector<uint8_t> full(payload.begin(), payload.begin() + static_cast<std::ptrdiff_t>(used));
  std::vector<float> a(decoded.size(), 1.0f);
  std::vector<float> b(decoded.size(), 2.0f);
  try {
    codec.decode(full, key, a);  // the short form
    full.resize(codec.encoded_bytes(), 0);
    codec.decode(full, key, b);  // the full form
  } catch (const Error& e) {
    throw FuzzBug(std::string("the short or full form of an accepted payload is rejected: ") + e.what());
  }
  if (!a.empty() && (std::memcmp(a.data(), decoded.data(), a.size() * sizeof(float)) != 0 ||
                     std::memcmp(b.data(), decoded.data(), b.size() * sizeof(float)) != 0))
    throw FuzzBug("the short and full forms of a payload decode differently");
}

/// Frame parse + decode (DESIGN.md §4 "payload with wrong magic/version/codec/size ...").
/// Byte 6 (the low byte of the reserved flags) bit 0 set: the flag is cleared and the header and
/// body checksums are recomputed first, so that the fuzzer reaches the checks behind them.
inline void frame(std::span<const uint8_t> input) {
  std::vector<uint8_t> fixed(input.begin(), input.end());
  if (fixed.size() >= 80 && (fixed[6] & 1u) != 0) {
    fixed[6] = 0;
    uint32_t header_bytes = 0;
    std::memcpy(&header_bytes, fixed.data() + 8, 4);
    if (header_bytes >= 80 && header_bytes <= fixed.size()) {
      const uint32_t body = crc32(std::span<const uint8_t>(fixed).subspan(header_bytes));
      std::memcpy(fixed.data() + 72, &body, 4);
      std::memset(fixed.data() + 76, 0, 4);
      const uint32_t header = crc32(std::span<const uint8_t>(fixed.data(), header_bytes));
      std::memcpy(fixed.data() + 76, &header, 4);
    }
  }
  const std::span<const uint8_t> bytes(fixed);
  const FrameInfo info = parse_frame(bytes);
  const std::span<const uint8_t> body = frame_body(bytes, info);
  if (info.layout.num_elems() > kMaxDecodeElems) return;
  auto codec = make_codec(info.spec, info.layout);
  // The body is the full payload or, for a variable-length codec, exactly its used bytes (§6).
  const size_t used = codec->used_bytes(body);
  if (body.size() != codec->encoded_bytes() && !(codec->variable_length() && body.size() == used))
    throw FuzzBug("parse_frame accepted a body of the wrong size");
  if (info.used_bytes != used || info.worst_bytes != codec->encoded_bytes())
    throw FuzzBug("parse_frame reported other sizes than the codec");
  std::vector<float> out(static_cast<size_t>(info.layout.num_elems()), 7.0f);
  codec->decode(body, info.key, out);
  std::vector<float> acc(out.size(), 0.0f);
  codec->decode_accumulate(body, info.key, 0.5f, acc);
  (void)codec->payload_bits(body);
  check_short_equals_full(*codec, body, info.key, out);
}

/// Codec specs tried by raw_decode: for every codec of list_codecs(), the variants below that parse.
inline const std::vector<CodecSpec>& raw_specs() {
  static const std::vector<CodecSpec> specs = [] {
    static const char* const kVariants[] = {
        "",
        ":block=7",
        ":block=32",
        ":levels=3,block=5",
        ":levels=4,norm=linf,block=33",
        ":levels=2,norm=lp,p=3",
        ":levels=5,norm=l1",
        ":levels=15,norm=l2,code=delta,chunk=3",
        ":levels=1,norm=linf,chunk=1",
        ":scale=none",
        ":clip=2.5",
        ":k=3",
        ":ratio=0.5",
        ":k=5,unbiased=0",
        ":block=3,bits=2",
        ":block=5,bits=5,unscaled=1",
        ":block=16,bits=12",
    };
    std::vector<CodecSpec> out;
    for (const CodecDescription& d : list_codecs()) {
      for (const char* v : kVariants) {
        try {
          CodecSpec s = CodecSpec::parse(d.name + v);
          if (std::find(out.begin(), out.end(), s) == out.end()) out.push_back(s);
        } catch (const Error&) {
          // not a parameter of this codec
        }
      }
    }
    // Added after the loop, so the indices of the specs above (and the seed corpus) stay as they were.
    for (const char* extra : {"topk:k=3,index=rice", "topk:ratio=0.5,index=rice", "topk:k=40,index=rice"})
      out.push_back(CodecSpec::parse(extra));
    return out;
  }();
  return specs;
}

/// Layouts tried by raw_decode.
inline const std::vector<Layout>& raw_layouts() {
  static const std::vector<Layout> layouts = {
      Layout(int64_t{0}),
      Layout(int64_t{1}),
      Layout(int64_t{31}),
      Layout(int64_t{33}),
      Layout(int64_t{100}),
      Layout(std::vector<int64_t>{70, 1, 129}),
      Layout(std::vector<int64_t>{0, 5, 0, 64}),
      Layout(int64_t{1000}),
  };
  return layouts;
}

/// Raw payload decode: byte 0 picks a spec, byte 1 a layout and the key, the rest is the payload,
/// zero-padded or cut to the codec's exact size when byte 1's top bit is set. Bit 5 of byte 1 (a
/// variable-length codec): the payload is then zero-padded or cut to the used size its own length
/// field gives (docs/wire-format.md §6), so that lying length fields meet a payload of exactly the
/// size they claim.
inline void raw_decode(std::span<const uint8_t> bytes) {
  if (bytes.size() < 2) return;
  const auto& specs = raw_specs();
  const auto& layouts = raw_layouts();
  const CodecSpec& spec = specs[bytes[0] % specs.size()];
  const Layout& layout = layouts[(bytes[1] & 0x3f) % layouts.size()];
  const RngKey key{20261124u, (bytes[1] >> 6) & 1u, 3u, 0u};
  std::unique_ptr<Codec> codec;
  try {
    codec = make_codec(spec, layout);
  } catch (const Error&) {
    return;  // the spec does not fit this layout: not the payload's fault
  }
  std::vector<uint8_t> payload(bytes.begin() + 2, bytes.end());
  if ((bytes[1] & 0x80) != 0) payload.resize(codec->encoded_bytes(), 0);
  if ((bytes[1] & 0x20) != 0 && codec->variable_length() && payload.size() >= codec->length_prefix_bytes()) {
    size_t claimed = 0;
    try {
      claimed = codec->used_bytes(payload);
    } catch (const Error&) {
      claimed = payload.size();  // an impossible length field: keep the payload, decode rejects it
    }
    payload.resize(std::min(claimed, codec->encoded_bytes()), 0);
  }
  std::vector<float> out(static_cast<size_t>(layout.num_elems()), 3.0f);
  const std::vector<float> before = out;
  try {
    codec->decode(payload, key, out);
  } catch (const Error&) {
    if (!out.empty() && std::memcmp(out.data(), before.data(), out.size() * sizeof(float)) != 0)
      throw FuzzBug("decode wrote to its output and then rejected the payload");
    throw;
  }
  codec->validate(payload);
  const size_t used = codec->used_bytes(payload);
  if (used > payload.size()) throw FuzzBug("used_bytes exceeds the payload size");
  if (payload.size() != codec->encoded_bytes() && used != payload.size())
    throw FuzzBug("a short payload whose length field disagrees with its size was accepted");
  // Issue 18 #11: an accepted payload decodes to finite values (a random-k value times n/k, a
  // spherical norm over beta, a grid level times its step never reach Inf).
  for (size_t i = 0; i < out.size(); ++i)
    if (!std::isfinite(out[i]))
      throw FuzzBug("an accepted payload decodes to a non-finite value at element " + std::to_string(i));
  check_short_equals_full(*codec, payload, key, out);
  codec->decode_accumulate(payload, key, -1.0f, out);
  (void)codec->payload_bits(payload);
}

/// Encode of arbitrary float bits (issue 18 #11): byte 0 picks a spec of raw_specs(), byte 1 a
/// layout and the key, the rest are the input's floats (zero-padded; bit 6 of byte 1 repeats them
/// so that long blocks of large values occur). An input with a NaN or Inf must be refused with
/// NON_FINITE and the payload left alone; a finite input must never be called non-finite (a norm
/// beyond the fp32 scale range is INVALID_ARGUMENT), and when it is encoded, the payload validates
/// and decodes to finite values.
inline void encode(std::span<const uint8_t> bytes) {
  if (bytes.size() < 2) return;
  const auto& specs = raw_specs();
  const auto& layouts = raw_layouts();
  const CodecSpec& spec = specs[bytes[0] % specs.size()];
  const Layout& layout = layouts[(bytes[1] & 0x3f) % layouts.size()];
  const RngKey key{20261205u, (bytes[1] >> 7) & 1u, 5u, 0u};
  std::unique_ptr<Codec> codec;
  try {
    codec = make_codec(spec, layout);
  } catch (const Error&) {
    return;
  }
  const auto n = static_cast<size_t>(layout.num_elems());
  std::vector<float> x(n, 0.0f);
  const size_t given = (bytes.size() - 2) / 4;
  for (size_t i = 0; i < n && given > 0; ++i) {
    if (i >= given && (bytes[1] & 0x40) == 0) break;
    std::memcpy(&x[i], bytes.data() + 2 + 4 * (i % given), 4);
  }
  const bool finite = std::all_of(x.begin(), x.end(), [](float v) { return std::isfinite(v); });
  std::vector<uint8_t> payload(codec->encoded_bytes(), 0x5a);
  try {
    codec->encode(x, key, payload);
  } catch (const Error& e) {
    if (!finite && e.status() != gcompErrorNonFinite)
      throw FuzzBug(std::string("a non-finite input was refused with another status: ") + e.what());
    if (finite && e.status() == gcompErrorNonFinite)
      throw FuzzBug(std::string("a finite input was called non-finite: ") + e.what());
    if (finite && e.status() != gcompErrorInvalidArgument)
      throw FuzzBug(std::string("a finite input was refused with an unexpected status: ") + e.what());
    if (std::any_of(payload.begin(), payload.end(), [](uint8_t b) { return b != 0x5a; }))
      throw FuzzBug("encode wrote to its payload and then failed");
    return;
  }
  if (!finite) throw FuzzBug("an input with a NaN or Inf was encoded");
  std::vector<float> out(n, 0.0f);
  try {  // the encoder's own payload (its used bytes, zero-padded): an Error here is a bug
    if (codec->variable_length()) {
      payload.resize(codec->used_bytes(payload));
      payload.resize(codec->encoded_bytes(), 0);
    }
    codec->validate(payload);
    codec->decode(payload, key, out);
  } catch (const Error& e) {
    throw FuzzBug(std::string("the encoder's payload is rejected: ") + e.what());
  }
  for (size_t i = 0; i < n; ++i)
    if (!std::isfinite(out[i]))
      throw FuzzBug("a finite input decodes to a non-finite value at element " + std::to_string(i));
}

/// Spec strings: parse, then canonical() must parse back to an equal spec with the same text.
inline void spec(std::span<const uint8_t> bytes) {
  const std::string_view text(reinterpret_cast<const char*>(bytes.data()), bytes.size());
  const CodecSpec s = CodecSpec::parse(text);
  const std::string canon = s.canonical();
  CodecSpec back;
  try {
    back = CodecSpec::parse(canon);
  } catch (const Error& e) {
    throw FuzzBug("canonical text '" + canon + "' does not parse: " + e.what());
  }
  if (!(back == s)) throw FuzzBug("parse(canonical()) differs from the spec for '" + canon + "'");
  if (back.canonical() != canon) throw FuzzBug("canonical() is not a fixed point: '" + canon + "'");
  (void)s.name();
  try {
    (void)make_codec(s, Layout(std::vector<int64_t>{70, 1, 129}));
  } catch (const Error&) {
    // a spec may not fit this layout
  }
}

/// Checkpoint bytes. Byte 0 bit 0 set: the trailing CRC is recomputed first so that the fuzzer
/// reaches the structure behind the checksum (byte 0 is then restored to the magic's 'G').
inline void checkpoint(std::span<const uint8_t> bytes) {
  std::vector<uint8_t> b(bytes.begin(), bytes.end());
  if (b.size() >= 8 && (b[0] & 1u) != 0) {
    b[0] = 'G';
    const uint32_t c = crc32(std::span<const uint8_t>(b.data(), b.size() - 4));
    std::memcpy(b.data() + b.size() - 4, &c, 4);
  }
  const detail::CheckpointData d = detail::parse_checkpoint(b, "fuzz");
  size_t total = 36 + 4;
  for (const auto& [name, v] : d.arrays) total += 4 + name.size() + 8 + 8 * v.size();
  if (total != b.size()) throw FuzzBug("parse_checkpoint accepted arrays that do not add up to the file size");
}

/// Checkpoint set manifests (include/gcomp/checkpoint.hpp). Byte 0 bit 0 set: the trailing CRC is
/// recomputed first (byte 0 restored to the magic's 'G'), so the fuzzer reaches the fields.
inline void manifest(std::span<const uint8_t> bytes) {
  std::vector<uint8_t> b(bytes.begin(), bytes.end());
  if (b.size() >= 8 && (b[0] & 1u) != 0) {
    b[0] = 'G';
    const uint32_t c = crc32(std::span<const uint8_t>(b.data(), b.size() - 4));
    std::memcpy(b.data() + b.size() - 4, &c, 4);
  }
  const detail::SetManifest m = detail::parse_manifest(b, "fuzz");
  if (m.world == 0 || m.files.size() != m.world)
    throw FuzzBug("parse_manifest accepted a world without its rank files");
  if (detail::encode_manifest(m) != b) throw FuzzBug("encode_manifest(parse_manifest(b)) differs from b");
}

/// A private temporary file holding the bytes, removed on destruction.
class TempFile {
 public:
  explicit TempFile(std::span<const uint8_t> bytes) {
    // tmpfs when there is one: a write, read and remove per input, and a stalled disk (a loaded
    // machine) made close() exceed libFuzzer's per-input timeout.
    std::error_code ec;
    const auto dir = std::filesystem::is_directory("/dev/shm", ec) ? std::filesystem::path("/dev/shm")
                                                                   : std::filesystem::temp_directory_path();
    path_ = (dir / ("gcomp-fuzz-" + std::to_string(::getpid()) + ".txt")).string();
    std::ofstream f(path_, std::ios::binary | std::ios::trunc);
    f.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
  }
  ~TempFile() { std::remove(path_.c_str()); }
  TempFile(const TempFile&) = delete;
  TempFile& operator=(const TempFile&) = delete;
  [[nodiscard]] const std::string& path() const { return path_; }

 private:
  std::string path_;
};

/// LIBSVM text. Byte 0 picks `features` (0, or a small forced dimension) and `bias`.
inline void libsvm(std::span<const uint8_t> bytes) {
  if (bytes.empty()) return;
  const int64_t features = (bytes[0] & 0x7f) < 64 ? 0 : (bytes[0] & 0x3f);
  const bool bias = (bytes[0] & 0x80) != 0;
  const TempFile file(bytes.subspan(1));
  const Dataset d = load_libsvm(file.path(), features, bias);
  if (d.rows <= 0 || d.row_ptr.size() != static_cast<size_t>(d.rows) + 1 || d.col.size() != d.val.size() ||
      d.label.size() != static_cast<size_t>(d.rows) || d.row_ptr.back() != static_cast<int64_t>(d.col.size()))
    throw FuzzBug("load_libsvm returned an inconsistent dataset");
  for (const int32_t c : d.col)
    if (c < 0 || c >= d.cols) throw FuzzBug("load_libsvm returned a column index outside [0, cols)");
  for (const double l : d.label)
    if (l != 1.0 && l != -1.0) throw FuzzBug("load_libsvm returned a label outside {-1, +1}");
}

/// Throws gcomp::Error for a failed C status (the C ABI never throws itself).
inline void check_status(gcompStatus_t st) {
  if (st != gcompSuccess) throw Error(st, gcompGetLastError());
}

/// C ABI: byte 0 picks a spec and a layout of raw_decode and the plan's seed; the rest is a frame
/// (byte 1 bit 0 clear) or a raw payload (set) for gcompParseFrame / gcompDecode.
inline void capi(std::span<const uint8_t> bytes) {
  if (bytes.size() < 2) return;
  const auto& specs = raw_specs();
  const auto& layouts = raw_layouts();
  const CodecSpec& s = specs[bytes[0] % specs.size()];
  const Layout& layout = layouts[bytes[1] / 2 % layouts.size()];
  const std::string text = s.canonical();
  gcompCodecConfig_t cfg = GCOMP_CODEC_CONFIG_INITIALIZER;
  cfg.codec_spec = text.c_str();
  cfg.seed = (bytes[1] & 0x80) != 0 ? 20261124u : 0u;
  std::vector<int64_t> segs = layout.segments();
  gcompPlan_t plan = nullptr;
  if (gcompPlanCreate(&plan, &cfg, segs.data(), static_cast<int>(segs.size())) != gcompSuccess) return;
  struct Destroy {
    gcompPlan_t p;
    ~Destroy() { (void)gcompPlanDestroy(p); }
  } guard{plan};
  const std::span<const uint8_t> rest = bytes.subspan(2);
  std::vector<float> out(static_cast<size_t>(layout.num_elems()) + 1, 5.0f);
  const void* data = rest.empty() ? static_cast<const void*>(&cfg) : rest.data();
  if ((bytes[1] & 1u) == 0) {
    uint32_t rank = 0, step = 0;
    size_t off = 0;
    check_status(gcompParseFrame(plan, data, rest.size(), &rank, &step, &off));
    if (off > rest.size()) throw FuzzBug("gcompParseFrame returned a body offset past the frame");
    check_status(gcompDecode(plan, rest.data() + off, rest.size() - off, rank, step, out.data()));
  } else {
    check_status(gcompDecode(plan, data, rest.size(), 1, 3, out.data()));
    check_status(gcompDecodeAccumulate(plan, data, rest.size(), 0, 0, 0.25f, out.data()));
  }
  if (out.back() != 5.0f) throw FuzzBug("gcompDecode wrote past num_elems");
}

}  // namespace gcomp::fuzz
