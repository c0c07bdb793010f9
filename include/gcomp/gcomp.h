/* SPDX-License-Identifier: Apache-2.0 */
/**
 * @file gcomp.h
 * @brief gcomp C ABI: versions and status codes.
 *
 * This header is plain C and needs no CUDA toolkit. Status values are stable and never renumbered;
 * gaps leave room for new codes in each family.
 */
#ifndef GCOMP_GCOMP_H
#define GCOMP_GCOMP_H

#include <stdint.h>
#include <stddef.h>

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
  gcompErrorCuda = 1000,
  gcompErrorNccl = 1001,
  gcompErrorMpi = 1002,
  gcompErrorInternal = 10000
} gcompStatus_t;

/** @brief Library version as GCOMP_VERSION_CODE of the build that produced the shared object. */
GCOMP_EXPORT int gcompGetVersion(void);

/** @brief Static, human-readable name of a status code. Never NULL. */
GCOMP_EXPORT const char* gcompGetErrorString(gcompStatus_t status);

#ifdef __cplusplus
} /* extern "C" */
#endif

#endif /* GCOMP_GCOMP_H */
