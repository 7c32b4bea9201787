"""Hand start-up memory back once the agent is running.

Start-up (imports, TOML parsing, validation of the configuration and every profile) leaves a
few megabytes of freed objects in the C heap; glibc keeps them mapped. Once the buses are open,
one full collection, then freezing the survivors (modules, the config, profiles: objects that
live as long as the process), then ``malloc_trim`` gives those pages back to the kernel. The
frozen objects leave the collector's generations, so later collections scan only what the
hot path allocates.
"""

from __future__ import annotations

import ctypes
import gc
from collections.abc import Callable


def _malloc_trim() -> Callable[[], object] | None:
    try:
        # the process's own symbols: libc is already loaded (find_library would run ldconfig)
        trim = ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):  # not glibc (musl, ...): nothing to trim
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return lambda: trim(0)


_trim = _malloc_trim()


def settle() -> None:
    gc.collect()
    gc.freeze()
    if _trim is not None:
        _trim()
