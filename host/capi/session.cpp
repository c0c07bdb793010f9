// SPDX-License-Identifier: Apache-2.0
// C ABI: sessions (the orchestrator of host/algorithms) on communicator handles.
#include "host/capi/capi_internal.hpp"

#include <gcomp/names.hpp>

#include <algorithm>
#include <cstddef>
#include <cstring>
#include <type_traits>

using gcomp::capi::comm_ref;
using gcomp::capi::require_non_null;
using gcomp::capi::session_ref;
using gcomp::capi::slot_of;
using gcomp::capi::translate_exceptions;

namespace {

// A C enum field read as the C++ enum of the same numbering; the valid range and the names in
// the message come from the enum's name table (<gcomp/names.hpp>).
template <class Enum>
Enum enum_field(int value, const char* field) {
  constexpr int kMax = gcomp::enum_count<Enum>() - 1;
  if (value < 0 || value > kMax) {
    std::string names;
    for (const auto& e : gcomp::enum_names<Enum>()) {
      names += (names.empty() ? "" : ", ") + std::to_string(static_cast<int>(e.value)) + " " + e.name;
    }
    GCOMP_FAIL(gcompErrorInvalidArgument, std::string("config->") + field + " is " + std::to_string(value) +
                                              ", valid values are 0.." + std::to_string(kMax) + " (" + names + ")");
  }
  return static_cast<Enum>(value);
}

// The integer a C caller stored in an enum field. Read through memcpy: in C++, loading an enum
// lvalue that holds a value outside the enum's range is undefined (UBSan: -fsanitize=enum), and
// validating out-of-range values is the point here.
template <class CEnum>
int raw_enum(const CEnum& field) {
  std::underlying_type_t<CEnum> raw;
  static_assert(sizeof(raw) == sizeof(field));
  std::memcpy(&raw, &field, sizeof(raw));
  return static_cast<int>(raw);
}

[[noreturn]] void callback_failed(const char* which, gcompStatus_t status) {
  GCOMP_FAIL(status == gcompSuccess ? gcompErrorInternal : status,
             std::string("the ") + which + " callback returned status " + std::to_string(static_cast<int>(status)) +
                 " (" + gcompGetErrorString(status) + ")");
}

// Sizes of a gcompSessionConfig_t from older headers (still accepted; the missing fields get their
// defaults): before `backend` was appended, and before the delay schedule was.
constexpr size_t kSessionConfigSizeNoBackend = offsetof(gcompSessionConfig_t, backend);
constexpr size_t kSessionConfigSizeNoDelayMode = offsetof(gcompSessionConfig_t, delay_mode);

gcomp::SessionConfig to_cpp(const gcompSessionConfig_t& c) {
  const bool has_backend = c.size != kSessionConfigSizeNoBackend;
  const bool has_delay_mode = has_backend && c.size != kSessionConfigSizeNoDelayMode;
  const size_t expected = !has_backend      ? kSessionConfigSizeNoBackend
                          : !has_delay_mode ? kSessionConfigSizeNoDelayMode
                                            : sizeof(gcompSessionConfig_t);
  gcomp::capi::check_config_header(c.size, expected, c.magic, GCOMP_SESSION_CONFIG_MAGIC, c.version,
                                   "gcompSessionConfig_t", "GCOMP_SESSION_CONFIG_INITIALIZER");
  require_non_null(c.algorithm, "config->algorithm");
  require_non_null(c.codec_spec, "config->codec_spec");
  require_non_null(c.server_codec_spec, "config->server_codec_spec");
  gcomp::SessionConfig s;
  s.algorithm = gcomp::parse_algorithm(c.algorithm);
  s.codec = c.codec_spec;
  s.server_codec = c.server_codec_spec;
  s.lr = c.lr;
  s.alpha = c.alpha;
  s.momentum = c.momentum;
  s.nesterov = c.nesterov != 0;
  s.delay = c.delay;
  s.seed = c.seed;
  // These C enum values equal the C++ enumerators' positions (asserted below); the ranges are
  // those of the name tables (<gcomp/names.hpp>).
  s.nonfinite = enum_field<gcomp::NonFinitePolicy>(raw_enum(c.nonfinite), "nonfinite");
  s.server = enum_field<gcomp::ServerMode>(raw_enum(c.server), "server");
  s.prox = enum_field<gcomp::Regularizer>(raw_enum(c.prox), "prox");
  s.prox_lambda = c.prox_lambda;
  s.tie_to_zero = c.tie_to_zero != 0;
  s.shared_scale = c.shared_scale != 0;
  s.compensation = enum_field<gcomp::Compensation>(raw_enum(c.compensation), "compensation");
  if (has_backend) s.backend = enum_field<gcomp::Backend>(raw_enum(c.backend), "backend");
  if (has_delay_mode) {
    s.delay_mode = enum_field<gcomp::DelayMode>(raw_enum(c.delay_mode), "delay_mode");
    GCOMP_EXPECTS(c.delay_table_len >= 0 && (c.delay_table_len == 0 || c.delay_table != nullptr),
                  gcompErrorInvalidArgument,
                  "config->delay_table_len is " + std::to_string(c.delay_table_len) +
                      (c.delay_table == nullptr ? " with a NULL delay_table" : "") + "; expected >= 0 entries");
    if (c.delay_table_len > 0) s.delay_table.assign(c.delay_table, c.delay_table + c.delay_table_len);
  }
  if (c.hessian_product != nullptr) {
    s.hessian_product = [fn = c.hessian_product, user = c.hessian_user_data](std::span<const double> v,
                                                                             std::span<double> out) {
      const gcompStatus_t st = fn(v.data(), out.data(), static_cast<int64_t>(v.size()), user);
      if (st != gcompSuccess) callback_failed("hessian_product", st);
    };
  }
  if (c.hessian_diagonal != nullptr) {
    s.hessian_diagonal = [fn = c.hessian_diagonal, user = c.hessian_user_data](std::span<double> out) {
      const gcompStatus_t st = fn(out.data(), static_cast<int64_t>(out.size()), user);
      if (st != gcompSuccess) callback_failed("hessian_diagonal", st);
    };
  }
  return s;
}

static_assert(static_cast<int>(gcomp::ServerMode::kReplicated) == gcompServerReplicated &&
              static_cast<int>(gcomp::ServerMode::kSharded) == gcompServerSharded);
static_assert(static_cast<int>(gcomp::NonFinitePolicy::kError) == gcompNonFiniteError &&
              static_cast<int>(gcomp::NonFinitePolicy::kSkip) == gcompNonFiniteSkip &&
              static_cast<int>(gcomp::NonFinitePolicy::kZero) == gcompNonFiniteZero);
static_assert(static_cast<int>(gcomp::Backend::kCpu) == gcompBackendCpu &&
              static_cast<int>(gcomp::Backend::kHostF32) == gcompBackendHostF32 &&
              static_cast<int>(gcomp::Backend::kCuda) == gcompBackendCuda);
static_assert(static_cast<int>(gcomp::DelayMode::kFixed) == gcompDelayFixed &&
              static_cast<int>(gcomp::DelayMode::kTable) == gcompDelayTable &&
              static_cast<int>(gcomp::DelayMode::kRandom) == gcompDelayRandom);
static_assert(static_cast<int>(gcomp::GradType::kF32) == gcompGradFloat32 &&
              static_cast<int>(gcomp::GradType::kBF16) == gcompGradBFloat16 &&
              static_cast<int>(gcomp::GradType::kF16) == gcompGradFloat16);
static_assert(static_cast<int>(gcomp::Regularizer::kNone) == gcompProxNone &&
              static_cast<int>(gcomp::Regularizer::kL1) == gcompProxL1 &&
              static_cast<int>(gcomp::Regularizer::kL2) == gcompProxL2);
static_assert(static_cast<int>(gcomp::Compensation::kNone) == gcompCompensationNone &&
              static_cast<int>(gcomp::Compensation::kClassical) == gcompCompensationClassical &&
              static_cast<int>(gcomp::Compensation::kHessian) == gcompCompensationHessian &&
              static_cast<int>(gcomp::Compensation::kDiagonal) == gcompCompensationDiagonal);

void check_stats(const gcompStepStats_t* stats) {
  if (stats == nullptr) return;
  GCOMP_EXPECTS(stats->size == sizeof(gcompStepStats_t), gcompErrorInvalidArgument,
                "stats->size is " + std::to_string(stats->size) + ", expected sizeof(gcompStepStats_t) = " +
                    std::to_string(sizeof(gcompStepStats_t)) + ": initialise it with GCOMP_STEP_STATS_INITIALIZER");
}

void write_stats(const gcomp::StepStats& s, gcompStepStats_t* stats) {
  if (stats == nullptr) return;
  stats->step = s.step;
  stats->bytes_up = s.bytes_up;
  stats->bytes_down = s.bytes_down;
  stats->bytes_received = s.bytes_received;
  stats->bits_per_element_up = s.bits_per_element_up;
  stats->bits_per_element_down = s.bits_per_element_down;
  stats->skipped = s.skipped ? 1 : 0;
}

// Data pointers may be NULL only for an empty layout.
size_t num_elems_checked(const gcompSession& s, const void* a, const char* a_name, const void* b, const char* b_name) {
  const size_t n = s.update.size();
  if (n > 0) {
    require_non_null(a, a_name);
    require_non_null(b, b_name);
  }
  return n;
}

}  // namespace

extern "C" gcompStatus_t gcompSessionCreate(gcompSession_t* session, gcompComm_t comm,
                                            const gcompSessionConfig_t* config, const int64_t* segment_elems,
                                            int num_segments) {
  return translate_exceptions(nullptr, "gcompSessionCreate", [&] {
    require_non_null(session, "session");
    const gcompComm& c = comm_ref(comm);
    require_non_null(config, "config");
    gcomp::SessionConfig cfg = to_cpp(*config);
    gcomp::Layout layout = gcomp::capi::layout_from(segment_elems, num_segments);
    auto s = std::make_unique<gcompSession>();
    s->comm = c.comm;
    s->update.resize(static_cast<size_t>(layout.num_elems()));
    s->session = std::make_unique<gcomp::Session>(*s->comm, std::move(layout), std::move(cfg));
    *session = s.release();
  });
}

extern "C" gcompStatus_t gcompSessionDestroy(gcompSession_t session) {
  return translate_exceptions(nullptr, "gcompSessionDestroy", [&] {
    if (session == nullptr) return;
    session_ref(session).tag = 0;
    delete session;
  });
}

extern "C" const char* gcompSessionGetLastError(gcompSession_t session) {
  gcomp::capi::ErrorSlot* slot = slot_of(session);
  return slot ? slot->text : "";
}

extern "C" gcompStatus_t gcompSessionNumElems(gcompSession_t session, int64_t* num_elems) {
  return translate_exceptions(slot_of(session), "gcompSessionNumElems", [&] {
    const gcompSession& s = session_ref(session);
    require_non_null(num_elems, "num_elems");
    *num_elems = s.session->layout().num_elems();
  });
}

extern "C" gcompStatus_t gcompSessionStepCount(gcompSession_t session, uint64_t* step_count) {
  return translate_exceptions(slot_of(session), "gcompSessionStepCount", [&] {
    const gcompSession& s = session_ref(session);
    require_non_null(step_count, "step_count");
    *step_count = s.session->step_count();
  });
}

extern "C" gcompStatus_t gcompSessionStep(gcompSession_t session, const double* h_grad, double* h_update,
                                          gcompStepStats_t* stats) {
  return translate_exceptions(slot_of(session), "gcompSessionStep", [&] {
    gcompSession& s = session_ref(session);
    const size_t n = num_elems_checked(s, h_grad, "h_grad", h_update, "h_update");
    check_stats(stats);
    // The update goes to session scratch first: the caller's buffer is written only on success,
    // and h_grad may overlap h_update in any way.
    const gcomp::StepStats st = s.session->step(std::span<const double>(h_grad, n), std::span<double>(s.update));
    std::copy(s.update.begin(), s.update.end(), h_update);
    write_stats(st, stats);
  });
}

extern "C" gcompStatus_t gcompSessionStepF32(gcompSession_t session, const float* h_grad, float* h_update,
                                             gcompStepStats_t* stats) {
  return translate_exceptions(slot_of(session), "gcompSessionStepF32", [&] {
    gcompSession& s = session_ref(session);
    const size_t n = num_elems_checked(s, h_grad, "h_grad", h_update, "h_update");
    check_stats(stats);
    // Session::step(float) converts through its own double buffers and writes the update last.
    const gcomp::StepStats st = s.session->step(std::span<const float>(h_grad, n), std::span<float>(h_update, n));
    write_stats(st, stats);
  });
}

namespace {

// 16-bit host gradients: Session::step_bf16/step_f16 widen the whole gradient before they run the
// step, so h_grad may overlap h_update; the update goes to session scratch and is copied out only
// on success.
template <class Step>
gcompStatus_t step_16bit(gcompSession_t session, const char* function, const uint16_t* h_grad, double* h_update,
                         gcompStepStats_t* stats, Step step) {
  return translate_exceptions(slot_of(session), function, [&] {
    gcompSession& s = session_ref(session);
    const size_t n = num_elems_checked(s, h_grad, "h_grad", h_update, "h_update");
    check_stats(stats);
    const gcomp::StepStats st = step(*s.session, std::span<const uint16_t>(h_grad, n), std::span<double>(s.update));
    std::copy(s.update.begin(), s.update.end(), h_update);
    write_stats(st, stats);
  });
}

}  // namespace

extern "C" gcompStatus_t gcompSessionStepBF16(gcompSession_t session, const uint16_t* h_grad, double* h_update,
                                              gcompStepStats_t* stats) {
  return step_16bit(
      session, "gcompSessionStepBF16", h_grad, h_update, stats,
      [](gcomp::Session& s, std::span<const uint16_t> g, std::span<double> u) { return s.step_bf16(g, u); });
}

extern "C" gcompStatus_t gcompSessionStepF16(gcompSession_t session, const uint16_t* h_grad, double* h_update,
                                             gcompStepStats_t* stats) {
  return step_16bit(
      session, "gcompSessionStepF16", h_grad, h_update, stats,
      [](gcomp::Session& s, std::span<const uint16_t> g, std::span<double> u) { return s.step_f16(g, u); });
}

extern "C" gcompStatus_t gcompSessionApply(gcompSession_t session, const double* h_grad, double* h_x,
                                           gcompStepStats_t* stats) {
  return translate_exceptions(slot_of(session), "gcompSessionApply", [&] {
    gcompSession& s = session_ref(session);
    const size_t n = num_elems_checked(s, h_grad, "h_grad", h_x, "h_x");
    check_stats(stats);
    // Session::apply consumes the gradient completely before it writes x.
    const gcomp::StepStats st = s.session->apply(std::span<const double>(h_grad, n), std::span<double>(h_x, n));
    write_stats(st, stats);
  });
}

extern "C" gcompStatus_t gcompSessionStepDevice(gcompSession_t session, const void* d_grad, gcompGradType_t type,
                                                float* d_update, gcompStepStats_t* stats, gcompStream_t stream) {
  return translate_exceptions(slot_of(session), "gcompSessionStepDevice", [&] {
    gcompSession& s = session_ref(session);
    (void)num_elems_checked(s, d_grad, "d_grad", d_update, "d_update");
    check_stats(stats);
    const auto t = enum_field<gcomp::GradType>(raw_enum(type), "type");
    // Session::step_device checks the backend and writes d_update (on the stream) only on success.
    const gcomp::StepStats st = s.session->step_device(d_grad, t, d_update, stream);
    write_stats(st, stats);
  });
}

extern "C" gcompStatus_t gcompSessionSave(gcompSession_t session, const char* path) {
  return translate_exceptions(slot_of(session), "gcompSessionSave", [&] {
    const gcompSession& s = session_ref(session);
    require_non_null(path, "path");
    s.session->save(path);
  });
}

extern "C" gcompStatus_t gcompSessionLoad(gcompSession_t session, const char* path) {
  return translate_exceptions(slot_of(session), "gcompSessionLoad", [&] {
    gcompSession& s = session_ref(session);
    require_non_null(path, "path");
    s.session->load(path);
  });
}
