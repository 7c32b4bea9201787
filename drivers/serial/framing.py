"""Checksums (``drivers/checksums.py``) and the resynchronizing byte-stream deframer base
shared by every protocol.

Serial lines deliver bytes, not frames: a response may arrive in pieces, behind line noise or
the tail of another device's answer. Each protocol's deframer buffers what it got, skips junk
one byte at a time until a frame both fits and passes its checksum, and counts every discarded
run in ``bad`` (the bus adds it to ``DeviceStats.bad_frames``). A deframer never raises on
input: a parser that can crash on line noise would stall the whole bus.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

from drivers.checksums import crc16_ccitt, crc16_modbus, sum8, xor8

ChecksumKind = Literal["none", "sum8", "xor8", "crc16_modbus", "crc16_ccitt"]

CHECKSUMS: dict[str, tuple[Callable[[bytes], int], int]] = {
    "sum8": (sum8, 1),
    "xor8": (xor8, 1),
    "crc16_modbus": (crc16_modbus, 2),
    "crc16_ccitt": (crc16_ccitt, 2),
}


def checksum_width(kind: ChecksumKind, encoding: Literal["binary", "hex"]) -> int:
    """Bytes the checksum occupies on the wire."""
    if kind == "none":
        return 0
    n = CHECKSUMS[kind][1]
    return n * 2 if encoding == "hex" else n


def encode_checksum(
    kind: ChecksumKind,
    data: bytes,
    encoding: Literal["binary", "hex"],
    byte_order: Literal["big", "little"],
) -> bytes:
    if kind == "none":
        return b""
    fn, n = CHECKSUMS[kind]
    value = fn(data)
    if encoding == "hex":
        return f"{value:0{2 * n}X}".encode("ascii")
    return value.to_bytes(n, byte_order)


def checksum_ok(
    kind: ChecksumKind,
    data: bytes,
    got: bytes,
    encoding: Literal["binary", "hex"],
    byte_order: Literal["big", "little"],
) -> bool:
    if kind == "none":
        return True
    want = encode_checksum(kind, data, encoding, byte_order)
    # Devices differ in hex case: compare hex digits case-insensitively.
    return want == (got.upper() if encoding == "hex" else got)


class Deframer:
    """Buffer plus junk accounting; subclasses implement ``_scan``.

    ``_scan`` looks at the buffer and returns ``(frame, consumed)`` for a complete valid frame,
    ``(None, 0)`` to wait for more bytes, or ``(None, n)`` to discard ``n`` junk bytes.
    """

    def __init__(self, max_buffer: int = 4096) -> None:
        self.buf = bytearray()
        self.bad = 0
        self.max_buffer = max_buffer
        self._in_junk = False

    def feed(self, data: bytes) -> bytes | None:
        """Add bytes; return the first complete valid frame (later bytes stay buffered)."""
        self.buf += data
        while self.buf:
            frame, consumed = self._scan()
            if frame is not None:
                del self.buf[:consumed]
                self._in_junk = False
                return frame
            if consumed == 0:
                if len(self.buf) > self.max_buffer:
                    self._drop(len(self.buf))
                    continue
                return None
            self._drop(consumed)
        return None

    def next_frame(self) -> bytes | None:
        """Another frame already in the buffer, if any."""
        return self.feed(b"")

    def pending(self) -> int:
        return len(self.buf)

    def salvage(self) -> bytes | None:
        """The line went quiet with a frame candidate incomplete: it never will complete
        (a false start marker or length swallowed the real reply). Count it once and look for
        a complete frame after its first byte."""
        if not self.buf:
            return None
        self._reject(1)
        del self.buf[:1]
        while self.buf:
            frame = self.feed(b"")
            if frame is not None or not self.buf:
                return frame
            del self.buf[:1]  # still waiting on a candidate: skip it too (same junk run)
        return None

    def abandon(self) -> None:
        """A transaction ended with bytes left over (device stopped mid-frame): one bad frame."""
        if self.buf:
            self.bad += 1
        self.buf.clear()
        self._in_junk = False

    def _drop(self, n: int) -> None:
        # A run of junk counts once: noise of 40 bytes is one bad frame, not 40.
        if not self._in_junk:
            self.bad += 1
            self._in_junk = True
        del self.buf[:n]

    def _reject(self, n: int) -> tuple[None, int]:
        """A frame candidate failed its checks: one bad frame; the bytes skipped while
        resynchronizing after it belong to it and are not counted again."""
        self.bad += 1
        self._in_junk = True
        return None, n

    def _scan(self) -> tuple[bytes | None, int]:
        raise NotImplementedError
