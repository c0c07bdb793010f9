// SPDX-License-Identifier: Apache-2.0
// Session: the public handle of one rank's algorithm (spec/ALGORITHMS.md §3.3, §4.3, §6, §7, §8):
// names, the canonical configuration, checkpoints, and forwarding to the engine that runs the
// steps on the configured backend (host/algorithms/engine.cpp).
#include <gcomp/session.hpp>

#include "host/algorithms/checkpoint.hpp"
#include "host/algorithms/engine.hpp"

#include <gcomp/names.hpp>
#include <gcomp/wire.hpp>

#include <algorithm>
#include <cmath>
#include <map>

namespace gcomp {

namespace {

using detail::two_way;

std::string fmt(double v) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.17g", v);
  return buf;
}

}  // namespace

Algorithm parse_algorithm(std::string_view name) { return parse_enum<Algorithm>(name); }

const char* algorithm_name(Algorithm a) { return enum_name(a); }

Backend parse_backend(std::string_view name) { return parse_enum<Backend>(name); }

const char* backend_name(Backend b) { return enum_name(b); }

std::string SessionConfig::canonical() const {
  std::string s = std::string("algo=") + algorithm_name(algorithm) + ";codec=" + CodecSpec::parse(codec).canonical();
  if (two_way(algorithm)) s += ";server_codec=" + CodecSpec::parse(server_codec).canonical();
  s += ";lr=" + fmt(lr) + ";alpha=" + fmt(alpha) + ";momentum=" + fmt(momentum) +
       ";nesterov=" + (nesterov ? "1" : "0") + ";delay=" + std::to_string(delay) + ";seed=" + std::to_string(seed) +
       ";prox=" + std::to_string(static_cast<int>(prox)) + ":" + fmt(prox_lambda) +
       ";nonfinite=" + std::to_string(static_cast<int>(nonfinite)) + ";tie0=" + (tie_to_zero ? "1" : "0") +
       ";shared_scale=" + (shared_scale ? "1" : "0") + ";server=" + (server == ServerMode::kSharded ? "0" : "1") +
       ";compensation=" + std::to_string(static_cast<int>(compensation)) + ";format=" + std::to_string(kWireVersion);
  // server: the numbering of before ServerMode took the order of gcompServerMode_t (sharded 0,
  // replicated 1), so that digests (checkpoints) stay. The default cpu backend is left out, so that its digests
  // (checkpoints) stay those of before the backend field existed.
  if (backend != Backend::kCpu) s += std::string(";backend=") + backend_name(backend);
  // Likewise the default fixed delay: digests of configurations without a delay schedule stay.
  if (delay_mode == DelayMode::kRandom) s += ";delay_mode=random";
  if (delay_mode == DelayMode::kTable) {
    std::string table;
    for (int32_t v : delay_table) table += std::to_string(v) + ",";
    s += ";delay_mode=table:" + std::to_string(delay_table.size()) + ":" + std::to_string(fnv1a64(table));
  }
  // track_norms only adds measurements; it is not part of the agreement.
  return s;
}

void apply_prox(Regularizer r, double lr_lambda, std::span<double> x) {
  if (r == Regularizer::kL1) {
    for (double& v : x) v = v > lr_lambda ? v - lr_lambda : (v < -lr_lambda ? v + lr_lambda : 0.0);
  } else if (r == Regularizer::kL2) {
    for (double& v : x) v = v / (1.0 + lr_lambda);
  }
}

// ------------------------------------------------------------------------------------------------

struct Session::Impl {
  Communicator& comm;
  Layout layout;
  SessionConfig cfg;
  detail::SessionSetup setup;
  std::unique_ptr<detail::Engine> engine;
  // state(): the last snapshot, which the returned pointers refer to.
  std::vector<std::pair<std::string, std::vector<double>>> snapshot;
  std::vector<double> apply_buffer;  // apply(): the update, sized at the first call

  Impl(Communicator& c, Layout l, SessionConfig config) : comm(c), layout(std::move(l)), cfg(std::move(config)) {}
  [[nodiscard]] uint64_t digest() const {
    return fnv1a64(cfg.canonical() + ";layout=" + std::to_string(layout.digest()));
  }
};

Session::Session(Communicator& comm, Layout layout, SessionConfig config)
    : impl_(std::make_unique<Impl>(comm, std::move(layout), std::move(config))) {
  Impl& m = *impl_;
  m.setup = detail::validate_session(m.cfg, m.layout, comm.size());
  m.engine = detail::make_engine(comm, m.layout, m.cfg, m.setup.alpha, [&] {
    // Agreement on everything that shapes the messages and the state.
    check_agreement(
        comm, "session configuration",
        m.cfg.canonical() + ";layout=" + std::to_string(m.layout.digest()) + ";world=" + std::to_string(comm.size()));
  });
}

Session::~Session() = default;

StepStats Session::step(std::span<const double> grad, std::span<double> update) {
  return impl_->engine->step(grad, update);
}

StepStats Session::step(std::span<const float> grad, std::span<float> update) {
  return impl_->engine->step(grad, update);
}

StepStats Session::step_bf16(std::span<const uint16_t> grad, std::span<double> update) {
  return impl_->engine->step16(grad, GradType::kBF16, update);
}

StepStats Session::step_f16(std::span<const uint16_t> grad, std::span<double> update) {
  return impl_->engine->step16(grad, GradType::kF16, update);
}

StepStats Session::step_device(const void* d_grad, GradType type, float* d_update, Stream stream) {
  return impl_->engine->step_device(d_grad, type, d_update, stream);
}

gcompStatus_t Session::device_status(uint64_t* index) { return impl_->engine->device_status(index); }

StepStats Session::apply(std::span<const double> grad, std::span<double> x) {
  // The update goes through the session's own buffer: x may alias grad.
  std::vector<double>& upd = impl_->apply_buffer;
  upd.resize(x.size());
  const StepStats s = step(grad, std::span<double>(upd));
  for (size_t i = 0; i < x.size(); ++i) x[i] -= upd[i];
  if (!s.skipped) apply_prox(impl_->cfg.prox, impl_->cfg.lr * impl_->cfg.prox_lambda, x);
  return s;
}

uint64_t Session::step_count() const { return impl_->engine->step_count(); }
const SessionConfig& Session::config() const { return impl_->cfg; }
const Layout& Session::layout() const { return impl_->layout; }
const Codec& Session::uplink_codec() const { return *impl_->setup.uplink; }
double Session::alpha() const { return impl_->setup.alpha; }

std::vector<std::pair<std::string, const std::vector<double>*>> Session::state() const {
  impl_->snapshot = impl_->engine->state();
  std::vector<std::pair<std::string, const std::vector<double>*>> out;
  for (const auto& [name, v] : impl_->snapshot) out.emplace_back(name, &v);
  return out;
}

void Session::save(const std::string& path, const Extras& extras) const {
  detail::CheckpointData d;
  d.config_digest = impl_->digest();
  d.rank = static_cast<uint32_t>(impl_->comm.rank());
  d.world = static_cast<uint32_t>(impl_->comm.size());
  d.step = step_count();
  d.arrays = impl_->engine->state();
  for (const auto& [name, v] : extras) d.arrays.emplace_back("extra:" + name, *v);
  detail::write_checkpoint(path, d);
}

void Session::load(const std::string& path, const Extras& extras) {
  const detail::CheckpointData d = detail::read_checkpoint(path);
  const int P = impl_->comm.size(), rank = impl_->comm.rank();
  GCOMP_EXPECTS(d.config_digest == impl_->digest(), gcompErrorMismatch,
                "checkpoint '" + path + "' was written by a session with another configuration or layout");
  GCOMP_EXPECTS(d.world == static_cast<uint32_t>(P), gcompErrorMismatch,
                "checkpoint '" + path + "' is from a world of " + std::to_string(d.world) + " ranks, this one has " +
                    std::to_string(P));
  GCOMP_EXPECTS(
      d.rank == static_cast<uint32_t>(rank), gcompErrorMismatch,
      "checkpoint '" + path + "' belongs to rank " + std::to_string(d.rank) + ", not rank " + std::to_string(rank));
  std::map<std::string, std::vector<double>> next, extra;
  for (const auto& [name, v] : d.arrays) (name.rfind("extra:", 0) == 0 ? extra[name.substr(6)] : next[name]) = v;
  GCOMP_EXPECTS(extra.size() == extras.size(), gcompErrorMismatch,
                "checkpoint '" + path + "' holds " + std::to_string(extra.size()) +
                    " extra arrays, the caller passed " + std::to_string(extras.size()));
  for (const auto& [name, v] : extras) {
    auto it = extra.find(name);
    GCOMP_EXPECTS(it != extra.end() && it->second.size() == v->size(), gcompErrorMismatch,
                  "checkpoint '" + path + "': array '" + name + "' is missing or has the wrong size");
  }
  // Checks every state array before it replaces any; then the extras (which cannot fail).
  impl_->engine->load(next, d.step, "checkpoint '" + path + "'");
  for (const auto& [name, v] : extras) *v = extra[name];
}

}  // namespace gcomp
