"""ModbusBus: the bus owner of a Modbus bus (implements drivers.base.BusDriver).

The skeleton every bus kind shares (``drivers/owner.py``: schedule, writes ahead of polls,
reconnects, device state, reporting) with the Modbus session under it
(``drivers/modbus/session.py``: plans, batches, retries, exploration of rejected reads,
writes). The layers below the session, each testable alone:

    session.py   what a poll or a write sends, and what the replies mean
    adapter.py   the client of the bus: ``transact`` ("read these groups") on every endpoint
    mbap_io.py   Modbus TCP bytes on the I/O thread      line.py   serial lines on the loop
    mbap.py      MBAP framing and transaction pairing    rtu.py    RTU / ASCII framing
    pdu.py       requests built, replies checked and parsed (every transport)
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from drivers.base import DeviceBinding, Emit, StateListener, no_listener
from drivers.core.config import BusConfig
from drivers.modbus.device import DeviceState
from drivers.modbus.session import ModbusSession
from drivers.owner import BusOwner


class ModbusBus(BusOwner[DeviceState]):
    def __init__(
        self,
        bus: BusConfig,
        devices: Sequence[DeviceBinding],
        emit: Emit,
        *,
        quarantine_min: float = 1.0,
        reconnect_min: float = 0.5,
        reconnect_max: float = 10.0,
        reprobe_min: float = 60.0,
        reprobe_max: float = 3600.0,
        rng: random.Random | None = None,
        on_state: StateListener = no_listener,
    ) -> None:
        super().__init__(
            bus,
            devices,
            emit,
            ModbusSession(bus, reprobe_min=reprobe_min, reprobe_max=reprobe_max),
            quarantine_min=quarantine_min,
            reconnect_min=reconnect_min,
            reconnect_max=reconnect_max,
            rng=rng,
            on_state=on_state,
        )
