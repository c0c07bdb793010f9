# SPDX-License-Identifier: Apache-2.0
"""torch tensors through the NumPy bindings, and the hook state's argument checks (no process group
needed). Skipped without PyTorch."""
import threading

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="PyTorch is not installed (pip install torch; docs/python.md)")

import gcomp  # noqa: E402
import gcomp.ddp as gddp  # noqa: E402


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


def test_bucket_seeds_differ():
    """The DDP hook's Sessions draw independent bits per initial bucket; bucket 0 uses the seed."""
    assert gddp.bucket_seed(7, 0) == 7 and gddp.bucket_seed(7, 1) != gddp.bucket_seed(7, 2)
    assert gddp.bucket_seed(2**64 - 1, 1) == (2**64 - 1 + 0x9E3779B97F4A7C15) % 2**64


def run_pair(fn):
    """fn(comm) on the two ranks of a local group, one thread each; returns the results by rank."""
    comms = gcomp.local_group(2, timeout_ms=60000)
    results, errors = [None, None], [None, None]

    def body(r):
        try:
            results[r] = fn(comms[r])
        except BaseException as exc:  # re-raised below
            errors[r] = exc
            comms[r].abort(f"rank {r} failed: {exc}")

    threads = [threading.Thread(target=body, args=(r,)) for r in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    for e in errors:
        if e is not None:
            raise e
    return results


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_16bit_tensor_steps_equal_steps_on_widened_values(dtype):
    """bf16/fp16 CPU tensors go to Session::step_bf16/step_f16 as they are (no copy): the update
    (float64) equals the float64 step on the exactly widened gradient, bit for bit."""
    segments = [40, 24]

    def fn(comm):
        cfg = dict(algorithm="diana", codec="dither:levels=1,norm=linf,block=16", lr=0.5, seed=3)
        a = gcomp.Session(comm, segments, **cfg)
        b = gcomp.Session(comm, segments, **cfg)
        gen = torch.Generator().manual_seed(10 + comm.rank)
        out = []
        for _ in range(4):
            g = torch.randn(64, generator=gen).to(dtype)
            u16 = a.step(g)
            u64 = b.step(g.double())
            assert u16.dtype == np.float64
            out.append((u16, u64))
        # Raw bit patterns through step_bf16 / step_f16 give the same as the tensor.
        g = torch.randn(64, generator=gen).to(dtype)
        bits = g.view(torch.int16).numpy().view(np.uint16)
        raw = (a.step_bf16 if dtype == torch.bfloat16 else a.step_f16)(bits)
        out.append((raw, b.step(g.double())))
        return out

    for pairs in run_pair(fn):
        for u16, u64 in pairs:
            assert np.array_equal(u16, u64)


def test_tensors_are_used_in_place_and_checked():
    codec = gcomp.Codec("sign:block=16", 64, seed=1)
    x = torch.randn(64, generator=torch.Generator().manual_seed(2))
    out = torch.zeros(codec.num_elems)
    ptr = out.data_ptr()
    assert codec.decode(codec.encode(x), out=out) is out and out.data_ptr() == ptr
    # Non-contiguous and other-dtype tensors are converted by the Python layer...
    y = torch.randn(64, 2, generator=torch.Generator().manual_seed(3))[:, 0]
    assert not y.is_contiguous()
    assert np.array_equal(codec.encode(y), codec.encode(y.contiguous().numpy()))
    assert np.array_equal(codec.encode(y.double()), codec.encode(y.contiguous()))
    # ...and refused with a clear message by the extension itself.
    with pytest.raises(gcomp.Error) as e:
        codec._core.encode(y)
    assert e.value.status == gcomp.Status.INVALID_ARGUMENT and "not contiguous" in e.value.message
    with pytest.raises(gcomp.Error) as e:
        codec._core.encode(y.contiguous().double())
    assert "expected float32" in e.value.message
    with pytest.raises(gcomp.Error) as e:
        codec._core.encode(torch.zeros(63))
    assert "expected 64 elements, got 63" in e.value.message


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_tensors_go_through_host_copies():
    codec = gcomp.Codec("dither:levels=4,norm=linf,block=32", 64, seed=1)
    x = torch.randn(64, device="cuda", generator=torch.Generator(device="cuda").manual_seed(1))
    p = codec.encode(x)
    assert np.array_equal(p, codec.encode(x.cpu()))
    out = torch.zeros(64, device="cuda")
    codec.decode(p, out=out)
    assert torch.equal(out.cpu(), torch.from_numpy(codec.decode(p)))
    with pytest.raises(gcomp.Error) as e:
        codec._core.encode(x)
    assert "cuda tensor is not host memory" in e.value.message
