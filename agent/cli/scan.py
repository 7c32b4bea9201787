"""``cityedge scan``: find Modbus unit ids (and the baud rate / parity) on a bus.

A unit counts as present when it answers at all, even with an exception: "illegal address" for
register 0 still proves a device with that id listens at those line settings. Serial scans try
every combination given, most common first, and stop at the first setting that finds units
unless ``--all-settings`` is given (several settings on one line would be a wiring fault).

Garbled replies are counted per setting and reported: a device answers, but its frames arrive
damaged (a wrong baud rate or parity for it, missing termination or biasing, an adapter that
echoes). ``--echo`` and ``--rs485`` scan with the bus's RS-485 options (``[buses.rs485]``
``echo`` and ``kernel``): a port without the kernel RS-485 mode fails at once with the reason.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from dataclasses import dataclass
from typing import Any

from agent.cli.common import describe
from drivers.core.config import Rs485Config
from drivers.core.endpoint import EndpointError, parse_endpoint
from drivers.core.profile import Table

EXAMPLES = """examples:
  cityedge scan rtu:///dev/ttyUSB0 --units 1-8          # 9600/19200/4800/38400/115200, E/N/O
  cityedge scan rtu:///dev/ttyUSB0 --baud 9600 --parity E --units 1-32
  cityedge scan tcp://192.168.10.20:502 --units 1-10
  cityedge scan rtu+tcp://10.1.1.5:4001 --units 1-16 --timeout 0.3 --json
  cityedge scan rtu:///dev/ttyAMA0 --rs485 --echo --units 1-8   # a Pi RS-485 HAT (DEPLOY.md)
without --units every unit id 1-247 is tried: minutes per line setting on a quiet bus.
stop the daemon first (systemctl stop cityedge): a serial port has one owner."""


GATEWAY_ABSENT = frozenset({10, 11})


@dataclass(frozen=True)
class Found:
    unit: int
    endpoint: str
    answer: str  # "registers" or "exception N"


def _units(text: str) -> list[int]:
    out: list[int] = []
    for part in text.split(","):
        lo, _, hi = part.partition("-")
        a, b = int(lo), int(hi or lo)
        if not 0 <= a <= b <= 255:
            raise argparse.ArgumentTypeError(f"unit range {part!r} not within 0..255")
        out.extend(range(a, b + 1))
    return out


def register(sub: Any) -> None:
    p = sub.add_parser(
        "scan",
        help="find Modbus unit ids and line settings on a bus",
        description=describe(__doc__),
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("endpoint", help="tcp://, rtu+tcp://, rtu:// or ascii:// URL")
    p.add_argument("--units", type=_units, default=None, help="e.g. 1-247 (default) or 1,5,10-12")
    p.add_argument(
        "--baud", default="9600,19200,4800,38400,115200", help="serial: baud rates to try"
    )
    p.add_argument("--parity", default="E,N,O", help="serial: parities to try")
    p.add_argument("--table", choices=[t.value for t in Table], default="holding")
    p.add_argument("--address", type=int, default=0, help="register probed (default 0)")
    p.add_argument("--timeout", type=float, default=0.15, help="per unit, seconds")
    p.add_argument("--all-settings", action="store_true", help="keep trying after a hit")
    p.add_argument(
        "--echo", action="store_true", help="the adapter echoes: read back and verify each frame"
    )
    p.add_argument(
        "--rs485", action="store_true", help="kernel RS-485 mode (RTS drives the transceiver)"
    )
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=run)


def _settings(args: argparse.Namespace) -> list[str]:
    ep = parse_endpoint(args.endpoint)
    if not ep.is_serial:
        return [args.endpoint]
    base = args.endpoint.split("?")[0]
    urls = []
    for baud in args.baud.split(","):
        for parity in args.parity.split(","):
            stop = 1 if parity.strip().upper() != "N" else 2  # 11-bit characters (spec 2.5.1)
            urls.append(
                f"{base}?baudrate={baud.strip()}&parity={parity.strip().upper()}&stopbits={stop}"
            )
    return urls


class Progress:
    def __init__(self, total: int, enabled: bool) -> None:
        self.total, self.done, self.enabled = total, 0, enabled

    def step(self, label: str) -> None:
        self.done += 1
        if self.enabled:
            width = 30
            filled = width * self.done // max(self.total, 1)
            sys.stderr.write(
                f"\r[{'#' * filled}{'.' * (width - filled)}] {self.done}/{self.total} {label:<40}"
            )
            sys.stderr.flush()

    def close(self) -> None:
        if self.enabled:
            sys.stderr.write("\n")


async def scan(
    urls: list[str],
    units: list[int],
    table: Table,
    address: int,
    timeout: float,
    all_settings: bool,
    progress: Progress,
    *,
    rs485: Rs485Config | None = None,
    garbled: dict[str, int] | None = None,
) -> list[Found]:
    """Units that answer at each setting; ``garbled`` (if given) gets the number of damaged
    replies per setting."""
    from drivers.modbus.adapter import (
        DeviceException,
        ModbusError,
        NoResponse,
        NotConnected,
        modbus_client,
    )

    found: list[Found] = []
    refused: list[str] = []
    for url in urls:
        ep = parse_endpoint(url)
        client = modbus_client(ep, timeout, rs485 if ep.is_serial else None)
        try:
            await client.connect(max(1.0, timeout))
        except NotConnected as exc:
            refused.append(f"{url}: {exc.reason}")
            if len(refused) < len(urls):
                # one line setting the port cannot take (an adapter without that parity)
                # must not end a scan of the others
                sys.stderr.write(f"cityedge: skipping {url}: {exc.reason}\n")
                continue
            progress.close()
            raise SystemExit(
                f"cityedge: cannot open {url}: {exc.reason} (is the daemon "
                "running? stop it first; check the device path / host)"
            ) from None
        hits = 0
        try:
            for unit in units:
                label = f"{url.split('?')[-1]} unit {unit}"
                try:
                    await client.read(table, address, 1, unit, timeout)
                    found.append(Found(unit, url, "registers"))
                    hits += 1
                except DeviceException as exc:
                    # 10/11: a TCP gateway saying nothing answers behind it (spec 7, codes
                    # 0x0A/0x0B) - that unit id is absent, not present
                    if exc.code not in GATEWAY_ABSENT:
                        found.append(Found(unit, url, f"exception {exc.code}"))
                        hits += 1
                except NotConnected:
                    await asyncio.sleep(0.1)
                    await client.connect(max(1.0, timeout))
                except NoResponse as exc:
                    if exc.bad_frame and garbled is not None:
                        garbled[url] = garbled.get(url, 0) + 1
                except ModbusError:
                    pass
                progress.step(label)
                # let the line go quiet before the next unit (a late answer must not be
                # taken as the next unit's)
                await asyncio.sleep(max(0.002, ep.char_time * 4) if ep.is_serial else 0)
        finally:
            client.close()
        if hits and not all_settings:
            break
    return found


def run(args: argparse.Namespace) -> int:
    try:
        urls = _settings(args)
    except EndpointError as exc:
        print(f"cityedge: {exc}", file=sys.stderr)
        return 2
    units = args.units or list(range(1, 248))
    progress = Progress(len(urls) * len(units), sys.stderr.isatty() and not args.json)
    rs485 = Rs485Config(echo=args.echo, kernel=args.rs485) if args.echo or args.rs485 else None
    garbled: dict[str, int] = {}
    found = asyncio.run(
        scan(
            urls,
            units,
            Table(args.table),
            args.address,
            args.timeout,
            args.all_settings,
            progress,
            rs485=rs485,
            garbled=garbled,
        )
    )
    progress.close()
    for url, n in garbled.items():
        print(
            f"{n} garbled replies at {url.split('?')[-1]}: a device answers but its frames "
            "arrive damaged (its baud rate or parity differs, the line lacks termination or "
            "biasing, or the adapter echoes: try --echo)",
            file=sys.stderr,
        )
    if args.json:
        print(json.dumps([f.__dict__ for f in found], indent=2))
    elif not found:
        print(
            "no units answered: check A/B wiring and termination, try --units 0-255, more "
            "baud rates, or a longer --timeout"
        )
    else:
        for f in found:
            print(f"unit {f.unit:>3}  {f.endpoint}  ({f.answer})")
    return 0 if found else 1
