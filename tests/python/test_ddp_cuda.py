# SPDX-License-Identifier: Apache-2.0
"""The DDP hook's device path (HookState(backend="cuda")): argument routing and the errors without
a GPU run everywhere; the one-GPU run (world size 1, DDP with a CUDA model, fp32 and bf16 buckets,
state_dict round trip) skips without a CUDA device and the nccl backend. Skipped without PyTorch."""
import os
import socket

import pytest

if "libasan" in os.environ.get("LD_PRELOAD", ""):
    pytest.skip("torch is not run under AddressSanitizer (tests/python/CMakeLists.txt)", allow_module_level=True)
torch = pytest.importorskip("torch", reason="PyTorch is not installed (pip install torch; docs/python.md)")

import gcomp  # noqa: E402
import gcomp.torch as gtorch  # noqa: E402

HAVE_GPU = torch.cuda.is_available() and gcomp.nccl_unusable() == ""


class FakeBucket:
    """What the hook reads from a DDP GradBucket."""

    def __init__(self, buffer, params, index=0):
        self._buffer, self._params, self._index = buffer, params, index

    def buffer(self):
        return self._buffer

    def index(self):
        return self._index

    def parameters(self):
        return self._params


def test_backend_is_checked():
    with pytest.raises(gcomp.Error) as e:
        gtorch.HookState(backend="gpu")
    assert e.value.status == gcomp.Status.INVALID_ARGUMENT and "'gpu' is not one of cpu, cuda" in e.value.message
    with pytest.raises(gcomp.Error) as e:
        gtorch.HookState(backend="cpu", comm=object())
    assert e.value.status == gcomp.Status.INVALID_ARGUMENT and "backend='cuda'" in e.value.message


@pytest.mark.skipif(HAVE_GPU, reason="a CUDA device and the nccl backend are present")
def test_cuda_backend_without_a_device_fails_at_construction():
    with pytest.raises(gcomp.Error) as e:
        gtorch.HookState(backend="cuda")
    assert e.value.status == gcomp.Status.NOT_SUPPORTED
    assert "backend='cuda'" in e.value.message and "backend='cpu'" in e.value.message


@pytest.mark.skipif(HAVE_GPU, reason="a CUDA device and the nccl backend are present")
def test_nccl_comm_without_a_device_is_a_clear_error(monkeypatch):
    assert gcomp.nccl_unusable() != ""
    for name, value in (("RANK", "0"), ("WORLD_SIZE", "2"), ("MASTER_ADDR", "127.0.0.1"), ("MASTER_PORT", "1")):
        monkeypatch.setenv(name, value)
    with pytest.raises(gcomp.Error) as e:  # would wait for rank 1 if it got as far as the rendezvous
        gcomp.nccl_comm()
    assert e.value.status == gcomp.Status.NOT_SUPPORTED and "nccl_comm:" in e.value.message


def test_cuda_state_routes_cpu_buckets_to_a_clear_error():
    state = gtorch.HookState(backend="cpu")
    state.backend = "cuda"  # as a cuda state would be; the check needs no device
    p = torch.nn.Parameter(torch.zeros(4))
    with pytest.raises(gcomp.Error) as e:
        gtorch.hook(state, FakeBucket(torch.zeros(4), [p]))
    assert e.value.status == gcomp.Status.INVALID_ARGUMENT and "backend='cpu'" in e.value.message


def test_state_dicts_do_not_cross_backends():
    cpu = gtorch.HookState(backend="cpu")
    sd = cpu.state_dict()
    assert "backend" not in sd or sd["backend"] == "cpu"
    cuda_sd = dict(sd, backend="cuda", sessions={})
    with pytest.raises(gcomp.Error) as e:
        cpu.load_state_dict(cuda_sd)
    assert e.value.status == gcomp.Status.MISMATCH and "backend" in e.value.message


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _train(model, state, steps, dtype, seed=3):
    """`steps` DDP steps of a small regression on cuda:0 with the gcomp hook; returns the
    gradients of the last step (float64 CPU copies)."""
    from torch.nn.parallel import DistributedDataParallel as DDP
    ddp = DDP(model, device_ids=[0], bucket_cap_mb=1)
    if state is not None:
        ddp.register_comm_hook(state, gtorch.hook)
    gen = torch.Generator(device="cpu").manual_seed(seed)
    grads = None
    for _ in range(steps):
        x = torch.randn(32, 16, generator=gen).to("cuda", dtype)
        y = torch.randn(32, 1, generator=gen).to("cuda", dtype)
        ddp.zero_grad(set_to_none=True)
        loss = ((ddp(x) - y) ** 2).mean()
        loss.backward()
        grads = [p.grad.detach().double().cpu().clone() for p in model.parameters()]
    torch.cuda.synchronize()
    return grads


def _model(dtype):
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.Tanh(), torch.nn.Linear(32, 1)).to("cuda", dtype)


@pytest.mark.skipif(not HAVE_GPU, reason="needs a CUDA device and a gcomp build with the nccl backend")
def test_device_hook_on_one_gpu(monkeypatch):
    import torch.distributed as dist
    port = _free_port()
    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    monkeypatch.setenv("MASTER_PORT", str(port))
    monkeypatch.setenv("GCOMP_NCCL_PORT", str(_free_port()))
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "1")
    torch.cuda.set_device(0)
    dist.init_process_group("nccl", rank=0, world_size=1)
    try:
        # gd + identity with one rank: the hook's estimate is the gradient itself, bit for bit.
        ref = _train(_model(torch.float32), None, 3, torch.float32)
        state = gtorch.HookState(algorithm="gd", codec="identity", backend="cuda")
        got = _train(_model(torch.float32), state, 3, torch.float32)
        assert all(torch.equal(a, b) for a, b in zip(ref, got))
        assert state.comm is not None and state.comm.size == 1 and state.sessions

        # diana on bf16 buckets: finite gradients; a state_dict round trip continues identically.
        state = gtorch.HookState(algorithm="diana", codec="dither:levels=2,norm=linf,block=64", backend="cuda",
                                 seed=5)
        model = _model(torch.bfloat16)
        _train(model, state, 4, torch.bfloat16)
        sd = state.state_dict()
        assert sd["backend"] == "cuda" and sd["sessions"]
        twin = gtorch.HookState(algorithm="diana", codec="dither:levels=2,norm=linf,block=64", backend="cuda",
                                seed=5, comm=state.comm)
        twin.load_state_dict(sd)
        model2 = _model(torch.bfloat16)
        model2.load_state_dict(model.state_dict())
        a = _train(model, state, 2, torch.bfloat16, seed=9)
        b = _train(model2, twin, 2, torch.bfloat16, seed=9)
        assert all(torch.isfinite(g).all() for g in a)
        assert all(torch.equal(x, y) for x, y in zip(a, b))
    finally:
        dist.destroy_process_group()
