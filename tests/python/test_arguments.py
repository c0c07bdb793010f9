# SPDX-License-Identifier: Apache-2.0
"""Argument checks and Ctrl-C (issue 18 #12, #15; DESIGN.md §4): every bad value is refused with
gcomp.Error(INVALID_ARGUMENT) naming the argument (never replaced by a default, truncated or
wrapped), and a blocking call returns KeyboardInterrupt within a short bounded time after SIGINT,
aborting its communicator."""
import os
import pathlib
import subprocess
import sys
import textwrap
import threading

import numpy as np
import pytest

import gcomp
from gcomp import Error, Status

ROOT = pathlib.Path(__file__).resolve().parents[2]


def refused(fn, name):
    with pytest.raises(Error) as e:
        fn()
    assert e.value.status == Status.INVALID_ARGUMENT, e.value
    assert name in str(e.value), f"the message does not name {name!r}: {e.value}"


@pytest.mark.parametrize("segments", ["10", b"10", [10.5], [3, 2.0], 10.5, [-1], [True], None])
def test_segments_are_integers(segments):
    refused(lambda: gcomp.Codec("sign", segments), "segments")


def test_segments_accept_numpy_integers():
    assert gcomp.Codec("sign", [np.int64(7), np.int32(3)]).num_elems == 10


@pytest.mark.parametrize("seed", [2 ** 64, -1, 1.5, "3", True])
def test_codec_seed_is_checked(seed):
    refused(lambda: gcomp.Codec("sign", 8, seed=seed), "seed")


def test_codec_call_seed_is_checked():
    c = gcomp.Codec("dither", 8)
    refused(lambda: c.encode(np.ones(8, np.float32), seed=2 ** 64), "seed")
    assert gcomp.Codec("dither", 8, seed=2 ** 64 - 1).seed == 2 ** 64 - 1


@pytest.mark.parametrize("kwargs,name", [
    (dict(seed=2 ** 64), "seed"), (dict(seed=-1), "seed"),
    (dict(algorithm="diana", codec="dither", alpha=-1), "alpha"),
    (dict(algorithm="diana", codec="dither", alpha=0.0), "alpha"),
    (dict(algorithm="diana", codec="dither", alpha=1.5), "alpha"),
    (dict(algorithm="diana", codec="dither", alpha=float("nan")), "alpha"),
    (dict(prox="l1", prox_lambda=-1), "prox_lambda"),
    (dict(prox="l1", prox_lambda=float("inf")), "prox_lambda"),
    (dict(lr=-0.1), "lr"), (dict(lr=float("nan")), "lr"),
    (dict(momentum=1.5), "momentum"), (dict(momentum=-0.5), "momentum"),
    (dict(delay=-1), "delay"), (dict(delay=2.5), "delay"), (dict(delay=2 ** 40), "delay"),
])
def test_session_arguments_are_range_checked(kwargs, name):
    comm = gcomp.local_group(1)[0]
    refused(lambda: gcomp.Session(comm, 8, **kwargs), name)


def test_valid_session_arguments_pass():
    comm = gcomp.local_group(1)[0]
    s = gcomp.Session(comm, np.int64(8), algorithm="diana", codec="dither", alpha=0.5, seed=2 ** 64 - 1,
                      prox="l1", prox_lambda=0.0, delay=np.int32(2), lr=0.0)
    assert s.alpha == 0.5


@pytest.mark.parametrize("num_ranks", [2.5, "2", 0, -1])
def test_local_group_size_is_checked(num_ranks):
    refused(lambda: gcomp.local_group(num_ranks), "num_ranks")


def test_timeout_is_checked():
    refused(lambda: gcomp.local_group(1, timeout_ms=1.5), "timeout_ms")
    refused(lambda: gcomp.local_group(1, timeout_ms=-5), "timeout_ms")


SCRIPT = textwrap.dedent("""
    import os, signal, sys, threading, time
    import numpy as np
    import gcomp
    comms = gcomp.local_group(2, timeout_ms=120000)
    made = threading.Event()
    release = threading.Event()
    def rank1():
        s = gcomp.Session(comms[1], 8, algorithm="gd")
        made.set()
        release.wait(60)   # never steps: rank 0's step waits for it
    t = threading.Thread(target=rank1, daemon=True)
    t.start()
    s0 = gcomp.Session(comms[0], 8, algorithm="gd")
    made.wait(60)
    threading.Timer(1.0, lambda: os.kill(os.getpid(), signal.SIGINT)).start()
    start = time.monotonic()
    try:
        s0.step(np.ones(8))
        print("the step returned"); sys.exit(3)
    except KeyboardInterrupt:
        took = time.monotonic() - start
    # The communicator was aborted: the next collective fails at once, naming the interrupt.
    try:
        s0.step(np.ones(8))
        print("a step after the interrupt succeeded"); sys.exit(4)
    except gcomp.Error as e:
        assert e.status == gcomp.Status.TIMEOUT and "interrupted" in str(e), e
    release.set()
    print("interrupted after %.2f s" % took)
    sys.exit(0 if took < 6.0 else 5)
""")


def test_ctrl_c_interrupts_a_blocking_step():
    env = dict(os.environ)
    proc = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, timeout=100)
    assert proc.returncode == 0, (proc.returncode, proc.stdout, proc.stderr)
    assert "interrupted after" in proc.stdout


EXIT_SCRIPT = textwrap.dedent("""
    import sys, threading, time
    import numpy as np
    import gcomp
    what = sys.argv[1]
    comms = gcomp.local_group(1, timeout_ms=120000)
    go = threading.Event()
    def worker():
        s = gcomp.Session(comms[0], 1 << 14, algorithm="gd")
        c = gcomp.Codec("sign", 1 << 14)
        x = np.ones(1 << 14, dtype=np.float32)
        go.wait()
        while True:  # releases and retakes the GIL in a loop while the interpreter exits
            if what == "step":
                s.step(x)
            elif what == "encode":
                c.encode(x)
            else:
                t = gcomp.Session(comms[0], 1 << 10, algorithm="gd")
                del t
    threading.Thread(target=worker, daemon=True).start()
    time.sleep(0.2)
    go.set()
    time.sleep(0.01)
    sys.exit(0)
""")


@pytest.mark.skipif(os.environ.get("GCOMP_PYTHON_UBSAN") == "1",
                    reason="UBSan reports pybind11's catch of abi::__forced_unwind by reference (a null reference)")
@pytest.mark.parametrize("what", ["step", "encode", "session"])
def test_a_daemon_thread_in_a_call_does_not_abort_the_exit(what):
    """A daemon thread inside a gcomp call while the interpreter exits: CPython ends it when it
    takes the GIL back, and the process exits with the main thread's status. This aborted
    ("terminate called without an active exception", status -6) when the GIL was taken back in a
    noexcept destructor."""
    for _ in range(3):
        proc = subprocess.run([sys.executable, "-c", EXIT_SCRIPT, what], env=dict(os.environ),
                              capture_output=True, text=True, timeout=100)
        assert proc.returncode == 0, (what, proc.returncode, proc.stderr)


def _header_names():
    """The name table of each enum as include/gcomp/names.hpp writes it, by its kWhat."""
    import re
    src = (ROOT / "include" / "gcomp" / "names.hpp").read_text()
    out = {}
    for enum, body in re.findall(r"struct EnumNames<(\w+)> \{(.*?)\n\};", src, re.S):
        what = re.search(r'kWhat = "([^"]+)"', body).group(1)
        out[what] = re.findall(r'\{\s*%s::k\w+,\s*"([^"]+)"\s*\}' % enum, body)
        assert out[what], f"no names for {enum}"
    return out


def test_enum_choices_are_the_name_tables():
    """Session's enum arguments accept exactly the names of <gcomp/names.hpp>: a name added to a
    table there and missing here (or in _core.ENUM_NAMES) fails this test."""
    from gcomp import _api, _core
    header = _header_names()
    for what in ("nonfinite", "server", "prox", "compensation", "backend", "algorithm"):
        assert list(_core.ENUM_NAMES[what]) == header[what], what
    for what, names in _api._CHOICES.items():
        assert list(names) == header[what], what
        for name in header[what]:
            assert _api._choice(name, what) == name
        with pytest.raises(Error) as e:
            _api._choice("no-such-" + what, what)
        assert all(repr(n) in str(e.value) for n in header[what]), e.value
