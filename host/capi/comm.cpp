// SPDX-License-Identifier: Apache-2.0
// C ABI: communicator handles over the local (threads) and MPI backends.
#include "host/capi/capi_internal.hpp"

using gcomp::capi::comm_ref;
using gcomp::capi::require_non_null;
using gcomp::capi::translate_exceptions;

extern "C" gcompStatus_t gcompCommCreateLocalGroup(int num_ranks, int64_t timeout_ms, gcompComm_t* comms_out) {
  return translate_exceptions(nullptr, "gcompCommCreateLocalGroup", [&] {
    GCOMP_EXPECTS(num_ranks >= 1, gcompErrorInvalidArgument,
                  "argument num_ranks must be >= 1, got " + std::to_string(num_ranks));
    GCOMP_EXPECTS(timeout_ms >= 0, gcompErrorInvalidArgument,
                  "argument timeout_ms must be >= 0 (0: default), got " + std::to_string(timeout_ms));
    require_non_null(comms_out, "comms_out");
    auto group = gcomp::make_local_group(num_ranks, gcomp::LocalOptions{timeout_ms});
    std::vector<std::unique_ptr<gcompComm>> handles;
    handles.reserve(group.size());
    for (auto& c : group) {
      handles.push_back(std::make_unique<gcompComm>());
      handles.back()->comm = std::shared_ptr<gcomp::Communicator>(std::move(c));
    }
    for (size_t r = 0; r < handles.size(); ++r) comms_out[r] = handles[r].release();
  });
}

extern "C" gcompStatus_t gcompCommCreateMpi(int64_t timeout_ms, gcompComm_t* comm) {
  return translate_exceptions(nullptr, "gcompCommCreateMpi", [&] {
    require_non_null(comm, "comm");
    GCOMP_EXPECTS(timeout_ms >= 0, gcompErrorInvalidArgument,
                  "argument timeout_ms must be >= 0 (0: default), got " + std::to_string(timeout_ms));
    GCOMP_EXPECTS(gcomp::mpi_available(), gcompErrorNotSupported,
                  "this gcomp library was built without MPI (configure with -DGCOMP_MPI=ON and an MPI "
                  "installation)");
    auto handle = std::make_unique<gcompComm>();
    handle->comm = std::shared_ptr<gcomp::Communicator>(gcomp::make_mpi_world(gcomp::MpiOptions{timeout_ms}));
    *comm = handle.release();
  });
}

extern "C" gcompStatus_t gcompCommRank(gcompComm_t comm, int* rank) {
  return translate_exceptions(nullptr, "gcompCommRank", [&] {
    const gcompComm& c = comm_ref(comm);
    require_non_null(rank, "rank");
    *rank = c.comm->rank();
  });
}

extern "C" gcompStatus_t gcompCommSize(gcompComm_t comm, int* num_ranks) {
  return translate_exceptions(nullptr, "gcompCommSize", [&] {
    const gcompComm& c = comm_ref(comm);
    require_non_null(num_ranks, "num_ranks");
    *num_ranks = c.comm->size();
  });
}

extern "C" gcompStatus_t gcompCommAbort(gcompComm_t comm, const char* reason) {
  return translate_exceptions(nullptr, "gcompCommAbort", [&] {
    const gcompComm& c = comm_ref(comm);
    c.comm->abort(reason != nullptr ? reason : "aborted by the application");
  });
}

extern "C" gcompStatus_t gcompCommDestroy(gcompComm_t comm) {
  return translate_exceptions(nullptr, "gcompCommDestroy", [&] {
    if (comm == nullptr) return;
    comm_ref(comm).tag = 0;
    delete comm;
  });
}
