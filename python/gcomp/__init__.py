# SPDX-License-Identifier: Apache-2.0
"""gcomp: gradient compression for distributed training, from Python.

NumPy bindings of the gcomp C ABI (ctypes over libgcomp_c.so): codecs (`Codec`), communicators
(`local_group`, `mpi_comm`) and sessions (`Session`). `gcomp.torch` (imported on first access)
holds the PyTorch DDP communication hook, and `gcomp.algorithms` the transport-independent
compressed reduction that the hook runs. The manual is docs/python.md.
"""
import importlib

from ._api import Codec, Communicator, Guarantee, Session, StepStats, local_group, mpi_comm
from ._lib import Error, LibraryNotFound, Status, library_path, status_string

__all__ = ["Codec", "Communicator", "Error", "Guarantee", "LibraryNotFound", "Session", "Status", "StepStats",
           "abi_version", "library_path", "local_group", "mpi_comm", "status_string"]
__version__ = "0.1.0"


def abi_version():
    """gcompGetVersion() of the loaded library: major * 10000 + minor * 100 + patch."""
    from . import _lib
    return _lib.lib().gcompGetVersion()


def __getattr__(name):
    if name in ("torch", "algorithms"):
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
