#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""Plain-PyTorch peers of gcomp's codecs, timed like `gcomp-bench codecs` for side-by-side tables.

Methods (encode = what a framework-level compressor computes before communication, decode = the
dense reconstruction), each the operator a user writes today with torch ops:
  topk      torch.topk(x.abs(), k) + gather of the signed values        (spec §4.1, k = max(1, ratio n))
  randk     torch.randperm(n)[:k] + gather, scatter back scaled by n/k  (spec §4.2)
  qsgd      QSGD / random dithering, l2 norm per bucket, s levels         (spec §2.1)
  terngrad  TernGrad, max-norm scale, Bernoulli(|x|/s)                    (spec §3.1)
  signsgd   scaled sign with the sign bits packed 8 per byte, as the DeepSpeed 1-bit backends do
            (scale = |x|_2 / sqrt(n), bits = x < 0, packed with shifts and a sum)  (spec §3.2)
Codes other than signsgd's are stored one per byte (PyTorch has no bit-plane packing), so the
bytes moved are larger than gcomp's payloads; the table reports both times and the effective
bits/element of the peer. The code is device-agnostic (--device cpu|cuda|auto).

Timing: CUDA events (cuda) or time.perf_counter (cpu) after warm-up, with a write of a flush
buffer (twice the L2 size on cuda, 64 MiB on cpu) before every timed call; median and min-max over
-n iterations, GB/s on the uncompressed fp32 bytes. --threads sets torch's CPU threads.

--input FILE times one size: the raw little-endian float32 vector in FILE (gcomp-bench codecs
--peers writes its own input there, so both time the same data in the same run). --tsv PATH also
writes one line per method: method, elems, enc_us_median, dec_us_median, bits_per_elem.
Without --input the sizes come from -b/-e/-f and the input from torch.randn.

With --device cuda (or auto) and no CUDA device it prints a one-line reason and exits 0. It is a
manual comparison tool: it is not part of the test suite or CI.
Usage: python3 bench/peers/torch_codecs.py -b 4M -e 1G -f 2 -n 20 -w 5 --json out.json
       python3 bench/peers/torch_codecs.py --device cpu --threads 1 --input x.f32 --tsv peers.tsv
"""
import argparse
import json
import math
import statistics
import subprocess
import sys
import time


def parse_size(text):
    mult = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    text = text.strip()
    if text and text[-1].upper() in mult:
        return int(float(text[:-1]) * mult[text[-1].upper()])
    return int(float(text))


def git_sha():
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-b", "--minbytes", default="4M")
    ap.add_argument("-e", "--maxbytes", default="1G")
    ap.add_argument("-f", "--stepfactor", type=float, default=2.0)
    ap.add_argument("-n", "--iters", type=int, default=20)
    ap.add_argument("-w", "--warmup_iters", type=int, default=5)
    ap.add_argument("--ratio", type=float, default=0.01, help="top-k ratio")
    ap.add_argument("--levels", type=int, default=4, help="QSGD levels s")
    ap.add_argument("--bucket", type=int, default=512, help="QSGD bucket (block) size")
    ap.add_argument("--seed", type=int, default=0x5EED)
    ap.add_argument("--methods", default="topk,qsgd,terngrad,signsgd")
    ap.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    ap.add_argument("--input", default="", help="raw float32 input (one size: its length)")
    ap.add_argument("--tsv", default="", help="also write method, elems, enc_us, dec_us, bits/elem lines here")
    ap.add_argument("-J", "--json", default="")
    args = ap.parse_args()

    try:
        import torch
    except ImportError:
        print("# PyTorch is not installed: nothing to compare")
        return 0
    use_cuda = args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available())
    if use_cuda and not torch.cuda.is_available():
        print("# no CUDA device: nothing to compare")
        return 0
    if args.threads > 0:
        torch.set_num_threads(args.threads)

    dev = torch.device("cuda" if use_cuda else "cpu")
    if use_cuda:
        props = torch.cuda.get_device_properties(dev)
        device_name = props.name
        l2 = getattr(props, "L2_cache_size", 0) or (64 << 20)
        flush = torch.empty(2 * l2, dtype=torch.uint8, device=dev)
        start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    else:
        device_name = f"cpu ({torch.get_num_threads()} threads)"
        flush = torch.empty(64 << 20, dtype=torch.uint8)
    gen = torch.Generator(device=dev)
    gen.manual_seed(args.seed)

    def timed(fn):
        samples = []
        out = None
        for i in range(args.warmup_iters + args.iters):
            flush.fill_(i & 0xFF)
            if use_cuda:
                start.record()
                out = fn()
                stop.record()
                stop.synchronize()
                us = start.elapsed_time(stop) * 1e3
            else:
                t0 = time.perf_counter()
                out = fn()
                us = (time.perf_counter() - t0) * 1e6
            if i >= args.warmup_iters:
                samples.append(us)  # microseconds
        return out, samples

    # ---- methods: each returns (encode_fn(x) -> state, decode_fn(state) -> dense, bytes(state))
    def topk_method(n):
        k = max(1, int(args.ratio * n))

        def enc(x):
            _, idx = torch.topk(x.abs(), k, sorted=False)
            return idx, x.gather(0, idx)

        def dec(state):
            idx, vals = state
            return torch.zeros(n, device=dev, dtype=torch.float32).scatter_(0, idx, vals)

        return enc, dec, lambda st: st[0].numel() * st[0].element_size() + st[1].numel() * 4

    def qsgd_method(n):
        s, b = args.levels, args.bucket
        pad = (-n) % b

        def enc(x):
            xb = torch.nn.functional.pad(x, (0, pad)).view(-1, b)
            norm = xb.norm(dim=1, keepdim=True)
            r = s * xb.abs() / torch.where(norm > 0, norm, torch.ones_like(norm))
            lo = r.floor()
            u = torch.rand(r.shape, device=dev, generator=gen)
            xi = (lo + (u < (r - lo)).to(r.dtype)).to(torch.uint8)
            return norm, xi, xb.lt(0)

        def dec(state):
            norm, xi, neg = state
            v = norm * xi.to(torch.float32) / s
            return torch.where(neg, -v, v).view(-1)[:n]

        return enc, dec, lambda st: st[0].numel() * 4 + st[1].numel() + st[2].numel()

    def terngrad_method(n):
        def enc(x):
            scale = x.abs().max()
            u = torch.rand(x.shape, device=dev, generator=gen)
            code = (torch.sign(x) * (u * scale < x.abs()).to(x.dtype)).to(torch.int8)
            return scale, code

        def dec(state):
            scale, code = state
            return code.to(torch.float32) * scale

        return enc, dec, lambda st: 4 + st[1].numel()

    def signsgd_method(n):
        pad = (-n) % 8
        weights = torch.tensor([1, 2, 4, 8, 16, 32, 64, 128], dtype=torch.uint8, device=dev)
        shifts = torch.arange(8, dtype=torch.uint8, device=dev)

        def enc(x):
            scale = x.norm() / math.sqrt(n)
            neg = torch.nn.functional.pad(x.lt(0).to(torch.uint8), (0, pad)).view(-1, 8)
            return scale, neg.mul_(weights).sum(dim=1, dtype=torch.uint8)

        def dec(state):
            scale, packed = state
            neg = packed.unsqueeze(1).bitwise_right_shift(shifts).bitwise_and_(1).view(-1)[:n].bool()
            return torch.where(neg, -scale, scale)

        return enc, dec, lambda st: 4 + st[1].numel()

    def randk_method(n):
        k = max(1, int(args.ratio * n))

        def enc(x):
            idx = torch.randperm(n, device=dev, generator=gen)[:k]
            return idx, x[idx]

        def dec(state):
            idx, vals = state
            return torch.zeros(n, device=dev, dtype=torch.float32).index_put_((idx,), vals * (n / k))

        return enc, dec, lambda st: st[1].numel() * 4 + 8

    methods = {"topk": topk_method, "randk": randk_method, "qsgd": qsgd_method, "terngrad": terngrad_method,
               "signsgd": signsgd_method}
    chosen = [m for m in args.methods.split(",") if m]
    for m in chosen:
        if m not in methods:
            print(f"unknown method {m}; valid: {','.join(methods)}", file=sys.stderr)
            return 2

    # same-run copy bandwidth (read + write)
    print(f"# torch_codecs: device {device_name}, torch {torch.__version__}, seed {args.seed}, "
          f"iters {args.iters}, warmup {args.warmup_iters}")
    print(f"{'method':<10} {'elems':>11} {'bits/el':>8} {'enc_us':>10} {'enc_GB/s':>9} {'dec_us':>10} "
          f"{'dec_GB/s':>9} {'enc_spread_us':>19} {'copyGB/s':>9}")
    records = []
    if args.input:
        import numpy as np
        data = torch.from_numpy(np.fromfile(args.input, dtype=np.float32)).to(dev)
        sizes = [data.numel() * 4]
    else:
        data = None
        sizes = []
        size = parse_size(args.minbytes)
        while size <= parse_size(args.maxbytes) * 1.0000001:
            sizes.append(size)
            size = int(math.ceil(size * args.stepfactor))
    for size in sizes:
        n = int(size) // 4
        x = data if data is not None else torch.randn(n, device=dev, generator=gen)
        y = torch.empty_like(x)
        _, tc = timed(lambda: y.copy_(x))
        copy_gbps = 2 * n * 4 / (statistics.median(tc) * 1e3)
        for name in chosen:
            enc, dec, nbytes = methods[name](n)
            state, te = timed(lambda: enc(x))
            _, td = timed(lambda: dec(state))
            rec = {
                "method": name, "elems": n, "bits_per_elem": 8.0 * nbytes(state) / n,
                "enc_us_median": statistics.median(te), "enc_us_min": min(te), "enc_us_max": max(te),
                "dec_us_median": statistics.median(td), "dec_us_min": min(td), "dec_us_max": max(td),
                "enc_gbps_uncompressed": n * 4 / (statistics.median(te) * 1e3),
                "dec_gbps_uncompressed": n * 4 / (statistics.median(td) * 1e3),
                "copy_gbps": copy_gbps,
            }
            records.append(rec)
            spread = f"{rec['enc_us_min']:.1f}-{rec['enc_us_max']:.1f}"
            print(f"{name:<10} {n:>11} {rec['bits_per_elem']:>8.3f} {rec['enc_us_median']:>10.1f} "
                  f"{rec['enc_gbps_uncompressed']:>9.1f} {rec['dec_us_median']:>10.1f} "
                  f"{rec['dec_gbps_uncompressed']:>9.1f} {spread:>19} {copy_gbps:>9.1f}", flush=True)
        del y

    if args.tsv:
        with open(args.tsv, "w", encoding="utf-8") as f:
            for r in records:
                f.write(f"{r['method']}\t{r['elems']}\t{r['enc_us_median']:.3f}\t{r['dec_us_median']:.3f}\t"
                        f"{r['bits_per_elem']:.6f}\n")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump({"tool": "bench/peers/torch_codecs.py", "command": " ".join(sys.argv), "git_sha": git_sha(),
                       "device": device_name, "torch": torch.__version__, "seed": args.seed, "records": records},
                      f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
