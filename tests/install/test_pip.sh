#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# pip builds and installs the Python package from the source tree (pyproject.toml, scikit-build-core
# driving the CMake build of the library and the extension only):
#   1. `pip wheel .` into a temporary directory: one wheel holding gcomp/*.py and gcomp/_core*.so and
#      nothing of the C/C++ install (no lib/, include/);
#   2. `pip install .` (same build directory, so incremental) into a fresh virtual environment;
#   3. from outside the source tree, the venv's interpreter imports that copy, runs a codec round
#      trip and a 2-rank Session step, and (when torch is importable) a DDP step with gcomp.ddp's hook
#      in a 1-rank gloo group; `pip uninstall` removes it.
# Offline: the venv sees the base interpreter's packages (--system-site-packages) and the build uses
# them (--no-build-isolation: scikit-build-core and pybind11 from tools/setup.sh), so nothing is
# downloaded. Exit 77 (skip) when the interpreter has no venv module or no scikit-build-core/pybind11.
# Usage: test_pip.sh SOURCE_DIR PYTHON
set -euo pipefail
src=$1
python=$2
if ! "$python" -c "import venv, scikit_build_core, pybind11" 2> /dev/null; then
  echo "SKIP: $python lacks venv, scikit-build-core or pybind11 (tools/setup.sh installs them)" >&2
  exit 77
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }
export CMAKE_BUILD_PARALLEL_LEVEL=${CMAKE_BUILD_PARALLEL_LEVEL:-2} PIP_DISABLE_PIP_VERSION_CHECK=1
unset PYTHONPATH
"$python" -m venv --system-site-packages "$work/venv"
py="$work/venv/bin/python"
args=(--no-build-isolation --no-deps -C "build-dir=$work/skbuild")

start=$(date +%s)
"$py" -m pip wheel "${args[@]}" -w "$work/wheels" "$src" > "$work/wheel.log" 2>&1 || { tail -40 "$work/wheel.log"; fail "pip wheel failed"; }
echo "pip wheel: $(( $(date +%s) - start )) s"
wheels=("$work"/wheels/gcomp-*.whl)
[ ${#wheels[@]} = 1 ] && [ -f "${wheels[0]}" ] || fail "expected one gcomp wheel, got: $(ls "$work/wheels")"
listing=$("$py" -c "import sys, zipfile; print('\n'.join(zipfile.ZipFile(sys.argv[1]).namelist()))" "${wheels[0]}")
for want in gcomp/__init__.py gcomp/ddp.py gcomp/_api.py "gcomp/_core.*\.so"; do
  grep -qx "$want" <<< "$listing" || fail "the wheel lacks $want: $listing"
done
if grep -E '^(lib|include|bin)/|\.a$' <<< "$listing"; then fail "the wheel holds C/C++ install files"; fi
echo "wheel: $(basename "${wheels[0]}")"

start=$(date +%s)
"$py" -m pip install "${args[@]}" "$src" > "$work/install.log" 2>&1 || { tail -40 "$work/install.log"; fail "pip install failed"; }
echo "pip install (incremental): $(( $(date +%s) - start )) s"

cd "$work"
"$py" - "$work/venv" << 'PY'
import os, socket, sys, threading
import numpy as np
import gcomp
venv = os.path.realpath(sys.argv[1])
assert os.path.realpath(gcomp.__file__).startswith(venv), gcomp.__file__
assert os.path.realpath(gcomp.library_path()).startswith(venv), gcomp.library_path()
c = gcomp.Codec("sign:block=64", [100, 28], seed=3)
x = np.linspace(-1, 1, 128).astype(np.float32)
y = c.decode(c.encode(x, rank=1, step=2), rank=1, step=2)
assert y.shape == (128,) and np.all(np.sign(y) == np.sign(x))
comms, out = gcomp.local_group(2), [None, None]
def rank(r):
    s = gcomp.Session(comms[r], [128], algorithm="dist-ef-sgdm", codec="sign:block=32", server_codec="sign:block=32",
                      server="sharded", lr=0.1, momentum=0.9, backend="host-f32")
    out[r] = s.step(np.full(128, r + 1.0, np.float32))
ts = [threading.Thread(target=rank, args=(r,)) for r in range(2)]
[t.start() for t in ts]
[t.join() for t in ts]
assert np.array_equal(out[0], out[1]) and np.all(out[0] > 0), out
print("installed gcomp", gcomp.__version__, "at", os.path.dirname(gcomp.__file__), ": codec and session ok")
try:
    import torch
except ImportError:
    print("torch not importable: DDP step not run")
    sys.exit(0)
import torch.distributed as dist
import gcomp.ddp
os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
with socket.socket() as sock:
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=0, world_size=1)
torch.manual_seed(0)
model = torch.nn.parallel.DistributedDataParallel(torch.nn.Linear(8, 2))
opt = torch.optim.SGD(model.parameters(), lr=0.1)
state = gcomp.ddp.GcompState(algorithm="dist-ef-sgdm", codec="sign:block=4", optimizer=opt, momentum=0.9)
model.register_comm_hook(state, gcomp.ddp.gcomp_hook)
for _ in range(2):
    opt.zero_grad()
    model(torch.randn(4, 8)).square().sum().backward()
    opt.step()
assert state.metrics()["compressed"] and state.iter == 2
print("DDP step with gcomp.ddp ok:", state)
dist.destroy_process_group()
sys.stdout.flush()
os._exit(0)
PY
"$py" -m pip uninstall -y gcomp > /dev/null
if (cd "$work" && "$py" -c "import gcomp" 2> /dev/null); then fail "gcomp still importable after pip uninstall"; fi
echo "pip wheel, pip install and pip uninstall: ok"
