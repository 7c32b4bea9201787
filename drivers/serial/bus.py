"""SerialBus: the bus owner of a non-Modbus serial line (or serial server connection).

The skeleton every bus kind shares (``drivers/owner.py``: schedule with per-point intervals,
writes ahead of polls, probes and device state, reconnects, reporting; the same statuses and
log lines as a Modbus bus) with the serial protocol session under it
(``drivers/serial/session.py``).
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Sequence

from drivers.base import DeviceBinding, Emit, StateListener, no_listener
from drivers.core.config import BusConfig
from drivers.core.reading import now_ms
from drivers.owner import BusOwner
from drivers.serial.session import SerialDevice, SerialSession


class SerialBus(BusOwner[SerialDevice]):
    def __init__(
        self,
        bus: BusConfig,
        devices: Sequence[DeviceBinding],
        emit: Emit,
        *,
        quarantine_min: float = 1.0,
        reconnect_min: float = 0.5,
        reconnect_max: float = 10.0,
        rng: random.Random | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall_ms: Callable[[], int] = now_ms,
        on_state: StateListener = no_listener,
    ) -> None:
        super().__init__(
            bus,
            devices,
            emit,
            SerialSession(bus, clock=clock, wall_ms=wall_ms),
            quarantine_min=quarantine_min,
            reconnect_min=reconnect_min,
            reconnect_max=reconnect_max,
            rng=rng,
            clock=clock,
            wall_ms=wall_ms,
            on_state=on_state,
        )
