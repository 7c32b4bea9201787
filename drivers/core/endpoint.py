"""Bus endpoint URLs.

tcp://host:502                     Modbus TCP (MBAP framing)
rtu+tcp://host:4001                Modbus RTU frames through a serial-to-Ethernet server
rtu:///dev/ttyUSB0?baudrate=9600&parity=E&stopbits=1
ascii:///dev/ttyUSB0?baudrate=9600&parity=E&bytesize=7
serial:///dev/ttyUSB1?baudrate=2400&parity=E   (non-Modbus serial protocols)
serial+tcp://host:4002                         (non-Modbus protocol via a serial server)
"""

from __future__ import annotations

from dataclasses import dataclass
from ipaddress import ip_address
from urllib.parse import parse_qsl, urlsplit

SCHEMES = {"tcp", "rtu+tcp", "rtu", "ascii", "serial", "serial+tcp"}
SERIAL_SCHEMES = {"rtu", "ascii", "serial"}
BAUDRATES = {300, 600, 1200, 2400, 4800, 9600, 14400, 19200, 38400, 57600, 115200, 230400}


class EndpointError(ValueError):
    def __init__(self, url: str, reason: str) -> None:
        self.url = url
        self.reason = reason
        super().__init__(f"bad endpoint '{url}': {reason}")


@dataclass(frozen=True, slots=True)
class Endpoint:
    url: str
    scheme: str
    host: str | None = None
    port: int | None = None
    path: str | None = None  # serial device path
    baudrate: int = 9600
    parity: str = "N"
    stopbits: int = 1
    bytesize: int = 8

    @property
    def is_serial(self) -> bool:
        return self.scheme in SERIAL_SCHEMES

    @property
    def char_time(self) -> float:
        """Seconds per character on the wire (start + data + parity + stop bits)."""
        bits = 1 + self.bytesize + (0 if self.parity == "N" else 1) + self.stopbits
        return bits / self.baudrate

    @property
    def key(self) -> str:
        """Identity of the physical bus: two buses with the same key would fight for it."""
        return self.path if self.is_serial and self.path else f"{self.host}:{self.port}"


def parse_endpoint(url: str) -> Endpoint:
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in SCHEMES:
        raise EndpointError(url, f"scheme must be one of {', '.join(sorted(SCHEMES))}")
    query = dict(parse_qsl(parts.query, keep_blank_values=True))
    if scheme in SERIAL_SCHEMES:
        if parts.netloc:
            raise EndpointError(
                url, "serial endpoints have no host: use three slashes, e.g. rtu:///dev/ttyUSB0"
            )
        if not parts.path.startswith("/"):
            raise EndpointError(url, "serial endpoints need an absolute device path")
        allowed = {"baudrate", "parity", "stopbits", "bytesize"}
        unknown = set(query) - allowed
        if unknown:
            raise EndpointError(
                url,
                f"unknown option(s) {', '.join(sorted(unknown))}; "
                f"allowed: {', '.join(sorted(allowed))}",
            )
        try:
            baud = int(query.get("baudrate", "9600"))
            stop = int(query.get("stopbits", "1"))
            size = int(query.get("bytesize", "7" if scheme == "ascii" else "8"))
        except ValueError as exc:
            raise EndpointError(url, f"numeric option expected ({exc})") from None
        parity = query.get("parity", "E" if scheme in ("rtu", "ascii") else "N").upper()
        if baud not in BAUDRATES:
            raise EndpointError(url, f"baudrate {baud} is not a standard rate")
        if parity not in ("N", "E", "O"):
            raise EndpointError(url, "parity must be N, E or O")
        if stop not in (1, 2):
            raise EndpointError(url, "stopbits must be 1 or 2")
        if size not in (7, 8):
            raise EndpointError(url, "bytesize must be 7 or 8")
        return Endpoint(
            url, scheme, path=parts.path, baudrate=baud, parity=parity, stopbits=stop, bytesize=size
        )
    if parts.query:
        raise EndpointError(url, "TCP endpoints take no options")
    if not parts.hostname:
        raise EndpointError(url, "missing host")
    try:
        port = parts.port
    except ValueError:
        raise EndpointError(url, "port must be 1..65535") from None
    if port is None:
        port = 502 if scheme == "tcp" else None
    if port is None or not 0 < port < 65536:
        raise EndpointError(url, "missing port (serial servers have no default port)")
    return Endpoint(url, scheme, host=parts.hostname, port=port)


def is_loopback(host: str) -> bool:
    """Whether a host is this machine for sure: ``localhost`` or a loopback address (a
    name may resolve to anything: no)."""
    if host == "localhost":
        return True
    try:
        return ip_address(host).is_loopback
    except ValueError:
        return False
