# SPDX-License-Identifier: Apache-2.0
"""Transport-independent compressed averaging: one worker's side of `compressed-gd`, `ef-sgd` and
`diana` (docs/algorithms.md) around a gcomp Codec, for training loops whose ranks exchange bytes
through another framework, in float64 (the PyTorch DDP hook, gcomp.ddp, runs real Sessions instead).

Per step, every worker calls `message = reducer.encode(grad)`, the application allgathers the
fixed-size messages (rank order), and every worker calls `estimate = reducer.reduce(messages)`,
which returns the same float64 array on every rank. The arithmetic mirrors the C++ Session
(host/algorithms/session.cpp) operation by operation: state in float64, messages are the codec's
fp32 payloads of the rounded state, rank-order mean in double, RngKey (seed, rank, step). With
lr = 1 the estimate equals the Session's update u bit for bit (tests/python/test_algorithms.py).

The estimate is in gradient units: the caller applies x <- x - lr * estimate.

| algorithm       | message               | estimate               | state update                      |
|-----------------|-----------------------|------------------------|-----------------------------------|
| `gd`            | g (identity codec)    | mean g_j               | -                                 |
| `compressed-gd` | Q(g)                  | mean Q(g_j)            | -                                 |
| `ef-sgd`        | C(p), p = lr*g + e    | mean C(p_j) / lr       | e = p - C(p)                      |
| `diana`         | Q(d), d = g - h_i     | h + mean Q(d_j)        | h_i += alpha Q(d); h += alpha mean |

Each message carries one extra trailing byte: 1 when this worker's gradient held NaN/Inf. All
workers see every flag, so the non-finite policy is applied identically everywhere without an
extra collective: `error` raises gcomp.Error(NON_FINITE) on every rank, `skip` returns zeros
(state and step unchanged), `zero` replaces non-finite entries by 0 before encoding.
"""
import numpy as np

from ._api import Codec
from ._errors import Error, Status

ALGORITHMS = ("gd", "compressed-gd", "ef-sgd", "diana")
NONFINITE = ("error", "skip", "zero")
_U32 = 1 << 32


class CompressedReducer:
    """One worker's compressed mean of a flat float buffer with `segments` (one int: one segment)."""

    def __init__(self, algorithm, codec, segments, rank, world_size, seed=0, alpha=None, lr=1.0,
                 nonfinite="error"):
        if algorithm not in ALGORITHMS:
            raise Error(Status.INVALID_ARGUMENT,
                        f"algorithm {algorithm!r} is not supported here; valid: {', '.join(ALGORITHMS)}")
        if nonfinite not in NONFINITE:
            raise Error(Status.INVALID_ARGUMENT, f"nonfinite {nonfinite!r} is not one of {', '.join(NONFINITE)}")
        if not 0 <= int(rank) < int(world_size):
            raise Error(Status.INVALID_ARGUMENT, f"rank {rank} is outside 0..{int(world_size) - 1}")
        if float(lr) <= 0.0:
            raise Error(Status.INVALID_ARGUMENT, f"lr must be > 0, got {lr}")
        self.algorithm = algorithm
        self.codec = codec if isinstance(codec, Codec) else Codec(codec, segments, seed)
        if algorithm == "gd" and self.codec.spec != "identity":
            raise Error(Status.INVALID_ARGUMENT, f"gd sends uncompressed gradients; codec must be 'identity', "
                                                 f"got {self.codec.spec!r}")
        self.rank = int(rank)
        self.world_size = int(world_size)
        self.lr = float(lr)
        self.nonfinite = nonfinite
        n = self.codec.num_elems
        self.num_elems = n
        self.message_bytes = self.codec.encoded_bytes + 1
        self.step = 0
        self.alpha = 0.0
        self.state = {}
        if algorithm == "diana":
            if alpha is None or alpha < 0:
                g = self.codec.guarantee
                if g.kind != "unbiased":
                    raise Error(Status.INVALID_ARGUMENT, "diana needs an unbiased codec for alpha=auto; "
                                                         "give alpha explicitly")
                self.alpha = 1.0 / (g.omega + 1.0)
            else:
                self.alpha = float(alpha)
            self.state["shift_worker"] = np.zeros(n)
            self.state["shift_server"] = np.zeros(n)
        elif algorithm == "ef-sgd":
            self.state["error"] = np.zeros(n)
        self._pending = None

    def encode(self, grad):
        """This worker's message for the current step (uint8, message_bytes long). Stages the
        worker-side state update; reduce() commits it."""
        g = np.asarray(grad, dtype=np.float64).reshape(-1)
        if g.size != self.num_elems:
            raise Error(Status.INVALID_ARGUMENT, f"encode: expected {self.num_elems} elements, got {g.size}")
        finite = np.isfinite(g)
        bad = not bool(finite.all())
        if bad and self.nonfinite == "zero":
            g = np.where(finite, g, 0.0)
            bad = False
        message = np.zeros(self.message_bytes, dtype=np.uint8)
        if bad:
            message[-1] = 1
            self._pending = ("bad", None)
            return message
        if self.algorithm == "ef-sgd":
            src = self.lr * g + self.state["error"]
        elif self.algorithm == "diana":
            src = g - self.state["shift_worker"]
        else:
            src = g
        self.codec.encode(src.astype(np.float32), rank=self.rank, step=self.step % _U32, out=message[:-1])
        self._pending = ("ok", src)
        return message

    def reduce(self, messages):
        """The estimate (float64, identical on every rank) from all workers' messages in rank order:
        a (world_size, message_bytes) uint8 array or a sequence of world_size messages."""
        if self._pending is None:
            raise Error(Status.INVALID_ARGUMENT, "reduce: call encode() first for this step")
        pending, self._pending = self._pending, None
        msgs = [np.asarray(m, dtype=np.uint8).reshape(-1) for m in messages]
        if len(msgs) != self.world_size or any(m.size != self.message_bytes for m in msgs):
            raise Error(Status.INVALID_ARGUMENT, f"reduce: need {self.world_size} messages of {self.message_bytes} "
                                                 f"bytes, got sizes {[m.size for m in msgs]}")
        bad_ranks = [j for j, m in enumerate(msgs) if m[-1] != 0]
        if bad_ranks:
            if self.nonfinite == "skip":
                return np.zeros(self.num_elems)
            where = "this rank" if self.rank in bad_ranks else f"rank(s) {bad_ranks}"
            raise Error(Status.NON_FINITE, f"non-finite gradient on {where} at step {self.step}; state unchanged")
        step = self.step % _U32
        src = pending[1]
        n = self.num_elems
        if self.algorithm in ("ef-sgd", "diana"):
            own = self.codec.decode(msgs[self.rank][:-1], rank=self.rank, step=step).astype(np.float64)
        acc = np.zeros(n)
        for j, m in enumerate(msgs):
            acc += self.codec.decode(m[:-1], rank=j, step=step).astype(np.float64)
        acc *= 1.0 / self.world_size
        if self.algorithm == "ef-sgd":
            self.state["error"] = src - own
            estimate = acc / self.lr if self.lr != 1.0 else acc
        elif self.algorithm == "diana":
            self.state["shift_worker"] += self.alpha * own
            h = self.state["shift_server"]
            estimate = h + acc
            h += self.alpha * acc
        else:
            estimate = acc
        self.step += 1
        return estimate

    def state_dict(self):
        """This worker's state: step counter, configuration for checks, and the float64 arrays."""
        return {"algorithm": self.algorithm, "codec": self.codec.spec, "segments": list(self.codec.segments),
                "seed": self.codec.seed, "rank": self.rank, "world_size": self.world_size, "alpha": self.alpha,
                "step": self.step, "arrays": {k: v.copy() for k, v in self.state.items()}}

    def load_state_dict(self, sd):
        """Restores state_dict() of a reducer with the same configuration, rank and world size."""
        mine = self.state_dict()
        for key in ("algorithm", "codec", "segments", "seed", "rank", "world_size"):
            if sd.get(key) != mine[key]:
                raise Error(Status.MISMATCH, f"load_state_dict: {key} is {sd.get(key)!r} in the state, "
                                             f"{mine[key]!r} here")
        arrays = {}
        for key, value in self.state.items():
            arr = np.asarray(sd["arrays"].get(key) if key in sd.get("arrays", {}) else None, dtype=np.float64)
            if arr.shape != value.shape:
                raise Error(Status.MISMATCH, f"load_state_dict: array {key!r} has shape {arr.shape}, "
                                             f"expected {value.shape}")
            arrays[key] = arr.copy()
        self.state = arrays
        self.step = int(sd["step"])
        self._pending = None
