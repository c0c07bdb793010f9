// SPDX-License-Identifier: Apache-2.0
// C ABI: codec plans (host entry points) over the CPU reference codecs and the wire format.
#include "host/capi/capi_internal.hpp"

#include <gcomp/wire.hpp>

#include <cstring>

using gcomp::capi::overlaps;
using gcomp::capi::plan_ref;
using gcomp::capi::require_non_null;
using gcomp::capi::slot_of;
using gcomp::capi::translate_exceptions;

namespace {

gcomp::RngKey key_of(const gcompPlan& p, uint32_t rank, uint32_t step) { return gcomp::RngKey{p.seed, rank, step, 0}; }

size_t elems_bytes(const gcompPlan& p) { return static_cast<size_t>(p.codec->num_elems()) * sizeof(float); }

// Data pointers may be NULL only for an empty layout.
void require_data(const gcompPlan& p, const void* ptr, const char* name) {
  if (p.codec->num_elems() > 0) require_non_null(ptr, name);
}

void check_decode_args(const gcompPlan& p, const void* h_payload, size_t payload_bytes, const float* h_out) {
  if (payload_bytes > 0) require_non_null(h_payload, "h_payload");
  require_data(p, h_out, "h_out");
  GCOMP_EXPECTS(!overlaps(h_payload, payload_bytes, h_out, elems_bytes(p)), gcompErrorInvalidArgument,
                "arguments h_payload and h_out overlap");
}

}  // namespace

extern "C" gcompStatus_t gcompPlanCreate(gcompPlan_t* plan, const gcompCodecConfig_t* config,
                                         const int64_t* segment_elems, int num_segments) {
  return translate_exceptions(nullptr, "gcompPlanCreate", [&] {
    require_non_null(plan, "plan");
    require_non_null(config, "config");
    gcomp::capi::check_config_header(config->size, sizeof(gcompCodecConfig_t), config->magic, GCOMP_CODEC_CONFIG_MAGIC,
                                     config->version, "gcompCodecConfig_t", "GCOMP_CODEC_CONFIG_INITIALIZER");
    require_non_null(config->codec_spec, "config->codec_spec");
    gcomp::Layout layout = gcomp::capi::layout_from(segment_elems, num_segments);
    auto p = std::make_unique<gcompPlan>();
    p->codec = gcomp::make_codec(config->codec_spec, layout);
    p->seed = config->seed;
    *plan = p.release();
  });
}

extern "C" gcompStatus_t gcompPlanDestroy(gcompPlan_t plan) {
  return translate_exceptions(nullptr, "gcompPlanDestroy", [&] {
    if (plan == nullptr) return;
    plan_ref(plan).tag = 0;
    delete plan;
  });
}

extern "C" const char* gcompPlanGetLastError(gcompPlan_t plan) {
  gcomp::capi::ErrorSlot* slot = slot_of(plan);
  return slot ? slot->text : "";
}

extern "C" gcompStatus_t gcompPlanNumElems(gcompPlan_t plan, int64_t* num_elems) {
  return translate_exceptions(slot_of(plan), "gcompPlanNumElems", [&] {
    const gcompPlan& p = plan_ref(plan);
    require_non_null(num_elems, "num_elems");
    *num_elems = p.codec->num_elems();
  });
}

extern "C" gcompStatus_t gcompPlanEncodedBytes(gcompPlan_t plan, size_t* payload_bytes) {
  return translate_exceptions(slot_of(plan), "gcompPlanEncodedBytes", [&] {
    const gcompPlan& p = plan_ref(plan);
    require_non_null(payload_bytes, "payload_bytes");
    *payload_bytes = p.codec->encoded_bytes();
  });
}

extern "C" gcompStatus_t gcompPlanEncodedBits(gcompPlan_t plan, double* bits) {
  return translate_exceptions(slot_of(plan), "gcompPlanEncodedBits", [&] {
    const gcompPlan& p = plan_ref(plan);
    require_non_null(bits, "bits");
    *bits = p.codec->encoded_bits();
  });
}

extern "C" gcompStatus_t gcompPlanGuarantee(gcompPlan_t plan, gcompGuaranteeKind_t* kind, double* omega,
                                            double* delta) {
  return translate_exceptions(slot_of(plan), "gcompPlanGuarantee", [&] {
    const gcompPlan& p = plan_ref(plan);
    require_non_null(kind, "kind");
    require_non_null(omega, "omega");
    require_non_null(delta, "delta");
    const gcomp::Guarantee g = p.codec->guarantee();
    using Kind = gcomp::Guarantee::Kind;
    const gcompGuaranteeKind_t k = g.kind == Kind::kUnbiased      ? gcompGuaranteeUnbiased
                                   : g.kind == Kind::kContractive ? gcompGuaranteeContractive
                                                                  : gcompGuaranteeNone;
    *kind = k;
    *omega = k == gcompGuaranteeUnbiased ? g.omega : 0.0;
    *delta = k == gcompGuaranteeContractive ? g.delta : 0.0;
  });
}

extern "C" gcompStatus_t gcompPayloadUsedBytes(gcompPlan_t plan, const void* h_payload, size_t payload_bytes,
                                               size_t* used_bytes) {
  return translate_exceptions(slot_of(plan), "gcompPayloadUsedBytes", [&] {
    const gcompPlan& p = plan_ref(plan);
    if (payload_bytes > 0) require_non_null(h_payload, "h_payload");
    require_non_null(used_bytes, "used_bytes");
    const std::span<const uint8_t> payload(static_cast<const uint8_t*>(h_payload), payload_bytes);
    if (p.codec->variable_length()) {
      GCOMP_EXPECTS(payload_bytes >= p.codec->length_prefix_bytes() && payload_bytes <= p.codec->encoded_bytes(),
                    gcompErrorCorruptPayload,
                    "argument payload_bytes is " + std::to_string(payload_bytes) + ": a payload of this plan has " +
                        std::to_string(p.codec->length_prefix_bytes()) + " to " +
                        std::to_string(p.codec->encoded_bytes()) + " bytes");
    }
    *used_bytes = p.codec->used_bytes(payload);
  });
}

extern "C" gcompStatus_t gcompEncode(gcompPlan_t plan, const float* h_x, uint32_t rank, uint32_t step, void* h_payload,
                                     size_t payload_bytes) {
  return translate_exceptions(slot_of(plan), "gcompEncode", [&] {
    const gcompPlan& p = plan_ref(plan);
    require_data(p, h_x, "h_x");
    const size_t need = p.codec->encoded_bytes();
    if (need > 0) require_non_null(h_payload, "h_payload");
    GCOMP_EXPECTS(payload_bytes >= need, gcompErrorWorkspaceTooSmall,
                  "argument payload_bytes is " + std::to_string(payload_bytes) + ", the plan's payload needs " +
                      std::to_string(need) + " (gcompPlanEncodedBytes)");
    GCOMP_EXPECTS(!overlaps(h_x, elems_bytes(p), h_payload, need), gcompErrorInvalidArgument,
                  "arguments h_x and h_payload overlap");
    p.codec->encode(std::span<const float>(h_x, static_cast<size_t>(p.codec->num_elems())), key_of(p, rank, step),
                    std::span<uint8_t>(static_cast<uint8_t*>(h_payload), need));
  });
}

extern "C" gcompStatus_t gcompDecode(gcompPlan_t plan, const void* h_payload, size_t payload_bytes, uint32_t rank,
                                     uint32_t step, float* h_out) {
  return translate_exceptions(slot_of(plan), "gcompDecode", [&] {
    const gcompPlan& p = plan_ref(plan);
    check_decode_args(p, h_payload, payload_bytes, h_out);
    p.codec->decode(std::span<const uint8_t>(static_cast<const uint8_t*>(h_payload), payload_bytes),
                    key_of(p, rank, step), std::span<float>(h_out, static_cast<size_t>(p.codec->num_elems())));
  });
}

extern "C" gcompStatus_t gcompDecodeAccumulate(gcompPlan_t plan, const void* h_payload, size_t payload_bytes,
                                               uint32_t rank, uint32_t step, float weight, float* h_out) {
  return translate_exceptions(slot_of(plan), "gcompDecodeAccumulate", [&] {
    const gcompPlan& p = plan_ref(plan);
    check_decode_args(p, h_payload, payload_bytes, h_out);
    p.codec->decode_accumulate(std::span<const uint8_t>(static_cast<const uint8_t*>(h_payload), payload_bytes),
                               key_of(p, rank, step), weight,
                               std::span<float>(h_out, static_cast<size_t>(p.codec->num_elems())));
  });
}

extern "C" gcompStatus_t gcompPlanFramedBytes(gcompPlan_t plan, size_t* framed_bytes) {
  return translate_exceptions(slot_of(plan), "gcompPlanFramedBytes", [&] {
    const gcompPlan& p = plan_ref(plan);
    require_non_null(framed_bytes, "framed_bytes");
    // The header depends only on the spec and the layout; measure it by framing a zero payload
    // (frames live in host memory, so a plan whose frame cannot be allocated fails here).
    const std::vector<uint8_t> zeros(p.codec->encoded_bytes(), 0);
    *framed_bytes = gcomp::frame_payload(*p.codec, key_of(p, 0, 0), zeros).size();
  });
}

extern "C" gcompStatus_t gcompFramePayload(gcompPlan_t plan, const void* h_payload, size_t payload_bytes, uint32_t rank,
                                           uint32_t step, void* h_framed, size_t framed_bytes) {
  return translate_exceptions(slot_of(plan), "gcompFramePayload", [&] {
    const gcompPlan& p = plan_ref(plan);
    const size_t need = p.codec->encoded_bytes();
    if (payload_bytes > 0) require_non_null(h_payload, "h_payload");
    require_non_null(h_framed, "h_framed");
    // The full payload, or (variable-length codecs) exactly its used bytes: frame_payload checks.
    GCOMP_EXPECTS(payload_bytes == need || (p.codec->variable_length() && payload_bytes < need),
                  gcompErrorInvalidArgument,
                  "argument payload_bytes is " + std::to_string(payload_bytes) + ", the plan's payload has " +
                      std::to_string(need) + " bytes");
    GCOMP_EXPECTS(!overlaps(h_payload, payload_bytes, h_framed, framed_bytes), gcompErrorInvalidArgument,
                  "arguments h_payload and h_framed overlap");
    const std::vector<uint8_t> framed =
        gcomp::frame_payload(*p.codec, key_of(p, rank, step),
                             std::span<const uint8_t>(static_cast<const uint8_t*>(h_payload), payload_bytes));
    GCOMP_EXPECTS(framed_bytes >= framed.size(), gcompErrorWorkspaceTooSmall,
                  "argument framed_bytes is " + std::to_string(framed_bytes) + ", the frame needs " +
                      std::to_string(framed.size()) + " (gcompPlanFramedBytes)");
    std::memcpy(h_framed, framed.data(), framed.size());
  });
}

extern "C" gcompStatus_t gcompParseFrame(gcompPlan_t plan, const void* h_framed, size_t framed_bytes, uint32_t* rank,
                                         uint32_t* step, size_t* body_offset) {
  return translate_exceptions(slot_of(plan), "gcompParseFrame", [&] {
    const gcompPlan& p = plan_ref(plan);
    require_non_null(h_framed, "h_framed");
    require_non_null(rank, "rank");
    require_non_null(step, "step");
    require_non_null(body_offset, "body_offset");
    const gcomp::FrameInfo info =
        gcomp::parse_frame(std::span<const uint8_t>(static_cast<const uint8_t*>(h_framed), framed_bytes));
    GCOMP_EXPECTS(
        info.spec == p.codec->spec(), gcompErrorMismatch,
        "the frame holds codec '" + info.spec.canonical() + "', the plan has '" + p.codec->spec().canonical() + "'");
    GCOMP_EXPECTS(info.layout == p.codec->layout(), gcompErrorMismatch,
                  "the frame's layout (" + std::to_string(info.layout.num_elems()) +
                      " elements) differs from the plan's (" + std::to_string(p.codec->num_elems()) + " elements)");
    GCOMP_EXPECTS(info.key.seed == p.seed, gcompErrorMismatch,
                  "the frame was encoded with seed " + std::to_string(info.key.seed) + ", the plan has seed " +
                      std::to_string(p.seed));
    GCOMP_EXPECTS(info.key.stream_offset == 0, gcompErrorMismatch,
                  "the frame holds a downlink (server) message; plans encode and decode uplink messages");
    *rank = info.key.rank;
    *step = info.key.step;
    *body_offset = info.header_bytes;
  });
}
