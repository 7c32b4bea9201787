"""Technician commands: ``read``, ``write`` and ``status``.

While the daemon runs, ``read``/``write``/``status`` go through its control socket (the daemon
owns the bus; a second opener would corrupt RS-485 traffic or fail on the exclusive port).
Without a daemon, ``read`` and ``write`` open the device's bus themselves for one shot.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Sequence
from typing import Any

from agent.commands.common import load_or_report
from agent.config.loader import LoadedConfig
from agent.ctl import request, socket_path
from agent.reading import Reading
from agent.runtime import bindings_for
from drivers.base import DeviceBinding, WriteStatus, create_driver

DEFAULT_CONFIG = "/etc/cityedge/gateway.toml"
EXAMPLES = {
    "read": """examples:
  cityedge read lamp-1                      # every point of lamp-1
  cityedge read lamp-1 dimLevel activePower
  cityedge read -c examples/demo.toml meter-1 --json""",
    "write": """examples:
  cityedge write lamp-1 dimLevel 40
  cityedge write lamp-1 mode manual
  cityedge write cam-1 gotoPreset 3""",
    "status": """examples:
  cityedge status
  cityedge status --json""",
}


def register(sub: Any) -> None:
    fmt = argparse.RawDescriptionHelpFormatter
    p = sub.add_parser(
        "read",
        help="read a device's points once (decoded)",
        epilog=EXAMPLES["read"],
        formatter_class=fmt,
        description="Read and decode points of one device. "
        "Goes through the running agent when there is one, else opens the bus itself.",
    )
    p.add_argument("device")
    p.add_argument("points", nargs="*", help="point names (default: all)")
    _common(p)
    p.set_defaults(func=cmd_read)
    w = sub.add_parser(
        "write",
        help="write one point of a device (validated, read back)",
        epilog=EXAMPLES["write"],
        formatter_class=fmt,
        description="Write a writable point; the value is checked against the "
        "profile's type, bounds and enum, then read back. Audited.",
    )
    w.add_argument("device")
    w.add_argument("point")
    w.add_argument("value", help="number, true/false, or an enum name")
    _common(w)
    w.set_defaults(func=cmd_write)
    s = sub.add_parser(
        "status",
        help="devices, last values, outbox and broker link of the running agent",
        epilog=EXAMPLES["status"],
        formatter_class=fmt,
    )
    _common(s)
    s.set_defaults(func=cmd_status)


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("-c", "--config", default=DEFAULT_CONFIG, help=f"default {DEFAULT_CONFIG}")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--timeout", type=float, default=15.0, help="seconds (default 15)")


def _value(text: str) -> object:
    low = text.lower()
    if low in ("true", "on"):
        return True
    if low in ("false", "off"):
        return False
    try:
        return int(text)
    except ValueError:
        pass
    try:
        return float(text)
    except ValueError:
        return text


async def _daemon(
    loaded: LoadedConfig, req: dict[str, Any], timeout: float
) -> dict[str, Any] | None:
    path = socket_path(loaded.config.gateway.state_dir)
    if not path.exists():
        return None
    try:
        return await request(path, req, timeout)
    except (ConnectionError, FileNotFoundError, TimeoutError, OSError):
        return None


def _binding(loaded: LoadedConfig, device: str) -> DeviceBinding:
    for b in bindings_for(loaded):
        if b.id == device:
            return b
    known = ", ".join(d.id for d in loaded.config.devices)
    raise SystemExit(f"cityedge: unknown device '{device}' (configured: {known})")


async def _one_shot_read(
    loaded: LoadedConfig, binding: DeviceBinding, timeout: float
) -> list[Reading]:
    bus = next(b for b in loaded.config.buses if b.id == binding.device.bus)
    got: asyncio.Future[list[Reading]] = asyncio.get_running_loop().create_future()

    async def emit(b: DeviceBinding, batch: Sequence[Reading]) -> None:
        if b.id == binding.id and not got.done():
            got.set_result(list(batch))

    driver = create_driver(bus, [binding], emit)
    async with asyncio.TaskGroup() as tg:
        task = tg.create_task(driver.run(), name=f"bus:{bus.id}")
        try:
            return await asyncio.wait_for(got, timeout)
        finally:
            task.cancel()


def _table(rows: list[dict[str, Any]]) -> str:
    cols = ["point", "value", "unit", "quality", "observedAt"]
    data = [
        [
            ("" if r.get(c) is None else str(r.get(c)))
            + (f" ({r['reason']})" if c == "quality" and r.get("reason") else "")
            for c in cols
        ]
        for r in rows
    ]
    widths = [
        max(len(c), *(len(d[i]) for d in data)) if data else len(c) for i, c in enumerate(cols)
    ]
    lines = ["  ".join(c.ljust(w) for c, w in zip(cols, widths, strict=True))]
    lines += ["  ".join(v.ljust(w) for v, w in zip(d, widths, strict=True)) for d in data]
    return "\n".join(lines)


def cmd_read(args: argparse.Namespace) -> int:
    loaded = load_or_report(args.config)
    if loaded is None:
        return 78
    binding = _binding(loaded, args.device)
    unknown = [p for p in args.points if p not in {x.name for x in binding.profile.points}]
    if unknown:
        names = ", ".join(p.name for p in binding.profile.points)
        print(
            f"cityedge: '{args.device}' has no point {', '.join(unknown)} (points: {names})",
            file=sys.stderr,
        )
        return 2
    reply = asyncio.run(
        _daemon(loaded, {"op": "read", "device": args.device, "points": args.points}, args.timeout)
    )
    if reply is not None:
        if not reply.get("ok"):
            print(f"cityedge: agent says: {reply.get('error')}", file=sys.stderr)
            return 1
        rows = reply["readings"]
    else:
        try:
            readings = asyncio.run(_one_shot_read(loaded, binding, args.timeout))
        except TimeoutError:
            print(
                f"cityedge: no answer from '{args.device}' within {args.timeout:g} s: check "
                "wiring, unit id and baud rate (try 'cityedge scan')",
                file=sys.stderr,
            )
            return 1
        rows = [r.to_dict() for r in readings if not args.points or r.point in args.points]
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        print(_table(rows))
    bad = [r for r in rows if r.get("quality") != "good"]
    return 1 if bad and len(bad) == len(rows) else 0


async def _one_shot_write(
    loaded: LoadedConfig, binding: DeviceBinding, point: str, value: object, timeout: float
) -> dict[str, Any]:
    bus = next(b for b in loaded.config.buses if b.id == binding.device.bus)

    async def emit(b: DeviceBinding, batch: Sequence[Reading]) -> None:
        return None

    driver = create_driver(bus, [binding], emit)
    async with asyncio.TaskGroup() as tg:
        task = tg.create_task(driver.run(), name=f"bus:{bus.id}")
        try:
            await asyncio.wait_for(driver.ready(), timeout)
            res = await driver.write(binding.id, point, value, timeout)  # type: ignore[arg-type]
        finally:
            task.cancel()
    return {
        "ok": res.status is WriteStatus.OK,
        "status": res.status.value,
        "reason": res.reason,
        "value": res.readback,
    }


def cmd_write(args: argparse.Namespace) -> int:
    loaded = load_or_report(args.config)
    if loaded is None:
        return 78
    binding = _binding(loaded, args.device)
    value = _value(args.value)
    reply = asyncio.run(
        _daemon(
            loaded,
            {"op": "write", "device": args.device, "point": args.point, "value": value},
            args.timeout,
        )
    )
    if reply is None:
        from agent.control.model import CommandRejected
        from agent.control.validate import check_value

        try:
            point = binding.profile.point(args.point)
            if not point.writable:
                raise CommandRejected(f"point '{args.point}' is read-only")
            check_value(point, value)  # type: ignore[arg-type]
        except KeyError:
            print(f"cityedge: '{args.device}' has no point '{args.point}'", file=sys.stderr)
            return 2
        except CommandRejected as exc:
            print(f"cityedge: rejected: {exc.reason}", file=sys.stderr)
            return 2
        reply = asyncio.run(_one_shot_write(loaded, binding, args.point, value, args.timeout))
    if args.json:
        print(json.dumps(reply))
    elif reply.get("ok"):
        print(f"{args.device}.{args.point} = {reply.get('value')!r} (read back)")
    else:
        print(f"cityedge: write {reply.get('status')}: {reply.get('reason')}", file=sys.stderr)
    return 0 if reply.get("ok") else 1


def cmd_status(args: argparse.Namespace) -> int:
    loaded = load_or_report(args.config)
    if loaded is None:
        return 78
    reply = asyncio.run(_daemon(loaded, {"op": "status"}, args.timeout))
    if reply is None:
        print(
            f"cityedge: no running agent answers on "
            f"{socket_path(loaded.config.gateway.state_dir)}; is the service running? "
            "(systemctl status cityedge)",
            file=sys.stderr,
        )
        return 3
    if args.json:
        print(json.dumps(reply, indent=2))
        return 0
    print(
        f"gateway {reply['gateway']}: up {reply['uptimeS']:.0f} s, "
        f"{reply['readingsRead']} readings read, {reply['readingsDelivered']} delivered"
    )
    for dev, st in sorted(reply["devices"].items()):
        state = "online " if st["online"] else "OFFLINE"
        age = st["lastSuccessAgeS"]
        print(
            f"  {dev:<16} {state} bus {st['bus']:<10} polls {st['polls']:<6} timeouts "
            f"{st['timeouts']:<4} last ok {'-' if age is None else f'{age:.0f} s ago'}"
        )
    for s in reply["sinks"]:
        extra = ""
        ob = s.get("outbox")
        if ob:
            extra = f", {_outbox_line(ob)}"
        if s.get("connected") is not None:
            extra += f", broker {'connected' if s['connected'] else 'DISCONNECTED'}"
        print(f"  output {s['name']} ({s['type']}){extra}")
        if ob and ob.get("fault"):
            print(f"    FAILING: {ob['fault']}")
        for alarm in (ob or {}).get("alarms") or []:
            print(f"    {alarm}")
    if reply.get("lastReload"):
        print(f"  last reload: {reply['lastReload']}")
    return 0


def _outbox_line(ob: dict[str, Any]) -> str:
    from agent.statedir import mib

    age = ob.get("oldestAgeS")
    line = f"outbox {ob.get('depth')} waiting"
    if age:
        line += f" (oldest {age:.0f} s)"
    if ob.get("bytes") is not None and ob.get("budgetBytes"):
        line += f", {mib(ob['bytes'])} of a {mib(ob['budgetBytes'])} budget"
    line += f", {ob.get('drops') or 0} dropped"
    if ob.get("inMemory"):
        line += f", {ob['inMemory']} in memory"
    return line
