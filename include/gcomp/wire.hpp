// SPDX-License-Identifier: Apache-2.0
/// @file wire.hpp
/// @brief Framed payloads (wire format v1): a self-describing header in front of a raw payload,
/// for files and messages that must validate on their own. Byte layout: docs/wire-format.md.
#pragma once

#include <gcomp/codec.hpp>

#include <cstdint>
#include <span>
#include <string>
#include <vector>

namespace gcomp {

inline constexpr uint32_t kWireMagic = 0x504d4347u;  ///< "GCMP" as little-endian bytes
inline constexpr uint16_t kWireVersion = 1;

/// Everything a framed payload's header says.
struct FrameInfo {
  CodecSpec spec;
  Layout layout;
  RngKey key;
  uint64_t body_bytes = 0;  ///< raw payload bytes in the frame: the full size or the used size
  uint32_t body_crc32 = 0;
  size_t header_bytes = 0;
  uint64_t used_bytes = 0;   ///< bytes of the body that carry the message (Codec::used_bytes)
  uint64_t worst_bytes = 0;  ///< the codec's full (worst-case) size, Codec::encoded_bytes
  double payload_bits = 0;   ///< information bits of this message (Codec::payload_bits)
};

/// CRC-32 (IEEE 802.3, reflected, polynomial 0xEDB88320) of bytes.
uint32_t crc32(std::span<const uint8_t> bytes, uint32_t crc = 0);

/// Header + raw payload. The raw payload is full (codec.encoded_bytes() bytes) or, for a
/// variable-length codec, short: exactly its used_bytes() (docs/wire-format.md §6); write
/// `raw.first(codec.used_bytes(raw))` to frame only the bytes that carry the message. Only the
/// size is checked here, not the content.
/// @throws gcomp::Error gcompErrorInvalidArgument for any other size.
std::vector<uint8_t> frame_payload(const Codec& codec, const RngKey& key, std::span<const uint8_t> raw);

/// Parses and checks a framed payload: magic, version, header checksum, spec, layout digest,
/// sizes (no truncation, no trailing bytes; a body of the full size or, for a variable-length
/// codec, exactly the used size its length field gives) and the body checksum, then the codec's
/// own validation.
/// @throws gcomp::Error gcompErrorCorruptPayload with the reason.
FrameInfo parse_frame(std::span<const uint8_t> framed);

/// The raw payload inside a framed payload that parse_frame accepted.
inline std::span<const uint8_t> frame_body(std::span<const uint8_t> framed, const FrameInfo& info) {
  return framed.subspan(info.header_bytes, info.body_bytes);
}

}  // namespace gcomp
