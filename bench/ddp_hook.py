#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""Per-step time of gcomp.ddp's hook against plain DDP and torch's PowerSGD, side by side in one run.

Setup (issue 15): scikit-learn's digits (1797 8x8 images, 80/20 train/test split), an MLP 64-512-512-10,
2 gloo processes on 127.0.0.1, one torch thread and one gcomp codec thread each, batch 32 per rank, SGD, DDP bucket_cap_mb=25 (one
bucket; see --bucket-cap-mb for why); every configuration trains
from the same initial weights for --steps steps (660 = 30 epochs of the 718 samples of a rank). The
configurations run one after the other in the same process group, in --rounds rounds with the order
rotated each round; the step time of a configuration is the median over all its timed steps (the
first --skip steps of each run are not timed), and its ratio is to plain DDP's median of the same run.
Also reported: test accuracy after the last round, bytes sent per step (the hook's metrics; plain
allreduce and PowerSGD: the tensors handed to the allreduce), and the time inside the hook split into
the Session's collectives, its codec work and the rest (Python, copies).

usage: bench/ddp_hook.py [--steps 660] [--rounds 3] [--json PATH]
       bench/record.sh $(date +%F)-cpu2-ddp-hook python3 bench/ddp_hook.py
"""
import argparse
import json
import os
import platform
import socket
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


def configs():
    sign = "sign:block=256"
    return {
        "ddp": None,
        "powersgd-r1": ("powersgd", 1),
        "gcomp gd": dict(algorithm="gd"),
        "gcomp ef-sign": dict(algorithm="ef-sgd", codec=sign, optimizer=True),
        "gcomp dist-ef-sgdm": dict(algorithm="dist-ef-sgdm", codec=sign, optimizer=True, momentum=0.9),
        "gcomp dist-ef-sgdm repl": dict(algorithm="dist-ef-sgdm", codec=sign, server="replicated", optimizer=True,
                                        momentum=0.9),
        "gcomp diana": dict(algorithm="diana", codec="dither:levels=1,norm=linf,block=256"),
        "gcomp signsgd-mv": dict(algorithm="signsgd-mv"),
        "gcomp signum": dict(algorithm="signsgd-mv", momentum=0.9),
    }


def worker(rank, world, port, args, outdir):
    import numpy as np
    import torch
    import torch.distributed as dist
    import torch.nn.functional as F
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split
    from torch.distributed.algorithms.ddp_comm_hooks import powerSGD_hook as psgd
    from torch.nn.parallel import DistributedDataParallel as DDP

    import gcomp.ddp

    torch.set_num_threads(1)
    # One thread for gcomp's CPU codecs too (read at their first use): one process per core.
    os.environ["GCOMP_CPU_THREADS"] = str(args.gcomp_threads)
    os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    x, y = load_digits(return_X_y=True)
    x = (x / 16.0).astype(np.float32)
    xtr, xte, ytr, yte = train_test_split(x, y, test_size=0.2, random_state=0, stratify=y)
    xtr, ytr = torch.from_numpy(xtr[rank::world]), torch.from_numpy(ytr[rank::world])
    xte, yte = torch.from_numpy(xte), torch.from_numpy(yte)
    batch = 32

    def run(name, cfg):
        torch.manual_seed(0)
        net = torch.nn.Sequential(torch.nn.Linear(64, 512), torch.nn.ReLU(), torch.nn.Linear(512, 512), torch.nn.ReLU(),
                                  torch.nn.Linear(512, 10))
        model = DDP(net, bucket_cap_mb=args.bucket_cap_mb) if args.bucket_cap_mb > 0 else DDP(net)
        # signSGD-MV's step is lr per coordinate: it needs a much smaller lr than the others, and no
        # heavy ball on top (plain SGD; Signum has the Session's momentum before the sign).
        sign_mv = isinstance(cfg, dict) and cfg.get("algorithm") == "signsgd-mv"
        lr, momentum = (1e-3 if sign_mv else 0.05), 0.9
        state = None
        if isinstance(cfg, dict) and (cfg.get("momentum") or sign_mv):
            opt = torch.optim.SGD(model.parameters(), lr=lr)  # the algorithm's own momentum
        else:
            opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum, nesterov=True)
        if isinstance(cfg, tuple):
            state = psgd.PowerSGDState(process_group=None, matrix_approximation_rank=cfg[1], start_powerSGD_iter=2,
                                       use_error_feedback=True, warm_start=True)
            model.register_comm_hook(state, psgd.powerSGD_hook)
        elif cfg is not None:
            c = dict(cfg)
            if c.pop("optimizer", False):
                c["optimizer"] = opt
            if c.get("algorithm") == "ef-sgd":
                # EF-SGD's update goes to plain SGD (its memory is in parameter units).
                opt = torch.optim.SGD(model.parameters(), lr=lr)
                c["optimizer"] = opt
            state = gcomp.ddp.GcompState(**c)
            model.register_comm_hook(state, gcomp.ddp.gcomp_hook)
        gen = torch.Generator().manual_seed(100 + rank)
        times, cpu = [], []
        n = xtr.shape[0]
        perm = torch.randperm(n, generator=gen)
        pos = 0
        for step in range(args.steps):
            if pos + batch > n:
                perm, pos = torch.randperm(n, generator=gen), 0
            idx = perm[pos:pos + batch]
            pos += batch
            if step == args.skip and isinstance(state, gcomp.ddp.GcompState):
                before = dict(state.metrics()["totals"])  # the hook's counters of the timed steps only
            t0, c0 = time.perf_counter(), time.process_time()
            opt.zero_grad()
            F.cross_entropy(model(xtr[idx]), ytr[idx]).backward()
            opt.step()
            dt, dc = time.perf_counter() - t0, time.process_time() - c0
            if step >= args.skip:
                times.append(dt)
                cpu.append(dc)
        with torch.no_grad():
            acc = float((net(xte).argmax(1) == yte).float().mean())
        p = torch.cat([q.detach().reshape(-1) for q in net.parameters()])
        gathered = [torch.empty_like(p) for _ in range(world)]
        dist.all_gather(gathered, p)
        equal = all(torch.equal(g, gathered[0]) for g in gathered)
        numel = p.numel()
        if isinstance(state, gcomp.ddp.GcompState):
            tot = {k: v - before[k] for k, v in state.metrics()["totals"].items()}
            its = max(tot["iterations"], 1)
            bytes_step = tot["bytes_sent"] / its
            hook_ms, comm_ms, codec_ms = (1e3 * tot[k] / its for k in ("hook_time_s", "comm_time_s", "codec_time_s"))
            if cfg.get("algorithm") == "gd":  # no Session: the hook only issues DDP's allreduce
                comm_ms = codec_ms = None
            state.close()
        elif isinstance(cfg, tuple):
            # PowerSGD rank r per matrix n x m: P (n r) and Q (m r) floats; 1-D tensors uncompressed.
            r = cfg[1]
            bytes_step = 4 * sum(q.numel() if q.dim() <= 1 else r * (q.shape[0] + q.reshape(q.shape[0], -1).shape[1])
                                 for q in net.parameters())
            hook_ms = comm_ms = codec_ms = None
        else:
            bytes_step, hook_ms, comm_ms, codec_ms = 4 * numel, None, None, None
        return {"times": times, "cpu": cpu, "accuracy": acc, "replicas_equal": equal, "bytes_per_step": bytes_step,
                "hook_ms": hook_ms, "comm_ms": comm_ms, "codec_ms": codec_ms, "numel": numel}

    cfgs = configs()
    if args.bucket_cap_mb <= 0:
        # DDP's default buckets put this model in two: torch's PowerSGD hook issues its second
        # allreduce from a future callback (a gloo thread), which races with the next bucket's first
        # allreduce and fails on gloo with a collective mismatch (gloo::EnforceNotMet, seen here).
        cfgs.pop("powersgd-r1")
    if args.only:
        cfgs = {k: v for k, v in cfgs.items() if k in args.only.split(",") or k == "ddp"}
    names = list(cfgs)
    results = {k: {"times": [], "cpu": []} for k in names}
    for rnd in range(args.rounds):
        order = names[rnd % len(names):] + names[:rnd % len(names)]
        for name in order:
            dist.barrier()
            r = run(name, cfgs[name])
            results[name]["times"] += r["times"]
            results[name]["cpu"] += r["cpu"]
            results[name].update({k: v for k, v in r.items() if k not in ("times", "cpu")})
    if rank == 0:
        with open(os.path.join(outdir, "rank0.json"), "w") as f:
            json.dump(results, f)
    dist.destroy_process_group()
    sys.stdout.flush()
    os._exit(0)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=660)
    ap.add_argument("--skip", type=int, default=20, help="untimed steps at the start of each run")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--bucket-cap-mb", type=float, default=25,
                    help="DDP bucket_cap_mb (25: the whole model in one bucket, also the first; 0: DDP's default "
                         "buckets, 1 MiB first, which leaves PowerSGD out)")
    ap.add_argument("--only", default="", help="comma-separated configuration names (plain DDP always runs)")
    ap.add_argument("--gcomp-threads", type=int, default=1,
                    help="GCOMP_CPU_THREADS of the ranks (torch runs 1 thread per rank)")
    ap.add_argument("--json", default="")
    args = ap.parse_args()
    import tempfile

    import numpy as np
    import torch
    import torch.multiprocessing as mp
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    load = os.getloadavg()
    with tempfile.TemporaryDirectory() as outdir:
        t0 = time.time()
        mp.start_processes(worker, args=(2, port, args, outdir), nprocs=2, start_method="spawn")
        wall = time.time() - t0
        with open(os.path.join(outdir, "rank0.json")) as f:
            res = json.load(f)
    base = float(np.median(res["ddp"]["times"]))
    base_cpu = float(np.mean(res["ddp"]["cpu"]))
    psgd = float(np.median(res["powersgd-r1"]["times"])) if "powersgd-r1" in res else None
    rows = []
    print(f"# gcomp.ddp hook vs plain DDP and PowerSGD: digits, MLP 64-512-512-10, 2 gloo processes, "
          f"{args.steps} steps x {args.rounds} rounds, batch 32/rank, bucket_cap_mb {args.bucket_cap_mb:g}")
    after = os.getloadavg()
    print(f"# load average before: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}, after: {after[0]:.2f} {after[1]:.2f} "
          f"{after[2]:.2f}; wall {wall:.0f} s; GCOMP_CPU_THREADS={args.gcomp_threads}")
    print(f"# hook ms: time in gcomp's hook per step; comm: the Session's collectives through the process group "
          f"(waits for the other rank included); codec: the Session's encode, decode and update; python: the rest")
    print(f"# cpu ms: CPU time of rank 0's process per step (mean; all its threads, gloo's included), x cpu: its ratio "
          f"to plain DDP's (less sensitive to the load than the wall time)")
    print(f"{'config':26s} {'ms/step':>8s} {'p10':>7s} {'p90':>7s} {'x ddp':>6s} {'x psgd':>6s} {'cpu ms':>6s} "
          f"{'x cpu':>6s} {'hook ms':>8s} "
          f"{'comm':>6s} {'codec':>6s} {'python':>6s} {'bytes/step':>10s} {'ratio':>6s} {'test acc':>8s} replicas")
    for name, r in res.items():
        t = np.array(r["times"]) * 1e3
        med = float(np.median(t))
        row = {"config": name, "median_ms": med, "p10_ms": float(np.percentile(t, 10)),
               "p90_ms": float(np.percentile(t, 90)), "ratio_to_ddp": med / (1e3 * base),
               "cpu_ms": 1e3 * float(np.mean(r["cpu"])), "cpu_ratio_to_ddp": float(np.mean(r["cpu"])) / base_cpu,
               "ratio_to_powersgd_r1": med / (1e3 * psgd) if psgd else None, "hook_ms_per_step": r["hook_ms"],
               "comm_ms_per_step": r.get("comm_ms"), "codec_ms_per_step": r.get("codec_ms"),
               "bytes_per_step": r["bytes_per_step"], "compression": 4 * r["numel"] / r["bytes_per_step"],
               "test_accuracy": r["accuracy"], "replicas_equal": r["replicas_equal"], "timed_steps": len(t)}
        rows.append(row)
        hook = f"{row['hook_ms_per_step']:.2f}" if row["hook_ms_per_step"] is not None else "-"
        parts = ["-", "-", "-"]
        if row["comm_ms_per_step"] is not None:
            py = row["hook_ms_per_step"] - row["comm_ms_per_step"] - row["codec_ms_per_step"]
            parts = [f"{row['comm_ms_per_step']:.2f}", f"{row['codec_ms_per_step']:.2f}", f"{py:.2f}"]
        xp = f"{row['ratio_to_powersgd_r1']:.2f}" if psgd else "-"
        print(f"{name:26s} {med:8.2f} {row['p10_ms']:7.2f} {row['p90_ms']:7.2f} {row['ratio_to_ddp']:6.2f} {xp:>6s} "
              f"{row['cpu_ms']:6.2f} {row['cpu_ratio_to_ddp']:6.2f} "
              f"{hook:>8s} {parts[0]:>6s} {parts[1]:>6s} {parts[2]:>6s} {row['bytes_per_step']:10.0f} {row['compression']:6.1f} {row['test_accuracy']:8.4f} "
              f"{row['replicas_equal']}")
    if args.json:
        git = subprocess.run(["git", "-C", ROOT, "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
        out = {"tool": "bench/ddp_hook.py", "command": " ".join([os.path.relpath(sys.argv[0], ROOT)] + sys.argv[1:]),
               "git_sha": git, "torch": torch.__version__, "python": platform.python_version(),
               "device": f"cpu ({os.cpu_count()} hardware threads)", "world_size": 2, "steps": args.steps, "bucket_cap_mb": args.bucket_cap_mb,
               "rounds": args.rounds, "skip": args.skip, "gcomp_cpu_threads": args.gcomp_threads,
               "load_average_before": load, "load_average_after": after, "wall_s": wall, "records": rows}
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1)


if __name__ == "__main__":
    main()
