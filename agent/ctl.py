"""Local control socket: the technician CLI talks to a running daemon through it.

One JSON object per line each way, on a Unix socket in the state directory (mode 0660: root and
the service's group). Operations: ``status``, ``read`` (last decoded values of a device, with
their age), ``write`` (queued ahead of polls on the device's bus, read back, audited). There is
deliberately no operation that runs a shell or makes the gateway connect anywhere.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agent.control.audit import AuditLog, audit_path
from agent.control.model import Command, CommandResult, CommandStatus
from agent.observe import sink_snapshot
from agent.reading import now_ms

if TYPE_CHECKING:
    from agent.runtime import Agent

log = logging.getLogger("cityedge.ctl")
MAX_LINE = 64 * 1024
SOCKET_RETRY = 30.0  # seconds between attempts while the state directory is not writable


def socket_path(state_dir: str | Path) -> Path:
    return Path(state_dir) / "control.sock"


class ControlError(Exception):
    def __init__(self, message: str) -> None:
        self.message = message
        super().__init__(message)


def devices_of(agent: Agent) -> dict[str, Any]:
    """Per-device status from the bus owners' counters (CLI status, MQTT health message)."""
    devices: dict[str, Any] = {}
    for bus_id, driver in agent.drivers.items():
        for dev_id, st in driver.stats.devices.items():
            devices[dev_id] = {
                "bus": bus_id,
                "online": st.online,
                "polls": st.polls,
                "timeouts": st.timeouts,
                "exceptions": st.exceptions,
                "lastSuccessAgeS": None
                if st.last_success_ms is None
                else round((now_ms() - st.last_success_ms) / 1000, 1),
                "unsupported": list(st.unsupported_points),
            }
    return devices


def status_of(agent: Agent) -> dict[str, Any]:
    devices = devices_of(agent)
    sinks = []
    for s in agent.sinks:
        snap = sink_snapshot(s, now_ms())
        entry: dict[str, Any] = {"name": snap.name, "type": snap.kind}
        if snap.connected is not None:
            entry["connected"] = snap.connected
        if snap.has_outbox:
            entry["outbox"] = {
                "depth": snap.outbox_depth,
                "oldestAgeS": snap.outbox_oldest_age_s,
                "drops": snap.outbox_dropped,
                "bytes": snap.outbox_bytes,
                "budgetBytes": snap.outbox_budget,
                "inMemory": snap.outbox_memory,
                "fault": snap.outbox_fault,
                "alarms": list(snap.outbox_alarms),
            }
        sinks.append(entry)
    return {
        "gateway": agent.loaded.config.gateway.id,
        "uptimeS": round(time.monotonic() - agent.started_at, 1),
        "readingsRead": agent.pipeline.received,
        "readingsDelivered": agent.pipeline.delivered,
        "devices": devices,
        "sinks": sinks,
        "lastReload": agent.last_reload.to_dict() if agent.last_reload else None,
    }


def read_of(agent: Agent, device: str, points: list[str]) -> dict[str, Any]:
    if not any(b.id == device for b in agent.bindings):
        raise ControlError(f"unknown device '{device}'")
    now = now_ms()
    rows = []
    for (dev, point), r in sorted(agent.pipeline.last_values.items()):
        if dev == device and (not points or point in points):
            rows.append({**r.to_dict(), "ageS": round((now - r.observed_at_ms) / 1000, 1)})
    missing = [p for p in points if not any(row["point"] == p for row in rows)]
    if missing:
        raise ControlError(f"no value yet for {', '.join(missing)} of '{device}'")
    return {"readings": rows}


class ControlServer:
    def __init__(self, agent: Agent, path: Path) -> None:
        self.agent = agent
        self.path = path
        cfg = agent.loaded.config
        self.audit = AuditLog(audit_path(cfg))

    async def run(self) -> None:
        server = None
        failed = False
        while server is None:
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                with contextlib.suppress(FileNotFoundError):
                    self.path.unlink()
                server = await asyncio.start_unix_server(
                    self._client, path=str(self.path), limit=MAX_LINE
                )
                os.chmod(self.path, 0o660)
            except OSError as exc:  # a read-only or full state directory: try again later
                if server is None:
                    (log.debug if failed else log.error)(
                        "control socket %s: %s; cityedge status/read/write cannot reach the "
                        "agent until the state directory is writable (retrying every %.0f s)",
                        self.path,
                        exc.strerror or exc,
                        SOCKET_RETRY,
                    )
                    failed = True
                    await asyncio.sleep(SOCKET_RETRY)
        try:
            async with server:
                await server.serve_forever()
        finally:
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while line := await reader.readline():
                try:
                    reply = await self.handle(json.loads(line))
                except ControlError as exc:
                    reply = {"ok": False, "error": exc.message}
                except (ValueError, TypeError, KeyError) as exc:
                    reply = {"ok": False, "error": f"bad request: {exc}"}
                writer.write(json.dumps(reply, default=str).encode() + b"\n")
                await writer.drain()
        except (ConnectionError, asyncio.LimitOverrunError, ValueError):
            pass
        finally:
            writer.close()

    async def handle(self, req: dict[str, Any]) -> dict[str, Any]:
        op = req.get("op")
        if op == "status":
            return {"ok": True, **status_of(self.agent)}
        if op == "read":
            return {
                "ok": True,
                **read_of(self.agent, str(req["device"]), [str(p) for p in req.get("points", [])]),
            }
        if op == "write":
            device, point, value = str(req["device"]), str(req["point"]), req["value"]
            cid = f"cli-{now_ms()}"
            cmd = Command(cid, "cli", device, point, value)
            if self.agent.router is not None:
                res = await self.agent.router.execute(cmd)
            else:
                wr = await self.agent.write(device, point, value, 10.0)
                res = CommandResult(
                    cid, CommandStatus(wr.status.value), wr.reason, device, point, wr.readback
                )
                self.audit.record(cmd, res)
            return {"ok": res.status is CommandStatus.OK, **res.to_dict()}
        raise ControlError(f"unknown operation {op!r} (status, read, write)")


async def request(path: Path, req: dict[str, Any], timeout: float = 15.0) -> dict[str, Any]:
    """Client side; raises ConnectionError / FileNotFoundError when no daemon listens."""
    reader, writer = await asyncio.wait_for(
        asyncio.open_unix_connection(str(path), limit=MAX_LINE), 2.0
    )
    try:
        writer.write(json.dumps(req).encode() + b"\n")
        await writer.drain()
        line = await asyncio.wait_for(reader.readline(), timeout)
        if not line:
            raise ConnectionError("the agent closed the control connection")
        reply: dict[str, Any] = json.loads(line)
        return reply
    finally:
        writer.close()
