"""One poller of the running agent, shared by every open page.

While at least one page listens (server-sent events), the hub asks the agent over its control
socket (one persistent connection) for ``status``, the points' values, ``buses`` and the new
``warnings`` every ``interval`` seconds, merges them into one ``snapshot`` event and hands the
same serialized text to every listener. With nobody listening it asks nothing, so an idle page
process costs the agent nothing. What changes only with the config goes out as events of its
own, at the first poll and after each reload of the agent's config: ``plan`` (the read plan)
and ``devices`` (kind, bus, profile, interval and each point's unit, type, bounds, labels).
The measured bus load is the share of time the bus was busy over the last ``LOAD_WINDOW``
seconds (the agent's ``busyS`` counter between two answers).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

from agent.control.ctl import REPLY_LIMIT
from drivers.core.reading import iso_ms, now_ms

log = logging.getLogger("cityedge.ui")
LOAD_WINDOW = 10.0
QUEUE = 4  # events a slow listener may fall behind before the oldest are dropped
Event = tuple[str, str]  # (event name, JSON text)


class AgentUnreachable(Exception):
    def __init__(self, message: str) -> None:
        self.message = message
        super().__init__(message)


class ControlClient:
    """Requests over one kept-open control-socket connection, reopened when it breaks."""

    def __init__(self, path: Path, timeout: float = 5.0) -> None:
        self.path = path
        self.timeout = timeout
        self._conn: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
        self._lock = asyncio.Lock()

    async def call(self, req: dict[str, Any]) -> dict[str, Any]:
        async with self._lock:
            for attempt in (1, 2):  # a kept connection may have died with a restarted agent
                try:
                    return await self._call(req)
                except (OSError, EOFError, TimeoutError, ValueError) as exc:
                    await self.close()
                    if attempt == 2 or isinstance(exc, TimeoutError):
                        raise AgentUnreachable(_why(self.path, exc)) from exc
        raise AssertionError("unreachable")

    async def _call(self, req: dict[str, Any]) -> dict[str, Any]:
        if self._conn is None:
            self._conn = await asyncio.wait_for(
                asyncio.open_unix_connection(str(self.path), limit=REPLY_LIMIT), self.timeout
            )
        reader, writer = self._conn
        writer.write(json.dumps(req).encode() + b"\n")
        await writer.drain()
        line = await asyncio.wait_for(reader.readline(), self.timeout)
        if not line:
            raise EOFError("the agent closed the control connection")
        reply: dict[str, Any] = json.loads(line)
        return reply

    async def close(self) -> None:
        if self._conn is not None:
            _, writer = self._conn
            self._conn = None
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()


def _why(path: Path, exc: BaseException) -> str:
    if isinstance(exc, FileNotFoundError):
        return f"no control socket at {path}: is the agent running (systemctl status cityedge)?"
    if isinstance(exc, PermissionError):
        return f"no permission to reach {path}: run as root or as the agent's user"
    if isinstance(exc, ConnectionRefusedError):
        return f"nobody listens on {path}: is the agent running (systemctl status cityedge)?"
    if isinstance(exc, TimeoutError):
        return "the agent did not answer in time"
    return f"lost the agent's control connection ({exc})"


class Hub:
    def __init__(
        self,
        client: ControlClient,
        interval: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.client = client
        self.interval = interval
        self.clock = clock
        self.listeners: set[asyncio.Queue[Event]] = set()
        self.last: dict[str, Event] = {}  # event name -> the latest, for a new listener
        self.last_activity = clock()
        self._wake = asyncio.Event()
        self._warnings: dict[tuple[str, str, str], dict[str, Any]] = {}
        self._warn_seq = 0
        self._plan_reload: object = None  # the agent's lastReload the plan was fetched for
        self._uptime = 0.0
        self._busy: dict[str, deque[tuple[float, float]]] = {}

    # -- listeners ----------------------------------------------------------------------------
    def subscribe(self) -> asyncio.Queue[Event]:
        q: asyncio.Queue[Event] = asyncio.Queue(QUEUE)
        for ev in self.last.values():
            q.put_nowait(ev)
        self.listeners.add(q)
        self._wake.set()
        return q

    def unsubscribe(self, q: asyncio.Queue[Event]) -> None:
        self.listeners.discard(q)
        self.last_activity = self.clock()

    def _publish(self, name: str, doc: dict[str, Any]) -> None:
        ev = (name, json.dumps(doc, separators=(",", ":"), default=str))
        self.last[name] = ev
        for q in self.listeners:
            if q.full():  # a stalled page loses old snapshots, never blocks the others
                with contextlib.suppress(asyncio.QueueEmpty):
                    q.get_nowait()
            q.put_nowait(ev)

    # -- polling ------------------------------------------------------------------------------
    async def run(self) -> None:
        while True:
            if not self.listeners:
                self._wake.clear()
                await self._wake.wait()
            self.last_activity = self.clock()
            started = self.clock()
            await self.poll_once()
            await asyncio.sleep(max(0.05, self.interval - (self.clock() - started)))

    async def poll_once(self) -> dict[str, Any]:
        self.last_activity = self.clock()
        try:
            snap = await self.snapshot()
        except (AgentUnreachable, KeyError, TypeError, ValueError) as exc:
            why = (
                exc.message
                if isinstance(exc, AgentUnreachable)
                else f"unexpected answer from the agent ({exc!r}): is it another version?"
            )
            snap = {"time": iso_ms(now_ms()), "agent": {"reachable": False, "error": why}}
            self._plan_reload = None  # the agent may come back with another config
        self._publish("snapshot", snap)
        return snap

    async def snapshot(self) -> dict[str, Any]:
        status = await self._ask({"op": "status"})
        reload_mark = json.dumps(status.get("lastReload"), sort_keys=True)
        if status["uptimeS"] < self._uptime:  # restarted between two polls, maybe reconfigured
            self._plan_reload = None
        self._uptime = float(status["uptimeS"])
        if reload_mark != self._plan_reload:
            # what changes only with the config: the read plan and the devices' description
            plan = await self._ask({"op": "plan"})
            described = await self._ask({"op": "values"})
            self._plan_reload = reload_mark
            self._publish("plan", {k: v for k, v in plan.items() if k != "ok"})
            self._publish("devices", {"devices": _descriptions(described["devices"])})
        values = await self._ask({"op": "values", "meta": False})
        buses = await self._ask({"op": "buses"})
        news = await self._ask({"op": "warnings", "since": self._warn_seq})
        for w in news["warnings"]:
            self._warn_seq = max(self._warn_seq, int(w["seq"]))
            key = (w["level"], w["logger"], w["message"])
            self._warnings.pop(key, None)
            self._warnings[key] = w
        while len(self._warnings) > 100:
            self._warnings.pop(next(iter(self._warnings)))
        devices = {}
        for dev_id, info in values["devices"].items():
            devices[dev_id] = {**status["devices"].get(dev_id, {}), **info}
        return {
            "time": iso_ms(now_ms()),
            "agent": {"reachable": True, "error": None},
            "gateway": status["gateway"],
            "uptimeS": status["uptimeS"],
            "readingsRead": status["readingsRead"],
            "readingsDelivered": status["readingsDelivered"],
            "devices": devices,
            "buses": [self._with_load(b, buses["uptimeS"]) for b in buses["buses"]],
            "sinks": status["sinks"],
            "commands": status.get("commands"),
            "lastReload": status.get("lastReload"),
            "warnings": list(reversed(self._warnings.values())),  # newest first
        }

    async def _ask(self, req: dict[str, Any]) -> dict[str, Any]:
        reply = await self.client.call(req)
        if not reply.get("ok"):
            raise AgentUnreachable(f"the agent refused '{req['op']}': {reply.get('error')}")
        return reply

    def _with_load(self, bus: dict[str, Any], uptime: float) -> dict[str, Any]:
        if "busyS" not in bus:
            return bus
        hist = self._busy.setdefault(bus["id"], deque())
        if hist and uptime < hist[-1][0]:
            hist.clear()  # the agent restarted
        hist.append((uptime, float(bus["busyS"])))
        while len(hist) > 2 and uptime - hist[1][0] >= LOAD_WINDOW:
            hist.popleft()
        (t0, b0), (t1, b1) = hist[0], hist[-1]
        load = (b1 - b0) / (t1 - t0) if t1 > t0 else None
        return {**bus, "load": None if load is None else round(min(max(load, 0.0), 1.0), 4)}


_VALUE_FIELDS = frozenset({"value", "quality", "reason", "observedAt", "ageS"})


def _descriptions(devices: dict[str, Any]) -> dict[str, Any]:
    """The ``values`` answer without the values: what a page needs once per config."""
    return {
        dev: {
            **{k: v for k, v in info.items() if k != "points"},
            "points": [
                {k: v for k, v in p.items() if k not in _VALUE_FIELDS} for p in info["points"]
            ],
        }
        for dev, info in devices.items()
    }
