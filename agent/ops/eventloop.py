"""The daemon's event loop: the standard library's by default, uvloop on request.

``CITYEDGE_EVENT_LOOP=uvloop`` (with ``pip install 'cityedge[uvloop]'``) runs the agent on
uvloop. Measured on the end-to-end benchmark (docs/BENCHMARKS.md), it spends up to a tenth less
CPU per reading, within the run-to-run noise, and costs about 3 MB more resident memory every
time. So the default is the standard loop, which also keeps a binary dependency off armv7
installs. If uvloop is asked for but cannot be imported, the agent says so and runs on asyncio.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Coroutine
from typing import Any, TypeVar

log = logging.getLogger("cityedge")
T = TypeVar("T")
ENV = "CITYEDGE_EVENT_LOOP"
CHOICES = ("asyncio", "uvloop")


def loop_name() -> str:
    """``"uvloop"`` or ``"asyncio"``: what :func:`run` will use."""
    wanted = os.environ.get(ENV, "asyncio").strip().lower() or "asyncio"
    if wanted not in CHOICES:
        log.warning("%s=%s: not one of %s; using asyncio", ENV, wanted, ", ".join(CHOICES))
        return "asyncio"
    if wanted == "uvloop":
        try:
            import uvloop  # noqa: F401
        except ImportError:
            log.warning("%s=uvloop but uvloop is not installed; using asyncio", ENV)
            return "asyncio"
    return wanted


def run(main: Coroutine[Any, Any, T]) -> T:
    """``asyncio.run`` on the chosen loop."""
    if loop_name() == "uvloop":
        import uvloop

        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            return runner.run(main)
    return asyncio.run(main)
