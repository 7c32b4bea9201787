"""What a Modbus transaction comes to: the reply PDU or one of our own errors, and when.

Every layer of the stack speaks these, so the bus owner never sees a socket, pyserial or
pymodbus type and has one error channel to read:

    DeviceException(unit, function_code, code)   the device answered with an exception PDU
    NoResponse(unit, function_code, bad_frame)   nothing valid came back within the timeout
    EchoFailed(unit, function_code, echo)        rs485.echo: our frame did not come back intact
    NotConnected(endpoint, reason, kind)         the link is closed or cannot open; ``kind``:
                                                 the device-state reason
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from drivers.device_state import Reason
from drivers.rs485 import EchoError, EchoMismatch


class ModbusError(Exception):
    """Base of the stack's exceptions."""


class DeviceException(ModbusError):
    def __init__(self, unit: int, function_code: int, code: int) -> None:
        self.unit = unit
        self.function_code = function_code
        self.code = code
        super().__init__(f"unit {unit} FC{function_code:02d}: exception {code}")


class NoResponse(ModbusError):
    def __init__(self, unit: int, function_code: int, *, bad_frame: bool = False) -> None:
        self.unit = unit
        self.function_code = function_code
        self.bad_frame = bad_frame  # bytes arrived but never formed a valid reply for us
        what = "garbled reply" if bad_frame else "no response"
        super().__init__(f"unit {unit} FC{function_code:02d}: {what}")


class EchoFailed(NoResponse):
    """rs485.echo: our frame did not come back intact (drivers/rs485.py). A wrong echo counts
    as a bad frame, a missing one as silence; ``reason`` says which and shows both frames."""

    def __init__(self, unit: int, function_code: int, echo: EchoError) -> None:
        super().__init__(unit, function_code, bad_frame=isinstance(echo, EchoMismatch))
        self.echo = echo
        self.reason = echo.reason
        self.args = (f"unit {unit} FC{function_code:02d}: {echo.reason}",)


class NotConnected(ModbusError):
    def __init__(self, endpoint: str, reason: str, kind: Reason = Reason.RESET) -> None:
        self.endpoint = endpoint
        self.reason = reason
        self.kind = kind  # what it means for the devices behind it (drivers/device_state.py)
        super().__init__(f"{endpoint}: not connected ({reason})")


class Outcome:
    """One transaction: the reply PDU (function code first) or the error, with the monotonic
    send and receive times and the wall-clock receive time (s), the readings' timestamp."""

    __slots__ = ("end", "error", "pdu", "start", "wall")

    def __init__(
        self, pdu: bytes | None, error: ModbusError | None, start: float, end: float
    ) -> None:
        self.pdu = pdu
        self.error = error
        self.start = start
        self.end = end
        self.wall = time.time()

    @property
    def wall_ms(self) -> int:
        return int(self.wall * 1000)

    def reply(self) -> bytes:
        """The reply PDU, or raise the transaction's error."""
        if self.error is not None:
            raise self.error
        assert self.pdu is not None
        return self.pdu


MAX_SILENT = 2  # timeouts in a row after which a stream connection is closed and reopened


@dataclass(frozen=True, slots=True)
class Expiry:
    """What a timeout of the request in flight means for the link (the framings decide it):
    ``close`` the connection or keep it; ``bad_frame``: bytes came, but no valid reply."""

    close: bool
    why: str
    bad_frame: bool
