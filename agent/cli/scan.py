"""``cityedge scan``: find Modbus unit ids (and the baud rate / parity) on a bus.

A unit counts as present when it answers at all, even with an exception: "illegal address" for
register 0 still proves a device with that id listens at those line settings. Serial scans try
every combination given, most common first, and stop at the first setting that finds units
unless ``--all-settings`` is given (several settings on one line would be a wiring fault).

Garbled replies are counted per setting and reported: a device answers, but its frames arrive
damaged (a wrong baud rate or parity for it, missing termination or biasing, an adapter that
echoes). ``--echo`` and ``--rs485`` scan with the bus's RS-485 options (``[buses.rs485]``
``echo`` and ``kernel``): a port without the kernel RS-485 mode fails at once with the reason.

On a terminal the scan shows its progress and the time left: the default serial scan of a
silent line is 15 settings x 247 units, 3705 probes, about ten minutes. A line setting the port
refuses (an adapter or pty without even or odd parity) is skipped with a note and the scan goes
on with the next; a port that does not exist (the serial ports that do are listed, with their
/dev/serial/by-id names), is busy or may not be opened stops it with that reason.

``--emit-config`` prints ``[[buses]]`` and ``[[devices]]`` TOML for the units found, ready for a
``conf.d`` file: each unit is asked for the identification its candidate profiles define
(``[identify]``, docs/PROFILES.md); without one, the profiles whose register maps it answers
are the candidates, and a single one is written as a guess to check.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agent.cli.common import describe
from drivers.core.config import Rs485Config
from drivers.core.endpoint import Endpoint, EndpointError, parse_endpoint
from drivers.core.profile import Table

if TYPE_CHECKING:
    from agent.cli.serial_ports import Refusal

EXAMPLES = """examples:
  cityedge scan rtu:///dev/ttyUSB0 --units 1-8          # 9600/19200/4800/38400/115200, E/N/O
  cityedge scan rtu:///dev/ttyUSB0 --baud 9600 --parity E --units 1-32
  cityedge scan tcp://192.168.10.20:502 --units 1-10
  cityedge scan rtu+tcp://10.1.1.5:4001 --units 1-16 --timeout 0.3 --json
  cityedge scan rtu:///dev/ttyAMA0 --rs485 --echo --units 1-8   # a Pi RS-485 HAT (DEPLOY.md)
  cityedge scan tcp://192.168.10.20:502 --units 1-30 --emit-config > cabinet.toml
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
    p.add_argument("--json", action="store_true", help="the units found, as JSON")
    p.add_argument(
        "--emit-config",
        action="store_true",
        help="print [[buses]] and [[devices]] TOML for what was found, with each device's "
        "profile where its identification (or its register map) tells it",
    )
    p.add_argument(
        "--profile-dir",
        action="append",
        default=[],
        metavar="DIR",
        help="--emit-config: also consider this profile library (before the built-in one)",
    )
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
    """Probes done out of the total, with the time remaining (rich's Progress on stderr when
    it is a terminal), and notes printed above the bar; silent when not ``enabled``, except
    for the notes, which go to stderr as lines."""

    def __init__(self, total: int, enabled: bool) -> None:
        self.total, self.done, self.enabled = total, 0, enabled
        self.found = 0
        self._bar: Any = None
        self._task: Any = None
        if enabled:
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )
            from rich.progress import Progress as Bar

            self._bar = Bar(
                TextColumn("{task.description:<28}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("probes, {task.fields[found]} found,"),
                TimeElapsedColumn(),
                TextColumn("elapsed,"),
                TimeRemainingColumn(),
                TextColumn("left"),
                console=Console(stderr=True, highlight=False),
            )
            self._bar.start()
            self._task = self._bar.add_task("", total=total, found=0)

    def step(self, label: str, hit: bool = False) -> None:
        self.done += 1
        self.found += hit
        if self._bar is not None:
            self._bar.update(self._task, advance=1, description=label, found=self.found)

    def skip(self, probes: int) -> None:
        """Probes that will not be sent (a setting refused, or the scan stopped at a hit)."""
        self.total -= probes
        if self._bar is not None:
            self._bar.update(self._task, total=self.total)

    def note(self, text: str, live_only: bool = False) -> None:
        """A line above the bar; ``live_only``: only while the bar is shown (a found unit,
        listed again at the end)."""
        if self._bar is not None:
            self._bar.console.print(text, markup=False, highlight=False)
        elif not live_only:
            sys.stderr.write(f"{text}\n")

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None


def estimate(urls: list[str], units: int, timeout: float) -> float:
    """Seconds a scan takes when nothing answers: each probe waits its timeout, plus the
    request's wire time and the quiet gap on a serial line."""
    total = 0.0
    for url in urls:
        ep = parse_endpoint(url)
        per = timeout + (12 * ep.char_time + max(0.002, 4 * ep.char_time) if ep.is_serial else 0)
        total += units * per
    return total


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
    replies per setting. A setting the port refuses is skipped with a note; a port that
    cannot be opened at all (missing, busy, forbidden, no RS-485 mode) or a TCP endpoint that
    does not connect ends the scan with SystemExit and the reason."""
    from drivers.modbus.adapter import (
        DeviceException,
        ModbusError,
        NoResponse,
        NotConnected,
        modbus_client,
    )

    found: list[Found] = []
    refused: list[str] = []
    for n, url in enumerate(urls):
        ep = parse_endpoint(url)
        client = modbus_client(ep, timeout, rs485 if ep.is_serial else None)
        try:
            await client.connect(max(1.0, timeout))
        except NotConnected as exc:
            why = _refusal(ep, exc.reason)
            progress.skip(len(units))
            if why.port_wide:
                progress.close()
                raise SystemExit(f"cityedge: cannot scan {ep.key}: {why.text}") from None
            refused.append(f"{_setting(url)}: {why.text}")
            progress.note(f"skipping {_setting(url)}: {why.text}")
            continue
        hits = 0
        try:
            for i, unit in enumerate(units):
                label = f"{_setting(url)} unit {unit}"
                hit = False
                try:
                    await client.read(table, address, 1, unit, timeout)
                    found.append(Found(unit, url, "registers"))
                    hit = True
                except DeviceException as exc:
                    # 10/11: a TCP gateway saying nothing answers behind it (spec 7, codes
                    # 0x0A/0x0B) - that unit id is absent, not present
                    if exc.code not in GATEWAY_ABSENT:
                        found.append(Found(unit, url, f"exception {exc.code}"))
                        hit = True
                except NotConnected as exc:
                    if not await _reconnect(client, timeout):
                        progress.note(
                            f"{_setting(url)}: the link dropped at unit {unit} ({exc.reason}) "
                            "and did not come back: rest of this setting skipped"
                        )
                        progress.skip(len(units) - i)
                        break
                except NoResponse as exc:
                    if exc.bad_frame and garbled is not None:
                        garbled[url] = garbled.get(url, 0) + 1
                except ModbusError:
                    pass
                hits += hit
                if hit:
                    progress.note(
                        f"unit {unit:>3} answers at {_setting(url)} ({found[-1].answer})", True
                    )
                progress.step(label, hit)
                # let the line go quiet before the next unit (a late answer must not be
                # taken as the next unit's)
                await asyncio.sleep(max(0.002, ep.char_time * 4) if ep.is_serial else 0)
        finally:
            client.close()
        if hits and not all_settings:
            progress.skip(len(units) * (len(urls) - n - 1))
            break
    if refused and len(refused) == len(urls):
        progress.close()
        raise SystemExit(
            f"cityedge: {parse_endpoint(urls[0]).key} refused every line setting tried "
            f"({len(urls)}, listed above): nothing was scanned; try the settings the "
            "adapter supports (--baud, --parity)"
        )
    return found


async def _reconnect(client: Any, timeout: float) -> bool:
    from drivers.modbus.adapter import NotConnected

    await asyncio.sleep(0.1)
    try:
        await client.connect(max(1.0, timeout))
    except NotConnected:
        return False
    return True


def _setting(url: str) -> str:
    ep = parse_endpoint(url)
    if not ep.is_serial:
        return f"{ep.host}:{ep.port}"
    from agent.cli.serial_ports import setting_text

    return setting_text(ep)


def _refusal(ep: Endpoint, reason: str) -> Refusal:
    """Why a connect failed, in the technician's terms."""
    from agent.cli.serial_ports import Refusal, why_not_open

    if not ep.is_serial:
        hint = "nothing listens there" if "refused" in reason.lower() else "no answer"
        return Refusal("other", f"{reason} ({hint}: check the address and port)")
    if "rs485" in reason.lower() or "rs-485" in reason.lower():
        return Refusal("other", reason)
    return why_not_open(ep) or Refusal("other", reason)


def run(args: argparse.Namespace) -> int:
    try:
        urls = _settings(args)
        ep = parse_endpoint(urls[0])
    except EndpointError as exc:
        print(f"cityedge: {exc}", file=sys.stderr)
        return 2
    if ep.is_serial and ep.path and not Path(ep.path).exists():
        from agent.cli.serial_ports import ports_text, serial_ports

        print(f"cityedge: {ep.path} does not exist\n{ports_text(serial_ports())}", file=sys.stderr)
        return 2
    units = args.units or list(range(1, 248))
    total = len(urls) * len(units)
    live = sys.stderr.isatty()
    if live or total > 100:
        print(
            f"cityedge scan: {total} probes ({len(urls)} line setting(s) x {len(units)} unit "
            f"ids), up to {_duration(estimate(urls, len(units), args.timeout))} if nothing "
            "answers",
            file=sys.stderr,
        )
    progress = Progress(total, live)
    rs485 = Rs485Config(echo=args.echo, kernel=args.rs485) if args.echo or args.rs485 else None
    garbled: dict[str, int] = {}
    try:
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
    except KeyboardInterrupt:
        progress.close()
        print("cityedge scan: interrupted", file=sys.stderr)
        return 130
    finally:
        progress.close()
    for url, n in garbled.items():
        print(
            f"{n} garbled replies at {url.split('?')[-1]}: a device answers but its frames "
            "arrive damaged (its baud rate or parity differs, the line lacks termination or "
            "biasing, or the adapter echoes: try --echo)",
            file=sys.stderr,
        )
    if args.emit_config:
        from agent.cli.scan_config import emit_config

        if not found:
            print("cityedge: no units answered: nothing to configure", file=sys.stderr)
            return 1
        print(asyncio.run(emit_config(found, args, rs485)))
    elif args.json:
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


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"
