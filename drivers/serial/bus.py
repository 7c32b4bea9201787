"""SerialBus: the bus owner of a non-Modbus serial line (or serial server connection).

The skeleton every bus kind shares (``drivers/owner.py``: schedule with per-point intervals,
writes ahead of polls, probes and device state, reconnects, reporting; the same statuses and
log lines as a Modbus bus) with the serial protocol session under it
(``drivers/serial/session.py``).
"""

from __future__ import annotations

from collections.abc import Callable

from drivers.core.config import BusConfig
from drivers.owner import BusOwner
from drivers.serial.session import SerialDevice, SerialSession


class SerialBus(BusOwner[SerialDevice]):
    def new_session(
        self, bus: BusConfig, clock: Callable[[], float], wall_ms: Callable[[], int]
    ) -> SerialSession:
        return SerialSession(bus, clock=clock, wall_ms=wall_ms)
