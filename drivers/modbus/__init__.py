"""Modbus driver: pure codec and read planner (no I/O) plus the bus adapter (I/O side)."""

from __future__ import annotations

from drivers.modbus.codec import CodecError, decode_point, encode_point, registers_for
from drivers.modbus.planner import (
    PlanError,
    ReadRequest,
    plan_reads,
    plan_wire_time,
    wire_time,
)

__all__ = [
    "CodecError",
    "PlanError",
    "ReadRequest",
    "decode_point",
    "encode_point",
    "plan_reads",
    "plan_wire_time",
    "registers_for",
    "wire_time",
]
