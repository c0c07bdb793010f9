// SPDX-License-Identifier: Apache-2.0
// C ABI: last-error texts (thread-local and per handle) and the boundary checks shared by every
// entry point.
#include "host/capi/capi_internal.hpp"

#include <cstdio>
#include <cstring>

namespace gcomp::capi {
namespace {

thread_local char tls_last_error[kErrorTextBytes] = {};

void write_text(char* dst, const char* function, const char* message, const char* prefix) noexcept {
  std::snprintf(dst, kErrorTextBytes, "%s: %s%s", function, prefix, message);
}

}  // namespace

void record_error(ErrorSlot* slot, const char* function, const char* message, const char* prefix) noexcept {
  write_text(tls_last_error, function, message, prefix);
  if (slot != nullptr) {
    const std::lock_guard<std::mutex> lock(slot->mu);
    std::memcpy(slot->text, tls_last_error, kErrorTextBytes);
  }
}

void require_non_null(const void* ptr, const char* name) {
  GCOMP_EXPECTS(ptr != nullptr, gcompErrorInvalidArgument, std::string("argument ") + name + " is NULL");
}

bool overlaps(const void* a, size_t a_bytes, const void* b, size_t b_bytes) noexcept {
  if (a == nullptr || b == nullptr || a_bytes == 0 || b_bytes == 0) return false;
  const auto pa = reinterpret_cast<uintptr_t>(a);
  const auto pb = reinterpret_cast<uintptr_t>(b);
  return pa < pb + b_bytes && pb < pa + a_bytes;
}

void check_config_header(size_t size, size_t expected_size, uint32_t magic, uint32_t expected_magic, uint32_t version,
                         const char* type_name, const char* initializer) {
  const std::string hint = std::string(": initialise the ") + type_name + " with " + initializer;
  GCOMP_EXPECTS(size == expected_size, gcompErrorInvalidArgument,
                "config->size is " + std::to_string(size) + ", expected sizeof(" + type_name +
                    ") = " + std::to_string(expected_size) + hint);
  GCOMP_EXPECTS(magic == expected_magic, gcompErrorInvalidArgument,
                "config->magic is " + std::to_string(magic) + ", not the magic of a " + type_name + hint);
  GCOMP_EXPECTS(version >= kFirstConfigVersion && version <= static_cast<uint32_t>(GCOMP_VERSION_CODE),
                gcompErrorInvalidArgument,
                "config->version is " + std::to_string(version) + "; this library accepts " +
                    std::to_string(kFirstConfigVersion) + ".." + std::to_string(GCOMP_VERSION_CODE) +
                    " (a config from a newer gcomp header, or not initialised)" + hint);
}

Layout layout_from(const int64_t* segment_elems, int num_segments) {
  GCOMP_EXPECTS(num_segments >= 1, gcompErrorInvalidArgument,
                "argument num_segments must be >= 1, got " + std::to_string(num_segments));
  require_non_null(segment_elems, "segment_elems");
  std::vector<int64_t> segments(segment_elems, segment_elems + num_segments);
  for (size_t i = 0; i < segments.size(); ++i)
    GCOMP_EXPECTS(
        segments[i] >= 0, gcompErrorInvalidArgument,
        "argument segment_elems[" + std::to_string(i) + "] is negative (" + std::to_string(segments[i]) + ")");
  return Layout(std::move(segments));
}

gcompPlan& plan_ref(gcompPlan_t p, const char* name) {
  require_non_null(p, name);
  GCOMP_EXPECTS(p->tag == kPlanTag, gcompErrorInvalidArgument,
                std::string("argument ") + name + " is not a live gcompPlan_t");
  return *p;
}

gcompComm& comm_ref(gcompComm_t c, const char* name) {
  require_non_null(c, name);
  GCOMP_EXPECTS(c->tag == kCommTag, gcompErrorInvalidArgument,
                std::string("argument ") + name + " is not a live gcompComm_t");
  return *c;
}

gcompSession& session_ref(gcompSession_t s, const char* name) {
  require_non_null(s, name);
  GCOMP_EXPECTS(s->tag == kSessionTag, gcompErrorInvalidArgument,
                std::string("argument ") + name + " is not a live gcompSession_t");
  return *s;
}

}  // namespace gcomp::capi

extern "C" const char* gcompGetLastError(void) { return gcomp::capi::tls_last_error; }
