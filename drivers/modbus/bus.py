"""ModbusBus: the one task that owns a physical Modbus bus (implements drivers.base.BusDriver).

Everything on the bus happens inside ``run()``, one request at a time: connect / reconnect,
device polls in due order, writes (served before the next poll request, even in the middle of
a poll), pacing with the inter-frame gap. There are no other tasks and no busy loops: when
nothing is due the owner sleeps on an event until the next tick or a write arrives. On Modbus
TCP the reads of every device due in a tick first go out as one batch on the I/O thread
(``drivers/modbus/mbap_io.py``: still one request on the wire at a time); the polls then take
their replies from it, and whatever the batch did not read is read live.

Behaviour worth knowing (documented choices):
- A poll = every interval group of one device that is due, read with one cached plan, emitted
  as one batch. A tick missed because the bus was busy is skipped and counted in ``overruns``.
- A failed request: its points (and, after a timeout, the rest of the poll) are emitted BAD
  with value None and reason "timeout", "bad frame", "exception N", "not connected".
- A timeout (after ``bus.retries`` retries) with nothing received quarantines the unit (a
  garbled reply does not: the unit is alive, the line is noisy): backoff from
  ``quarantine_min`` (1 s) doubling to ``bus.quarantine_max``, ±20 % jitter. While quarantined
  or while the bus is down, each tick emits the device's points as STALE with the last good
  value (None if never read) and reason "quarantined" / "not connected", at no bus cost. The
  first poll after the quarantine is the probe and runs without retries, so a dead unit costs
  its neighbours at most one timeout per backoff period.
- Exception 1/2/3 on a read: the request is bisected to find the points the device rejects
  (reported in ``DeviceStats.unsupported_points``, never polled again during this run) or the
  gap between points it refuses to bridge (excluded from later plans).
- ``emit`` is awaited by the bus owner: a slow pipeline slows this bus.
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar, cast

from agent.config.endpoint import parse_endpoint
from agent.config.gateway import BusConfig
from agent.config.profile import DataType, Point, Table
from agent.reading import Reading, Value, now_ms
from agent.waits import wait_event
from drivers.base import BusStats, DeviceBinding, Emit, WriteResult, WriteStatus
from drivers.modbus.adapter import (
    DEVICE_BUSY,
    SPAN_REJECTED,
    DeviceException,
    NoResponse,
    NotConnected,
    Prefetched,
    Read,
    inter_frame_gap,
    modbus_client,
    response_timeout,
)
from drivers.modbus.codec import CodecError, decode_point, encode_point
from drivers.modbus.device import DeviceState, Group
from drivers.modbus.schedule import Backoff
from drivers.modbus.writes import WriteJob, read_only_reason

log = logging.getLogger(__name__)
T = TypeVar("T")


def _frame_chars(table: Table, count: int) -> int:
    """RTU characters of a read request (8) plus its response, for timeout sizing."""
    data = (count + 7) // 8 if table.is_bits else 2 * count
    return 8 + 5 + data


def _due(d: DeviceState) -> float:
    return d.due


class _Abort(Exception):
    """Stop the current poll; the remaining points are reported with ``reason``."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


class ModbusBus:
    def __init__(
        self,
        bus: BusConfig,
        devices: Sequence[DeviceBinding],
        emit: Emit,
        *,
        quarantine_min: float = 1.0,
        reconnect_min: float = 0.5,
        reconnect_max: float = 30.0,
        rng: random.Random | None = None,
    ) -> None:
        self.bus_id = bus.id
        self.config = bus
        self.stats = BusStats()
        self.endpoint = parse_endpoint(bus.endpoint)
        self._emit = emit
        self._rng = rng or random.Random()
        self._gap = inter_frame_gap(self.endpoint, bus.inter_frame_gap)
        self._client = modbus_client(
            self.endpoint, response_timeout(self.endpoint, bus.timeout), bus.rs485
        )
        self.devices: dict[str, DeviceState] = {}
        for b in devices:
            if b.device.enabled:
                st = DeviceState(
                    b,
                    bus.id,
                    quarantine_min=quarantine_min,
                    quarantine_max=bus.quarantine_max,
                    rng=self._rng,
                )
                self.devices[b.id] = st
                self.stats.devices[b.id] = st.stats
        self._writes: deque[WriteJob] = deque()
        self._wake = asyncio.Event()
        self._ready = asyncio.Event()
        self._reconnect = Backoff(reconnect_min, max(reconnect_min, reconnect_max), rng=self._rng)
        self._next_connect = 0.0
        self._ever_connected = False
        self._last_frame_end = -math.inf
        # replies of the current tick's batch not yet consumed by ``_read`` (Modbus TCP)
        self._prefetched: dict[Read, Prefetched] = {}
        self._rx_ms = 0  # wall-clock receive time of the last reply, the readings' timestamp

    # --- public API ---------------------------------------------------------------------------
    async def ready(self) -> None:
        await self._ready.wait()

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            now, wall = loop.time(), time.time() if self.config.align_polls else None
            for d in self.devices.values():
                d.start(now, wall)
            while True:
                await self._step(loop)
        finally:
            self._client.close()
            self.stats.connected = False
            while self._writes:
                self._writes.popleft().finish(WriteResult(WriteStatus.REJECTED, "bus stopped"))

    async def write(
        self, device_id: str, point: str, value: Value, timeout: float = 10.0
    ) -> WriteResult:
        dev = self.devices.get(device_id)
        if dev is None:
            return WriteResult(WriteStatus.REJECTED, f"unknown device '{device_id}'")
        try:
            p = dev.binding.profile.point(point)
        except KeyError:
            return WriteResult(WriteStatus.REJECTED, f"unknown point '{point}'")
        if (why := read_only_reason(p)) is not None:
            return WriteResult(WriteStatus.REJECTED, why)
        try:
            # a bit point is merged into the register's current word on the owner's side
            # (read-modify-write); here a zero word only validates the value
            current = [0] if p.type is DataType.BIT else None
            encoded = encode_point(p, value, dev.order(p), current=current)
        except CodecError as exc:
            return WriteResult(WriteStatus.REJECTED, exc.reason)
        if not self.stats.connected:
            return WriteResult(WriteStatus.REJECTED, "bus not connected")
        job = WriteJob(
            dev.binding.id, p, value, encoded, asyncio.get_running_loop().create_future()
        )
        self._writes.append(job)
        self._wake.set()
        self._client.cut_batch()  # a write goes out before the next poll request
        try:
            return await asyncio.wait_for(asyncio.shield(job.future), timeout)
        except TimeoutError:
            job.cancelled = True
            what = "no answer" if job.started else "not sent (bus busy)"
            return WriteResult(WriteStatus.TIMEOUT, f"{what} within {timeout:g} s")
        except asyncio.CancelledError:
            job.cancelled = True
            raise

    # --- owner loop ---------------------------------------------------------------------------
    async def _step(self, loop: asyncio.AbstractEventLoop) -> None:
        now = loop.time()
        if not self._client.connected:
            if self.stats.connected:
                self._lost("link closed")
            if now >= self._next_connect:
                await self._connect(loop)
                return
            while self._writes:
                self._writes.popleft().finish(
                    WriteResult(WriteStatus.REJECTED, "bus not connected")
                )
        if self._writes:
            await self._serve_write(self._writes.popleft())
            return
        wake = self._next_connect if not self._client.connected else math.inf
        if self.devices:
            dev = min(self.devices.values(), key=_due)
            if dev.due <= now:
                if self._client.batch_reads and self._client.connected:
                    await self._poll_due(now, loop)
                else:
                    await self._poll(dev, loop)
                return
            wake = min(wake, dev.due)
        self._wake.clear()
        if wake == math.inf:
            await self._wake.wait()
            return
        await wait_event(self._wake, wake - now)

    async def _connect(self, loop: asyncio.AbstractEventLoop) -> None:
        try:
            await self._client.connect(max(1.0, response_timeout(self.endpoint, None)))
        except NotConnected as exc:
            delay = self._reconnect.next()
            self._next_connect = loop.time() + delay
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
        self.stats.connected = True
        self._ready.set()
        if self.config.connect_pause:
            await asyncio.sleep(self.config.connect_pause)  # devices that need time after open
        self._last_frame_end = loop.time()

    def _lost(self, reason: str) -> None:
        if self.stats.connected:
            log.warning("bus %s: connection lost (%s)", self.bus_id, reason)
        self.stats.connected = False
        self._client.close()
        loop = asyncio.get_running_loop()
        self._next_connect = loop.time() + self._reconnect.next()

    async def _request(
        self,
        dev: DeviceState,
        call: Callable[[float], Awaitable[T]],
        chars: int,
        retries: int,
        first: Prefetched | None = None,
    ) -> T:
        """One transaction with pacing, counters and our own retries (timeout / busy only).
        ``first``: the first attempt already went out in the tick's batch (a read: ``T`` is
        its registers or bits)."""
        loop = asyncio.get_running_loop()
        timeout = response_timeout(self.endpoint, self.config.timeout, chars)
        attempt = 0
        while True:
            done = first if attempt == 0 else None
            if done is None:
                wait = self._last_frame_end + self._gap - loop.time()
                if wait > 0:
                    await asyncio.sleep(wait)
                start = loop.time()
            else:
                start = done.start
            dev.stats.requests += 1
            self.stats.requests += 1
            try:
                result = cast(T, done.values()) if done is not None else await call(timeout)
            except NoResponse as exc:
                dev.stats.timeouts += 1
                dev.stats.bad_frames += exc.bad_frame
                if attempt < retries:
                    attempt += 1
                    continue
                raise
            except DeviceException as exc:
                dev.stats.exceptions += 1
                if exc.code == DEVICE_BUSY and attempt < retries:
                    attempt += 1
                    continue
                raise
            finally:
                if done is not None:
                    end, self._rx_ms = done.end, done.wall_ms
                else:
                    end, self._rx_ms = loop.time(), now_ms()
                self.stats.busy_s += end - start
                self._last_frame_end = max(self._last_frame_end, end)
            self._online(dev)
            return result

    def _online(self, dev: DeviceState) -> None:
        # the link carried a transaction: only now is a reconnect known to have worked (a
        # serial server that accepts and drops at once must keep backing off)
        self._reconnect.reset()
        dev.stats.last_success_ms = now_ms()
        if dev.backoff.failing:
            log.info("bus %s: unit %d (%s) answers again", self.bus_id, dev.unit, dev.binding.id)
        dev.backoff.reset()
        dev.stats.online = True
        dev.stats.quarantined_until = 0.0

    def _quarantine(self, dev: DeviceState) -> None:
        delay = dev.backoff.next()
        if dev.backoff.failures == 1:
            log.warning(
                "bus %s: unit %d (%s) does not answer; quarantined with backoff",
                self.bus_id,
                dev.unit,
                dev.binding.id,
            )
        dev.stats.online = False
        dev.stats.quarantined_until = asyncio.get_running_loop().time() + delay

    async def _read(
        self,
        dev: DeviceState,
        table: Table,
        start: int,
        count: int,
        retries: int,
        *,
        drain: bool = True,
        poll: bool = False,
    ) -> list[int] | list[bool]:
        if drain:
            await self._drain_writes()
        if not self._client.connected:
            raise _Abort("not connected")

        async def call(timeout: float) -> list[int] | list[bool]:
            return await self._client.read(table, start, count, dev.unit, timeout)

        # only a poll read takes its reply from the batch: a write's read-back must see the
        # register after the write
        pre = self._prefetched.pop((table, start, count, dev.unit), None) if poll else None
        try:
            return await self._request(dev, call, _frame_chars(table, count), retries, pre)
        except NoResponse as exc:
            if exc.bad_frame:
                # the unit did answer, the line garbled it: noise is not a dead unit
                raise _Abort("bad frame") from exc
            self._quarantine(dev)
            raise _Abort("timeout") from exc
        except NotConnected as exc:
            self._lost(exc.reason)
            raise _Abort("not connected") from exc

    # --- polls ----------------------------------------------------------------------------------
    async def _poll_due(self, now: float, loop: asyncio.AbstractEventLoop) -> None:
        """Poll every device due now; their reads go out first as one batch (Modbus TCP: see
        drivers/modbus/mbap_io.py), then each device is polled as usual and takes its replies
        from the batch. What the batch did not read (after it stopped at a timeout, or was cut
        for a write) is read live, with the usual retries."""
        devs = sorted((d for d in self.devices.values() if d.due <= now), key=_due)
        due = [(d, d.due_groups(now)) for d in devs]
        reads: list[Read] = []
        if not self._writes:  # a waiting write goes first: this tick's polls go one by one
            for d, groups in due:
                if now >= d.stats.quarantined_until:
                    reads += [(r.table, r.start, r.count, d.unit) for r in d.plan(groups)]
        if reads:
            timeout = response_timeout(self.endpoint, self.config.timeout)
            try:
                got = await self._client.read_batch(reads, timeout)
            except NotConnected as exc:
                self._lost(exc.reason)
                got = []
            self._prefetched = dict(zip(reads, got, strict=False))
        try:
            for d, groups in due:
                await self._poll(d, loop, groups)
        finally:
            # sent but not consumed (a poll that stopped early): still bus traffic
            self.stats.requests += len(self._prefetched)
            self._prefetched = {}

    async def _poll(
        self, dev: DeviceState, loop: asyncio.AbstractEventLoop, groups: list[Group] | None = None
    ) -> None:
        start = loop.time()
        if groups is None:
            groups = dev.due_groups(start)
        readings: list[Reading] = []
        if not self._client.connected:
            readings = dev.stale(dev.live_points(groups), now_ms(), "not connected")
        elif start < dev.stats.quarantined_until:
            readings = dev.stale(dev.live_points(groups), now_ms(), "quarantined")
        else:
            busy = self.stats.busy_s
            readings = await self._read_groups(dev, groups)
            dev.stats.polls += 1
            # with a batch the wire time was spent before this poll started
            dev.stats.last_cycle_s = max(loop.time() - start, self.stats.busy_s - busy)
        dev.advance(groups, loop.time())
        if readings:
            await self._emit(dev.binding, readings)

    async def _read_groups(self, dev: DeviceState, groups: list[Group]) -> list[Reading]:
        plan = dev.plan(groups)
        retries = 0 if dev.backoff.failing else self.config.retries  # a probe costs one timeout
        out: list[Reading] = []
        for i, req in enumerate(plan):
            try:
                values = await self._read(dev, req.table, req.start, req.count, retries, poll=True)
            except _Abort as stop:
                ts = now_ms()
                for later in plan[i:]:
                    out += dev.bad(later.points, ts, stop.reason)
                break
            except DeviceException as exc:
                if exc.code in SPAN_REJECTED:
                    try:
                        found, _ = await self._bisect(dev, req.table, req.points, retries, exc.code)
                        out += found
                    except _Abort as stop:
                        ts = now_ms()
                        done = {r.point for r in out}
                        for later in plan[i:]:
                            out += dev.bad(
                                [p for p in later.points if p.name not in done], ts, stop.reason
                            )
                        break
                else:
                    out += dev.bad(req.points, now_ms(), f"exception {exc.code}")
                continue
            out += dev.decode(req.points, req.start, values, self._rx_ms)
        return out

    async def _bisect(
        self,
        dev: DeviceState,
        table: Table,
        points: Sequence[Point],
        retries: int,
        rejected: int | None = None,
    ) -> tuple[list[Reading], bool]:
        """Read ``points`` as one span, in halves if the device rejects it (``rejected``: it
        already did, with that exception code). Returns the readings and whether the whole
        set was readable, in one piece or in halves."""
        pts = sorted(points, key=lambda p: (p.address, p.registers))
        start = pts[0].address
        end = max(p.address + p.registers for p in pts)
        if rejected is None:
            try:
                values = await self._read(dev, table, start, end - start, retries)
            except DeviceException as exc:
                if exc.code not in SPAN_REJECTED:
                    return dev.bad(pts, now_ms(), f"exception {exc.code}"), False
                rejected = exc.code
            else:
                return dev.decode(pts, start, values, now_ms()), True
        if len(pts) == 1:
            dev.mark_unsupported(pts[0].name, f"exception {rejected}")
            return dev.bad(pts, now_ms(), f"unsupported (exception {rejected})"), False
        mid = len(pts) // 2
        left, left_ok = await self._bisect(dev, table, pts[:mid], retries)
        right, right_ok = await self._bisect(dev, table, pts[mid:], retries)
        if left_ok and right_ok:
            # each half reads fine, together they do not: the registers between them are the
            # ones the device refuses (unimplemented gap registers)
            gap_start = max(p.address + p.registers for p in pts[:mid])
            dev.exclude(table, gap_start, pts[mid].address)
        return left + right, left_ok and right_ok

    # --- writes ---------------------------------------------------------------------------------
    async def _drain_writes(self) -> None:
        while self._writes and self._client.connected:
            await self._serve_write(self._writes.popleft())

    async def _serve_write(self, job: WriteJob) -> None:
        if job.cancelled:
            return
        dev = self.devices[job.device_id]
        p = job.point
        if not self._client.connected:
            job.finish(WriteResult(WriteStatus.REJECTED, "bus not connected"))
            return
        job.started = True
        retries = 0 if dev.backoff.failing else self.config.retries
        unit, enc = dev.unit, job.encoded
        if p.type is DataType.BIT:
            try:
                word = await self._read(dev, p.table, p.address, 1, retries, drain=False)
                enc = encode_point(p, job.value, dev.order(p), current=[int(w) for w in word])
            except _Abort as stop:
                status = (
                    WriteStatus.REJECTED
                    if stop.reason == "not connected"
                    else (WriteStatus.TIMEOUT)
                )
                job.finish(
                    WriteResult(status, f"reading the register to merge the bit: {stop.reason}")
                )
                return
            except (DeviceException, CodecError) as exc:
                job.finish(
                    WriteResult(WriteStatus.FAILED, f"reading the register to merge the bit: {exc}")
                )
                return

        async def send(timeout: float) -> None:
            if p.table is Table.COIL:
                flag = enc if isinstance(enc, bool) else bool(enc[0])
                await self._client.write_coil(unit, p.address, flag, timeout)
            else:
                regs = [int(enc)] if isinstance(enc, bool) else enc
                await self._client.write_registers(unit, p.address, regs, timeout)

        chars = 9 + (1 if isinstance(enc, bool) else 2 * len(enc)) + 8
        try:
            await self._request(dev, send, chars, retries)
        except DeviceException as exc:
            job.finish(WriteResult(WriteStatus.FAILED, f"exception {exc.code}"))
            return
        except NoResponse:
            job.finish(WriteResult(WriteStatus.TIMEOUT, "timeout"))
            return
        except NotConnected as exc:
            self._lost(exc.reason)
            job.finish(WriteResult(WriteStatus.TIMEOUT, "connection lost"))
            return
        try:
            values = await self._read(dev, p.table, p.address, p.registers, retries, drain=False)
            readback = decode_point(p, values, dev.order(p))
        except (_Abort, DeviceException, CodecError) as exc:
            job.finish(WriteResult(WriteStatus.OK, f"readback failed: {exc}"))
            return
        job.finish(WriteResult(WriteStatus.OK, readback=readback))
