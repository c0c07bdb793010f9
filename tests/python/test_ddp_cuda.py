# SPDX-License-Identifier: Apache-2.0
"""gcomp.ddp on CUDA buckets (GcompState(backend="cuda")): the errors without a GPU run everywhere;
the one-GPU run (world size 1, DDP with a CUDA model, fp32 and bf16 buckets, state_dict round
trip) skips without a CUDA device and the nccl backend. Skipped without PyTorch."""
import os
import socket

import pytest

if "libasan" in os.environ.get("LD_PRELOAD", ""):
    pytest.skip("torch is not run under AddressSanitizer (tests/python/CMakeLists.txt)", allow_module_level=True)
torch = pytest.importorskip("torch", reason="PyTorch is not installed (pip install torch; docs/python.md)")

import gcomp  # noqa: E402
import gcomp.ddp as gddp  # noqa: E402

HAVE_GPU = torch.cuda.is_available() and gcomp.nccl_unusable() == ""


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.skipif(HAVE_GPU, reason="a CUDA device and the nccl backend are present")
def test_nccl_comm_without_a_device_is_a_clear_error(monkeypatch):
    assert gcomp.nccl_unusable() != ""
    for name, value in (("RANK", "0"), ("WORLD_SIZE", "2"), ("MASTER_ADDR", "127.0.0.1"), ("MASTER_PORT", "1")):
        monkeypatch.setenv(name, value)
    with pytest.raises(gcomp.Error) as e:  # would wait for rank 1 if it got as far as the rendezvous
        gcomp.nccl_comm()
    assert e.value.status == gcomp.Status.NOT_SUPPORTED and "nccl_comm:" in e.value.message


def _train(model, state, steps, dtype, seed=3):
    """`steps` DDP steps of a small regression on cuda:0 with the gcomp hook; returns the
    gradients of the last step (float64 CPU copies)."""
    from torch.nn.parallel import DistributedDataParallel as DDP
    ddp = DDP(model, device_ids=[0], bucket_cap_mb=1)
    if state is not None:
        ddp.register_comm_hook(state, gddp.gcomp_hook)
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
        # compressed-gd + identity with one rank: the hook's estimate is the gradient itself, bit for bit.
        ref = _train(_model(torch.float32), None, 3, torch.float32)
        state = gddp.GcompState(algorithm="compressed-gd", codec="identity", backend="cuda")
        got = _train(_model(torch.float32), state, 3, torch.float32)
        assert all(torch.equal(a, b) for a, b in zip(ref, got))
        assert state.comm is not None and state.comm.size == 1 and state._sessions

        # diana on bf16 buckets: finite gradients; a state_dict round trip continues identically.
        cfg = dict(algorithm="diana", codec="dither:levels=2,norm=linf,block=64", backend="cuda", seed=5)
        state = gddp.GcompState(**cfg)
        model = _model(torch.bfloat16)
        _train(model, state, 4, torch.bfloat16)
        sd = state.state_dict()
        assert sd["config"]["backend"] == "cuda" and sd["sessions"]
        twin = gddp.GcompState(**cfg, comm=state.comm)
        twin.load_state_dict(sd)
        model2 = _model(torch.bfloat16)
        model2.load_state_dict(model.state_dict())
        a = _train(model, state, 2, torch.bfloat16, seed=9)
        b = _train(model2, twin, 2, torch.bfloat16, seed=9)
        assert all(torch.isfinite(g).all() for g in a)
        assert all(torch.equal(x, y) for x, y in zip(a, b))

        # dist-ef-sgdm sharded, lr from the optimizer: runs and stays finite.
        model3 = _model(torch.float32)
        opt = torch.optim.SGD(model3.parameters(), lr=0.01)
        st = gddp.GcompState(algorithm="dist-ef-sgdm", codec="sign:block=64", optimizer=opt, momentum=0.9,
                             backend="cuda")
        g = _train(model3, st, 3, torch.float32)
        assert all(torch.isfinite(x).all() for x in g) and st.metrics()["bytes_sent"] > 0
    finally:
        dist.destroy_process_group()
