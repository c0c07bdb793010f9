/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The C ABI from a C99 translation unit: gcomp.h compiles as C (with -Wall -Wextra -Wpedantic),
 * the initializers give the documented defaults, bad inputs return the exact status with a
 * last-error text naming the argument and leave outputs untouched, and a codec round trip and a
 * one-rank session work. Prints each failed check; exits with the number of failures (0: pass).
 */
#include <gcomp/gcomp.h>

#include <math.h>
#include <stdio.h>
#include <string.h>

static int failures = 0;

#define EXPECT(cond)                                                           \
  do {                                                                         \
    if (!(cond)) {                                                             \
      fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond); \
      ++failures;                                                              \
    }                                                                          \
  } while (0)

/* status == expected, and the thread-local last error mentions `needle`. */
#define EXPECT_STATUS(call, expected, needle)                                                                         \
  do {                                                                                                                \
    gcompStatus_t st_ = (call);                                                                                       \
    if (st_ != (expected) || strstr(gcompGetLastError(), (needle)) == NULL) {                                         \
      fprintf(stderr, "%s:%d: %s returned %d (%s), expected %d; last error \"%s\" should mention \"%s\"\n", __FILE__, \
              __LINE__, #call, (int)st_, gcompGetErrorString(st_), (int)(expected), gcompGetLastError(), (needle));   \
      ++failures;                                                                                                     \
    }                                                                                                                 \
  } while (0)

#define EXPECT_OK(call)                                                                          \
  do {                                                                                           \
    gcompStatus_t st_ = (call);                                                                  \
    if (st_ != gcompSuccess) {                                                                   \
      fprintf(stderr, "%s:%d: %s failed: %s\n", __FILE__, __LINE__, #call, gcompGetLastError()); \
      ++failures;                                                                                \
    }                                                                                            \
  } while (0)

static void test_version_and_strings(void) {
  EXPECT(gcompGetVersion() == GCOMP_VERSION_CODE);
  EXPECT(strcmp(gcompGetErrorString(gcompSuccess), "success") == 0);
  EXPECT(strcmp(gcompGetErrorString(gcompErrorOutOfMemory), "out of memory") == 0);
  EXPECT(strcmp(gcompGetErrorString((gcompStatus_t)12345), "unknown status") == 0);
  EXPECT(gcompGetLastError() != NULL);
}

static void test_initializers(void) {
  gcompCodecConfig_t c = GCOMP_CODEC_CONFIG_INITIALIZER;
  gcompSessionConfig_t s = GCOMP_SESSION_CONFIG_INITIALIZER;
  gcompStepStats_t st = GCOMP_STEP_STATS_INITIALIZER;
  EXPECT(c.size == sizeof(gcompCodecConfig_t) && c.magic == GCOMP_CODEC_CONFIG_MAGIC);
  EXPECT(c.version == GCOMP_VERSION_CODE && strcmp(c.codec_spec, "identity") == 0 && c.seed == 0);
  EXPECT(s.size == sizeof(gcompSessionConfig_t) && s.magic == GCOMP_SESSION_CONFIG_MAGIC);
  EXPECT(strcmp(s.algorithm, "gd") == 0 && strcmp(s.codec_spec, "identity") == 0);
  EXPECT(s.lr == 0.1 && s.alpha == -1.0 && s.momentum == 0.0 && s.nesterov == 1 && s.delay == 0);
  EXPECT(s.nonfinite == gcompNonFiniteError && s.server == gcompServerReplicated && s.prox == gcompProxNone);
  EXPECT(s.compensation == gcompCompensationHessian && s.hessian_product == NULL);
  EXPECT(st.size == sizeof(gcompStepStats_t) && st.step == 0);
}

static void test_plan(void) {
  const int64_t segs[2] = {100, 157};
  float x[257], out[257], sentinel[257];
  unsigned char payload[4096];
  gcompCodecConfig_t cfg = GCOMP_CODEC_CONFIG_INITIALIZER;
  gcompPlan_t plan = NULL;
  size_t bytes = 0;
  int64_t n = 0;
  int i;
  for (i = 0; i < 257; ++i) {
    x[i] = (float)sin(0.37 * i);
    sentinel[i] = -123.0f;
  }

  /* An uninitialised (zeroed) config and a bad magic are rejected; *plan stays as it was. */
  {
    gcompCodecConfig_t zero;
    memset(&zero, 0, sizeof zero);
    EXPECT_STATUS(gcompPlanCreate(&plan, &zero, segs, 2), gcompErrorInvalidArgument, "config->size");
    cfg.magic ^= 1u;
    EXPECT_STATUS(gcompPlanCreate(&plan, &cfg, segs, 2), gcompErrorInvalidArgument, "config->magic");
    cfg.magic ^= 1u;
    EXPECT(plan == NULL);
  }
  EXPECT_STATUS(gcompPlanCreate(NULL, &cfg, segs, 2), gcompErrorInvalidArgument, "plan");
  EXPECT_STATUS(gcompPlanCreate(&plan, &cfg, NULL, 2), gcompErrorInvalidArgument, "segment_elems");
  EXPECT_STATUS(gcompPlanCreate(&plan, &cfg, segs, 0), gcompErrorInvalidArgument, "num_segments");
  cfg.codec_spec = "nosuchcodec";
  EXPECT_STATUS(gcompPlanCreate(&plan, &cfg, segs, 2), gcompErrorInvalidArgument, "nosuchcodec");
  EXPECT(plan == NULL);

  cfg.codec_spec = "dither:levels=4,norm=linf,block=64";
  cfg.seed = 5;
  EXPECT_OK(gcompPlanCreate(&plan, &cfg, segs, 2));
  EXPECT(plan != NULL);
  if (plan == NULL) return;
  EXPECT_OK(gcompPlanNumElems(plan, &n));
  EXPECT(n == 257);
  EXPECT_OK(gcompPlanEncodedBytes(plan, &bytes));
  EXPECT(bytes > 0 && bytes <= sizeof payload);

  EXPECT_STATUS(gcompEncode(plan, NULL, 0, 0, payload, bytes), gcompErrorInvalidArgument, "h_x");
  EXPECT_STATUS(gcompEncode(plan, x, 0, 0, payload, bytes - 1), gcompErrorWorkspaceTooSmall, "payload_bytes");
  EXPECT_OK(gcompEncode(plan, x, 3, 9, payload, bytes));
  memcpy(out, sentinel, sizeof out);
  EXPECT_STATUS(gcompDecode(plan, payload, bytes + 1, 3, 9, out), gcompErrorCorruptPayload, "gcompDecode");
  EXPECT_STATUS(gcompDecode(plan, payload, bytes, 3, 9, NULL), gcompErrorInvalidArgument, "h_out");
  EXPECT(memcmp(out, sentinel, sizeof out) == 0);
  EXPECT(strstr(gcompPlanGetLastError(plan), "h_out") != NULL);
  EXPECT_OK(gcompDecode(plan, payload, bytes, 3, 9, out));
  {
    double err = 0.0, norm = 0.0, bits = 0.0, omega = 0.0, delta = 1.0;
    gcompGuaranteeKind_t kind = gcompGuaranteeNone;
    for (i = 0; i < 257; ++i) {
      err += ((double)out[i] - x[i]) * ((double)out[i] - x[i]);
      norm += (double)x[i] * x[i];
    }
    EXPECT_OK(gcompPlanGuarantee(plan, &kind, &omega, &delta));
    EXPECT(kind == gcompGuaranteeUnbiased && omega > 0.0 && delta == 0.0);
    EXPECT(err > 0.0 && err < 4.0 * omega * norm);
    EXPECT_OK(gcompPlanEncodedBits(plan, &bits));
    EXPECT(bits > 0.0 && bits <= 8.0 * (double)bytes);
  }
  EXPECT(gcompPlanDestroy(plan) == gcompSuccess);
  EXPECT(gcompPlanDestroy(NULL) == gcompSuccess);
  EXPECT(strcmp(gcompPlanGetLastError(NULL), "") == 0);
}

static void test_session(void) {
  enum { kN = 100 };
  gcompComm_t comm = NULL;
  gcompSession_t session = NULL;
  gcompSessionConfig_t cfg = GCOMP_SESSION_CONFIG_INITIALIZER;
  gcompStepStats_t stats = GCOMP_STEP_STATS_INITIALIZER;
  const int64_t seg = kN;
  double grad[kN], update[kN];
  int rank = -1, size = -1, i;
  uint64_t steps = 0;

  EXPECT_STATUS(gcompCommCreateLocalGroup(0, 0, &comm), gcompErrorInvalidArgument, "num_ranks");
  EXPECT_STATUS(gcompCommCreateLocalGroup(1, -5, &comm), gcompErrorInvalidArgument, "timeout_ms");
  EXPECT(comm == NULL);
  EXPECT_OK(gcompCommCreateLocalGroup(1, 0, &comm));
  if (comm == NULL) return;
  EXPECT_OK(gcompCommRank(comm, &rank));
  EXPECT_OK(gcompCommSize(comm, &size));
  EXPECT(rank == 0 && size == 1);

  cfg.algorithm = "no-such-algorithm";
  EXPECT_STATUS(gcompSessionCreate(&session, comm, &cfg, &seg, 1), gcompErrorInvalidArgument, "diana");
  cfg.algorithm = "diana";
  cfg.codec_spec = "dither:levels=2,norm=l2";
  cfg.server = (gcompServerMode_t)7;
  EXPECT_STATUS(gcompSessionCreate(&session, comm, &cfg, &seg, 1), gcompErrorInvalidArgument, "config->server");
  cfg.server = gcompServerReplicated;
  cfg.compensation = (gcompCompensation_t)4;
  EXPECT_STATUS(gcompSessionCreate(&session, comm, &cfg, &seg, 1), gcompErrorInvalidArgument, "config->compensation");
  cfg.compensation = gcompCompensationHessian;
  EXPECT(session == NULL);
  EXPECT_OK(gcompSessionCreate(&session, comm, &cfg, &seg, 1));
  if (session == NULL) return;

  for (i = 0; i < kN; ++i) {
    grad[i] = 0.01 * i - 0.3;
    update[i] = 7.0;
  }
  stats.size = 3;
  EXPECT_STATUS(gcompSessionStep(session, grad, update, &stats), gcompErrorInvalidArgument, "stats->size");
  stats.size = sizeof stats;
  EXPECT_STATUS(gcompSessionStep(session, NULL, update, &stats), gcompErrorInvalidArgument, "h_grad");
  grad[3] = NAN;
  EXPECT_STATUS(gcompSessionStep(session, grad, update, &stats), gcompErrorNonFinite, "non-finite");
  EXPECT(strstr(gcompSessionGetLastError(session), "non-finite") != NULL);
  grad[3] = 0.0;
  EXPECT(update[0] == 7.0 && update[kN - 1] == 7.0);
  EXPECT_OK(gcompSessionStep(session, grad, update, &stats));
  EXPECT(stats.step == 1 && stats.bytes_up > 0 && stats.skipped == 0);
  EXPECT_OK(gcompSessionStepCount(session, &steps));
  EXPECT(steps == 1);
  /* 16-bit gradients from C: bfloat16 1.0 is 0x3f80, fp16 1.0 is 0x3c00; a NaN pattern is refused. */
  {
    uint16_t bits[kN];
    for (i = 0; i < kN; ++i) bits[i] = 0x3f80u;
    EXPECT_OK(gcompSessionStepBF16(session, bits, update, &stats));
    for (i = 0; i < kN; ++i) bits[i] = 0x3c00u;
    EXPECT_OK(gcompSessionStepF16(session, bits, update, &stats));
    EXPECT(stats.step == 3);
    bits[5] = 0x7e00u;
    EXPECT_STATUS(gcompSessionStepF16(session, bits, update, &stats), gcompErrorNonFinite, "non-finite");
    EXPECT_STATUS(gcompSessionStepBF16(session, NULL, update, &stats), gcompErrorInvalidArgument, "h_grad");
  }
  EXPECT(gcompSessionDestroy(session) == gcompSuccess);
  EXPECT(gcompCommDestroy(comm) == gcompSuccess);
  EXPECT(gcompSessionDestroy(NULL) == gcompSuccess && gcompCommDestroy(NULL) == gcompSuccess);
}

int main(void) {
  test_version_and_strings();
  test_initializers();
  test_plan();
  test_session();
  if (failures == 0) printf("test_capi_c: all checks passed\n");
  return failures == 0 ? 0 : 1;
}
