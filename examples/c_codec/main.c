/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The gcomp C ABI from C99: a codec plan (query the payload size, allocate, encode, decode),
 * error handling with gcompGetLastError(), and a one-rank DIANA session minimizing
 * f(x) = 1/2 |x - b|^2. Exits non-zero on any unexpected status.
 */
#include <gcomp/gcomp.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#define CHECK(call)                                                                                           \
  do {                                                                                                        \
    gcompStatus_t check_status_ = (call);                                                                     \
    if (check_status_ != gcompSuccess) {                                                                      \
      fprintf(stderr, "%s failed: %s: %s\n", #call, gcompGetErrorString(check_status_), gcompGetLastError()); \
      return 1;                                                                                               \
    }                                                                                                         \
  } while (0)

/* Deterministic data: a 64-bit LCG mapped to [-1, 1). */
static double next_uniform(uint64_t* state) {
  *state = *state * 6364136223846793005ull + 1442695040888963407ull;
  return (double)(*state >> 11) * (1.0 / 4503599627370496.0) - 1.0;
}

static int codec_demo(void) {
  enum { kSegments = 2 };
  const int64_t segment_elems[kSegments] = {1000, 3000};
  gcompCodecConfig_t config = GCOMP_CODEC_CONFIG_INITIALIZER;
  config.codec_spec = "dither:levels=4,norm=linf,block=256";
  config.seed = 2024;

  gcompPlan_t plan = NULL;
  CHECK(gcompPlanCreate(&plan, &config, segment_elems, kSegments));
  int64_t num_elems = 0;
  size_t payload_bytes = 0;
  double bits = 0.0, omega = 0.0, delta = 0.0;
  gcompGuaranteeKind_t kind = gcompGuaranteeNone;
  CHECK(gcompPlanNumElems(plan, &num_elems));
  CHECK(gcompPlanEncodedBytes(plan, &payload_bytes));
  CHECK(gcompPlanEncodedBits(plan, &bits));
  CHECK(gcompPlanGuarantee(plan, &kind, &omega, &delta));

  float* x = malloc((size_t)num_elems * sizeof(float));
  float* decoded = malloc((size_t)num_elems * sizeof(float));
  void* payload = malloc(payload_bytes);
  if (x == NULL || decoded == NULL || payload == NULL) {
    fprintf(stderr, "out of memory\n");
    return 1;
  }
  uint64_t state = 1;
  for (int64_t i = 0; i < num_elems; ++i) x[i] = (float)next_uniform(&state);

  CHECK(gcompEncode(plan, x, /*rank=*/0, /*step=*/0, payload, payload_bytes));
  CHECK(gcompDecode(plan, payload, payload_bytes, 0, 0, decoded));
  double err = 0.0, norm = 0.0;
  for (int64_t i = 0; i < num_elems; ++i) {
    err += ((double)decoded[i] - x[i]) * ((double)decoded[i] - x[i]);
    norm += (double)x[i] * x[i];
  }
  printf("codec %s: %lld elements, %zu payload bytes, %.3f bits/element\n", config.codec_spec, (long long)num_elems,
         payload_bytes, bits / (double)num_elems);
  printf("relative squared error %.4f (declared omega %.4f, unbiased %d)\n", err / norm, omega,
         kind == gcompGuaranteeUnbiased);

  /* A corrupted size is reported, and the output is left as it was. */
  gcompStatus_t st = gcompDecode(plan, payload, payload_bytes - 1, 0, 0, decoded);
  printf("truncated payload: %s: %s\n", gcompGetErrorString(st), gcompPlanGetLastError(plan));
  if (st != gcompErrorCorruptPayload) return 1;

  free(payload);
  free(decoded);
  free(x);
  CHECK(gcompPlanDestroy(plan));

  /* A bad spec: the message names the bad part and lists the valid values. */
  config.codec_spec = "dither:levels=4,norm=l3";
  st = gcompPlanCreate(&plan, &config, segment_elems, kSegments);
  printf("bad spec: %s: %s\n", gcompGetErrorString(st), gcompGetLastError());
  return st == gcompErrorInvalidArgument ? 0 : 1;
}

static int session_demo(void) {
  enum { kElems = 4000, kSteps = 60 };
  gcompComm_t comm = NULL;
  CHECK(gcompCommCreateLocalGroup(1, 0, &comm));
  gcompSessionConfig_t config = GCOMP_SESSION_CONFIG_INITIALIZER;
  config.algorithm = "diana";
  config.codec_spec = "dither:levels=4,norm=linf,block=256";
  config.lr = 0.5;
  config.seed = 1;
  const int64_t segment_elems[1] = {kElems};
  gcompSession_t session = NULL;
  CHECK(gcompSessionCreate(&session, comm, &config, segment_elems, 1));

  static double b[kElems], x[kElems], grad[kElems];
  uint64_t state = 7;
  for (int i = 0; i < kElems; ++i) {
    b[i] = next_uniform(&state);
    x[i] = 0.0;
  }
  gcompStepStats_t stats = GCOMP_STEP_STATS_INITIALIZER;
  for (int step = 0; step < kSteps; ++step) {
    for (int i = 0; i < kElems; ++i) grad[i] = x[i] - b[i];
    CHECK(gcompSessionApply(session, grad, x, &stats));
  }
  double err = 0.0, norm = 0.0;
  for (int i = 0; i < kElems; ++i) {
    err += (x[i] - b[i]) * (x[i] - b[i]);
    norm += b[i] * b[i];
  }
  printf("session diana: %llu steps, %.3f bits/element up, final relative error %.3e\n", (unsigned long long)stats.step,
         stats.bits_per_element_up, sqrt(err / norm));
  CHECK(gcompSessionDestroy(session));
  CHECK(gcompCommDestroy(comm));
  return 0;
}

int main(void) {
  printf("gcomp library %d, header %d\n", gcompGetVersion(), GCOMP_VERSION_CODE);
  if (gcompGetVersion() != GCOMP_VERSION_CODE) return 1;
  if (codec_demo() != 0) return 1;
  return session_demo();
}
