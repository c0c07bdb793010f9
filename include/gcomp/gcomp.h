/* SPDX-License-Identifier: Apache-2.0 */
/**
 * @file gcomp.h
 * @brief gcomp C ABI: versions, status codes, codec plans, communicators and sessions.
 *
 * This header is plain C99 and needs no CUDA toolkit. It is the stable contract of the library;
 * the C++ API (the `.hpp` headers) offers the same operations with RAII and exceptions. The
 * manual is docs/c-api.md.
 *
 * Conventions of every entry point declared here:
 * - **Status.** Every function that can fail returns a gcompStatus_t; 0 (gcompSuccess) is success.
 *   Status values are stable and never renumbered; gaps leave room for new codes in each family.
 *   Status returns are GCOMP_NODISCARD, except the `*Destroy` functions (they fail only for a
 *   handle of the wrong kind, and GCC does not let C callers discard a warn_unused_result value).
 * - **Errors.** On failure the function returns a non-zero status, writes a message naming the
 *   bad argument or the failed check into the calling thread's last-error text
 *   (gcompGetLastError()) and, for calls on a plan or session handle, into that handle's last-error
 *   text (gcompPlanGetLastError(), gcompSessionGetLastError(); communicator calls use the
 *   thread-local text only). Successful calls leave both texts as they were. Outputs (buffers,
 *   handles, out-parameters, session state) are untouched on failure unless a function documents
 *   otherwise. No C++ exception ever crosses this interface.
 * - **Memory.** Pointers are host memory (`h_` prefix for data buffers) except in
 *   gcompSessionStepDevice(), whose `d_` buffers are device memory and whose stream comes last.
 *   The codec variants with a stream argument (`gcompEncodeAsync`, `gcompDecodeAsync`) are not
 *   part of this version yet.
 * - **Synchronization.** All functions declared here are synchronous and run on the calling
 *   thread; collective session and communicator calls block until the collective completes.
 *   Exception: gcompSessionStepDevice() enqueues on its stream and documents where it syncs.
 * - **Thread safety.** gcompGetVersion(), gcompGetErrorString() and gcompGetLastError(): any
 *   thread. A plan is immutable after creation: any number of threads may use one plan at the same
 *   time (not while it is being destroyed). A communicator or session handle is used by one thread
 *   at a time; distinct handles (the ranks of a local group) run concurrently on their threads.
 * - **Aliasing.** Each function states which of its buffers may overlap; overlaps that a function
 *   refuses are detected and reported as gcompErrorInvalidArgument.
 * - **Sizes.** Element counts are int64_t (`num_elems`), byte counts size_t (`*_bytes`).
 * - **Configs.** Config structs are versioned: `size`, `magic` and `version` come first and must
 *   be set by the matching `GCOMP_*_INITIALIZER`. A config that was not initialised that way is
 *   rejected with gcompErrorInvalidArgument.
 *
 * Query, allocate, call: the payload size of a plan is exact and known before any data exists.
 * @code
 *   #include <gcomp/gcomp.h>
 *   #include <stdio.h>
 *   #include <stdlib.h>
 *
 *   int compress_once(const float* h_x, int64_t num_elems, float* h_out) {
 *     gcompCodecConfig_t cfg = GCOMP_CODEC_CONFIG_INITIALIZER;
 *     cfg.codec_spec = "dither:levels=4,norm=linf,block=256";
 *     cfg.seed = 42;
 *     gcompPlan_t plan = NULL;
 *     if (gcompPlanCreate(&plan, &cfg, &num_elems, 1) != gcompSuccess) {
 *       fprintf(stderr, "gcomp: %s\n", gcompGetLastError());
 *       return 1;
 *     }
 *     size_t payload_bytes = 0;
 *     gcompStatus_t st = gcompPlanEncodedBytes(plan, &payload_bytes);          // query
 *     void* h_payload = malloc(payload_bytes > 0 ? payload_bytes : 1);         // allocate
 *     if (st == gcompSuccess && h_payload == NULL) st = gcompErrorOutOfMemory;
 *     if (st == gcompSuccess) st = gcompEncode(plan, h_x, 0, 0, h_payload, payload_bytes);  // call
 *     if (st == gcompSuccess) st = gcompDecode(plan, h_payload, payload_bytes, 0, 0, h_out);
 *     if (st != gcompSuccess) fprintf(stderr, "gcomp: %s\n", gcompPlanGetLastError(plan));
 *     free(h_payload);
 *     (void)gcompPlanDestroy(plan);
 *     return st == gcompSuccess ? 0 : 1;
 *   }
 * @endcode
 *
 * Exported symbols: every function declared here is marked GCOMP_EXPORT (default visibility), so
 * it is exported from libgcomp.so even when the library is compiled with -fvisibility=hidden.
 */
#ifndef GCOMP_GCOMP_H
#define GCOMP_GCOMP_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define GCOMP_VERSION_MAJOR 0
#define GCOMP_VERSION_MINOR 1
#define GCOMP_VERSION_PATCH 0
/** Single integer version: major * 10000 + minor * 100 + patch. */
#define GCOMP_VERSION_CODE (GCOMP_VERSION_MAJOR * 10000 + GCOMP_VERSION_MINOR * 100 + GCOMP_VERSION_PATCH)

#if defined(__GNUC__) || defined(__clang__)
#define GCOMP_NODISCARD __attribute__((warn_unused_result))
#define GCOMP_EXPORT __attribute__((visibility("default")))
#else
#define GCOMP_NODISCARD
#define GCOMP_EXPORT
#endif

/** Result of every gcomp entry point. 0 is success. */
typedef enum {
  gcompSuccess = 0,
  gcompErrorInvalidArgument = 10,   /**< bad argument, spec string, layout or config */
  gcompErrorNotSupported = 11,      /**< valid request that this build or backend cannot serve */
  gcompErrorWorkspaceTooSmall = 12, /**< caller-provided buffer smaller than the queried size */
  gcompErrorCorruptPayload = 13,    /**< payload or file fails validation; outputs untouched */
  gcompErrorNonFinite = 14,         /**< NaN or Inf in the input; nothing was emitted */
  gcompErrorMismatch = 15,          /**< ranks or files disagree on codec, layout or algorithm */
  gcompErrorTimeout = 16,           /**< a collective did not complete in time */
  gcompErrorIo = 17,                /**< file could not be read or written */
  gcompErrorOutOfMemory = 18,       /**< a host allocation failed (std::bad_alloc inside) */
  gcompErrorCuda = 1000,
  gcompErrorNccl = 1001,
  gcompErrorMpi = 1002,
  gcompErrorInternal = 10000 /**< a bug in gcomp: an unexpected exception was caught */
} gcompStatus_t;

/** CUDA stream (== cudaStream_t), forward-declared so that this header needs no CUDA headers.
 *  Reserved for the CUDA entry points of a later version; no function of this version takes one. */
typedef struct CUstream_st* gcompStream_t;

/* ---------------------------------------------------------------------------------------------- */
/* Version and errors                                                                              */

/**
 * @brief Library version as GCOMP_VERSION_CODE of the build that produced the library.
 *
 * Compare with the GCOMP_VERSION_CODE of the header the caller was compiled against to detect a
 * mismatched shared library. Thread safe.
 */
GCOMP_EXPORT int gcompGetVersion(void);

/**
 * @brief Static, human-readable name of a status code ("invalid argument", ...). Never NULL;
 * "unknown status" for values outside the enum. Thread safe.
 */
GCOMP_EXPORT const char* gcompGetErrorString(gcompStatus_t status);

/**
 * @brief Message of the last failed gcomp call on the calling thread. Never NULL; "" when no call
 * has failed on this thread yet.
 *
 * The text is thread-local: another thread's failures never change it. Successful calls do not
 * clear it. The pointer stays valid until the next failing gcomp call on this thread.
 */
GCOMP_EXPORT const char* gcompGetLastError(void);

/* ---------------------------------------------------------------------------------------------- */
/* Codec plans                                                                                      */

/** Opaque codec plan: a parsed codec spec, a tensor layout and a seed. */
typedef struct gcompPlan* gcompPlan_t;

/** Value of gcompCodecConfig_t::magic. */
#define GCOMP_CODEC_CONFIG_MAGIC 0x67634346u /* "FCcg" */

/** Configuration of a codec plan (version 1). Initialise with GCOMP_CODEC_CONFIG_INITIALIZER. */
typedef struct gcompCodecConfig_v1 {
  size_t size;            /**< sizeof(gcompCodecConfig_t), set by the initializer */
  uint32_t magic;         /**< GCOMP_CODEC_CONFIG_MAGIC, set by the initializer */
  uint32_t version;       /**< GCOMP_VERSION_CODE of the caller's header, set by the initializer */
  const char* codec_spec; /**< `name[:key=value,...]`, e.g. "dither:levels=4,norm=l2"; default
                               "identity". Copied by gcompPlanCreate. */
  uint64_t seed;          /**< seed of the codec's random bits (Philox key); default 0 */
} gcompCodecConfig_t;

/** Default codec config: identity codec, seed 0. */
#define GCOMP_CODEC_CONFIG_INITIALIZER \
  { sizeof(gcompCodecConfig_t), GCOMP_CODEC_CONFIG_MAGIC, GCOMP_VERSION_CODE, "identity", 0u }

/** What a codec promises about its error (spec/ALGORITHMS.md §1). */
typedef enum {
  gcompGuaranteeNone = 0,       /**< no declared bound */
  gcompGuaranteeUnbiased = 1,   /**< E C(x) = x and E|C(x)-x|^2 <= omega |x|^2 */
  gcompGuaranteeContractive = 2 /**< E|C(x)-x|^2 <= (1-delta) |x|^2 */
} gcompGuaranteeKind_t;

/**
 * @brief Creates a codec plan for a spec and a tensor layout. Parses and validates the spec; sizes
 * are fixed from here on.
 *
 * @param[out] plan          host pointer; receives the new plan on success (untouched on failure).
 * @param[in]  config        host pointer to a config initialised with GCOMP_CODEC_CONFIG_INITIALIZER.
 * @param[in]  segment_elems host array of @p num_segments segment sizes (>= 0 each); a flat buffer
 *                           is one segment. Blocks never cross a segment boundary. Copied.
 * @param[in]  num_segments  number of segments, >= 1.
 * @return gcompSuccess; gcompErrorInvalidArgument for a NULL pointer, a bad config (size, magic,
 *         version), an unknown codec name or key (the message lists the valid ones), or a bad
 *         layout; gcompErrorOutOfMemory.
 *
 * Thread safety: may be called concurrently from several threads.
 */
GCOMP_EXPORT GCOMP_NODISCARD gcompStatus_t gcompPlanCreate(gcompPlan_t* plan, const gcompCodecConfig_t* config,
                                                           const int64_t* segment_elems, int num_segments);

/**
 * @brief Destroys a plan. NULL is a no-op that returns gcompSuccess. Fails only for a handle that
 * is not a plan (gcompErrorInvalidArgument); the status may be ignored.
 * @param[in] plan plan to destroy; must not be in use by another thread.
 */
GCOMP_EXPORT gcompStatus_t gcompPlanDestroy(gcompPlan_t plan);

/**
 * @brief Message of the last failed call on @p plan. Never NULL; "" when none failed, or when
 * @p plan is NULL. The pointer stays valid until the next failing call on @p plan or its
 * destruction. When several threads share a plan, use the thread-local gcompGetLastError().
 */
GCOMP_EXPORT const char* gcompPlanGetLastError(gcompPlan_t plan);

/**
 * @brief Total number of elements of the plan's layout (sum of the segment sizes).
 * @param[in]  plan      the plan.
 * @param[out] num_elems host pointer; receives the element count.
 */
GCOMP_EXPORT GCOMP_NODISCARD gcompStatus_t gcompPlanNumElems(gcompPlan_t plan, int64_t* num_elems);

/**
 * @brief Exact size in bytes of one raw payload of this plan (no frame header). Known before any
 * data exists; gcompEncode() writes exactly this many bytes. For a variable-length codec (sdither,
 * topk with index=rice) it is the worst case: the message, then zero padding; only the first
 * gcompPayloadUsedBytes() bytes need to travel or be stored (docs/wire-format.md §6).
 * @param[in]  plan          the plan.
 * @param[out] payload_bytes host pointer; receives the size.
 */
GCOMP_EXPORT GCOMP_NODISCARD gcompStatus_t gcompPlanEncodedBytes(gcompPlan_t plan, size_t* payload_bytes);

/**
 * @brief Bytes of a raw payload that carry its message: gcompPlanEncodedBytes() for fixed-size
 * codecs; for sdither and topk with index=rice, the size its length field gives (the rest is zero
 * padding). A payload of exactly that many bytes (a short payload) decodes like the full one.
 * @param[in]  plan          the plan.
 * @param[in]  h_payload     host buffer of @p payload_bytes bytes: a full payload, or a short one
 *                           of at least the bytes through its length field.
 * @param[in]  payload_bytes size of @p h_payload.
 * @param[out] used_bytes    host pointer; receives the used size (it may exceed @p payload_bytes
 *                           when the payload is cut or its length field lies; gcompDecode() then
 *                           rejects it).
 * @return gcompSuccess; gcompErrorInvalidArgument (NULL); gcompErrorCorruptPayload (the payload
 *         ends before its length field, or the length field is above the worst case).
 */
GCOMP_EXPORT GCOMP_NODISCARD gcompStatus_t gcompPayloadUsedBytes(gcompPlan_t plan, const void* h_payload,
                                                                 size_t payload_bytes, size_t* used_bytes);

/**
 * @brief Information bits of one message by the codec's formula. `8 * payload_bytes` is this
 * rounded up to whole 32-bit words (bit planes pad the last group of 32 elements).
 * @param[in]  plan the plan.
 * @param[out] bits host pointer; receives the number of bits.
 */
GCOMP_EXPORT GCOMP_NODISCARD gcompStatus_t gcompPlanEncodedBits(gcompPlan_t plan, double* bits);

/**
 * @brief The codec's declared worst-case error bound for this layout.
 * @param[in]  plan  the plan.
 * @param[out] kind  host pointer; receives the kind of guarantee.
 * @param[out] omega host pointer; receives omega (unbiased codecs), else 0.
 * @param[out] delta host pointer; receives delta (contractive codecs), else 0.
 */
GCOMP_EXPORT GCOMP_NODISCARD gcompStatus_t gcompPlanGuarantee(gcompPlan_t plan, gcompGuaranteeKind_t* kind,
                                                              double* omega, double* delta);

/**
 * @brief Host call: encodes one vector into a raw payload, on the calling thread.
 *
 * Determinism: the payload is a pure function of (codec spec, layout, seed, @p rank, @p step,
 * @p h_x); it equals the C++ gcomp::Codec::encode with RngKey{seed, rank, step, 0} byte for byte,
 * and the CUDA kernels produce the same bytes.
 *
 * @param[in]  plan          the plan.
 * @param[in]  h_x           host array of num_elems floats (the plan's layout, segments back to
 *                           back). NULL allowed only when num_elems is 0.
 * @param[in]  rank          rank of the encoding worker (part of the random stream).
 * @param[in]  step          step number (part of the random stream).
 * @param[out] h_payload     host buffer of @p payload_bytes bytes; receives the raw payload in its
 *                           first gcompPlanEncodedBytes() bytes. Must not overlap @p h_x.
 * @param[in]  payload_bytes size of @p h_payload, >= gcompPlanEncodedBytes().
 * @return gcompSuccess; gcompErrorInvalidArgument (NULL or overlapping buffers);
 *         gcompErrorWorkspaceTooSmall (@p payload_bytes too small); gcompErrorNonFinite (NaN or
 *         Inf in @p h_x; the payload is untouched).
 *
 * Thread safety: a plan is immutable; several threads may encode and decode with the same plan.
 */
GCOMP_EXPORT GCOMP_NODISCARD gcompStatus_t gcompEncode(gcompPlan_t plan, const float* h_x, uint32_t rank, uint32_t step,
                                                       void* h_payload, size_t payload_bytes);

/**
 * @brief Host call: decodes a raw payload, h_out = decode(payload), on the calling thread.
 *
 * The payload is validated first (size, codec-specific checks); on any error @p h_out is untouched.
 * @param[in]  plan          the plan the payload was encoded with (same spec, layout and seed).
 * @param[in]  h_payload     host buffer of @p payload_bytes bytes.
 * @param[in]  payload_bytes gcompPlanEncodedBytes(), or for a variable-length codec exactly the
 *                           payload's gcompPayloadUsedBytes() (otherwise gcompErrorCorruptPayload).
 * @param[in]  rank          rank the payload was encoded by (random-k regenerates its indices).
 * @param[in]  step          step the payload was encoded at.
 * @param[out] h_out         host array of num_elems floats. Must not overlap @p h_payload.
 * @return gcompSuccess; gcompErrorInvalidArgument; gcompErrorCorruptPayload naming the problem.
 *
 * Determinism: bitwise reproducible. Thread safety: as gcompEncode().
 */
GCOMP_EXPORT GCOMP_NODISCARD gcompStatus_t gcompDecode(gcompPlan_t plan, const void* h_payload, size_t payload_bytes,
                                                       uint32_t rank, uint32_t step, float* h_out);

/**
 * @brief Host call: h_out[i] = h_out[i] + weight * decode(payload)[i], on the calling thread.
 *
 * Same contract as gcompDecode(); summing the payloads of ranks 0..P-1 in rank order gives a
 * bitwise reproducible reduction. On any error @p h_out is untouched.
 * @param[in]     weight weight of this payload, e.g. 1/P for a mean.
 * @param[in,out] h_out  host array of num_elems floats. Must not overlap @p h_payload.
 */
GCOMP_EXPORT GCOMP_NODISCARD gcompStatus_t gcompDecodeAccumulate(gcompPlan_t plan, const void* h_payload,
                                                                 size_t payload_bytes, uint32_t rank, uint32_t step,
                                                                 float weight, float* h_out);

/**
 * @brief Exact size in bytes of a framed payload of this plan (wire-format v1 header + raw payload,
 * docs/wire-format.md). A frame validates on its own; use it for files and messages.
 * @param[in]  plan         the plan.
 * @param[out] framed_bytes host pointer; receives the size.
 */
GCOMP_EXPORT GCOMP_NODISCARD gcompStatus_t gcompPlanFramedBytes(gcompPlan_t plan, size_t* framed_bytes);

/**
 * @brief Host call: writes the self-describing frame of a raw payload (header with codec, layout
 * digest, seed, @p rank, @p step and checksums, then the payload).
 * @param[in]  plan          the plan the payload was encoded with.
 * @param[in]  h_payload     host buffer of @p payload_bytes bytes: gcompPlanEncodedBytes(), or for a
 *                           variable-length codec its gcompPayloadUsedBytes() (a frame with a short
 *                           body, docs/wire-format.md §6; gcompPlanFramedBytes() is then an upper
 *                           bound of the frame size).
 * @param[in]  payload_bytes size of @p h_payload.
 * @param[in]  rank          rank the payload was encoded by.
 * @param[in]  step          step the payload was encoded at.
 * @param[out] h_framed      host buffer of @p framed_bytes bytes; must not overlap @p h_payload.
 * @param[in]  framed_bytes  size of @p h_framed, >= gcompPlanFramedBytes() (else
 *                           gcompErrorWorkspaceTooSmall).
 */
GCOMP_EXPORT GCOMP_NODISCARD gcompStatus_t gcompFramePayload(gcompPlan_t plan, const void* h_payload,
                                                             size_t payload_bytes, uint32_t rank, uint32_t step,
                                                             void* h_framed, size_t framed_bytes);

/**
 * @brief Host call: validates a framed payload against the plan and locates its raw payload.
 *
 * Checks magic, version, checksums, sizes (no truncation, no trailing bytes) and the codec's own
 * validation (gcompErrorCorruptPayload), then that the frame's codec spec, layout and seed are the
 * plan's (gcompErrorMismatch). The raw payload is then the `framed_bytes - *body_offset` bytes at
 * `(const char*)h_framed + *body_offset` (gcompPlanEncodedBytes() bytes, or fewer for the short
 * body of a variable-length codec), to be decoded with gcompDecode(plan, ..., *rank, *step, ...).
 * @param[in]  plan         the plan.
 * @param[in]  h_framed     host buffer of @p framed_bytes bytes.
 * @param[in]  framed_bytes size of the frame.
 * @param[out] rank         host pointer; receives the encoding rank written in the header.
 * @param[out] step         host pointer; receives the step written in the header.
 * @param[out] body_offset  host pointer; receives the offset of the raw payload in @p h_framed.
 */
GCOMP_EXPORT GCOMP_NODISCARD gcompStatus_t gcompParseFrame(gcompPlan_t plan, const void* h_framed, size_t framed_bytes,
                                                           uint32_t* rank, uint32_t* step, size_t* body_offset);

/* ---------------------------------------------------------------------------------------------- */
/* Communicators                                                                                    */

/** Opaque communicator: one rank of a group (local threads or MPI processes). */
typedef struct gcompComm* gcompComm_t;

/**
 * @brief Creates @p num_ranks connected in-process communicators; comms_out[r] has rank r.
 *
 * Each communicator is meant to be driven by its own thread (collectives block until every rank
 * has entered them). Destroying one marks that rank as exited: a peer waiting for it in a
 * collective then fails at once instead of timing out.
 * @param[in]  num_ranks  number of ranks, >= 1.
 * @param[in]  timeout_ms collective timeout in milliseconds; 0: the GCOMP_COMM_TIMEOUT_MS
 *                        environment variable when set, else 300000. Negative: invalid.
 * @param[out] comms_out  host array of @p num_ranks handles; written only on success.
 */
GCOMP_EXPORT GCOMP_NODISCARD gcompStatus_t gcompCommCreateLocalGroup(int num_ranks, int64_t timeout_ms,
                                                                     gcompComm_t* comms_out);

/**
 * @brief Creates this process's communicator over MPI_COMM_WORLD (a duplicate of it). Collective
 * over all MPI processes. Initializes MPI (MPI_THREAD_SERIALIZED) if the application has not.
 * @param[in]  timeout_ms collective timeout in milliseconds; 0: environment or default as above.
 * @param[out] comm       host pointer; receives the handle on success.
 * @return gcompSuccess; gcompErrorNotSupported when the library was built without MPI;
 *         gcompErrorMpi when an MPI call fails.
 */
GCOMP_EXPORT GCOMP_NODISCARD gcompStatus_t gcompCommCreateMpi(int64_t timeout_ms, gcompComm_t* comm);

/** @brief This rank's index in 0..size-1. @param[out] rank host pointer. */
GCOMP_EXPORT GCOMP_NODISCARD gcompStatus_t gcompCommRank(gcompComm_t comm, int* rank);

/** @brief Number of ranks of the communicator. @param[out] num_ranks host pointer. */
GCOMP_EXPORT GCOMP_NODISCARD gcompStatus_t gcompCommSize(gcompComm_t comm, int* num_ranks);

/**
 * @brief Aborts the communicator: collectives waiting now and every later call on it (and, for a
 * local group, on every rank of the group) fail with gcompErrorTimeout carrying @p reason.
 * Use it when one rank hits an error that its peers cannot see, so that they stop waiting.
 * Idempotent. Local groups: may be called from any thread; MPI: from the thread that drives
 * @p comm.
 * @param[in] comm   the communicator.
 * @param[in] reason host string, copied; NULL means "aborted by the application".
 */
GCOMP_EXPORT GCOMP_NODISCARD gcompStatus_t gcompCommAbort(gcompComm_t comm, const char* reason);

/**
 * @brief Releases this rank's communicator handle. NULL is a no-op. Sessions created on the
 * communicator keep it alive, so it may be destroyed before them; the rank counts as exited (see
 * gcompCommCreateLocalGroup) when the handle and all its sessions are gone.
 */
GCOMP_EXPORT gcompStatus_t gcompCommDestroy(gcompComm_t comm);

/* ---------------------------------------------------------------------------------------------- */
/* Sessions                                                                                         */

/** Opaque session: one rank's side of a compressed distributed algorithm. */
typedef struct gcompSession* gcompSession_t;

/** What a step does with NaN/Inf in any rank's gradient. */
typedef enum {
  gcompNonFiniteError = 0, /**< every rank fails with gcompErrorNonFinite; state untouched */
  gcompNonFiniteSkip = 1,  /**< the step is a no-op on every rank: update = 0, state untouched */
  gcompNonFiniteZero = 2   /**< non-finite entries are replaced by 0 and the step runs */
} gcompNonFinitePolicy_t;

/** Where the server role of two-way algorithms (dist-ef-sgdm, doublesqueeze) runs. */
typedef enum {
  gcompServerReplicated = 0, /**< every rank runs the whole-vector server step */
  gcompServerSharded = 1     /**< rank r owns element shard r: alltoall up, allgather down */
} gcompServerMode_t;

/** Proximal regularizer of DIANA, applied by gcompSessionApply(). */
typedef enum { gcompProxNone = 0, gcompProxL1 = 1, gcompProxL2 = 2 } gcompProx_t;

/** Error-compensation matrix of hessian-ec: A = 0, I, I - lr*H, or I - lr*diag(H). */
typedef enum {
  gcompCompensationNone = 0,
  gcompCompensationClassical = 1,
  gcompCompensationHessian = 2, /**< needs hessian_product */
  gcompCompensationDiagonal = 3 /**< needs hessian_diagonal */
} gcompCompensation_t;

/**
 * Hessian-vector product callback of hessian-ec: h_out = H h_v at the current point. Called by
 * gcompSessionStep() on the calling thread. h_v and h_out are host arrays of num_elems doubles
 * that do not overlap. Return gcompSuccess, or a non-zero status that the step then returns
 * (the step has not communicated yet; the peers' collective fails unless the application calls
 * gcompCommAbort() or retries).
 */
typedef gcompStatus_t (*gcompHessianProductFn_t)(const double* h_v, double* h_out, int64_t num_elems, void* user_data);
/** Diagonal-Hessian callback of hessian-ec: h_out = diag(H) at the current point. As above. */
typedef gcompStatus_t (*gcompHessianDiagonalFn_t)(double* h_out, int64_t num_elems, void* user_data);

/**
 * Where a session keeps its state and runs its steps (docs/algorithms.md "Backends"). Part of the
 * configuration every rank must agree on, and of the checkpoint digest.
 */
typedef enum {
  gcompBackendCpu = 0,     /**< double state on the host (default; the reference backend) */
  gcompBackendHostF32 = 1, /**< fp32 state on the host: the CPU twin of gcompBackendCuda, bit for bit */
  gcompBackendCuda = 2     /**< fp32 state in device memory; gcompSessionStepDevice() on a stream */
} gcompBackend_t;

/**
 * How the per-(step, worker) delays of the bounded-delay mode are chosen (spec/ALGORITHMS.md §7.1;
 * docs/algorithms.md "Bounded delay"): worker i consumes at step k the gradient it was given at
 * step max(0, k - tau_k^i), 0 <= tau_k^i <= delay. Same order as gcomp::DelayMode.
 */
typedef enum {
  gcompDelayFixed = 0, /**< tau_k^i = delay (default) */
  gcompDelayTable = 1, /**< tau_k^i = delay_table[(k mod R) * P + i], R = delay_table_len / P rows */
  gcompDelayRandom = 2 /**< tau_k^i uniform in {0..delay}, drawn from (seed, i, k) */
} gcompDelayMode_t;

/** Element type of the device gradient of gcompSessionStepDevice(). */
typedef enum {
  gcompGradFloat32 = 0,  /**< IEEE binary32 */
  gcompGradBFloat16 = 1, /**< bfloat16 (raw 16-bit patterns), widened exactly to fp32 */
  gcompGradFloat16 = 2   /**< IEEE binary16 (raw 16-bit patterns), widened exactly to fp32 */
} gcompGradType_t;

/** Value of gcompSessionConfig_t::magic. */
#define GCOMP_SESSION_CONFIG_MAGIC 0x67635353u /* "SScg" */

/**
 * Configuration of a session (version 1). Initialise with GCOMP_SESSION_CONFIG_INITIALIZER; the
 * defaults equal those of the C++ gcomp::SessionConfig. Every rank must pass an equal
 * configuration (checked at creation). Strings are copied by gcompSessionCreate.
 */
typedef struct gcompSessionConfig_v1 {
  size_t size;                               /**< sizeof(gcompSessionConfig_t), set by the initializer */
  uint32_t magic;                            /**< GCOMP_SESSION_CONFIG_MAGIC, set by the initializer */
  uint32_t version;                          /**< GCOMP_VERSION_CODE of the caller's header */
  const char* algorithm;                     /**< "gd" (default), "compressed-gd", "signsgd-mv", "ef-sgd",
                                                  "diana", "dist-ef-sgdm", "doublesqueeze", "hessian-ec" */
  const char* codec_spec;                    /**< uplink codec spec; default "identity" */
  const char* server_codec_spec;             /**< downlink codec spec (two-way algorithms); default "identity" */
  double lr;                                 /**< step size gamma; default 0.1 */
  double alpha;                              /**< DIANA shift step; < 0 (default -1): 1/(omega+1) */
  double momentum;                           /**< beta / mu in [0, 1); default 0. signsgd-mv with momentum is
                                                  Signum; hessian-ec rejects momentum > 0 */
  int32_t nesterov;                          /**< ef-sgd, dist-ef-sgdm momentum form; default 1 */
  int32_t delay;                             /**< the delay bound tau (gcompDelayFixed: every gradient is
                                                  consumed tau steps late); default 0 */
  uint64_t seed;                             /**< seed of every codec's random bits; default 0 */
  gcompNonFinitePolicy_t nonfinite;          /**< default gcompNonFiniteError */
  gcompServerMode_t server;                  /**< default gcompServerReplicated */
  gcompProx_t prox;                          /**< default gcompProxNone */
  double prox_lambda;                        /**< regularization weight; default 0 */
  int32_t tie_to_zero;                       /**< signsgd-mv: a tied vote gives 0 (else +1); default 1 */
  int32_t shared_scale;                      /**< compressed-gd + terngrad: max scale over ranks; default 1 */
  gcompCompensation_t compensation;          /**< hessian-ec; default gcompCompensationHessian */
  gcompHessianProductFn_t hessian_product;   /**< hessian-ec with Hessian compensation; default NULL */
  gcompHessianDiagonalFn_t hessian_diagonal; /**< hessian-ec with Diagonal compensation; default NULL */
  void* hessian_user_data;                   /**< passed to the callbacks; default NULL */
  /* Appended in 0.1 (ABI append-only): a config whose `size` ends before this field (built with
     an older header) is accepted and gets the default. */
  gcompBackend_t backend; /**< default gcompBackendCpu */
  /* Appended in 0.2 (ABI append-only): a config whose `size` ends before delay_mode (built with an
     older header) is accepted and gets the defaults. */
  gcompDelayMode_t delay_mode; /**< default gcompDelayFixed */
  const int32_t* delay_table;  /**< gcompDelayTable: rows of one delay per rank, each in
                                    [0, delay]; copied by gcompSessionCreate; default NULL */
  int64_t delay_table_len;     /**< entries of delay_table (a multiple of the world size); default 0 */
} gcompSessionConfig_t;

/** Default session config (plain averaging "gd", identity codec), as gcomp::SessionConfig{}. */
#define GCOMP_SESSION_CONFIG_INITIALIZER                                                                             \
  {                                                                                                                  \
    sizeof(gcompSessionConfig_t), GCOMP_SESSION_CONFIG_MAGIC, GCOMP_VERSION_CODE, "gd", "identity", "identity", 0.1, \
        -1.0, 0.0, 1, 0, 0u, gcompNonFiniteError, gcompServerReplicated, gcompProxNone, 0.0, 1, 1,                   \
        gcompCompensationHessian, NULL, NULL, NULL, gcompBackendCpu, gcompDelayFixed, NULL, 0                        \
  }

/** What one step did. Set `size` (GCOMP_STEP_STATS_INITIALIZER) before passing it to a step. */
typedef struct gcompStepStats_v1 {
  size_t size;                  /**< sizeof(gcompStepStats_t), set by the initializer */
  uint64_t step;                /**< the step counter after this step */
  uint64_t bytes_up;            /**< compressed bytes this rank sent for its own message */
  uint64_t bytes_down;          /**< compressed bytes of the server message(s) this rank received */
  uint64_t bytes_received;      /**< all bytes the collectives delivered to this rank */
  double bits_per_element_up;   /**< 8 * bytes_up / num_elems */
  double bits_per_element_down; /**< 8 * bytes_down / num_elems */
  int32_t skipped;              /**< 1 when gcompNonFiniteSkip dropped the step */
} gcompStepStats_t;

/** Zeroed step statistics with `size` set. */
#define GCOMP_STEP_STATS_INITIALIZER \
  { sizeof(gcompStepStats_t), 0u, 0u, 0u, 0u, 0.0, 0.0, 0 }

/**
 * @brief Creates this rank's session. Collective: every rank of @p comm calls it with an equal
 * configuration and layout; otherwise every rank fails with gcompErrorMismatch and the same message.
 *
 * All buffers and state are allocated here; steps do not allocate, except that the first step of
 * a kind that converts between the caller's element type and the state's (e.g. gcompSessionStep on
 * a gcompBackendHostF32 session, gcompSessionStepF32 on gcompBackendCpu, the 16-bit steps) sizes
 * the session's conversion buffers once.
 * @param[out] session       host pointer; receives the session on success.
 * @param[in]  comm          communicator of this rank; the session keeps it alive.
 * @param[in]  config        host pointer to a config initialised with GCOMP_SESSION_CONFIG_INITIALIZER.
 * @param[in]  segment_elems host array of @p num_segments segment sizes (>= 0 each). Copied.
 * @param[in]  num_segments  number of segments, >= 1.
 * @return gcompSuccess; gcompErrorInvalidArgument (NULL, bad config, unknown algorithm or codec,
 *         hessian-ec without its callback); gcompErrorMismatch; gcompErrorTimeout; gcompErrorMpi.
 *
 * Thread safety: each rank's call runs on its own thread (local groups: one thread per rank).
 */
GCOMP_EXPORT GCOMP_NODISCARD gcompStatus_t gcompSessionCreate(gcompSession_t* session, gcompComm_t comm,
                                                              const gcompSessionConfig_t* config,
                                                              const int64_t* segment_elems, int num_segments);

/** @brief Destroys a session (not collective). NULL is a no-op. */
GCOMP_EXPORT gcompStatus_t gcompSessionDestroy(gcompSession_t session);

/**
 * @brief Message of the last failed call on @p session. Never NULL; "" when none failed or when
 * @p session is NULL. Valid until the next failing call on @p session or its destruction.
 */
GCOMP_EXPORT const char* gcompSessionGetLastError(gcompSession_t session);

/** @brief Total elements of the session's layout. @param[out] num_elems host pointer. */
GCOMP_EXPORT GCOMP_NODISCARD gcompStatus_t gcompSessionNumElems(gcompSession_t session, int64_t* num_elems);

/** @brief Number of completed (not skipped) steps. @param[out] step_count host pointer. */
GCOMP_EXPORT GCOMP_NODISCARD gcompStatus_t gcompSessionStepCount(gcompSession_t session, uint64_t* step_count);

/**
 * @brief One round of the algorithm: reads this rank's gradient, writes the update u that every
 * rank applies as x <- x - u. Collective: every rank calls it once per step.
 *
 * Determinism: every rank obtains a bitwise identical update, independent of timing; a run is
 * bitwise reproducible, and equal to the C++ gcomp::Session::step.
 * Aliasing: @p h_grad and @p h_update may be the same array or overlap in any way (the update is
 * written after the gradient has been consumed).
 * @param[in]  session  the session.
 * @param[in]  h_grad   host array of num_elems doubles.
 * @param[out] h_update host array of num_elems doubles; untouched on failure.
 * @param[out] stats    NULL, or a host pointer to a gcompStepStats_t whose `size` is set
 *                      (GCOMP_STEP_STATS_INITIALIZER); written on success.
 * @return gcompSuccess; gcompErrorInvalidArgument; gcompErrorNonFinite (policy error: state
 *         untouched on every rank); gcompErrorTimeout (a peer failed or stalled: the communicator
 *         is aborted and the session state is undefined); gcompErrorMpi.
 *
 * Synchronization: blocks until the step's collectives have completed. Thread safety: one thread
 * at a time per session.
 */
GCOMP_EXPORT GCOMP_NODISCARD gcompStatus_t gcompSessionStep(gcompSession_t session, const double* h_grad,
                                                            double* h_update, gcompStepStats_t* stats);

/**
 * @brief gcompSessionStep() with fp32 buffers. On gcompBackendHostF32 the buffers are used as they
 * are (no conversion); on gcompBackendCpu it equals converting the gradient to double, stepping,
 * and rounding the update to float. Same contract otherwise (the update is written only on
 * success and may overlap the gradient in any way).
 */
GCOMP_EXPORT GCOMP_NODISCARD gcompStatus_t gcompSessionStepF32(gcompSession_t session, const float* h_grad,
                                                               float* h_update, gcompStepStats_t* stats);

/**
 * @brief gcompSessionStep() with bfloat16 gradients in host memory. @p h_grad holds the raw bit
 * patterns (bfloat16 is the upper half of an IEEE binary32: sign, 8 exponent bits, 7 mantissa
 * bits), which are widened exactly; the state stays the backend's (double on the CPU backend).
 * The update is therefore bit for bit the update of gcompSessionStep() on the widened gradient
 * (every bfloat16 value is exactly representable as a float and a double). NaN and Inf patterns
 * are non-finite gradients (the session's policy applies).
 *
 * @param[in]  session  the session.
 * @param[in]  h_grad   host array of num_elems uint16_t: bfloat16 bit patterns.
 * @param[out] h_update host array of num_elems doubles; untouched on failure. May overlap
 *                      @p h_grad in any way (the gradient is widened before anything is written).
 * @param[out] stats    NULL, or as in gcompSessionStep().
 * @return as gcompSessionStep(): gcompSuccess; gcompErrorInvalidArgument (NULL session, grad or
 *         update with num_elems > 0, stats without its size); gcompErrorNonFinite;
 *         gcompErrorTimeout; gcompErrorMpi; gcompErrorOutOfMemory.
 *
 * Collective, synchronous, one thread at a time per session, like gcompSessionStep(). Converts
 * through a buffer of the session (sized at its first 16-bit step).
 */
GCOMP_EXPORT GCOMP_NODISCARD gcompStatus_t gcompSessionStepBF16(gcompSession_t session, const uint16_t* h_grad,
                                                                double* h_update, gcompStepStats_t* stats);

/**
 * @brief gcompSessionStepBF16() for IEEE 754 binary16 (fp16) gradients: @p h_grad holds the raw
 * bit patterns (sign, 5 exponent bits, 10 mantissa bits; subnormals included), widened exactly.
 * The update equals gcompSessionStep() on the widened gradient bit for bit. Same contract and
 * return values as gcompSessionStepBF16().
 * @param[in]  session  the session.
 * @param[in]  h_grad   host array of num_elems uint16_t: fp16 bit patterns.
 * @param[out] h_update host array of num_elems doubles; untouched on failure; may overlap @p h_grad.
 * @param[out] stats    NULL, or as in gcompSessionStep().
 */
GCOMP_EXPORT GCOMP_NODISCARD gcompStatus_t gcompSessionStepF16(gcompSession_t session, const uint16_t* h_grad,
                                                               double* h_update, gcompStepStats_t* stats);

/**
 * @brief gcompSessionStep() followed by x <- prox(x - u) (the proximal step of DIANA when
 * configured). Collective. @p h_grad and @p h_x may overlap in any way. On failure @p h_x is
 * untouched.
 * @param[in]     h_grad host array of num_elems doubles.
 * @param[in,out] h_x    host array of num_elems doubles: the parameters.
 * @param[out]    stats  NULL, or as in gcompSessionStep().
 */
GCOMP_EXPORT GCOMP_NODISCARD gcompStatus_t gcompSessionApply(gcompSession_t session, const double* h_grad, double* h_x,
                                                             gcompStepStats_t* stats);

/**
 * @brief One round on device buffers, for a session with backend gcompBackendCuda: every kernel,
 * copy and (nccl) collective of the step is enqueued on @p stream. Collective: every rank calls it
 * once per step (or gcompSessionStep* on the same step).
 *
 * Memory: @p d_grad and @p d_update are device memory (cudaMalloc or managed), 4-byte aligned
 * (2-byte for 16-bit gradients); they may overlap (the update is copied out last).
 * Synchronization (docs/gpu.md "Session on the GPU"): with a device communicator (nccl) the call
 * reads the peers' 4-byte status words after each exchange (a copy and a stream sync: one exchange
 * per step for the one-way algorithms, two for the two-way rounds; a variable-length codec also
 * reads each message's length field, and each received word on its own), whatever the nonfinite
 * policy (gcompNonFiniteError/Skip agree on those words; with a delay or hessian-ec they read the
 * agreed flag before the step instead: one 8-byte copy and a stream sync); with a host communicator
 * (local, mpi) the payloads are staged through pinned host buffers allocated at creation (a stream
 * sync before each collective, and one at the end of the step to read the codec status). No
 * allocation in any case. hessian-ec with Hessian/Diagonal compensation stages through host memory
 * (sync), and TernGrad scaler sharing does with a host communicator.
 * Determinism: bit-identical to a gcompBackendHostF32 session with the same configuration and seed.
 * @param[in]  session  the session (backend gcompBackendCuda).
 * @param[in]  d_grad   device array of num_elems elements of @p type.
 * @param[in]  type     gcompGradFloat32, gcompGradBFloat16 or gcompGradFloat16.
 * @param[out] d_update device array of num_elems floats; written (on the stream) only on success.
 * @param[out] stats    NULL, or a host gcompStepStats_t with `size` set; written on success.
 * @param[in]  stream   CUDA stream (cudaStream_t); NULL is the legacy default stream.
 * @return gcompSuccess; gcompErrorNotSupported (another backend); gcompErrorInvalidArgument;
 *         gcompErrorNonFinite (policy error: state untouched); gcompErrorCuda; gcompErrorTimeout;
 *         gcompErrorMpi; gcompErrorNccl. On failure the state is restored (on the stream).
 */
GCOMP_EXPORT GCOMP_NODISCARD gcompStatus_t gcompSessionStepDevice(gcompSession_t session, const void* d_grad,
                                                                  gcompGradType_t type, float* d_update,
                                                                  gcompStepStats_t* stats, gcompStream_t stream);

/**
 * @brief Writes this rank's session state (EF memories, shifts, momentum, step counter) to
 * @p path, via a temporary file and rename. Not collective: each rank writes its own file.
 * @param[in] path host string: file path.
 * @return gcompSuccess; gcompErrorInvalidArgument; gcompErrorIo.
 */
GCOMP_EXPORT GCOMP_NODISCARD gcompStatus_t gcompSessionSave(gcompSession_t session, const char* path);

/**
 * @brief Restores state written by gcompSessionSave() of a session with the same configuration,
 * layout, rank and world size; the run then continues bit-identically. Not collective.
 * @param[in] path host string: file path.
 * @return gcompSuccess; gcompErrorIo; gcompErrorCorruptPayload (truncated or corrupted file);
 *         gcompErrorMismatch (another configuration, rank or world). On failure the running state
 *         is untouched.
 */
GCOMP_EXPORT GCOMP_NODISCARD gcompStatus_t gcompSessionLoad(gcompSession_t session, const char* path);

#ifdef __cplusplus
} /* extern "C" */
#endif

#endif /* GCOMP_GCOMP_H */
