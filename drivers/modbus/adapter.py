"""The one module that talks to pymodbus (pinned ``>=3.16.1,<3.17``; see LIBRARY-NOTES.md).

Modbus TCP (``tcp://``) goes through ``drivers/modbus/mbap.py`` instead, our own seven-byte
framing: pymodbus' per-request overhead was the largest CPU cost of polling TCP devices, and a
TCP-only gateway then never imports pymodbus at all. Serial RTU / ASCII and RTU over TCP
(CRC, inter-frame timing, echo handling) stay with pymodbus, imported on first use.

pymodbus reports failures on three channels: a device exception is a *response* whose
``isError()`` is true, a missing answer raises ``ModbusIOException`` and a closed link raises
``ConnectionException``. This adapter folds them into our own exceptions with attributes so the
bus owner never sees a pymodbus type:

    DeviceException(unit, function_code, code)   the device answered with an exception PDU
    NoResponse(unit, function_code, bad_frame)   nothing valid came back within the timeout
    NotConnected(endpoint, reason, kind)         the port / socket is closed or cannot open;
                                                 ``kind``: the device-state reason

pymodbus' own retries and reconnect task are switched off (``retries=0``,
``reconnect_delay=0``): the bus owner retries only on timeout / busy and reconnects with its
own backoff, so one dead unit cannot burn 12 s of bus time in library retries.

Link supervision (issue 15): a TCP stream whose position is unknown is closed, so the bus
owner reconnects on a clean one. Modbus TCP does it in ``mbap_io`` (a partial frame older than
the timeout, ``MAX_SILENT`` timeouts in a row, a corrupt header); RTU over TCP does it here
(a garbled or partial reply, or ``MAX_SILENT`` timeouts in a row, close the connection).
"""

from __future__ import annotations

import asyncio
import gc
import logging
import struct
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Protocol

from drivers.core.endpoint import Endpoint
from drivers.core.profile import Table
from drivers.device_state import Reason, link_reason
from drivers.modbus.mbap import MbapClient, MbapClosed, MbapTimeout, Outcome
from drivers.modbus.mbap_io import MAX_SILENT
from drivers.rs485 import EchoCheck, EchoError, EchoMismatch, Rs485Unsupported, apply_kernel_mode

if TYPE_CHECKING:
    from drivers.core.config import Rs485Config

# Modbus exception codes (spec, section 7) the bus owner reacts to.
ILLEGAL_FUNCTION = 1
ILLEGAL_ADDRESS = 2
ILLEGAL_VALUE = 3
DEVICE_BUSY = 6
GATEWAY_PATH_UNAVAILABLE = 10
GATEWAY_TARGET_FAILED = 11
SPAN_REJECTED = frozenset({ILLEGAL_FUNCTION, ILLEGAL_ADDRESS, ILLEGAL_VALUE})


def exception_reason(code: int) -> tuple[Reason, str]:
    """The device-state reason of an exception reply to every read of a poll."""
    if code == GATEWAY_TARGET_FAILED:  # the gateway's device behind it is silent
        return Reason.TIMEOUT, "exception 11: the gateway's target device did not respond"
    if code == GATEWAY_PATH_UNAVAILABLE:
        return Reason.NO_ROUTE, "exception 10: gateway path unavailable"
    return Reason.EXCEPTION, f"exception {code} to every read"


# pymodbus logs every timeout at ERROR; here each failure becomes a typed exception that the bus
# owner counts and logs once per state change. Unless the application set a level for the
# "pymodbus" logger itself (after this import, or before it), keep the library quiet.
log = logging.getLogger(__name__)
_pymodbus_log = logging.getLogger("pymodbus")
if _pymodbus_log.level == logging.NOTSET:
    _pymodbus_log.setLevel(logging.CRITICAL)

DEFAULT_TCP_TIMEOUT = 1.0
TURNAROUND_MARGIN = 0.05  # device turnaround + USB-serial latency timer (FTDI: 16 ms default)
MAX_ADU_CHARS = 256 + 8  # longest RTU response + the request that triggered it


class ModbusError(Exception):
    """Base of the adapter's exceptions."""


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
        self.bad_frame = bad_frame  # bytes arrived but never formed a valid frame for us
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


def inter_frame_gap(endpoint: Endpoint, configured: float | None) -> float:
    """Silence kept between frames: 3.5 character times, but a fixed 1.75 ms above 19200 baud
    (Modbus over serial line V1.02, section 2.5.1.1). TCP peers need none."""
    if configured is not None:
        return configured
    if endpoint.scheme not in ("rtu", "ascii"):
        return 0.0
    if endpoint.baudrate > 19200:
        return 0.00175
    return 3.5 * endpoint.char_time


def response_timeout(
    endpoint: Endpoint, configured: float | None, chars: int | None = None
) -> float:
    """Timeout for one request: the configured one, else sized from the wire time of ``chars``
    characters (request + response; default the longest ADU) plus a turnaround margin."""
    if configured is not None:
        return configured
    if not endpoint.is_serial:
        return DEFAULT_TCP_TIMEOUT
    n = MAX_ADU_CHARS if chars is None else chars
    if endpoint.scheme == "ascii":
        n = 2 * n + 5  # two hex characters per byte, ':' and CRLF framing
    return max(0.1, n * endpoint.char_time + TURNAROUND_MARGIN)


class ModbusClient(Protocol):
    """One client for one physical bus. Not reentrant: the bus owner serializes."""

    @property
    def connected(self) -> bool: ...

    async def connect(self, timeout: float) -> None: ...

    def close(self) -> None: ...

    async def read(
        self, table: Table, start: int, count: int, unit: int, timeout: float
    ) -> list[int] | list[bool]: ...

    async def write_registers(
        self, unit: int, address: int, values: Sequence[int], timeout: float
    ) -> None:
        """FC06 for one register, FC16 otherwise (some devices refuse FC16 for one register)."""

    async def write_coil(self, unit: int, address: int, value: bool, timeout: float) -> None: ...

    # True: ``read_batch`` sends many reads at once (Modbus TCP only: a serial line needs the
    # bus owner's pacing between frames)
    batch_reads: bool

    async def read_batch(self, reads: Sequence[Read], timeout: float) -> list[Prefetched]:
        """Reads ``(table, start, count, unit)`` one after the other; one result per read
        sent. Stops after a timeout or a lost link (that read's result holds the error)."""

    def cut_batch(self) -> None:
        """End a running ``read_batch`` after its read in flight."""


Read = tuple[Table, int, int, int]  # table, start, count, unit


class Prefetched:
    """One read of a batch, as the bus owner consumes it later: ``values()`` returns the
    registers or bits, or raises what ``read`` would have raised."""

    __slots__ = ("_backend", "_outcome", "_read")

    def __init__(self, backend: _MbapBackend, read: Read, outcome: Outcome) -> None:
        self._backend = backend
        self._read = read
        self._outcome = outcome

    @property
    def start(self) -> float:
        return self._outcome.start

    @property
    def end(self) -> float:
        return self._outcome.end

    @property
    def wall_ms(self) -> int:
        return int(self._outcome.wall * 1000)

    def values(self) -> list[int] | list[bool]:
        table, _, count, unit = self._read
        fc = _READ_FC[table]
        try:
            reply = self._outcome.result()
        except (MbapTimeout, MbapClosed, OSError) as exc:
            raise self._backend.link_error(unit, fc, exc) from exc
        return _parse_read(fc, count, unit, _checked(unit, fc, reply))


def modbus_client(
    endpoint: Endpoint, timeout: float, rs485: Rs485Config | None = None
) -> ModbusClient:
    """The client for ``endpoint``: our MBAP framing for ``tcp://``, pymodbus for the rest.
    ``rs485``: the bus's line options (echo, kernel RS-485 mode; serial lines only)."""
    if endpoint.scheme == "tcp":
        return _MbapBackend(endpoint)
    if endpoint.scheme in ("rtu+tcp", "rtu", "ascii"):
        return _PymodbusBackend(endpoint, timeout, rs485)
    raise ValueError(f"not a Modbus endpoint: {endpoint.url}")


_READ_FC: dict[Table, int] = {Table.COIL: 1, Table.DISCRETE: 2, Table.HOLDING: 3, Table.INPUT: 4}
_REQ = struct.Struct(">BHH")  # function code, address, quantity / value


class _MbapBackend:
    """Modbus TCP through drivers/modbus/mbap.py: request PDUs built and replies checked here
    (Modbus Application Protocol V1.1b3, sections 6.1-6.6, 6.11, 6.12, 7)."""

    def __init__(self, endpoint: Endpoint) -> None:
        self.url = endpoint.url
        self._mbap = MbapClient(endpoint.host or "", endpoint.port or 502)

    @property
    def connected(self) -> bool:
        return self._mbap.connected

    async def connect(self, timeout: float) -> None:
        try:
            await self._mbap.connect(timeout)
        except TimeoutError as exc:
            raise NotConnected(self.url, "connect timed out", Reason.TIMEOUT) from exc
        except OSError as exc:
            raise NotConnected(self.url, f"{type(exc).__name__}: {exc}", link_reason(exc)) from exc

    def close(self) -> None:
        self._mbap.close()

    batch_reads = True

    def link_error(self, unit: int, fc: int, exc: Exception) -> ModbusError:
        if isinstance(exc, MbapTimeout):
            if not self._mbap.connected:  # supervision closed the stream (see mbap_io)
                kind = Reason.BAD_FRAMES if exc.bad_frame else Reason.TIMEOUT
                return NotConnected(self.url, f"{exc.why}; connection closed", kind)
            return NoResponse(unit, fc, bad_frame=exc.bad_frame)
        if isinstance(exc, MbapClosed):
            return NotConnected(self.url, str(exc), exc.kind)
        return NotConnected(self.url, str(exc), link_reason(exc))

    async def _call(self, unit: int, fc: int, pdu: bytes, timeout: float) -> bytes:
        try:
            reply = await self._mbap.transact(unit, pdu, timeout)
        except (MbapTimeout, MbapClosed, OSError) as exc:
            raise self.link_error(unit, fc, exc) from exc
        return _checked(unit, fc, reply)

    async def read(
        self, table: Table, start: int, count: int, unit: int, timeout: float
    ) -> list[int] | list[bool]:
        fc = _READ_FC[table]
        reply = await self._call(unit, fc, _REQ.pack(fc, start, count), timeout)
        return _parse_read(fc, count, unit, reply)

    async def read_batch(self, reads: Sequence[Read], timeout: float) -> list[Prefetched]:
        reqs = [(u, _REQ.pack(_READ_FC[t], a, n)) for t, a, n, u in reads]
        try:
            outcomes = await self._mbap.batch(reqs, timeout)
        except MbapClosed as exc:
            raise NotConnected(self.url, str(exc), exc.kind) from exc
        return [Prefetched(self, r, o) for r, o in zip(reads, outcomes, strict=False)]

    def cut_batch(self) -> None:
        self._mbap.cut()

    async def write_registers(
        self, unit: int, address: int, values: Sequence[int], timeout: float
    ) -> None:
        if len(values) == 1:
            pdu = _REQ.pack(6, address, values[0])
            reply = await self._call(unit, 6, pdu, timeout)
            if reply != pdu:  # FC06 answers with an echo of the request
                raise NoResponse(unit, 6, bad_frame=True)
            return
        n = len(values)
        pdu = _REQ.pack(16, address, n) + struct.pack(f">B{n}H", 2 * n, *values)
        reply = await self._call(unit, 16, pdu, timeout)
        if reply != pdu[:5]:
            raise NoResponse(unit, 16, bad_frame=True)

    async def write_coil(self, unit: int, address: int, value: bool, timeout: float) -> None:
        pdu = _REQ.pack(5, address, 0xFF00 if value else 0)
        if await self._call(unit, 5, pdu, timeout) != pdu:
            raise NoResponse(unit, 5, bad_frame=True)


def _checked(unit: int, fc: int, reply: bytes) -> bytes:
    if reply and reply[0] == fc | 0x80:
        if len(reply) != 2:
            raise NoResponse(unit, fc, bad_frame=True)
        raise DeviceException(unit, fc, reply[1])
    if not reply or reply[0] != fc:
        raise NoResponse(unit, fc, bad_frame=True)
    return reply


def _parse_read(fc: int, count: int, unit: int, reply: bytes) -> list[int] | list[bool]:
    n = (count + 7) // 8 if fc <= 2 else 2 * count
    if len(reply) != 2 + n or reply[1] != n:
        raise NoResponse(unit, fc, bad_frame=True)
    if fc <= 2:  # coils / discrete inputs: LSB of the first data byte is the first bit
        return [bool(reply[2 + i // 8] >> (i % 8) & 1) for i in range(count)]
    return list(struct.unpack_from(f">{count}H", reply, 2))


class _PymodbusBackend:
    """Serial RTU / ASCII and RTU over TCP through pymodbus (imported here, on first use).

    ``rs485.echo``: the bytes reach pymodbus through our ``EchoCheck``, which sits in the
    protocol's ``data_received`` (the asyncio entry point every pymodbus transport calls) and
    is told each frame by the ``trace_packet`` hook as it is sent. pymodbus' own
    ``handle_local_echo`` stays off: it does not verify the echo (drivers/rs485.py)."""

    batch_reads = False

    def __init__(
        self, endpoint: Endpoint, timeout: float, rs485: Rs485Config | None = None
    ) -> None:
        from pymodbus import FramerType
        from pymodbus.client import AsyncModbusSerialClient, AsyncModbusTcpClient

        self.endpoint = endpoint
        self.rs485 = rs485
        self._rx_seen = False
        self._silent = 0  # timeouts in a row on this connection (RTU over TCP supervision)
        self._serial = endpoint.is_serial
        self._echo = EchoCheck() if rs485 is not None and rs485.echo else None
        self._echo_failing = False
        self._client: Any
        common: dict[str, Any] = {
            "timeout": timeout,
            "retries": 0,
            "reconnect_delay": 0,
            "trace_packet": self._trace_packet,
            "name": endpoint.url,
        }
        if endpoint.scheme == "rtu+tcp":
            self._client = AsyncModbusTcpClient(
                endpoint.host or "", port=endpoint.port or 0, framer=FramerType.RTU, **common
            )
        else:
            self._client = AsyncModbusSerialClient(
                endpoint.path or "",
                framer=FramerType.RTU if endpoint.scheme == "rtu" else FramerType.ASCII,
                baudrate=endpoint.baudrate,
                parity=endpoint.parity,
                stopbits=endpoint.stopbits,
                bytesize=endpoint.bytesize,
                **common,
            )
        if self._echo is not None:
            self._deliver = self._client.ctx.data_received
            self._client.ctx.data_received = self._data_received

    def _trace_packet(self, sending: bool, data: bytes) -> bytes:
        if sending:
            if self._echo is not None:
                self._echo.sent(data)
        elif data:
            self._rx_seen = True
        return data

    def _data_received(self, data: bytes) -> None:
        assert self._echo is not None
        try:
            rest = self._echo.feed(data)
        except EchoMismatch:
            return  # reported by _call when the request times out; the rest is swallowed
        if rest:
            self._deliver(rest)

    @property
    def connected(self) -> bool:
        return bool(self._client.connected)

    async def connect(self, timeout: float) -> None:
        self._client.ctx.comm_params.timeout_connect = timeout
        self._silent = 0
        err: NotConnected | None = None
        try:
            ok = await self._client.connect()
        except Exception as exc:
            # pyserial raises SerialException (an OSError), ValueError for settings the port
            # refuses and termios.error from tcsetattr; none of them may kill the bus owner.
            self._client.close()
            err = NotConnected(
                self.endpoint.url,
                f"{type(exc).__name__}: {exc}",
                link_reason(exc, serial=self._serial),
            )
        if err is not None:
            if self._serial:
                # pymodbus' SerialTransport opens the port, then fails in its own set-up (a
                # timeout setter re-applies settings the port refuses) and drops the open,
                # exclusively locked port inside the traceback's frames. Collect it now, or
                # every later attempt on this port (the next setting of a scan, the bus
                # owner's reconnect) finds it locked until the garbage collector runs.
                gc.collect()
            raise err
        if not ok:
            if self._serial:
                raise NotConnected(self.endpoint.url, "cannot open the port", Reason.PORT_GONE)
            # pymodbus logs the socket error and returns False: find out what it was
            why, kind = await _tcp_failure(self.endpoint, timeout)
            raise NotConnected(self.endpoint.url, f"connect failed: {why}", kind)
        if self.endpoint.scheme != "rtu+tcp":
            try:
                apply_kernel_mode(self._client.ctx.transport.sync_serial, self.rs485)
            except Rs485Unsupported as exc:
                self._client.close()
                raise NotConnected(self.endpoint.url, exc.reason, Reason.PORT_GONE) from exc

    def close(self) -> None:
        self._client.close()

    async def read(
        self, table: Table, start: int, count: int, unit: int, timeout: float
    ) -> list[int] | list[bool]:
        fc, method = _READS[table]
        resp = await self._call(fc, unit, timeout, method, start, count=count, device_id=unit)
        if table.is_bits:
            bits = [bool(b) for b in resp.bits[:count]]
            if len(bits) != count:
                raise NoResponse(unit, fc, bad_frame=True)
            return bits
        regs = [int(r) for r in resp.registers]
        if len(regs) != count:
            raise NoResponse(unit, fc, bad_frame=True)
        return regs

    async def write_registers(
        self, unit: int, address: int, values: Sequence[int], timeout: float
    ) -> None:
        if len(values) == 1:
            await self._call(6, unit, timeout, "write_register", address, values[0], device_id=unit)
        else:
            await self._call(
                16, unit, timeout, "write_registers", address, list(values), device_id=unit
            )

    async def write_coil(self, unit: int, address: int, value: bool, timeout: float) -> None:
        await self._call(5, unit, timeout, "write_coil", address, value, device_id=unit)

    async def read_batch(self, reads: Sequence[Read], timeout: float) -> list[Prefetched]:
        raise NotImplementedError("serial lines are paced by the bus owner, one read at a time")

    def cut_batch(self) -> None:
        pass

    async def _call(
        self, fc: int, unit: int, timeout: float, method: str, *args: Any, **kwargs: Any
    ) -> Any:
        from pymodbus.exceptions import ConnectionException, ModbusIOException

        lost = Reason.PORT_GONE if self._serial else Reason.RESET
        if not self._client.connected:
            raise NotConnected(self.endpoint.url, "link closed", lost)
        # pymodbus reads the response timeout from comm_params on every execute
        self._client.ctx.comm_params.timeout_connect = timeout
        self._rx_seen = False
        try:
            resp = await getattr(self._client, method)(*args, **kwargs)
        except ConnectionException as exc:
            raise NotConnected(self.endpoint.url, str(exc), lost) from exc
        except ModbusIOException as exc:
            if not self._client.connected:
                # the link dropped while we waited: not the unit's fault
                raise NotConnected(self.endpoint.url, "link lost during request", lost) from exc
            if self._echo is not None and (echo := self._echo_error(timeout)) is not None:
                raise EchoFailed(unit, fc, echo) from exc
            self._silent = 0 if self._rx_seen else self._silent + 1
            if not self._serial and (self._rx_seen or self._silent >= MAX_SILENT):
                # RTU over TCP: a partial or garbled reply may sit in the framer and prefix
                # the next one, and a server that stopped answering may have a dead link to
                # its own port: start again on a new connection
                self.close()
                why = "garbled reply" if self._rx_seen else f"{self._silent} timeouts in a row"
                kind = Reason.BAD_FRAMES if self._rx_seen else Reason.TIMEOUT
                raise NotConnected(self.endpoint.url, f"{why}; connection closed", kind) from exc
            raise NoResponse(unit, fc, bad_frame=self._rx_seen) from exc
        except OSError as exc:
            kind = link_reason(exc, serial=self._serial)
            raise NotConnected(self.endpoint.url, str(exc), kind) from exc
        self._silent = 0
        if self._echo_failing:
            self._echo_failing = False
            log.info("%s: the frames' echo is right again", self.endpoint.url)
        if resp.isError():
            raise DeviceException(unit, fc, int(getattr(resp, "exception_code", 0)))
        return resp

    def _echo_error(self, waited: float) -> EchoError | None:
        """What went wrong with the echo of the request that just timed out, if anything."""
        assert self._echo is not None
        echo: EchoError | None = self._echo.failed
        if echo is None and self._echo.pending:
            echo = self._echo.no_echo(waited)
        if echo is not None and not self._echo_failing:
            log.warning("%s: %s", self.endpoint.url, echo.reason)
        self._echo_failing = echo is not None
        return echo


async def _tcp_failure(endpoint: Endpoint, timeout: float) -> tuple[str, Reason]:
    """Why a TCP connect to ``endpoint`` fails, found with a plain connect of our own (only
    called after pymodbus' connect failed, so at the reconnect backoff's pace)."""
    try:
        async with asyncio.timeout(timeout):
            _, writer = await asyncio.open_connection(endpoint.host, endpoint.port)
    except TimeoutError:
        return "connect timed out", Reason.TIMEOUT
    except OSError as exc:
        return f"{type(exc).__name__}: {exc}", link_reason(exc)
    writer.close()
    return "the connection failed once and worked on a second try", Reason.RESET


_READS: dict[Table, tuple[int, str]] = {
    Table.COIL: (1, "read_coils"),
    Table.DISCRETE: (2, "read_discrete_inputs"),
    Table.HOLDING: (3, "read_holding_registers"),
    Table.INPUT: (4, "read_input_registers"),
}
