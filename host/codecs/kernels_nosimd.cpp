// SPDX-License-Identifier: Apache-2.0
// Builds without Highway (GCOMP_HWY=OFF or libhwy-dev missing): the kernels are the scalar
// reference kernels (kernels_ref.cpp).
#include "host/codecs/kernels.hpp"

namespace gcomp::detail::kernels {

std::string active_target() { return "scalar"; }
std::vector<std::pair<int64_t, std::string>> available_targets() { return {{-1, "scalar"}}; }
void force_target(int64_t) {}

#define GCOMP_FORWARD_TO_REF(name, fn, ret, params, args) \
  ret name params { return ref::name args; }
GCOMP_CPU_KERNELS(GCOMP_FORWARD_TO_REF)
#undef GCOMP_FORWARD_TO_REF

void stream_fence() {}

}  // namespace gcomp::detail::kernels
