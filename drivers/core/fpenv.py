"""IEEE 754 subnormal numbers, kept in a process that loads a library built with -ffast-math.

GCC links such a library with ``crtfastmath.o``, whose constructor turns on flush-to-zero in the
FPU's control register (FPSCR.FZ on 32-bit ARM, FPCR.FZ on aarch64, MXCSR FTZ/DAZ on x86) for
the whole process the moment the library is loaded. PyPI's armv7l wheel of yarl 1.25 is one
(``vmsr fpscr`` with bit 24 in its init code), and aiohttp imports yarl: on 32-bit Raspberry Pi
OS, ``import aiohttp`` made every value below 2.2e-308 read 0.0 (``float("5e-324")``, repr, JSON,
arithmetic) in that process, the filter kernels stopped matching their pure-Python twin, and a
module first compiled there kept such a literal as 0.0 in its cached bytecode.
Found by running the suite in the armhf root (docs/BENCHMARKS.md, "On ARM").

The modules that bring aiohttp in call :func:`keep_subnormals` once it is loaded: the
commissioning page (agent/ui/app.py) and the simulators (drivers/sim/server.py: pymodbus.server
imports aiohttp for its web simulator; ``cityedge demo`` runs the agent in that process). The
daemon never loads it. ``fesetenv(FE_DFL_ENV)`` gives back the floating-point environment every
process starts with (round to nearest, no traps, no flushing), which is what Python assumes.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

# glibc and musl both define FE_DFL_ENV as ((const fenv_t *) -1)
_FE_DFL_ENV = ctypes.c_void_p(-1)


def subnormals_flushed() -> bool:
    """Whether this process flushes subnormal results to zero (computed at run time: the
    compiler does not fold an attribute's value)."""
    return sys.float_info.min / 2.0 == 0.0


def keep_subnormals() -> bool:
    """Turn flush-to-zero off again if a loaded library turned it on. Returns whether it had
    to; raises OSError if the C library cannot restore the default environment."""
    if not subnormals_flushed():
        return False
    try:
        libm = ctypes.CDLL("libm.so.6")
    except OSError:
        libm = ctypes.CDLL(ctypes.util.find_library("m"))
    if libm.fesetenv(_FE_DFL_ENV) != 0 or subnormals_flushed():
        raise OSError("cannot turn off flush-to-zero (fesetenv(FE_DFL_ENV) failed)")
    return True
