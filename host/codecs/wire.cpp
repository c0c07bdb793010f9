// SPDX-License-Identifier: Apache-2.0
// Wire format v1 frames (docs/wire-format.md "Framed payload").
#include <gcomp/wire.hpp>

#include "host/codecs/internal.hpp"

#include <array>

namespace gcomp {
namespace {

constexpr size_t kFixedHeader = 80;

std::array<uint32_t, 256> make_crc_table() {
  std::array<uint32_t, 256> t{};
  for (uint32_t i = 0; i < 256; ++i) {
    uint32_t c = i;
    for (int k = 0; k < 8; ++k) c = (c & 1u) ? 0xEDB88320u ^ (c >> 1) : c >> 1;
    t[i] = c;
  }
  return t;
}

void put_u16(std::vector<uint8_t>& v, size_t off, uint16_t x) { std::memcpy(v.data() + off, &x, 2); }
void put_u32(std::vector<uint8_t>& v, size_t off, uint32_t x) { std::memcpy(v.data() + off, &x, 4); }
void put_u64(std::vector<uint8_t>& v, size_t off, uint64_t x) { std::memcpy(v.data() + off, &x, 8); }
template <class T>
T get(std::span<const uint8_t> v, size_t off) {
  T x;
  std::memcpy(&x, v.data() + off, sizeof(T));
  return x;
}

[[noreturn]] void bad(const std::string& why) {
  GCOMP_FAIL(gcompErrorCorruptPayload, "corrupt framed payload: " + why);
}

size_t align8(size_t v) { return (v + 7) & ~size_t{7}; }

}  // namespace

uint32_t crc32(std::span<const uint8_t> bytes, uint32_t crc) {
  static const std::array<uint32_t, 256> table = make_crc_table();
  crc = ~crc;
  for (uint8_t b : bytes) crc = table[(crc ^ b) & 0xffu] ^ (crc >> 8);
  return ~crc;
}

std::vector<uint8_t> frame_payload(const Codec& codec, const RngKey& key, std::span<const uint8_t> raw) {
  const bool full = raw.size() == codec.encoded_bytes();
  const bool short_ok = !full && codec.variable_length() && raw.size() >= codec.length_prefix_bytes() &&
                        raw.size() < codec.encoded_bytes() && codec.used_bytes(raw) == raw.size();
  GCOMP_EXPECTS(full || short_ok, gcompErrorInvalidArgument,
                "frame_payload: raw payload has " + std::to_string(raw.size()) + " bytes, codec expects " +
                    std::to_string(codec.encoded_bytes()) +
                    (codec.variable_length() ? " or exactly the used bytes its length field gives" : ""));
  GCOMP_EXPECTS(key.stream_offset == 0 || key.stream_offset == detail::kStreamDownlink, gcompErrorInvalidArgument,
                "frame_payload: stream offset " + std::to_string(key.stream_offset) + " is neither 0 (uplink) nor " +
                    std::to_string(detail::kStreamDownlink) + " (downlink)");
  const std::string spec = codec.spec().canonical();
  const auto& segs = codec.layout().segments();
  const size_t seg_off = align8(kFixedHeader + spec.size());
  const size_t header = seg_off + 8 * segs.size() + 8;
  GCOMP_EXPECTS(header <= 0xffffffffu, gcompErrorInvalidArgument, "frame_payload: layout too large for a frame");
  std::vector<uint8_t> out(header + raw.size(), 0);
  put_u32(out, 0, kWireMagic);
  put_u16(out, 4, kWireVersion);
  put_u16(out, 6, 0);
  put_u32(out, 8, static_cast<uint32_t>(header));
  put_u32(out, 12, static_cast<uint32_t>(codec.spec().id()));
  put_u64(out, 16, static_cast<uint64_t>(codec.num_elems()));
  put_u64(out, 24, segs.size());
  put_u64(out, 32, codec.layout().digest());
  put_u64(out, 40, key.seed);
  put_u32(out, 48, key.step);
  put_u32(out, 52, key.rank);
  put_u32(out, 56, key.stream_offset);
  put_u32(out, 60, static_cast<uint32_t>(spec.size()));
  put_u64(out, 64, raw.size());
  put_u32(out, 72, crc32(raw));
  std::memcpy(out.data() + kFixedHeader, spec.data(), spec.size());
  for (size_t s = 0; s < segs.size(); ++s) put_u64(out, seg_off + 8 * s, static_cast<uint64_t>(segs[s]));
  put_u32(out, 76, crc32(std::span<const uint8_t>(out.data(), header)));
  if (!raw.empty()) std::memcpy(out.data() + header, raw.data(), raw.size());
  return out;
}

FrameInfo parse_frame(std::span<const uint8_t> in) {
  if (in.size() < kFixedHeader)
    bad("truncated: " + std::to_string(in.size()) + " bytes, a header needs at least " + std::to_string(kFixedHeader));
  if (get<uint32_t>(in, 0) != kWireMagic) bad("wrong magic (not a gcomp payload)");
  const uint16_t version = get<uint16_t>(in, 4);
  if (version != kWireVersion)
    bad("format version " + std::to_string(version) + " is not supported (this build reads version " +
        std::to_string(kWireVersion) + ")");
  if (get<uint16_t>(in, 6) != 0) bad("reserved flags are not zero");
  const uint32_t header = get<uint32_t>(in, 8);
  if (header < kFixedHeader + 8 || header % 8 != 0) bad("header size " + std::to_string(header) + " is invalid");
  if (header > in.size()) bad("truncated inside the header");
  std::vector<uint8_t> hcopy(in.begin(), in.begin() + header);
  std::memset(hcopy.data() + 76, 0, 4);
  if (crc32(hcopy) != get<uint32_t>(in, 76)) bad("header checksum mismatch");

  const uint32_t spec_len = get<uint32_t>(in, 60);
  const uint64_t nseg = get<uint64_t>(in, 24);
  const size_t seg_off = align8(kFixedHeader + spec_len);
  if (spec_len > header || nseg > (header - seg_off) / 8 || seg_off + 8 * nseg + 8 != header)
    bad("header sizes are inconsistent");
  const std::string text(reinterpret_cast<const char*>(in.data()) + kFixedHeader, spec_len);

  FrameInfo info;
  // The spec text is untrusted: messages quote it escaped (no terminal escape sequences, and a NUL
  // does not cut the message short).
  try {
    info.spec = CodecSpec::parse(text);
  } catch (const Error& e) {
    bad("codec spec in header: " + printable(e.what(), SIZE_MAX));
  }
  if (info.spec.canonical() != text) bad("codec spec in header is not canonical: '" + printable(text) + "'");
  if (static_cast<uint32_t>(info.spec.id()) != get<uint32_t>(in, 12)) bad("codec id disagrees with the codec spec");
  std::vector<int64_t> segs(nseg);
  for (uint64_t s = 0; s < nseg; ++s) {
    const uint64_t v = get<uint64_t>(in, seg_off + 8 * s);
    if (v > (uint64_t{1} << 50)) bad("segment " + std::to_string(s) + " is too large");
    segs[s] = static_cast<int64_t>(v);
  }
  try {
    info.layout = Layout(std::move(segs));
  } catch (const Error& e) {
    bad(e.what());
  }
  if (static_cast<uint64_t>(info.layout.num_elems()) != get<uint64_t>(in, 16))
    bad("element count disagrees with the segment table");
  if (info.layout.digest() != get<uint64_t>(in, 32)) bad("layout digest mismatch");
  info.key.seed = get<uint64_t>(in, 40);
  info.key.step = get<uint32_t>(in, 48);
  info.key.rank = get<uint32_t>(in, 52);
  info.key.stream_offset = get<uint32_t>(in, 56);
  if (info.key.stream_offset != 0 && info.key.stream_offset != detail::kStreamDownlink)
    bad("stream offset " + std::to_string(info.key.stream_offset) + " is neither 0 (uplink) nor " +
        std::to_string(detail::kStreamDownlink) + " (downlink)");
  info.body_bytes = get<uint64_t>(in, 64);
  info.body_crc32 = get<uint32_t>(in, 72);
  info.header_bytes = header;

  const auto codec = make_codec(info.spec, info.layout);
  info.worst_bytes = codec->encoded_bytes();
  // The body is the full payload or, for a variable-length codec, a short one (§6) of at least its
  // length prefix; the codec's validation below checks that a short body is exactly its used size.
  const bool short_body =
      codec->variable_length() && info.body_bytes < info.worst_bytes && info.body_bytes >= codec->length_prefix_bytes();
  if (info.body_bytes != info.worst_bytes && !short_body)
    bad("body size " + std::to_string(info.body_bytes) + " does not match the codec (" +
        std::to_string(info.worst_bytes) + " bytes" +
        (codec->variable_length() ? ", or a short payload of at least " + std::to_string(codec->length_prefix_bytes())
                                  : std::string()) +
        ")");
  const uint64_t have = in.size() - header;
  if (have < info.body_bytes)
    bad("truncated: body has " + std::to_string(have) + " of " + std::to_string(info.body_bytes) + " bytes");
  if (have > info.body_bytes) bad(std::to_string(have - info.body_bytes) + " trailing bytes after the body");
  const auto body = in.subspan(header, info.body_bytes);
  if (crc32(body) != info.body_crc32) bad("body checksum mismatch");
  codec->validate(body);
  info.used_bytes = codec->used_bytes(body);
  info.payload_bits = codec->payload_bits(body);
  return info;
}

}  // namespace gcomp
