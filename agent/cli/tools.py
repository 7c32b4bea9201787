"""Technician commands: ``read``, ``write`` and ``status``.

While the daemon runs, ``read``/``write``/``status`` go through its control socket (the daemon
owns the bus; a second opener would corrupt RS-485 traffic or fail on the exclusive port).
Without a daemon, ``read`` opens the device's bus for one poll, and ``write`` builds the same
command router the daemon has (agent/control/setup.py) and sends the command through it on the
``local`` channel: same checks, rate limit, de-duplication store and audit trail, so the audit
record is the same with or without a daemon.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from agent.cli.common import config_option, load_or_report
from agent.config.loader import LoadedConfig
from agent.control.ctl import request, socket_path
from agent.control.validate import find_point
from agent.runtime import bindings_for
from drivers.base import DeviceBinding, WriteResult, WriteStatus
from drivers.core.profile import Point
from drivers.core.reading import Reading, Value
from drivers.device_state import Transition
from drivers.registry import create_driver

EXAMPLES = {
    "read": """examples:
  cityedge read lamp-1                          # every point of lamp-1
  cityedge read lamp-1 dim_level totalActivePower   # point or Smart Data Models names
  cityedge read -c examples/demo.toml meter-11 --json
exit status: 0 read, 1 no good value, 2 unknown device or point, 78 bad configuration""",
    "write": """examples:
  cityedge write lamp-1 dim_level 0.4           # 0..1, the register holds percent
  cityedge write lamp-1 illuminanceLevel 0.4    # the same point by its Smart Data Models name
  cityedge write lamp-1 working_mode manual
  cityedge write lamp-1 lamp_switch on
  cityedge write --id wo-2291 cam-21 preset 3   # the same id again is answered, not re-sent
exit status: 0 ok, 1 failed or timeout, 2 rejected (nothing reached the device),
78 bad configuration""",
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
    p.add_argument(
        "points", nargs="*", help="point names or Smart Data Models names (default: all)"
    )
    _common(p)
    p.set_defaults(func=cmd_read)
    w = sub.add_parser(
        "write",
        help="write one point of a device (validated, read back)",
        epilog=EXAMPLES["write"],
        formatter_class=fmt,
        description="Write a writable point through the command router (the local channel, "
        "docs/COMMANDS.md): checked against the profile's type, bounds and enum, "
        "rate-limited, de-duplicated by id, read back and audited with your user name. "
        "Through the running agent when there is one, else in this process with the same "
        "checks and audit trail.",
    )
    w.add_argument("device")
    w.add_argument("point", help="point name or Smart Data Models name")
    w.add_argument("value", help="number, true/false (boolean points), or an enum label")
    w.add_argument("--id", help="command id (default: a new one); a repeated id is not re-sent")
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
    config_option(p)
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--timeout", type=float, default=15.0, help="seconds (default 15)")


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

    async def on_state(t: Transition) -> None:
        # a link that cannot open (refused, port gone...) yields no readings, only this
        if t.device_id == binding.id and not t.online and not got.done():
            got.set_exception(DeviceOffline(t))

    driver = create_driver(bus, [binding], emit, on_state)
    failure: Exception | None = None
    async with asyncio.TaskGroup() as tg:
        task = tg.create_task(driver.run(), name=f"bus:{bus.id}")
        try:
            readings = await asyncio.wait_for(got, timeout)
        except (TimeoutError, DeviceOffline) as exc:  # raised out of the group, not wrapped
            failure = exc
        finally:
            task.cancel()
    if failure is not None:
        raise failure
    return readings


class DeviceOffline(Exception):
    def __init__(self, transition: Transition) -> None:
        self.transition = transition
        t = transition
        why = "" if t.reason is None else f": {t.reason.value}"
        super().__init__(f"offline{why}{f' ({t.detail})' if t.detail else ''}")


def _points(binding: DeviceBinding, names: Sequence[str]) -> list[Point] | None:
    """Points by name or Smart Data Models name; None (after saying why) if one is unknown."""
    found = {n: find_point(binding.profile, n) for n in names}
    unknown = [n for n, p in found.items() if p is None]
    if unknown:
        known = ", ".join(p.name for p in binding.profile.points)
        print(
            f"cityedge: '{binding.id}' has no point {', '.join(unknown)} (points: {known})",
            file=sys.stderr,
        )
        return None
    return [p for p in found.values() if p is not None]


def cmd_read(args: argparse.Namespace) -> int:
    loaded = load_or_report(args.config)
    if loaded is None:
        return 78
    binding = _binding(loaded, args.device)
    points = _points(binding, args.points)
    if points is None:
        return 2
    names = [p.name for p in points]
    reply = asyncio.run(
        _daemon(loaded, {"op": "read", "device": args.device, "points": names}, args.timeout)
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
        except DeviceOffline as exc:
            print(f"cityedge: '{args.device}' is {exc}", file=sys.stderr)
            return 1
        rows = [r.to_dict() for r in readings if not names or r.point in names]
    order = {p.name: i for i, p in enumerate(binding.profile.points)}
    rows.sort(key=lambda r: order.get(str(r.get("point")), len(order)))  # the profile's order
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        from agent.cli.render import console, values_table

        console().print(values_table(rows))
    bad = [r for r in rows if r.get("quality") != "good"]
    return 1 if bad and len(bad) == len(rows) else 0


def _bus_writer(loaded: LoadedConfig, bindings: Sequence[DeviceBinding]) -> Any:
    """A router writer that opens the device's bus for one write (no daemon owns it)."""

    async def emit(b: DeviceBinding, batch: Sequence[Reading]) -> None:
        return None

    async def write(device: str, point: str, value: Value, timeout: float) -> WriteResult:
        binding = next(b for b in bindings if b.id == device)  # the router checked it exists
        bus = next(b for b in loaded.config.buses if b.id == binding.device.bus)
        driver = create_driver(bus, [binding], emit)
        task = asyncio.create_task(driver.run(), name=f"bus:{bus.id}")
        try:
            try:
                await asyncio.wait_for(driver.ready(), timeout)
            except TimeoutError:
                return WriteResult(WriteStatus.TIMEOUT, f"bus {bus.id} did not open in time")
            return await driver.write(device, point, value, timeout)
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    return write


async def _in_process_write(loaded: LoadedConfig, args: argparse.Namespace) -> dict[str, Any]:
    from agent.control import peer as peers
    from agent.control.ctl import local_command, new_local_id
    from agent.control.model import CommandStatus
    from agent.control.setup import build_router

    bindings = bindings_for(loaded)
    router = build_router(loaded.config, bindings, _bus_writer(loaded, bindings))
    try:
        req = {"device": args.device, "point": args.point, "text": args.value}
        cmd = local_command(bindings, req, peers.of_process(), args.id or new_local_id())
        res = await router.execute(cmd)
    finally:
        router.store.close()
    return {"ok": res.status is CommandStatus.OK, **res.to_dict()}


def _writable_state(loaded: LoadedConfig) -> str | None:
    """Why this user cannot keep the audit trail and the command store, or None."""
    state = Path(loaded.config.gateway.state_dir)
    probe = state if state.exists() else state.parent
    if not os.access(probe, os.W_OK | os.X_OK):
        return (
            f"cannot write the audit trail and command store in {state}: run as root "
            "(sudo), or start the agent and write through it"
        )
    return None


def _adopt_state_files(loaded: LoadedConfig) -> None:
    """Files root created in the state directory must stay the service user's: give them to
    the directory's owner, or the daemon could not append to them later."""
    if os.geteuid() != 0:
        return
    from agent.control.audit import audit_path
    from agent.control.setup import store_path

    state = Path(loaded.config.gateway.state_dir)
    try:
        st = state.stat()
    except OSError:
        return
    store = store_path(loaded.config)
    for f in (audit_path(loaded.config), store, *(Path(f"{store}{s}") for s in ("-wal", "-shm"))):
        try:
            if f.stat().st_uid != st.st_uid:
                os.chown(f, st.st_uid, st.st_gid)
        except OSError:
            continue


def cmd_write(args: argparse.Namespace) -> int:
    loaded = load_or_report(args.config)
    if loaded is None:
        return 78
    req = {"op": "write", "device": args.device, "point": args.point, "text": args.value}
    if args.id:
        req["id"] = args.id
    reply = asyncio.run(_daemon(loaded, req, args.timeout))
    if reply is None:
        if (why := _writable_state(loaded)) is not None:
            print(f"cityedge: {why}", file=sys.stderr)
            return 1
        try:
            reply = asyncio.run(_in_process_write(loaded, args))
        finally:
            _adopt_state_files(loaded)
    elif "status" not in reply:  # the daemon refused the request itself
        print(f"cityedge: agent says: {reply.get('error')}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(reply))
    elif reply.get("ok"):
        note = ""
        if "requested" in reply:
            note = f" (asked {reply['requested']!r}: the register's resolution)"
        dup = " [already done: answered from the record, not sent again]"
        print(
            f"{args.device}.{reply.get('target', args.point)} = {reply.get('value')!r} "
            f"(read back){note}{dup if reply.get('duplicate') else ''}"
        )
    else:
        print(f"cityedge: write {reply.get('status')}: {reply.get('reason')}", file=sys.stderr)
    if reply.get("ok"):
        return 0
    return 2 if reply.get("status") == "rejected" else 1


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
    snap = asyncio.run(_daemon(loaded, {"op": "snapshot"}, args.timeout))
    if snap is not None and snap.get("ok"):  # an older agent has no snapshot: no values then
        values = {d["id"]: d.get("values", []) for d in snap["devices"]}
        for dev, st in reply["devices"].items():
            st["values"] = values.get(dev, [])
    if args.json:
        print(json.dumps(reply, indent=2))
        return 0
    from agent.cli.render import console
    from agent.cli.views import print_status

    print_status(console(), reply)
    return 0
