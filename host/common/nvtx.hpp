// SPDX-License-Identifier: Apache-2.0
// NVTX ranges for Nsight (encode, communicate, decode, update). NVTX v3 is header-only and ships
// with the CUDA toolkit; builds without it get no-op ranges. A range is pushed on construction and
// popped on destruction, on the calling thread.
#pragma once

#if defined(GCOMP_HAVE_NVTX)
#include <nvtx3/nvToolsExt.h>
#endif

namespace gcomp::detail {

class NvtxRange {
 public:
#if defined(GCOMP_HAVE_NVTX)
  explicit NvtxRange(const char* name) { nvtxRangePushA(name); }
  ~NvtxRange() { nvtxRangePop(); }
#else
  explicit NvtxRange(const char*) {}
#endif
  NvtxRange(const NvtxRange&) = delete;
  NvtxRange& operator=(const NvtxRange&) = delete;
};

/// Consecutive ranges on the calling thread: enter() closes the open one (if any) and opens the
/// next; the destructor closes the last, also when an exception leaves the scope.
class NvtxPhase {
 public:
  NvtxPhase() = default;
  NvtxPhase(const NvtxPhase&) = delete;
  NvtxPhase& operator=(const NvtxPhase&) = delete;
#if defined(GCOMP_HAVE_NVTX)
  void enter(const char* name) {
    close();
    nvtxRangePushA(name);
    open_ = true;
  }
  void close() {
    if (open_) nvtxRangePop();
    open_ = false;
  }
  ~NvtxPhase() { close(); }

 private:
  bool open_ = false;
#else
  void enter(const char*) {}
  void close() {}
#endif
};

}  // namespace gcomp::detail
