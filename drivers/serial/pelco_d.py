"""Pelco-D PTZ protocol (sans-I/O).

Command frame, 7 bytes: ``FF addr cmd1 cmd2 data1 data2 cs`` with ``cs = sum(addr..data2) mod
256`` (the 0xFF sync byte is not summed). Examples from the Pelco-D protocol manual:
pan left at speed 0x3F ``FF 01 00 04 3F 00 44``; go to preset 1 ``FF 01 00 07 00 01 09``.

Replies: the "general response" (4 bytes ``FF addr alarms cs``, cs = addr + alarms) to ordinary
commands, and the extended response (7 bytes) to position queries: query pan 0x51 -> 0x59,
tilt 0x53 -> 0x5B, zoom 0x55 -> 0x5D, the 16-bit value in data1 (MSB) / data2 (LSB).
Pan and tilt are in hundredths of a degree, 0..35999. Tilt is reported signed in -180..180:
raw values above 18000 are ``raw - 36000`` (most heads count upward tilt down from 36000).
Zoom is the lens position 0..65535 (0 = wide end), device-specific beyond that.
"""

from __future__ import annotations

from drivers.serial.framing import Deframer

SYNC = 0xFF
SET_PRESET = 0x03
CLEAR_PRESET = 0x05
GOTO_PRESET = 0x07
QUERY_PAN, QUERY_TILT, QUERY_ZOOM = 0x51, 0x53, 0x55
PAN_REPLY, TILT_REPLY, ZOOM_REPLY = 0x59, 0x5B, 0x5D
QUERIES = {
    "pan": (QUERY_PAN, PAN_REPLY),
    "tilt": (QUERY_TILT, TILT_REPLY),
    "zoom": (QUERY_ZOOM, ZOOM_REPLY),
}
ACTIONS = {"goto_preset": GOTO_PRESET, "set_preset": SET_PRESET, "clear_preset": CLEAR_PRESET}


def command(addr: int, cmd1: int, cmd2: int, data1: int = 0, data2: int = 0) -> bytes:
    if not 1 <= addr <= 255:
        raise ValueError(f"Pelco-D address {addr} out of range 1..255")
    body = bytes((addr, cmd1 & 0xFF, cmd2 & 0xFF, data1 & 0xFF, data2 & 0xFF))
    return bytes((SYNC,)) + body + bytes((sum(body) & 0xFF,))


def query(addr: int, what: str) -> bytes:
    return command(addr, 0x00, QUERIES[what][0])


def preset(addr: int, action: str, number: int) -> bytes:
    if not 1 <= number <= 255:
        raise ValueError(f"preset {number} out of range 1..255")
    return command(addr, 0x00, ACTIONS[action], 0x00, number)


def general_response(addr: int, alarms: int = 0) -> bytes:
    return bytes((SYNC, addr, alarms, (addr + alarms) & 0xFF))


def extended_response(addr: int, reply: int, value: int) -> bytes:
    return command(addr, 0x00, reply, (value >> 8) & 0xFF, value & 0xFF)


def to_degrees(field: str, raw: int) -> float:
    if field == "tilt" and raw > 18000:
        return (raw - 36000) / 100
    return raw / 100


class PelcoDeframer(Deframer):
    """Finds one expected reply: the 7-byte extended response with ``reply`` as cmd2, or the
    4-byte general response when ``reply`` is None. 0xFF can occur inside data, so a
    candidate is only accepted with a matching address and checksum; otherwise skip one byte."""

    def __init__(self, addr: int, reply: int | None) -> None:
        super().__init__(max_buffer=256)
        self.addr = addr
        self.reply = reply

    def _scan(self) -> tuple[bytes | None, int]:
        buf = self.buf
        i = buf.find(SYNC)
        if i < 0:
            return None, len(buf)
        if i > 0:
            return None, i
        size = 4 if self.reply is None else 7
        if len(buf) < size:
            # a wrong address is visible early: resync without waiting for the rest
            if len(buf) >= 2 and buf[1] != self.addr:
                return None, 1
            return None, 0
        frame = bytes(buf[:size])
        if frame[1] != self.addr or sum(frame[1:-1]) & 0xFF != frame[-1]:
            return self._reject(1)
        if self.reply is not None and (frame[2] != 0x00 or frame[3] != self.reply):
            return self._reject(1)
        return frame, size


def reply_value(frame: bytes) -> int:
    return (frame[4] << 8) | frame[5]
