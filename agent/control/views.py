"""Read-only views of the running agent for the control socket: what a live front end needs.

Operations (one JSON object per line, docs/COMMANDS.md "The control socket"):

- ``values`` (``devices``: optional list of ids): for each enabled device its kind, bus and
  profile, and every point of its profile with what a front end needs to show and write it
  (unit, writable, type, bounds, enum labels) and the last value the device gave (value,
  quality, reason, observedAt, ageS; absent before the first poll). Values are pre-filter:
  what the device said, not what was forwarded. ``"meta": false``: each point's name and
  value fields only (no observedAt), for a live view that asked once with the description.
- ``buses``: each bus's endpoint, protocol, link (connected, linkError, retryInS) and traffic
  counters (requests, busyS, reconnects) with the agent's uptime, so a client turns two
  answers into a measured bus load (busyS difference / time difference).
- ``plan``: the Modbus read plan each device is polled with (the planner's requests per
  interval group), the estimated wire time per cycle and the planned bus load on serial
  lines (agent/cli/plan.py prints the same for a config file).
- ``warnings`` (``since``: optional seq): the last WARNING+ log records (agent/ops/recent.py).

Nothing here touches a bus: the answers come from counters and caches the agent keeps anyway.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, Protocol

from agent.control.snapshot import SnapshotSource, bus_row, device_info, value_fields
from agent.ops.recent import RecentLog
from drivers.core.endpoint import parse_endpoint
from drivers.core.profile import DataType, Point
from drivers.core.reading import now_ms


class Agent(SnapshotSource, Protocol):
    """What the views read of ``agent.runtime.Agent`` (which satisfies it as is)."""

    @property
    def recent(self) -> RecentLog: ...


_BOOL_TYPES = (DataType.BOOL, DataType.BIT)


def point_info(p: Point) -> dict[str, Any]:
    """A point's description for a front end (the value comes from the last reading)."""
    kind = "bool" if p.type in _BOOL_TYPES else "enum" if p.enum else "number"
    if p.type in (DataType.STRING, DataType.BITFIELD) or p.flag_enum or p.flags:
        kind = "text"
    info: dict[str, Any] = {
        "point": p.name,
        "metric": p.metric or p.name,
        "unit": p.unit,
        "type": kind,
        "writable": p.writable and kind != "text",
    }
    if p.description:
        info["description"] = p.description
    if p.min is not None:
        info["min"] = p.min
    if p.max is not None:
        info["max"] = p.max
    if p.enum:
        info["labels"] = list(p.enum.values())
    return info


def values_of(agent: Agent, devices: list[str] | None = None, meta: bool = True) -> dict[str, Any]:
    """``meta=False``: only each point's name and last value (a live view that has the rest
    from one earlier answer: a third of the bytes and of the agent's CPU)."""
    now = now_ms()
    wanted = None if not devices else set(devices)
    out: dict[str, Any] = {}
    last = agent.pipeline.last_values
    for b in agent.bindings:
        if wanted is not None and b.id not in wanted:
            continue
        points = []
        for p in b.profile.points:
            row: dict[str, Any] = point_info(p) if meta else {"point": p.name}
            r = last.get((b.id, p.name))
            if r is not None:
                row.update(value_fields(r, now, observed=meta))
            points.append(row)
        out[b.id] = {**device_info(b), "points": points} if meta else {"points": points}
    if wanted is not None and (unknown := sorted(wanted - out.keys())):
        from agent.control.ctl import ControlError

        raise ControlError(f"unknown device {', '.join(unknown)}")
    return {"devices": out}


def buses_of(agent: Agent) -> dict[str, Any]:
    buses = [bus_row(agent, bus) for bus in agent.loaded.config.buses]
    return {"uptimeS": round(time.monotonic() - agent.started_at, 3), "buses": buses}


def plan_of(agent: Agent, turnaround: float = 0.005) -> dict[str, Any]:
    from drivers.modbus.planner import PlanError, plan_by_interval, plan_wire_time

    loaded = agent.loaded
    buses = []
    for bus in loaded.config.buses:
        ep = parse_endpoint(bus.endpoint)
        char_time = ep.char_time if ep.is_serial else 0.0
        entry: dict[str, Any] = {
            "id": bus.id,
            "endpoint": bus.endpoint,
            "protocol": bus.protocol,
            "serial": ep.is_serial,
            "devices": [],
        }
        if ep.is_serial:
            entry["line"] = f"{ep.baudrate} {ep.bytesize}{ep.parity}{ep.stopbits}"
        load = 0.0
        for dev in loaded.devices_on(bus.id):
            d: dict[str, Any] = {"id": dev.id, "profile": dev.profile, "unit": dev.unit_id}
            entry["devices"].append(d)
            if bus.protocol != "modbus":
                d["note"] = f"{bus.protocol} protocol: polled by its own exchange, no read plan"
                continue
            prof = loaded.device_profile(dev)
            try:
                plans = plan_by_interval(prof.points, prof.limits, dev.interval)
            except PlanError as exc:
                d["error"] = str(exc)
                continue
            groups = []
            for interval, reqs in plans.items():
                wire = plan_wire_time(reqs, char_time, turnaround) if char_time else None
                if wire is not None:
                    load += wire / interval
                groups.append(
                    {
                        "interval": interval,
                        "wireS": wire,
                        "requests": [
                            {
                                "fc": r.function_code,
                                "table": r.table.value,
                                "start": r.start,
                                "count": r.count,
                                "points": [p.name for p in r.points],
                            }
                            for r in reqs
                        ],
                    }
                )
            d["groups"] = groups
            d["points"] = sum(len(r.points) for g in plans.values() for r in g)
        entry["plannedLoad"] = round(load, 4) if char_time else None
        buses.append(entry)
    return {"turnaroundS": turnaround, "buses": buses}


def warnings_of(agent: Agent, since: int = 0) -> dict[str, Any]:
    return {"warnings": agent.recent.records(since)}


def view(agent: Agent, req: dict[str, Any]) -> dict[str, Any] | None:
    """The answer to a view operation, or None when ``op`` is not one of them."""
    handlers: dict[str, Callable[[], dict[str, Any]]] = {
        "values": lambda: values_of(
            agent, [str(d) for d in req.get("devices") or []], bool(req.get("meta", True))
        ),
        "buses": lambda: buses_of(agent),
        "plan": lambda: plan_of(agent),
        "warnings": lambda: warnings_of(agent, int(req.get("since") or 0)),
    }
    fn = handlers.get(str(req.get("op")))
    return None if fn is None else fn()


OPERATIONS = ("values", "buses", "plan", "warnings")
