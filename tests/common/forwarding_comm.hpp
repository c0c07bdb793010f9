// SPDX-License-Identifier: Apache-2.0
// ForwardingComm: the base of the tests' communicator doubles (fault injection, corruption,
// counting, misstated sizes). It forwards every fixed-size collective, host_allgather, abort and
// the queries to another communicator; a double overrides only the calls it changes.
// allgatherv and alltoallv are deliberately not forwarded: they run Communicator's generic form
// over this object's allgather/host_allgather, so a double that counts, fails or corrupts
// collectives sees the variable-length ones too. A double that changes them overrides them.
#pragma once

#include <gcomp/comm.hpp>

#include <cstddef>
#include <string_view>

namespace gcomp::test {

class ForwardingComm : public Communicator {
 public:
  explicit ForwardingComm(Communicator& inner) : inner_(inner) {}
  int rank() const override { return inner_.rank(); }
  int size() const override { return inner_.size(); }
  const char* backend() const override { return inner_.backend(); }
  MemorySpace memory_space() const override { return inner_.memory_space(); }
  void allgather(const void* s, void* r, size_t b, Stream st) override { inner_.allgather(s, r, b, st); }
  void alltoall(const void* s, void* r, size_t b, Stream st) override { inner_.alltoall(s, r, b, st); }
  void allreduce(const void* s, void* r, size_t c, DataType t, ReduceOp o, Stream st) override {
    inner_.allreduce(s, r, c, t, o, st);
  }
  void broadcast(void* b, size_t n, int root, Stream st) override { inner_.broadcast(b, n, root, st); }
  void barrier() override { inner_.barrier(); }
  void host_allgather(const void* s, void* r, size_t b) override { inner_.host_allgather(s, r, b); }
  void abort(std::string_view why) noexcept override { inner_.abort(why); }
  bool is_aborted() const noexcept override { return inner_.is_aborted(); }

 protected:
  Communicator& inner() { return inner_; }
  const Communicator& inner() const { return inner_; }

 private:
  Communicator& inner_;
};

}  // namespace gcomp::test
