"""``cityedge simulate``: serve simulated field devices over Modbus TCP until SIGINT/SIGTERM."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import sys
from typing import Any

EXAMPLES = """examples:
  cityedge simulate                                  # 3 lamps, 2 meters, 1 camera on :5020
  cityedge simulate --port 1502 --streetlights 10
  cityedge simulate --speed 3600 --leak 12           # a day per 24 s; meter 12 leaks
  cityedge simulate --verbose                        # and every Modbus frame, in hex

unit ids: streetlights from 1, water meters from 11, cameras from 21 (each kind continues
after the previous one if it has 10 or more units). Any other unit id answers exception 0x0B.
register maps: the shipped profiles cityedge/streetlight, cityedge/water_meter, cityedge/camera"""

FIRST_ID = {"streetlight": 1, "water_meter": 11, "camera": 21}


def register(sub: Any) -> None:
    p = sub.add_parser(
        "simulate",
        help="serve simulated streetlights, water meters and cameras (Modbus TCP)",
        description="Serve realistic simulated field devices as Modbus TCP units on one port: "
        "lamps that follow dusk/dawn (Hanoi, UTC+7) and dimming, water meters with daily "
        "demand and leak alarms, PTZ traffic cameras counting vehicles.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--host", default="127.0.0.1", help="listen address (default: %(default)s)")
    p.add_argument("--port", type=int, default=5020, help="TCP port (default: %(default)s)")
    p.add_argument("--streetlights", type=int, default=3, metavar="N")
    p.add_argument("--water-meters", type=int, default=2, metavar="N")
    p.add_argument("--cameras", type=int, default=1, metavar="N")
    p.add_argument(
        "--serial-dir",
        metavar="DIR",
        help="also serve serial buses over pty pairs (ASCII streetlights 1-2, Pelco-D heads "
        "1-2, M-Bus meters 1 and 5); DIR receives the device links serial, pelco_d, mbus",
    )
    p.add_argument(
        "--speed",
        type=float,
        default=1.0,
        metavar="X",
        help="simulated seconds per real second (default: %(default)s)",
    )
    p.add_argument(
        "--leak",
        type=int,
        action="append",
        default=[],
        metavar="UNIT",
        help="raise the leak alarm on this water-meter unit (repeatable)",
    )
    p.add_argument(
        "--verbose",
        action="store_true",
        help="log the Modbus traffic (pymodbus' wire log, hex) and the simulators' warnings",
    )
    p.set_defaults(func=run)


def quiet_simulators() -> None:
    """pymodbus logs a frame it cannot serve (a client gone mid-request, a unit it does not
    know) as an error followed by hex dumps of its last 20 frames: noise in the window of a
    simulator that is working as it should. Off unless ``--verbose``."""
    logging.getLogger("pymodbus").setLevel(logging.CRITICAL + 1)


def wire_log() -> None:
    """pymodbus' debug log: every frame sent and received, in hex (``--verbose``)."""
    log = logging.getLogger("pymodbus")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(name)s: %(message)s", "%H:%M:%S"))
    log.addHandler(handler)
    log.propagate = False
    log.setLevel(logging.DEBUG)


def allocate(counts: dict[str, int]) -> dict[str, list[int]]:
    """Unit ids per kind: 1.., 11.., 21.. while they fit, else right after the previous kind."""
    out: dict[str, list[int]] = {}
    nxt = 1
    for kind in ("streetlight", "water_meter", "camera"):
        first = max(FIRST_ID[kind], nxt)
        out[kind] = list(range(first, first + counts[kind]))
        nxt = first + counts[kind]
    if nxt - 1 > 247:
        raise ValueError(f"too many devices: unit ids would reach {nxt - 1} (max 247)")
    return out


def _ranges(ids: list[int]) -> str:
    if not ids:
        return "none"
    return str(ids[0]) if len(ids) == 1 else f"{ids[0]}-{ids[-1]}"


def run(args: argparse.Namespace) -> int:
    from drivers.sim.models import WaterMeterModel

    if args.verbose:
        wire_log()
    else:
        quiet_simulators()
    from drivers.sim.server import SimSpec, SimulatorServer

    counts = {
        "streetlight": args.streetlights,
        "water_meter": args.water_meters,
        "camera": args.cameras,
    }
    if min(counts.values()) < 0 or args.speed <= 0:
        print("cityedge simulate: counts must be >= 0 and --speed > 0", file=sys.stderr)
        return 2
    try:
        ids = allocate(counts)
    except ValueError as exc:
        print(f"cityedge simulate: {exc}", file=sys.stderr)
        return 2
    spec = SimSpec(
        streetlights=ids["streetlight"],
        water_meters=ids["water_meter"],
        cameras=ids["camera"],
        speed=args.speed,
    )

    async def serve() -> int:
        sim = SimulatorServer(spec, host=args.host, port=args.port)
        for unit in args.leak:
            dev = sim.device(unit) if unit in ids["water_meter"] else None
            if not isinstance(dev, WaterMeterModel):
                print(
                    f"cityedge simulate: --leak {unit}: not a water-meter unit "
                    f"({_ranges(ids['water_meter'])})",
                    file=sys.stderr,
                )
                return 2
            dev.set_leak(True)
        try:
            await sim.start()
        except (OSError, RuntimeError) as exc:
            print(f"cityedge simulate: {exc}", file=sys.stderr)
            return 1
        print(f"cityedge simulate: Modbus TCP on {args.host}:{sim.port}, speed x{args.speed:g}")
        for kind, units in ids.items():
            ref = sim.profile(units[0]).id if units else "-"
            print(f"  {kind:<12} units {_ranges(units):<8} profile {ref}")
        if args.leak:
            print(f"  leak alarm raised on unit(s) {', '.join(map(str, args.leak))}")
        serial = None
        if args.serial_dir:
            from drivers.sim.serial_sims import serve_serial_sims

            serial = await serve_serial_sims(
                {"serial": [1, 2], "pelco_d": [1, 2], "mbus": [1, 5]}, link_dir=args.serial_dir
            )
            for proto, path in serial.paths.items():
                print(f"  {proto:<12} serial://{path}?baudrate=9600")
        print("serving until SIGINT/SIGTERM", flush=True)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        async with asyncio.TaskGroup() as tg:
            runner = tg.create_task(sim.run(), name="simulators")
            await stop.wait()
            runner.cancel()
        if serial is not None:
            await serial.close()
        print("cityedge simulate: stopped", file=sys.stderr)
        return 0

    with contextlib.suppress(KeyboardInterrupt):
        return asyncio.run(serve())
    return 0
