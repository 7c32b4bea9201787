"""Filter kernels: the compiled Cython module when present, else the pure-Python twin.

``CITYEDGE_NO_EXT=1`` forces the twin. ``IMPLEMENTATION`` says which one was loaded
("cython" or "python"). Both expose the same API: ``Bank`` plus the opcode, quality, reason and
emit-flag constants (see docs/FILTERS.md). Import ``ext._filters`` / ``ext._pyfilters``
directly to pick one explicitly (the tests do).
"""

from __future__ import annotations

import os
from types import ModuleType

from ext import _pyfilters


def _load() -> tuple[ModuleType, str]:
    if os.environ.get("CITYEDGE_NO_EXT") == "1":
        return _pyfilters, "python"
    try:
        from ext import _filters
    except ImportError:
        return _pyfilters, "python"
    return _filters, "cython"


_impl, IMPLEMENTATION = _load()

Bank = _impl.Bank
impl: ModuleType = _impl

from ext._common import (  # noqa: E402
    EMIT_HELD,
    EMIT_NOW,
    HELD,
    MAX_WINDOW,
    N_PARAMS,
    N_STATE,
    OP_DEADBAND,
    OP_NAMES,
    OP_RANGE,
    OP_RATE,
    OP_SMOOTH,
    OP_SPIKE,
    OP_SWD,
    OP_TOTAL,
    Q_BAD,
    Q_GOOD,
    Q_STALE,
    R_NONE,
    R_NONFINITE,
    R_NORATE,
    R_RANGE,
    R_RATE,
    R_REPLACED,
    R_RESET,
    R_SPIKE,
    REASON_NAMES,
    normalize_chain,
)

__all__ = [
    "EMIT_HELD",
    "EMIT_NOW",
    "HELD",
    "IMPLEMENTATION",
    "MAX_WINDOW",
    "N_PARAMS",
    "N_STATE",
    "OP_DEADBAND",
    "OP_NAMES",
    "OP_RANGE",
    "OP_RATE",
    "OP_SMOOTH",
    "OP_SPIKE",
    "OP_SWD",
    "OP_TOTAL",
    "Q_BAD",
    "Q_GOOD",
    "Q_STALE",
    "REASON_NAMES",
    "R_NONE",
    "R_NONFINITE",
    "R_NORATE",
    "R_RANGE",
    "R_RATE",
    "R_REPLACED",
    "R_RESET",
    "R_SPIKE",
    "Bank",
    "impl",
    "normalize_chain",
]
