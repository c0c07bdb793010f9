# SPDX-License-Identifier: Apache-2.0
"""gcomp: gradient compression for distributed training, from Python.

Bindings of the gcomp C++ library (the compiled extension gcomp._core, built with the project by
pybind11): codecs (`Codec`), communicators (`local_group`, `mpi_comm`) and sessions (`Session`)
over NumPy arrays and torch tensors. `gcomp.ddp` (imported on first access; needs torch) holds the
PyTorch DDP communication hook (`GcompState`, `gcomp_hook`), and `gcomp.algorithms` a
transport-independent compressed reduction in float64 for other frameworks. The manual is
docs/python.md.
"""
import importlib
import pkgutil

# The extension may live in another directory named gcomp on sys.path (a build tree's
# <build>/python/gcomp next to this source package): make it part of this package.
__path__ = pkgutil.extend_path(__path__, __name__)

from ._errors import Error, LibraryNotFound, Status  # noqa: E402

try:
    from . import _core  # noqa: E402
except ImportError as _exc:
    raise LibraryNotFound(
        f"gcomp: cannot import the compiled extension gcomp._core ({_exc}). Build it with the project "
        "(`cmake --build <build> --target gcomp_python`, needs pybind11: tools/setup.sh) and put both the "
        "package sources and the module on the path: PYTHONPATH=<source>/python:<build>/python, or use "
        "an installed copy (docs/python.md)") from _exc

from ._api import (Codec, Communicator, Guarantee, Session, StepStats, local_group, mpi_comm,  # noqa: E402
                   nccl_comm, nccl_library, nccl_unusable)

__all__ = ["Codec", "Communicator", "Error", "Guarantee", "LibraryNotFound", "Session", "Status", "StepStats",
           "abi_version", "library_path", "list_codecs", "local_group", "mpi_comm", "nccl_comm", "nccl_library",
           "nccl_unusable", "status_string"]
__version__ = "0.1.0"


def abi_version():
    """gcompGetVersion() of the compiled library: major * 10000 + minor * 100 + patch."""
    return _core.version()


def library_path():
    """Path of the compiled extension in use."""
    return _core.__file__


def status_string(status):
    """gcompGetErrorString: the static name of a status code."""
    return _core.status_string(int(status))


def list_codecs():
    """Every codec of this build: dicts with name, params, guarantee, bits (gcomp-codec list) and
    examples (specs that sweep its parameters)."""
    return _core.list_codecs()


def __getattr__(name):
    if name in ("ddp", "algorithms"):
        return importlib.import_module(f"{__name__}.{name}")
    if name == "torch":
        raise AttributeError("gcomp.torch was replaced by gcomp.ddp: HookState(...) is now gcomp.ddp.GcompState("
                             "process_group, algorithm=..., codec=..., ...) and gcomp.torch.hook is "
                             "gcomp.ddp.gcomp_hook (docs/python.md)")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
