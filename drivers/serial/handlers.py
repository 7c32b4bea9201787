"""Per-device protocol handlers: what to send for a poll or a write and how to accept replies.

A handler never touches the port: it asks the bus's ``Exchange`` to send a request and wait
for the first frame its deframer yields and its ``accept`` keeps. Retries, pacing, timeouts and
statistics are the bus's job, so all three protocols follow the same bus rules.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol, TypeVar

from drivers.core.profile import Point, Profile
from drivers.serial import mbus, pelco_d
from drivers.serial.framing import Deframer
from drivers.serial.generic import GenericCodec
from drivers.serial.mbus_records import Telegram, decode_rsp_ud
from drivers.serial.points import PointValueError, RawValue
from drivers.serial.spec import Read

T = TypeVar("T")
Fields = dict[str, RawValue]


class DeviceTimeout(Exception):
    """No acceptable reply after every attempt."""

    def __init__(self, device: str, attempts: int, reason: str = "timeout") -> None:
        self.device = device
        self.attempts = attempts
        self.reason = reason
        super().__init__(f"device '{device}': {reason} after {attempts} attempt(s)")


class BadResponse(DeviceTimeout):
    """Replies came but none was valid (bad checksum, wrong layout, undecodable data)."""

    def __init__(self, device: str, attempts: int) -> None:
        super().__init__(device, attempts, "bad frame")


class Exchange(Protocol):
    async def transact(
        self, request: bytes, deframer: Deframer, accept: Callable[[bytes], T | None]
    ) -> T:
        """Send (with retries), return the first accepted reply; raises DeviceTimeout or
        BadResponse. ``accept`` returns None for a frame that is not the reply (counted bad)
        and may raise ValueError for a reply it cannot decode (counted bad)."""
        ...

    async def send(self, request: bytes) -> None:
        """Send a command that gets no reply (paced like any other request)."""
        ...


class Handler(Protocol):
    protocol: str  # Source.protocol of the readings
    max_response: int  # bytes of the longest reply (sizes the timeout)
    timeout: float | None  # per-attempt override (profile), None = the bus's
    retries: int | None
    read_points: tuple[Point, ...]

    def reset(self) -> None: ...
    async def read(self, x: Exchange, points: Sequence[Point]) -> Fields:
        """The fields of ``points`` (some of ``read_points``: the groups due)."""
        ...

    def validate_write(self, point: Point, raw: int | float | str) -> None: ...
    async def write(self, x: Exchange, point: Point, raw: int | float | str) -> None: ...


class GenericHandler:
    protocol = "serial"

    def __init__(self, profile: Profile, addr: int) -> None:
        assert profile.serial is not None  # guaranteed by Profile validation
        self.spec = profile.serial
        self.codec = GenericCodec(self.spec)
        self.addr = addr
        self.max_response = self.spec.framing.max_length
        self.timeout = self.spec.timeout
        self.retries = self.spec.retries
        self.read_points = tuple(p for p in profile.points if p.field is not None)
        self.writes = {w.point: w for w in self.spec.writes}

    def reset(self) -> None:
        pass

    async def read(self, x: Exchange, points: Sequence[Point]) -> Fields:
        wanted = {p.field for p in points}
        out: Fields = {}
        for rd in self.spec.reads:
            if not rd.field_names() & wanted:
                continue

            def accept(body: bytes, rd: Read = rd) -> Fields | None:
                fields = self.codec.parse(rd, body)
                return dict(fields) if self.codec.addressed_to(fields, self.addr) else None

            out.update(
                await x.transact(
                    self.codec.read_request(rd, self.addr), self.codec.deframer(), accept
                )
            )
        return out

    def validate_write(self, point: Point, raw: int | float | str) -> None:
        if point.name not in self.writes:
            raise PointValueError(point.name, "the profile has no write command for it")
        try:
            self.codec.write_request(self.writes[point.name], self.addr, raw)
        except (ValueError, KeyError, IndexError) as exc:
            raise PointValueError(point.name, f"cannot format the command: {exc}") from None

    async def write(self, x: Exchange, point: Point, raw: int | float | str) -> None:
        cmd = self.writes[point.name]
        req = self.codec.write_request(cmd, self.addr, raw)
        if not cmd.expect_reply:
            await x.send(req)
            return
        await x.transact(
            req,
            self.codec.deframer(),
            lambda body: True if self.codec.check_ack(cmd, body, self.addr, raw) else None,
        )


class PelcoHandler:
    protocol = "pelco-d"
    max_response = 7
    timeout: float | None = None
    retries: int | None = None

    def __init__(self, profile: Profile, addr: int) -> None:
        self.addr = addr
        self.read_points = tuple(
            p for p in profile.points if (p.field or p.name) in pelco_d.QUERIES
        )

    def reset(self) -> None:
        pass

    async def read(self, x: Exchange, points: Sequence[Point]) -> Fields:
        out: Fields = {}
        for what in sorted({p.field or p.name for p in points}):
            reply = pelco_d.QUERIES[what][1]
            frame = await x.transact(
                pelco_d.query(self.addr, what), pelco_d.PelcoDeframer(self.addr, reply), lambda f: f
            )
            raw = pelco_d.reply_value(frame)
            out[what] = raw if what == "zoom" else pelco_d.to_degrees(what, raw)
        return out

    def validate_write(self, point: Point, raw: int | float | str) -> None:
        action = point.field or point.name
        if action not in pelco_d.ACTIONS:
            raise PointValueError(point.name, f"'{action}' is not a Pelco-D action")
        if not isinstance(raw, int) or not 1 <= raw <= 255:
            raise PointValueError(point.name, f"preset {raw} out of range 1..255")

    async def write(self, x: Exchange, point: Point, raw: int | float | str) -> None:
        assert isinstance(raw, int)
        req = pelco_d.preset(self.addr, point.field or point.name, raw)
        await x.transact(req, pelco_d.PelcoDeframer(self.addr, None), lambda f: f)


class MBusHandler:
    protocol = "mbus"
    max_response = 261
    timeout: float | None = None
    retries: int | None = None
    MAX_TELEGRAMS = 4  # DIF 0x1F chains; a bound so a confused meter cannot hold the bus

    def __init__(
        self, profile: Profile, addr: int, secondary: mbus.SecondaryAddress | None = None
    ) -> None:
        # A secondary-addressed meter is talked to at 0xFD once selected: its primary address
        # (often the factory default 0, shared by many meters) is never used on the wire.
        self.secondary = secondary
        self.addr = addr if secondary is None else mbus.ADDR_SECONDARY
        self.read_points = tuple(p for p in profile.points if p.field is not None)
        self.fcb = True
        self.need_reset = True

    def reset(self) -> None:
        self.need_reset = True

    def _accept(self, raw: bytes) -> mbus.MBusFrame | None:
        f = mbus.parse_frame(raw)
        # RSP_UD: C = 0x08 plus the ACD (0x20) / DFC (0x10) bits
        if f.kind != "long" or f.c & 0xCF != 0x08:
            return None
        if f.a != self.addr and self.addr not in (mbus.ADDR_SECONDARY, 0xFE):
            return None
        return f

    @staticmethod
    async def _acked(x: Exchange, request: bytes) -> None:
        await x.transact(request, mbus.MBusDeframer(), lambda f: True if f[0] == mbus.ACK else None)

    def _telegram(self, raw: bytes) -> Telegram | None:
        f = self._accept(raw)
        if f is None:
            return None
        if self.secondary is not None and (f.ci != 0x72 or not self.secondary.matches(f.data)):
            # another meter answered at 0xFD (a selection that also matched it, or one left
            # selected): never report its values as ours. Only the long header carries the ID.
            raise ValueError("RSP_UD from a meter with another secondary address")
        return decode_rsp_ud(f.a, f.ci, f.data)

    async def read(self, x: Exchange, points: Sequence[Point]) -> Fields:
        # one REQ_UD2 chain carries every field: the points asked only choose what is kept
        try:
            if self.secondary is not None:
                # Selection (EN 13757-3, CI 0x52) before every poll: selecting another meter
                # deselected this one. A meter stays selected until a non-matching selection
                # or SND_NKE to 0xFD, so the session reset is select, SND_NKE, select again.
                await self._acked(x, self.secondary.select())
                if self.need_reset:
                    await self._acked(x, mbus.snd_nke(mbus.ADDR_SECONDARY))
                    await self._acked(x, self.secondary.select())
                    self.need_reset, self.fcb = False, True
            elif self.need_reset:
                await self._acked(x, mbus.snd_nke(self.addr))
                self.need_reset, self.fcb = False, True
            out: Fields = {}
            for _ in range(self.MAX_TELEGRAMS):
                tel = await x.transact(
                    mbus.req_ud2(self.addr, self.fcb), mbus.MBusDeframer(), self._telegram
                )
                self.fcb = not self.fcb  # only after a good exchange (EN 13757-2 5.7.6)
                for k, v in tel.fields().items():
                    out.setdefault(k, v)
                if not tel.more:
                    break
            return out
        except BaseException:
            self.need_reset = True  # next poll starts over with SND_NKE
            raise

    def validate_write(self, point: Point, raw: int | float | str) -> None:
        raise PointValueError(point.name, "M-Bus writes are not supported")

    async def write(self, x: Exchange, point: Point, raw: int | float | str) -> None:
        raise PointValueError(point.name, "M-Bus writes are not supported")


def make_handler(profile: Profile, addr: int, address: str | None = None) -> Handler:
    """``address``: the device's protocol-specific address (``DeviceConfig.address``); only
    M-Bus uses it (a secondary address, see ``mbus.SecondaryAddress.parse``)."""
    if profile.protocol == "serial":
        return GenericHandler(profile, addr)
    if profile.protocol == "pelco_d":
        return PelcoHandler(profile, addr)
    if profile.protocol == "mbus":
        sec = None if address is None else mbus.SecondaryAddress.parse(address)
        return MBusHandler(profile, addr, sec)
    raise ValueError(f"protocol {profile.protocol!r} is not a serial protocol")
