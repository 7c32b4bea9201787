"""drivers/modbus/pdu.py as byte tables: requests against the spec's examples and pymodbus'
encoder, replies checked against their requests (Modbus Application Protocol V1.1b3)."""

from __future__ import annotations

import pytest
from pymodbus.pdu import bit_message as pb
from pymodbus.pdu import register_message as pr

from drivers.core.profile import Table
from drivers.modbus import pdu
from drivers.modbus.results import DeviceException, NoResponse

H = bytes.fromhex

# (case, request built here, the spec's example bytes)
REQUESTS = [
    ("FC01 coils 20-38 (6.1)", pdu.read(Table.COIL, 19, 19), H("01 0013 0013")),
    ("FC02 inputs 197-218 (6.2)", pdu.read(Table.DISCRETE, 196, 22), H("02 00C4 0016")),
    ("FC03 registers 108-110 (6.3)", pdu.read(Table.HOLDING, 107, 3), H("03 006B 0003")),
    ("FC04 register 9 (6.4)", pdu.read(Table.INPUT, 8, 1), H("04 0008 0001")),
    ("FC05 coil 173 on (6.5)", pdu.write_coil(172, True), H("05 00AC FF00")),
    ("FC05 off", pdu.write_coil(172, False), H("05 00AC 0000")),
    ("FC06 register 2 = 3 (6.6)", pdu.write_register(1, 3), H("06 0001 0003")),
    (
        "FC15 coils 20-29 (6.11)",
        pdu.write_coils(19, [bool(int(b)) for b in "1011001110"]),
        H("0F 0013 000A 02 CD 01"),
    ),
    (
        "FC16 registers 2-3 (6.12)",
        pdu.write_registers(1, [0x000A, 0x0102]),
        H("10 0001 0002 04 000A 0102"),
    ),
]


@pytest.mark.parametrize(("built", "wire"), [r[1:] for r in REQUESTS], ids=[r[0] for r in REQUESTS])
def test_requests_are_the_specs_bytes(built: bytes, wire: bytes) -> None:
    assert built == wire


def test_requests_match_pymodbus_encoder() -> None:
    ours_theirs = [
        (pdu.read(Table.HOLDING, 0, 10), pr.ReadHoldingRegistersRequest(address=0, count=10)),
        (pdu.read(Table.INPUT, 5, 2), pr.ReadInputRegistersRequest(address=5, count=2)),
        (pdu.read(Table.COIL, 19, 10), pb.ReadCoilsRequest(address=19, count=10)),
        (pdu.read(Table.DISCRETE, 3, 9), pb.ReadDiscreteInputsRequest(address=3, count=9)),
        (pdu.write_register(1, 7), pr.WriteSingleRegisterRequest(address=1, registers=[7])),
        (
            pdu.write_registers(1, [0xABCD, 1]),
            pr.WriteMultipleRegistersRequest(address=1, registers=[0xABCD, 1]),
        ),
        (pdu.write_coil(5, True), pb.WriteSingleCoilRequest(address=5, bits=[True])),
        (
            pdu.write_coils(19, [True, False, True, True, False, False, True, True, True, False]),
            pb.WriteMultipleCoilsRequest(
                address=19, bits=[True, False, True, True, False, False, True, True, True, False]
            ),
        ),
    ]
    for ours, theirs in ours_theirs:
        assert ours == bytes((theirs.function_code,)) + theirs.encode()


@pytest.mark.parametrize(
    ("table", "start", "count"),
    [
        (Table.HOLDING, 0, 0),
        (Table.HOLDING, 0, 126),
        (Table.COIL, 0, 2001),
        (Table.INPUT, 65535, 2),
    ],
)
def test_quantities_outside_the_spec_are_refused(table: Table, start: int, count: int) -> None:
    with pytest.raises(ValueError, match="outside"):
        pdu.read(table, start, count)


# (case, request, reply, what parse returns)
GOOD = [
    (
        "FC03 three registers",
        pdu.read(Table.HOLDING, 107, 3),
        H("03 06 022B 0000 0064"),
        [555, 0, 100],
    ),
    ("FC04", pdu.read(Table.INPUT, 8, 1), H("04 02 000A"), [10]),
    (
        "FC01 19 coils, LSB first",
        pdu.read(Table.COIL, 19, 19),
        H("01 03 CD 6B 05"),
        [bool(int(b)) for b in "1011001111010110101"],
    ),
    ("FC02 bits padded", pdu.read(Table.DISCRETE, 0, 3), H("02 01 05"), [True, False, True]),
    ("FC05 echoes", pdu.write_coil(172, True), H("05 00AC FF00"), []),
    ("FC06 echoes", pdu.write_register(1, 3), H("06 0001 0003"), []),
    ("FC16 answers five bytes", pdu.write_registers(1, [10, 258]), H("10 0001 0002"), []),
    ("FC15 answers five bytes", pdu.write_coils(19, [True] * 10), H("0F 0013 000A"), []),
]


@pytest.mark.parametrize(
    ("request_", "reply", "want"), [g[1:] for g in GOOD], ids=[g[0] for g in GOOD]
)
def test_replies_are_parsed(request_: bytes, reply: bytes, want: list[object]) -> None:
    assert pdu.parse(7, request_, reply) == want


# (case, request, reply): each a reply that does not fit its request
BAD = [
    ("byte count says 4, one register asked", pdu.read(Table.HOLDING, 0, 1), H("03 04 0001 0002")),
    ("byte count right, data short", pdu.read(Table.HOLDING, 0, 2), H("03 04 0001")),
    ("truncated data", pdu.read(Table.HOLDING, 0, 1), H("03 02 00")),
    ("another function code", pdu.read(Table.HOLDING, 0, 1), H("04 02 0001")),
    ("exception PDU without its code", pdu.read(Table.HOLDING, 0, 1), H("83")),
    ("exception of another function", pdu.read(Table.HOLDING, 0, 1), H("84 02")),
    ("exception PDU too long", pdu.read(Table.HOLDING, 0, 1), H("83 02 00")),
    ("empty", pdu.read(Table.HOLDING, 0, 1), b""),
    ("coil byte count", pdu.read(Table.COIL, 0, 9), H("01 01 FF")),
    ("FC06 echo of another value", pdu.write_register(1, 3), H("06 0001 0004")),
    ("FC05 echo of another coil", pdu.write_coil(1, True), H("05 0002 FF00")),
    ("FC16 answer for another count", pdu.write_registers(1, [1, 2]), H("10 0001 0003")),
]


@pytest.mark.parametrize(("request_", "reply"), [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_a_reply_that_does_not_fit_is_a_bad_frame(request_: bytes, reply: bytes) -> None:
    with pytest.raises(NoResponse) as info:
        pdu.parse(7, request_, reply)
    assert info.value.bad_frame and info.value.unit == 7
    assert info.value.function_code == request_[0]


@pytest.mark.parametrize("code", [1, 2, 3, 4, 6, 10, 11])
def test_exception_replies(code: int) -> None:
    with pytest.raises(DeviceException) as info:
        pdu.parse(9, pdu.read(Table.INPUT, 0, 2), bytes((0x84, code)))
    assert (info.value.unit, info.value.function_code, info.value.code) == (9, 4, code)


# (first bytes of a reply as they arrive, the PDU length they announce)
LENGTHS = [
    (H("03"), -1),  # the byte count is still to come
    (H("03 06"), 8),
    (H("01 03"), 5),
    (H("83"), 2),
    (H("90"), 2),  # FC16 exception
    (H("06"), 5),
    (H("10"), 5),
    (H("0F"), 5),
    (H("05"), 5),
    (H("2B"), 0),  # not a function code this master uses
    (H("AB"), 0),
    (H("00"), 0),
]


@pytest.mark.parametrize(("head", "length"), LENGTHS, ids=[h.hex() for h, _ in LENGTHS])
def test_reply_length_from_its_first_bytes(head: bytes, length: int) -> None:
    assert pdu.reply_length(head) == length


def test_expected_length_of_the_normal_reply() -> None:
    assert pdu.expected_length(pdu.read(Table.HOLDING, 0, 10)) == 22
    assert pdu.expected_length(pdu.read(Table.COIL, 0, 10)) == 4
    assert pdu.expected_length(pdu.write_registers(0, [1, 2, 3])) == 5
