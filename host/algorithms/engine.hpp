// SPDX-License-Identifier: Apache-2.0
// The Session engine: the orchestration of every algorithm (spec/ALGORITHMS.md §3.3, §4.3, §6, §7,
// §8; docs/algorithms.md), written once in engine.cpp over VecOps<T> (vec_ops.hpp) for the three
// backends: cpu (double host state), host-f32 (fp32 host state) and cuda (fp32 device state).
// Session (session.cpp) is a thin handle over one Engine.
#pragma once

#include <gcomp/codec.hpp>
#include <gcomp/comm.hpp>
#include <gcomp/session.hpp>

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <span>
#include <string>
#include <utility>
#include <vector>

namespace gcomp::detail {

/// dist-ef-sgdm and doublesqueeze compress again on the way back (a server step).
inline bool two_way(Algorithm a) { return a == Algorithm::kDistEfSgdm || a == Algorithm::kDoubleSqueeze; }

/// The segments of `layout` inside elements [begin, end): one piece per segment the range
/// intersects, so blocks restart at the shard boundary; a single empty segment for an empty range.
std::vector<int64_t> shard_segments(const Layout& layout, int64_t begin, int64_t end);

/// What a session derives from its configuration before any rank communicates: the checks of
/// every field (gcompErrorInvalidArgument naming the bad one), the CPU uplink codec and DIANA's
/// alpha (1/(omega + 1) of the codec when alpha < 0).
struct SessionSetup {
  std::unique_ptr<Codec> uplink;
  double alpha = 0.0;
};
SessionSetup validate_session(const SessionConfig& cfg, const Layout& layout, int world);

/// One rank's algorithm state and step, behind every public step flavour of Session. The
/// conversions between the caller's element type and the state type live here.
class Engine {
 public:
  virtual ~Engine() = default;
  virtual StepStats step(std::span<const double> grad, std::span<double> update) = 0;
  virtual StepStats step(std::span<const float> grad, std::span<float> update) = 0;
  /// bf16 or f16 raw bits (type kBF16 or kF16), widened exactly.
  virtual StepStats step16(std::span<const uint16_t> grad, GradType type, std::span<double> update) = 0;
  /// Device buffers; gcompErrorNotSupported unless the backend is cuda.
  virtual StepStats step_device(const void* d_grad, GradType type, float* d_update, Stream stream) = 0;
  [[nodiscard]] virtual uint64_t step_count() const = 0;
  /// The state arrays by name (sorted), widened exactly to double.
  [[nodiscard]] virtual std::vector<std::pair<std::string, std::vector<double>>> state() = 0;
  /// Replaces the state and the step counter, after checking names, sizes and (fp32 state) that
  /// every value is an fp32 number; on error nothing changes. `what` names the source in messages.
  virtual void load(const std::map<std::string, std::vector<double>>& arrays, uint64_t step,
                    const std::string& what) = 0;
  virtual gcompStatus_t device_status(uint64_t* index) = 0;
};

/// Builds the engine of cfg.backend. `agree` runs after the backend is set up (a missing device
/// fails first) and before any state is allocated: Session checks the ranks' agreement there.
std::unique_ptr<Engine> make_engine(Communicator& comm, const Layout& layout, const SessionConfig& cfg, double alpha,
                                    const std::function<void()>& agree);

}  // namespace gcomp::detail
