"""Checksums and the profile-defined (generic) framing/parsing, without I/O."""

from __future__ import annotations

import struct

import pytest
from pydantic import ValidationError

from drivers.checksums import crc16_ccitt, crc16_modbus, sum8, xor8
from drivers.serial.framing import encode_checksum
from drivers.serial.generic import DeviceNak, GenericCodec, ParseError
from drivers.serial.spec import SerialSpec
from tests.drivers.serial.serial_specs import ascii_spec, binary_spec


def test_crc_check_values() -> None:
    # Catalogue check values (reveng CRC catalogue): CRC-16/MODBUS and CRC-16/IBM-3740
    # (CCITT-FALSE) of the ASCII string "123456789".
    assert crc16_modbus(b"123456789") == 0x4B37
    assert crc16_ccitt(b"123456789") == 0x29B1
    # A Modbus RTU request with its CRC on the wire (low byte first): 01 03 00 00 00 0A C5 CD
    assert encode_checksum(
        "crc16_modbus", bytes.fromhex("01030000000A"), "binary", "little"
    ) == bytes.fromhex("C5CD")
    assert sum8(b"\x01\x00\x04\x3f\x00") == 0x44
    # the textbook NMEA sentence (XOR between '$' and '*'): $GPGGA,...,M,,*47
    nmea = b"GPGGA,123519,4807.038,N,01131.000,E,1,08,0.9,545.4,M,46.9,M,,"
    assert xor8(nmea) == 0x47
    assert encode_checksum("xor8", b"01RD", "hex", "big") == b"17"


def test_ascii_request_and_response() -> None:
    codec = GenericCodec(ascii_spec())
    read = codec.spec.reads[0]
    assert codec.read_request(read, 1) == b"#01RD*17\r"
    d = codec.deframer()
    wire = b"!01,DIM=040,PWR=0025.2,V=230.1,ST=0,E=001234.51*0E\r"
    # byte by byte: nothing until the terminator, then the body without checksum/terminator
    for b in wire[:-1]:
        assert d.feed(bytes((b,))) is None
    body = d.feed(wire[-1:])
    assert body == wire[:-4]
    fields = codec.parse(read, body)
    assert fields["dim"] == "040" and fields["pwr"] == "0025.2" and codec.addressed_to(fields, 1)
    assert not codec.addressed_to(fields, 2)
    assert d.bad == 0


def test_ascii_resync_after_noise_partial_and_bad_checksum() -> None:
    codec = GenericCodec(ascii_spec())
    good = b"!02,DIM=050,PWR=0031.2,V=230.1,ST=0,E=001234.51*"
    good += f"{xor8(good[1:-1]):02X}\r".encode()
    bad_cs = good[:-3] + b"00\r"
    stream = b"\x00\xffnoise" + b"!01,DIM=0" + bad_cs + b"junk" + good
    d = codec.deframer()
    body = d.feed(stream)
    assert body == good[:-4]
    assert d.bad >= 2  # noise run, the cut frame/bad checksum
    with pytest.raises(ParseError):
        codec.parse(codec.spec.reads[0], b"!01,WHAT")


@pytest.mark.parametrize("kind", ["fixed", "length_prefix"])
def test_binary_struct_frames(kind: str) -> None:
    spec = binary_spec(kind)
    codec = GenericCodec(spec)
    read = spec.reads[0]
    req = codec.read_request(read, 7)
    assert req[:3] == bytes.fromhex("AA0701") and len(req) == 5
    assert req[3:] == crc16_modbus(req[:3]).to_bytes(2, "little")
    # AA len addr level temp + CRC: 9 bytes; the fixed variant ignores the len byte
    body = b"\xaa" + struct.pack(">BBHh", 9 if kind == "length_prefix" else 0, 7, 1234, -56)
    frame = body + crc16_modbus(body).to_bytes(2, "little")
    d = codec.deframer()
    got = d.feed(b"\x55\xaa\x01" + frame[:4])
    assert got is None
    got = d.feed(frame[4:])
    assert got == body and d.bad == 2  # the 0x55 junk, the false start AA 01
    fields = codec.parse(read, got)
    assert fields == {"addr": 7, "level": 1234, "temp": -56}
    broken = frame[:-1] + bytes(((frame[-1] + 1) & 0xFF,))
    d2 = codec.deframer()
    assert d2.feed(broken + frame) == body
    assert d2.bad == 1


def test_spec_validation_errors() -> None:
    base = ascii_spec().model_dump()
    with pytest.raises(ValidationError, match="exactly one of"):
        SerialSpec.model_validate({**base, "reads": [{"request": "#{addr:02d}RD"}]})
    with pytest.raises(ValidationError, match="bad regex"):
        SerialSpec.model_validate({**base, "reads": [{"request": "x", "regex": "(?P<a"}]})
    with pytest.raises(ValidationError, match="only use"):
        SerialSpec.model_validate({**base, "reads": [{"request": "{bogus}", "regex": "x"}]})
    with pytest.raises(ValidationError, match="3 items but 2"):
        SerialSpec.model_validate(
            {
                **base,
                "mode": "binary",
                "reads": [{"request": "01", "struct": ">BBB", "fields": ["a", "b"]}],
            }
        )
    with pytest.raises(ValidationError, match="invalid hex"):
        SerialSpec.model_validate(
            {
                **base,
                "mode": "binary",
                "reads": [{"request": "ZZ", "struct": ">B", "fields": ["a"]}],
            }
        )
    with pytest.raises(ValidationError, match="needs 'terminator'"):
        SerialSpec.model_validate({**base, "framing": {"kind": "terminator"}})


def test_write_commands_and_acks() -> None:
    codec = GenericCodec(binary_spec())
    cmd = codec.spec.writes[0]
    req = codec.write_request(cmd, 7, 0x1234)
    assert req[:5] == bytes.fromhex("AA 07 02 12 34")
    assert req[5:] == crc16_modbus(req[:5]).to_bytes(2, "little")
    assert codec.check_ack(cmd, bytes.fromhex("AA 07 06"), 7, 0x1234)
    assert not codec.check_ack(cmd, bytes.fromhex("AA 08 06"), 7, 0x1234)

    text = GenericCodec(ascii_spec())
    dim = text.spec.writes[0]
    assert (
        text.write_request(dim, 12, 70)
        == b"#12DIM070*" + f"{xor8(b'12DIM070'):02X}".encode() + b"\r"
    )
    assert text.check_ack(dim, b"!12,OK", 12, 70)
    assert not text.check_ack(dim, b"!13,OK", 12, 70)  # another unit's ack is not ours
    with pytest.raises(DeviceNak) as exc:
        text.check_ack(dim, b"!12,ERR2", 12, 70)
    assert exc.value.code == "2"
