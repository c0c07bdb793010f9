// SPDX-License-Identifier: Apache-2.0
/// @file comm.hpp
/// @brief Communicators: the transport interface (allgather, alltoall, allreduce, broadcast,
/// barrier) and its backends `local` (threads of one process), `mpi` (OpenMPI processes, host
/// buffers) and `nccl` (GPU buffers). DESIGN.md §3 "Communicator"; user guide in
/// docs/communicators.md.
///
/// Every collective is called by all ranks of the communicator in the same order with matching
/// sizes. Each collective has a timeout: if it does not complete in time the communicator is
/// aborted (every later call throws at once) and gcomp::Error(gcompErrorTimeout) names the
/// collective and its sequence number. Mismatched collectives (different operation, size, type,
/// operator or root across ranks) throw gcomp::Error(gcompErrorMismatch) on every rank with the
/// same message; the communicator stays usable after a mismatch.
///
/// A Communicator object is used by one thread at a time; distinct objects (for example the ranks
/// of a local group) may be used concurrently.
#pragma once

#include <gcomp/error.hpp>

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

struct CUstream_st;

namespace gcomp {

/// CUDA stream (== cudaStream_t). nullptr on the CPU backends, which run on the calling thread.
using Stream = CUstream_st*;

/// Element type of an allreduce.
enum class DataType : int32_t { kF32 = 0, kF64 = 1, kI32 = 2, kI64 = 3, kU64 = 4 };

/// Reduction operator of an allreduce.
enum class ReduceOp : int32_t { kSum = 0, kMax = 1 };

/// Where a communicator's collective buffers live.
enum class MemorySpace : int32_t { kHost = 0, kDevice = 1 };

/// Default collective timeout when neither the options nor GCOMP_COMM_TIMEOUT_MS set one.
inline constexpr int64_t kDefaultCommTimeoutMs = 300000;

/// @brief Size in bytes of one element of @p type.
/// @throws gcomp::Error(gcompErrorInvalidArgument) for a value outside the enum.
[[nodiscard]] size_t data_type_bytes(DataType type);

/// @brief Short name of @p type ("f32", "f64", "i32", "i64", "u64").
[[nodiscard]] const char* data_type_name(DataType type) noexcept;

/// @brief Short name of @p op ("sum", "max").
[[nodiscard]] const char* reduce_op_name(ReduceOp op) noexcept;

/// @brief Resolves a collective timeout: @p requested_ms when it is > 0, else the environment
/// variable GCOMP_COMM_TIMEOUT_MS when set, else kDefaultCommTimeoutMs.
/// @param[in] requested_ms timeout from the backend options; 0 means "not set".
/// @return the timeout in milliseconds (> 0).
/// @throws gcomp::Error(gcompErrorInvalidArgument) when @p requested_ms is negative or the
///         environment variable is not a positive integer.
[[nodiscard]] int64_t resolve_comm_timeout_ms(int64_t requested_ms);

/// @brief Transport interface shared by every backend. Collectives move bytes (or, for allreduce,
/// typed elements) between the ranks 0..size()-1.
///
/// Buffers live in memory_space(): host memory for `local` and `mpi`, device memory for `nccl`.
/// Typed buffers must be aligned to their element size. CPU backends complete the collective
/// before returning and ignore the stream; `nccl` enqueues on the stream and returns.
class Communicator {
 public:
  Communicator() = default;
  Communicator(const Communicator&) = delete;
  Communicator& operator=(const Communicator&) = delete;
  Communicator(Communicator&&) = delete;
  Communicator& operator=(Communicator&&) = delete;
  /// @brief Releases the backend resources. Never throws.
  virtual ~Communicator() = default;

  /// @brief This rank's index in 0..size()-1.
  [[nodiscard]] virtual int rank() const = 0;
  /// @brief Number of ranks.
  [[nodiscard]] virtual int size() const = 0;
  /// @brief Backend name: "local", "mpi" or "nccl".
  [[nodiscard]] virtual const char* backend() const = 0;
  /// @brief Memory space of the collective buffers.
  [[nodiscard]] virtual MemorySpace memory_space() const = 0;

  /// @brief Every rank receives every rank's block, in rank order.
  /// @param[in] send bytes_per_rank bytes. In place when send == recv + rank() * bytes_per_rank.
  /// @param[out] recv size() * bytes_per_rank bytes; block j is rank j's send.
  /// @param[in] bytes_per_rank block size, equal on every rank.
  /// @param[in] stream stream to enqueue on (nccl); ignored by CPU backends.
  virtual void allgather(const void* send, void* recv, size_t bytes_per_rank, Stream stream) = 0;

  /// @brief Personalized exchange: send block j goes to rank j; recv block j came from rank j.
  /// @param[in] send size() * bytes_per_peer bytes. CPU backends allow any overlap with recv,
  ///            including send == recv; nccl requires disjoint buffers.
  /// @param[out] recv size() * bytes_per_peer bytes.
  /// @param[in] bytes_per_peer block size, equal on every rank.
  /// @param[in] stream stream to enqueue on (nccl); ignored by CPU backends.
  virtual void alltoall(const void* send, void* recv, size_t bytes_per_peer, Stream stream) = 0;

  /// @brief allgather of messages of different sizes: every rank receives every rank's message,
  /// each in its own slot of @p max_bytes_per_rank bytes (the bound: a codec's worst-case size).
  ///
  /// The sizes travel first. Before any data buffer is touched, every rank checks that all ranks
  /// passed the same bound (else gcompErrorMismatch, as for a size mismatch of allgather) and that
  /// no rank's @p send_bytes exceeds it (else gcompErrorInvalidArgument); both errors are thrown on
  /// every rank with the same message, and the communicator stays usable. Timeouts and abort
  /// behave as for allgather.
  /// @param[in] send send_bytes bytes. In place when send == recv + rank() * max_bytes_per_rank.
  /// @param[in] send_bytes size of this rank's message, <= max_bytes_per_rank; may differ per rank.
  /// @param[out] recv size() * max_bytes_per_rank bytes; slot j (at j * max_bytes_per_rank) starts
  ///             with rank j's message. The bytes of a slot after its message are unspecified
  ///             (the gcomp backends leave them untouched).
  /// @param[in] max_bytes_per_rank slot size and bound, equal on every rank.
  /// @param[out] recv_bytes host array of size() entries: recv_bytes[j] = rank j's send_bytes
  ///             (recv_bytes[rank()] = send_bytes).
  /// @param[in] stream stream to enqueue on (nccl); ignored by CPU backends.
  ///
  /// nccl: the sizes are exchanged through device memory and the host waits for @p stream (and
  /// so for the work enqueued on it before) under the collective timeout before it enqueues the
  /// grouped sends and receives of the messages; recv_bytes is valid on return, the messages once
  /// the stream reaches that point. The default implementation (for Communicator subclasses outside
  /// gcomp) sends the sizes with host_allgather and the messages with allgather at the full slot
  /// size; every gcomp backend overrides it and moves only the message bytes.
  virtual void allgatherv(const void* send, size_t send_bytes, void* recv, size_t max_bytes_per_rank,
                          size_t* recv_bytes, Stream stream);

  /// @brief alltoall of messages of different sizes: send slot j (send_bytes[j] bytes at
  /// j * max_bytes_per_peer) goes to rank j; recv slot j receives rank j's message for this rank.
  ///
  /// Sizes first, checked as for allgatherv before any data buffer is touched: the same bound on
  /// every rank (gcompErrorMismatch) and no message above it (gcompErrorInvalidArgument), on every
  /// rank with the same message.
  /// @param[in] send size() * max_bytes_per_peer bytes. CPU backends allow any overlap with recv,
  ///            including send == recv; nccl requires disjoint buffers.
  /// @param[in] send_bytes host array of size() entries, each <= max_bytes_per_peer. It may alias
  ///            @p recv_bytes.
  /// @param[out] recv size() * max_bytes_per_peer bytes; slot j starts with rank j's message, the
  ///             rest of the slot is unspecified (the gcomp backends leave it untouched).
  /// @param[in] max_bytes_per_peer slot size and bound, equal on every rank.
  /// @param[out] recv_bytes host array of size() entries: recv_bytes[j] = the size rank j sent here.
  /// @param[in] stream stream to enqueue on (nccl); ignored by CPU backends. nccl waits for the
  ///            stream on the host as allgatherv does.
  virtual void alltoallv(const void* send, const size_t* send_bytes, void* recv, size_t max_bytes_per_peer,
                         size_t* recv_bytes, Stream stream);

  /// @brief Element-wise reduction of every rank's @p send into every rank's @p recv.
  ///
  /// Determinism: `local` and `mpi` reduce in rank order, recv[i] = op(...op(op(s_0[i], s_1[i]),
  /// s_2[i])..., s_{P-1}[i]), so every rank gets bitwise the same result and it does not depend on
  /// timing. `nccl` uses NCCL's reduction order, which is not rank order. kMax propagates NaN.
  /// Signed integer sums wrap around (two's complement).
  /// @param[in] send count elements of @p type. In place when send == recv.
  /// @param[out] recv count elements of @p type.
  /// @param[in] count number of elements, equal on every rank.
  /// @param[in] type element type, equal on every rank.
  /// @param[in] op reduction operator, equal on every rank.
  /// @param[in] stream stream to enqueue on (nccl); ignored by CPU backends.
  virtual void allreduce(const void* send, void* recv, size_t count, DataType type, ReduceOp op, Stream stream) = 0;

  /// @brief Copies @p root's buffer to every other rank, in place.
  /// @param[in,out] buf bytes bytes; read on root, written on the others.
  /// @param[in] bytes size, equal on every rank.
  /// @param[in] root source rank, equal on every rank.
  /// @param[in] stream stream to enqueue on (nccl); ignored by CPU backends.
  virtual void broadcast(void* buf, size_t bytes, int root, Stream stream) = 0;

  /// @brief Returns when every rank has entered the barrier (nccl: and its previously enqueued
  /// collectives on the internal stream have completed). Blocks the host.
  virtual void barrier() = 0;

  /// @brief Blocks until the work enqueued on @p stream has completed, under the collective
  /// timeout (nccl: aborts the communicator on timeout or on an asynchronous NCCL error). CPU
  /// backends: no-op.
  virtual void synchronize(Stream stream);

  /// @brief Blocking allgather of small host buffers, for setup-time control messages such as
  /// check_agreement. Same contract as allgather() but @p send and @p recv are host memory on
  /// every backend; it may allocate and synchronize.
  virtual void host_allgather(const void* send, void* recv, size_t bytes_per_rank);

  /// @brief Aborts the communicator: collectives waiting now and every later call throw
  /// gcomp::Error(gcompErrorTimeout) carrying @p reason. `local` aborts the whole group, so the
  /// peers waiting for this rank fail promptly. Idempotent; the first reason is kept.
  virtual void abort(std::string_view reason) noexcept = 0;

  /// @brief True once the communicator has been aborted (timeout, abort() or a peer's abort).
  [[nodiscard]] virtual bool is_aborted() const noexcept = 0;
};

/// A check that the blocking waits of the host backends (local, mpi) call about every 50 ms while
/// they wait for peers (the calling thread, no lock held). Returning true stops the wait: the
/// communicator is aborted ("interrupted") and the collective throws gcomp::Error(gcompErrorTimeout)
/// at once instead of at the collective timeout. nullptr (the default): never interrupted.
using WaitInterruptCheck = bool (*)();

/// @brief Installs @p check for every communicator of the process (see WaitInterruptCheck). For
/// language bindings: the Python extension installs one that polls for Ctrl-C (KeyboardInterrupt).
void set_wait_interrupt_check(WaitInterruptCheck check) noexcept;

/// @brief 64-bit FNV-1a digest (offset basis 0xcbf29ce484222325, prime 0x100000001b3) of the
/// bytes of @p text. Used by check_agreement.
[[nodiscard]] uint64_t fnv1a64(std::string_view text) noexcept;

/// @brief Checks that every rank passes the same @p canonical_text (for example
/// "codec=dither:levels=4;layout=...;algo=diana;format=1").
///
/// Allgathers the FNV-1a digest of the text; when digests differ, allgathers the texts themselves
/// and throws gcomp::Error(gcompErrorMismatch) on every rank with the same message, naming the
/// ranks whose text differs from rank 0's and showing both texts, e.g.
/// `codec spec differs across ranks: rank 0: "dither:levels=4" vs rank 2: "dither:levels=2"`.
/// Collective: every rank must call it. Uses host_allgather(), so it works on every backend.
/// @param[in,out] comm communicator of the ranks to check.
/// @param[in] what_description what is compared, for the message (e.g. "codec spec").
/// @param[in] canonical_text this rank's canonical description.
void check_agreement(Communicator& comm, std::string_view what_description, std::string_view canonical_text);

// ---------------------------------------------------------------------------------------------
// local backend: ranks are threads of one process sharing host memory.

/// Options of the local backend.
struct LocalOptions {
  /// Collective timeout in milliseconds; 0 means resolve_comm_timeout_ms(0).
  int64_t timeout_ms = 0;
};

/// @brief Creates @p num_ranks connected local communicators; element r has rank r. Each one is
/// meant to be driven by its own thread. Destroying one marks that rank as exited: a peer
/// waiting for it in a collective then fails at once instead of timing out.
/// @param[in] num_ranks number of ranks, >= 1.
/// @param[in] options timeout.
/// @throws gcomp::Error(gcompErrorInvalidArgument) when num_ranks < 1 or options are invalid.
[[nodiscard]] std::vector<std::unique_ptr<Communicator>> make_local_group(int num_ranks,
                                                                          const LocalOptions& options = {});

/// @brief Runs @p fn on @p num_ranks threads, thread r with the local communicator of rank r, and
/// joins them. When @p fn throws on one rank, the group is aborted so that the other ranks fail
/// promptly; a rank whose @p fn returns while peers still wait for it in a collective makes them
/// fail too. After joining, rethrows the exception that occurred first, preferring any error over
/// gcompErrorTimeout errors (which are usually consequences of the first failure).
/// @param[in] num_ranks number of ranks, >= 1.
/// @param[in] fn work of one rank.
/// @param[in] options timeout.
void run_local(int num_ranks, const std::function<void(Communicator&)>& fn, const LocalOptions& options = {});

// ---------------------------------------------------------------------------------------------
// mpi backend: one rank per MPI process, host buffers.

/// Options of the mpi backend.
struct MpiOptions {
  /// Collective timeout in milliseconds; 0 means resolve_comm_timeout_ms(0).
  int64_t timeout_ms = 0;
};

/// @brief True when this build contains the mpi backend (configured with MPI found).
[[nodiscard]] bool mpi_available() noexcept;

/// @brief Communicator over all processes of MPI_COMM_WORLD (a duplicate of it). Initializes MPI
/// with MPI_Init_thread(MPI_THREAD_SERIALIZED) when the application has not; gcomp then finalizes
/// MPI at process exit. Collective over MPI_COMM_WORLD.
/// @param[in] options timeout.
/// @throws gcomp::Error(gcompErrorNotSupported) when built without MPI or MPI is finalized,
///         gcomp::Error(gcompErrorMpi) when an MPI call fails.
[[nodiscard]] std::unique_ptr<Communicator> make_mpi_world(const MpiOptions& options = {});

/// @brief Ends the whole MPI job: MPI_Abort(MPI_COMM_WORLD, @p exit_code), which makes the launcher
/// (mpirun) terminate every rank at once. For an application's fatal-error path under MPI (the
/// gcomp tools call it after printing their error), so that no rank is left waiting for the failed
/// one in a collective or in MPI_Finalize. Returns without doing anything when MPI is not
/// initialized or already finalized, or in a build without MPI. (The library itself never calls it.
/// When gcomp initialized MPI and a collective was abandoned after a timeout, gcomp skips
/// MPI_Finalize at process exit, which would wait forever; the launcher then ends the job.)
void abort_mpi_job(int exit_code) noexcept;

// ---------------------------------------------------------------------------------------------
// nccl backend: one rank per GPU, device buffers, stream-ordered.

/// How nccl ranks exchange the NCCL unique id.
enum class NcclBootstrap : int32_t {
  kAuto = 0,  ///< kFile when GCOMP_NCCL_ID_FILE is set, else kTcp when MASTER_ADDR is set, else kMpi
  kMpi = 1,   ///< broadcast over MPI_COMM_WORLD; rank and size from MPI
  kTcp = 2,   ///< rank 0 listens on master_addr:master_port and sends the id to each peer
  kFile = 3,  ///< rank 0 writes id_file atomically (rename); peers poll for it
};

/// Options of the nccl backend. Unset fields come from the launcher environment.
struct NcclOptions {
  /// Timeout in milliseconds for setup, barrier() and synchronize(); 0: resolve_comm_timeout_ms(0).
  int64_t timeout_ms = 0;
  /// Id exchange method.
  NcclBootstrap bootstrap = NcclBootstrap::kAuto;
  /// Rank; -1: RANK (kMpi: the MPI rank).
  int rank = -1;
  /// Number of ranks; -1: WORLD_SIZE (kMpi: the MPI size).
  int world_size = -1;
  /// CUDA device; -1: LOCAL_RANK (or OMPI_COMM_WORLD_LOCAL_RANK), else rank modulo device count.
  int device = -1;
  /// kTcp rendezvous host; empty: MASTER_ADDR.
  std::string master_addr;
  /// kTcp rendezvous port; -1: MASTER_PORT.
  int master_port = -1;
  /// kFile path, unique per job; empty: GCOMP_NCCL_ID_FILE.
  std::string id_file;
};

/// @brief True when this build contains the nccl backend (configured with CUDA and NCCL).
/// NCCL itself is loaded at run time, when the first nccl communicator is created (see
/// nccl_unusable()); libgcomp does not link it.
[[nodiscard]] bool nccl_available() noexcept;

/// @brief Empty when the nccl backend can run here, else the reason: the build has no nccl
/// backend, NCCL cannot be loaded (the message names the library tried and the loader's error),
/// or no CUDA device is visible. Loads NCCL on the first call, as make_nccl_communicator() does:
/// GCOMP_NCCL_LIBRARY (a path) when set, else "libnccl.so.2" (the NCCL already in the process, if
/// any), else the NCCL found next to the CUDA toolkit at configure time. The outcome of loading
/// is kept for the life of the process (docs/communicators.md "Which NCCL is used").
[[nodiscard]] std::string nccl_unusable();

/// @brief The file NCCL was loaded from (loading it on the first call); empty when it cannot be
/// loaded or the build has no nccl backend.
[[nodiscard]] std::string nccl_library();

/// @brief ncclGetVersion of the loaded NCCL (e.g. 22809 for 2.28.9; loading it on the first
/// call); 0 when it cannot be loaded or the build has no nccl backend.
[[nodiscard]] int nccl_version();

/// @brief Creates this process's rank of a non-blocking NCCL communicator: exchanges the unique id
/// (NcclOptions::bootstrap), selects the device, and initializes under the timeout (aborting on
/// expiry). Collective over all ranks.
/// @param[in] options bootstrap, rank, device and timeout.
/// @throws gcomp::Error(gcompErrorNotSupported) when built without NCCL or when NCCL cannot be
///         loaded (checked first, before any rendezvous or device selection; nccl_unusable()),
///         gcomp::Error(gcompErrorInvalidArgument) for missing or bad launcher variables,
///         gcomp::Error(gcompErrorTimeout) when setup does not complete in time,
///         gcomp::Error(gcompErrorNccl / gcompErrorCuda) when a library call fails.
[[nodiscard]] std::unique_ptr<Communicator> make_nccl_communicator(const NcclOptions& options = {});

}  // namespace gcomp
