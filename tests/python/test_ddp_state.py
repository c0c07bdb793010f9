# SPDX-License-Identifier: Apache-2.0
"""gcomp.ddp.GcompState in one process (a 1-rank gloo group): every bad argument fails in the
constructor with gcomp.Error and its status; __repr__; the hook returns a future completed by the
worker thread; state_dict checks; gcomp.torch is gone with a pointer to gcomp.ddp."""
import os
import socket
import threading
import time

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="PyTorch is not installed: the DDP hook tests need it "
                                            "(pip install torch; docs/python.md)")
dist = pytest.importorskip("torch.distributed")
if not dist.is_available() or not dist.is_gloo_available():
    pytest.skip("this PyTorch build has no gloo backend", allow_module_level=True)

import gcomp  # noqa: E402
import gcomp.ddp as gddp  # noqa: E402
from gcomp import Error, Status  # noqa: E402


@pytest.fixture(scope="module", autouse=True)
def one_rank_group():
    os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=0, world_size=1)
    yield
    dist.destroy_process_group()


def sgd(momentum=0.0, lr=0.1):
    return torch.optim.SGD(torch.nn.Linear(4, 3).parameters(), lr=lr, momentum=momentum)


BAD = [
    ("unknown algorithm", dict(algorithm="adam"), Status.INVALID_ARGUMENT, "not one of"),
    ("missing codec", dict(algorithm="ef-sgd", lr=0.1), Status.INVALID_ARGUMENT, "needs a codec"),
    ("bad codec name", dict(algorithm="compressed-gd", codec="sgn:block=4"), Status.INVALID_ARGUMENT, "sgn"),
    ("bad codec key", dict(algorithm="compressed-gd", codec="sign:blok=4"), Status.INVALID_ARGUMENT, "blok"),
    ("bad server codec", dict(algorithm="dist-ef-sgdm", codec="sign", server_codec="dither:levels=0", lr=0.1),
     Status.INVALID_ARGUMENT, "levels"),
    ("server codec on one-way", dict(algorithm="diana", codec="dither:levels=1", server_codec="sign"),
     Status.INVALID_ARGUMENT, "two-way"),
    ("bad server", dict(algorithm="dist-ef-sgdm", codec="sign", server="central", lr=0.1),
     Status.INVALID_ARGUMENT, "server"),
    ("diana with a biased codec", dict(algorithm="diana", codec="topk:k=4"), Status.INVALID_ARGUMENT, "unbiased"),
    ("diana biased codec, alpha given", dict(algorithm="diana", codec="sign", alpha=0.5), Status.INVALID_ARGUMENT,
     "unbiased"),
    ("alpha out of range", dict(algorithm="diana", codec="dither:levels=1", alpha=0.0), Status.INVALID_ARGUMENT,
     "alpha"),
    ("alpha for ef-sgd", dict(algorithm="ef-sgd", codec="sign", lr=0.1, alpha=0.5), Status.INVALID_ARGUMENT, "alpha"),
    ("gd with a codec", dict(algorithm="gd", codec="sign"), Status.INVALID_ARGUMENT, "identity"),
    ("gd with momentum", dict(algorithm="gd", momentum=0.9), Status.INVALID_ARGUMENT, "momentum"),
    ("signsgd-mv with scaled sign", dict(algorithm="signsgd-mv", codec="sign"), Status.INVALID_ARGUMENT,
     "scale=none"),
    ("ef-sgd without lr", dict(algorithm="ef-sgd", codec="sign"), Status.INVALID_ARGUMENT, "optimizer="),
    ("dist-ef-sgdm without lr", dict(algorithm="dist-ef-sgdm", codec="sign"), Status.INVALID_ARGUMENT, "optimizer="),
    ("lr and optimizer", dict(algorithm="ef-sgd", codec="sign", lr=0.1, optimizer=sgd()), Status.INVALID_ARGUMENT,
     "not both"),
    ("negative lr", dict(algorithm="ef-sgd", codec="sign", lr=-1.0), Status.INVALID_ARGUMENT, "lr"),
    ("nan lr", dict(algorithm="ef-sgd", codec="sign", lr=float("nan")), Status.INVALID_ARGUMENT, "lr"),
    ("not an optimizer", dict(algorithm="ef-sgd", codec="sign", optimizer=object()), Status.INVALID_ARGUMENT,
     "Optimizer"),
    ("ef with Adam", dict(algorithm="ef-sgd", codec="sign",
                          optimizer=torch.optim.Adam(torch.nn.Linear(2, 2).parameters())),
     Status.INVALID_ARGUMENT, "SGD"),
    ("momentum twice", dict(algorithm="dist-ef-sgdm", codec="sign", optimizer=sgd(momentum=0.9), momentum=0.9),
     Status.INVALID_ARGUMENT, "momentum twice"),
    ("momentum out of range", dict(algorithm="ef-sgd", codec="sign", lr=0.1, momentum=1.0), Status.INVALID_ARGUMENT,
     "momentum"),
    ("momentum not a number", dict(algorithm="ef-sgd", codec="sign", lr=0.1, momentum="0.9"),
     Status.INVALID_ARGUMENT, "momentum"),
    ("hessian compensation", dict(algorithm="hessian-ec", codec="sign", compensation="hessian"),
     Status.NOT_SUPPORTED, "Hessian"),
    ("diagonal compensation", dict(algorithm="hessian-ec", codec="sign", compensation="diagonal"),
     Status.NOT_SUPPORTED, "Hessian"),
    ("compensation for diana", dict(algorithm="diana", codec="dither:levels=1", compensation="none"),
     Status.INVALID_ARGUMENT, "compensation"),
    ("hessian-ec with momentum", dict(algorithm="hessian-ec", codec="natural", momentum=0.5),
     Status.INVALID_ARGUMENT, "momentum"),
    ("bad nonfinite", dict(algorithm="diana", codec="dither:levels=1", nonfinite="ignore"), Status.INVALID_ARGUMENT,
     "nonfinite"),
    ("bad backend", dict(algorithm="diana", codec="dither:levels=1", backend="gpu"), Status.INVALID_ARGUMENT,
     "backend"),
    ("negative start_iter", dict(algorithm="diana", codec="dither:levels=1", start_iter=-1), Status.INVALID_ARGUMENT,
     "start_iter"),
    ("float start_iter", dict(algorithm="diana", codec="dither:levels=1", start_iter=1.5), Status.INVALID_ARGUMENT,
     "start_iter"),
    ("negative plain_below", dict(algorithm="diana", codec="dither:levels=1", plain_below=-2),
     Status.INVALID_ARGUMENT, "plain_below"),
    ("plain_1d not a bool", dict(algorithm="diana", codec="dither:levels=1", plain_1d=1), Status.INVALID_ARGUMENT,
     "plain_1d"),
    ("negative delay", dict(algorithm="diana", codec="dither:levels=1", delay=-1), Status.INVALID_ARGUMENT, "delay"),
    ("writer without add_scalar", dict(algorithm="diana", codec="dither:levels=1", writer=object()),
     Status.INVALID_ARGUMENT, "add_scalar"),
    ("comm on the cpu backend", dict(algorithm="diana", codec="dither:levels=1", comm=object()),
     Status.INVALID_ARGUMENT, "comm"),
]


@pytest.mark.parametrize("what,kwargs,status,text", BAD, ids=[b[0] for b in BAD])
def test_bad_arguments_fail_in_the_constructor(what, kwargs, status, text):
    with pytest.raises(Error) as info:
        gddp.GcompState(**kwargs)
    assert info.value.status == status, (what, info.value)
    assert text in str(info.value), (what, str(info.value))


def test_cuda_backend_without_a_device_fails_in_the_constructor():
    if torch.cuda.is_available() and not gcomp.nccl_unusable():
        pytest.skip("a CUDA device and NCCL are usable here")
    with pytest.raises(Error) as info:
        gddp.GcompState(algorithm="diana", codec="dither:levels=1", backend="cuda")
    assert info.value.status == Status.NOT_SUPPORTED


def test_repr_shows_the_configuration():
    st = gddp.GcompState(algorithm="dist-ef-sgdm", codec="sign:block=128", optimizer=sgd(), momentum=0.9,
                         server="replicated", plain_1d=True)
    r = repr(st)
    for part in ("algorithm='dist-ef-sgdm'", "codec='sign:block=128'", "server_codec='sign:block=128'",
                 "server='replicated'", "momentum=0.9", "nesterov=True", "plain_1d=True", "rank=0/1", "iter=0"):
        assert part in r, (part, r)


class Bucket:
    def __init__(self, index, buffer, params, last=True):
        self._i, self._b, self._p, self._l = index, buffer, params, last

    def index(self):
        return self._i

    def buffer(self):
        return self._b

    def parameters(self):
        return self._p

    def is_last(self):
        return self._l


def _ef_reference(g, sizes, bucket, lr):
    comm = gcomp.local_group(1)[0]
    ref = gcomp.Session(comm, sizes, algorithm="ef-sgd", codec="sign:block=16", lr=1.0, backend="host-f32",
                        seed=gddp.bucket_seed(0, bucket))
    return torch.from_numpy(ref.step((g * lr).numpy())) / lr, ref.last_stats


@pytest.mark.parametrize("busy", [False, True])
def test_futures_complete_on_the_worker_thread_with_the_session_result(busy):
    """The hook returns at once; the gcomp-ddp worker thread completes the future with the bucket
    holding the Session's update (divided by lr for ef-sgd), equal to a local Session's. The last
    bucket of an iteration runs on the calling thread when no exchange is in flight (nothing is
    left to overlap it with), and on the worker, after the earlier buckets, when one is."""
    params0, params1 = [torch.zeros(40, 5), torch.zeros(40)], [torch.zeros(30)]
    g0 = torch.randn(240, generator=torch.Generator().manual_seed(3))
    g1 = torch.randn(30, generator=torch.Generator().manual_seed(4))
    st = gddp.GcompState(algorithm="ef-sgd", codec="sign:block=16", lr=0.5)
    seen, gate = [], threading.Event()
    orig = st._exchange

    def spy(plan, *args, **kw):
        seen.append((plan.index, threading.current_thread().name))
        if plan.index == 0:
            assert gate.wait(60)
        return orig(plan, *args, **kw)

    st._exchange = spy
    buf0, buf1 = g0.clone(), g1.clone()
    fut0 = gddp.gcomp_hook(st, Bucket(0, buf0, params0, last=False))
    assert isinstance(fut0, torch.futures.Future)
    if not busy:
        gate.set()
        assert fut0.wait() is buf0
        deadline = time.monotonic() + 60
        while not st._worker.idle():  # the worker completes the future, then counts the job done
            assert time.monotonic() < deadline
            time.sleep(0.001)
    fut1 = gddp.gcomp_hook(st, Bucket(1, buf1, params1, last=True))
    gate.set()
    assert fut0.wait() is buf0 and fut1.wait() is buf1
    assert seen == [(0, "gcomp-ddp"), (1, "gcomp-ddp" if busy else threading.current_thread().name)]
    want0, stats0 = _ef_reference(g0, [200, 40], 0, 0.5)
    want1, stats1 = _ef_reference(g1, [30], 1, 0.5)
    assert torch.equal(buf0, want0) and torch.equal(buf1, want1)
    m = st.metrics()
    assert m["iteration"] == 0 and m["bytes_sent"] == stats0.bytes_up + stats1.bytes_up
    assert all(b["codec_time_s"] > 0 and b["comm_time_s"] >= 0 for b in m["buckets"])
    st.close()


def test_permuted_bucket_keeps_its_session_and_per_group_lrs():
    """DDP's rebuilt bucket holds the parameters in another order than the initial one: the Session
    (laid out in the initial order) sees the gradient permuted into its layout and the update is
    written back in the bucket's order, divided by each parameter's lr (two param groups), equal to
    a local Session's two steps bit for bit."""
    p = [torch.zeros(24, 2), torch.zeros(24), torch.zeros(40)]
    n = [48, 24, 40]
    opt = torch.optim.SGD([{"params": [p[0], p[2]], "lr": 0.5}, {"params": [p[1]], "lr": 0.25}], lr=0.5)
    st = gddp.GcompState(algorithm="ef-sgd", codec="sign:block=16", optimizer=opt)
    gen = torch.Generator().manual_seed(5)
    g = [[torch.randn(k, generator=gen) for k in n] for _ in range(2)]
    buf0 = torch.cat(g[0])
    assert gddp.gcomp_hook(st, Bucket(0, buf0, p)).wait() is buf0
    order = [2, 0, 1]  # the rebuilt bucket's order
    buf1 = torch.cat([g[1][i] for i in order])
    assert gddp.gcomp_hook(st, Bucket(0, buf1, [p[i] for i in order])).wait() is buf1
    assert len(st._sessions) == 1 and st.layout_changes == 0
    lr = torch.cat([torch.full((k,), v) for k, v in zip(n, [0.5, 0.25, 0.5])])
    comm = gcomp.local_group(1)[0]
    ref = gcomp.Session(comm, n, algorithm="ef-sgd", codec="sign:block=16", lr=1.0, backend="host-f32",
                        seed=gddp.bucket_seed(0, 0))
    want0 = torch.from_numpy(ref.step((torch.cat(g[0]) * lr).numpy())) / lr
    want1 = torch.from_numpy(ref.step((torch.cat(g[1]) * lr).numpy())) / lr
    assert torch.equal(buf0, want0)
    parts = torch.split(want1, n)
    assert torch.equal(buf1, torch.cat([parts[i] for i in order]))
    st.close()


def test_metrics_count_the_bytes_a_variable_length_codec_sends():
    """sdither messages travel at their used size (issue 16): the hook's bytes_sent is the Session's
    bytes_up, the used bytes of the message, below the codec's worst-case payload."""
    params = [torch.zeros(40, 5), torch.zeros(40)]
    g = torch.randn(240, generator=torch.Generator().manual_seed(5))
    spec = "sdither:levels=1,norm=l2"
    st = gddp.GcompState(algorithm="diana", codec=spec, lr=1.0)
    gddp.gcomp_hook(st, Bucket(0, g.clone(), params)).wait()
    comm = gcomp.local_group(1)[0]
    ref = gcomp.Session(comm, [200, 40], algorithm="diana", codec=spec, lr=1.0, backend="host-f32",
                        seed=gddp.bucket_seed(0, 0))
    ref.step(g.numpy())
    m = st.metrics()
    assert m["bytes_sent"] == ref.last_stats.bytes_up < gcomp.Codec(spec, [200, 40]).encoded_bytes
    st.close()


def test_nonfinite_gradient_fails_the_future_with_its_status():
    st = gddp.GcompState(algorithm="diana", codec="dither:levels=1,norm=linf,block=16")
    buf = torch.ones(64)
    buf[5] = float("nan")
    fut = gddp.gcomp_hook(st, Bucket(0, buf, [torch.zeros(64)]))
    with pytest.raises(Error) as info:
        fut.wait()
    assert info.value.status == Status.NON_FINITE
    st.close()


def test_lr_zero_from_the_optimizer_fails_with_a_clear_error():
    opt = sgd(lr=0.0)
    st = gddp.GcompState(algorithm="ef-sgd", codec="sign", optimizer=opt)
    p = opt.param_groups[0]["params"]
    buf = torch.ones(sum(q.numel() for q in p))
    fut = gddp.gcomp_hook(st, Bucket(0, buf, p))
    with pytest.raises(Error) as info:
        fut.wait()
    assert info.value.status == Status.INVALID_ARGUMENT and "learning rate" in str(info.value)
    st.close()


def test_load_state_dict_checks_the_configuration():
    a = gddp.GcompState(algorithm="diana", codec="dither:levels=1,norm=linf,block=16", seed=1)
    gddp.gcomp_hook(a, Bucket(0, torch.ones(64), [torch.zeros(64)])).wait()
    sd = a.state_dict()
    assert sd["iter"] == 1 and len(sd["sessions"]) == 1
    b = gddp.GcompState(algorithm="diana", codec="dither:levels=1,norm=linf,block=16", seed=2)
    with pytest.raises(Error) as info:
        b.load_state_dict(sd)
    assert info.value.status == Status.MISMATCH and "seed" in str(info.value)
    c = gddp.GcompState(algorithm="diana", codec="dither:levels=1,norm=linf,block=16", seed=1)
    c.load_state_dict(sd)
    assert c.iter == 1
    a.close()


def test_gcomp_torch_is_gone_with_a_pointer_to_gcomp_ddp():
    with pytest.raises(AttributeError) as info:
        gcomp.torch  # noqa: B018
    assert "gcomp.ddp" in str(info.value)


def test_transport_failure_is_a_gcomp_error_with_the_cause():
    class Broken:
        def allgather(self, send, recv):
            raise ValueError("link down")

        alltoall = broadcast = barrier = allgather

    comm = gcomp.Communicator(gcomp._core.callback_comm(0, 1, Broken()))
    with pytest.raises(Error) as info:
        gcomp.Session(comm, [16], backend="host-f32")
    assert info.value.status == Status.TIMEOUT and "link down" in str(info.value)
    assert isinstance(info.value.__cause__, ValueError)
    np.testing.assert_equal(comm.size, 1)
