# SPDX-License-Identifier: Apache-2.0
"""torch tensors through the NumPy bindings, and the hook state's argument checks (no process group
needed). Skipped without PyTorch."""
import threading

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="PyTorch is not installed (pip install torch; docs/python.md)")

import gcomp  # noqa: E402
import gcomp.torch as gtorch  # noqa: E402


def test_codec_accepts_tensors():
    codec = gcomp.Codec("dither:levels=4,norm=linf,block=32", [40, 24], seed=3)
    x = torch.randn(64, generator=torch.Generator().manual_seed(1))
    p = codec.encode(x, rank=1, step=2)
    assert np.array_equal(p, codec.encode(x.numpy(), rank=1, step=2))
    out = torch.zeros(8, 8)
    assert codec.decode(torch.from_numpy(p), rank=1, step=2, out=out) is out
    assert np.array_equal(out.reshape(-1).numpy(), codec.decode(p, rank=1, step=2))
    acc = torch.ones(64, dtype=torch.float64)
    codec.decode_accumulate(p, acc, weight=0.5, rank=1, step=2)
    np.testing.assert_allclose(acc.numpy(), 1.0 + 0.5 * out.reshape(-1).numpy().astype(np.float64), rtol=1e-6)


def test_session_steps_tensors():
    comms = gcomp.local_group(2)
    results = [None, None]

    def body(r):
        s = gcomp.Session(comms[r], [10, 6], algorithm="diana", codec="dither:levels=1,norm=linf", lr=0.5, seed=1)
        g = torch.linspace(-1, 1, 16) * (r + 1)
        u = torch.empty(16)
        s.step(g, u)
        x = torch.zeros(16, dtype=torch.float64)
        s.apply(g.double(), x)
        results[r] = (u, x)

    threads = [threading.Thread(target=body, args=(r,)) for r in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert torch.equal(results[0][0], results[1][0]) and torch.equal(results[0][1], results[1][1])
    assert results[0][0].abs().sum() > 0


def test_hook_state_checks():
    with pytest.raises(gcomp.Error) as e:
        gtorch.HookState(algorithm="signsgd-mv")
    assert e.value.status == gcomp.Status.INVALID_ARGUMENT and "diana" in e.value.message
    state = gtorch.HookState(algorithm="diana", codec="dither:levels=1,norm=linf,block=64", seed=4)
    sd = state.state_dict()
    assert sd["step"] == 0 and sd["params"] == {}
    other = gtorch.HookState(algorithm="ef-sgd", codec="sign", seed=4)
    with pytest.raises(gcomp.Error) as e:
        other.load_state_dict(sd)
    assert e.value.status == gcomp.Status.MISMATCH and "algorithm" in e.value.message
    assert gtorch.bucket_seed(7, 0) == 7 and gtorch.bucket_seed(7, 1) != gtorch.bucket_seed(7, 2)
