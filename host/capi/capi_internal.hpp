// SPDX-License-Identifier: Apache-2.0
// Shared pieces of the C ABI implementation: the handle structs, the one exception-translation
// helper every extern "C" body runs in (STYLE.md §6), and the boundary checks (null pointers,
// versioned configs, handle tags, buffer overlap).
#pragma once

#include <gcomp/codec.hpp>
#include <gcomp/comm.hpp>
#include <gcomp/error.hpp>
#include <gcomp/gcomp.h>
#include <gcomp/session.hpp>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <new>
#include <string>
#include <vector>

namespace gcomp::capi {

/// Capacity of a last-error text, terminating NUL included. Longer messages are truncated.
inline constexpr size_t kErrorTextBytes = 1024;

/// First version of the ABI whose configs carry size/magic/version (0.1.0).
inline constexpr uint32_t kFirstConfigVersion = 100;

/// Per-handle last-error text. Written under a mutex (a plan may be shared by threads); the text
/// is a fixed buffer so that recording an error never allocates and never throws.
struct ErrorSlot {
  std::mutex mu;
  char text[kErrorTextBytes] = {};
};

/// Records a failure: thread-local text always, and `slot` when the call was on a handle.
/// The text is "<function>: <prefix><message>", truncated to kErrorTextBytes - 1 characters.
void record_error(ErrorSlot* slot, const char* function, const char* message, const char* prefix = "") noexcept;

/// Runs `body` and maps what it throws to a status: gcomp::Error -> its status, std::bad_alloc ->
/// gcompErrorOutOfMemory, anything else -> gcompErrorInternal. Exceptions never leave.
template <class Body>
gcompStatus_t translate_exceptions(ErrorSlot* slot, const char* function, Body&& body) noexcept {
  try {
    body();
    return gcompSuccess;
  } catch (const Error& e) {
    record_error(slot, function, e.what());
    return e.status();
  } catch (const std::bad_alloc&) {
    record_error(slot, function, "out of host memory");
    return gcompErrorOutOfMemory;
  } catch (const std::exception& e) {
    record_error(slot, function, e.what(), "internal error: ");
    return gcompErrorInternal;
  } catch (...) {
    record_error(slot, function, "internal error: unknown exception");
    return gcompErrorInternal;
  }
}

/// Throws gcompErrorInvalidArgument "argument <name> is NULL" when `ptr` is null.
void require_non_null(const void* ptr, const char* name);

/// True when the byte ranges [a, a + a_bytes) and [b, b + b_bytes) share a byte.
bool overlaps(const void* a, size_t a_bytes, const void* b, size_t b_bytes) noexcept;

/// Checks size, magic and version of a versioned config; `type_name` and `initializer` name the
/// struct and its initializer in the message.
void check_config_header(size_t size, size_t expected_size, uint32_t magic, uint32_t expected_magic, uint32_t version,
                         const char* type_name, const char* initializer);

/// Layout from a C segment array, checked at the boundary.
Layout layout_from(const int64_t* segment_elems, int num_segments);

// Tags at the start of each handle, so that a handle of the wrong kind, a NULL handle or a
// destroyed one (when the memory still holds it) is reported instead of used.
inline constexpr uint64_t kPlanTag = 0x6e616c5041434d47ull;     // "GMCAPlan"
inline constexpr uint64_t kCommTag = 0x6d6d6f4341434d47ull;     // "GMCAComm"
inline constexpr uint64_t kSessionTag = 0x7373655341434d47ull;  // "GMCASess"

}  // namespace gcomp::capi

struct gcompPlan {
  uint64_t tag = gcomp::capi::kPlanTag;
  gcomp::capi::ErrorSlot error;
  std::unique_ptr<gcomp::Codec> codec;
  uint64_t seed = 0;
};

struct gcompComm {
  uint64_t tag = gcomp::capi::kCommTag;
  std::shared_ptr<gcomp::Communicator> comm;
};

struct gcompSession {
  uint64_t tag = gcomp::capi::kSessionTag;
  gcomp::capi::ErrorSlot error;
  std::shared_ptr<gcomp::Communicator> comm;  // declared first: outlives the session
  std::unique_ptr<gcomp::Session> session;
  std::vector<double> update;  // step output scratch, sized at creation
};

namespace gcomp::capi {

/// The error slot of a handle whose tag matches, else nullptr (the call then fails on the check).
inline ErrorSlot* slot_of(gcompPlan_t p) noexcept { return p && p->tag == kPlanTag ? &p->error : nullptr; }
inline ErrorSlot* slot_of(gcompSession_t s) noexcept { return s && s->tag == kSessionTag ? &s->error : nullptr; }

/// The object behind a handle; throws gcompErrorInvalidArgument naming `name` when it is NULL or
/// not a live handle of that kind.
gcompPlan& plan_ref(gcompPlan_t p, const char* name = "plan");
gcompComm& comm_ref(gcompComm_t c, const char* name = "comm");
gcompSession& session_ref(gcompSession_t s, const char* name = "session");

}  // namespace gcomp::capi
