"""Profile-defined request/response protocol (sans-I/O): frames, parses, builds commands.

Frame layout, for requests and responses alike::

    body = [start marker] payload          (the request template renders the whole body)
    frame = body [separator checksum] [terminator]

The checksum covers ``body[checksum.skip:]``. Regexes and struct layouts see the body with its
start marker (so an ASCII regex reads naturally: ``^!(?P<addr>\\d\\d),...$``).
"""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass

from drivers.serial.framing import Deframer, checksum_ok, checksum_width, encode_checksum
from drivers.serial.spec import Read, SerialSpec, Write, render, to_bytes

RawFields = dict[str, str | int | float | bytes]


class ParseError(ValueError):
    """A checksum-valid frame whose content the profile does not describe."""

    def __init__(self, reason: str, body: bytes) -> None:
        self.reason = reason
        self.body = body
        super().__init__(f"{reason}: {body[:64]!r}")


class DeviceNak(Exception):
    """The device answered with the profile's error (nak) reply."""

    def __init__(self, code: str | None) -> None:
        self.code = code
        super().__init__(f"device refused the command (code {code})")


class GenericDeframer(Deframer):
    def __init__(self, spec: SerialSpec) -> None:
        super().__init__(max_buffer=spec.framing.max_length * 4)
        f = spec.framing
        self.spec = spec
        self.start = to_bytes(f.start)
        self.term = to_bytes(f.terminator)
        self.sep = to_bytes(spec.checksum.separator) if spec.checksum.kind != "none" else b""
        self.cs_len = checksum_width(spec.checksum.kind, spec.checksum.encoding)

    def _scan(self) -> tuple[bytes | None, int]:
        buf, f = self.buf, self.spec.framing
        if self.start:
            i = buf.find(self.start)
            if i < 0:
                # keep a possible partial marker at the tail
                keep = len(self.start) - 1
                return (None, len(buf) - keep) if len(buf) > keep else (None, 0)
            if i > 0:
                return None, i
        if f.kind == "terminator":
            j = buf.find(self.term, len(self.start))
            if j < 0:
                return self._reject(1) if len(buf) > f.max_length else (None, 0)
            size = j + len(self.term)
        elif f.kind == "fixed":
            size = f.length or 0
        else:
            o = f.length_offset
            if len(buf) < o + f.length_size:
                return None, 0
            size = int.from_bytes(buf[o : o + f.length_size], f.length_order) + f.length_adjust
            if not len(self.start) + self.cs_len <= size <= f.max_length:
                return self._reject(1)
        if len(buf) < size:
            return None, 0
        body = self._check(bytes(buf[:size]))
        if body is None:
            # without a start marker a bad frame goes whole; with one, rescan after its first byte
            return self._reject(1 if self.start else size)
        return body, size

    def _check(self, frame: bytes) -> bytes | None:
        tail = len(self.term) if self.spec.framing.kind == "terminator" else 0
        inner = frame[: len(frame) - tail]
        if self.term and self.spec.framing.kind != "terminator" and inner.endswith(self.term):
            inner = inner[: -len(self.term)]
        n = self.cs_len + len(self.sep)
        if len(inner) < n:
            return None
        body, sep, cs = (
            inner[: len(inner) - n],
            inner[len(inner) - n : len(inner) - self.cs_len],
            inner[len(inner) - self.cs_len :],
        )
        if sep != self.sep:
            return None
        c = self.spec.checksum
        if not checksum_ok(c.kind, body[c.skip :], cs, c.encoding, c.byte_order):
            return None
        return body


@dataclass(frozen=True, slots=True)
class GenericCodec:
    spec: SerialSpec

    def deframer(self) -> GenericDeframer:
        return GenericDeframer(self.spec)

    def frame(self, body: bytes) -> bytes:
        c, f = self.spec.checksum, self.spec.framing
        tail = b""
        if c.kind != "none":
            tail = to_bytes(c.separator) + encode_checksum(
                c.kind, body[c.skip :], c.encoding, c.byte_order
            )
        return body + tail + to_bytes(f.terminator)

    def read_request(self, read: Read, addr: int) -> bytes:
        return self.frame(render(read.request, self.spec.mode, addr=addr))

    def write_request(self, write: Write, addr: int, value: int | float | str) -> bytes:
        return self.frame(render(write.request, self.spec.mode, addr=addr, value=value))

    def parse(self, read: Read, body: bytes) -> RawFields:
        """Fields of a response body; raises ParseError when it does not fit the profile."""
        if read.regex is not None:
            m = re.fullmatch(read.regex, body.decode("latin-1"))
            if m is None:
                raise ParseError("response does not match the regex", body)
            return {k: v for k, v in m.groupdict().items() if v is not None}
        assert read.struct is not None
        try:
            items = struct.unpack(read.struct, body)
        except struct.error:
            raise ParseError(
                f"response is not {struct.calcsize(read.struct)} bytes", body
            ) from None
        return {k: v for k, v in zip(read.fields, items, strict=True) if k != "_"}

    def addressed_to(self, fields: RawFields, addr: int) -> bool:
        key = self.spec.address_field
        if key is None:
            return True
        try:
            return int(fields[key]) == addr
        except (KeyError, ValueError, TypeError):
            return False

    def check_ack(self, write: Write, body: bytes, addr: int, value: object) -> bool:
        """True on the ack reply, raises DeviceNak on the nak reply, False on anything else."""
        if self.spec.mode == "binary":
            if write.ack is not None and body == render(
                write.ack, "binary", addr=addr, value=value
            ):
                return True
            return write.ack is None
        text = body.decode("latin-1")
        if write.nak is not None:
            m = re.fullmatch(write.nak, text)
            if m is not None and self._mine(m, addr):
                raise DeviceNak(m.groupdict().get("code"))
        if write.ack is None:
            return True
        m = re.fullmatch(write.ack, text)
        return m is not None and self._mine(m, addr)

    def _mine(self, m: re.Match[str], addr: int) -> bool:
        key = self.spec.address_field
        if key is None or key not in m.groupdict():
            return True
        try:
            return int(m.group(key)) == addr
        except (TypeError, ValueError):
            return False
