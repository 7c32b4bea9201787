"""The serial protocol session under the bus owner (``drivers/owner.py``): profile-defined
request/response protocols, Pelco-D and M-Bus on one line (or one serial server connection).

The session opens the line (``drivers/link.py``), builds each device's protocol handler
(``handlers.py``: what to send and which reply to accept) and runs a poll as the handler's
exchanges (``exchange.py``: pacing, retries, accounting). Everything else - the schedule
with per-point intervals, writes ahead of polls, probes, device state, reconnects, what is
reported - is the bus owner's, as on a Modbus bus.

- A poll reads the fields of the groups due; silence after every attempt is a timeout,
  replies that never check out are bad frames (both fail the poll: offline at once, as on
  Modbus); a field that does not decode is BAD with the decoder's reason (degraded).
- A reopened line may face power-cycled devices: each handler resets its session state on
  open (M-Bus starts again with SND_NKE).
- Writes: the handler's command, then the device is polled (the read-back, published like
  any poll) when the point is one it reads.
- Each GOOD reading carries the wall-clock time its reply came off the line.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

from drivers.base import BusStats, DeviceBinding, WriteResult, WriteStatus
from drivers.core.config import BusConfig
from drivers.core.endpoint import parse_endpoint
from drivers.core.profile import Point
from drivers.core.reading import Quality, Reading, Value, now_ms
from drivers.device_state import Reason
from drivers.link import Link, LinkError
from drivers.owner import LinkDown, Owner, WriteRefused
from drivers.polling import Device, HealthOptions, PollResult
from drivers.schedule import Group
from drivers.serial.exchange import LineExchange
from drivers.serial.generic import DeviceNak
from drivers.serial.handlers import BadResponse, DeviceTimeout, Handler, make_handler
from drivers.serial.points import PointValueError, RawValue, to_raw, to_value

DEFAULT_TIMEOUT = {"serial": 0.5, "pelco-d": 0.3, "mbus": 0.5}


class SerialDevice(Device):
    def __init__(
        self,
        binding: DeviceBinding,
        bus_id: str,
        opts: HealthOptions,
        handler: Handler,
        offline_after_s: float,
    ) -> None:
        super().__init__(binding, bus_id, handler.read_points, opts, offline_after_s)
        self.handler = handler
        self.protocol = handler.protocol
        self.x: LineExchange


class SerialSession:
    readback_by_poll = True  # a protocol reads by request, not by register: poll the device

    def __init__(
        self,
        bus: BusConfig,
        *,
        clock: Callable[[], float] = time.monotonic,
        wall_ms: Callable[[], int] = now_ms,
    ) -> None:
        self.config = bus
        self.endpoint = parse_endpoint(bus.endpoint)
        self.link = Link(self.endpoint, bus.rs485)
        self.clock = clock
        self.wall_ms = wall_ms
        gap = bus.inter_frame_gap
        self.gap = gap if gap is not None else max(3.5 * self.endpoint.char_time, 0.00175)
        self.last_tx_end = 0.0
        self._devices: list[SerialDevice] = []
        self.owner: Owner
        self.stats: BusStats

    # --- the link -------------------------------------------------------------------------
    @property
    def connected(self) -> bool:
        return self.link.is_open

    @property
    def down_reason(self) -> Reason:
        return self.link.down_reason

    def bind(self, owner: Owner, stats: BusStats) -> None:
        self.owner, self.stats = owner, stats

    def device(self, binding: DeviceBinding, opts: HealthOptions) -> SerialDevice:
        h = make_handler(binding.profile, binding.device.unit_id, binding.device.address)
        timeout = h.timeout or self.config.timeout or DEFAULT_TIMEOUT[h.protocol]
        retries = h.retries if h.retries is not None else self.config.retries
        per_try = timeout + h.max_response * self.endpoint.char_time
        # the bound: max(2 x interval, (retries + 1) x timeout + 1 s)
        bound = max(2 * binding.device.interval, (retries + 1) * per_try + 1.0)
        dev = SerialDevice(binding, self.config.id, opts, h, bound)
        dev.x = LineExchange(self, binding.id, dev.stats, per_try, retries)
        self._devices.append(dev)
        return dev

    async def open(self) -> None:
        try:
            await self.link.open()
        except LinkError as exc:
            raise LinkDown(exc.reason, exc.kind) from exc
        for d in self._devices:
            d.handler.reset()  # a reopened line may face power-cycled devices (M-Bus FCB)

    def close(self) -> None:
        self.link.close_now()

    def cut(self) -> None:
        pass  # a poll's requests each ask the owner to serve waiting writes first

    def _link_lost(self, exc: LinkError) -> LinkDown:
        lost = LinkDown(exc.reason, exc.kind)
        self.owner.link_lost(lost)
        return lost

    # --- polls ----------------------------------------------------------------------------
    async def begin(self, polls: Sequence[tuple[SerialDevice, list[Group]]]) -> None:
        pass  # a protocol's exchanges depend on each other (M-Bus FCB, selection): polled live

    def end(self) -> None:
        pass

    async def poll(self, dev: SerialDevice, groups: list[Group]) -> PollResult:
        points = dev.live_points(groups)
        dev.x.probing = dev.health.probing  # a probe costs one timeout, not the retries too
        res = PollResult()
        try:
            raw = await dev.handler.read(dev.x, points)
        except DeviceTimeout as exc:
            kind = Reason.BAD_FRAMES if isinstance(exc, BadResponse) else Reason.TIMEOUT
            what = "garbled reply" if kind is Reason.BAD_FRAMES else "no answer"
            res.fail(kind, f"{what} after {exc.attempts} tr{'ies' if exc.attempts > 1 else 'y'}")
            res.readings = dev.bad(points, self.wall_ms(), exc.reason)
            return res
        except LinkError as exc:
            lost = self._link_lost(exc)
            res.fail(lost.kind, lost.reason)
            res.readings = dev.bad(points, self.wall_ms(), "not connected")
            return res
        dev.stats.last_success_ms = dev.x.rx_ms
        res.answered = 1
        res.add(self._values(dev, raw, points))
        return res

    def _values(
        self, dev: SerialDevice, raw: dict[str, RawValue], points: Sequence[Point]
    ) -> list[Reading]:
        ts = dev.x.rx_ms
        out: list[Reading] = []
        missing: list[str] = []
        for p in points:
            key = p.field or p.name
            if key not in raw:
                missing.append(p.name)
                out.append(dev.reading(p, None, ts, Quality.BAD, "missing field"))
                continue
            try:
                v = to_value(p, raw[key])
            except PointValueError as exc:
                out.append(dev.reading(p, None, ts, Quality.BAD, exc.reason))
                continue
            dev.last_good[p.name] = v
            out.append(dev.reading(p, v, ts))
        dev.stats.unsupported_points = tuple(missing)
        return out

    # --- writes ---------------------------------------------------------------------------
    def prepare_write(self, dev: SerialDevice, point: Point, value: Value) -> object:
        try:
            raw = to_raw(point, value)
            dev.handler.validate_write(point, raw)
        except PointValueError as exc:
            raise WriteRefused(exc.reason) from exc
        return raw

    async def write(self, dev: SerialDevice, point: Point, payload: object) -> WriteResult:
        assert isinstance(payload, int | float | str)
        try:
            await dev.handler.write(dev.x, point, payload)
        except BadResponse as exc:
            return WriteResult(WriteStatus.FAILED, exc.reason)
        except DeviceTimeout as exc:
            return WriteResult(WriteStatus.TIMEOUT, exc.reason)
        except DeviceNak as exc:
            dev.stats.exceptions += 1
            return WriteResult(WriteStatus.FAILED, f"device refused (code {exc.code})")
        except LinkError as exc:
            raise LinkDown(exc.reason, exc.kind) from exc
        return WriteResult(WriteStatus.OK)
