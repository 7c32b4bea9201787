"""Auxiliary services never stop collection: each runs supervised, and a failure is an alarm.

The agent exists to poll and forward. The metrics/health endpoint, the control socket, the
watchdog, the clock monitor, the config watcher and the sequence mark only help; none of them
may take the root TaskGroup (and with it every bus and the outbox) down. ``supervise`` runs
each one:

- a failure the field produces (``OSError``: a port another process holds, a read-only or
  full directory; or ``ServiceUnavailable`` with the service's own words) is one error line
  saying what is wrong, what goes on working and when it is tried again; no traceback;
- anything else is a bug: the same line, then the traceback once (not on every retry);
- either way the service is started again with backoff (5 s doubling to 5 min), and after it
  has run for ``SETTLE`` seconds its alarm is cleared with one info line.

While a service is down its alarm is shown in ``/health`` (status degraded, with the reason),
in ``cityedge status`` and in the MQTT health message, so a gateway whose endpoint cannot bind
says so on every channel that still works.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

from drivers.core.reading import iso_ms, now_ms

log = logging.getLogger("cityedge.alarms")

RETRY_MIN = 5.0
RETRY_MAX = 300.0
SETTLE = 2.0  # a service that has run this long is up again (a bind fails in milliseconds)


class ServiceUnavailable(Exception):
    """A service cannot run for a reason outside the agent; ``message`` is the whole story
    for the log (what, why, how to fix it), so no traceback is printed."""

    def __init__(self, message: str) -> None:
        self.message = message
        super().__init__(message)


@dataclass(frozen=True, slots=True)
class Alarm:
    source: str  # the service's task name: http, control, watchdog, timesync, ...
    message: str
    since_ms: int

    def to_dict(self) -> dict[str, str]:
        return {"source": self.source, "message": self.message, "since": iso_ms(self.since_ms)}

    def __str__(self) -> str:
        return f"{self.source}: {self.message}"


class Alarms:
    """The alarms raised and not yet cleared, by source (one per source)."""

    def __init__(self, wall_ms: Callable[[], int] = now_ms) -> None:
        self._active: dict[str, Alarm] = {}
        self._wall_ms = wall_ms

    def set(self, source: str, message: str) -> bool:
        """Raise (or re-word) the alarm of ``source``; True when it is new or its text changed."""
        old = self._active.get(source)
        if old is not None and old.message == message:
            return False
        since = old.since_ms if old is not None else self._wall_ms()
        self._active[source] = Alarm(source, message, since)
        return True

    def clear(self, source: str) -> Alarm | None:
        return self._active.pop(source, None)

    def active(self) -> tuple[Alarm, ...]:
        return tuple(self._active.values())

    def __len__(self) -> int:
        return len(self._active)


def describe(exc: BaseException) -> str:
    if isinstance(exc, ServiceUnavailable):
        return exc.message
    if isinstance(exc, OSError):
        where = f" ({exc.filename})" if exc.filename else ""
        return f"{exc.strerror or exc}{where}"
    return f"{type(exc).__name__}: {exc}"


async def supervise(
    name: str,
    factory: Callable[[], Coroutine[Any, Any, None]],
    alarms: Alarms,
    *,
    retry_min: float = RETRY_MIN,
    retry_max: float = RETRY_MAX,
    settle: float = SETTLE,
) -> None:
    """Run ``factory()`` until it returns; restart it with backoff when it fails."""
    delay = retry_min
    traced = False
    loop = asyncio.get_running_loop()
    while True:
        started = loop.time()
        up = loop.call_later(settle, _recovered, name, alarms)
        try:
            await factory()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            failure = exc
        else:
            alarms.clear(name)
            return
        finally:
            up.cancel()
        if loop.time() - started > retry_max:
            delay = retry_min  # it had been running for a good while: a new failure
        message = describe(failure)
        if alarms.set(name, message):
            log.error(
                "%s: %s; polling and forwarding go on, retrying in %.0f s", name, message, delay
            )
        else:
            log.debug("%s: still failing: %s", name, message)
        if not isinstance(failure, (ServiceUnavailable, OSError)) and not traced:
            traced = True  # a bug, not a condition of the site: show where, once
            log.error("%s failed unexpectedly", name, exc_info=failure)
        await asyncio.sleep(delay)
        delay = min(delay * 2, retry_max)


def _recovered(name: str, alarms: Alarms) -> None:
    cleared = alarms.clear(name)
    if cleared is not None:
        log.info("%s: running again (alarm cleared: %s)", name, cleared.message)
