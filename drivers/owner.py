"""BusOwner: the one task that owns a physical bus, the same on every bus kind.

Modbus (``drivers/modbus/bus.py``) and the serial protocols (``drivers/serial/bus.py``) are
this skeleton with a small per-protocol session underneath (``Session``). The skeleton
decides *when*; the session decides *what goes on the wire* and what the answer means:

- schedule: a device's points are polled in groups by interval (the device's, or a point's
  own), the first poll at once, then on the aligned grid (``drivers/schedule.py``); a tick
  missed because the bus was busy is skipped and counted in ``overruns``, never queued;
- one tick: the session gets the groups of every device due (``begin``: "read these groups",
  which Modbus TCP sends as one batch on its I/O thread), then polls them device by device,
  probes of offline devices last;
- writes go ahead of polls: before the next poll, and between the requests of a running poll
  (the session asks ``serve_writes`` before each request; a running batch is cut after its
  request in flight). A write while the link is down is REJECTED at once, "bus not connected";
- the device state (``drivers/device_state.py``) from what each poll came to, with probes for
  offline devices (one try, backoff while other devices on the bus answer);
- each transition goes to ``on_state`` in order with the readings: the failed poll that takes a
  device down emits its (BAD) readings before the transition, a device coming back gets its
  transition before the readings of that poll; an offline device emits nothing on its ticks
  (STALE last values with the offline reason if the bus sets ``stale_readings``);
- the link: a failed open retries with jittered backoff from ``reconnect_min`` to
  ``reconnect_max`` (10 s); a link lost after it carried a transaction is reopened at once,
  one that dropped before any answer backs off like a failed open. One log line each way, on
  the ``cityedge.bus`` logger, the same words on every bus kind.

``emit`` is awaited by the bus owner: a slow pipeline slows this bus. Nothing here does I/O.
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
import time
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Generic, Protocol, TypedDict, TypeVar

from drivers.base import (
    BusStats,
    DeviceBinding,
    Emit,
    StateListener,
    WriteResult,
    WriteStatus,
    no_listener,
)
from drivers.core.config import BusConfig
from drivers.core.endpoint import parse_endpoint
from drivers.core.profile import Point
from drivers.core.reading import Reading, Value, now_ms
from drivers.core.waits import wait_event
from drivers.device_state import Reason, Transition
from drivers.polling import Device, HealthOptions, PollResult
from drivers.schedule import Backoff, Group

log = logging.getLogger("cityedge.bus")
D = TypeVar("D", bound=Device)


class LinkDown(Exception):
    """The link cannot open, or was lost; ``kind``: what it means for the devices on it."""

    def __init__(self, reason: str, kind: Reason) -> None:
        self.reason = reason
        self.kind = kind
        super().__init__(reason)


class WriteRefused(Exception):
    """A write refused before anything went on the wire (REJECTED, ``reason`` says why)."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


class Owner(Protocol):
    """What a session may ask of its bus owner while it works."""

    async def serve_writes(self) -> None:
        """Serve the writes waiting (called before each request of a poll)."""

    def answered(self) -> None:
        """A reply came: the link works (resets the reconnect backoff)."""

    def link_lost(self, failure: LinkDown) -> None:
        """The link was lost during a request."""


class Session(Protocol[D]):
    """One protocol on one bus: the link, the requests, what the replies mean."""

    readback_by_poll: bool  # a successful write is confirmed by polling its device

    @property
    def connected(self) -> bool: ...

    @property
    def down_reason(self) -> Reason:
        """What a closed link means for the devices (reset, port gone)."""

    def bind(self, owner: Owner, stats: BusStats) -> None: ...

    def device(self, binding: DeviceBinding, opts: HealthOptions) -> D: ...

    async def open(self) -> None:
        """Open the link; LinkDown if it cannot."""

    def close(self) -> None: ...

    async def begin(self, polls: Sequence[tuple[D, list[Group]]]) -> None:
        """A tick starts: these groups will be polled, in this order ("read these groups")."""

    def end(self) -> None:
        """The tick's polls are done."""

    async def poll(self, dev: D, groups: list[Group]) -> PollResult: ...

    def prepare_write(self, dev: D, point: Point, value: Value) -> object:
        """Validate and encode a write; WriteRefused if it cannot go on the wire."""

    async def write(self, dev: D, point: Point, payload: object) -> WriteResult:
        """Put it on the wire; LinkDown if the link is lost meanwhile."""

    def cut(self) -> None:
        """A write is waiting: end a running batch after its request in flight."""


@dataclass
class _WriteJob:
    device_id: str
    point: Point
    payload: object  # what the session's prepare_write made of the value
    future: asyncio.Future[WriteResult]
    started: bool = False  # the owner took it off the queue and put it on the wire
    cancelled: bool = False  # the caller gave up; the owner skips it if not started

    def finish(self, result: WriteResult) -> None:
        if not self.future.done():
            self.future.set_result(result)


class OwnerOptions(TypedDict, total=False):
    """The skeleton's options, for a bus kind that takes options of its own besides them."""

    quarantine_min: float
    reconnect_min: float
    reconnect_max: float
    rng: random.Random | None
    clock: Callable[[], float]
    wall_ms: Callable[[], int]
    on_state: StateListener


class BusOwner(ABC, Generic[D]):
    """Implements ``drivers.base.BusDriver`` for any session; a bus kind says which session
    (``new_session``) and takes every option of the skeleton as it is."""

    def __init__(
        self,
        bus: BusConfig,
        devices: Sequence[DeviceBinding],
        emit: Emit,
        *,
        quarantine_min: float = 1.0,
        reconnect_min: float = 0.5,
        reconnect_max: float = 10.0,
        rng: random.Random | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall_ms: Callable[[], int] = now_ms,
        on_state: StateListener = no_listener,
    ) -> None:
        self.bus_id = bus.id
        self.config = bus
        self.stats = BusStats()
        self.endpoint = parse_endpoint(bus.endpoint)
        self.session = session = self.new_session(bus, clock, wall_ms)
        self.clock = clock
        self._emit = emit
        self._on_state = on_state
        self._rng = rng or random.Random()
        session.bind(self, self.stats)
        opts = HealthOptions(quarantine_min, bus.quarantine_max, self._rng, clock, wall_ms)
        self.devices: dict[str, D] = {}
        for b in devices:
            if b.device.enabled:
                d = self.devices[b.id] = session.device(b, opts)
                self.stats.devices[b.id] = d.stats
        self._writes: deque[_WriteJob] = deque()
        self._writing = False
        self._wake = asyncio.Event()
        self._ready = asyncio.Event()
        self._reconnect = Backoff(reconnect_min, max(reconnect_min, reconnect_max), rng=self._rng)
        self._next_connect = 0.0
        self._ever_connected = False
        self._link_carried = False  # a transaction went through on the current link
        self._link_kind = session.down_reason  # why the link is down, for the devices' state
        self._link_detail: str | None = None

    @abstractmethod
    def new_session(
        self, bus: BusConfig, clock: Callable[[], float], wall_ms: Callable[[], int]
    ) -> Session[D]:
        """The protocol's session on ``bus``, on the owner's clocks."""

    # --- BusDriver ------------------------------------------------------------------------
    async def ready(self) -> None:
        await self._ready.wait()

    async def run(self) -> None:
        try:
            now, wall = self.clock(), time.time() if self.config.align_polls else None
            for d in self.devices.values():
                d.schedule.start(now, wall)
            while True:
                await self._step()
        finally:
            self.session.close()
            self.stats.connected = False
            while self._writes:
                self._writes.popleft().finish(WriteResult(WriteStatus.REJECTED, "bus stopped"))

    async def write(
        self, device_id: str, point: str, value: Value, timeout: float = 10.0
    ) -> WriteResult:
        dev = self.devices.get(device_id)
        if dev is None:
            why = f"unknown device '{device_id}' on bus '{self.bus_id}'"
            return WriteResult(WriteStatus.REJECTED, why)
        try:
            p = dev.binding.profile.point(point)
        except KeyError:
            return WriteResult(WriteStatus.REJECTED, f"unknown point '{point}'")
        try:
            payload = self.session.prepare_write(dev, p, value)
        except WriteRefused as exc:
            return WriteResult(WriteStatus.REJECTED, exc.reason)
        if not self.stats.connected and self._ready.is_set():
            # known down (before the first open it is not: the write waits for it)
            return WriteResult(WriteStatus.REJECTED, "bus not connected")
        job = _WriteJob(dev.binding.id, p, payload, asyncio.get_running_loop().create_future())
        self._writes.append(job)
        self._wake.set()
        self.session.cut()  # a write goes out before the next poll request
        try:
            return await asyncio.wait_for(asyncio.shield(job.future), timeout)
        except TimeoutError:
            job.cancelled = True
            what = "no answer" if job.started else "not sent (bus busy)"
            return WriteResult(WriteStatus.TIMEOUT, f"{what} within {timeout:g} s")
        except asyncio.CancelledError:
            job.cancelled = True
            raise

    # --- what sessions ask ----------------------------------------------------------------
    async def serve_writes(self) -> None:
        if self._writing:  # a write's own requests (a read-back) do not serve others
            return
        while self._writes and self.session.connected:
            await self._serve_write(self._writes.popleft())

    def answered(self) -> None:
        # only now is a reconnect known to have worked (a serial server that accepts and
        # drops at once must keep backing off)
        self._reconnect.reset()
        self._link_carried = True

    def link_lost(self, failure: LinkDown | None = None) -> None:
        if not self.stats.connected:  # told already (by the request that met it)
            self.session.close()
            return
        reason = "link closed" if failure is None else failure.reason
        log.warning("bus %s: connection lost (%s)", self.bus_id, reason)
        self.stats.connected = False
        self.stats.link_error = reason
        self._link_kind = self.session.down_reason if failure is None else failure.kind
        self._link_detail = reason
        self.session.close()
        # a link that carried transactions is reopened at once (a peer restart, a supervision
        # close); one that dropped before any answer backs off like a failed open
        delay = 0.0 if self._link_carried else self._reconnect.next()
        self._link_carried = False
        self.stats.retry_in = delay
        self._next_connect = self.clock() + delay

    # --- the owner loop -------------------------------------------------------------------
    async def _step(self) -> None:
        now = self.clock()
        if not self.session.connected:
            if self.stats.connected:
                self.link_lost()
            if now >= self._next_connect:
                await self._connect()
                return
            while self._writes:
                self._writes.popleft().finish(
                    WriteResult(WriteStatus.REJECTED, "bus not connected")
                )
        elif self._writes:
            await self._serve_write(self._writes.popleft())
            return
        wake = self._next_connect if not self.session.connected else math.inf
        if self.devices:
            due = min(d.schedule.due for d in self.devices.values())
            if due <= now:
                await self._tick(now)
                return
            wake = min(wake, due)
        self._wake.clear()
        if wake == math.inf:
            await self._wake.wait()
            return
        await wait_event(self._wake, wake - now)

    async def _connect(self) -> None:
        try:
            await self.session.open()
        except LinkDown as exc:
            delay = self._reconnect.next()
            self._next_connect = self.clock() + delay
            self._link_kind, self._link_detail = exc.kind, exc.reason
            self.stats.link_error, self.stats.retry_in = exc.reason, delay
            lvl = logging.WARNING if self._reconnect.failures == 1 else logging.DEBUG
            log.log(
                lvl,
                "bus %s: cannot open %s (%s); retrying in %.1f s",
                self.bus_id,
                self.endpoint.url,
                exc.reason,
                delay,
            )
            self._ready.set()
            return
        if self._ever_connected:
            self.stats.reconnects += 1
            log.info("bus %s: reconnected to %s", self.bus_id, self.endpoint.url)
        self._ever_connected = True
        self._link_carried = False
        self.stats.connected = True
        self.stats.link_error = None
        self._ready.set()
        if self.config.connect_pause:
            await asyncio.sleep(self.config.connect_pause)  # devices that need time after open

    async def _tick(self, now: float) -> None:
        """Poll every device due now. The session gets the whole tick first ("read these
        groups"); probes of offline devices go last, so a dead device's timeout comes after
        its neighbours' replies."""
        devs = sorted(
            (d for d in self.devices.values() if d.schedule.due <= now),
            key=lambda d: (d.health.probing, d.schedule.due),
        )
        due = [(d, d.schedule.due_groups(now)) for d in devs]
        if self.stats.connected and not self._writes:  # a waiting write goes first
            await self.session.begin([(d, g) for d, g in due if d.health.may_poll(now)])
        try:
            for d, groups in due:
                await self._poll(d, groups)
        finally:
            self.session.end()

    def _shared(self, dev: D) -> bool:
        """Other devices on this bus still answer: a dead one must not slow them down."""
        return any(d is not dev and not d.health.offline for d in self.devices.values())

    async def _poll(self, dev: D, groups: list[Group], *, tick: bool = True) -> PollResult | None:
        """Poll ``groups`` of ``dev`` (if its state allows) and report what it came to;
        ``tick``: a scheduled poll (its groups move on to their next tick)."""
        start = self.clock()
        h = dev.health
        transition: Transition | None = None
        result: PollResult | None = None
        # the owner's view of the link: the session may have lost it during this tick, and
        # the poll that met the loss says why (it went through link_lost)
        if not self.stats.connected:
            transition = h.failed(self._link_kind, self._link_detail, probed=False)
        elif h.may_poll(start):
            busy = self.stats.busy_s
            result = await self.session.poll(dev, groups)
            dev.stats.polls += 1
            # with a batch the wire time was spent before this poll started
            dev.stats.last_cycle_s = max(self.clock() - start, self.stats.busy_s - busy)
            if result.answered or result.failure is None:
                transition = h.good(result.failing, dev.excluded_points)
            else:
                transition = h.failed(*result.failure, shared=self._shared(dev))
        if tick:
            dev.stats.overruns += dev.schedule.advance(groups, self.clock(), start)
        await self._report(dev, transition, [] if result is None else result.readings, groups)
        return result

    async def _report(
        self, dev: D, transition: Transition | None, readings: list[Reading], groups: list[Group]
    ) -> None:
        """Hand on what a poll came to, in order: the failed poll that takes a device down
        (its points BAD) before the transition; a transition up before the poll's readings;
        nothing from a device that stays offline (stale values if configured)."""
        if transition is not None:
            if not transition.online and readings:
                await self._emit(dev.binding, readings)
                readings = []
            await self._on_state(transition)
            if not transition.online:
                return
        if dev.health.offline:
            if not self.config.stale_readings:
                return
            why = dev.stats.reason or "offline"
            readings = dev.stale(dev.live_points(groups), now_ms(), why)
        if readings:
            await self._emit(dev.binding, readings)

    async def _serve_write(self, job: _WriteJob) -> None:
        if job.cancelled:
            return
        dev = self.devices[job.device_id]
        if not self.session.connected:
            job.finish(WriteResult(WriteStatus.REJECTED, "bus not connected"))
            return
        job.started = True
        self._writing = True  # its own requests (the read-back too) serve no other write
        try:
            try:
                result = await self.session.write(dev, job.point, job.payload)
            except LinkDown as exc:
                self.link_lost(exc)
                result = WriteResult(WriteStatus.TIMEOUT, "connection lost")
            if result.status is WriteStatus.OK and self.session.readback_by_poll:
                job.finish(await self._read_back(dev, job.point.name))
        finally:  # (also when the link drops during the read-back: the write did succeed)
            self._writing = False
            job.finish(result)

    async def _read_back(self, dev: D, name: str) -> WriteResult:
        """Poll the groups of ``dev`` that hold point ``name`` (reported like any poll)."""
        groups = [g for g in dev.schedule.groups if any(p.name == name for p in g.points)]
        poll = await self._poll(dev, groups, tick=False) if groups else None
        ok = poll is not None and poll.failure is None
        return WriteResult(WriteStatus.OK, readback=dev.last_good.get(name) if ok else None)
