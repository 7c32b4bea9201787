"""``cityedge plan CONFIG [DEVICE]``: show the Modbus read plan and its wire time per cycle."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from agent.cli.common import config_file, load_or_report
from agent.config import LoadedConfig
from drivers.core.config import DeviceConfig
from drivers.core.endpoint import Endpoint, parse_endpoint
from drivers.modbus.planner import (
    PlanError,
    ReadRequest,
    plan_by_interval,
    plan_wire_time,
)

EXAMPLES = """examples:
  cityedge plan /etc/cityedge/gateway.toml
  cityedge plan /etc/cityedge/gateway.toml lamp-1 --turnaround 8
Wire time is estimated for Modbus RTU at the bus's baud rate: request and response frames, the
3.5-character silence after each, and the device turnaround. TCP buses show 'network'.
exit status: 0 planned, 1 a point cannot be planned, 2 bad config or unknown device"""


def register(sub: Any) -> None:
    p = sub.add_parser(
        "plan",
        help="show each Modbus device's read requests and wire time per poll cycle",
        description="Compile each Modbus device profile into its optimal read plan (fewest "
        "requests, then fewest registers) and print the requests and the estimated wire time.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    config_file(p)
    p.add_argument("device", nargs="?", help="plan only this device id")
    p.add_argument(
        "--turnaround",
        type=float,
        default=5.0,
        metavar="MS",
        help="device reply latency assumed per request, in ms (default 5)",
    )
    p.set_defaults(func=run)


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms"


def _bus_line(bus_id: str, ep: Endpoint) -> str:
    if ep.is_serial:
        # ASCII sends each byte as two hex characters plus ':' and CR LF: roughly double.
        note = (
            "; RTU framing assumed, ASCII takes about twice as long" if ep.scheme == "ascii" else ""
        )
        return (
            f"bus {bus_id}: {ep.url} ({ep.baudrate} {ep.bytesize}{ep.parity}{ep.stopbits}, "
            f"{ep.char_time * 1000:.3f} ms per character{note})"
        )
    return f"bus {bus_id}: {ep.url} (network: wire time not estimated)"


def _request_rows(reqs: tuple[ReadRequest, ...]) -> list[str]:
    rows = [f"      {'FC':>2}  {'table':<8}  {'start':>5}  {'count':>5}  points"]
    for r in reqs:
        names = ", ".join(p.name for p in r.points)
        rows.append(
            f"      {r.function_code:>2}  {r.table.value:<8}  {r.start:>5}  {r.count:>5}  {names}"
        )
    return rows


def _plan_device(
    loaded: LoadedConfig, dev: DeviceConfig, char_time: float, turnaround: float
) -> tuple[list[str], float]:
    """Lines describing one device's plan, and its wire time per second of polling."""
    prof = loaded.device_profile(dev)
    state = "" if dev.enabled else ", disabled"
    lines = [f"  device {dev.id} ({dev.profile}, unit {dev.unit_id}{state})"]
    plans = plan_by_interval(prof.points, prof.limits, dev.interval)
    load = 0.0
    n_req = n_reg = 0
    total = naive = 0.0
    n_points = 0
    for interval, reqs in plans.items():
        wire = plan_wire_time(reqs, char_time, turnaround)
        regs = sum(r.count for r in reqs)
        timing = f", {_ms(wire)} wire time per cycle" if char_time else ""
        lines.append(
            f"    every {interval:g} s: {len(reqs)} request(s), {regs} register(s){timing}"
        )
        lines.extend(_request_rows(reqs))
        single = tuple(
            ReadRequest(p.table, p.address, p.registers, (p,)) for r in reqs for p in r.points
        )
        n_req += len(reqs)
        n_reg += regs
        n_points += len(single)
        total += wire
        naive += plan_wire_time(single, char_time, turnaround)
        load += wire / interval
    if char_time:
        lines.append(
            f"    total: {n_req} request(s), {n_reg} register(s), {_ms(total)} "
            f"per cycle of every group"
        )
        lines.append(f"    one request per point would be {n_points} requests / {_ms(naive)}")
    else:
        lines.append(f"    total: {n_req} request(s), {n_reg} register(s)")
        lines.append(f"    one request per point would be {n_points} requests")
    return lines, load


def run(args: argparse.Namespace) -> int:
    loaded = load_or_report(args.config, args.dropin)
    if loaded is None:
        return 2
    cfg = loaded.config
    buses = {b.id: b for b in cfg.buses}
    modbus = [d for d in cfg.devices if buses[d.bus].protocol == "modbus"]
    if args.device is not None:
        chosen = [d for d in cfg.devices if d.id == args.device]
        if not chosen:
            known = ", ".join(d.id for d in modbus) or "none"
            print(
                f"cityedge: unknown device '{args.device}' (Modbus devices: {known})",
                file=sys.stderr,
            )
            return 2
        if chosen[0] not in modbus:
            print(
                f"cityedge: device '{args.device}' is on a {buses[chosen[0].bus].protocol} "
                "bus; only Modbus devices have a read plan",
                file=sys.stderr,
            )
            return 2
        modbus = chosen
    else:
        modbus = [d for d in modbus if d.enabled]
    if not modbus:
        print("no Modbus devices to plan")
        return 0
    turnaround = args.turnaround / 1000
    rc = 0
    for bus in cfg.buses:
        devs = [d for d in modbus if d.bus == bus.id]
        if not devs:
            continue
        ep = parse_endpoint(bus.endpoint)
        char_time = ep.char_time if ep.is_serial else 0.0
        print(_bus_line(bus.id, ep))
        bus_load = 0.0
        for dev in devs:
            try:
                lines, load = _plan_device(loaded, dev, char_time, turnaround)
            except PlanError as exc:
                print(f"cityedge: device {dev.id}: {exc}", file=sys.stderr)
                rc = 1
                continue
            print("\n".join(lines))
            bus_load += load
        if char_time:
            print(f"  bus load: {_ms(bus_load)} of wire time per second ({bus_load * 100:.1f} %)")
    return rc
