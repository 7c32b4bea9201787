"""Wired M-Bus (EN 13757-2 link layer, EN 13757-3 application layer), sans-I/O.

Link layer (EN 13757-2 / IEC 60870-5-2 FT1.2):
  single character  E5                         (ack)
  short frame       10 C A CS 16               CS = (C + A) mod 256
  long frame        68 L L 68 C A CI data CS 16   L = bytes C..data, CS = sum(C..data) mod 256
SND_NKE is C=0x40; REQ_UD2 is C=0x5B / 0x7B (FCB bit 0x20 toggled after each successful
exchange, repeated unchanged on a retry so the meter resends instead of advancing);
SND_UD is C=0x53 / 0x73; RSP_UD comes back with C=0x08 (0x18/0x28/0x38 with ACD/DFC).
Secondary addressing: SND_UD to address 0xFD with CI=0x52 and the 8-byte selection (ID BCD,
manufacturer, version, medium; wildcards F/FF), acked with E5; the selected meter then answers
at 0xFD. Record decoding is in ``drivers.serial.mbus_records``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from drivers.serial.framing import Deframer

ACK = 0xE5
SND_NKE = 0x40
REQ_UD2 = 0x5B
FCB = 0x20
SND_UD = 0x53
ADDR_SECONDARY = 0xFD
ADDR_BROADCAST = 0xFF
CI_SELECT = 0x52


class MBusFrame:
    __slots__ = ("a", "c", "ci", "data", "kind")

    def __init__(self, kind: str, c: int = 0, a: int = 0, ci: int = 0, data: bytes = b"") -> None:
        self.kind = kind  # "ack" | "short" | "long"
        self.c, self.a, self.ci, self.data = c, a, ci, data

    def __repr__(self) -> str:
        return (
            f"MBusFrame({self.kind}, c={self.c:#04x}, a={self.a}, ci={self.ci:#04x}, "
            f"{len(self.data)} bytes)"
        )


def short_frame(c: int, a: int) -> bytes:
    return bytes((0x10, c, a, (c + a) & 0xFF, 0x16))


def long_frame(c: int, a: int, ci: int, data: bytes) -> bytes:
    body = bytes((c, a, ci)) + data
    if len(body) > 255:
        raise ValueError("long frame data exceeds 252 bytes")
    return bytes((0x68, len(body), len(body), 0x68)) + body + bytes((sum(body) & 0xFF, 0x16))


def snd_nke(a: int) -> bytes:
    return short_frame(SND_NKE, a)


def req_ud2(a: int, fcb: bool) -> bytes:
    return short_frame(REQ_UD2 | (FCB if fcb else 0), a)


def bcd_encode(value: int, nbytes: int) -> bytes:
    digits = f"{value:0{nbytes * 2}d}"
    if len(digits) > nbytes * 2:
        raise ValueError(f"{value} does not fit {nbytes} BCD bytes")
    return bytes(int(digits[i : i + 2], 16) for i in range(0, len(digits), 2))[::-1]


def manufacturer_code(text: str) -> int:
    a, b, c = (ord(ch) - 64 for ch in text.upper())
    return (a << 10) | (b << 5) | c


def manufacturer_text(code: int) -> str:
    return "".join(chr(((code >> s) & 0x1F) + 64) for s in (10, 5, 0))


def select_secondary(
    ident: int,
    manufacturer: str | None = None,
    version: int | None = None,
    medium: int | None = None,
) -> bytes:
    """SND_UD selecting one meter by secondary address (None = wildcard)."""
    sel = bcd_encode(ident, 4)
    sel += (0xFFFF if manufacturer is None else manufacturer_code(manufacturer)).to_bytes(
        2, "little"
    )
    sel += bytes((0xFF if version is None else version, 0xFF if medium is None else medium))
    return long_frame(SND_UD, ADDR_SECONDARY, CI_SELECT, sel)


_SECONDARY_RE = re.compile(
    r"(?P<id>[0-9Ff]{8})(?:\.(?P<man>[A-Za-z]{3}|\*)\.(?P<ver>[0-9A-Fa-f]{2}|\*)"
    r"\.(?P<med>[0-9A-Fa-f]{2}|\*))?"
)


@dataclass(frozen=True, slots=True)
class SecondaryAddress:
    """A selection mask (EN 13757-3 secondary addressing): the 8-digit identification number
    with F as a per-digit wildcard, manufacturer, version and medium (None = wildcard)."""

    ident: str  # 8 characters, most significant digit first, "F" = any digit
    manufacturer: str | None = None
    version: int | None = None
    medium: int | None = None

    @classmethod
    def parse(cls, text: str) -> SecondaryAddress:
        """``12345678`` or ``ID.MAN.VER.MED`` (VER, MED two hex digits; ``*`` = any)."""
        m = _SECONDARY_RE.fullmatch(text)
        if m is None:
            raise ValueError(
                f"'{text}' is not an M-Bus secondary address: 8 digits (F = any digit), "
                "optionally followed by .MAN.VER.MED, e.g. '12345678' or '12345678.ELS.*.07'"
            )

        def byte(part: str | None) -> int | None:
            # 0xFF is the protocol's own wildcard byte: treat it like '*'
            return None if part in (None, "*") or int(part, 16) == 0xFF else int(part, 16)

        man = m["man"]
        return cls(
            m["id"].upper(),
            None if man in (None, "*") else man.upper(),
            byte(m["ver"]),
            byte(m["med"]),
        )

    def __str__(self) -> str:
        if (self.manufacturer, self.version, self.medium) == (None, None, None):
            return self.ident
        ver = "*" if self.version is None else f"{self.version:02X}"
        med = "*" if self.medium is None else f"{self.medium:02X}"
        return f"{self.ident}.{self.manufacturer or '*'}.{ver}.{med}"

    def select(self) -> bytes:
        """SND_UD CI 0x52 to 0xFD; the ID goes as BCD nibbles LSB first, F nibbles kept."""
        sel = bytes.fromhex(self.ident)[::-1]
        man = 0xFFFF if self.manufacturer is None else manufacturer_code(self.manufacturer)
        sel += man.to_bytes(2, "little")
        sel += bytes((0xFF if self.version is None else self.version,))
        sel += bytes((0xFF if self.medium is None else self.medium,))
        return long_frame(SND_UD, ADDR_SECONDARY, CI_SELECT, sel)

    def matches(self, header: bytes) -> bool:
        """True if a CI 0x72 long header (ID, manufacturer, version, medium) fits the mask."""
        if len(header) < 8:
            return False
        got = header[3::-1].hex().upper()
        if any(w not in ("F", g) for w, g in zip(self.ident, got, strict=True)):
            return False
        man = int.from_bytes(header[4:6], "little")
        if self.manufacturer is not None and man != manufacturer_code(self.manufacturer):
            return False
        return all(
            want is None or want == got_b
            for want, got_b in ((self.version, header[6]), (self.medium, header[7]))
        )


class MBusDeframer(Deframer):
    """Accepts E5, short and long frames; anything else is skipped byte by byte."""

    def __init__(self) -> None:
        super().__init__(max_buffer=1024)

    def _scan(self) -> tuple[bytes | None, int]:
        buf = self.buf
        b0 = buf[0]
        if b0 == ACK:
            return bytes(buf[:1]), 1
        if b0 == 0x10:
            if len(buf) < 5:
                return None, 0
            if buf[4] != 0x16 or (buf[1] + buf[2]) & 0xFF != buf[3]:
                return self._reject(1)
            return bytes(buf[:5]), 5
        if b0 == 0x68:
            if len(buf) < 4:
                return None, 0
            length = buf[1]
            if buf[2] != length or buf[3] != 0x68 or length < 3:
                return self._reject(1)
            size = length + 6
            if len(buf) < size:
                return None, 0
            if buf[size - 1] != 0x16 or sum(buf[4 : 4 + length]) & 0xFF != buf[4 + length]:
                return self._reject(1)
            return bytes(buf[:size]), size
        nxt = [i for i in (buf.find(ACK), buf.find(0x10), buf.find(0x68)) if i > 0]
        return None, min(nxt) if nxt else len(buf)


def parse_frame(raw: bytes) -> MBusFrame:
    """Split a deframed (already checked) frame into its fields."""
    if raw[0] == ACK:
        return MBusFrame("ack")
    if raw[0] == 0x10:
        return MBusFrame("short", raw[1], raw[2])
    return MBusFrame("long", raw[4], raw[5], raw[6], raw[7:-2])
