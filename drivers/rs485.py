"""RS-485 line options of a bus (``[buses.rs485]``, docs/DEPLOY.md "Raspberry Pi"): the local
echo of two-wire adapters and the kernel's RS-485 mode, applied by the byte link of every
serial line (drivers/link.py): Modbus RTU / ASCII and the serial protocols alike.

Echo. A two-wire RS-485 transceiver whose receiver stays enabled while it transmits (many
DIN-rail converters, HATs with RE tied low, the kernel mode with ``SER_RS485_RX_DURING_TX``)
hands every frame we send straight back to us. ``EchoCheck`` expects exactly the frame just
sent, verifies it byte for byte and passes on only what follows it. A byte that differs is a
collision on the line (another master, a device answering into our frame) or an adapter that
does not echo at all (the device's reply arrived where the echo should be): ``EchoMismatch``
says where, with both frames. Nothing at all where the echo should be is ``NoEcho``. pymodbus'
own ``handle_local_echo`` is not used: it strips a matching prefix but passes a differing one
on to the framer as if it were the reply, with no error (pymodbus' transport.py, 3.16).

Kernel mode. UARTs whose driver implements ``TIOCSRS485`` (the Pi's PL011 and the SC16IS752
of many RS-485 HATs, most USB adapters with auto-direction need none) drive the transceiver's
DE/RE pin from RTS around each frame, with the delays the transceiver needs. pyserial's
``rs485_mode`` issues the ioctl; a port without it (a pty, most USB adapters) refuses it, which
surfaces as ``Rs485Unsupported`` when the bus opens: a configuration or port error, never a
silent software fallback (toggling RTS from user space is too late at 9600 baud and up).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from drivers.core.config import Rs485Config

# Where the echo should be, allow the frame's wire time plus this much: USB adapters deliver
# in bursts (FTDI's latency timer is 16 ms by default), and a busy gateway's event loop may
# get to the bytes late. Generous, because only a missing echo (a fault) ever waits it out.
ECHO_MARGIN = 0.25


class EchoError(Exception):
    """Base of the echo failures; ``reason`` is the text for logs and readings."""

    reason: str


class EchoMismatch(EchoError):
    def __init__(self, sent: bytes, heard: bytes, offset: int) -> None:
        self.sent = sent
        self.heard = heard  # the echo bytes read back, up to and including the first wrong one
        self.offset = offset
        self.reason = (
            f"echo differs from the frame sent at byte {offset}: sent {sent.hex(' ')}, "
            f"read back {heard.hex(' ')} (a collision on the line; or the adapter does not "
            "echo: then set rs485.echo = false)"
        )
        super().__init__(self.reason)


class NoEcho(EchoError):
    def __init__(self, sent: bytes, heard: bytes, wait: float) -> None:
        self.sent = sent
        self.heard = heard
        self.wait = wait
        self.reason = (
            f"no echo of the frame sent ({sent.hex(' ')}) within {wait * 1000:.0f} ms, "
            f"{len(heard)} of {len(sent)} bytes read back (rs485.echo = true: is the adapter "
            "transmitting, and does it echo?)"
        )
        super().__init__(self.reason)


class EchoCheck:
    """Sans-I/O: ``sent(frame)`` after each write, then ``feed(data)`` with what arrives.
    ``feed`` returns the bytes after the echo (the start of the reply, if it came in the same
    chunk) and raises ``EchoMismatch`` at the first wrong byte; after that, everything up to the
    next ``sent`` is swallowed (it belongs to the failed exchange)."""

    def __init__(self) -> None:
        self._expect = b""
        self._heard = bytearray()
        self.failed: EchoMismatch | None = None

    @property
    def pending(self) -> int:
        """Echo bytes still expected (0 once it is complete, or after a mismatch)."""
        if self.failed is not None:
            return 0
        return len(self._expect) - len(self._heard)

    def sent(self, frame: bytes) -> None:
        self._expect = bytes(frame)
        self._heard.clear()
        self.failed = None

    def no_echo(self, wait: float) -> NoEcho:
        return NoEcho(self._expect, bytes(self._heard), wait)

    def feed(self, data: bytes) -> bytes:
        if self.failed is not None:
            return b""
        n = min(len(data), self.pending)
        if n == 0:
            return data
        at = len(self._heard)
        want = self._expect[at : at + n]
        if data[:n] != want:
            i = next(k for k in range(n) if data[k] != want[k])
            self._heard += data[: i + 1]
            self.failed = EchoMismatch(self._expect, bytes(self._heard), at + i)
            raise self.failed
        self._heard += data[:n]
        return data[n:]


class Rs485Unsupported(OSError):
    """The port refused the kernel RS-485 mode (``TIOCSRS485``)."""

    def __init__(self, port: str, detail: str) -> None:
        self.port = port
        self.detail = detail
        self.reason = (
            f"kernel RS-485 mode (rs485.kernel = true) refused by {port}: {detail}; this "
            "port's driver has no RS-485 support (a USB adapter with automatic direction "
            "control needs none: set rs485.kernel = false)"
        )
        super().__init__(self.reason)


def rs485_settings(cfg: Rs485Config) -> Any:
    """pyserial's ``RS485Settings`` for ``cfg`` (imported here: TCP-only gateways never load
    pyserial). The echo option asks the kernel to keep the receiver on while sending
    (``SER_RS485_RX_DURING_TX``), so each frame's echo proves it went out intact."""
    from serial.rs485 import RS485Settings

    return RS485Settings(
        rts_level_for_tx=cfg.rts_on_send == "high",
        rts_level_for_rx=cfg.rts_after_send == "high",
        loopback=cfg.echo,
        delay_before_tx=cfg.delay_before_send_ms / 1000,
        delay_before_rx=cfg.delay_after_send_ms / 1000,
    )


def apply_kernel_mode(port: Any, cfg: Rs485Config | None) -> None:
    """Switch an open pyserial ``Serial`` to the kernel RS-485 mode if ``cfg`` asks for it;
    ``Rs485Unsupported`` if the port refuses (the caller closes it)."""
    if cfg is None or not cfg.kernel:
        return
    try:
        port.rs485_mode = rs485_settings(cfg)
    except (ValueError, OSError, NotImplementedError) as exc:
        # pyserial turns the ioctl's OSError into ValueError("Failed to set RS485 mode: ...")
        raise Rs485Unsupported(str(port.port), str(exc)) from exc
