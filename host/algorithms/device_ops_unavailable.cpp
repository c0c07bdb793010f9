// SPDX-License-Identifier: Apache-2.0
// Session backend "cuda" in a build without CUDA (GCOMP_CUDA=OFF).
#include "host/algorithms/vec_ops.hpp"

namespace gcomp::detail {

std::unique_ptr<VecOps<float>> make_device_ops(Communicator&) {
  GCOMP_FAIL(gcompErrorNotSupported,
             "session backend 'cuda': this build of gcomp has no CUDA support (configure with -DGCOMP_CUDA=ON); "
             "backend 'host-f32' runs the same fp32 algorithm on the CPU");
}

}  // namespace gcomp::detail
