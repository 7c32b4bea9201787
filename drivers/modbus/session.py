"""The Modbus session under the bus owner (``drivers/owner.py``): what goes on the wire for a
poll or a write of a Modbus device, and what the replies mean.

One poll path for every endpoint kind. When a tick starts (``begin``), the reads of every
device due go to the client as one ``transact`` ("read these groups": on Modbus TCP one batch
on the I/O thread, on a serial line one frame after the other with the inter-frame gap). Each
device's poll then takes its replies from that batch, in plan order; whatever the batch did
not read (it stops at the first timeout or lost link, and is cut when a write arrives) is read
live, one request at a time, with the retries. So a write still goes ahead of polls, and a
dead unit still costs one timeout per probe.

- A failed request: its points (and, after a timeout, the rest of the poll) are reported BAD
  with value None and reason "timeout", "bad frame", "exception N", "not connected".
- Retries (``bus.retries``) on a timeout or a garbled reply, and on exception 6 (busy); none
  for a probe of an offline device, so a dead unit costs its neighbours one timeout.
- Exception 1/2/3 on a read: after the poll's other reads, the request is explored
  (drivers/modbus/poll.py, bisect.py) for exactly the registers and points the device
  rejects; they are left out of the plans and re-probed with backoff up to about an hour
  (drivers/modbus/exclusions.py). Nothing is learned from a poll the device answered with
  exceptions only: that is a device fault (offline, reason "exception").
- Writes: FC05 for a coil, FC06 for one register, FC16 for more; a bit point is merged into
  the register's current value (read-modify-write); then the point is read back.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

from drivers.base import BusStats, DeviceBinding, WriteResult, WriteStatus
from drivers.core.config import BusConfig
from drivers.core.endpoint import parse_endpoint
from drivers.core.profile import DataType, Point, Table
from drivers.core.reading import Value, now_ms
from drivers.device_state import Reason
from drivers.modbus import pdu
from drivers.modbus.adapter import modbus_client, response_timeout
from drivers.modbus.codec import CodecError, decode_point, encode_point
from drivers.modbus.device import DeviceState
from drivers.modbus.planner import ReadRequest
from drivers.modbus.poll import Abort, ExploreRead, exception_reason, explore_rejected
from drivers.modbus.results import DeviceException, NoResponse, NotConnected, Outcome
from drivers.owner import LinkDown, Owner, WriteRefused
from drivers.polling import HealthOptions, PollResult
from drivers.schedule import Group

Key = tuple[int, bytes]  # unit, request PDU
_CLOSED_OVER = {Reason.TIMEOUT: "timeout", Reason.BAD_FRAMES: "bad frame"}


class ModbusSession:
    readback_by_poll = False  # the written point itself is read back

    def __init__(
        self, bus: BusConfig, *, reprobe_min: float = 60.0, reprobe_max: float = 3600.0
    ) -> None:
        self.config = bus
        self.endpoint = parse_endpoint(bus.endpoint)
        self.client = modbus_client(self.endpoint, bus.timeout, bus.rs485, gap=bus.inter_frame_gap)
        self.timeout = response_timeout(self.endpoint, bus.timeout)
        self._reprobe = (reprobe_min, reprobe_max)
        self._prefetched: dict[Key, Outcome] = {}  # the tick's batch, not consumed yet
        self._lost: NotConnected | None = None  # why the link went down, while it is
        self.rx_ms = 0  # wall-clock receive time of the last reply, the readings' timestamp
        self.owner: Owner
        self.stats: BusStats

    # --- the link -------------------------------------------------------------------------
    @property
    def connected(self) -> bool:
        return self.client.connected

    @property
    def down_reason(self) -> Reason:
        return Reason.PORT_GONE if self.endpoint.is_serial else Reason.RESET

    def bind(self, owner: Owner, stats: BusStats) -> None:
        self.owner, self.stats = owner, stats

    def device(self, binding: DeviceBinding, opts: HealthOptions) -> DeviceState:
        # the bound: offline within max(2 x interval, (retries + 1) x timeout + 1 s)
        bound = max(2 * binding.device.interval, (self.config.retries + 1) * self.timeout + 1.0)
        lo, hi = self._reprobe
        return DeviceState(
            binding, self.config.id, opts, offline_after_s=bound, reprobe_min=lo, reprobe_max=hi
        )

    async def open(self) -> None:
        try:
            await self.client.connect(max(1.0, response_timeout(self.endpoint, None)))
        except NotConnected as exc:
            raise LinkDown(exc.reason, exc.kind) from exc
        self._lost = None

    def close(self) -> None:
        self.client.close()

    def cut(self) -> None:
        self.client.cut()

    def _link_lost(self, exc: NotConnected) -> None:
        self._lost = exc
        if self.stats.connected:
            self.owner.link_lost(LinkDown(exc.reason, exc.kind))

    # --- polls ----------------------------------------------------------------------------
    async def begin(self, polls: Sequence[tuple[DeviceState, list[Group]]]) -> None:
        reqs = [(d.unit, b) for d, groups in polls for b in d.request_pdus(groups)]
        if not reqs:
            return
        try:
            got = await self.client.transact(reqs)
        except NotConnected as exc:
            self._link_lost(exc)
            got = []
        self._prefetched = dict(zip(reqs, got, strict=False))

    def end(self) -> None:
        # sent but not consumed (a poll that stopped early): still bus traffic
        self.stats.requests += len(self._prefetched)
        self._prefetched = {}

    async def poll(self, dev: DeviceState, groups: list[Group]) -> PollResult:
        plan = dev.plan(groups)
        pdus = dev.request_pdus(groups)
        retries = 0 if dev.health.probing else self.config.retries  # a probe costs one timeout
        poll = PollResult()
        out = poll.readings
        rejected: list[tuple[ReadRequest, int]] = []
        for i, req in enumerate(plan):
            try:
                values = await self._read(
                    dev, req.table, req.start, req.count, retries, poll=pdus[i]
                )
            except Abort as stop:
                poll.fail(stop.kind, stop.detail)
                ts = now_ms()
                for later in (*(r for r, _ in rejected), *plan[i:]):
                    out += dev.bad(later.points, ts, stop.reason)
                return poll
            except DeviceException as exc:
                if exc.code in pdu.SPAN_REJECTED:
                    rejected.append((req, exc.code))  # explored once the rest is read
                    continue
                poll.fail(*exception_reason(exc.code))
                out += dev.bad(req.points, now_ms(), f"exception {exc.code}")
                for p in req.points:
                    poll.failing[p.name] = Reason.EXCEPTION
                continue
            poll.answered += 1
            dev.decode(poll, req.points, req.start, values, self.rx_ms)
        if rejected:
            await explore_rejected(dev, poll, rejected, self._explorer_read(dev, retries))
        else:
            dev.rejected_all = False
        return poll

    def _explorer_read(self, dev: DeviceState, retries: int) -> ExploreRead:
        async def read(table: Table, start: int, count: int) -> tuple[list[int] | list[bool], int]:
            values = await self._read(dev, table, start, count, retries)
            return values, self.rx_ms

        return read

    async def _read(
        self,
        dev: DeviceState,
        table: Table,
        start: int,
        count: int,
        retries: int,
        *,
        poll: bytes | None = None,
    ) -> list[int] | list[bool]:
        """``poll``: a poll's read, its request PDU as planned (its reply may be in the batch)."""
        await self.owner.serve_writes()
        request = poll if poll is not None else pdu.read(table, start, count)
        # only a poll read takes its reply from the batch: a write's read-back must see the
        # register after the write. A batch outcome goes first even if the link is closed by
        # now: it says why (a corrupt frame, a reset).
        first = self._prefetched.pop((dev.unit, request), None) if poll is not None else None
        if first is None and not self.client.connected:
            lost = self._lost
            kind = self.down_reason if lost is None else lost.kind
            raise Abort("not connected", kind, None if lost is None else lost.reason)
        try:
            return await self._transact(dev, request, retries, first)
        except NoResponse as exc:
            tries = f"after {retries + 1} tr{'ies' if retries else 'y'}"
            if exc.bad_frame:  # the unit did answer, the line garbled it
                raise Abort("bad frame", Reason.BAD_FRAMES, f"garbled reply {tries}") from exc
            raise Abort("timeout", Reason.TIMEOUT, f"no answer {tries}") from exc
        except NotConnected as exc:
            # a stream closed by supervision over this request: it timed out, or its reply
            # broke the stream; the link being gone is the consequence
            why = _CLOSED_OVER.get(exc.kind, "not connected")
            raise Abort(why, exc.kind, exc.reason) from exc

    async def _transact(
        self, dev: DeviceState, request: bytes, retries: int, first: Outcome | None = None
    ) -> list[int] | list[bool]:
        """One request with counters and our own retries (timeout, garbled, busy): the
        registers or bits read, ``[]`` for a write. ``first``: its first attempt, already
        made in the tick's batch."""
        unit = dev.unit
        attempt = 0
        while True:
            outcome = first if attempt == 0 else None
            if outcome is None:
                try:
                    (outcome,) = await self.client.transact([(unit, request)])
                except NotConnected as exc:
                    self._link_lost(exc)
                    raise
            dev.stats.requests += 1
            self.stats.requests += 1
            self.stats.busy_s += outcome.end - outcome.start
            self.rx_ms = outcome.wall_ms
            try:
                values = pdu.parse(unit, request, outcome.reply())
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
                self._link_lost(exc)
                raise
            except DeviceException as exc:
                dev.stats.exceptions += 1
                self.owner.answered()  # an exception reply is an answer: the link works
                if exc.code == pdu.DEVICE_BUSY and attempt < retries:
                    attempt += 1
                    continue
                raise
            self.owner.answered()
            dev.stats.last_success_ms = self.rx_ms
            return values

    # --- writes ---------------------------------------------------------------------------
    def prepare_write(self, dev: DeviceState, point: Point, value: Value) -> object:
        if (why := read_only_reason(point)) is not None:
            raise WriteRefused(why)
        try:
            # a bit point is merged into the register's current word when it is written
            # (read-modify-write); here a zero word only validates the value
            current = [0] if point.type is DataType.BIT else None
            return _Write(value, encode_point(point, value, dev.order(point), current=current))
        except CodecError as exc:
            raise WriteRefused(exc.reason) from exc

    async def write(self, dev: DeviceState, point: Point, payload: object) -> WriteResult:
        assert isinstance(payload, _Write)
        enc = payload.encoded
        retries = 0 if dev.health.probing else self.config.retries
        if point.type is DataType.BIT:
            what = "reading the register to merge the bit"
            try:
                word = await self._read(dev, point.table, point.address, 1, retries)
                current = [int(w) for w in word]
                enc = encode_point(point, payload.value, dev.order(point), current=current)
            except Abort as stop:
                lost = stop.reason == "not connected"
                status = WriteStatus.REJECTED if lost else WriteStatus.TIMEOUT
                return WriteResult(status, f"{what}: {stop.reason}")
            except (DeviceException, CodecError) as exc:
                return WriteResult(WriteStatus.FAILED, f"{what}: {exc}")
        if point.table is Table.COIL:
            request = pdu.write_coil(point.address, enc if isinstance(enc, bool) else bool(enc[0]))
        else:
            regs = [int(enc)] if isinstance(enc, bool) else enc
            if len(regs) == 1:
                request = pdu.write_register(point.address, regs[0])
            else:
                request = pdu.write_registers(point.address, regs)
        try:
            await self._transact(dev, request, retries)
        except DeviceException as exc:
            return WriteResult(WriteStatus.FAILED, f"exception {exc.code}")
        except NoResponse:
            return WriteResult(WriteStatus.TIMEOUT, "timeout")
        except NotConnected as exc:
            raise LinkDown(exc.reason, exc.kind) from exc
        try:
            values = await self._read(dev, point.table, point.address, point.registers, retries)
            readback = decode_point(point, values, dev.order(point))
        except (Abort, DeviceException, CodecError) as exc:
            return WriteResult(WriteStatus.OK, f"readback failed: {exc}")
        return WriteResult(WriteStatus.OK, readback=readback)


class _Write(NamedTuple):
    value: Value  # as asked (a bit point is encoded again against the current word)
    encoded: list[int] | bool


def read_only_reason(point: Point) -> str | None:
    """Why ``point`` cannot be written, or None. Only coils (FC05) and holding registers
    (FC06/FC16) are writable in Modbus; input registers and discrete inputs never are."""
    if not point.writable:
        return f"point '{point.name}' is not writable"
    if point.table not in (Table.COIL, Table.HOLDING):
        return f"point '{point.name}' is in the read-only {point.table.value} table"
    return None
