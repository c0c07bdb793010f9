// SPDX-License-Identifier: Apache-2.0
// Factories of the backends this build does not contain: they report that, instead of the
// declarations in comm.hpp depending on the build configuration.
#include <gcomp/comm.hpp>

namespace gcomp {

#if !defined(GCOMP_HAVE_MPI)
bool mpi_available() noexcept { return false; }

void abort_mpi_job(int /*exit_code*/) noexcept {}

std::unique_ptr<Communicator> make_mpi_world(const MpiOptions& /*options*/) {
  GCOMP_FAIL(gcompErrorNotSupported,
             "make_mpi_world: this gcomp build has no mpi backend (install an MPI implementation, "
             "e.g. libopenmpi-dev, and configure with -DGCOMP_MPI=AUTO or ON)");
}
#endif

#if !defined(GCOMP_HAVE_NCCL)
bool nccl_available() noexcept { return false; }

std::string nccl_unusable() {
  return "this gcomp build has no nccl backend (configure with -DGCOMP_CUDA=ON and NCCL installed "
         "with the CUDA toolkit)";
}

std::string nccl_library() { return {}; }

int nccl_version() { return 0; }

std::unique_ptr<Communicator> make_nccl_communicator(const NcclOptions& /*options*/) {
  GCOMP_FAIL(gcompErrorNotSupported,
             "make_nccl_communicator: this gcomp build has no nccl backend (configure with "
             "-DGCOMP_CUDA=ON and NCCL installed with the CUDA toolkit)");
}
#endif

}  // namespace gcomp
