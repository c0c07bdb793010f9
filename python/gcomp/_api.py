# SPDX-License-Identifier: Apache-2.0
"""Codecs, communicators and sessions over NumPy arrays and torch tensors, on the compiled
extension gcomp._core (pybind11 bindings of the C++ API). docs/python.md is the manual.

The extension takes host buffers of the exact element type (C-contiguous NumPy arrays, anything
with the buffer protocol, contiguous CPU torch tensors) and checks them. This layer adds the
conveniences: inputs of other dtypes or layouts are converted, CUDA tensors are copied to the host,
and outputs of another dtype, layout or device are written through a temporary and copied back.
"""
import dataclasses
import math
import operator

import numpy as np

from . import _core
from ._errors import Error, Status

_U64 = (1 << 64) - 1

_TORCH_NAMES = {np.dtype(np.float32): "torch.float32", np.dtype(np.float64): "torch.float64",
                np.dtype(np.uint8): "torch.uint8"}


def _invalid(message):
    return Error(Status.INVALID_ARGUMENT, message)


def _integer(value, what, lo=None, hi=None):
    """value as an int (anything with __index__: int, NumPy integers; not bool, float or str), in
    [lo, hi]; otherwise Error(INVALID_ARGUMENT) naming `what`. Never truncated or wrapped."""
    if isinstance(value, (bool, np.bool_)) or not hasattr(type(value), "__index__"):
        raise _invalid(f"{what}: expected an integer, got {type(value).__name__} {value!r}")
    v = operator.index(value)
    if (lo is not None and v < lo) or (hi is not None and v > hi):
        lo_text = "" if lo is None else str(lo)
        hi_text = "" if hi is None else ("2^64-1" if hi == _U64 else str(hi))
        raise _invalid(f"{what}: {v} is outside {lo_text}..{hi_text}")
    return v


def _real(value, what, lo, hi=math.inf, lo_open=False, hi_open=False):
    """value as a finite float in the range; otherwise Error(INVALID_ARGUMENT) naming `what`."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise _invalid(f"{what}: expected a number, got {type(value).__name__} {value!r}") from None
    ok = math.isfinite(v) and (v > lo if lo_open else v >= lo) and (v < hi if hi_open else v <= hi)
    if not ok:
        rng = ("(" if lo_open else "[") + f"{lo:g}, " + ("inf)" if hi == math.inf else f"{hi:g}" + (")" if hi_open else "]"))
        raise _invalid(f"{what}: {value!r} is not a finite number in {rng}")
    return v


def _seed(seed, what="seed"):
    return _integer(seed, what, 0, _U64)


def _segments(segments):
    """Segment sizes as a list of ints (one integer means one flat segment)."""
    if isinstance(segments, (str, bytes, bytearray)) or segments is None:
        raise _invalid(f"segments: expected an integer or a sequence of integers, got {type(segments).__name__} "
                       f"{segments!r}")
    if hasattr(type(segments), "__index__") and not isinstance(segments, (bool, np.bool_)):
        segments = [segments]
    try:
        items = list(segments)
    except TypeError:
        raise _invalid(f"segments: expected an integer or a sequence of integers, got {type(segments).__name__} "
                       f"{segments!r}") from None
    sizes = [_integer(s, "segments", 0) for s in items]
    if not sizes:
        raise _invalid("segments: need at least one segment size")
    return sizes


def _is_torch(x):
    return type(x).__module__.split(".")[0] == "torch" and hasattr(x, "data_ptr")


def _torch_dtype(x):
    return str(x.dtype) if _is_torch(x) else None


def _numel(x):
    return x.numel() if _is_torch(x) else np.size(x)


def _direct(x, dtype):
    """True when the extension can use x in place as a host buffer of `dtype`."""
    if _is_torch(x):
        return x.device.type == "cpu" and x.is_contiguous() and str(x.dtype) == _TORCH_NAMES.get(np.dtype(dtype))
    return isinstance(x, np.ndarray) and x.dtype == dtype and x.flags.c_contiguous


def _input(x, dtype):
    """x as a host buffer of `dtype` for reading (no copy when it already is one)."""
    if _is_torch(x):
        if _direct(x, dtype):
            return x
        import torch
        return x.detach().to(device="cpu", dtype=getattr(torch, np.dtype(dtype).name)).contiguous()
    if isinstance(x, (bytes, bytearray, memoryview)) and np.dtype(dtype) == np.uint8:
        return x
    return np.ascontiguousarray(x, dtype=dtype)


def _check_count(x, n, what):
    if _numel(x) != n:
        raise Error(Status.INVALID_ARGUMENT, f"{what}: expected {n} elements, got {_numel(x)}")


def _check_writable(x, what):
    if not _is_torch(x):
        if not isinstance(x, np.ndarray):
            raise Error(Status.INVALID_ARGUMENT,
                        f"{what}: expected a NumPy array or torch tensor, got {type(x).__name__}")
        if not x.flags.writeable:
            raise Error(Status.INVALID_ARGUMENT, f"{what}: the array is read-only")


def _copy_back(dst, tmp):
    if _is_torch(dst):
        import torch
        with torch.no_grad():
            dst.copy_(torch.from_numpy(tmp).reshape(dst.shape))
    else:
        dst[...] = tmp.reshape(dst.shape)
    return dst


def _output(out, dtype, n, what):
    """(buffer the extension writes, finish()) for an output argument; finish() returns what the
    call returns. Used in place when possible, else through a temporary copied back by finish()."""
    if out is None:
        return None, lambda result: result
    _check_writable(out, what)
    if _direct(out, dtype):
        return (out.detach() if _is_torch(out) else out), lambda _result: out
    _check_count(out, n, what)
    tmp = np.empty(n, dtype=dtype)
    return tmp, lambda _result: _copy_back(out, tmp)


def _inout(x, dtype, n, what):
    """(buffer holding x's values as `dtype`, finish()) for an in/out argument."""
    _check_writable(x, what)
    if _direct(x, dtype):
        return (x.detach() if _is_torch(x) else x), lambda: x
    _check_count(x, n, what)
    src = x.detach().cpu().numpy() if _is_torch(x) else x
    tmp = np.array(src, dtype=dtype).reshape(-1)
    return tmp, lambda: _copy_back(x, tmp)


@dataclasses.dataclass(frozen=True)
class Guarantee:
    """What a codec promises about its error: kind 'none', 'unbiased' (E C(x) = x,
    E|C(x)-x|^2 <= omega |x|^2) or 'contractive' (E|C(x)-x|^2 <= (1-delta) |x|^2)."""

    kind: str
    omega: float
    delta: float


class Codec:
    """A codec: a spec string, a tensor layout (segment sizes; one int for a flat buffer) and a
    seed. Payload sizes are exact and known before any data exists. Immutable and thread safe:
    any number of threads may encode and decode with one Codec (the GIL is released meanwhile)."""

    def __init__(self, spec, segments, seed=0):
        self.spec = str(spec)
        self.segments = _segments(segments)
        self.seed = _seed(seed)
        self._core = _core.Codec(self.spec, self.segments, self.seed)
        self.num_elems = self._core.num_elems
        self.encoded_bytes = self._core.encoded_bytes
        self.framed_bytes = self._core.framed_bytes
        self.encoded_bits = self._core.encoded_bits
        self.guarantee = Guarantee(*self._core.guarantee)
        # True for sdither and topk index=rice: their messages travel at used_bytes(payload).
        self.variable_length = self._core.variable_length

    @property
    def canonical_spec(self):
        """The spec with every parameter, in a fixed order."""
        return self._core.spec

    def close(self):
        """Kept for compatibility: a Codec holds no resource that needs closing."""

    def __repr__(self):
        return (f"gcomp.Codec({self.spec!r}, segments={self.segments}, seed={self.seed}: "
                f"{self.encoded_bytes} bytes, {self.encoded_bits:g} bits)")

    def encode(self, x, rank=0, step=0, seed=None, out=None):
        """Raw payload of x (float32; other dtypes are converted) as a uint8 array of encoded_bytes.
        Deterministic: a function of (spec, layout, seed, rank, step, x), byte-identical to the C
        and C++ APIs. `seed` overrides the codec's seed for this call."""
        xs = _input(x, np.float32)
        buf, finish = _output(out, np.uint8, self.encoded_bytes, "encode: out")
        return finish(self._core.encode(xs, rank=rank, step=step, seed=seed, out=buf))

    def used_bytes(self, payload):
        """Bytes of a raw payload that carry its message: what the Session and the communicators send
        (its length field says; the rest of a full payload is zero padding). encoded_bytes for the
        fixed-size codecs."""
        return int(self._core.used_bytes(_input(payload, np.uint8)))

    def decode(self, payload, rank=0, step=0, seed=None, out=None):
        """float32 array of num_elems decoded from a raw payload (validated first)."""
        p = _input(payload, np.uint8)
        buf, finish = _output(out, np.float32, self.num_elems, "decode: out")
        return finish(self._core.decode(p, rank=rank, step=step, seed=seed, out=buf))

    def decode_accumulate(self, payload, out, weight=1.0, rank=0, step=0, seed=None):
        """out += weight * decode(payload), in float32, in place; returns out."""
        p = _input(payload, np.uint8)
        buf, finish = _inout(out, np.float32, self.num_elems, "decode_accumulate: out")
        self._core.decode_accumulate(p, buf, weight=float(weight), rank=rank, step=step, seed=seed)
        return finish()

    def frame(self, payload, rank=0, step=0, seed=None):
        """Self-describing frame (wire format v1, docs/wire-format.md) of a raw payload, as the
        .gcp files of gcomp-codec."""
        return self._core.frame(_input(payload, np.uint8), rank=rank, step=step, seed=seed)

    def parse_frame(self, framed, seed=None):
        """Validates a frame against this codec; returns (raw payload, rank, step)."""
        return self._core.parse_frame(_input(framed, np.uint8), seed=seed)

    def bits_report(self, x, rank=0, step=0, seed=None, draws=32):
        """Bits-vs-variance report of this codec on x (as `gcomp-codec bits`): message bits, the
        declared and measured error, and the ratios to the lower bound, as a dict."""
        return self._core.bits_report(_input(x, np.float32), rank=rank, step=step, seed=seed, draws=draws)


class Communicator:
    """One rank of a gcomp communicator (an in-process local group, or MPI). Used by one thread at
    a time; the ranks of a local group each need their own thread."""

    def __init__(self, core):
        self._core = core
        self.rank = core.rank
        self.size = core.size

    @property
    def closed(self):
        return self._core.closed

    def abort(self, reason=None):
        """Fails the collectives waiting now and every later one (on every rank of a local group)
        with Status.TIMEOUT carrying `reason`."""
        self._core.abort(None if reason is None else str(reason))

    def close(self):
        """Releases this rank's handle (sessions created on it keep it alive)."""
        self._core.close()

    def __repr__(self):
        return f"gcomp.Communicator(rank={self.rank}, size={self.size})"


def local_group(num_ranks, timeout_ms=0):
    """num_ranks connected in-process communicators (rank r at index r). Drive each from its own
    thread: collectives block until every rank has entered them. timeout_ms 0 means the
    GCOMP_COMM_TIMEOUT_MS environment variable, else 300 s."""
    return [Communicator(c) for c in _core.local_group(_integer(num_ranks, "num_ranks", 1, 2 ** 31 - 1),
                                                       _integer(timeout_ms, "timeout_ms", 0, 2 ** 63 - 1))]


def mpi_comm(timeout_ms=0):
    """This process's communicator over MPI_COMM_WORLD (Status.NOT_SUPPORTED in builds without MPI)."""
    return Communicator(_core.mpi_comm(_integer(timeout_ms, "timeout_ms", 0, 2 ** 63 - 1)))


def nccl_unusable():
    """'' when this build has the nccl backend, NCCL loads and a CUDA device is visible, else the reason.

    Loads NCCL on the first call (as nccl_comm() does): the library named by GCOMP_NCCL_LIBRARY, else
    the libnccl.so.2 already in the process (torch's, once torch is imported), else the CUDA toolkit's.
    With torch in the same process, import torch before this call (docs/python.md)."""
    return _core.nccl_unusable()


def nccl_library():
    """(path, version code) of the NCCL the nccl backend uses, e.g. ('/…/libnccl.so.2', 22809) for 2.28.9;
    ('', 0) when it cannot be loaded (nccl_unusable() says why) or the build has no nccl backend.
    Loads NCCL on the first call, like nccl_unusable()."""
    return tuple(_core.nccl_library())


def nccl_comm(rank=None, world_size=None, master_addr=None, master_port=None, device=-1, timeout_ms=0):
    """This process's rank of a gcomp nccl communicator (device buffers, one process per GPU),
    the NCCL id exchanged over TCP: rank 0 listens on master_addr:master_port.

    Defaults come from the launcher environment that torchrun and torch.distributed use: rank from
    RANK, world_size from WORLD_SIZE, master_addr from MASTER_ADDR, and the port from
    GCOMP_NCCL_PORT, else MASTER_PORT + 1, so that it does not collide with torch's own store on
    MASTER_PORT. device -1: LOCAL_RANK, else rank modulo the device count. Collective: every rank
    calls it. Status.NOT_SUPPORTED (with the reason) without the nccl backend or a CUDA device."""
    import os

    def env_int(name):
        v = os.environ.get(name)
        if v is None or v.strip() == "":
            return None
        try:
            return int(v)
        except ValueError:
            raise Error(Status.INVALID_ARGUMENT, f"nccl_comm: {name}={v!r} is not an integer") from None

    why = _core.nccl_unusable()
    if why:
        raise Error(Status.NOT_SUPPORTED, f"nccl_comm: {why}")
    rank = env_int("RANK") if rank is None else int(rank)
    world_size = env_int("WORLD_SIZE") if world_size is None else int(world_size)
    master_addr = os.environ.get("MASTER_ADDR") if master_addr is None else str(master_addr)
    if master_port is None:
        master_port = env_int("GCOMP_NCCL_PORT")
        if master_port is None:
            base = env_int("MASTER_PORT")
            master_port = None if base is None else base + 1
    missing = [name for name, v in (("rank (RANK)", rank), ("world_size (WORLD_SIZE)", world_size),
                                    ("master_addr (MASTER_ADDR)", master_addr),
                                    ("master_port (GCOMP_NCCL_PORT or MASTER_PORT)", master_port)) if v is None]
    if missing:
        raise Error(Status.INVALID_ARGUMENT, "nccl_comm: not set: " + ", ".join(missing))
    return Communicator(_core.nccl_comm(rank, world_size, master_addr, int(master_port), int(device), int(timeout_ms)))


@dataclasses.dataclass(frozen=True)
class StepStats:
    """What one session step did (gcomp::StepStats). The norms are filled with track_norms=True,
    the phase times (microseconds on this rank: encode, collectives, decode, update) with
    time_phases=True."""

    step: int
    bytes_up: int
    bytes_down: int
    bytes_received: int
    bits_per_element_up: float
    bits_per_element_down: float
    skipped: bool
    memory_norm_sq: float = 0.0
    compression_error_sq: float = 0.0
    encode_us: float = 0.0
    comm_us: float = 0.0
    decode_us: float = 0.0
    update_us: float = 0.0


_16BIT = ("torch.bfloat16", "torch.float16")


def _direct_16(t):
    return t.device.type == "cpu" and t.is_contiguous()


class Session:
    """One rank's side of a compressed distributed algorithm (docs/algorithms.md). Creating it is
    collective: every rank of `comm` constructs its Session (each on its own thread for a local
    group) with an equal configuration and layout; otherwise every rank raises Status.MISMATCH."""

    def __init__(self, comm, segments, algorithm="gd", codec="identity", server_codec="identity", lr=0.1,
                 alpha=None, momentum=0.0, nesterov=True, delay=0, seed=0, nonfinite="error",
                 server="replicated", prox=None, prox_lambda=0.0, tie_to_zero=True, shared_scale=True,
                 compensation="hessian", hessian_product=None, hessian_diagonal=None, track_norms=False,
                 backend="cpu", time_phases=False):
        if not isinstance(comm, Communicator) or comm.closed:
            raise Error(Status.INVALID_ARGUMENT, "Session: comm must be an open gcomp.Communicator")
        self.segments = _segments(segments)
        cfg = _core.SessionConfig()
        cfg.algorithm = str(algorithm)
        cfg.codec = str(codec)
        cfg.server_codec = str(server_codec)
        # Every number is checked here, naming the argument; none is replaced by a default.
        cfg.lr = _real(lr, "lr", 0.0)
        cfg.alpha = -1.0 if alpha is None else _real(alpha, "alpha (None: 1/(omega+1))", 0.0, 1.0, lo_open=True)
        cfg.momentum = _real(momentum, "momentum", 0.0, 1.0, hi_open=True)
        cfg.nesterov = bool(nesterov)
        cfg.delay = _integer(delay, "delay", 0, 2 ** 31 - 2)
        cfg.seed = _seed(seed)
        cfg.nonfinite = _choice(nonfinite, "nonfinite")
        cfg.server = _choice(server, "server")
        cfg.prox = "none" if prox is None else _choice(prox, "prox")
        cfg.prox_lambda = _real(prox_lambda, "prox_lambda", 0.0)
        cfg.tie_to_zero = bool(tie_to_zero)
        cfg.shared_scale = bool(shared_scale)
        cfg.compensation = _choice(compensation, "compensation")
        cfg.track_norms = bool(track_norms)
        cfg.time_phases = bool(time_phases)
        cfg.backend = _choice(backend, "backend")
        cfg.hessian_product = hessian_product
        cfg.hessian_diagonal = hessian_diagonal
        self.comm = comm
        self.algorithm = str(algorithm)
        self.last_stats = None
        self._core = _core.Session(comm._core, self.segments, cfg)
        self.num_elems = self._core.num_elems
        self.backend = self._core.backend

    @property
    def step_count(self):
        """Number of completed (not skipped) steps."""
        return self._core.step_count

    @property
    def alpha(self):
        """DIANA's alpha in use (after auto), else 0."""
        return self._core.alpha

    def _stats(self, raw):
        self.last_stats = StepStats(**raw)
        return self.last_stats

    def step(self, grad, update=None):
        """One collective round: returns the update u (x <- x - u), written into `update` when
        given. float64 and float32 gradients give an update of the same dtype (the state stays in
        double); float16 and bfloat16 gradients (NumPy float16, torch float16/bfloat16) are widened
        exactly and give a float64 update. Stats: last_stats.

        backend="cuda" with a CUDA tensor gradient (float32, bfloat16 or float16): the step runs on
        the device, enqueued on torch's current CUDA stream of that device, and the update is a
        float32 CUDA tensor (`update`, when given, must be one). Other backends copy CUDA tensors
        to the host."""
        if self.backend == "cuda" and _is_torch(grad) and grad.device.type == "cuda":
            return self._step_device(grad, update)
        tdt = _torch_dtype(grad)
        if tdt in _16BIT or (tdt is None and isinstance(grad, np.ndarray) and grad.dtype == np.float16):
            if _is_torch(grad):
                g = grad if _direct_16(grad) else grad.detach().cpu().contiguous()
            else:
                g = np.ascontiguousarray(grad)
            dtype = np.float64
        else:
            if _dtype_of(grad) == np.uint16:
                raise Error(Status.INVALID_ARGUMENT, "step: grad is a uint16 array: for raw 16-bit float patterns "
                                                     "call step_bf16 or step_f16")
            dtype = np.float32 if _dtype_of(grad) == np.float32 else np.float64
            g = _input(grad, dtype)
        _check_count(g, self.num_elems, "step: grad")
        buf, finish = _output(update, dtype, self.num_elems, "step: update")
        result, stats = self._core.step(g, buf)
        self._stats(stats)
        return finish(result)

    def _step_device(self, grad, update):
        import torch
        g = grad.detach()
        if not g.is_contiguous():
            g = g.contiguous()
        u = torch.empty(self.num_elems, dtype=torch.float32, device=g.device) if update is None else update
        stream = torch.cuda.current_stream(g.device)
        self._stats(self._core.step_device(g, u.detach() if _is_torch(u) else u, stream.cuda_stream))
        return u

    def step_bf16(self, grad_bits, update=None):
        """step() on raw bfloat16 bit patterns (a uint16 array); float64 update."""
        return self._step_raw16(self._core.step_bf16, grad_bits, update)

    def step_f16(self, grad_bits, update=None):
        """step() on raw IEEE float16 bit patterns (a uint16 array); float64 update."""
        return self._step_raw16(self._core.step_f16, grad_bits, update)

    def _step_raw16(self, fn, grad_bits, update):
        g = grad_bits if _is_torch(grad_bits) else np.ascontiguousarray(grad_bits)
        buf, finish = _output(update, np.float64, self.num_elems, "step: update")
        result, stats = fn(g, buf)
        self._stats(stats)
        return finish(result)

    def apply(self, grad, x):
        """step() then x <- prox(x - u), in place; returns x. The session works in double: a
        float32 x is converted to double, updated, and rounded back to float32."""
        g = _input(grad, np.float64)
        buf, finish = _inout(x, np.float64, self.num_elems, "apply: x")
        _, stats = self._core.apply(g, buf)
        self._stats(stats)
        return finish()

    def state(self):
        """Copies of this rank's named state arrays (EF memories, shifts, momentum, ...)."""
        return self._core.state()

    def save(self, path):
        """Writes this rank's state to `path` (temporary file + rename). Not collective."""
        self._core.save(_path(path))

    def load(self, path):
        """Restores state saved by a session with the same configuration, layout, rank and world
        size; the run continues bit-identically. On failure the running state is untouched."""
        self._core.load(_path(path))

    def close(self):
        """Destroys the session (not collective)."""
        self._core.close()

    def __repr__(self):
        return f"gcomp.Session({self.algorithm!r}, rank={self.comm.rank}/{self.comm.size}, n={self.num_elems})"


# The names of each enum option: the library's one table per enum (<gcomp/names.hpp>, exported
# as _core.ENUM_NAMES), so a name added there is accepted here without an edit.
_CHOICES = {what: tuple(_core.ENUM_NAMES[what]) for what in ("nonfinite", "server", "prox", "compensation", "backend")}


def _choice(value, what):
    if not isinstance(value, str) or value not in _CHOICES[what]:
        valid = ", ".join(repr(k) for k in _CHOICES[what])
        raise Error(Status.INVALID_ARGUMENT, f"{what}: {value!r} is not one of {valid}")
    return value


def _path(path):
    import os
    return os.fsdecode(os.fspath(path))


def _dtype_of(x):
    """NumPy dtype of an array or torch tensor (None for a torch dtype NumPy lacks, e.g. bfloat16)."""
    if _is_torch(x):
        try:
            return np.dtype(str(x.dtype).replace("torch.", ""))
        except TypeError:
            return None
    return x.dtype if isinstance(x, np.ndarray) else np.asarray(x).dtype
