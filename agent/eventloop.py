"""The daemon's event loop: uvloop when it is installed, the standard library's otherwise.

On a gateway most of the agent's CPU is event-loop work per Modbus transaction (a timer, a
future, a socket send, a wake-up): with uvloop the end-to-end benchmark spends about a fifth
less CPU per reading (docs/BENCHMARKS.md). uvloop is a dependency on Linux (wheels for aarch64
on PyPI, for armv7 on piwheels); where it cannot be imported the agent runs unchanged on
asyncio. ``CITYEDGE_EVENT_LOOP=asyncio`` forces the standard loop (to rule uvloop out when
chasing a bug).
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


def loop_name() -> str:
    """``"uvloop"`` or ``"asyncio"``: what :func:`run` will use."""
    if os.environ.get(ENV, "auto").strip().lower() == "asyncio":
        return "asyncio"
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return "asyncio"
    return "uvloop"


def run(main: Coroutine[Any, Any, T]) -> T:
    """``asyncio.run`` on the chosen loop."""
    if loop_name() == "uvloop":
        import uvloop

        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            return runner.run(main)
    return asyncio.run(main)
