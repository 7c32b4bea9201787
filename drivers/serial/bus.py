"""SerialBus: the one task that owns a non-Modbus serial line (or serial server connection).

The same bus rules as ``drivers.modbus.bus.ModbusBus`` (and the same reasons in readings):
- one request at a time, every unit serialized, ``inter_frame_gap`` of silence before each
  request (default 3.5 characters, at least 1.75 ms); writes go before the next poll; a tick
  missed because the bus was busy is skipped and counted in ``overruns``, never queued;
- the device state (online / degraded / offline with a reason) is decided by the model
  every bus kind shares, ``drivers/device_state.py``: silence -> offline "timeout" at the
  first failed poll, garbled replies -> offline "bad frames" at the second, a port gone ->
  offline "port gone" at the first tick without it; each transition goes to ``on_state`` in
  order with the readings. A failed poll emits its points BAD with value None and reason
  "timeout" or "bad frame" (failed probes of an offline device emit nothing); undecodable
  fields are BAD with the decoder's reason (the device is then degraded);
- an offline device is polled only when its probe is due (``quarantine_min`` 1 s doubling to
  ``bus.quarantine_max``, +-20 % jitter; every tick when no other device on the line answers),
  with one try, so a silent or garbage-spewing device costs its neighbours one timeout per
  probe period. Its ticks emit nothing, or STALE last values with the offline reason when the
  bus sets ``stale_readings``;
- an I/O error (USB adapter unplugged, serial server gone) closes the port and reopens it
  with backoff (``reconnect_min`` .. ``reconnect_max``, 10 s); handlers reset their session
  state (M-Bus starts again with SND_NKE); writes while closed fail at once ("not connected");
- each GOOD reading carries the wall-clock time its reply came off the line.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from drivers.base import (
    BusStats,
    DeviceBinding,
    DeviceStats,
    Emit,
    StateListener,
    WriteResult,
    WriteStatus,
    no_listener,
    point_reading,
)
from drivers.core.config import BusConfig
from drivers.core.endpoint import parse_endpoint
from drivers.core.profile import Point
from drivers.core.reading import Quality, Reading, Source, Value, now_ms
from drivers.core.waits import wait_event
from drivers.device_state import DeviceHealth, Reason, Transition, link_reason
from drivers.modbus.schedule import Backoff, first_aligned_tick, next_tick
from drivers.serial.exchange import LineExchange
from drivers.serial.generic import DeviceNak
from drivers.serial.handlers import BadResponse, DeviceTimeout, Handler, make_handler
from drivers.serial.points import PointValueError, RawValue, to_raw, to_value
from drivers.serial.transport import Link, LinkError

log = logging.getLogger("cityedge.serial")

DEFAULT_TIMEOUT = {"serial": 0.5, "pelco-d": 0.3, "mbus": 0.5}


@dataclass
class _Device:
    binding: DeviceBinding
    handler: Handler
    stats: DeviceStats
    x: LineExchange
    health: DeviceHealth
    next_due: float = 0.0
    first_tick: float | None = None  # align_polls: the grid's first tick, after the first poll
    last: dict[str, Value] = field(default_factory=dict)


@dataclass
class _WriteJob:
    dev: _Device
    point: Point
    raw: int | float | str
    future: asyncio.Future[WriteResult]
    abandoned: bool = False


class SerialBus:
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
        self._sources: dict[tuple[str, str], Source] = {}
        self.endpoint = parse_endpoint(bus.endpoint)
        self.link = Link(self.endpoint, bus.rs485)
        self._emit = emit
        self._on_state = on_state
        self._link_kind = link_reason(None, serial=self.endpoint.is_serial)
        self._link_detail: str | None = None
        self.clock = clock
        self.wall_ms = wall_ms
        self._rng = rng or random.Random()
        self._reconnect = Backoff(reconnect_min, max(reconnect_min, reconnect_max), rng=self._rng)
        gap = bus.inter_frame_gap
        self.gap = gap if gap is not None else max(3.5 * self.endpoint.char_time, 0.00175)
        self._devs: dict[str, _Device] = {}
        for b in devices:
            if not b.device.enabled:
                continue
            h = make_handler(b.profile, b.device.unit_id, b.device.address)
            st = self.stats.devices.setdefault(b.id, DeviceStats())
            timeout = h.timeout or bus.timeout or DEFAULT_TIMEOUT[h.protocol]
            retries = h.retries if h.retries is not None else bus.retries
            per_try = timeout + h.max_response * self.endpoint.char_time
            x = LineExchange(self, b.id, st, per_try, retries)
            health = DeviceHealth(
                b.id,
                bus.id,
                st,
                # the bound: max(2 x interval, (retries + 1) x timeout + 1 s)
                offline_after_s=max(2 * b.device.interval, (retries + 1) * per_try + 1.0),
                probe_min=quarantine_min,
                probe_max=bus.quarantine_max,
                rng=self._rng,
                clock=clock,
                wall_ms=wall_ms,
            )
            self._devs[b.id] = _Device(b, h, st, x, health)
        self._writes: deque[_WriteJob] = deque()
        self._wake = asyncio.Event()
        self._ready = asyncio.Event()
        self.last_tx_end = 0.0

    # --- BusDriver API -------------------------------------------------------------------

    async def ready(self) -> None:
        await self._ready.wait()

    async def write(
        self, device_id: str, point: str, value: Value, timeout: float = 10.0
    ) -> WriteResult:
        dev = self._devs.get(device_id)
        if dev is None:
            return WriteResult(
                WriteStatus.REJECTED, f"unknown device '{device_id}' on bus '{self.bus_id}'"
            )
        try:
            p = dev.binding.profile.point(point)
        except KeyError:
            return WriteResult(WriteStatus.REJECTED, f"unknown point '{point}'")
        try:
            raw = to_raw(p, value)
            dev.handler.validate_write(p, raw)
        except PointValueError as exc:
            return WriteResult(WriteStatus.REJECTED, exc.reason)
        job = _WriteJob(dev, p, raw, asyncio.get_running_loop().create_future())
        self._writes.append(job)
        self._wake.set()
        try:
            return await asyncio.wait_for(asyncio.shield(job.future), timeout)
        except TimeoutError:
            job.abandoned = True  # if still queued it is dropped, never sent late
            return WriteResult(WriteStatus.TIMEOUT, "not completed within the timeout")

    async def run(self) -> None:
        opened_before = False
        start, wall = self.clock(), time.time()
        for d in self._devs.values():
            d.next_due = start  # the first poll at once, aligned ones after it (modbus.device)
            if self.config.align_polls:
                d.first_tick = first_aligned_tick(start, wall, d.binding.device.interval)
        try:
            while True:
                try:
                    await self.link.open()
                except LinkError as exc:
                    self._link_down(exc)
                    lvl = logging.WARNING if not self._reconnect.failing else logging.DEBUG
                    log.log(
                        lvl,
                        "bus %s: cannot open %s: %s",
                        self.bus_id,
                        self.endpoint.url,
                        exc.reason,
                    )
                else:
                    self.stats.connected = True
                    self.stats.link_error = None
                    self.stats.reconnects += opened_before
                    opened_before = True
                    self._reconnect.reset()
                    self._ready.set()
                    try:
                        await self._serve()
                    except LinkError as exc:
                        self._link_down(exc)
                        log.warning("bus %s: link lost (%s); reopening", self.bus_id, exc.reason)
                    finally:
                        self.stats.connected = False
                        await self.link.close()
                self._ready.set()
                delay = self._reconnect.next()
                self.stats.retry_in = delay
                await self._serve_disconnected(delay)
        finally:
            self._fail_writes("bus stopped")

    def _link_down(self, exc: LinkError) -> None:
        self._link_kind, self._link_detail = exc.kind, exc.reason
        self.stats.link_error = exc.reason

    def _fail_writes(self, reason: str) -> None:
        while self._writes:
            job = self._writes.popleft()
            if not job.future.done():
                job.future.set_result(WriteResult(WriteStatus.TIMEOUT, reason))

    # --- scheduling ----------------------------------------------------------------------

    async def _next_due(self) -> _Device | None:
        """The device whose tick is due now (its schedule advanced), or None after sleeping
        until the next tick or a write arrives. Ticks missed while busy count as overruns."""
        now = self.clock()
        if not self._devs:
            self._wake.clear()
            await self._wake.wait()
            return None
        dev = min(self._devs.values(), key=lambda d: d.next_due)
        if dev.next_due > now:
            self._wake.clear()
            await wait_event(self._wake, dev.next_due - now)
            return None
        interval = dev.binding.device.interval
        if dev.first_tick is not None:  # onto the aligned grid after the first poll
            dev.next_due, dev.first_tick = dev.first_tick - interval, None
        dev.next_due, missed = next_tick(dev.next_due, interval, now)
        dev.stats.overruns += missed
        return dev

    async def _serve(self) -> None:
        for d in self._devs.values():
            d.handler.reset()  # a reopened line may face power-cycled devices (M-Bus FCB)
        if self.config.connect_pause:
            await asyncio.sleep(self.config.connect_pause)
        while True:
            if self._writes:
                await self._do_write(self._writes.popleft())
                continue
            dev = await self._next_due()
            if dev is None:
                continue
            if dev.health.may_poll(self.clock()):
                await self._poll(dev)
            else:
                await self._report(dev, None, [])  # offline, probe not due

    async def _serve_disconnected(self, duration: float) -> None:
        """Until the next reopen attempt: ticks report STALE values, writes fail at once."""
        until = self.clock() + duration
        while self.clock() < until:
            self._fail_writes("not connected")
            dev = await self._next_due_before(until)
            if dev is not None:
                t = dev.health.failed(self._link_kind, self._link_detail, probed=False)
                await self._report(dev, t, [])

    async def _next_due_before(self, until: float) -> _Device | None:
        if not self._devs or min(d.next_due for d in self._devs.values()) > until:
            self._wake.clear()
            await wait_event(self._wake, until - self.clock())
            return None
        return await self._next_due()

    async def _poll(self, dev: _Device) -> bool:
        t0 = self.clock()
        dev.stats.polls += 1
        dev.x.probing = dev.health.probing  # a probe costs one timeout, not the retries too
        try:
            raw = await dev.handler.read(dev.x)
        except DeviceTimeout as exc:
            dev.stats.last_cycle_s = self.clock() - t0
            kind = Reason.BAD_FRAMES if isinstance(exc, BadResponse) else Reason.TIMEOUT
            what = "garbled reply" if kind is Reason.BAD_FRAMES else "no answer"
            detail = f"{what} after {exc.attempts} tr{'ies' if exc.attempts > 1 else 'y'}"
            shared = any(d is not dev and not d.health.offline for d in self._devs.values())
            t = dev.health.failed(kind, detail, shared=shared)
            await self._report(dev, t, self._bad(dev, exc.reason))
            return False
        dev.stats.last_success_ms = dev.x.rx_ms
        dev.stats.last_cycle_s = self.clock() - t0
        readings = self._values(dev, raw)
        failing = {r.point: Reason.BAD_VALUE for r in readings if r.quality is Quality.BAD}
        await self._report(dev, dev.health.good(failing), readings)
        return True

    async def _report(self, dev: _Device, t: Transition | None, readings: list[Reading]) -> None:
        """In order: the failed poll that takes a device down (BAD) before its transition, a
        transition up before the readings; nothing from a device that stays offline (its last
        values as STALE if the bus sets ``stale_readings``)."""
        if t is not None:
            if not t.online and readings:
                await self._emit(dev.binding, readings)
                readings = []
            await self._on_state(t)
            if not t.online:
                return
        if dev.health.offline:
            if not self.config.stale_readings:
                return
            ts, why = self.wall_ms(), dev.stats.reason or "offline"
            readings = [
                self._reading(dev, p, dev.last.get(p.name), ts, Quality.STALE, why)
                for p in dev.handler.read_points
            ]
        if readings:
            await self._emit(dev.binding, readings)

    async def _do_write(self, job: _WriteJob) -> None:
        if job.abandoned or job.future.done():
            return
        dev, p = job.dev, job.point
        try:
            await dev.handler.write(dev.x, p, job.raw)
        except BadResponse as exc:
            result = WriteResult(WriteStatus.FAILED, exc.reason)
        except DeviceTimeout as exc:
            result = WriteResult(WriteStatus.TIMEOUT, exc.reason)
        except DeviceNak as exc:
            dev.stats.exceptions += 1
            result = WriteResult(WriteStatus.FAILED, f"device refused (code {exc.code})")
        except LinkError:
            job.future.set_result(WriteResult(WriteStatus.TIMEOUT, "not connected"))
            raise
        else:
            readback: Value = None
            try:
                if p in dev.handler.read_points and await self._poll(dev):
                    readback = dev.last.get(p.name)  # the poll also publishes the new value
            finally:  # also when the link drops during the read-back: the write did succeed
                if not job.future.done():
                    job.future.set_result(WriteResult(WriteStatus.OK, readback=readback))
            return
        if not job.future.done():
            job.future.set_result(result)

    # --- readings ------------------------------------------------------------------------

    def _reading(
        self,
        dev: _Device,
        p: Point,
        value: Value,
        ts: int,
        quality: Quality = Quality.GOOD,
        reason: str | None = None,
    ) -> Reading:
        key = (dev.binding.id, p.name)
        source = self._sources.get(key)
        if source is None:  # one immutable Source per point, shared by all its readings
            source = Source(
                protocol=dev.handler.protocol,
                bus=self.bus_id,
                unit_id=dev.binding.device.unit_id,
                raw_type=p.type.value,
            )
            self._sources[key] = source
        return point_reading(dev.binding, p, value, ts, source, quality, reason)

    def _values(self, dev: _Device, raw: dict[str, RawValue]) -> list[Reading]:
        ts = dev.x.rx_ms
        out: list[Reading] = []
        missing: list[str] = []
        for p in dev.handler.read_points:
            key = p.field or p.name
            if key not in raw:
                missing.append(p.name)
                out.append(self._reading(dev, p, None, ts, Quality.BAD, "missing field"))
                continue
            try:
                v = to_value(p, raw[key])
            except PointValueError as exc:
                out.append(self._reading(dev, p, None, ts, Quality.BAD, exc.reason))
                continue
            dev.last[p.name] = v
            out.append(self._reading(dev, p, v, ts))
        dev.stats.unsupported_points = tuple(missing)
        return out

    def _bad(self, dev: _Device, reason: str) -> list[Reading]:
        ts = self.wall_ms()
        return [
            self._reading(dev, p, None, ts, Quality.BAD, reason) for p in dev.handler.read_points
        ]
