"""Shared spec builders for the serial driver tests (imported by test modules)."""

from __future__ import annotations

from drivers.serial.spec import SerialSpec
from tests.drivers.serial.serial_harness import PROFILE_OF, load_profile


def ascii_spec() -> SerialSpec:
    spec = load_profile(PROFILE_OF["serial"]).serial
    assert spec is not None
    return spec


def binary_spec(kind: str = "length_prefix") -> SerialSpec:
    """A binary controller: request AA addr 01 + CRC-16/Modbus; reply AA len addr level temp."""
    framing = (
        {
            "kind": "length_prefix",
            "start": "\xaa",
            "length_offset": 1,
            "length_adjust": 0,
            "max_length": 64,
        }
        if kind == "length_prefix"
        else {"kind": "fixed", "start": "\xaa", "length": 9}
    )
    return SerialSpec.model_validate(
        {
            "mode": "binary",
            "framing": framing,
            "checksum": {"kind": "crc16_modbus", "byte_order": "little"},
            "address_field": "addr",
            "reads": [
                {
                    "request": "AA {addr:02X} 01",
                    "struct": ">xBBHh",
                    "fields": ["_", "addr", "level", "temp"],
                }
            ],
            "writes": [
                {
                    "point": "level",
                    "request": "AA {addr:02X} 02 {value:04X}",
                    "ack": "AA {addr:02X} 06",
                }
            ],
        }
    )
