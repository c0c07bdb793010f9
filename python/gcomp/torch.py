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

With HookState(backend="cuda") and CUDA buckets, the bucket is not copied to the host: each bucket
index gets a gcomp Session with the cuda backend whose step runs on torch's current CUDA stream
(fp32, bf16 or fp16 buckets), over a gcomp nccl communicator that the state creates once from the
same RANK / WORLD_SIZE / MASTER_ADDR environment as torch.distributed, on port GCOMP_NCCL_PORT
(default MASTER_PORT + 1). This path has not yet run on a GPU (docs/python.md).
"""
import numpy as np
import torch
import torch.distributed as dist

from ._api import Session, nccl_comm, nccl_unusable
from ._errors import Error, Status
from .algorithms import ALGORITHMS, NONFINITE, CompressedReducer

_GOLDEN = 0x9E3779B97F4A7C15
_U64 = (1 << 64) - 1
STATE_VERSION = 1
BACKENDS = ("cpu", "cuda")


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
                 seed=0, nonfinite="error", process_group=None, backend="cpu", comm=None):
        if backend not in BACKENDS:
            raise Error(Status.INVALID_ARGUMENT, f"backend {backend!r} is not one of {', '.join(BACKENDS)}")
        if backend == "cuda":
            # Fail here, with the reason, rather than at the first bucket inside DDP's backward.
            if not torch.cuda.is_available():
                raise Error(Status.NOT_SUPPORTED, "HookState(backend='cuda'): torch sees no CUDA device "
                                                  "(torch.cuda.is_available() is False); use backend='cpu'")
            why = nccl_unusable() if comm is None else ""
            if why:
                raise Error(Status.NOT_SUPPORTED, f"HookState(backend='cuda'): {why}; use backend='cpu'")
        elif comm is not None:
            raise Error(Status.INVALID_ARGUMENT, "HookState: comm is used by backend='cuda' only")
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
        self.backend = backend
        self.comm = comm         # backend "cuda": the gcomp communicator (nccl_comm() at the first bucket)
        self.sessions = {}       # backend "cuda": parameter keys (canonical order) -> gcomp Session
        self._blobs = {}         # backend "cuda": parameter keys -> saved Session checkpoint (bytes)

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

    def device_session(self, keys, sizes, device):
        """backend "cuda": the Session of the bucket holding the parameters `keys` (canonical
        order) of `sizes`, on the gcomp nccl communicator (created once, at the first bucket).
        Sessions are kept per parameter set, so a bucket that DDP moves to another index keeps its
        session; a new set that overlaps an old one (DDP regrouped the parameters) starts from zero
        state, and `layout_changes` counts it."""
        keys = tuple(keys)
        sess = self.sessions.get(keys)
        if sess is not None:
            return sess
        stale = [k for k in self.sessions if set(k) & set(keys)]
        if stale:
            self.layout_changes += 1
            for k in stale:
                self.sessions.pop(k).close()
        group = self._group()
        rank, world = dist.get_rank(group), dist.get_world_size(group)
        if self._expect is not None and self._expect != (rank, world):
            raise Error(Status.MISMATCH, f"hook state was saved by rank {self._expect[0]} of {self._expect[1]}, "
                                         f"loaded on rank {rank} of {world}")
        if self.comm is None:
            index = device.index if device.index is not None else torch.cuda.current_device()
            self.comm = nccl_comm(rank=rank, world_size=world, device=index)
        elif (self.comm.rank, self.comm.size) != (rank, world):
            raise Error(Status.MISMATCH, f"HookState: comm is rank {self.comm.rank} of {self.comm.size}, the "
                                         f"process group rank {rank} of {world}")
        # The seed follows the first parameter's initial bucket, so it survives DDP's rebucketing.
        sess = Session(self.comm, list(sizes), algorithm=self.algorithm, codec=self.codec, lr=self.lr,
                       alpha=self.alpha, seed=bucket_seed(self.seed, int(keys[0].split(".")[0])),
                       nonfinite=self.nonfinite, backend="cuda")
        blob = self._blobs.pop(keys, None)
        if blob is not None:
            _load_blob(sess, blob)
        self.sessions[keys] = sess
        return sess

    def state_dict(self):
        """Configuration, step counter and per-parameter state (CPU float64 tensors), so that
        torch.save/torch.load(weights_only=True) handle it. Per rank: EF errors and worker shifts
        differ between ranks. backend "cuda": each bucket's Session checkpoint (uint8 tensor) under
        its parameter keys; it loads into a bucket holding the same parameters."""
        if self.backend == "cuda":
            rank = dist.get_rank(self._group()) if dist.is_initialized() else -1
            world = dist.get_world_size(self._group()) if dist.is_initialized() else -1
            blobs = dict(self._blobs)
            for keys, sess in self.sessions.items():
                blobs[keys] = _save_blob(sess)
            return {"version": STATE_VERSION, "backend": "cuda", "algorithm": self.algorithm, "codec": self.codec,
                    "seed": self.seed, "rank": rank, "world_size": world,
                    "sessions": {";".join(k): torch.from_numpy(np.frombuffer(v, dtype=np.uint8).copy())
                                 for k, v in blobs.items()}}
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
        saved_backend = sd.get("backend", "cpu")
        if saved_backend != self.backend:
            raise Error(Status.MISMATCH, f"load_state_dict: the state was saved by backend {saved_backend!r}, "
                                         f"this hook uses {self.backend!r}")
        if self.backend == "cuda":
            for sess in self.sessions.values():
                sess.close()
            self.sessions = {}
            self._blobs = {tuple(k.split(";")): (v.detach().cpu().numpy() if isinstance(v, torch.Tensor)
                                                 else np.asarray(v)).astype(np.uint8).tobytes()
                           for k, v in sd["sessions"].items()}
            self._expect = (int(sd["rank"]), int(sd["world_size"])) if int(sd["rank"]) >= 0 else None
            return
        self.buckets = {}
        self._pool = {str(key): {name: (v.detach().cpu().numpy() if isinstance(v, torch.Tensor)
                                        else np.asarray(v)).astype(np.float64).reshape(-1)
                                 for name, v in arrays.items()}
                      for key, arrays in sd["params"].items()}
        self._pool_step = int(sd["step"])
        self._expect = (int(sd["rank"]), int(sd["world_size"])) if int(sd["rank"]) >= 0 else None


def _save_blob(sess):
    import os
    import tempfile
    fd, path = tempfile.mkstemp(prefix="gcomp_hook_")
    os.close(fd)
    try:
        sess.save(path)
        with open(path, "rb") as f:
            return f.read()
    finally:
        os.unlink(path)


def _load_blob(sess, blob):
    import os
    import tempfile
    fd, path = tempfile.mkstemp(prefix="gcomp_hook_")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(blob)
        sess.load(path)
    finally:
        os.unlink(path)


_DEVICE_DTYPES = (torch.float32, torch.bfloat16, torch.float16)


def _device_hook(state, bucket):
    """backend "cuda": the bucket's Session steps on the CUDA buffer itself, on torch's current
    stream; the update (divided by lr: the estimate in gradient units) is written back into it.
    Parameters are taken in their canonical key order, as on the host path: when the bucket holds
    them in another order they are gathered and scattered by device copies."""
    buffer = bucket.buffer()
    if buffer.dtype not in _DEVICE_DTYPES:
        raise Error(Status.INVALID_ARGUMENT, f"gcomp DDP hook (backend='cuda'): bucket dtype {buffer.dtype} is not "
                                             "float32, bfloat16 or float16; use backend='cpu'")
    index = bucket.index()
    params = list(bucket.parameters())
    sizes = [int(p.numel()) for p in params]
    flat = buffer.detach().reshape(-1)
    if sizes and sum(sizes) == flat.numel():
        keys = [state.key_of(index, i, p) for i, p in enumerate(params)]
        order = sorted(range(len(params)), key=lambda i: tuple(int(t) for t in keys[i].split(".")))
    else:
        keys, sizes, order = [f"{index}.flat"], [int(flat.numel())], [0]
    offsets = [0]
    for n in sizes:
        offsets.append(offsets[-1] + n)
    in_order = order == list(range(len(order)))
    grad = flat if in_order else torch.cat([flat[offsets[i]:offsets[i + 1]] for i in order])
    sess = state.device_session([keys[i] for i in order], [sizes[i] for i in order], buffer.device)
    if grad.dtype == torch.float32:
        update = sess.step(grad, update=grad)  # in place: the session writes the update last
    else:
        update = sess.step(grad)
    if state.lr != 1.0:
        update.div_(state.lr)
    if in_order:
        if update is not flat:
            flat.copy_(update)
    else:
        pos = 0
        for i in order:
            n = sizes[i]
            flat[offsets[i]:offsets[i + 1]].copy_(update[pos:pos + n])
            pos += n
    state.bytes_sent += sess.last_stats.bytes_up
    fut = torch.futures.Future()
    fut.set_result(buffer)
    return fut


def hook(state, bucket):
    """DDP communication hook: returns a torch.futures.Future holding the bucket's averaged gradient
    estimate (written into the bucket buffer), identical on every rank."""
    if state.backend == "cuda":
        if bucket.buffer().device.type != "cuda":
            raise Error(Status.INVALID_ARGUMENT, "gcomp DDP hook: HookState(backend='cuda') got a bucket on "
                                                 f"{bucket.buffer().device}; use backend='cpu' for CPU models")
        return _device_hook(state, bucket)
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
