# SPDX-License-Identifier: Apache-2.0
"""Shared setup of the Python tests: the package from python/ and the compiled extension.

ctest (tests/python/CMakeLists.txt) sets PYTHONPATH to python/ and <build>/python (where the
extension gcomp._core is built) and GCOMP_CODEC_CLI. By hand:
PYTHONPATH=python:build/python python3 -m pytest -q tests/python (docs/python.md)."""
import os
import pathlib
import shutil
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
if str(ROOT / "python") not in sys.path:
    sys.path.insert(0, str(ROOT / "python"))


def find_codec_cli():
    """gcomp-codec: $GCOMP_CODEC_CLI, else the newest build tree's, else PATH; None if absent."""
    env = os.environ.get("GCOMP_CODEC_CLI")
    if env:
        return env
    built = sorted(ROOT.glob("build*/tools/gcomp-codec"), key=lambda p: p.stat().st_mtime, reverse=True)
    if built:
        return str(built[0])
    return shutil.which("gcomp-codec")


@pytest.fixture(scope="session")
def codec_cli():
    cli = find_codec_cli()
    if cli is None:
        pytest.skip("gcomp-codec not built (set GCOMP_CODEC_CLI)")
    return cli


@pytest.fixture(scope="session")
def golden_dir():
    return ROOT / "tests" / "data" / "golden"
