# SPDX-License-Identifier: Apache-2.0
"""PyTorch DistributedDataParallel communication hook running gcomp compression.

    state = gcomp.torch.HookState(algorithm="diana", codec="dither:levels=1,norm=linf,block=256")
    model.register_comm_hook(state, gcomp.torch.hook)

The ranks of a DDP job are separate processes, so the transport is torch.distributed (the DDP
process group, e.g. gloo): each bucket is encoded with gcomp on the host, the fixed-size payloads
are allgathered as uint8 tensors, and every rank decodes and reduces them in rank order with gcomp
(gcomp.algorithms.CompressedReducer), so all replicas receive the bit-identical averaged gradient
estimate. The optimizer then applies its learning rate to that estimate. Exact semantics per
algorithm: docs/python.md.
"""
import numpy as np
import torch
import torch.distributed as dist

from ._errors import Error, Status
from .algorithms import ALGORITHMS, NONFINITE, CompressedReducer

_GOLDEN = 0x9E3779B97F4A7C15
_U64 = (1 << 64) - 1
STATE_VERSION = 1


def bucket_seed(seed, index):
    """Seed of bucket `index`'s codec: seed + index * 0x9E3779B97F4A7C15 (mod 2^64), so that buckets
    draw independent random bits; bucket 0 uses `seed` itself."""
    return (int(seed) + int(index) * _GOLDEN) & _U64


class HookState:
    """State of the gcomp DDP hook: the configuration and one CompressedReducer per bucket index.

    Parameters get a stable key at their bucket's first call, (bucket index, position) in DDP's
    initial bucketing, which is deterministic for a given model and bucket size. Each bucket is
    encoded with its parameters sorted by that key, so the layout does not depend on the order of
    parameters inside a bucket. DDP rebuilds its buckets once, after the first iteration: when a
    bucket index then holds other parameters, every bucket's state is split per parameter and
    reassembled for the new buckets (nothing is lost; the step counter continues), and
    `layout_changes` counts it. `state_dict()` stores the state per parameter key, so a checkpoint
    loads into a fresh DDP model whatever its current bucketing."""

    def __init__(self, algorithm="diana", codec="dither:levels=1,norm=linf,block=256", lr=1.0, alpha=None,
                 seed=0, nonfinite="error", process_group=None):
        if algorithm not in ALGORITHMS:
            raise Error(Status.INVALID_ARGUMENT,
                        f"algorithm {algorithm!r} is not supported by the DDP hook; valid: {', '.join(ALGORITHMS)}")
        if nonfinite not in NONFINITE:
            raise Error(Status.INVALID_ARGUMENT, f"nonfinite {nonfinite!r} is not one of {', '.join(NONFINITE)}")
        if algorithm == "gd" and codec != "identity":
            codec = "identity"
        self.algorithm = algorithm
        self.codec = codec
        self.lr = float(lr)
        self.alpha = alpha
        self.seed = int(seed) & _U64
        self.nonfinite = nonfinite
        self.process_group = process_group
        self.buckets = {}        # bucket index -> (parameter keys, CompressedReducer)
        self.layout_changes = 0
        self.bytes_sent = 0
        self._keys = {}          # parameter identity in this process -> stable key "bucket.position"
        self._pool = {}          # key -> {array name: float64 array}, state not in a bucket right now
        self._pool_step = 0
        self._expect = None      # (rank, world_size) recorded in a loaded state dict

    def _group(self):
        return self.process_group if self.process_group is not None else dist.group.WORLD

    def key_of(self, index, position, param):
        ident = (param.data_ptr(), param.numel(), tuple(param.shape))
        key = self._keys.get(ident)
        if key is None:
            key = self._keys.setdefault(ident, f"{index}.{position}")
        return key

    def _to_pool(self):
        for keys, red in self.buckets.values():
            offset = 0
            for key, size in zip(keys, red.codec.segments):
                self._pool[key] = {name: arr[offset:offset + size].copy() for name, arr in red.state.items()}
                offset += size
            self._pool_step = max(self._pool_step, red.step)
        self.buckets = {}

    def reducer(self, index, keys, sizes, rank, world_size):
        """The reducer of bucket `index` holding the parameters `keys` (canonical order) of `sizes`."""
        current = self.buckets.get(index)
        if current is not None and current[0] == keys:
            return current[1]
        if current is not None:
            self._to_pool()
            self.layout_changes += 1
        if self._expect is not None and self._expect != (rank, world_size):
            raise Error(Status.MISMATCH, f"hook state was saved by rank {self._expect[0]} of {self._expect[1]}, "
                                         f"loaded on rank {rank} of {world_size}")
        red = CompressedReducer(self.algorithm, self.codec, sizes, rank, world_size,
                                seed=bucket_seed(self.seed, index), alpha=self.alpha, lr=self.lr,
                                nonfinite=self.nonfinite)
        red.step = self._pool_step
        for name, arr in red.state.items():
            offset = 0
            for key, size in zip(keys, sizes):
                saved = self._pool.get(key, {}).get(name)
                if saved is not None:
                    if saved.shape != (size,):
                        raise Error(Status.MISMATCH, f"state of parameter {key} has {saved.size} elements, "
                                                     f"the parameter has {size}")
                    arr[offset:offset + size] = saved
                offset += size
        for key in keys:
            self._pool.pop(key, None)
        self.buckets[index] = (keys, red)
        return red

    def state_dict(self):
        """Configuration, step counter and per-parameter state (CPU float64 tensors), so that
        torch.save/torch.load(weights_only=True) handle it. Per rank: EF errors and worker shifts
        differ between ranks."""
        self._to_pool()
        params = {key: {name: torch.from_numpy(arr.copy()) for name, arr in arrays.items()}
                  for key, arrays in self._pool.items()}
        rank = dist.get_rank(self._group()) if dist.is_initialized() else -1
        world = dist.get_world_size(self._group()) if dist.is_initialized() else -1
        return {"version": STATE_VERSION, "algorithm": self.algorithm, "codec": self.codec, "seed": self.seed,
                "rank": rank, "world_size": world, "step": self._pool_step, "params": params}

    def load_state_dict(self, sd):
        """Restores state_dict() of a hook with the same algorithm, codec and seed; the rank and
        world size are checked at the first bucket. Load before the model's first iteration."""
        if sd.get("version") != STATE_VERSION:
            raise Error(Status.MISMATCH, f"load_state_dict: state version {sd.get('version')!r}, "
                                         f"expected {STATE_VERSION}")
        for key in ("algorithm", "codec", "seed"):
            if sd.get(key) != getattr(self, key):
                raise Error(Status.MISMATCH, f"load_state_dict: {key} is {sd.get(key)!r} in the state, "
                                             f"{getattr(self, key)!r} here")
        self.buckets = {}
        self._pool = {str(key): {name: (v.detach().cpu().numpy() if isinstance(v, torch.Tensor)
                                        else np.asarray(v)).astype(np.float64).reshape(-1)
                                 for name, v in arrays.items()}
                      for key, arrays in sd["params"].items()}
        self._pool_step = int(sd["step"])
        self._expect = (int(sd["rank"]), int(sd["world_size"])) if int(sd["rank"]) >= 0 else None


def hook(state, bucket):
    """DDP communication hook: returns a torch.futures.Future holding the bucket's averaged gradient
    estimate (written into the bucket buffer), identical on every rank."""
    group = state._group()
    world = dist.get_world_size(group)
    rank = dist.get_rank(group)
    buffer = bucket.buffer()
    index = bucket.index()
    params = list(bucket.parameters())
    sizes = [int(p.numel()) for p in params]
    flat = buffer.detach().to(device="cpu", dtype=torch.float64).reshape(-1).numpy()
    if sizes and sum(sizes) == flat.size:
        offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(int)
        keys = [state.key_of(index, i, p) for i, p in enumerate(params)]
        order = sorted(range(len(params)), key=lambda i: tuple(int(t) for t in keys[i].split(".")))
        grad = np.concatenate([flat[offsets[i]:offsets[i + 1]] for i in order])
    else:
        offsets, order, grad = np.array([0, flat.size]), [0], flat
        keys = [f"{index}.flat"]
        sizes = [flat.size]
    red = state.reducer(index, [keys[i] for i in order], [sizes[i] for i in order], rank, world)
    message = torch.from_numpy(red.encode(grad))
    if dist.get_backend(group) == "nccl":
        message = message.to(buffer.device)
    gathered = [torch.empty_like(message) for _ in range(world)]
    state.bytes_sent += message.numel()
    work = dist.all_gather(gathered, message, group=group, async_op=True)

    def finish(fut):
        fut.wait()
        estimate = red.reduce(np.stack([g.cpu().numpy() for g in gathered]))
        out = np.empty(flat.size)
        pos = 0
        for i in order:
            n = offsets[i + 1] - offsets[i]
            out[offsets[i]:offsets[i + 1]] = estimate[pos:pos + n]
            pos += n
        buffer.copy_(torch.from_numpy(out).to(dtype=buffer.dtype, device=buffer.device).reshape(buffer.shape))
        return buffer

    return work.get_future().then(finish)
