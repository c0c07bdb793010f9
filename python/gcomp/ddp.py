# SPDX-License-Identifier: Apache-2.0
"""gcomp as a PyTorch DistributedDataParallel communication hook.

    import gcomp.ddp
    state = gcomp.ddp.GcompState(algorithm="dist-ef-sgdm", codec="sign:block=256", optimizer=opt,
                                 momentum=0.9)
    model.register_comm_hook(state, gcomp.ddp.gcomp_hook)

as torch's own `PowerSGDState` / `powerSGD_hook`. Every gradient bucket is exchanged by a real gcomp
`Session` (one per set of parameters), so every Session algorithm is available: `gd`,
`compressed-gd`, `signsgd-mv`, `ef-sgd`, `diana`, the two-way `dist-ef-sgdm` and `doublesqueeze`
(server sharded or replicated) and `hessian-ec` without a Hessian. On CPU tensors the Session's
collectives are carried by the DDP process group itself (gloo), through gcomp's Python transport
(`gcomp._core.callback_comm`); the exchange runs on a worker thread and the hook returns a
`torch.futures.Future` that the worker completes, so DDP overlaps it with the rest of the backward
pass; the iteration's last bucket, with no exchange in flight, runs on the calling thread (nothing
is left to overlap it with). CUDA buckets with `backend="cuda"` step a cuda-backend Session on torch's current stream over a
gcomp nccl communicator. The manual, with the exact semantics, is docs/python.md "The DDP hook".
"""
import math
import numbers
import os
import queue
import tempfile
import threading
import time

import numpy as np
import torch
import torch.distributed as dist

from . import _core
from ._api import Codec, Communicator, Session, local_group, nccl_comm, nccl_unusable
from ._errors import Error, Status

# Valid names: the library's one table per enum (<gcomp/names.hpp>, gcomp._core.ENUM_NAMES).
ALGORITHMS = _core.ENUM_NAMES["algorithm"]
TWO_WAY = ("dist-ef-sgdm", "doublesqueeze")
# Algorithms whose error memory is in parameter units (p = lr * d + e): the hook steps the Session
# on lr * g and hands the optimizer u / lr, so that SGD's x <- x - lr * (u / lr) applies u.
PARAMETER_UNITS = ("ef-sgd", "dist-ef-sgdm")
BACKENDS = _core.ENUM_NAMES["backend"]
SERVERS = _core.ENUM_NAMES["server"]
NONFINITE = _core.ENUM_NAMES["nonfinite"]
COMPENSATIONS = _core.ENUM_NAMES["compensation"]
STATE_VERSION = 2

_GOLDEN = 0x9E3779B97F4A7C15
_U64 = (1 << 64) - 1
_PROBE_ELEMS = 1 << 16  # layout of the probe Session that checks a configuration at construction


def bucket_seed(seed, index):
    """Seed of the Session of initial bucket `index`: seed + index * 0x9E3779B97F4A7C15 (mod 2^64),
    so that buckets draw independent random bits; bucket 0 uses `seed` itself."""
    return (int(seed) + int(index) * _GOLDEN) & _U64


def _invalid(message):
    return Error(Status.INVALID_ARGUMENT, message)


def _is_int(v):
    return isinstance(v, numbers.Integral) and not isinstance(v, bool)


def _is_real(v):
    return isinstance(v, numbers.Real) and not isinstance(v, bool)


class _TorchTransport:
    """The collectives of gcomp's Python transport (python/callback_comm.hpp) over a
    torch.distributed process group: uint8 CPU tensors over the Session's own buffers."""

    def __init__(self, group):
        self.group = group
        self.size = dist.get_world_size(group)

    def allgather(self, send, recv):
        dist.all_gather_into_tensor(torch.from_numpy(recv), torch.from_numpy(send), group=self.group)

    def alltoall(self, send, recv):
        dist.all_to_all_single(torch.from_numpy(recv), torch.from_numpy(send), group=self.group)

    def broadcast(self, buf, root):
        src = dist.get_global_rank(self.group, root) if self.group is not None else root
        dist.broadcast(torch.from_numpy(buf), src=src, group=self.group)

    def barrier(self):
        dist.barrier(group=self.group)


class _Worker:
    """One thread that runs the exchanges of the buckets in the order the hook submits them, so
    that every rank issues its collectives on the process group in the same order."""

    def __init__(self):
        self._queue = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._pending = 0  # submitted exchanges not yet finished
        self._thread = threading.Thread(target=self._run, name="gcomp-ddp", daemon=True)
        self._thread.start()

    def idle(self):
        """True when no submitted exchange is queued or running."""
        with self._lock:
            return self._pending == 0

    def submit(self, fn):
        with self._lock:
            self._pending += 1
        self._queue.put(fn)

    def _run(self):
        while True:
            fn = self._queue.get()
            if fn is None:
                return
            try:
                fn()
            finally:
                with self._lock:
                    self._pending -= 1

    def close(self):
        if self._thread.is_alive():
            self._queue.put(None)
            self._thread.join()


class _Plan:
    """How one bucket is exchanged: its parameters (bucket order), their stable keys, which ones
    are compressed (one Session over their segments) and which ones go through a plain allreduce."""

    def __init__(self, state, index, params, numel):
        self.index = index
        self.params = params
        self.sizes = [int(p.numel()) for p in params]
        if not params or sum(self.sizes) != numel:
            # A bucket whose parameters do not add up to its buffer (not seen with stock DDP): one segment.
            self.params, self.sizes = [], [numel]
            self.keys = [f"{index}.flat"]
            plain = [False]
        else:
            self.keys = [state._key_of(index, i, p) for i, p in enumerate(params)]
            plain = [state._is_plain(p) for p in params]
        self.offsets = [0]
        for n in self.sizes:
            self.offsets.append(self.offsets[-1] + n)
        self.numel = numel
        # Compressed parameters in the canonical order of their keys (initial bucket, position), so
        # that a bucket whose parameters DDP's rebuild only permutes keeps its Session and layout.
        self.comp = sorted((i for i in range(len(self.sizes)) if not plain[i]),
                           key=lambda i: tuple(int(t) if t.isdigit() else -1 for t in self.keys[i].split(".")))
        self.plain = [i for i in range(len(self.sizes)) if plain[i]]
        self.comp_keys = tuple(self.keys[i] for i in self.comp)
        self.comp_sizes = [self.sizes[i] for i in self.comp]
        self.comp_numel = sum(self.comp_sizes)
        self.plain_numel = numel - self.comp_numel
        self.comp_range = self._range(self.comp)
        self.plain_range = self._range(self.plain)
        self.lr_groups = [state._group_of(p) for p in self.params] if self.params else [0]
        self.update = None  # preallocated fp32 update of the Session (worker thread)
        self.gbuf = None    # preallocated gradient of the compressed parameters (comp_buffer)
        self.lr_cache = (None, None)

    def _range(self, idx):
        """(begin, end) when the parameters `idx` are one contiguous run of the buffer, else None."""
        if not idx or idx != list(range(idx[0], idx[-1] + 1)):
            return None
        return self.offsets[idx[0]], self.offsets[idx[-1] + 1]

    def gather(self, flat, idx, rng, out=None):
        """The parameters `idx` of the buffer, in that order: a view when they are one run, else
        a copy (into `out` when given)."""
        if rng is not None:
            return flat[rng[0]:rng[1]]
        pieces = [flat[self.offsets[i]:self.offsets[i + 1]] for i in idx]
        return torch.cat(pieces) if out is None else torch.cat(pieces, out=out)

    def comp_buffer(self, flat):
        """Reused buffer of the compressed parameters' gradient when they are not one run of the
        bucket (DDP's rebuilt buckets reverse the initial order that the Session layout keeps)."""
        if self.comp_range is not None:
            return None
        if self.gbuf is None or self.gbuf.dtype != flat.dtype:
            self.gbuf = torch.empty(self.comp_numel, dtype=flat.dtype)
        return self.gbuf

    def write_update(self, flat, u, scale):
        """flat[compressed parameters] = u / scale (scale None: u), written straight into the
        bucket, rounded as the division then a copy."""
        if self.comp_range is not None:
            segs = [(self.comp_range[0], self.comp_range[1], 0)]
        else:
            segs, pos = [], 0
            for i in self.comp:
                segs.append((self.offsets[i], self.offsets[i + 1], pos))
                pos += self.sizes[i]
        for b, e, pos in segs:
            out, src = flat[b:e], u[pos:pos + e - b]
            if scale is None:
                out.copy_(src)
            elif isinstance(scale, torch.Tensor):
                torch.div(src, scale[pos:pos + e - b], out=out)
            else:
                torch.div(src, scale, out=out)

    def scatter(self, flat, idx, rng, values):
        if rng is not None:
            if values.data_ptr() != flat[rng[0]:rng[1]].data_ptr():
                flat[rng[0]:rng[1]].copy_(values)
            return
        pos = 0
        for i in idx:
            n = self.sizes[i]
            flat[self.offsets[i]:self.offsets[i + 1]].copy_(values[pos:pos + n])
            pos += n


class GcompState:
    """State of the gcomp DDP communication hook (`gcomp_hook`): configuration, the Sessions of the
    buckets, the iteration counter and the metrics. Every argument is checked here: a bad codec
    spec, an algorithm that does not fit the codec, options that the algorithm does not use, and so
    on raise gcomp.Error(Status.INVALID_ARGUMENT or NOT_SUPPORTED) before training starts.

    process_group: the DDP process group (default: the world). backend "host-f32" (default, fp32
        state) and "cpu" (double state) need one that takes CPU tensors (gloo); "cuda" runs on CUDA
        buckets over a gcomp nccl communicator.
    algorithm, codec, server_codec, server: the Session's (docs/algorithms.md). codec defaults to
        "identity" for gd and "sign:scale=none" for signsgd-mv and is required otherwise;
        server_codec (two-way algorithms only) defaults to codec.
    optimizer / lr: where the learning rate comes from. ef-sgd and dist-ef-sgdm keep their error
        memory in parameter units (p = lr*d + e): they need torch.optim.SGD as optimizer (its
        param groups' lr is read at every bucket, so schedulers just work) or a fixed lr.
    momentum, nesterov: the Session's momentum (dist-ef-sgdm's, DIANA's, EF-SGD's, ...); then the
        optimizer must not add its own.
    alpha (diana), compensation ("none" or "classical", hessian-ec), tie_to_zero (signsgd-mv),
    shared_scale, delay, seed, nonfinite, track_norms: passed to the Session.
    start_iter: iterations before it use a plain allreduce (PowerSGD's start_powerSGD_iter).
    plain_below, plain_1d: parameters with fewer elements, or with one dimension (biases, norm
        layers), go through a plain allreduce instead of the Session.
    error_every: every that many iterations, measure this rank's relative compression error of the
        codec on its bucket gradient (metrics()["compression_error"]); 0: never.
    writer: an object with add_scalar(tag, value, step), e.g. torch.utils.tensorboard.SummaryWriter,
        that receives the metrics of every iteration under writer_prefix.
    comm (backend "cuda" only): a gcomp nccl communicator to use instead of creating one.
    """

    def __init__(self, process_group=None, *, algorithm, codec=None, server_codec=None, server="sharded",
                 optimizer=None, lr=None, momentum=0.0, nesterov=True, alpha=None, compensation="classical",
                 tie_to_zero=True, shared_scale=True, delay=0, seed=0, nonfinite="error", start_iter=0,
                 plain_below=0, plain_1d=False, backend="host-f32", comm=None, track_norms=False, error_every=0,
                 writer=None, writer_prefix="gcomp"):
        if not isinstance(algorithm, str) or algorithm not in ALGORITHMS:
            raise _invalid(f"algorithm {algorithm!r} is not one of {', '.join(ALGORITHMS)}")
        if not isinstance(backend, str) or backend not in BACKENDS:
            raise _invalid(f"backend {backend!r} is not one of {', '.join(BACKENDS)}")
        if not isinstance(server, str) or server not in SERVERS:
            raise _invalid(f"server {server!r} is not one of {', '.join(SERVERS)}")
        if not isinstance(nonfinite, str) or nonfinite not in NONFINITE:
            raise _invalid(f"nonfinite {nonfinite!r} is not one of {', '.join(NONFINITE)}")
        for name, v in (("nesterov", nesterov), ("tie_to_zero", tie_to_zero), ("shared_scale", shared_scale),
                        ("plain_1d", plain_1d), ("track_norms", track_norms)):
            if not isinstance(v, bool):
                raise _invalid(f"{name} must be True or False, got {v!r}")
        for name, v in (("delay", delay), ("start_iter", start_iter), ("plain_below", plain_below),
                        ("error_every", error_every)):
            if not _is_int(v) or v < 0:
                raise _invalid(f"{name} must be an integer >= 0, got {v!r}")
        if not _is_int(seed):
            raise _invalid(f"seed must be an integer, got {seed!r}")
        if not _is_real(momentum) or not 0.0 <= float(momentum) < 1.0:
            raise _invalid(f"momentum must be a number in [0, 1), got {momentum!r}")
        momentum = float(momentum)

        # Codecs.
        if codec is None:
            codec = {"gd": "identity", "signsgd-mv": "sign:scale=none"}.get(algorithm)
            if codec is None:
                raise _invalid(f"algorithm {algorithm!r} needs a codec spec (codec=...)")
        if not isinstance(codec, str):
            raise _invalid(f"codec must be a spec string, got {codec!r}")
        if algorithm == "gd" and codec != "identity":
            raise _invalid(f"gd sends uncompressed gradients: codec must be 'identity' (or left out), got {codec!r}")
        if algorithm in TWO_WAY:
            server_codec = codec if server_codec is None else server_codec
            if not isinstance(server_codec, str):
                raise _invalid(f"server_codec must be a spec string, got {server_codec!r}")
        elif server_codec is not None:
            raise _invalid(f"server_codec is used by the two-way algorithms ({', '.join(TWO_WAY)}) only, "
                           f"not by {algorithm!r}")
        uplink = Codec(codec, [_PROBE_ELEMS])  # raises on a bad spec, naming the bad part
        if algorithm in TWO_WAY:
            Codec(server_codec, [_PROBE_ELEMS])

        # Options that belong to one algorithm.
        if alpha is not None:
            if algorithm != "diana":
                raise _invalid(f"alpha is DIANA's shift step; algorithm {algorithm!r} does not use it")
            if not _is_real(alpha) or not 0.0 < float(alpha) <= 1.0 or math.isnan(float(alpha)):
                raise _invalid(f"alpha must be a number in (0, 1], got {alpha!r}")
            alpha = float(alpha)
        if algorithm == "diana" and uplink.guarantee.kind != "unbiased":
            raise _invalid(f"diana needs an unbiased codec (its shifts learn the mean only then); {codec!r} is "
                           f"{uplink.guarantee.kind}: use ef-sgd for a biased codec")
        if not isinstance(compensation, str) or compensation not in COMPENSATIONS:
            raise _invalid(f"compensation {compensation!r} is not one of {', '.join(COMPENSATIONS)}")
        if algorithm == "hessian-ec" and compensation in ("hessian", "diagonal"):
            raise Error(Status.NOT_SUPPORTED,
                        f"hessian-ec with compensation={compensation!r} needs Hessian products at the current "
                        "parameters during the step; a DDP hook runs inside the backward pass, where they are not "
                        "available. Use compensation='classical' (A = I) or 'none' here, or a gcomp.Session with "
                        "hessian_product outside DDP")
        if algorithm != "hessian-ec" and compensation != "classical":
            raise _invalid(f"compensation is hessian-ec's option; algorithm {algorithm!r} does not use it")
        if algorithm == "gd" and momentum > 0:
            raise _invalid("gd averages the gradients with an allreduce; use the optimizer's momentum "
                           "(torch.optim.SGD(momentum=...)) instead of momentum= here")

        # Learning rate: from the optimizer (read at every bucket) or fixed.
        if optimizer is not None and lr is not None:
            raise _invalid("give either optimizer= (its learning rate is read at every step) or lr=, not both")
        if optimizer is not None:
            if not isinstance(optimizer, torch.optim.Optimizer):
                raise _invalid(f"optimizer must be a torch.optim.Optimizer, got {type(optimizer).__name__}")
            if algorithm in PARAMETER_UNITS and not isinstance(optimizer, torch.optim.SGD):
                raise _invalid(f"{algorithm} returns an update divided by the learning rate, which only "
                               f"torch.optim.SGD applies as such; got {type(optimizer).__name__}")
            opt_momentum = max(float(g.get("momentum", 0.0) or 0.0) for g in optimizer.param_groups)
            if opt_momentum > 0 and (momentum > 0 or algorithm == "dist-ef-sgdm"):
                raise _invalid(f"momentum twice: the optimizer has momentum {opt_momentum} and {algorithm} "
                               f"its own (momentum={momentum}); set the optimizer's momentum to 0")
            for g in optimizer.param_groups:
                if not _is_real(float(g["lr"])) or float(g["lr"]) < 0:
                    raise _invalid(f"optimizer learning rate {g['lr']!r} is not a number >= 0")
        elif lr is not None:
            if not _is_real(lr) or not float(lr) > 0 or math.isinf(float(lr)):
                raise _invalid(f"lr must be a finite number > 0, got {lr!r}")
            lr = float(lr)
        elif algorithm in PARAMETER_UNITS:
            raise _invalid(f"{algorithm} keeps its error memory in parameter units (p = lr*d + e): pass "
                           "optimizer= (torch.optim.SGD; its lr is read at every step) or a fixed lr=")

        # The process group and the backend.
        if not dist.is_available() or not dist.is_initialized():
            raise _invalid("torch.distributed is not initialized: call dist.init_process_group() before "
                           "creating the GcompState")
        group = process_group if process_group is not None else dist.group.WORLD
        pg_backend = str(dist.get_backend(group))
        if backend == "cuda":
            if not torch.cuda.is_available():
                raise Error(Status.NOT_SUPPORTED, "GcompState(backend='cuda'): torch sees no CUDA device "
                                                  "(torch.cuda.is_available() is False); use backend='host-f32'")
            why = nccl_unusable() if comm is None else ""
            if why:
                raise Error(Status.NOT_SUPPORTED, f"GcompState(backend='cuda'): {why}; use backend='host-f32'")
        else:
            if comm is not None:
                raise _invalid("comm is used by backend='cuda' only")
            if pg_backend == "nccl":
                raise _invalid(f"backend={backend!r} exchanges CPU tensors through the process group, and an "
                               "nccl process group takes CUDA tensors only: use a gloo group, or backend='cuda'")
        if writer is not None and not callable(getattr(writer, "add_scalar", None)):
            raise _invalid(f"writer must have add_scalar(tag, value, step) (e.g. a SummaryWriter), got "
                           f"{type(writer).__name__}")
        if not isinstance(writer_prefix, str):
            raise _invalid(f"writer_prefix must be a string, got {writer_prefix!r}")

        self.process_group = process_group
        self.algorithm = algorithm
        self.codec = codec
        self.server_codec = server_codec
        self.server = server
        self.optimizer = optimizer
        self.lr = lr
        self.momentum = momentum
        self.nesterov = nesterov
        self.alpha = alpha
        self.compensation = compensation
        self.tie_to_zero = tie_to_zero
        self.shared_scale = shared_scale
        self.delay = int(delay)
        self.seed = int(seed) & _U64
        self.nonfinite = nonfinite
        self.start_iter = int(start_iter)
        self.plain_below = int(plain_below)
        self.plain_1d = plain_1d
        self.backend = backend
        self.track_norms = track_norms
        self.error_every = int(error_every)
        self.writer = writer
        self.writer_prefix = writer_prefix
        self.rank = dist.get_rank(group)
        self.world_size = dist.get_world_size(group)
        self.iter = 0                # iterations whose last bucket has been handed to the hook
        self.layout_changes = 0      # Sessions dropped because DDP regrouped their parameters
        self.comm = comm             # gcomp communicator (created at the first compressed bucket)
        self._group = group
        self._sessions = {}          # compressed parameter keys (bucket order) -> Session
        self._blobs = {}             # keys -> Session checkpoint bytes from load_state_dict, not yet used
        self._blob_iter = -1         # the iteration at which loaded blobs were restored
        self._expect = None          # (rank, world size) recorded in a loaded state dict
        self._keys = {}              # parameter identity -> stable key "initial bucket.position"
        self._plans = {}
        self._worker = None
        self._param_group = None     # id(parameter) -> optimizer param group index
        self._iter_metrics = []      # metrics of the buckets of the iteration in progress
        self._last = {"iteration": -1, "buckets": []}
        self._totals = {"iterations": 0, "compressed_iterations": 0, "bytes_sent": 0, "bytes_received": 0,
                        "uncompressed_bytes": 0, "hook_time_s": 0.0, "comm_time_s": 0.0, "codec_time_s": 0.0}

        # The Session checks the rest (codec vs algorithm, momentum support, ...) on a 1-rank probe.
        self._probe()

    # ----------------------------------------------------------------------------------- config
    def _session_config(self, seed):
        two_way = self.algorithm in TWO_WAY
        return dict(algorithm=self.algorithm, codec=self.codec,
                    server_codec=self.server_codec if two_way else "identity", lr=1.0,
                    alpha=self.alpha, momentum=self.momentum, nesterov=self.nesterov, delay=self.delay, seed=seed,
                    nonfinite=self.nonfinite, server=self.server if two_way else "replicated",
                    tie_to_zero=self.tie_to_zero, shared_scale=self.shared_scale,
                    compensation=self.compensation if self.algorithm == "hessian-ec" else "hessian",
                    track_norms=self.track_norms, time_phases=self.backend != "cuda")

    def _probe(self):
        if self.algorithm == "gd":
            return
        comm = local_group(1)[0]
        backend = "host-f32" if self.backend == "cuda" else self.backend
        probe = Session(comm, [_PROBE_ELEMS], backend=backend, **self._session_config(self.seed))
        try:
            if self.momentum > 0 and "momentum" not in probe.state():
                raise Error(Status.NOT_SUPPORTED, f"the Session has no momentum for {self.algorithm!r} (it would be "
                                                  "ignored); use momentum=0 and the optimizer's momentum")
        finally:
            probe.close()
            comm.close()

    def __repr__(self):
        parts = [f"algorithm={self.algorithm!r}", f"codec={self.codec!r}"]
        if self.algorithm in TWO_WAY:
            parts += [f"server_codec={self.server_codec!r}", f"server={self.server!r}"]
        if self.optimizer is not None:
            parts.append(f"lr=<{type(self.optimizer).__name__} param groups>")
        elif self.lr is not None:
            parts.append(f"lr={self.lr}")
        if self.momentum > 0 or self.algorithm == "dist-ef-sgdm":
            parts += [f"momentum={self.momentum}", f"nesterov={self.nesterov}"]
        if self.alpha is not None:
            parts.append(f"alpha={self.alpha}")
        if self.algorithm == "hessian-ec":
            parts.append(f"compensation={self.compensation!r}")
        if self.delay:
            parts.append(f"delay={self.delay}")
        parts += [f"backend={self.backend!r}", f"seed={self.seed}", f"nonfinite={self.nonfinite!r}",
                  f"start_iter={self.start_iter}", f"plain_below={self.plain_below}", f"plain_1d={self.plain_1d}",
                  f"rank={self.rank}/{self.world_size}", f"iter={self.iter}", f"sessions={len(self._sessions)}"]
        return "gcomp.ddp.GcompState(" + ", ".join(parts) + ")"

    # ----------------------------------------------------------------------------------- parameters
    def _key_of(self, index, position, param):
        ident = (param.data_ptr(), param.numel(), tuple(param.shape))
        return self._keys.setdefault(ident, f"{index}.{position}")

    def _is_plain(self, param):
        return int(param.numel()) < self.plain_below or (self.plain_1d and param.dim() <= 1)

    def _group_of(self, param):
        if self.optimizer is None:
            return 0
        if self._param_group is None:
            self._param_group = {id(p): gi for gi, g in enumerate(self.optimizer.param_groups) for p in g["params"]}
        gi = self._param_group.get(id(param))
        if gi is None:
            raise _invalid("a parameter of the DDP model is not in the optimizer given to GcompState")
        return gi

    def _plan(self, bucket):
        params = list(bucket.parameters())
        buffer = bucket.buffer()
        sig = (bucket.index(), tuple(id(p) for p in params), buffer.numel())
        plan = self._plans.get(sig)
        if plan is None:
            plan = self._plans[sig] = _Plan(self, bucket.index(), params, buffer.numel())
        return plan

    def _lrs(self, plan):
        """The learning rate of each parameter of the plan, now (None when lr is not used)."""
        if self.algorithm not in PARAMETER_UNITS:
            return None
        if self.optimizer is None:
            return [self.lr]
        groups = self.optimizer.param_groups
        return [float(groups[g]["lr"]) for g in plan.lr_groups]

    # ----------------------------------------------------------------------------------- sessions
    def _communicator(self):
        if self.comm is None:
            self.comm = Communicator(_core.callback_comm(self.rank, self.world_size, _TorchTransport(self._group)))
        return self.comm

    def _session(self, plan, iteration):
        """The Session of the plan's compressed parameters (created collectively on first use), or
        None when this bucket must be averaged plainly this iteration (see load_state_dict)."""
        keys = plan.comp_keys
        sess = self._sessions.get(keys)
        if sess is not None:
            return sess
        if self._expect is not None and self._expect != (self.rank, self.world_size):
            raise Error(Status.MISMATCH, f"hook state was saved by rank {self._expect[0]} of {self._expect[1]}, "
                                         f"loaded on rank {self.rank} of {self.world_size}")
        blob = self._blobs.pop(keys, None)
        mine = set(keys)
        if blob is None:
            saved = [k for k in self._blobs if mine & set(k)]
            if saved and iteration == self._blob_iter:
                # The first iteration after a load runs on DDP's initial bucketing, which can group
                # parameters differently from the rebuilt buckets the state was saved with: keep the
                # saved state for the rebuilt buckets and average this one plainly once.
                return None
            for k in saved:
                del self._blobs[k]
                self.layout_changes += 1
        for k in [k for k in self._sessions if mine & set(k)]:
            self._sessions.pop(k).close()
            self.layout_changes += 1
        seed = bucket_seed(self.seed, int(keys[0].split(".")[0]))
        if self.backend == "cuda":
            if self.comm is None:
                dev = torch.cuda.current_device()
                self.comm = nccl_comm(rank=self.rank, world_size=self.world_size, device=dev)
            elif (self.comm.rank, self.comm.size) != (self.rank, self.world_size):
                raise Error(Status.MISMATCH, f"GcompState: comm is rank {self.comm.rank} of {self.comm.size}, the "
                                             f"process group rank {self.rank} of {self.world_size}")
            comm = self.comm
        else:
            comm = self._communicator()
        sess = Session(comm, plan.comp_sizes, backend=self.backend, **self._session_config(seed))
        if blob is not None:
            _load_blob(sess, blob)
        self._sessions[keys] = sess
        return sess

    def close(self):
        """Stops the worker thread and closes the Sessions (not collective)."""
        if self._worker is not None:
            self._worker.close()
            self._worker = None
        for sess in self._sessions.values():
            sess.close()
        self._sessions = {}

    # ----------------------------------------------------------------------------------- checkpoints
    def _config(self):
        return {"algorithm": self.algorithm, "codec": self.codec, "server_codec": self.server_codec,
                "server": self.server, "momentum": self.momentum, "nesterov": self.nesterov, "alpha": self.alpha,
                "compensation": self.compensation, "tie_to_zero": self.tie_to_zero,
                "shared_scale": self.shared_scale, "delay": self.delay, "seed": self.seed,
                "nonfinite": self.nonfinite, "backend": self.backend, "plain_below": self.plain_below,
                "plain_1d": self.plain_1d}

    def state_dict(self):
        """Configuration, iteration counter, metric counters and each Session's checkpoint (a uint8
        tensor under its parameter keys), so torch.save / torch.load(weights_only=True) handle it.
        Per rank: error memories differ between ranks. Call it between iterations."""
        blobs = dict(self._blobs)
        for keys, sess in self._sessions.items():
            blobs[keys] = _save_blob(sess)
        return {"version": STATE_VERSION, "config": self._config(), "rank": self.rank,
                "world_size": self.world_size, "iter": self.iter, "layout_changes": self.layout_changes,
                "counters": dict(self._totals),
                "sessions": {";".join(k): torch.from_numpy(np.frombuffer(v, dtype=np.uint8).copy())
                             for k, v in blobs.items()}}

    def load_state_dict(self, sd):
        """Restores state_dict() of a hook with the same configuration (checked now; rank and world
        size at the first bucket). Load before the first iteration of the restored model."""
        if not isinstance(sd, dict) or sd.get("version") != STATE_VERSION:
            raise Error(Status.MISMATCH, f"load_state_dict: state version "
                                         f"{sd.get('version') if isinstance(sd, dict) else sd!r}, expected "
                                         f"{STATE_VERSION}")
        mine = self._config()
        for key, value in mine.items():
            if sd["config"].get(key) != value:
                raise Error(Status.MISMATCH, f"load_state_dict: {key} is {sd['config'].get(key)!r} in the state, "
                                             f"{value!r} here")
        for sess in self._sessions.values():
            sess.close()
        self._sessions = {}
        self._blobs = {tuple(k.split(";")): (v.detach().cpu().numpy() if isinstance(v, torch.Tensor)
                                             else np.asarray(v)).astype(np.uint8).tobytes()
                       for k, v in sd["sessions"].items()}
        self.iter = int(sd["iter"])
        self._blob_iter = self.iter
        self.layout_changes = int(sd.get("layout_changes", 0))
        self._totals.update({k: type(self._totals[k])(v) for k, v in sd.get("counters", {}).items()
                             if k in self._totals})
        self._expect = (int(sd["rank"]), int(sd["world_size"]))

    # ----------------------------------------------------------------------------------- metrics
    def metrics(self):
        """Metrics of the last completed iteration: per bucket and summed (bytes sent and received,
        uncompressed bytes, compression ratio, time in the hook, the sampled compression error), and
        the running totals. Bytes of compressed buckets are the Session's StepStats; a plain
        allreduce counts the tensor's bytes both ways."""
        out = dict(self._last)
        out["buckets"] = [dict(b) for b in self._last["buckets"]]
        out["totals"] = dict(self._totals)
        return out

    def _finish_iteration(self, iteration, compressed):
        # Entries of an earlier iteration can only be left over by a failed exchange: dropped.
        buckets = [b for b in self._iter_metrics if b["iteration"] == iteration]
        self._iter_metrics = []
        sent = sum(b["bytes_sent"] for b in buckets)
        recv = sum(b["bytes_received"] for b in buckets)
        raw = sum(b["uncompressed_bytes"] for b in buckets)
        hook = sum(b["hook_time_s"] for b in buckets)
        comm = sum(b.get("comm_time_s", 0.0) for b in buckets)
        codec = sum(b.get("codec_time_s", 0.0) for b in buckets)
        errs = [b["compression_error"] for b in buckets if b.get("compression_error") is not None]
        last = {"iteration": iteration, "compressed": compressed, "bytes_sent": sent, "bytes_received": recv,
                "uncompressed_bytes": raw, "compression_ratio": raw / sent if sent else None,
                "hook_time_s": hook, "comm_time_s": comm, "codec_time_s": codec, "compression_error": float(np.mean(errs)) if errs else None,
                "buckets": buckets}
        if self.track_norms:
            last["memory_norm_sq"] = sum(b.get("memory_norm_sq", 0.0) for b in buckets)
        self._last = last
        t = self._totals
        t["iterations"] += 1
        t["compressed_iterations"] += int(compressed)
        t["bytes_sent"] += sent
        t["bytes_received"] += recv
        t["uncompressed_bytes"] += raw
        t["hook_time_s"] += hook
        t["comm_time_s"] += comm
        t["codec_time_s"] += codec
        if self.writer is not None:
            p = self.writer_prefix
            w = self.writer
            w.add_scalar(f"{p}/bytes_sent", sent, iteration)
            w.add_scalar(f"{p}/bytes_received", recv, iteration)
            if sent:
                w.add_scalar(f"{p}/compression_ratio", raw / sent, iteration)
            w.add_scalar(f"{p}/hook_time_ms", 1e3 * hook, iteration)
            if errs:
                w.add_scalar(f"{p}/compression_error", float(np.mean(errs)), iteration)
            for b in buckets:
                q = f"{p}/bucket{b['index']}"
                w.add_scalar(f"{q}/bytes_sent", b["bytes_sent"], iteration)
                w.add_scalar(f"{q}/hook_time_ms", 1e3 * b["hook_time_s"], iteration)

    # ----------------------------------------------------------------------------------- exchange
    def _plain(self, flat, divide=True):
        """Mean over the ranks by allreduce (as DDP: divide first, then sum)."""
        if divide:
            flat.div_(self.world_size)
        dist.all_reduce(flat, group=self._group)

    def _exchange(self, plan, buffer, lrs, iteration, sample):
        """One bucket's exchange on the worker thread; returns the bucket's metrics."""
        flat = buffer.view(-1)
        elem = buffer.element_size()
        m = {"index": plan.index, "iteration": iteration, "numel": plan.numel, "compressed_numel": plan.comp_numel,
             "uncompressed_bytes": plan.numel * elem, "bytes_sent": 0, "bytes_received": 0, "bytes_down": 0,
             "compression_error": None, "comm_time_s": 0.0, "codec_time_s": 0.0}
        if plan.plain:
            t = plan.gather(flat, plan.plain, plan.plain_range)
            t0 = time.perf_counter()
            self._plain(t)
            m["comm_time_s"] += time.perf_counter() - t0
            plan.scatter(flat, plan.plain, plan.plain_range, t)
            m["bytes_sent"] += plan.plain_numel * elem
            m["bytes_received"] += plan.plain_numel * elem
        if plan.comp:
            g = plan.gather(flat, plan.comp, plan.comp_range, plan.comp_buffer(flat))
            sess = self._session(plan, iteration)
            if sess is None:
                t0 = time.perf_counter()
                self._plain(g)
                m["comm_time_s"] += time.perf_counter() - t0
                plan.scatter(flat, plan.comp, plan.comp_range, g)
                m["bytes_sent"] += plan.comp_numel * elem
                m["bytes_received"] += plan.comp_numel * elem
                return m
            if g.dtype != torch.float32:
                # host-f32: bf16/fp16 widen exactly (float64 rounds); cpu: widened exactly to double.
                g = g.float() if self.backend == "host-f32" else g.double()
            scale = self._scale(plan, lrs, g)
            if sample:
                m["compression_error"] = self._compression_error(plan, g, sess)
            if scale is not None:
                # In place: g is the bucket's own memory (or a copy of it), which the result
                # overwrites anyway; the same rounding as g * scale.
                g.mul_(scale)
            if plan.update is None or plan.update.dtype != g.dtype:
                plan.update = torch.empty(plan.comp_numel, dtype=g.dtype)
            u = sess.step(g, update=plan.update)
            if u.dtype == flat.dtype:
                plan.write_update(flat, u, scale)
            else:
                if scale is not None:
                    u = u / scale
                plan.scatter(flat, plan.comp, plan.comp_range, u.to(flat.dtype) if u.dtype != flat.dtype else u)
            st = sess.last_stats
            m["bytes_sent"] += st.bytes_up
            m["bytes_received"] += st.bytes_received
            m["bytes_down"] += st.bytes_down
            m["comm_time_s"] += 1e-6 * st.comm_us
            m["codec_time_s"] += 1e-6 * (st.encode_us + st.decode_us + st.update_us)
            m["skipped"] = st.skipped
            if self.track_norms:
                m["memory_norm_sq"] = st.memory_norm_sq
                m["compression_error_sq"] = st.compression_error_sq
        return m

    def _scale(self, plan, lrs, g):
        """lr per element of the compressed part (a float, a tensor, or None when not used)."""
        if lrs is None:
            return None
        comp_lrs = [lrs[i] if len(lrs) > 1 else lrs[0] for i in plan.comp]
        if any(not lr > 0 or math.isinf(lr) for lr in comp_lrs):
            raise _invalid(f"{self.algorithm} needs a finite learning rate > 0 (its error memory is in parameter "
                           f"units); the optimizer has {sorted(set(comp_lrs))}")
        if all(lr == comp_lrs[0] for lr in comp_lrs):
            return comp_lrs[0]
        key, cached = plan.lr_cache
        if key != tuple(comp_lrs):
            cached = torch.repeat_interleave(torch.tensor(comp_lrs, dtype=g.dtype),
                                             torch.tensor(plan.comp_sizes))
            plan.lr_cache = (tuple(comp_lrs), cached)
        return cached

    def _compression_error(self, plan, g, sess):
        """|C(g) - g|^2 / |g|^2 of the uplink codec on this rank's gradient (its own random bits)."""
        codec = Codec(self.codec, plan.comp_sizes, seed=bucket_seed(self.seed, int(plan.comp_keys[0].split(".")[0])))
        x = g.detach().to(torch.float32).contiguous()
        step = sess.step_count & 0xFFFFFFFF
        y = torch.from_numpy(codec.decode(codec.encode(x, rank=self.rank, step=step), rank=self.rank, step=step))
        norm = float(torch.dot(x, x))
        return float(torch.sum((y - x) ** 2)) / norm if norm > 0 else 0.0

    def _run(self, plan, buffer, lrs, iteration, sample, last, fut, t_hook):
        t0 = time.perf_counter()
        try:
            m = self._exchange(plan, buffer, lrs, iteration, sample)
            m["hook_time_s"] = t_hook + (time.perf_counter() - t0)
            self._iter_metrics.append(m)
            if last:
                self._finish_iteration(iteration, True)
        except BaseException as exc:  # noqa: BLE001 - handed to DDP through the future
            fut.set_exception(exc)
            return
        fut.set_result(buffer)


def gcomp_hook(state, bucket):
    """DDP communication hook: returns a torch.futures.Future of the bucket buffer holding the
    averaged gradient estimate of state's algorithm, identical on every rank. Register it with
    model.register_comm_hook(state, gcomp_hook)."""
    t0 = time.perf_counter()
    iteration = state.iter
    last = bucket.is_last()
    if last:
        state.iter += 1
    buffer = bucket.buffer()
    compressed = iteration >= state.start_iter and state.algorithm != "gd"
    if state.backend == "cuda" and buffer.device.type == "cuda":
        return _device_hook(state, bucket, iteration, last, compressed, t0)
    if not compressed:
        # Plain allreduce from this thread, as DDP's own hook: no gcomp collective is in flight
        # in an iteration without compression, so the process group's order is the bucket order.
        buffer.div_(state.world_size)
        fut = dist.all_reduce(buffer, group=state._group, async_op=True).get_future()
        n = buffer.numel() * buffer.element_size()
        state._iter_metrics.append({"index": bucket.index(), "iteration": iteration, "numel": buffer.numel(),
                                    "compressed_numel": 0, "uncompressed_bytes": n, "bytes_sent": n,
                                    "bytes_received": n, "bytes_down": 0, "compression_error": None,
                                    "hook_time_s": time.perf_counter() - t0})
        if last:
            state._finish_iteration(iteration, False)
        return fut.then(_first)  # torch's Python hooks must complete with a tensor, not a list
    if buffer.device.type != "cpu":
        raise _invalid(f"gcomp DDP hook: backend={state.backend!r} takes CPU buckets, got one on {buffer.device}; "
                       "use backend='cuda' for CUDA models")
    plan = state._plan(bucket)
    lrs = state._lrs(plan)
    sample = state.error_every > 0 and iteration % state.error_every == 0
    if state._worker is None:
        state._worker = _Worker()
    fut = torch.futures.Future()
    t_hook = time.perf_counter() - t0
    if last and state._worker.idle():
        # The iteration's last bucket with no exchange in flight: the backward pass has nothing
        # left to overlap it with, so it runs here, without two thread handoffs.
        state._run(plan, buffer, lrs, iteration, sample, last, fut, t_hook)
        return fut
    state._worker.submit(lambda: state._run(plan, buffer, lrs, iteration, sample, last, fut, t_hook))
    return fut


def _first(fut):
    return fut.value()[0]


def _device_hook(state, bucket, iteration, last, compressed, t0):
    """backend "cuda": the exchange is enqueued on torch's current CUDA stream (gcomp nccl
    communicator for the Session, the process group for plain parts); the future is complete at
    return, the work ordered on the stream. Not yet run on a GPU (docs/python.md)."""
    buffer = bucket.buffer()
    if buffer.dtype not in (torch.float32, torch.bfloat16, torch.float16):
        raise _invalid(f"gcomp DDP hook (backend='cuda'): bucket dtype {buffer.dtype} is not float32, bfloat16 "
                       "or float16")
    flat = buffer.view(-1)
    elem = buffer.element_size()
    m = {"index": bucket.index(), "iteration": iteration, "numel": flat.numel(), "compressed_numel": 0,
         "uncompressed_bytes": flat.numel() * elem, "bytes_sent": 0, "bytes_received": 0, "bytes_down": 0,
         "compression_error": None}
    if not compressed:
        state._plain(flat)
        m["bytes_sent"] = m["bytes_received"] = flat.numel() * elem
    else:
        plan = state._plan(bucket)
        m["compressed_numel"] = plan.comp_numel
        if plan.plain:
            t = plan.gather(flat, plan.plain, plan.plain_range)
            state._plain(t)
            plan.scatter(flat, plan.plain, plan.plain_range, t)
            m["bytes_sent"] += plan.plain_numel * elem
            m["bytes_received"] += plan.plain_numel * elem
        if plan.comp:
            g = plan.gather(flat, plan.comp, plan.comp_range)
            sess = state._session(plan, iteration)
            if sess is None:
                state._plain(g)
                plan.scatter(flat, plan.comp, plan.comp_range, g)
            else:
                scale = state._scale(plan, state._lrs(plan), g)
                if scale is not None:
                    g = g.float() * (scale.to(g.device) if isinstance(scale, torch.Tensor) else scale)
                u = sess.step(g.contiguous())  # Session::step_device on the current stream; float32
                if scale is not None:
                    u = u / (scale.to(u.device) if isinstance(scale, torch.Tensor) else scale)
                plan.scatter(flat, plan.comp, plan.comp_range, u.to(flat.dtype))
                st = sess.last_stats
                m["bytes_sent"] += st.bytes_up
                m["bytes_received"] += st.bytes_received
                m["bytes_down"] += st.bytes_down
    m["hook_time_s"] = time.perf_counter() - t0
    state._iter_metrics.append(m)
    if last:
        state._finish_iteration(iteration, compressed)
    fut = torch.futures.Future()
    fut.set_result(buffer)
    return fut


def _save_blob(sess):
    fd, path = tempfile.mkstemp(prefix="gcomp_ddp_")
    os.close(fd)
    try:
        sess.save(path)
        with open(path, "rb") as f:
            return f.read()
    finally:
        os.unlink(path)


def _load_blob(sess, blob):
    fd, path = tempfile.mkstemp(prefix="gcomp_ddp_")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(blob)
        sess.load(path)
    finally:
        os.unlink(path)


__all__ = ["ALGORITHMS", "GcompState", "bucket_seed", "gcomp_hook"]
