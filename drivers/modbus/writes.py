"""Write jobs queued to the bus owner, and the checks made before anything goes on the wire."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from drivers.base import WriteResult
from drivers.core.profile import Point, Table
from drivers.core.reading import Value


def read_only_reason(point: Point) -> str | None:
    """Why ``point`` cannot be written, or None. Only coils (FC05) and holding registers
    (FC06/FC16) are writable in Modbus; input registers and discrete inputs never are."""
    if not point.writable:
        return f"point '{point.name}' is not writable"
    if point.table not in (Table.COIL, Table.HOLDING):
        return f"point '{point.name}' is in the read-only {point.table.value} table"
    return None


@dataclass
class WriteJob:
    device_id: str
    point: Point
    value: Value  # as requested (bit points are re-encoded against the current word)
    encoded: list[int] | bool
    future: asyncio.Future[WriteResult]
    started: bool = False  # the owner took it off the queue and put it on the wire
    cancelled: bool = False  # the caller gave up; the owner skips it if not started

    def finish(self, result: WriteResult) -> None:
        if not self.future.done():
            self.future.set_result(result)
