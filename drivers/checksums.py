"""Checksums of the serial framings: Modbus RTU (``drivers/modbus/rtu.py``) and the
profile-defined serial protocols (``drivers/serial/framing.py``) share these."""

from __future__ import annotations


def sum8(data: bytes) -> int:
    return sum(data) & 0xFF


def xor8(data: bytes) -> int:
    x = 0
    for b in data:
        x ^= b
    return x


def _crc_table(poly: int, reflected: bool) -> tuple[int, ...]:
    table = []
    for i in range(256):
        if reflected:
            c = i
            for _ in range(8):
                c = (c >> 1) ^ poly if c & 1 else c >> 1
        else:
            c = i << 8
            for _ in range(8):
                c = ((c << 1) ^ poly) if c & 0x8000 else c << 1
        table.append(c & 0xFFFF)
    return tuple(table)


# CRC-16/MODBUS: poly 0x8005 reflected (0xA001), init 0xFFFF, no xorout; check("123456789")=0x4B37
_MODBUS = _crc_table(0xA001, reflected=True)
# CRC-16/CCITT-FALSE (a.k.a. CRC-16/IBM-3740): poly 0x1021, init 0xFFFF, not reflected, no
# xorout; check("123456789") = 0x29B1. The variant most vendor manuals mean by "CRC-CCITT".
_CCITT = _crc_table(0x1021, reflected=False)


def crc16_modbus(data: bytes | bytearray) -> int:
    crc = 0xFFFF
    for b in data:
        crc = (crc >> 8) ^ _MODBUS[(crc ^ b) & 0xFF]
    return crc


def crc16_ccitt(data: bytes) -> int:
    crc = 0xFFFF
    for b in data:
        crc = ((crc << 8) & 0xFFFF) ^ _CCITT[((crc >> 8) ^ b) & 0xFF]
    return crc
