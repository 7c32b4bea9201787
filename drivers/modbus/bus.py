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
- What a poll came to goes to the device's ``DeviceHealth`` (drivers/device_state.py), which
  decides online / degraded / offline; each transition goes to ``on_state``, in order with the
  readings: a device coming back gets its transition before the readings of that poll, the
  poll that takes a device down emits its (BAD) readings before the transition.
- A failed request: its points (and, after a timeout, the rest of the poll) are emitted BAD
  with value None and reason "timeout", "bad frame", "exception N", "not connected". Once
  offline, a device emits nothing on its ticks (failed probes included), unless the bus sets
  ``stale_readings``: then its points go out STALE with the last good value and the offline
  reason as the reason, at no bus cost.
- An offline device is polled only when its probe is due (see device_state.py), without
  retries, so a dead unit costs its neighbours at most one timeout per probe period.
- Exception 1/2/3 on a read: after the poll's other reads, the request is explored
  (drivers/modbus/bisect.py) for exactly the registers and points the device rejects; they
  are left out of the plans and re-probed with backoff up to about an hour
  (drivers/modbus/exclusions.py). Nothing is learned from a poll the device answered with
  exceptions only: that is a device fault (offline, reason "exception").
- The link: a connect that fails, or a link lost without a transaction on it, retries with
  jittered backoff from ``reconnect_min`` to ``reconnect_max`` (10 s); a link that carried
  transactions and then dropped is reopened at once.
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
from drivers.core.profile import DataType, Table
from drivers.core.reading import Reading, Value, now_ms
from drivers.core.waits import wait_event
from drivers.device_state import Reason, Transition
from drivers.modbus.adapter import (
    DEVICE_BUSY,
    SPAN_REJECTED,
    DeviceException,
    NoResponse,
    NotConnected,
    Prefetched,
    Read,
    exception_reason,
    inter_frame_gap,
    modbus_client,
    response_timeout,
)
from drivers.modbus.codec import CodecError, decode_point, encode_point
from drivers.modbus.device import DeviceState, Group
from drivers.modbus.planner import ReadRequest
from drivers.modbus.poll import Abort, ExploreRead, PollResult, explore_rejected
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


class ModbusBus:
    def __init__(
        self,
        bus: BusConfig,
        devices: Sequence[DeviceBinding],
        emit: Emit,
        *,
        quarantine_min: float = 1.0,
        reconnect_min: float = 0.5,
        reconnect_max: float = 10.0,
        reprobe_min: float = 60.0,
        reprobe_max: float = 3600.0,
        rng: random.Random | None = None,
        on_state: StateListener = no_listener,
    ) -> None:
        self.bus_id = bus.id
        self.config = bus
        self.stats = BusStats()
        self.endpoint = parse_endpoint(bus.endpoint)
        self._emit = emit
        self._on_state = on_state
        self._rng = rng or random.Random()
        self._gap = inter_frame_gap(self.endpoint, bus.inter_frame_gap)
        timeout = response_timeout(self.endpoint, bus.timeout)
        self._client = modbus_client(self.endpoint, timeout, bus.rs485)
        self.devices: dict[str, DeviceState] = {}
        for b in devices:
            if b.device.enabled:
                # the bound: offline within max(2 x interval, (retries+1) x timeout + 1 s)
                bound = max(2 * b.device.interval, (bus.retries + 1) * timeout + 1.0)
                st = DeviceState(
                    b,
                    bus.id,
                    quarantine_min=quarantine_min,
                    quarantine_max=bus.quarantine_max,
                    rng=self._rng,
                    offline_after_s=bound,
                    reprobe_min=reprobe_min,
                    reprobe_max=reprobe_max,
                )
                self.devices[b.id] = st
                self.stats.devices[b.id] = st.stats
        self._writes: deque[WriteJob] = deque()
        self._wake = asyncio.Event()
        self._ready = asyncio.Event()
        self._reconnect = Backoff(reconnect_min, max(reconnect_min, reconnect_max), rng=self._rng)
        self._next_connect = 0.0
        self._ever_connected = False
        self._link_carried = False  # a transaction went through on the current link
        self._link_kind = Reason.RESET  # why the link is down, for the devices' state
        self._link_detail: str | None = None
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
                self._lost()
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
        self._last_frame_end = loop.time()

    def _lost(self, exc: NotConnected | None = None) -> None:
        reason = "link closed" if exc is None else exc.reason
        if self.stats.connected:
            log.warning("bus %s: connection lost (%s)", self.bus_id, reason)
        self.stats.connected = False
        self.stats.link_error = reason
        if exc is not None:
            self._link_kind = exc.kind
        else:
            self._link_kind = Reason.PORT_GONE if self.endpoint.is_serial else Reason.RESET
        self._link_detail = reason
        self._client.close()
        # a link that carried transactions is reopened at once (a peer restart, a supervision
        # close); one that dropped before any answer backs off like a failed connect
        delay = 0.0 if self._link_carried else self._reconnect.next()
        self._link_carried = False
        self.stats.retry_in = delay
        self._next_connect = asyncio.get_running_loop().time() + delay

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
            except NotConnected as exc:  # supervision closed the link over this request
                dev.stats.timeouts += exc.kind is Reason.TIMEOUT
                dev.stats.bad_frames += exc.kind is Reason.BAD_FRAMES
                raise
            except DeviceException as exc:
                dev.stats.exceptions += 1
                self._answered(dev)  # an exception reply is an answer: the link works
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
            self._answered(dev)
            dev.stats.last_success_ms = self._rx_ms
            return result

    def _answered(self, dev: DeviceState) -> None:
        # the link carried a transaction: only now is a reconnect known to have worked (a
        # serial server that accepts and drops at once must keep backing off)
        self._reconnect.reset()
        self._link_carried = True

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
        # only a poll read takes its reply from the batch: a write's read-back must see the
        # register after the write. A batch outcome goes first even if the link is closed by
        # now: it says why (a corrupt frame, a reset).
        pre = self._prefetched.pop((table, start, count, dev.unit), None) if poll else None
        if pre is None and not self._client.connected:
            raise Abort("not connected", self._link_kind, self._link_detail)

        async def call(timeout: float) -> list[int] | list[bool]:
            return await self._client.read(table, start, count, dev.unit, timeout)

        try:
            return await self._request(dev, call, _frame_chars(table, count), retries, pre)
        except NoResponse as exc:
            tries = f"after {retries + 1} tr{'ies' if retries else 'y'}"
            if exc.bad_frame:  # the unit did answer, the line garbled it
                raise Abort("bad frame", Reason.BAD_FRAMES, f"garbled reply {tries}") from exc
            raise Abort("timeout", Reason.TIMEOUT, f"no answer {tries}") from exc
        except NotConnected as exc:
            self._lost(exc)
            raise Abort("not connected", exc.kind, exc.reason) from exc

    # --- polls ----------------------------------------------------------------------------------
    async def _poll_due(self, now: float, loop: asyncio.AbstractEventLoop) -> None:
        """Poll every device due now; their reads go out first as one batch (Modbus TCP: see
        drivers/modbus/mbap_io.py), then each device is polled as usual and takes its replies
        from the batch. What the batch did not read (after it stopped at a timeout, or was cut
        for a write) is read live, with the usual retries. Probes of offline devices go last:
        a batch stops at its first timeout."""
        devs = sorted(
            (d for d in self.devices.values() if d.due <= now),
            key=lambda d: (d.health.probing, d.due),
        )
        due = [(d, d.due_groups(now)) for d in devs]
        reads: list[Read] = []
        if not self._writes:  # a waiting write goes first: this tick's polls go one by one
            for d, groups in due:
                if d.health.may_poll(now):
                    reads += [(r.table, r.start, r.count, d.unit) for r in d.plan(groups)]
        if reads:
            timeout = response_timeout(self.endpoint, self.config.timeout)
            try:
                got = await self._client.read_batch(reads, timeout)
            except NotConnected as exc:
                self._lost(exc)
                got = []
            self._prefetched = dict(zip(reads, got, strict=False))
        try:
            for d, groups in due:
                await self._poll(d, loop, groups)
        finally:
            # sent but not consumed (a poll that stopped early): still bus traffic
            self.stats.requests += len(self._prefetched)
            self._prefetched = {}

    def _shared(self, dev: DeviceState) -> bool:
        """Other devices on this bus still answer: a dead one must not slow them down."""
        return any(d is not dev and not d.health.offline for d in self.devices.values())

    async def _poll(
        self, dev: DeviceState, loop: asyncio.AbstractEventLoop, groups: list[Group] | None = None
    ) -> None:
        start = loop.time()
        if groups is None:
            groups = dev.due_groups(start)
        h = dev.health
        transition: Transition | None = None
        readings: list[Reading] = []
        # the owner's view of the link: the I/O thread may have closed it during this tick's
        # batch, and the batch's outcome says why (read below)
        if not self.stats.connected:
            transition = h.failed(self._link_kind, self._link_detail, probed=False)
        elif h.may_poll(start):
            busy = self.stats.busy_s
            poll = await self._read_groups(dev, groups)
            dev.stats.polls += 1
            # with a batch the wire time was spent before this poll started
            dev.stats.last_cycle_s = max(loop.time() - start, self.stats.busy_s - busy)
            readings = poll.readings
            if poll.answered or poll.failure is None:
                transition = h.good(poll.failing, dev.excluded_points)
            else:
                transition = h.failed(*poll.failure, shared=self._shared(dev))
        dev.advance(groups, loop.time())
        await self._report(dev, transition, readings, groups)

    async def _report(
        self,
        dev: DeviceState,
        transition: Transition | None,
        readings: list[Reading],
        groups: list[Group],
    ) -> None:
        """Hand on what a tick came to, in order: the failed poll that takes a device down
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
            if self.config.stale_readings:
                why = dev.stats.reason or "offline"
                readings = dev.stale(dev.live_points(groups), now_ms(), why)
            else:
                return
        if readings:
            await self._emit(dev.binding, readings)

    def _explorer_read(self, dev: DeviceState, retries: int) -> ExploreRead:
        async def read(table: Table, start: int, count: int) -> tuple[list[int] | list[bool], int]:
            values = await self._read(dev, table, start, count, retries)
            return values, self._rx_ms

        return read

    async def _read_groups(self, dev: DeviceState, groups: list[Group]) -> PollResult:
        plan = dev.plan(groups)
        retries = 0 if dev.health.probing else self.config.retries  # a probe costs one timeout
        poll = PollResult()
        out = poll.readings
        rejected: list[tuple[ReadRequest, int]] = []
        for i, req in enumerate(plan):
            try:
                values = await self._read(dev, req.table, req.start, req.count, retries, poll=True)
            except Abort as stop:
                poll.fail(stop.kind, stop.detail)
                ts = now_ms()
                for later in (*(r for r, _ in rejected), *plan[i:]):
                    out += dev.bad(later.points, ts, stop.reason)
                return poll
            except DeviceException as exc:
                if exc.code in SPAN_REJECTED:
                    rejected.append((req, exc.code))  # explored once the rest is read
                    continue
                poll.fail(*exception_reason(exc.code))
                out += dev.bad(req.points, now_ms(), f"exception {exc.code}")
                for p in req.points:
                    poll.failing[p.name] = Reason.EXCEPTION
                continue
            poll.answered += 1
            poll.add(dev.decode(req.points, req.start, values, self._rx_ms))
        if rejected:
            await explore_rejected(dev, poll, rejected, self._explorer_read(dev, retries))
        else:
            dev.rejected_all = False
        return poll

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
        retries = 0 if dev.health.probing else self.config.retries
        unit, enc = dev.unit, job.encoded
        if p.type is DataType.BIT:
            try:
                word = await self._read(dev, p.table, p.address, 1, retries, drain=False)
                enc = encode_point(p, job.value, dev.order(p), current=[int(w) for w in word])
            except Abort as stop:
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
            self._lost(exc)
            job.finish(WriteResult(WriteStatus.TIMEOUT, "connection lost"))
            return
        try:
            values = await self._read(dev, p.table, p.address, p.registers, retries, drain=False)
            readback = decode_point(p, values, dev.order(p))
        except (Abort, DeviceException, CodecError) as exc:
            job.finish(WriteResult(WriteStatus.OK, f"readback failed: {exc}"))
            return
        job.finish(WriteResult(WriteStatus.OK, readback=readback))
