"""Device-side protocol logic of the serial simulators (sans-I/O: bytes in, replies out)."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field


@dataclass
class Faults:
    silent: bool = False  # never answer
    bad_checksum: int = 0  # corrupt the checksum of the next N replies
    noise: bytes = b""  # sent before every reply
    truncate: int = 0  # cut the next reply longer than this after it (stops mid-frame)

    def apply(self, reply: bytes, corrupt: Callable[[bytes], bytes]) -> bytes:
        if self.silent:
            return b""
        if self.bad_checksum:
            self.bad_checksum -= 1
            reply = corrupt(reply)
        if self.truncate and len(reply) > self.truncate:
            reply, self.truncate = reply[: self.truncate], 0
        return self.noise + reply


class Responder:
    """Base: one line with several devices; ``feed`` returns the replies to send."""

    def __init__(self, addrs: Sequence[int], clock: Callable[[], float] = time.time) -> None:
        self.clock = clock
        self.buf = bytearray()
        self.faults: dict[int, Faults] = {a: Faults() for a in addrs}

    def feed(self, data: bytes) -> list[bytes]:
        raise NotImplementedError


def _xor(data: bytes) -> int:
    x = 0
    for b in data:
        x ^= b
    return x


@dataclass
class Lamp:
    dim: int = 100
    energy_kwh: float = 1234.5
    status: int = 0


class StreetlightLine(Responder):
    """CityEdge ASCII streetlight protocol (drivers/profiles/cityedge/ascii_streetlight.toml):
    ``#AARD*CS\\r`` -> ``!AA,DIM=ddd,PWR=pppp.p,V=vvv.v,ST=s,E=eeeeee.ee*CS\\r``;
    ``#AADIMnnn*CS\\r`` -> ``!AA,OK*CS\\r`` or ``!AA,ERR2*CS\\r``. CS = XOR of the bytes
    between the start character and '*', two upper-case hex digits."""

    def __init__(self, addrs: Sequence[int], clock: Callable[[], float] = time.time) -> None:
        super().__init__(addrs, clock)
        self.lamps = {a: Lamp(dim=40 + 10 * i) for i, a in enumerate(addrs)}

    @staticmethod
    def frame(body: str) -> bytes:
        return f"{body}*{_xor(body[1:].encode()):02X}\r".encode()

    def feed(self, data: bytes) -> list[bytes]:
        self.buf += data
        out = []
        while (end := self.buf.find(b"\r")) >= 0:
            line = bytes(self.buf[:end]).decode("latin-1")
            del self.buf[: end + 1]
            start = line.rfind("#")
            if start < 0 or "*" not in line[start:]:
                continue
            body, cs = line[start:].rsplit("*", 1)
            if cs.upper() != f"{_xor(body[1:].encode()):02X}" or len(body) < 3:
                continue  # a real controller ignores what it cannot read
            try:
                addr = int(body[1:3])
            except ValueError:
                continue
            if addr not in self.lamps:
                continue
            reply = self.frame(self._answer(addr, body[3:]))
            out.append(self.faults[addr].apply(reply, lambda r: r[:-3] + b"00\r"))
        return out

    def _answer(self, addr: int, cmd: str) -> str:
        lamp = self.lamps[addr]
        if cmd == "RD":
            power = 0.0 if lamp.dim == 0 else 1.2 + 0.6 * lamp.dim
            lamp.energy_kwh += 0.01
            return (
                f"!{addr:02d},DIM={lamp.dim:03d},PWR={power:06.1f},V=230.1,"
                f"ST={lamp.status},E={lamp.energy_kwh:09.2f}"
            )
        if cmd.startswith("DIM") and cmd[3:].isdigit():
            n = int(cmd[3:])
            if 0 <= n <= 100:
                lamp.dim = n
                return f"!{addr:02d},OK"
            return f"!{addr:02d},ERR2"
        return f"!{addr:02d},ERR1"


@dataclass
class Head:
    pan: int = 0  # hundredths of a degree
    tilt: int = 0
    zoom: int = 0
    presets: dict[int, tuple[int, int, int]] = field(default_factory=dict)


class PelcoLine(Responder):
    """Pelco-D heads: answer pan/tilt/zoom queries, store and recall presets, general
    response (FF addr 00 cs) to every other valid command; frames with a bad checksum are
    ignored."""

    def __init__(self, addrs: Sequence[int], clock: Callable[[], float] = time.time) -> None:
        super().__init__(addrs, clock)
        self.heads = {
            a: Head(pan=1000 * i + 4500, tilt=35000 - 100 * i, zoom=512 * i)
            for i, a in enumerate(addrs)
        }
        self.commands: list[bytes] = []

    @staticmethod
    def _cs(b: bytes | bytearray) -> int:
        return sum(b) & 0xFF

    def feed(self, data: bytes) -> list[bytes]:
        self.buf += data
        out = []
        while len(self.buf) >= 7:
            if self.buf[0] != 0xFF or self._cs(self.buf[1:6]) != self.buf[6]:
                del self.buf[0]
                continue
            frame = bytes(self.buf[:7])
            del self.buf[:7]
            addr = frame[1]
            if addr not in self.heads:
                continue
            self.commands.append(frame)
            reply = self._answer(self.heads[addr], addr, frame)
            out.append(
                self.faults[addr].apply(reply, lambda r: r[:-1] + bytes(((r[-1] + 1) & 0xFF,)))
            )
        return out

    def _answer(self, h: Head, addr: int, f: bytes) -> bytes:
        cmd2, d1, d2 = f[3], f[4], f[5]
        query = {0x51: (0x59, h.pan), 0x53: (0x5B, h.tilt), 0x55: (0x5D, h.zoom)}
        if f[2] == 0 and cmd2 in query:
            reply, v = query[cmd2]
            body = bytes((addr, 0, reply, v >> 8, v & 0xFF))
            return b"\xff" + body + bytes((self._cs(body),))
        if f[2] == 0 and cmd2 == 0x03:
            h.presets[d2] = (h.pan, h.tilt, h.zoom)
        elif f[2] == 0 and cmd2 == 0x07 and d2 in h.presets:
            h.pan, h.tilt, h.zoom = h.presets[d2]
        elif f[2] == 0 and cmd2 == 0x05:
            h.presets.pop(d2, None)
        elif f[2] == 0 and cmd2 == 0x04:  # pan left: move a step (speed d1)
            h.pan = (h.pan - 10 * d1) % 36000
        elif f[2] == 0 and cmd2 == 0x02:  # pan right
            h.pan = (h.pan + 10 * d1) % 36000
        return bytes((0xFF, addr, 0, addr & 0xFF))


def _bcd(value: int, n: int) -> bytes:
    s = f"{value:0{2 * n}d}"
    return bytes(int(s[i : i + 2], 16) for i in range(0, 2 * n, 2))[::-1]


@dataclass
class Meter:
    ident: int
    volume_l: int  # litres
    flow_lh: int = 350  # litres per hour
    status: int = 0
    access: int = 0
    fcb: bool | None = None  # last FCB seen (None after SND_NKE)
    last: bytes = b""
    split: bool = False  # answer in two telegrams (DIF 0x1F), exercising FCB toggling
    part: int = 0
    primary: int = 0  # primary address; meters may share one (then only secondary works)


class MBusLine(Responder):
    """Wired M-Bus water meters (EN 13757-2/-3): SND_NKE -> E5; REQ_UD2 -> RSP_UD (CI 0x72,
    volume BCD VIF 0x13 = litres, flow VIF 0x3B, fabrication number, date-time type F, error
    flags VIF FD 17); a repeated FCB gets the previous telegram again; secondary selection by
    SND_UD CI 0x52 at address 0xFD (version 0x01, medium 0x07 water, manufacturer CTY): every
    matching meter is selected and acks, a non-matching selection or SND_NKE to 0xFD deselects.

    ``meters`` and ``faults`` are keyed by the address given at creation; set
    ``meters[k].primary`` to put several meters behind one primary address. Meters answering
    together collide: a slave sends a 0 bit by drawing extra current, so the master reads the
    AND of the overlapping bytes."""

    MAN = ((ord("C") - 64) << 10) | ((ord("T") - 64) << 5) | (ord("Y") - 64)  # "CTY"

    def __init__(self, addrs: Sequence[int], clock: Callable[[], float] = time.time) -> None:
        super().__init__(addrs, clock)
        self.meters = {
            a: Meter(ident=12345600 + a, volume_l=123456 + 1000 * a, split=(i == 1), primary=a)
            for i, a in enumerate(addrs)
        }
        self.selected: set[int] = set()

    def feed(self, data: bytes) -> list[bytes]:
        self.buf += data
        out = []
        while self.buf:
            b = self.buf
            if b[0] == 0x10 and len(b) >= 5:
                ok = b[4] == 0x16 and (b[1] + b[2]) & 0xFF == b[3]
                frame = bytes(b[:5])
                del b[: 5 if ok else 1]
                if ok:
                    out.extend(self._short(frame[1], frame[2]))
            elif b[0] == 0x68 and len(b) >= 6 and len(b) >= b[1] + 6:
                n = b[1]
                frame = bytes(b[: n + 6])
                ok = (
                    b[2] == n
                    and b[3] == 0x68
                    and frame[-1] == 0x16
                    and sum(frame[4 : 4 + n]) & 0xFF == frame[4 + n]
                )
                del b[: n + 6 if ok else 1]
                if ok:
                    out.extend(self._long(frame[4], frame[5], frame[6], frame[7:-2]))
            elif b[0] in (0x10, 0x68):
                break
            else:
                del b[0]
        return out

    def _targets(self, a: int) -> list[int]:
        if a == 0xFD:
            return sorted(self.selected)
        return [k for k, m in self.meters.items() if m.primary == a]

    @staticmethod
    def _collide(replies: list[bytes]) -> list[bytes]:
        replies = [r for r in replies if r]
        if len(replies) < 2:
            return replies
        out = bytearray(max(replies, key=len))
        for r in replies:
            for i, byte in enumerate(r):
                out[i] &= byte
        return [bytes(out)]

    def _short(self, c: int, a: int) -> list[bytes]:
        targets = self._targets(a)
        if c == 0x40 and a == 0xFD:
            self.selected = set()  # EN 13757-3: SND_NKE to 0xFD ends the selection
        return self._collide([self._short_one(c, t) for t in targets])

    def _short_one(self, c: int, t: int) -> bytes:
        m, faults = self.meters[t], self.faults[t]
        if c == 0x40:
            m.fcb, m.last, m.part = None, b"", 0
            return faults.apply(b"\xe5", lambda r: b"")
        if c & 0xDF != 0x5B:
            return b""
        fcb = bool(c & 0x20)
        if m.fcb is None or fcb != m.fcb or not m.last:
            m.last = self._telegram(m)
        m.fcb = fcb
        return faults.apply(m.last, lambda r: r[:-2] + bytes(((r[-2] + 1) & 0xFF, 0x16)))

    def _long(self, c: int, a: int, ci: int, data: bytes) -> list[bytes]:
        if a == 0xFD and ci == 0x52 and len(data) == 8 and c & 0xDF == 0x53:
            want = data[:4].hex()[::-1]
            man, ver, med = int.from_bytes(data[4:6], "little"), data[6], data[7]
            self.selected = set()
            for k, m in self.meters.items():
                mine = _bcd(m.ident, 4).hex()[::-1]
                if (
                    all(w in "fF" or w == x for w, x in zip(want, mine, strict=True))
                    and man in (0xFFFF, self.MAN)
                    and ver in (0xFF, 0x01)
                    and med in (0xFF, 0x07)
                ):
                    self.selected.add(k)
            acks = [self.faults[k].apply(b"\xe5", lambda r: b"") for k in sorted(self.selected)]
            return self._collide(acks)
        return []

    def _telegram(self, m: Meter) -> bytes:
        m.access = (m.access + 1) & 0xFF
        m.volume_l += 7
        t = time.gmtime(self.clock())
        head = (
            _bcd(m.ident, 4)
            + self.MAN.to_bytes(2, "little")
            + bytes((0x01, 0x07, m.access, m.status, 0, 0))
        )
        dt = bytes(
            (
                t.tm_min,
                t.tm_hour,
                t.tm_mday | ((t.tm_year - 2000) & 7) << 5,
                t.tm_mon | ((t.tm_year - 2000) & 0x78) << 1,
            )
        )
        part1 = (
            b"\x0c\x13"
            + _bcd(m.volume_l, 4)  # volume, 8-digit BCD, litres
            + b"\x0c\x78"
            + _bcd(m.ident, 4)
        )  # fabrication number
        part2 = (
            b"\x04\x6d"
            + dt  # date-time type F
            + b"\x04\x3b"
            + m.flow_lh.to_bytes(4, "little", signed=True)  # flow l/h
            + b"\x01\xfd\x17"
            + bytes((m.status,))
        )  # error flags
        if m.split and m.part == 0:
            records, m.part = part1 + b"\x1f", 1
        elif m.split:
            records, m.part = part2, 0
        else:
            records = part1 + part2
        body = bytes((0x08, m.primary, 0x72)) + head + records
        return bytes((0x68, len(body), len(body), 0x68)) + body + bytes((sum(body) & 0xFF, 0x16))
