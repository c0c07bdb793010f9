# SPDX-License-Identifier: Apache-2.0
"""Worker of tests/python/test_ddp.py: one process of a 2-rank gloo DDP job on 127.0.0.1 that
trains a small MLP on synthetic data with and without the gcomp hook and writes its results."""
import json
import os
import sys

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel as DDP

import gcomp.torch as gtorch

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
    """Mean cross-entropy over every rank's shard (same value on every rank), in float32 for a
    16-bit model too (its inputs are rounded to the model's dtype)."""
    total = torch.zeros(1)
    dtype = model_dtype(model)
    with torch.no_grad():
        for r in range(world):
            x, y = data(r)
            total += F.cross_entropy(model(x.to(dtype)).float(), y)
    return float(total / world)


def train(rank, world, steps, state=None, ddp=None, opt=None, dtype=torch.float32):
    """SGD steps with DDP; a 16-bit model (bf16/fp16 parameters, so 16-bit gradient buckets) sees
    its inputs rounded to its dtype and computes the loss in float32."""
    if ddp is None:
        ddp = DDP(make_model(dtype))
        if state is not None:
            ddp.register_comm_hook(state, gtorch.hook)
        opt = torch.optim.SGD(ddp.parameters(), lr=LR)
    x, y = data(rank)
    x = x.to(model_dtype(ddp.module))
    for _ in range(steps):
        opt.zero_grad()
        F.cross_entropy(ddp(x).float(), y).backward()
        opt.step()
    return ddp, opt


def params_of(ddp):
    return torch.cat([p.detach().reshape(-1) for p in ddp.module.parameters()])


def main(rank, world, port, steps, outdir):
    os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    results = {"initial_loss": global_loss(make_model(), world)}
    configs = {
        "none": None,
        "gd": dict(algorithm="gd"),
        "diana": dict(algorithm="diana", codec="dither:levels=1,norm=linf,block=64", seed=5),
        "ef-sign": dict(algorithm="ef-sgd", codec="sign:block=64", lr=LR, seed=5),
        "compressed-gd": dict(algorithm="compressed-gd", codec="dither:levels=4,norm=linf,block=64", seed=5),
        # Negative control: top-2 without error feedback barely moves (the tolerance must reject it).
        "top2-no-memory": dict(algorithm="compressed-gd", codec="topk:k=2", seed=5),
        # 16-bit models: bf16 / fp16 gradient buckets through the hook (float64 state inside); the
        # uncompressed reference of each is the `gd` hook on the same 16-bit model.
        "gd-bf16": dict(algorithm="gd"),
        "diana-bf16": dict(algorithm="diana", codec="dither:levels=1,norm=linf,block=64", seed=5),
        "gd-fp16": dict(algorithm="gd"),
        "diana-fp16": dict(algorithm="diana", codec="dither:levels=1,norm=linf,block=64", seed=5),
    }
    dtypes = {"gd-bf16": torch.bfloat16, "diana-bf16": torch.bfloat16, "gd-fp16": torch.float16,
              "diana-fp16": torch.float16}
    for name, cfg in configs.items():
        state = gtorch.HookState(**cfg) if cfg is not None else None
        ddp, _ = train(rank, world, steps, state, dtype=dtypes.get(name, torch.float32))
        p = params_of(ddp)
        gathered = [torch.empty_like(p) for _ in range(world)]
        dist.all_gather(gathered, p)
        if name == "none":
            reference = p.clone()
        results[name] = {"loss": global_loss(ddp.module, world), "dtype": str(p.dtype),
                         "equal_to_uncompressed": bool(p.dtype == reference.dtype and torch.equal(p, reference)),
                         "replicas_equal": all(torch.equal(g, gathered[0]) for g in gathered),
                         "bytes_sent": state.bytes_sent if state else None,
                         "layout_changes": state.layout_changes if state else None}

    # Checkpoint round trip: K steps, save (model, optimizer, hook state), K more steps; then a
    # fresh DDP model restored from the checkpoint runs the same K steps: bit-identical parameters.
    cfg = configs["diana"]
    k = steps // 4
    state = gtorch.HookState(**cfg)
    ddp, opt = train(rank, world, k, state)
    path = os.path.join(outdir, f"ckpt{rank}.pt")
    torch.save({"model": ddp.module.state_dict(), "opt": opt.state_dict(), "hook": state.state_dict()}, path)
    train(rank, world, k, state, ddp, opt)
    want = params_of(ddp)
    ck = torch.load(path, weights_only=True)
    model = make_model()
    model.load_state_dict(ck["model"])
    ddp2 = DDP(model)
    state2 = gtorch.HookState(**cfg)
    state2.load_state_dict(ck["hook"])
    ddp2.register_comm_hook(state2, gtorch.hook)
    opt2 = torch.optim.SGD(ddp2.parameters(), lr=LR)
    opt2.load_state_dict(ck["opt"])
    train(rank, world, k, state2, ddp2, opt2)
    sd_a, sd_b = state.state_dict(), state2.state_dict()
    results["resume"] = {"params_equal": bool(torch.equal(want, params_of(ddp2))),
                         "state_equal": sd_a["step"] == sd_b["step"] == 2 * k
                         and sd_a["params"].keys() == sd_b["params"].keys()
                         and all(torch.equal(sd_a["params"][p][n], sd_b["params"][p][n])
                                 for p in sd_a["params"] for n in sd_a["params"][p]),
                         "params": len(sd_a["params"])}
    with open(os.path.join(outdir, f"rank{rank}.json"), "w") as f:
        json.dump(results, f)
    dist.destroy_process_group()
    # Leave without interpreter finalization. torch releases the Python callback of a completed
    # hook future (the `.then(finish)` of gcomp.torch.hook) on a gloo worker thread, which needs the
    # GIL; when that thread is late (a loaded machine) and the main thread is already finalizing,
    # take_gil() ends the thread with pthread_exit and libstdc++ calls std::terminate (SIGABRT after
    # all results are written; seen in about 1 of 10 runs on 2 busy cores). Every Python DDP hook
    # on gloo has this exit race; docs/python.md "DDP hook" says how to end workers.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


if __name__ == "__main__":
    main(int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5])
