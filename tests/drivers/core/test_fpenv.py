"""Flush-to-zero turned on by a library built with -ffast-math, and turned off again
(drivers/core/fpenv.py). Each case runs in a process of its own: the FPU's control register is
per process, and this one must keep its subnormals."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]


def python(code: str) -> list[str]:
    argv = [sys.executable, "-c", code]
    res = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=120, check=False)
    assert res.returncode == 0, res.stderr
    return res.stdout.split()


def test_a_fast_math_library_loaded_later_is_undone(tmp_path: Path) -> None:
    # what -ffast-math adds at link time: crtfastmath.o, whose constructor sets the flag
    crt = subprocess.run(
        ["gcc", "-print-file-name=crtfastmath.o"], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert Path(crt).is_file(), f"gcc has no crtfastmath.o for {crt!r}"
    src, lib = tmp_path / "fast.c", tmp_path / "libfast.so"
    src.write_text("int fast(void) { return 1; }\n")
    subprocess.run(["gcc", "-shared", "-fPIC", "-o", lib, src, crt], check=True)
    out = python(
        "import ctypes, sys\n"
        "from drivers.core.fpenv import keep_subnormals, subnormals_flushed\n"
        "print(subnormals_flushed(), keep_subnormals())\n"
        f"ctypes.CDLL({str(lib)!r})\n"
        "print(subnormals_flushed())\n"
        "print(keep_subnormals(), subnormals_flushed(), repr(float('5e-324')))\n"
        "print(repr(sys.float_info.min / 2), keep_subnormals())\n"
    )
    assert out == [
        "False", "False",  # a clean process: nothing to do
        "True",  # the library's constructor flushed subnormals for the whole process
        "True", "False", "5e-324",  # turned off again: parsed and printed exactly
        "1.1125369292536007e-308", "False",  # and computed; once is enough
    ]  # fmt: skip


@pytest.mark.parametrize(
    "module",
    [
        "agent.ui.app",  # the commissioning page (aiohttp)
        "drivers.sim.server",  # the simulators: pymodbus.server loads aiohttp; `cityedge demo`
    ],
)
def test_the_processes_that_load_aiohttp_keep_subnormals(module: str) -> None:
    """aiohttp loads yarl, whose armv7l wheel is linked with crtfastmath (on armhf this is the
    real case; elsewhere the wheel leaves the FPU alone, and so must these modules)."""
    out = python(
        "import sys\n"
        f"import {module}\n"
        "assert 'yarl' in sys.modules\n"
        "print(repr(float('5e-324')), repr(sys.float_info.min / 2))\n"
    )
    assert out == ["5e-324", "1.1125369292536007e-308"]
