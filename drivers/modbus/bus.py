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

from collections.abc import Callable, Sequence
from typing import Unpack

from drivers.base import DeviceBinding, Emit
from drivers.core.config import BusConfig
from drivers.modbus.device import DeviceState
from drivers.modbus.session import ModbusSession
from drivers.owner import BusOwner, OwnerOptions


class ModbusBus(BusOwner[DeviceState]):
    def __init__(
        self,
        bus: BusConfig,
        devices: Sequence[DeviceBinding],
        emit: Emit,
        *,
        reprobe_min: float = 60.0,
        reprobe_max: float = 3600.0,
        **options: Unpack[OwnerOptions],
    ) -> None:
        self._reprobe = (reprobe_min, reprobe_max)  # a rejected span's re-probe backoff
        super().__init__(bus, devices, emit, **options)

    def new_session(
        self, bus: BusConfig, clock: Callable[[], float], wall_ms: Callable[[], int]
    ) -> ModbusSession:
        return ModbusSession(bus, reprobe_min=self._reprobe[0], reprobe_max=self._reprobe[1])
