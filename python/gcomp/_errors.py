# SPDX-License-Identifier: Apache-2.0
"""The package's exception classes and the status codes of the C ABI (gcompStatus_t). The
extension gcomp._core raises Error for every gcomp::Error of the C++ library."""
import enum


class Status(enum.IntEnum):
    """gcompStatus_t: stable status codes of the C ABI."""

    SUCCESS = 0
    INVALID_ARGUMENT = 10
    NOT_SUPPORTED = 11
    WORKSPACE_TOO_SMALL = 12
    CORRUPT_PAYLOAD = 13
    NON_FINITE = 14
    MISMATCH = 15
    TIMEOUT = 16
    IO = 17
    OUT_OF_MEMORY = 18
    CUDA = 1000
    NCCL = 1001
    MPI = 1002
    INTERNAL = 10000


class Error(RuntimeError):
    """A failed gcomp call. ``status`` is the gcompStatus_t (a Status when known, else an int),
    ``message`` the library's text naming the failed check (or the Python-side check that failed)."""

    def __init__(self, status, message):
        try:
            status = Status(status)
        except ValueError:
            status = int(status)
        self.status = status
        self.message = message
        name = status.name.lower() if isinstance(status, Status) else "unknown status"
        super().__init__(f"gcomp error {int(status)} ({name}): {message}")

    def __reduce__(self):
        return (type(self), (int(self.status), self.message))


class LibraryNotFound(ImportError):
    """The compiled extension gcomp._core could not be imported (not built, or not on the path)."""
