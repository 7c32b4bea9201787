"""The Modbus client of one bus: the same calls on every endpoint kind.

    tcp://host:502        TcpClient: MBAP (``mbap.py``), bytes moved by the I/O thread
                          (``mbap_io.py``)
    rtu:///dev/ttyUSB0    LineClient (``line.py``): RTU or ASCII framing (``rtu.py``) over a
    ascii:///dev/ttyS1    serial port, or over a serial server's TCP connection (RTU over
    rtu+tcp://host:4001   TCP), through ``drivers/link.py``

Every client offers ``transact(requests)``: "read these groups". The session hands it the
request PDUs of a whole tick, ``(unit, pdu)`` one after the other, and gets one ``Outcome``
per request sent, in order. The batch stops at the first timeout or lost link (that outcome
holds the error; the session decides what to retry), or after the request in flight when
``cut()`` is called (a write is waiting). On TCP the batch runs on the I/O thread, one request
in flight at a time; on a serial line it runs on the loop, one frame at a time, with the
inter-frame gap the line needs. PDUs are built and replies checked by ``pdu.py`` in the
session, one place for every transport; ``read``, ``write_registers`` and ``write_coil`` are
the same thing for one request (``cityedge scan``, tests).

pymodbus is not on this path any more (docs/DESIGN.md, "The Modbus stack"): its client layer
cost more CPU per request than the rest of the agent, needed three error channels folded
into ours and hooks into its protocol for the RS-485 echo. It serves the simulators
(``drivers/sim``) and the tests as the real peer every client here is checked against.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol

from drivers.core.endpoint import Endpoint
from drivers.core.profile import Table
from drivers.modbus.client import TcpClient, inter_frame_gap, response_timeout
from drivers.modbus.line import LineClient
from drivers.modbus.results import (
    DeviceException,
    EchoFailed,
    ModbusError,
    NoResponse,
    NotConnected,
    Outcome,
)

if TYPE_CHECKING:
    from drivers.core.config import Rs485Config

__all__ = [
    "DeviceException",
    "EchoFailed",
    "ModbusClient",
    "ModbusError",
    "NoResponse",
    "NotConnected",
    "Outcome",
    "inter_frame_gap",
    "modbus_client",
    "response_timeout",
]


class ModbusClient(Protocol):
    """One client for one physical bus. Not reentrant: the bus owner serializes."""

    url: str

    @property
    def connected(self) -> bool: ...

    async def connect(self, timeout: float) -> None:
        """Open the link; NotConnected (with the device-state reason) if it cannot."""

    def close(self) -> None: ...

    async def transact(
        self, requests: Sequence[tuple[int, bytes]], timeout: float | None = None
    ) -> list[Outcome]:
        """Send ``(unit, request PDU)`` one after the other; one outcome per request sent.
        ``timeout``: per request (None: the bus's, or sized from each frame on a serial
        line). NotConnected if the link is closed when called."""

    def cut(self) -> None:
        """End a running ``transact`` after its request in flight."""

    async def read(
        self, table: Table, start: int, count: int, unit: int, timeout: float
    ) -> list[int] | list[bool]: ...

    async def write_registers(
        self, unit: int, address: int, values: Sequence[int], timeout: float
    ) -> None:
        """FC06 for one register, FC16 otherwise (some devices refuse FC16 for one register)."""

    async def write_coil(self, unit: int, address: int, value: bool, timeout: float) -> None: ...


def modbus_client(
    endpoint: Endpoint,
    timeout: float | None,
    rs485: Rs485Config | None = None,
    *,
    gap: float | None = None,
) -> ModbusClient:
    """The client for ``endpoint``. ``timeout``: per request (None: sized per frame on serial
    lines, 1 s on TCP); ``rs485``: the line's options (echo, kernel RS-485 mode); ``gap``: the
    inter-frame silence (None: what the baud rate needs)."""
    if endpoint.scheme == "tcp":
        return TcpClient(endpoint, timeout)
    if endpoint.scheme in ("rtu+tcp", "rtu", "ascii"):
        return LineClient(endpoint, timeout, rs485, inter_frame_gap(endpoint, gap))
    raise ValueError(f"not a Modbus endpoint: {endpoint.url}")
