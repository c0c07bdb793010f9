# SPDX-License-Identifier: Apache-2.0
"""Loading of the gcomp shared library and the ctypes mirror of the C ABI (include/gcomp/gcomp.h).

The library is looked up, in this order:

1. the file named by the environment variable ``GCOMP_LIBRARY``;
2. ``libgcomp_c.so`` or ``libgcomp.so`` next to this package (an installed copy);
3. a build tree of the source checkout the package lives in: ``<repo>/build*/python/libgcomp_c.so``
   or ``<repo>/build*/host/libgcomp.so`` (the most recently built one wins; AddressSanitizer
   builds are skipped unless the ASan runtime is already loaded);
4. ``libgcomp.so`` on the system's library path (``ctypes.util.find_library``).

ctypes releases the GIL for the duration of every foreign call, so the ranks of a local group can be
driven from Python threads.
"""
import ctypes
import ctypes.util
import enum
import os
import pathlib
import threading

ABI_VERSION = 100  # GCOMP_VERSION_CODE of the header mirrored here (0.1.0)
CODEC_CONFIG_MAGIC = 0x67634346
SESSION_CONFIG_MAGIC = 0x67635353


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
    """A failed gcomp call. ``status`` is the gcompStatus_t (an int, a Status when known),
    ``message`` the C ABI's last-error text (or the Python-side check that failed)."""

    def __init__(self, status, message):
        try:
            status = Status(status)
        except ValueError:
            status = int(status)
        self.status = status
        self.message = message
        name = status.name.lower() if isinstance(status, Status) else "unknown status"
        super().__init__(f"gcomp error {int(status)} ({name}): {message}")


class LibraryNotFound(ImportError):
    """The gcomp shared library could not be found or loaded."""


class CodecConfig(ctypes.Structure):
    _fields_ = [
        ("size", ctypes.c_size_t),
        ("magic", ctypes.c_uint32),
        ("version", ctypes.c_uint32),
        ("codec_spec", ctypes.c_char_p),
        ("seed", ctypes.c_uint64),
    ]


HESSIAN_PRODUCT_FN = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_double),
                                      ctypes.POINTER(ctypes.c_double), ctypes.c_int64, ctypes.c_void_p)
HESSIAN_DIAGONAL_FN = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_double), ctypes.c_int64,
                                       ctypes.c_void_p)


class SessionConfig(ctypes.Structure):
    _fields_ = [
        ("size", ctypes.c_size_t),
        ("magic", ctypes.c_uint32),
        ("version", ctypes.c_uint32),
        ("algorithm", ctypes.c_char_p),
        ("codec_spec", ctypes.c_char_p),
        ("server_codec_spec", ctypes.c_char_p),
        ("lr", ctypes.c_double),
        ("alpha", ctypes.c_double),
        ("momentum", ctypes.c_double),
        ("nesterov", ctypes.c_int32),
        ("delay", ctypes.c_int32),
        ("seed", ctypes.c_uint64),
        ("nonfinite", ctypes.c_int),
        ("server", ctypes.c_int),
        ("prox", ctypes.c_int),
        ("prox_lambda", ctypes.c_double),
        ("tie_to_zero", ctypes.c_int32),
        ("shared_scale", ctypes.c_int32),
        ("compensation", ctypes.c_int),
        ("hessian_product", HESSIAN_PRODUCT_FN),
        ("hessian_diagonal", HESSIAN_DIAGONAL_FN),
        ("hessian_user_data", ctypes.c_void_p),
    ]


class StepStatsC(ctypes.Structure):
    _fields_ = [
        ("size", ctypes.c_size_t),
        ("step", ctypes.c_uint64),
        ("bytes_up", ctypes.c_uint64),
        ("bytes_down", ctypes.c_uint64),
        ("bytes_received", ctypes.c_uint64),
        ("bits_per_element_up", ctypes.c_double),
        ("bits_per_element_down", ctypes.c_double),
        ("skipped", ctypes.c_int32),
    ]


def codec_config(spec, seed):
    """GCOMP_CODEC_CONFIG_INITIALIZER with spec and seed set."""
    return CodecConfig(ctypes.sizeof(CodecConfig), CODEC_CONFIG_MAGIC, ABI_VERSION, spec.encode(), seed)


def session_config():
    """GCOMP_SESSION_CONFIG_INITIALIZER: the defaults of gcomp::SessionConfig."""
    return SessionConfig(ctypes.sizeof(SessionConfig), SESSION_CONFIG_MAGIC, ABI_VERSION, b"gd", b"identity",
                         b"identity", 0.1, -1.0, 0.0, 1, 0, 0, 0, 0, 0, 0.0, 1, 1, 2,
                         HESSIAN_PRODUCT_FN(), HESSIAN_DIAGONAL_FN(), None)


def new_step_stats():
    return StepStatsC(ctypes.sizeof(StepStatsC))


_P = ctypes.c_void_p
_I64P = ctypes.POINTER(ctypes.c_int64)
_DP = ctypes.POINTER(ctypes.c_double)
_FP = ctypes.POINTER(ctypes.c_float)
_SIGNATURES = {
    "gcompGetVersion": (ctypes.c_int, []),
    "gcompGetErrorString": (ctypes.c_char_p, [ctypes.c_int]),
    "gcompGetLastError": (ctypes.c_char_p, []),
    "gcompPlanCreate": (ctypes.c_int, [ctypes.POINTER(_P), ctypes.POINTER(CodecConfig), _I64P, ctypes.c_int]),
    "gcompPlanDestroy": (ctypes.c_int, [_P]),
    "gcompPlanGetLastError": (ctypes.c_char_p, [_P]),
    "gcompPlanNumElems": (ctypes.c_int, [_P, _I64P]),
    "gcompPlanEncodedBytes": (ctypes.c_int, [_P, ctypes.POINTER(ctypes.c_size_t)]),
    "gcompPlanEncodedBits": (ctypes.c_int, [_P, _DP]),
    "gcompPlanGuarantee": (ctypes.c_int, [_P, ctypes.POINTER(ctypes.c_int), _DP, _DP]),
    "gcompEncode": (ctypes.c_int, [_P, _FP, ctypes.c_uint32, ctypes.c_uint32, _P, ctypes.c_size_t]),
    "gcompDecode": (ctypes.c_int, [_P, _P, ctypes.c_size_t, ctypes.c_uint32, ctypes.c_uint32, _FP]),
    "gcompDecodeAccumulate": (ctypes.c_int, [_P, _P, ctypes.c_size_t, ctypes.c_uint32, ctypes.c_uint32,
                                             ctypes.c_float, _FP]),
    "gcompPlanFramedBytes": (ctypes.c_int, [_P, ctypes.POINTER(ctypes.c_size_t)]),
    "gcompFramePayload": (ctypes.c_int, [_P, _P, ctypes.c_size_t, ctypes.c_uint32, ctypes.c_uint32, _P,
                                         ctypes.c_size_t]),
    "gcompParseFrame": (ctypes.c_int, [_P, _P, ctypes.c_size_t, ctypes.POINTER(ctypes.c_uint32),
                                       ctypes.POINTER(ctypes.c_uint32), ctypes.POINTER(ctypes.c_size_t)]),
    "gcompCommCreateLocalGroup": (ctypes.c_int, [ctypes.c_int, ctypes.c_int64, ctypes.POINTER(_P)]),
    "gcompCommCreateMpi": (ctypes.c_int, [ctypes.c_int64, ctypes.POINTER(_P)]),
    "gcompCommRank": (ctypes.c_int, [_P, ctypes.POINTER(ctypes.c_int)]),
    "gcompCommSize": (ctypes.c_int, [_P, ctypes.POINTER(ctypes.c_int)]),
    "gcompCommAbort": (ctypes.c_int, [_P, ctypes.c_char_p]),
    "gcompCommDestroy": (ctypes.c_int, [_P]),
    "gcompSessionCreate": (ctypes.c_int, [ctypes.POINTER(_P), _P, ctypes.POINTER(SessionConfig), _I64P,
                                          ctypes.c_int]),
    "gcompSessionDestroy": (ctypes.c_int, [_P]),
    "gcompSessionGetLastError": (ctypes.c_char_p, [_P]),
    "gcompSessionNumElems": (ctypes.c_int, [_P, _I64P]),
    "gcompSessionStepCount": (ctypes.c_int, [_P, ctypes.POINTER(ctypes.c_uint64)]),
    "gcompSessionStep": (ctypes.c_int, [_P, _DP, _DP, ctypes.POINTER(StepStatsC)]),
    "gcompSessionStepF32": (ctypes.c_int, [_P, _FP, _FP, ctypes.POINTER(StepStatsC)]),
    "gcompSessionApply": (ctypes.c_int, [_P, _DP, _DP, ctypes.POINTER(StepStatsC)]),
    "gcompSessionSave": (ctypes.c_int, [_P, ctypes.c_char_p]),
    "gcompSessionLoad": (ctypes.c_int, [_P, ctypes.c_char_p]),
}

_lock = threading.Lock()
_lib = None
_lib_path = None


def _candidates():
    here = pathlib.Path(__file__).resolve().parent
    found = [here / "libgcomp_c.so", here / "libgcomp.so"]
    repo = here.parent.parent
    built = list(repo.glob("build*/python/libgcomp_c.so")) + list(repo.glob("build*/host/libgcomp.so"))
    built.sort(key=lambda p: p.stat().st_mtime, reverse=True)
    return found + built


def _needs_asan(path):
    """Whether a shared library was linked with AddressSanitizer (its dynamic section names
    libasan). Loading one into a process without the ASan runtime preloaded makes the runtime
    terminate the whole process, so it must be detected before dlopen."""
    try:
        with open(path, "rb") as f:
            return b"libasan.so" in f.read()
    except OSError:
        return False


def _asan_loaded():
    try:
        with open("/proc/self/maps", encoding="utf-8", errors="replace") as f:
            return "libasan" in f.read()
    except OSError:
        return False


def _load():
    global _lib, _lib_path
    tried = []
    env = os.environ.get("GCOMP_LIBRARY")
    if env:
        paths = [env]
    else:
        paths = [str(p) for p in _candidates() if p.is_file()]
        system = ctypes.util.find_library("gcomp")
        if system:
            paths.append(system)
    for path in paths:
        if _needs_asan(path) and not _asan_loaded():
            tried.append(f"{path}: built with AddressSanitizer; preload the ASan runtime (LD_PRELOAD, "
                         "docs/python.md) to use it")
            continue
        try:
            lib = ctypes.CDLL(path)
        except OSError as exc:
            tried.append(f"{path}: {exc}")
            continue
        for name, (restype, argtypes) in _SIGNATURES.items():
            fn = getattr(lib, name)
            fn.restype = restype
            fn.argtypes = argtypes
        version = lib.gcompGetVersion()
        if version // 100 != ABI_VERSION // 100:
            tried.append(f"{path}: library version code {version}, this package needs {ABI_VERSION // 100}xx")
            continue
        _lib, _lib_path = lib, path
        return
    where = "GCOMP_LIBRARY=" + env if env else "next to the package, in the build trees of " + str(
        pathlib.Path(__file__).resolve().parent.parent.parent) + " and on the system library path"
    detail = "; ".join(tried) if tried else "no candidate file exists"
    raise LibraryNotFound(
        f"gcomp: cannot load the gcomp shared library (looked {where}: {detail}). Build it with "
        "`cmake --build <build> --target gcomp_c` and/or set GCOMP_LIBRARY to the path of "
        "libgcomp_c.so (docs/python.md)")


def lib():
    """The loaded ctypes library (loaded on first use)."""
    if _lib is None:
        with _lock:
            if _lib is None:
                _load()
    return _lib


def library_path():
    """Path of the shared library in use (loads it if needed)."""
    lib()
    return _lib_path


def _text(raw):
    return raw.decode("utf-8", "replace") if raw else ""


def check(status):
    """Raises Error for a non-zero status with the calling thread's last-error text. Every C call
    runs on the calling thread, so that text belongs to the call that just failed."""
    if status != 0:
        raise Error(status, _text(lib().gcompGetLastError()))


def status_string(status):
    """gcompGetErrorString: the static name of a status code."""
    return _text(lib().gcompGetErrorString(int(status)))
