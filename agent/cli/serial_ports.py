"""Serial ports of this machine, and why one would not open, for ``cityedge scan``.

A technician who types ``/dev/ttyUSB9`` needs to hear that it does not exist and which ports
do, with their stable ``/dev/serial/by-id`` names (a USB adapter's number changes when it is
replugged; the by-id name does not). A port that opens with one line setting and not another
(a USB adapter or pty without mark/space or even parity) is a setting to skip, while a port
that is busy, forbidden or gone is the same for every setting: the scan stops with that
reason instead of guessing "is the daemon running?".
"""

from __future__ import annotations

import errno
import termios
from dataclasses import dataclass
from pathlib import Path

from drivers.core.endpoint import Endpoint

# device names of serial ports on Linux: USB adapters (FTDI, CH340, PL2303, CP210x: ttyUSB;
# CDC-ACM: ttyACM; Exar, CH341 vendor drivers), SoC UARTs (Raspberry Pi ttyAMA/ttyS, i.MX
# ttymxc, OMAP ttyO), SPI/I2C UART HATs (SC16IS7xx: ttySC), Bluetooth (rfcomm)
PATTERNS = (
    "ttyUSB*",
    "ttyACM*",
    "ttyAMA*",
    "ttyS*",
    "ttySC*",
    "ttyXRUSB*",
    "ttyCH341USB*",
    "ttymxc*",
    "ttyO*",
    "rfcomm*",
)
DEV = Path("/dev")


@dataclass(frozen=True)
class SerialPort:
    device: str
    description: str | None = None  # "FT232R USB UART" (USB adapters, from sysfs)
    links: tuple[str, ...] = ()  # /dev/serial/by-id/... and by-path names of this port


def serial_ports(dev: Path = DEV) -> list[SerialPort]:
    """Ports present under ``dev``, each with its by-id / by-path names."""
    links: dict[str, list[str]] = {}
    for kind in ("by-id", "by-path"):
        for link in sorted((dev / "serial" / kind).glob("*")):
            links.setdefault(str(link.resolve()), []).append(str(link))
    devices = {str(p) for pattern in PATTERNS for p in dev.glob(pattern)}
    devices |= {d for d in links if Path(d).exists()}
    out = []
    for d in sorted(devices):
        description, present = _sysfs(d) if dev == DEV else (None, True)
        if present:
            out.append(SerialPort(d, description, tuple(links.get(str(Path(d).resolve()), ()))))
    return out


def _sysfs(device: str) -> tuple[str | None, bool]:
    """(description, present): pyserial's sysfs reading; a built-in ttyS with no UART behind
    it (subsystem "platform") is not a port."""
    try:
        from serial.tools.list_ports_linux import SysFS
    except ImportError:  # not on Linux
        return None, True
    info = SysFS(device)
    description = info.description if info.description not in (None, "n/a") else None
    if description == info.name:
        description = None
    return description, info.subsystem != "platform"


def ports_text(ports: list[SerialPort]) -> str:
    if not ports:
        return (
            "no serial port found on this machine: is the adapter plugged in? "
            "(dmesg | tail shows what the kernel saw)"
        )
    lines = ["serial ports here:"]
    for p in ports:
        line = f"  {p.device}"
        if p.description:
            line += f"  {p.description}"
        for link in p.links:
            line += f"\n      {link}"
        lines.append(line)
    if any(p.links for p in ports):
        lines.append("(the /dev/serial/by-id names stay the same when a USB adapter is replugged)")
    return "\n".join(lines)


@dataclass(frozen=True)
class Refusal:
    kind: str  # "missing", "permission", "busy", "setting" or "other"
    text: str

    @property
    def port_wide(self) -> bool:
        """The same for every line setting: no use trying the next one."""
        return self.kind != "setting"


def setting_text(ep: Endpoint) -> str:
    return f"{ep.baudrate} baud {ep.bytesize}{ep.parity}{ep.stopbits}"


def why_not_open(ep: Endpoint) -> Refusal | None:
    """Open the port as the scan would (exclusively, with the setting) to learn why it fails;
    None if it opens now."""
    import serial

    assert ep.path is not None
    if not Path(ep.path).exists():
        return Refusal("missing", f"{ep.path} does not exist")
    try:
        port = serial.Serial(
            ep.path,
            baudrate=ep.baudrate,
            parity=ep.parity,
            stopbits=ep.stopbits,
            bytesize=ep.bytesize,
            timeout=0,
            exclusive=True,
        )
    except (termios.error, ValueError) as exc:
        return Refusal("setting", f"the port refuses this setting ({_strerror(exc)})")
    except OSError as exc:  # serial.SerialException is an OSError, with the errno
        code = exc.errno
        if code in (errno.EACCES, errno.EPERM):
            return Refusal(
                "permission",
                f"no permission to open {ep.path}: run as root, or add the user to its group "
                "(sudo usermod -aG dialout $USER, then log in again)",
            )
        if code in (errno.EAGAIN, errno.EBUSY) or "lock" in str(exc).lower():
            return Refusal(
                "busy",
                f"{ep.path} is in use by another program (the agent? stop it first: "
                "systemctl stop cityedge; or: fuser -v " + ep.path + ")",
            )
        if code in (errno.ENOENT, errno.ENODEV, errno.ENXIO):
            return Refusal("missing", f"{ep.path} is gone ({_strerror(exc)})")
        if code == errno.EINVAL:
            return Refusal("setting", f"the port refuses this setting ({_strerror(exc)})")
        return Refusal("other", f"cannot open {ep.path}: {_strerror(exc)}")
    port.close()
    return None


def _strerror(exc: BaseException) -> str:
    args: tuple[object, ...] = exc.args
    if len(args) == 2 and isinstance(args[1], str):
        return args[1]
    return getattr(exc, "strerror", None) or str(exc)
