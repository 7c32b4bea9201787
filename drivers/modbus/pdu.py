"""Modbus PDUs, sans-I/O: requests built, replies checked and parsed, for every transport.

The one place that knows the application protocol (Modbus Application Protocol V1.1b3): the
function codes a master uses (1-6, 15, 16, sections 6.1-6.6, 6.11, 6.12), exception replies
(section 7) and the length of every reply. MBAP (``mbap.py``) and RTU / ASCII (``rtu.py``)
only add a header or a checksum around these bytes; the bus owner's session
(``session.py``) turns a reply into registers, bits or a typed error here.

A reply that does not fit its request (another function code, a byte count that is not the
one asked for, a write answer that is not the echo the spec prescribes, an exception reply of
the wrong length) is a bad frame, ``NoResponse(bad_frame=True)``: the device answered, but
nothing usable arrived. The frame boundaries were fine, so the link stays open.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence

from drivers.core.profile import Table
from drivers.modbus.results import DeviceException, NoResponse

READ_COILS, READ_DISCRETE, READ_HOLDING, READ_INPUT = 1, 2, 3, 4
WRITE_COIL, WRITE_REGISTER, WRITE_COILS, WRITE_REGISTERS = 5, 6, 15, 16
READ_FC: dict[Table, int] = {
    Table.COIL: READ_COILS,
    Table.DISCRETE: READ_DISCRETE,
    Table.HOLDING: READ_HOLDING,
    Table.INPUT: READ_INPUT,
}
# quantities per request (sections 6.1-6.4, 6.11, 6.12)
MAX_BITS, MAX_REGISTERS = 2000, 125
MAX_WRITE_BITS, MAX_WRITE_REGISTERS = 1968, 123

# exception codes (section 7) the bus owner reacts to
ILLEGAL_FUNCTION, ILLEGAL_ADDRESS, ILLEGAL_VALUE = 1, 2, 3
DEVICE_BUSY = 6
GATEWAY_PATH_UNAVAILABLE, GATEWAY_TARGET_FAILED = 10, 11
SPAN_REJECTED = frozenset({ILLEGAL_FUNCTION, ILLEGAL_ADDRESS, ILLEGAL_VALUE})

_REQ = struct.Struct(">BHH")  # function code, address, quantity or value
_REGS: dict[int, struct.Struct] = {}  # register count -> its unpacker (the hot path)


# --- requests -------------------------------------------------------------------------------
def read(table: Table, start: int, count: int) -> bytes:
    """FC01-FC04 for ``count`` bits or registers from ``start``."""
    fc = READ_FC[table]
    top = MAX_BITS if fc <= READ_DISCRETE else MAX_REGISTERS
    if not 1 <= count <= top or not 0 <= start <= 0xFFFF or start + count > 0x10000:
        raise ValueError(f"FC{fc:02d} of {count} from {start}: outside 1..{top} or 0..65535")
    return _REQ.pack(fc, start, count)


def write_register(address: int, value: int) -> bytes:
    """FC06; some devices refuse FC16 for a single register."""
    return _REQ.pack(WRITE_REGISTER, address, value & 0xFFFF)


def write_registers(address: int, values: Sequence[int]) -> bytes:
    """FC16."""
    n = len(values)
    if not 1 <= n <= MAX_WRITE_REGISTERS:
        raise ValueError(f"FC16 of {n} registers: outside 1..{MAX_WRITE_REGISTERS}")
    head = _REQ.pack(WRITE_REGISTERS, address, n) + bytes((2 * n,))
    return head + struct.pack(f">{n}H", *(v & 0xFFFF for v in values))


def write_coil(address: int, value: bool) -> bytes:
    """FC05: 0xFF00 is on, 0x0000 off (section 6.5)."""
    return _REQ.pack(WRITE_COIL, address, 0xFF00 if value else 0)


def write_coils(address: int, values: Sequence[bool]) -> bytes:
    """FC15; the first coil is the least significant bit of the first data byte."""
    n = len(values)
    if not 1 <= n <= MAX_WRITE_BITS:
        raise ValueError(f"FC15 of {n} coils: outside 1..{MAX_WRITE_BITS}")
    data = bytearray((n + 7) // 8)
    for i, v in enumerate(values):
        if v:
            data[i // 8] |= 1 << (i % 8)
    return _REQ.pack(WRITE_COILS, address, n) + bytes((len(data),)) + bytes(data)


# --- replies --------------------------------------------------------------------------------
def expected_length(request: bytes) -> int:
    """The length of the normal reply PDU to ``request`` (sizes the serial timeouts)."""
    fc = request[0]
    if fc in _COUNTED:
        count = request[4] | request[3] << 8
        return 2 + ((count + 7) // 8 if fc <= READ_DISCRETE else 2 * count)
    return 5


def reply_length(head: bytes | bytearray) -> int:
    """The length of the reply PDU that starts with ``head`` (its first bytes as they come
    in): 0 when ``head`` cannot start a reply of ours, -1 when one more byte (the byte count)
    is needed. The serial framings need it: RTU frames carry no length of their own."""
    fc = head[0]
    if fc & 0x80:
        return 2 if fc & 0x7F in _KNOWN else 0
    if fc in _FIXED:
        return 5
    if fc in _COUNTED:
        if len(head) < 2:
            return -1
        return 2 + head[1]
    return 0


_FIXED = frozenset({WRITE_COIL, WRITE_REGISTER, WRITE_COILS, WRITE_REGISTERS})
_COUNTED = frozenset({READ_COILS, READ_DISCRETE, READ_HOLDING, READ_INPUT})
_KNOWN = _FIXED | _COUNTED


def parse(unit: int, request: bytes, reply: bytes) -> list[int] | list[bool]:
    """Check ``reply`` against ``request``. The registers or bits of a read, ``[]`` for a
    write (its answer only confirms it); raises DeviceException for an exception reply and
    NoResponse(bad_frame=True) for a reply that does not fit the request."""
    fc = request[0]
    if not reply or reply[0] != fc:
        if reply[:1] == bytes((fc | 0x80,)) and len(reply) == 2:
            raise DeviceException(unit, fc, reply[1])
        raise NoResponse(unit, fc, bad_frame=True)
    if fc in (READ_HOLDING, READ_INPUT):
        count = request[4] | request[3] << 8
        if len(reply) != 2 + 2 * count or reply[1] != 2 * count:
            raise NoResponse(unit, fc, bad_frame=True)
        unpack = _REGS.get(count)
        if unpack is None:
            unpack = _REGS[count] = struct.Struct(f">{count}H")
        return list(unpack.unpack_from(reply, 2))
    if fc in (READ_COILS, READ_DISCRETE):
        count = request[4] | request[3] << 8
        n = (count + 7) // 8
        if len(reply) != 2 + n or reply[1] != n:
            raise NoResponse(unit, fc, bad_frame=True)
        # the first bit asked for is the least significant bit of the first data byte
        return [bool(reply[2 + i // 8] >> (i % 8) & 1) for i in range(count)]
    # FC05 / FC06 answer with a copy of the request, FC15 / FC16 with its first five bytes
    if reply != (request if fc in (WRITE_COIL, WRITE_REGISTER) else request[:5]):
        raise NoResponse(unit, fc, bad_frame=True)
    return []
