// SPDX-License-Identifier: Apache-2.0
// Variable-length messages in the Session engine (issue 16; docs/algorithms.md "Message sizes"):
// with sdither and topk index=rice, every message travels at its used size (allgatherv one-way,
// alltoallv + allgatherv for the sharded server), the statistics count those bytes, the result is
// bit for bit what the full payloads give, and a peer that lies about its message size makes the
// step fail with the state unchanged.
#include "common/forwarding_comm.hpp"

#include "algorithms/session_cases.hpp"
#include "host/algorithms/engine.hpp"

#include <gcomp/codec.hpp>
#include <gcomp/comm.hpp>
#include <gcomp/detail/session_keys.hpp>
#include <gcomp/detail/session_math.hpp>
#include <gcomp/session.hpp>

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <string>
#include <vector>

using namespace gcomp;

namespace {

constexpr int kRanks = 3;

std::vector<double> gradient(int r, int k, int64_t n) {
  std::vector<double> g(static_cast<size_t>(n));
  for (int64_t j = 0; j < n; ++j)
    g[static_cast<size_t>(j)] =
        std::sin(0.37 * static_cast<double>(j + 1) + 1.3 * r + 0.71 * k) * (1.0 + 0.1 * static_cast<double>(j % 7));
  return g;
}

using State = std::vector<std::pair<std::string, std::vector<double>>>;
State copy_state(const Session& s) {
  State out;
  for (const auto& [name, v] : s.state()) out.emplace_back(name, *v);
  return out;
}

/// Forwards to a local communicator, but moves variable-length messages as full payloads: each
/// message (the payload's used bytes, then the sender's 4-byte status word) is rewritten as the
/// full, zero-padded payload (`gather_full[j]` bytes for slot j of an allgatherv, `alltoall_full[j]`
/// for an alltoallv) followed by the same status word, and moved by the plain allgather / alltoall
/// of the whole slot. What the engine decodes is then the full payload instead of the short one.
class FullSlotComm final : public gcomp::test::ForwardingComm {
 public:
  FullSlotComm(Communicator& inner, std::vector<size_t> gather_full, std::vector<size_t> alltoall_full)
      : ForwardingComm(inner), gather_full_(std::move(gather_full)), alltoall_full_(std::move(alltoall_full)) {}
  int calls = 0;
  void allgatherv(const void* s, size_t bytes, void* r, size_t max, size_t* sizes, Stream st) override {
    ++calls;
    const size_t full = gather_full_[static_cast<size_t>(rank())];
    std::vector<uint8_t> slot(max, 0);
    widen(static_cast<const uint8_t*>(s), bytes, full, slot.data());
    inner().allgather(slot.data(), r, max, st);
    for (size_t j = 0; j < gather_full_.size(); ++j) sizes[j] = gather_full_[j] + 4;
  }
  void alltoallv(const void* s, const size_t* bytes, void* r, size_t max, size_t* sizes, Stream st) override {
    ++calls;
    const auto p = static_cast<size_t>(size());
    std::vector<uint8_t> slots(max * p, 0);
    // Send slot j holds shard j's message (to rank j); every received slot holds this rank's shard.
    for (size_t j = 0; j < p; ++j)
      widen(static_cast<const uint8_t*>(s) + max * j, bytes[j], shard_full_[j], slots.data() + max * j);
    inner().alltoall(slots.data(), r, max, st);
    for (size_t j = 0; j < p; ++j) sizes[j] = alltoall_full_[j] + 4;
  }
  std::vector<size_t> shard_full_;  ///< full size of shard j's uplink message (alltoallv slot j)

 private:
  // message = payload[0, bytes - 4) + status word -> payload zero-padded to `full` + status word.
  static void widen(const uint8_t* msg, size_t bytes, size_t full, uint8_t* out) {
    ASSERT_GE(bytes, 4u);
    ASSERT_LE(bytes - 4, full);
    std::memcpy(out, msg, bytes - 4);
    std::memcpy(out + full, msg + bytes - 4, 4);
  }
  std::vector<size_t> gather_full_, alltoall_full_;
};

/// Forwards to a local communicator; rank `liar` misstates the size of its variable-length
/// messages when armed (allgatherv: its message; alltoallv: its message to rank 0) by `lie`
/// bytes relative to the truth, or (`above_bound`) claims one byte more than the slot.
class LyingComm final : public gcomp::test::ForwardingComm {
 public:
  LyingComm(Communicator& inner, int liar) : ForwardingComm(inner), liar_(liar) {}
  void arm(long lie, bool above_bound) {
    armed_ = true;
    lie_ = lie;
    above_ = above_bound;
  }
  void allgatherv(const void* s, size_t bytes, void* r, size_t max, size_t* sizes, Stream st) override {
    inner().allgatherv(s, told(bytes, max), r, max, sizes, st);
  }
  void alltoallv(const void* s, const size_t* bytes, void* r, size_t max, size_t* sizes, Stream st) override {
    std::vector<size_t> b(bytes, bytes + size());
    b[0] = told(b[0], max);
    inner().alltoallv(s, b.data(), r, max, sizes, st);
  }

 private:
  size_t told(size_t truth, size_t max) const {
    if (!armed_ || rank() != liar_) return truth;
    if (above_) return max + 1;
    if (lie_ < -static_cast<long>(truth)) return 2;  // shorter than a status word
    return static_cast<size_t>(static_cast<long>(truth) + lie_);
  }
  int liar_;
  bool armed_ = false, above_ = false;
  long lie_ = 0;
};

size_t encoded(const std::string& spec, const Layout& layout) { return make_codec(spec, layout)->encoded_bytes(); }

Layout shard_layout(const Layout& layout, int p, int r) {
  return Layout(detail::shard_segments(layout, detail::shard_begin(layout.num_elems(), p, r),
                                       detail::shard_begin(layout.num_elems(), p, r + 1)));
}

class VarlenBackendTest : public testing::TestWithParam<Backend> {};

// compressed-gd: bytes_up is the used size of this rank's message (below the worst case),
// bytes_received the used sizes of the others' (each with its 4-byte status word), recomputed here
// with the CPU codec; host-f32:
// the update is fp32(1/P) * sum_j decode(C(g_j)) bit for bit.
TEST_P(VarlenBackendTest, OneWayMessagesTravelAtTheirUsedSize) {
  const Layout layout(std::vector<int64_t>{200, 1, 311});
  const int64_t n = layout.num_elems();
  for (const char* spec : {"sdither:levels=1,norm=l2", "topk:k=8,index=rice", "sdither:levels=3,norm=linf,block=64"}) {
    SCOPED_TRACE(spec);
    const auto codec = make_codec(spec, layout);
    std::vector<size_t> used(kRanks);
    std::vector<float> want(static_cast<size_t>(n), 0.0f);
    for (int j = 0; j < kRanks; ++j) {
      const std::vector<double> g = gradient(j, 0, n);
      const std::vector<float> x(g.begin(), g.end());
      std::vector<uint8_t> payload(codec->encoded_bytes());
      const RngKey key = detail::uplink_key(19, static_cast<uint32_t>(j), 0);
      codec->encode(x, key, payload);
      used[static_cast<size_t>(j)] = codec->used_bytes(payload);
      // sdither's worst case is far above its messages; topk index=rice's worst case is close to
      // its messages (a few bits of Rice quotients), so it may round to the same bytes.
      if (codec->spec().id() == CodecId::kSDither) {
        ASSERT_LT(used[static_cast<size_t>(j)], codec->encoded_bytes()) << "the test needs short messages";
      } else {
        ASSERT_LE(used[static_cast<size_t>(j)], codec->encoded_bytes());
      }
      codec->decode_accumulate(payload, key, 1.0f, want);
    }
    const auto inv = static_cast<float>(1.0 / kRanks);
    for (float& v : want) v = detail::mul_rn(inv, v);
    SessionConfig cfg;
    cfg.algorithm = Algorithm::kCompressedGd;
    cfg.codec = spec;
    cfg.lr = 1.0;
    cfg.seed = 19;
    cfg.backend = GetParam();
    run_local(kRanks, [&](Communicator& comm) {
      Session s(comm, layout, cfg);
      const std::vector<double> g = gradient(comm.rank(), 0, n);
      std::vector<double> u(static_cast<size_t>(n));
      const StepStats st = s.step(g, u);
      size_t others = 0;
      for (int j = 0; j < kRanks; ++j)
        if (j != comm.rank()) others += used[static_cast<size_t>(j)] + 4;  // + the status word
      EXPECT_EQ(st.bytes_up, used[static_cast<size_t>(comm.rank())]);
      EXPECT_EQ(st.bytes_received, others);
      EXPECT_DOUBLE_EQ(st.bits_per_element_up, 8.0 * static_cast<double>(st.bytes_up) / static_cast<double>(n));
      if (GetParam() == Backend::kHostF32) {
        for (int64_t i = 0; i < n; ++i)
          ASSERT_EQ(u[static_cast<size_t>(i)], static_cast<double>(want[static_cast<size_t>(i)])) << "element " << i;
      }
    });
  }
}

// The variable-length cases of session_cases.hpp (one-way, replicated and sharded two-way): the
// short messages give bit for bit the updates and state of the full payloads (FullSlotComm), and
// fewer bytes travel than the fixed worst-case sizes.
TEST_P(VarlenBackendTest, ShortMessagesDecodeAsTheFullPayloads) {
  const Layout layout(std::vector<int64_t>{23, 1, 40, 130});
  const int64_t n = layout.num_elems();
  constexpr int kSteps = 5;
  for (const char* name :
       {"diana_sdither", "ef_sgd_topk_rice", "dist_ef_sgdm_replicated_varlen", "doublesqueeze_sharded_varlen"}) {
    SCOPED_TRACE(name);
    const test::SessionCase& sc = test::session_case(name);
    const SessionConfig cfg = test::session_case_config(sc, GetParam());
    const bool sharded = cfg.server == ServerMode::kSharded;
    // Worst-case bytes of one step's messages of rank r, and the full sizes FullSlotComm reports.
    std::vector<size_t> gather_full(kRanks), alltoall_full(kRanks);
    size_t worst_up = 0;
    for (int j = 0; j < kRanks; ++j) {
      gather_full[static_cast<size_t>(j)] =
          sharded ? encoded(cfg.server_codec, shard_layout(layout, kRanks, j)) : encoded(cfg.codec, layout);
      worst_up += sharded ? encoded(cfg.codec, shard_layout(layout, kRanks, j)) : 0;
    }
    if (!sharded) worst_up = encoded(cfg.codec, layout);
    std::vector<std::vector<std::vector<double>>> updates[2];
    std::vector<State> states[2];
    std::vector<size_t> sent(kRanks, 0);
    for (int full = 0; full < 2; ++full) {
      updates[full].assign(kRanks, {});
      states[full].assign(kRanks, {});
      run_local(kRanks, [&](Communicator& inner) {
        const auto me = static_cast<size_t>(inner.rank());
        std::vector<size_t> a2a(kRanks, sharded ? encoded(cfg.codec, shard_layout(layout, kRanks, inner.rank())) : 0);
        FullSlotComm wrapped(inner, gather_full, a2a);
        for (int j = 0; j < kRanks; ++j)
          wrapped.shard_full_.push_back(sharded ? encoded(cfg.codec, shard_layout(layout, kRanks, j)) : 0);
        Communicator& comm = full ? static_cast<Communicator&>(wrapped) : inner;
        Session s(comm, layout, cfg);
        std::vector<double> x(static_cast<size_t>(n), 0.0), u(static_cast<size_t>(n));
        for (int k = 0; k < kSteps; ++k) {
          const std::vector<double> g = gradient(inner.rank(), k, n);
          const StepStats st = s.step(g, u);
          updates[full][me].push_back(u);
          if (!full) {
            EXPECT_LE(st.bytes_up, worst_up);
            sent[me] += st.bytes_up;
          }
        }
        states[full][me] = copy_state(s);
        if (full) {
          EXPECT_GT(wrapped.calls, 0) << "no variable-length collective ran";
        }
      });
    }
    for (int r = 0; r < kRanks; ++r) {
      EXPECT_TRUE(updates[0][static_cast<size_t>(r)] == updates[1][static_cast<size_t>(r)]) << "rank " << r;
      EXPECT_TRUE(states[0][static_cast<size_t>(r)] == states[1][static_cast<size_t>(r)]) << "rank " << r;
      if (std::string(cfg.codec).rfind("sdither", 0) == 0) {
        EXPECT_LT(sent[static_cast<size_t>(r)], worst_up * kSteps) << "rank " << r << ": nothing was saved";
      }
    }
  }
}

// A peer that misstates its message size (each message is the payload's used bytes, then the
// sender's 4-byte status word): four bytes more than it sent, fewer bytes than a status word, or
// above the slot, each gcompErrorCorruptPayload; one byte short, which moves the status word into
// the payload's last byte, a failed step (the status that word reads, or gcompErrorCorruptPayload).
// One-way (allgatherv) every rank sees it; a size above the bound is refused by the communicator on
// every rank before any data moves. Sharded uplink (alltoallv): the lie about the message to rank 0
// is seen by rank 0, the peers fail after it. Every rank's state, step counter and update stay as
// they were.
TEST_P(VarlenBackendTest, ALyingSizeFailsTheStepAndLeavesStateUntouched) {
  const Layout layout(std::vector<int64_t>{23, 1, 40, 130});
  const int64_t n = layout.num_elems();
  struct Lie {
    long by;
    bool above;
    bool corrupt;  // gcompErrorCorruptPayload expected (else: any failure)
  };
  for (const char* name : {"diana_sdither", "ef_sgd_topk_rice", "doublesqueeze_sharded_varlen"}) {
    const SessionConfig cfg = test::session_case_config(test::session_case(name), GetParam());
    const bool sharded = cfg.server == ServerMode::kSharded;
    for (const Lie lie : {Lie{-1, false, false}, Lie{4, false, true}, Lie{0, true, true}, Lie{-1000000, false, true}}) {
      SCOPED_TRACE(std::string(name) + (lie.above ? " above the bound" : " by " + std::to_string(lie.by)));
      std::vector<int> status(kRanks, -1), unchanged(kRanks, 0);
      LocalOptions opt;
      opt.timeout_ms = 20000;
      run_local(
          kRanks,
          [&](Communicator& inner) {
            LyingComm comm(inner, 1);
            Session s(comm, layout, cfg);
            std::vector<double> u(static_cast<size_t>(n));
            for (int k = 0; k < 3; ++k) (void)s.step(gradient(comm.rank(), k, n), u);
            const State before = copy_state(s);
            std::fill(u.begin(), u.end(), 3.0);
            comm.arm(lie.by, lie.above);
            try {
              (void)s.step(gradient(comm.rank(), 3, n), u);
              status[static_cast<size_t>(comm.rank())] = gcompSuccess;
            } catch (const Error& e) {
              status[static_cast<size_t>(comm.rank())] = e.status();
            }
            unchanged[static_cast<size_t>(comm.rank())] = copy_state(s) == before && s.step_count() == 3u &&
                                                          u == std::vector<double>(static_cast<size_t>(n), 3.0);
          },
          opt);
      EXPECT_EQ(unchanged, std::vector<int>(kRanks, 1));
      for (int r = 0; r < kRanks; ++r) EXPECT_NE(status[static_cast<size_t>(r)], gcompSuccess) << "rank " << r;
      if (lie.corrupt) {
        if (!sharded || lie.above) {
          EXPECT_EQ(status, std::vector<int>(kRanks, gcompErrorCorruptPayload));
        } else {
          EXPECT_EQ(status[0], gcompErrorCorruptPayload);
        }
      }
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Backends, VarlenBackendTest, testing::Values(Backend::kCpu, Backend::kHostF32),
                         [](const auto& p) { return p.param == Backend::kCpu ? "cpu" : "host_f32"; });

// Fixed-size codecs keep the plain collectives: no size exchange (FullSlotComm would count it).
TEST(VarlenSession, FixedSizeCodecsSendNoSizes) {
  const Layout layout(std::vector<int64_t>{64});
  for (const char* name : {"qsgd", "ef_sgd_topk", "doublesqueeze_sharded"}) {
    SCOPED_TRACE(name);
    const SessionConfig cfg = test::session_case_config(test::session_case(name), Backend::kHostF32);
    run_local(kRanks, [&](Communicator& inner) {
      FullSlotComm comm(inner, std::vector<size_t>(kRanks, 0), std::vector<size_t>(kRanks, 0));
      Session s(comm, layout, cfg);
      std::vector<double> u(64);
      const StepStats st = s.step(gradient(comm.rank(), 0, 64), u);
      EXPECT_EQ(comm.calls, 0);
      EXPECT_GT(st.bytes_up, 0u);
    });
  }
}

}  // namespace
