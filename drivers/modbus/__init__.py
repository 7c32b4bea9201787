"""Modbus driver: the session under the bus owner (``session.py``) over one stack of layers,
each testable alone: PDUs (``pdu.py``), framings (``mbap.py``, ``rtu.py``, sans-I/O), the I/O
shells (``mbap_io.py``, ``line.py``) and the clients (``client.py``, ``adapter.py``); the codec
and read planner are pure too. docs/DESIGN.md, "The Modbus stack and the bus owner"."""

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
