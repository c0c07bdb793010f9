# SPDX-License-Identifier: Apache-2.0
"""How the nccl backend finds NCCL (docs/communicators.md "Which NCCL is used"): gcomp loads it at
run time, on the first nccl communicator or query, so importing gcomp never fixes which
libnccl.so.2 the process uses. PyTorch's wheel ships its own NCCL under the same soname; both import
orders must work, and once torch is in, gcomp uses torch's NCCL (one NCCL in the process). Each case
runs in a fresh interpreter, since a process loads NCCL only once."""
import importlib.util
import os
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
HAVE_TORCH = importlib.util.find_spec("torch") is not None
UNDER_ASAN = "libasan" in os.environ.get("LD_PRELOAD", "")

# Prepended to each child script: mapped_nccl() lists the libnccl files mapped into the process.
REPORT = """
def mapped_nccl():
    with open('/proc/self/maps') as f:
        return sorted({line.split()[-1] for line in f if 'libnccl' in line.split()[-1]})
"""


def run_python(code, **env_overrides):
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "python")] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
    env.update(env_overrides)
    proc = subprocess.run([sys.executable, "-c", REPORT + code], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"exit {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    return proc.stdout


needs_torch = pytest.mark.skipif(not HAVE_TORCH or UNDER_ASAN,
                                 reason="PyTorch is not installed" if not HAVE_TORCH else "torch is not run under ASan")


@needs_torch
def test_import_gcomp_then_torch():
    out = run_python("""
import os, gcomp
assert mapped_nccl() == [], mapped_nccl()          # importing gcomp loads no NCCL
import torch, torch.distributed
path, version = gcomp.nccl_library()
maps = mapped_nccl()
assert len(maps) <= 1, maps                          # never a second NCCL next to torch's
if path:
    assert maps == [os.path.realpath(path)] or maps == [path], (path, maps)
print('ok', torch.__version__, path, version)
""")
    assert out.startswith("ok")


@needs_torch
def test_import_torch_then_gcomp():
    out = run_python("""
import os, torch, torch.distributed, gcomp
path, version = gcomp.nccl_library()
maps = mapped_nccl()
assert len(maps) <= 1, maps
if path:
    assert maps == [os.path.realpath(path)] or maps == [path], (path, maps)
print('ok', torch.__version__, path, version)
""")
    assert out.startswith("ok")


def test_missing_nccl_library_is_reported():
    missing = "/nonexistent/gcomp-test/libnccl-missing.so.2"
    out = run_python(f"""
import gcomp, sys
why = gcomp.nccl_unusable()
if 'no nccl backend' in why:
    print('skip', why)
    sys.exit(0)
assert {missing!r} in why and 'GCOMP_NCCL_LIBRARY' in why, why
assert gcomp.nccl_library() == ('', 0)
try:
    gcomp.nccl_comm(rank=0, world_size=1, master_addr='127.0.0.1', master_port=1)
except gcomp.Error as e:
    assert e.status == gcomp.Status.NOT_SUPPORTED and {missing!r} in e.message, e.message
else:
    raise AssertionError('nccl_comm did not fail')
assert mapped_nccl() == [], mapped_nccl()
print('ok')
""", GCOMP_NCCL_LIBRARY=missing)
    if out.startswith("skip"):
        pytest.skip(out[5:].strip())
    assert out.startswith("ok")
