# SPDX-License-Identifier: Apache-2.0
"""One rank's bad gradient is every rank's verdict (issue 18 #3): a finite float64 of 1e39 (beyond
float32, the precision of the messages) or float32 values whose block norm overflows, given to one
rank of a 2-rank local group, under every non-finite policy. Before, rank 0 got NON_FINITE from the
codec, rank 1 MISMATCH, and every later step MISMATCH or TIMEOUT."""
import threading

import numpy as np
import pytest

import gcomp

N = 16


def run_group(policy, bad, codec):
    comms = gcomp.local_group(2, timeout_ms=20000)
    results = [[], []]

    def rank(r):
        s = gcomp.Session(comms[r], N, algorithm="compressed-gd", codec=codec, lr=0.1, nonfinite=policy)
        for k in range(5):
            g = np.sin(np.arange(N) * 0.3 + r + k)
            if k == 2 and r == 0:
                g = bad(g)
            try:
                s.step(g)
                results[r].append("skipped" if s.last_stats.skipped else "ok")
            except gcomp.Error as e:
                results[r].append(e.status.name)

    threads = [threading.Thread(target=rank, args=(r,)) for r in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    return results


def beyond_float32(g):
    g = g.copy()
    g[3] = 1e39
    return g


def norm_overflow(g):
    return np.full_like(g, 3e38)


@pytest.mark.parametrize("policy", ["error", "skip", "zero"])
def test_beyond_float32_gets_the_policy_on_every_rank(policy):
    r0, r1 = run_group(policy, beyond_float32, "dither:levels=2,norm=l2")
    want = {"error": "NON_FINITE", "skip": "skipped", "zero": "ok"}[policy]
    assert r0 == r1 == ["ok", "ok", want, "ok", "ok"], (r0, r1)


@pytest.mark.parametrize("policy", ["error", "skip", "zero"])
def test_block_norm_overflow_fails_the_step_on_every_rank(policy):
    r0, r1 = run_group(policy, norm_overflow, "dither:levels=2,norm=l2")
    assert r0 == r1, (r0, r1)
    assert r0[:2] == ["ok", "ok"] and r0[2] not in ("ok", "MISMATCH", "TIMEOUT") and r0[3:] == ["ok", "ok"], r0
