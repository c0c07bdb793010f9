# SPDX-License-Identifier: Apache-2.0
"""ctest entry of the Python suite (tests/python/CMakeLists.txt): runs pytest on this folder.

Exit codes: pytest's own (0 passed, 1 failures, ...), except that "no tests collected" (pytest's
5) is reported as a failure (1), and a missing NumPy or pytest, or an extension that CMake did not
build (GCOMP_PYTHON_MODULE_BUILT=0: pybind11 or Python.h missing at configure time), is a skip (77,
ctest's SKIP_RETURN_CODE) with the reason on stderr. With GCOMP_REQUIRE_TORCH=1 (tools/test.sh
sets it after installing PyTorch) a torch that cannot be imported is a failure, so that the DDP
tests cannot skip silently. Extra pytest arguments: GCOMP_PYTEST_ARGS."""
import importlib.util
import os
import pathlib
import shlex
import sys

HERE = pathlib.Path(__file__).resolve().parent


def main():
    missing = [m for m in ("numpy", "pytest") if importlib.util.find_spec(m) is None]
    if missing:
        print(f"SKIP: the Python tests need {' and '.join(missing)} for {sys.executable} "
              f"(pip install numpy pytest; docs/python.md)", file=sys.stderr)
        return 77
    if os.environ.get("GCOMP_PYTHON_MODULE_BUILT") == "0":
        print("SKIP: the extension gcomp._core was not built: pybind11 or the Python headers were missing when "
              "CMake configured (see its warning; tools/setup.sh installs pybind11)", file=sys.stderr)
        return 77
    if os.environ.get("GCOMP_REQUIRE_TORCH") == "1":
        try:
            import torch  # noqa: F401
        except Exception as exc:  # noqa: BLE001 - any import failure is the reason
            print(f"FAIL: GCOMP_REQUIRE_TORCH=1 but torch cannot be imported by {sys.executable}: {exc}",
                  file=sys.stderr)
            return 1
    import pytest
    args = ["-q", "-rs", "-p", "no:cacheprovider", str(HERE)] + shlex.split(os.environ.get("GCOMP_PYTEST_ARGS", ""))
    code = pytest.main(args)
    if code == pytest.ExitCode.NO_TESTS_COLLECTED:
        print("FAIL: pytest collected no tests in " + str(HERE), file=sys.stderr)
        return 1
    return int(code)


if __name__ == "__main__":
    sys.exit(main())
