# SPDX-License-Identifier: Apache-2.0
"""Worker of tests/python/test_ddp.py: one process of a gloo job on 127.0.0.1.

job "train" (2 ranks): trains a small MLP with DDP, without a hook and with gcomp.ddp's hook for
many configurations, and writes losses, replica equality, metrics and checkpoint results.
job "transport" (3 ranks): calls gcomp_hook directly on synthetic buckets for every algorithm and
compares each result bit for bit with gcomp Sessions on an in-process local group (each process
simulates all ranks), which checks the torch.distributed transport of the Sessions.
"""
import json
import os
import sys
import threading

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel as DDP

import gcomp
import gcomp.ddp as gddp

D, HIDDEN, CLASSES, SAMPLES = 24, 32, 3, 256
LR = 0.2


def data(rank):
    """Heterogeneous shards: each rank's inputs are shifted differently; labels from a fixed teacher."""
    rng = np.random.default_rng(1234)
    teacher = rng.standard_normal((D, CLASSES))
    local = np.random.default_rng(77 + rank)
    x = local.standard_normal((SAMPLES, D)) + 0.5 * rank
    y = np.argmax(x @ teacher + 0.3 * local.standard_normal((SAMPLES, CLASSES)), axis=1)
    return torch.tensor(x, dtype=torch.float32), torch.tensor(y)


def make_model(dtype=torch.float32):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(D, HIDDEN), torch.nn.Tanh(), torch.nn.Linear(HIDDEN, CLASSES))
    return model.to(dtype)


def model_dtype(model):
    return next(model.parameters()).dtype


def global_loss(model, world):
    """Mean cross-entropy over every rank's shard (same value on every rank), in float32."""
    total = torch.zeros(1)
    dtype = model_dtype(model)
    with torch.no_grad():
        for r in range(world):
            x, y = data(r)
            total += F.cross_entropy(model(x.to(dtype)).float(), y)
    return float(total / world)


def params_of(ddp):
    return torch.cat([p.detach().reshape(-1).float() for p in ddp.module.parameters()])


def replicas_equal(p, world):
    gathered = [torch.empty_like(p) for _ in range(world)]
    dist.all_gather(gathered, p)
    return all(torch.equal(g, gathered[0]) for g in gathered)


class Run:
    """A DDP model, its optimizer (and scheduler) and, optionally, a gcomp hook state."""

    def __init__(self, hook=None, dtype=torch.float32, momentum=0.0, lr=LR, step_decay=None):
        self.ddp = DDP(make_model(dtype))
        self.opt = torch.optim.SGD(self.ddp.parameters(), lr=lr, momentum=momentum, nesterov=momentum > 0)
        self.sched = torch.optim.lr_scheduler.StepLR(self.opt, step_decay, gamma=0.5) if step_decay else None
        self.state = None
        if hook is not None:
            hook = dict(hook)
            if hook.pop("optimizer", False):
                hook["optimizer"] = self.opt
            self.state = gddp.GcompState(**hook)
            self.ddp.register_comm_hook(self.state, gddp.gcomp_hook)

    def train(self, rank, steps, on_step=None):
        x, y = data(rank)
        x = x.to(model_dtype(self.ddp.module))
        for _ in range(steps):
            self.opt.zero_grad()
            F.cross_entropy(self.ddp(x).float(), y).backward()
            if on_step is not None:
                on_step(self)
            self.opt.step()
            if self.sched is not None:
                self.sched.step()
        return self


class FakeWriter:
    def __init__(self):
        self.calls = []

    def add_scalar(self, tag, value, step):
        self.calls.append((tag, float(value), int(step)))


def train_job(rank, world, steps, outdir):
    results = {"initial_loss": global_loss(make_model(), world)}
    sign = "sign:block=64"
    configs = {
        "none": None,
        "gd": dict(algorithm="gd"),
        "diana": dict(algorithm="diana", codec="dither:levels=1,norm=linf,block=64", seed=5),
        "ef-sign": dict(algorithm="ef-sgd", codec=sign, optimizer=True, seed=5),
        "compressed-gd": dict(algorithm="compressed-gd", codec="dither:levels=4,norm=linf,block=64", seed=5),
        "hessian-ec": dict(algorithm="hessian-ec", codec="dither:levels=1,norm=linf,block=64", seed=5),
        "doublesqueeze": dict(algorithm="doublesqueeze", codec=sign, seed=5),
        "signsgd-mv": dict(algorithm="signsgd-mv"),
        "signum": dict(algorithm="signsgd-mv", momentum=0.9),
        # Negative control: top-2 without error feedback barely moves (the tolerance must reject it).
        "top2-no-memory": dict(algorithm="compressed-gd", codec="topk:k=2", seed=5),
        "ef-sign-plain-1d": dict(algorithm="ef-sgd", codec=sign, optimizer=True, seed=5, plain_1d=True),
        "gd-bf16": dict(algorithm="gd"),
        "diana-bf16": dict(algorithm="diana", codec="dither:levels=1,norm=linf,block=64", seed=5),
        "gd-fp16": dict(algorithm="gd"),
        "diana-fp16": dict(algorithm="diana", codec="dither:levels=1,norm=linf,block=64", seed=5),
    }
    dtypes = {"gd-bf16": torch.bfloat16, "diana-bf16": torch.bfloat16, "gd-fp16": torch.float16,
              "diana-fp16": torch.float16}
    lrs = {"signsgd-mv": 0.01, "signum": 0.01}
    for name, cfg in configs.items():
        run = Run(cfg, dtype=dtypes.get(name, torch.float32), lr=lrs.get(name, LR)).train(rank, steps)
        p = params_of(run.ddp)
        if name == "none":
            reference = p.clone()
        m = run.state.metrics() if run.state else None
        results[name] = {"loss": global_loss(run.ddp.module, world), "dtype": str(model_dtype(run.ddp.module)),
                         "equal_to_uncompressed": bool(torch.equal(p, reference)),
                         "replicas_equal": replicas_equal(p, world),
                         "bytes_sent": m["totals"]["bytes_sent"] if m else None,
                         "compressed_numel": sum(b["compressed_numel"] for b in m["buckets"]) if m else None,
                         "numel": sum(b["numel"] for b in m["buckets"]) if m else None}

    # Two-way dist-EF-SGDM (blockwise scaled sign both ways, Nesterov momentum 0.9), server sharded
    # and replicated, against momentum SGD with the same lr and momentum.
    mom = 0.9
    ref = Run(None, momentum=mom, lr=0.05).train(rank, steps)
    results["momentum-sgd"] = {"loss": global_loss(ref.ddp.module, world)}
    for server in ("sharded", "replicated"):
        writer = FakeWriter() if server == "sharded" else None
        cfg = dict(algorithm="dist-ef-sgdm", codec=sign, server=server, optimizer=True, momentum=mom, seed=5,
                   writer=writer, error_every=10)
        run = Run(cfg, lr=0.05).train(rank, steps)
        p = params_of(run.ddp)
        m = run.state.metrics()
        sd = run.state.state_dict()
        results[f"dist-ef-sgdm-{server}"] = {
            "loss": global_loss(run.ddp.module, world), "replicas_equal": replicas_equal(p, world),
            "metrics": {k: v for k, v in m.items() if k != "buckets"}, "buckets": m["buckets"],
            "counters": sd["counters"], "iter": sd["iter"],
            "writer": writer.calls if writer else None, "repr": repr(run.state)}

    # Warm-up: the first start_iter iterations are DDP's plain allreduce, bit for bit.
    k0 = 20
    plain = Run(None).train(rank, k0)
    warm = Run(dict(algorithm="ef-sgd", codec=sign, optimizer=True, start_iter=k0)).train(rank, k0)
    warm_compressed_before = warm.state.metrics()["compressed"]
    equal_after_warmup = bool(torch.equal(params_of(plain.ddp), params_of(warm.ddp)))
    warm.train(rank, 1)
    results["warmup"] = {"equal_after_warmup": equal_after_warmup,
                         "compressed_before": warm_compressed_before,
                         "compressed_after": warm.state.metrics()["compressed"]}

    # Step-decay schedule: ef-sgd reads lr from the optimizer at every step and keeps its error in
    # parameter units, so x_T - mean_i e_i = x_0 - sum_t lr_t * mean_i g_i,t holds whatever the
    # schedule (g_i,t this rank's own gradient, recomputed outside DDP).
    run = Run(dict(algorithm="ef-sgd", codec=sign, optimizer=True, seed=3), step_decay=steps // 4)
    x0 = params_of(run.ddp).double()
    acc = torch.zeros_like(x0)
    lrs_seen = []
    xs, ys = data(rank)

    def record(r):
        lr = r.opt.param_groups[0]["lr"]
        lrs_seen.append(lr)
        grads = torch.autograd.grad(F.cross_entropy(r.ddp.module(xs), ys), list(r.ddp.module.parameters()))
        acc.add_(torch.cat([g.reshape(-1) for g in grads]).double(), alpha=lr)

    run.train(rank, steps, on_step=record)
    dist.all_reduce(acc)
    acc /= world
    # The error memory, back in parameter order (the Session layout is the bucket's order).
    err = torch.zeros_like(x0)
    offsets, off = {}, 0
    for p in run.ddp.module.parameters():
        offsets[(p.data_ptr(), p.numel(), tuple(p.shape))] = off
        off += p.numel()
    for keys, sess in run.state._sessions.items():
        e = torch.from_numpy(sess.state()["error"])
        plan = next(pl for pl in run.state._plans.values() if pl.comp_keys == keys)
        pos = 0
        for i in plan.comp:
            prm = plan.params[i]
            o = offsets[(prm.data_ptr(), prm.numel(), tuple(prm.shape))]
            err[o:o + prm.numel()] = e[pos:pos + prm.numel()]
            pos += prm.numel()
    dist.all_reduce(err)
    err /= world
    lhs = params_of(run.ddp).double() - err
    rhs = x0 - acc
    results["schedule"] = {"lrs": sorted(set(lrs_seen)), "max_abs": float((lhs - rhs).abs().max()),
                           "scale": float(acc.abs().max()), "err_norm": float(err.norm())}

    # Checkpoint round trip: K steps, save (model, optimizer, hook state), K more steps; then a
    # fresh DDP model restored from the checkpoint runs the same K steps: bit-identical parameters.
    cfg = dict(algorithm="dist-ef-sgdm", codec=sign, optimizer=True, momentum=mom, seed=7)
    k = steps // 4
    run = Run(cfg, lr=0.05).train(rank, k)
    path = os.path.join(outdir, f"ckpt{rank}.pt")
    torch.save({"model": run.ddp.module.state_dict(), "opt": run.opt.state_dict(),
                "hook": run.state.state_dict()}, path)
    run.train(rank, k)
    want = params_of(run.ddp)
    ck = torch.load(path, weights_only=True)
    again = Run(None, lr=0.05)
    again.ddp.module.load_state_dict(ck["model"])
    again.opt.load_state_dict(ck["opt"])
    hook = dict(cfg, optimizer=again.opt)
    again.state = gddp.GcompState(**hook)
    again.state.load_state_dict(ck["hook"])
    again.ddp.register_comm_hook(again.state, gddp.gcomp_hook)
    again.train(rank, k)
    sa, sb = run.state.state_dict(), again.state.state_dict()
    results["resume"] = {"params_equal": bool(torch.equal(want, params_of(again.ddp))),
                         "layout_changes": [run.state.layout_changes, again.state.layout_changes],
                         "state_equal": sa["iter"] == sb["iter"] == 2 * k and sa["sessions"].keys() == sb["sessions"].keys()
                         and all(torch.equal(sa["sessions"][key], sb["sessions"][key]) for key in sa["sessions"]),
                         "sessions": len(sa["sessions"])}
    return results


# ------------------------------------------------------------------------------------------------
# transport job

SHAPES = [[(33, 7), (33,), (100,)], [(5, 5), (61,)]]  # two buckets, parameters in bucket order
TRANSPORT_CONFIGS = {
    "compressed-gd": dict(algorithm="compressed-gd", codec="dither:levels=2,norm=linf,block=16"),
    "terngrad": dict(algorithm="compressed-gd", codec="terngrad"),
    "signsgd-mv": dict(algorithm="signsgd-mv"),
    "signum": dict(algorithm="signsgd-mv", momentum=0.9),
    "ef-sgd": dict(algorithm="ef-sgd", codec="topk:ratio=0.1", lr=0.1),
    "diana": dict(algorithm="diana", codec="dither:levels=1,norm=l2,block=32", momentum=0.5),
    "dist-ef-sgdm-sharded": dict(algorithm="dist-ef-sgdm", codec="sign:block=16", server="sharded", lr=0.1,
                                 momentum=0.9),
    "dist-ef-sgdm-replicated": dict(algorithm="dist-ef-sgdm", codec="sign:block=16", server="replicated", lr=0.1,
                                    momentum=0.9, nesterov=False),
    "doublesqueeze-sharded": dict(algorithm="doublesqueeze", codec="sign:block=8", server_codec="topk:ratio=0.3",
                                  server="sharded"),
    "hessian-ec": dict(algorithm="hessian-ec", codec="natural", compensation="classical"),
    "cpu-backend": dict(algorithm="diana", codec="dither:levels=1,norm=linf,block=16", backend="cpu"),
}
TRANSPORT_STEPS = 4


class FakeBucket:
    """What DDP hands a comm hook (torch.distributed.GradBucket), for a direct call."""

    def __init__(self, index, buffer, params, last):
        self._index, self._buffer, self._params, self._last = index, buffer, params, last

    def index(self):
        return self._index

    def buffer(self):
        return self._buffer

    def parameters(self):
        return self._params

    def is_last(self):
        return self._last


def synthetic_grad(rank, step, bucket, n):
    g = torch.Generator().manual_seed(1000 * rank + 10 * step + bucket)
    return torch.randn(n, generator=g) * (1 + rank)


def reference(cfg, world):
    """Every rank's bucket results from Sessions on a local group, one thread per rank."""
    lr = cfg.get("lr")
    session_cfg = {k: v for k, v in cfg.items() if k not in ("algorithm", "lr", "backend")}
    if cfg["algorithm"] not in gddp.TWO_WAY:
        session_cfg.pop("server", None)
    session_cfg.setdefault("codec", {"signsgd-mv": "sign:scale=none"}.get(cfg["algorithm"]))
    if cfg["algorithm"] in gddp.TWO_WAY:
        session_cfg.setdefault("server_codec", session_cfg["codec"])
        session_cfg.setdefault("server", "sharded")
    out = [[[None] * len(SHAPES) for _ in range(TRANSPORT_STEPS)] for _ in range(world)]
    comms = gcomp.local_group(world)

    def rank_fn(comm):
        r = comm.rank
        sessions = [gcomp.Session(comm, [int(np.prod(s)) for s in shapes], algorithm=cfg["algorithm"], lr=1.0,
                                  seed=gddp.bucket_seed(0, b), backend=cfg.get("backend", "host-f32"),
                                  **session_cfg)
                    for b, shapes in enumerate(SHAPES)]
        for t in range(TRANSPORT_STEPS):
            for b, shapes in enumerate(SHAPES):
                n = sum(int(np.prod(s)) for s in shapes)
                g = synthetic_grad(r, t, b, n)
                if lr is not None and cfg["algorithm"] in gddp.PARAMETER_UNITS:
                    g = g * lr
                u = torch.from_numpy(np.asarray(sessions[b].step(g.numpy()))).float()
                if lr is not None and cfg["algorithm"] in gddp.PARAMETER_UNITS:
                    u = u / lr
                out[r][t][b] = u

    threads = [threading.Thread(target=rank_fn, args=(c,)) for c in comms]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return out


def transport_job(rank, world):
    results = {}
    params = [[torch.zeros(s) for s in shapes] for shapes in SHAPES]
    for name, cfg in TRANSPORT_CONFIGS.items():
        state = gddp.GcompState(**cfg)
        got = []
        for t in range(TRANSPORT_STEPS):
            row = []
            for b, shapes in enumerate(SHAPES):
                n = sum(int(np.prod(s)) for s in shapes)
                buf = synthetic_grad(rank, t, b, n)
                fut = gddp.gcomp_hook(state, FakeBucket(b, buf, params[b], b == len(SHAPES) - 1))
                row.append(fut.wait().clone())
            got.append(row)
        want = reference(cfg, world)[rank]
        same = all(torch.equal(got[t][b], want[t][b]) for t in range(TRANSPORT_STEPS) for b in range(len(SHAPES)))
        results[name] = {"equal": same, "iter": state.iter, "sessions": len(state._sessions),
                         "first_diff": None if same else float(max((got[t][b] - want[t][b]).abs().max()
                                                                   for t in range(TRANSPORT_STEPS)
                                                                   for b in range(len(SHAPES))))}
        state.close()
    return results


def main(rank, world, port, job, steps, outdir):
    os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    results = train_job(rank, world, steps, outdir) if job == "train" else transport_job(rank, world)
    with open(os.path.join(outdir, f"{job}{rank}.json"), "w") as f:
        json.dump(results, f)
    dist.destroy_process_group()
    # Leave without interpreter finalization. torch releases the Python callback of a completed
    # hook future (the plain path's `.then`) on a gloo worker thread, which needs the GIL; when
    # that thread is late (a loaded machine) and the main thread is already finalizing, take_gil()
    # ends the thread and libstdc++ calls std::terminate (SIGABRT after all results are written).
    # Every Python DDP hook on gloo has this exit race; docs/python.md says how to end workers.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


if __name__ == "__main__":
    main(int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], int(sys.argv[5]), sys.argv[6])
