"""A scriptable hostile Modbus TCP peer: what field devices and TCP gateways get wrong on the
wire, one mode at a time, switchable while clients stay connected (tests, bench/bench_faults.py).

Healthy, it answers FC03/FC04 reads from one register map (exception 2 outside it) and FC06 /
FC16 writes. Each other mode spoils every reply the same way until the mode changes:

============  ==================================================================================
mode          what goes on the wire
============  ==================================================================================
exc01..exc0B  an exception reply with that code (01, 02, 03, 04, 06, 0A, 0B)
wrong_tid     the reply under another transaction id
wrong_unit    the reply from another unit id
wrong_fc      a well-formed reply for another function code
len0, len1,   an MBAP header whose length field is 0, 1 or 65535
len65535
garbage       bytes that are no MBAP frame at all
truncated     the first half of the reply, then silence on that connection
stop_reading  the request is not read (nor anything after it): a peer that accepted and froze
reset         part of the reply, then a TCP reset
unsolicited   the right reply, plus stale replies nobody asked for before and after it
============  ==================================================================================

Connections stuck in ``truncated`` or ``stop_reading`` are reset when the mode changes, as a
restarted peer would.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
from collections.abc import Mapping

EXCEPTIONS = {"exc01": 1, "exc02": 2, "exc03": 3, "exc04": 4, "exc06": 6, "exc0A": 10, "exc0B": 11}
MODES = (
    "healthy",
    *EXCEPTIONS,
    "wrong_tid",
    "wrong_unit",
    "wrong_fc",
    "len0",
    "len1",
    "len65535",
    "garbage",
    "truncated",
    "stop_reading",
    "reset",
    "unsolicited",
)
_HEAD = struct.Struct(">HHHB")
GARBAGE = b"\x13\x37 this is not modbus \xff\xfe\x00"


def adu(tid: int, unit: int, pdu: bytes, length: int | None = None) -> bytes:
    n = len(pdu) + 1 if length is None else length
    return _HEAD.pack(tid & 0xFFFF, 0, n, unit) + pdu


class HostilePeer:
    def __init__(
        self, registers: Mapping[int, int], *, host: str = "127.0.0.1", port: int = 0
    ) -> None:
        self.registers = dict(registers)
        self.host = host
        self.port = port
        self._mode = "healthy"
        self._changed = asyncio.Event()
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self.requests = 0
        self.connections = 0

    @property
    def url(self) -> str:
        return f"tcp://{self.host}:{self.port}"

    @property
    def mode(self) -> str:
        return self._mode

    @mode.setter
    def mode(self, mode: str) -> None:
        if mode not in MODES:
            raise ValueError(f"unknown mode {mode!r} (one of {', '.join(MODES)})")
        self._mode = mode
        self._changed.set()  # wakes connections stuck in a silent mode
        self._changed = asyncio.Event()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, self.host, self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            for w in list(self._writers):
                w.transport.abort()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 1.0)
            self._server = None

    # --- the wire -----------------------------------------------------------------------
    async def _serve(self, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        self.connections += 1
        self._writers.add(w)
        try:
            while True:
                head = await r.readexactly(7)
                tid, _pid, length, unit = _HEAD.unpack(head)
                pdu = await r.readexactly(max(0, length - 1))
                self.requests += 1
                mode = self._mode
                if mode in ("stop_reading", "truncated", "reset"):
                    frame = adu(tid, unit, self.answer(pdu))
                    if mode == "truncated":
                        w.write(frame[: len(frame) // 2])
                    elif mode == "reset":
                        w.write(frame[:5])
                        await w.drain()
                        _reset(w)
                        return
                    await self._until_mode_changes(w)
                    return
                w.write(self.spoil(mode, tid, unit, pdu))
                await w.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            self._writers.discard(w)
            w.close()

    async def _until_mode_changes(self, w: asyncio.StreamWriter) -> None:
        await self._changed.wait()
        _reset(w)

    def spoil(self, mode: str, tid: int, unit: int, pdu: bytes) -> bytes:
        """The bytes sent for request ``pdu`` in ``mode`` (every mode but the silent ones)."""
        reply = self.answer(pdu)
        if mode in EXCEPTIONS:
            return adu(tid, unit, bytes([pdu[0] | 0x80, EXCEPTIONS[mode]]))
        if mode == "wrong_tid":
            return adu(tid + 0x1111, unit, reply)
        if mode == "wrong_unit":
            return adu(tid, (unit + 1) & 0xFF, reply)
        if mode == "wrong_fc":
            return adu(tid, unit, bytes([reply[0] ^ 0x07]) + reply[1:])
        if mode in ("len0", "len1", "len65535"):
            return adu(tid, unit, reply, length=int(mode[3:]))
        if mode == "garbage":
            return GARBAGE
        if mode == "unsolicited":
            stale = adu(tid - 7, unit, reply)
            return stale + adu(tid, unit, reply) + adu(tid + 0x2000, unit, reply)
        return adu(tid, unit, reply)

    def answer(self, pdu: bytes) -> bytes:
        """A healthy device's reply PDU."""
        fc = pdu[0] if pdu else 0
        if fc in (3, 4) and len(pdu) == 5:
            start, count = struct.unpack(">HH", pdu[1:5])
            regs = [self.registers.get(a) for a in range(start, start + count)]
            if not 1 <= count <= 125 or any(v is None for v in regs):
                return bytes([fc | 0x80, 2])
            return bytes([fc, 2 * count]) + struct.pack(f">{count}H", *regs)
        if fc == 6 and len(pdu) == 5:
            addr, value = struct.unpack(">HH", pdu[1:5])
            self.registers[addr] = value
            return pdu
        if fc == 16 and len(pdu) >= 6:
            addr, count = struct.unpack(">HH", pdu[1:5])
            values = struct.unpack(f">{count}H", pdu[6 : 6 + 2 * count])
            for i, v in enumerate(values):
                self.registers[addr + i] = v
            return pdu[:5]
        return bytes([(fc | 0x80) & 0xFF, 1])


def _reset(w: asyncio.StreamWriter) -> None:
    """Close with a TCP RST (SO_LINGER 0), not a FIN: a peer that crashed or was reset."""
    sock = w.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    w.transport.abort()
