# SPDX-License-Identifier: Apache-2.0
"""ctest entry of the Python suite (tests/python/CMakeLists.txt): runs pytest on this folder.

Exit codes: pytest's own (0 passed, 1 failures, ...), except that "no tests collected" (pytest's
5) is reported as a failure (1), and a missing NumPy or pytest is a skip (77, ctest's
SKIP_RETURN_CODE) with the reason on stderr. Extra pytest arguments: GCOMP_PYTEST_ARGS."""
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
    import pytest
    args = ["-q", "-p", "no:cacheprovider", str(HERE)] + shlex.split(os.environ.get("GCOMP_PYTEST_ARGS", ""))
    code = pytest.main(args)
    if code == pytest.ExitCode.NO_TESTS_COLLECTED:
        print("FAIL: pytest collected no tests in " + str(HERE), file=sys.stderr)
        return 1
    return int(code)


if __name__ == "__main__":
    sys.exit(main())
