// SPDX-License-Identifier: Apache-2.0
/// @file varlen.hpp
/// @brief The size rule of short payloads (docs/wire-format.md §6) as portable GCOMP_HD code: the
/// device check of received messages (DeviceCodec::decode_reduce with sizes) and its CPU test,
/// which compares it with Codec::validate's size rule.
#pragma once

#include <gcomp/detail/hd.hpp>

namespace gcomp::detail {

/// Where a variable-length payload keeps its length field and stream. All zero for a fixed-size
/// codec (then only the full size is valid).
struct VarlenLayout {
  uint64_t length_offset = 0;  ///< byte offset of the u32 length field T
  uint64_t stream_offset = 0;  ///< byte offset of the stream: used bytes = stream_offset + 4 ceil(T/32)
  uint64_t worst_bits = 0;     ///< the largest valid T
  uint64_t full_bytes = 0;     ///< the full (worst-case) payload size, Codec::encoded_bytes()
  bool variable = false;
};

/// The used size for a length field T <= worst_bits.
GCOMP_HD uint64_t varlen_used_bytes(const VarlenLayout& v, uint64_t t) {
  return v.stream_offset + 4u * ((t + 31u) / 32u);
}

/// True when `size` bytes at `payload` satisfy the size rule: the full size, or (variable-length)
/// at least through the length field, a length field within the worst case, and exactly the used
/// size it gives. The payload's content is checked by the codec's decode afterwards.
GCOMP_HD bool varlen_size_ok(const VarlenLayout& v, const uint8_t* payload, uint64_t size) {
  if (size == v.full_bytes) return true;
  if (!v.variable || size > v.full_bytes || size < v.length_offset + 4u) return false;
  const uint8_t* t_at = payload + v.length_offset;
  const uint64_t t =
      uint64_t{t_at[0]} | (uint64_t{t_at[1]} << 8) | (uint64_t{t_at[2]} << 16) | (uint64_t{t_at[3]} << 24);
  if (t > v.worst_bits) return false;
  return varlen_used_bytes(v, t) == size;
}

}  // namespace gcomp::detail
