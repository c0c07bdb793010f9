# SPDX-License-Identifier: Apache-2.0
"""Codecs, communicators and sessions over NumPy arrays (and CPU/CUDA torch tensors, through host
copies), bound to the C ABI with ctypes. docs/python.md is the manual."""
import ctypes
import dataclasses
import os

import numpy as np

from . import _lib
from ._lib import Error, Status

_U64 = (1 << 64) - 1
_U32 = (1 << 32) - 1


def _segments(segments):
    """Segment sizes as a C int64 array (one int means one flat segment)."""
    if isinstance(segments, (int, np.integer)):
        segments = [int(segments)]
    sizes = [int(s) for s in segments]
    if not sizes:
        raise Error(Status.INVALID_ARGUMENT, "segments: need at least one segment size")
    arr = (ctypes.c_int64 * len(sizes))(*sizes)
    return arr, sizes


def _is_torch(x):
    return type(x).__module__.split(".")[0] == "torch" and hasattr(x, "detach")


def _input(x, dtype, n, what):
    """A C-contiguous host array of `dtype` with n elements, read-only use. Torch tensors (CPU or
    CUDA) are copied to host memory first."""
    if _is_torch(x):
        x = x.detach().cpu().numpy()
    arr = np.ascontiguousarray(x, dtype=dtype).reshape(-1)
    if n is not None and arr.size != n:
        raise Error(Status.INVALID_ARGUMENT, f"{what}: expected {n} elements, got {arr.size}")
    return arr


def _output(out, dtype, n, what):
    """(array the C call writes, finish()) for an output argument. A C-contiguous writable array of
    the right dtype (or a contiguous CPU torch tensor) is written in place; anything else is written
    through a temporary and copied back by finish()."""
    if out is None:
        arr = np.empty(n, dtype=dtype)
        return arr, lambda: arr
    if _is_torch(out):
        if out.device.type == "cpu" and out.is_contiguous() and _dtype_of(out) == dtype:
            view = out.detach().numpy().reshape(-1)
            _check_size(view, n, what)
            return view, lambda: out
        tmp = np.empty(n, dtype=dtype)
        if out.numel() != n:
            raise Error(Status.INVALID_ARGUMENT, f"{what}: expected {n} elements, got {out.numel()}")

        def finish_torch():
            import torch
            out.copy_(torch.from_numpy(tmp).reshape(out.shape))
            return out
        return tmp, finish_torch
    if not isinstance(out, np.ndarray):
        raise Error(Status.INVALID_ARGUMENT, f"{what}: expected a NumPy array or torch tensor, got {type(out).__name__}")
    _check_size(out, n, what)
    if out.dtype == dtype and out.flags.c_contiguous and out.flags.writeable:
        return out.reshape(-1), lambda: out
    if not out.flags.writeable:
        raise Error(Status.INVALID_ARGUMENT, f"{what}: array is read-only")
    tmp = np.empty(n, dtype=dtype)

    def finish_copy():
        out[...] = tmp.reshape(out.shape)
        return out
    return tmp, finish_copy


def _check_size(arr, n, what):
    if arr.size != n:
        raise Error(Status.INVALID_ARGUMENT, f"{what}: expected {n} elements, got {arr.size}")


def _inout(x, dtype, n, what):
    """(array holding x's values as `dtype`, finish()) for an in/out argument. A C-contiguous
    writable NumPy array or CPU torch tensor of `dtype` is used in place; anything else (another
    dtype, a CUDA tensor) goes through a converted copy that finish() writes back."""
    if _is_torch(x):
        if x.device.type == "cpu" and x.is_contiguous() and _dtype_of(x) == dtype:
            view = x.detach().numpy().reshape(-1)
            _check_size(view, n, what)
            return view, lambda: x
        tmp = _input(x, dtype, n, what).copy()

        def finish_torch():
            import torch
            x.copy_(torch.from_numpy(tmp).reshape(x.shape))
            return x
        return tmp, finish_torch
    if not isinstance(x, np.ndarray):
        raise Error(Status.INVALID_ARGUMENT, f"{what}: expected a NumPy array or torch tensor, got {type(x).__name__}")
    _check_size(x, n, what)
    if not x.flags.writeable:
        raise Error(Status.INVALID_ARGUMENT, f"{what}: array is read-only")
    if x.dtype == dtype and x.flags.c_contiguous:
        return x.reshape(-1), lambda: x
    tmp = np.ascontiguousarray(x, dtype=dtype).reshape(-1).copy()

    def finish_copy():
        x[...] = tmp.reshape(x.shape)
        return x
    return tmp, finish_copy


def _ptr(arr, ctype):
    return arr.ctypes.data_as(ctypes.POINTER(ctype))


def _bytes_input(payload, what):
    if _is_torch(payload):
        payload = payload.detach().cpu().numpy()
    if isinstance(payload, (bytes, bytearray, memoryview)):
        return np.frombuffer(payload, dtype=np.uint8)
    arr = np.ascontiguousarray(payload)
    if arr.dtype != np.uint8:
        raise Error(Status.INVALID_ARGUMENT, f"{what}: expected uint8 bytes, got dtype {arr.dtype}")
    return arr.reshape(-1)


def _u32(value, what):
    value = int(value)
    if not 0 <= value <= _U32:
        raise Error(Status.INVALID_ARGUMENT, f"{what}: {value} is outside 0..2^32-1")
    return value


@dataclasses.dataclass(frozen=True)
class Guarantee:
    """What a codec promises about its error: kind 'none', 'unbiased' (E C(x) = x,
    E|C(x)-x|^2 <= omega |x|^2) or 'contractive' (E|C(x)-x|^2 <= (1-delta) |x|^2)."""

    kind: str
    omega: float
    delta: float


class Codec:
    """A codec plan: a spec string, a tensor layout (segment sizes; one int for a flat buffer) and
    a seed. Payload sizes are exact and known before any data exists. Thread safe: any number of
    threads may encode and decode with one Codec."""

    def __init__(self, spec, segments, seed=0):
        self.spec = str(spec)
        self._seg_arr, self.segments = _segments(segments)
        self.seed = int(seed) & _U64
        self._plans = {}
        self._handle = self._plan(self.seed)
        h = self._handle
        lib = _lib.lib()
        n = ctypes.c_int64()
        _lib.check(lib.gcompPlanNumElems(h, ctypes.byref(n)))
        self.num_elems = n.value
        size = ctypes.c_size_t()
        _lib.check(lib.gcompPlanEncodedBytes(h, ctypes.byref(size)))
        self.encoded_bytes = size.value
        _lib.check(lib.gcompPlanFramedBytes(h, ctypes.byref(size)))
        self.framed_bytes = size.value
        bits = ctypes.c_double()
        _lib.check(lib.gcompPlanEncodedBits(h, ctypes.byref(bits)))
        self.encoded_bits = bits.value
        kind, omega, delta = ctypes.c_int(), ctypes.c_double(), ctypes.c_double()
        _lib.check(lib.gcompPlanGuarantee(h, ctypes.byref(kind), ctypes.byref(omega), ctypes.byref(delta)))
        names = {0: "none", 1: "unbiased", 2: "contractive"}
        self.guarantee = Guarantee(names.get(kind.value, "none"), omega.value, delta.value)

    def _plan(self, seed):
        seed = int(seed) & _U64
        plan = self._plans.get(seed)
        if plan is None:
            cfg = _lib.codec_config(self.spec, seed)
            handle = ctypes.c_void_p()
            _lib.check(_lib.lib().gcompPlanCreate(ctypes.byref(handle), ctypes.byref(cfg), self._seg_arr,
                                                  len(self.segments)))
            plan = self._plans.setdefault(seed, handle)
            if plan is not handle:
                _lib.lib().gcompPlanDestroy(handle)
        return plan

    def close(self):
        """Destroys the plans now (also done when the object is collected)."""
        plans, self._plans = getattr(self, "_plans", {}), {}
        for handle in plans.values():
            _lib.lib().gcompPlanDestroy(handle)

    def __del__(self):
        if _lib is not None and _lib._lib is not None:
            self.close()

    def __repr__(self):
        return (f"gcomp.Codec({self.spec!r}, segments={self.segments}, seed={self.seed}: "
                f"{self.encoded_bytes} bytes, {self.encoded_bits:g} bits)")

    def encode(self, x, rank=0, step=0, seed=None, out=None):
        """Raw payload of x (float32; other dtypes are converted) as a uint8 array of encoded_bytes.
        Deterministic: a function of (spec, layout, seed, rank, step, x), byte-identical to the C
        and C++ APIs. `seed` overrides the codec's seed for this call."""
        plan = self._plan(self.seed if seed is None else seed)
        xs = _input(x, np.float32, self.num_elems, "encode: x")
        buf, finish = _output(out, np.uint8, self.encoded_bytes, "encode: out")
        _lib.check(_lib.lib().gcompEncode(plan, _ptr(xs, ctypes.c_float), _u32(rank, "rank"), _u32(step, "step"),
                                          buf.ctypes.data_as(ctypes.c_void_p), buf.size))
        return finish()

    def decode(self, payload, rank=0, step=0, seed=None, out=None):
        """float32 array of num_elems decoded from a raw payload (validated first)."""
        plan = self._plan(self.seed if seed is None else seed)
        p = _bytes_input(payload, "decode: payload")
        buf, finish = _output(out, np.float32, self.num_elems, "decode: out")
        _lib.check(_lib.lib().gcompDecode(plan, p.ctypes.data_as(ctypes.c_void_p), p.size, _u32(rank, "rank"),
                                          _u32(step, "step"), _ptr(buf, ctypes.c_float)))
        return finish()

    def decode_accumulate(self, payload, out, weight=1.0, rank=0, step=0, seed=None):
        """out += weight * decode(payload), in float32, in place; returns out."""
        plan = self._plan(self.seed if seed is None else seed)
        p = _bytes_input(payload, "decode_accumulate: payload")
        buf, finish = _inout(out, np.float32, self.num_elems, "decode_accumulate: out")
        _lib.check(_lib.lib().gcompDecodeAccumulate(plan, p.ctypes.data_as(ctypes.c_void_p), p.size,
                                                    _u32(rank, "rank"), _u32(step, "step"), float(weight),
                                                    _ptr(buf, ctypes.c_float)))
        return finish()

    def frame(self, payload, rank=0, step=0, seed=None):
        """Self-describing frame (wire format v1, docs/wire-format.md) of a raw payload, as the
        .gcp files of gcomp-codec."""
        plan = self._plan(self.seed if seed is None else seed)
        p = _bytes_input(payload, "frame: payload")
        out = np.empty(self.framed_bytes, dtype=np.uint8)
        _lib.check(_lib.lib().gcompFramePayload(plan, p.ctypes.data_as(ctypes.c_void_p), p.size, _u32(rank, "rank"),
                                                _u32(step, "step"), out.ctypes.data_as(ctypes.c_void_p), out.size))
        return out

    def parse_frame(self, framed, seed=None):
        """Validates a frame against this codec; returns (raw payload, rank, step)."""
        plan = self._plan(self.seed if seed is None else seed)
        f = _bytes_input(framed, "parse_frame: framed")
        rank, step, offset = ctypes.c_uint32(), ctypes.c_uint32(), ctypes.c_size_t()
        _lib.check(_lib.lib().gcompParseFrame(plan, f.ctypes.data_as(ctypes.c_void_p), f.size, ctypes.byref(rank),
                                              ctypes.byref(step), ctypes.byref(offset)))
        return f[offset.value:offset.value + self.encoded_bytes].copy(), rank.value, step.value


class Communicator:
    """One rank of a gcomp communicator (an in-process local group, or MPI). Used by one thread at
    a time; the ranks of a local group each need their own thread."""

    def __init__(self, handle):
        self._handle = handle
        value = ctypes.c_int()
        _lib.check(_lib.lib().gcompCommRank(handle, ctypes.byref(value)))
        self.rank = value.value
        _lib.check(_lib.lib().gcompCommSize(handle, ctypes.byref(value)))
        self.size = value.value

    def abort(self, reason=None):
        """Fails the collectives waiting now and every later one (on every rank of a local group)
        with Status.TIMEOUT carrying `reason`."""
        _lib.check(_lib.lib().gcompCommAbort(self._handle, None if reason is None else str(reason).encode()))

    def close(self):
        """Releases this rank's handle (sessions created on it keep it alive)."""
        handle, self._handle = getattr(self, "_handle", None), None
        if handle:
            _lib.lib().gcompCommDestroy(handle)

    def __del__(self):
        if _lib is not None and _lib._lib is not None:
            self.close()

    def __repr__(self):
        return f"gcomp.Communicator(rank={self.rank}, size={self.size})"


def local_group(num_ranks, timeout_ms=0):
    """num_ranks connected in-process communicators (rank r at index r). Drive each from its own
    thread: collectives block until every rank has entered them. timeout_ms 0 means the
    GCOMP_COMM_TIMEOUT_MS environment variable, else 300 s."""
    n = int(num_ranks)
    if n < 1:
        raise Error(Status.INVALID_ARGUMENT, f"local_group: num_ranks must be >= 1, got {n}")
    handles = (ctypes.c_void_p * n)()
    _lib.check(_lib.lib().gcompCommCreateLocalGroup(n, int(timeout_ms), handles))
    return [Communicator(ctypes.c_void_p(handles[r])) for r in range(n)]


def mpi_comm(timeout_ms=0):
    """This process's communicator over MPI_COMM_WORLD (Status.NOT_SUPPORTED in builds without MPI)."""
    handle = ctypes.c_void_p()
    _lib.check(_lib.lib().gcompCommCreateMpi(int(timeout_ms), ctypes.byref(handle)))
    return Communicator(handle)


@dataclasses.dataclass(frozen=True)
class StepStats:
    """What one session step did (gcompStepStats_t)."""

    step: int
    bytes_up: int
    bytes_down: int
    bytes_received: int
    bits_per_element_up: float
    bits_per_element_down: float
    skipped: bool


_NONFINITE = {"error": 0, "skip": 1, "zero": 2}
_SERVER = {"replicated": 0, "sharded": 1}
_PROX = {None: 0, "none": 0, "l1": 1, "l2": 2}
_COMPENSATION = {"none": 0, "classical": 1, "hessian": 2, "diagonal": 3}


def _choice(table, value, what):
    try:
        return table[value]
    except (KeyError, TypeError):
        valid = ", ".join(repr(k) for k in table if k is not None)
        raise Error(Status.INVALID_ARGUMENT, f"{what}: {value!r} is not one of {valid}") from None


class Session:
    """One rank's side of a compressed distributed algorithm (docs/algorithms.md). Creating it is
    collective: every rank of `comm` constructs its Session (each on its own thread for a local
    group) with an equal configuration and layout; otherwise every rank raises Status.MISMATCH."""

    def __init__(self, comm, segments, algorithm="gd", codec="identity", server_codec="identity", lr=0.1,
                 alpha=None, momentum=0.0, nesterov=True, delay=0, seed=0, nonfinite="error",
                 server="replicated", prox=None, prox_lambda=0.0, tie_to_zero=True, shared_scale=True,
                 compensation="hessian", hessian_product=None, hessian_diagonal=None):
        if not isinstance(comm, Communicator) or not comm._handle:
            raise Error(Status.INVALID_ARGUMENT, "Session: comm must be an open gcomp.Communicator")
        self._seg_arr, self.segments = _segments(segments)
        cfg = _lib.session_config()
        self._strings = [str(algorithm).encode(), str(codec).encode(), str(server_codec).encode()]
        cfg.algorithm, cfg.codec_spec, cfg.server_codec_spec = self._strings
        cfg.lr = float(lr)
        cfg.alpha = -1.0 if alpha is None else float(alpha)
        cfg.momentum = float(momentum)
        cfg.nesterov = 1 if nesterov else 0
        cfg.delay = int(delay)
        cfg.seed = int(seed) & _U64
        cfg.nonfinite = _choice(_NONFINITE, nonfinite, "nonfinite")
        cfg.server = _choice(_SERVER, server, "server")
        cfg.prox = _choice(_PROX, prox, "prox")
        cfg.prox_lambda = float(prox_lambda)
        cfg.tie_to_zero = 1 if tie_to_zero else 0
        cfg.shared_scale = 1 if shared_scale else 0
        cfg.compensation = _choice(_COMPENSATION, compensation, "compensation")
        self._callback_error = None
        self._callbacks = []
        if hessian_product is not None:
            cfg.hessian_product = self._wrap_product(hessian_product)
        if hessian_diagonal is not None:
            cfg.hessian_diagonal = self._wrap_diagonal(hessian_diagonal)
        self.comm = comm
        self.algorithm = str(algorithm)
        self.last_stats = None
        handle = ctypes.c_void_p()
        _lib.check(_lib.lib().gcompSessionCreate(ctypes.byref(handle), comm._handle, ctypes.byref(cfg),
                                                 self._seg_arr, len(self.segments)))
        self._handle = handle
        n = ctypes.c_int64()
        _lib.check(_lib.lib().gcompSessionNumElems(handle, ctypes.byref(n)))
        self.num_elems = n.value

    def _wrap_product(self, fn):
        def product(v, out, n, _user):
            try:
                fn(np.ctypeslib.as_array(v, shape=(n,)), np.ctypeslib.as_array(out, shape=(n,)))
                return 0
            except Exception as exc:  # reported by step() as the cause of its Error
                self._callback_error = exc
                return int(Status.INVALID_ARGUMENT)
        cb = _lib.HESSIAN_PRODUCT_FN(product)
        self._callbacks.append(cb)
        return cb

    def _wrap_diagonal(self, fn):
        def diagonal(out, n, _user):
            try:
                fn(np.ctypeslib.as_array(out, shape=(n,)))
                return 0
            except Exception as exc:  # reported by step() as the cause of its Error
                self._callback_error = exc
                return int(Status.INVALID_ARGUMENT)
        cb = _lib.HESSIAN_DIAGONAL_FN(diagonal)
        self._callbacks.append(cb)
        return cb

    def _call(self, fn, *args):
        self._callback_error = None
        status = fn(self._live(), *args)
        if status != 0:
            cause = self._callback_error
            try:
                _lib.check(status)
            except Error as err:
                if cause is not None:
                    raise err from cause
                raise

    def _live(self):
        if not getattr(self, "_handle", None):
            raise Error(Status.INVALID_ARGUMENT, "session is closed")
        return self._handle

    @property
    def step_count(self):
        """Number of completed (not skipped) steps."""
        value = ctypes.c_uint64()
        _lib.check(_lib.lib().gcompSessionStepCount(self._live(), ctypes.byref(value)))
        return value.value

    def _stats(self, raw):
        self.last_stats = StepStats(raw.step, raw.bytes_up, raw.bytes_down, raw.bytes_received,
                                    raw.bits_per_element_up, raw.bits_per_element_down, bool(raw.skipped))
        return self.last_stats

    def step(self, grad, update=None):
        """One collective round: returns the update u (x <- x - u), written into `update` when
        given. float64 gradients use the double entry point; float32 gradients (NumPy or torch)
        gcompSessionStepF32 (state in double, update rounded to float). Stats: last_stats."""
        dtype = np.float32 if _dtype_of(grad) == np.float32 else np.float64
        g = _input(grad, dtype, self.num_elems, "step: grad")
        buf, finish = _output(update, dtype, self.num_elems, "step: update")
        stats = _lib.new_step_stats()
        if dtype == np.float32:
            self._call(_lib.lib().gcompSessionStepF32, _ptr(g, ctypes.c_float), _ptr(buf, ctypes.c_float),
                       ctypes.byref(stats))
        else:
            self._call(_lib.lib().gcompSessionStep, _ptr(g, ctypes.c_double), _ptr(buf, ctypes.c_double),
                       ctypes.byref(stats))
        self._stats(stats)
        return finish()

    def apply(self, grad, x):
        """step() then x <- prox(x - u), in place; returns x. The C ABI's apply works in double: a
        float32 x is converted to double, updated, and rounded back to float32."""
        g = _input(grad, np.float64, self.num_elems, "apply: grad")
        buf, finish = _inout(x, np.float64, self.num_elems, "apply: x")
        stats = _lib.new_step_stats()
        self._call(_lib.lib().gcompSessionApply, _ptr(g, ctypes.c_double), _ptr(buf, ctypes.c_double),
                   ctypes.byref(stats))
        self._stats(stats)
        return finish()

    def save(self, path):
        """Writes this rank's state to `path` (temporary file + rename). Not collective."""
        self._call(_lib.lib().gcompSessionSave, os.fsencode(path))

    def load(self, path):
        """Restores state saved by a session with the same configuration, layout, rank and world
        size; the run continues bit-identically. On failure the running state is untouched."""
        self._call(_lib.lib().gcompSessionLoad, os.fsencode(path))

    def close(self):
        """Destroys the session (not collective)."""
        handle, self._handle = getattr(self, "_handle", None), None
        if handle:
            _lib.lib().gcompSessionDestroy(handle)

    def __del__(self):
        if _lib is not None and _lib._lib is not None:
            self.close()

    def __repr__(self):
        return f"gcomp.Session({self.algorithm!r}, rank={self.comm.rank}/{self.comm.size}, n={self.num_elems})"


def _dtype_of(x):
    """NumPy dtype of an array or torch tensor (None for a torch dtype NumPy lacks, e.g. bfloat16)."""
    if _is_torch(x):
        try:
            return np.dtype(str(x.dtype).replace("torch.", ""))
        except TypeError:
            return None
    return x.dtype if isinstance(x, np.ndarray) else np.asarray(x).dtype
