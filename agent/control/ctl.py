"""Local control socket: the technician CLI talks to a running daemon through it.

One JSON object per line each way, on a Unix socket (mode 0660, group ``[commands]
local_group`` when it exists) in ``$RUNTIME_DIRECTORY`` when systemd gives the agent one (the
unit's ``RuntimeDirectory=cityedge``: ``/run/cityedge``, mode 0750, group ``cityedge``, so
members of that group reach it without sudo), else in the state directory (a manual run). The
CLI looks in the state directory first, then in the runtime directory. Operations:
``status``, ``read`` (last decoded values of a device, with their age), ``write`` (through
the command router on the ``local`` channel: validated, rate-limited, de-duplicated by id,
queued ahead of polls, read back, audited with the caller's user name, and ``onBehalfOf`` when
a trusted front end names its logged-in user), ``snapshot`` (buses, devices and every last
value at once, for `cityedge watch`: agent/control/snapshot.py) and the read-only views of
agent/control/views.py (``values``, ``buses``, ``plan``, ``warnings``) for live front ends.
Callers are identified by their Unix peer credentials (SO_PEERCRED); see
agent/control/peer.py. There is deliberately no operation that runs a shell or makes the
gateway connect anywhere.
"""

from __future__ import annotations

import asyncio
import contextlib
import grp
import itertools
import json
import logging
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agent.control import peer as peers
from agent.control import views
from agent.control.model import Command, CommandStatus, PeerCred
from agent.control.snapshot import device_state, snapshot_of
from agent.control.validate import find_point, value_from_text
from agent.ops.alarms import ServiceUnavailable
from drivers.core.reading import now_ms

if TYPE_CHECKING:
    from agent.control.router import CommandRouter
    from agent.runtime import Agent

log = logging.getLogger("cityedge.ctl")
MAX_LINE = 64 * 1024  # a request
# an answer: `values` or `status` of a few hundred devices is well over MAX_LINE
REPLY_LIMIT = 16 * 1024 * 1024
SOCKET_NAME = "control.sock"
RUNTIME_DIR = Path("/run/cityedge")  # RuntimeDirectory=cityedge in systemd/cityedge.service


def listen_path(state_dir: str | Path) -> Path:
    """Where the daemon creates its socket: systemd's runtime directory when it has one."""
    runtime = os.environ.get("RUNTIME_DIRECTORY", "").split(":")[0]
    return Path(runtime or state_dir) / SOCKET_NAME


def socket_path(state_dir: str | Path) -> Path:
    """Where the CLI finds the daemon of a config: the first socket that exists, looking in
    the state directory (a manual run), then the runtime directory of the installed unit.
    Without one, where the daemon would create it (for messages)."""
    candidates = [Path(state_dir) / SOCKET_NAME, listen_path(state_dir), RUNTIME_DIR / SOCKET_NAME]
    for path in candidates:
        try:
            if path.exists():
                return path
        except OSError:  # a state directory this user may not look into (0700)
            continue
    return listen_path(state_dir)


class ControlError(Exception):
    def __init__(self, message: str) -> None:
        self.message = message
        super().__init__(message)


def devices_of(agent: Agent) -> dict[str, Any]:
    """Per-device status from the bus owners' counters (CLI status, MQTT health message)."""
    now, mono = now_ms(), time.monotonic()
    return {
        dev_id: {"bus": bus_id, **device_state(st, now, mono)}
        for bus_id, driver in agent.drivers.items()
        for dev_id, st in driver.stats.devices.items()
    }


def status_of(agent: Agent) -> dict[str, Any]:
    devices = devices_of(agent)
    sinks = []
    outputs = {o.id: o for o in agent.loaded.config.outputs}
    for s in agent.sinks:
        snap = s.stats()
        out = outputs.get(snap.name)
        # the output's configured type ("mqtt", "jsonl"), not the class that implements it
        entry: dict[str, Any] = {"name": snap.name, "type": out.type if out else snap.kind}
        if out is not None and out.type == "mqtt":
            entry["encoding"] = out.encoding
        if snap.broker is not None:
            entry["broker"] = snap.broker
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
        "commands": None if agent.router is None else commands_of(agent.router),
        "alarms": [a.to_dict() for a in agent.alarms.active()],
    }


def commands_of(router: CommandRouter) -> dict[str, Any]:
    """Command outcomes since start, and whether answers are durable (docs/COMMANDS.md)."""
    return {
        **router.counts,
        "storeDegraded": router.store.degraded,
        "auditErrors": router.audit.errors,
    }


def read_of(agent: Agent, device: str, names: list[str]) -> dict[str, Any]:
    binding = next((b for b in agent.bindings if b.id == device), None)
    if binding is None:
        raise ControlError(f"unknown device '{device}'")
    points = []
    for name in names:  # point names or Smart Data Models metric names
        p = find_point(binding.profile, name)
        if p is None:
            raise ControlError(f"device '{device}' has no point '{name}'")
        points.append(p.name)
    now = now_ms()
    rows = []
    for (dev, point), r in sorted(agent.pipeline.last_values.items()):
        if dev == device and (not points or point in points):
            rows.append({**r.to_dict(), "ageS": round((now - r.observed_at_ms) / 1000, 1)})
    missing = [p for p in points if not any(row["point"] == p for row in rows)]
    if missing:
        raise ControlError(f"no value yet for {', '.join(missing)} of '{device}'")
    return {"readings": rows}


def local_command(agent_bindings: Any, req: dict[str, Any], caller: PeerCred, cid: str) -> Command:
    """A ``write`` request as a command of the local channel. ``text`` (what was typed on the
    command line) is read as the point's type here, where the profile is known: ``on`` is a
    label of an enum point and a boolean only for a boolean point."""
    device, name = str(req["device"]), str(req["point"])
    value = req.get("value")
    if "text" in req:
        binding = next((b for b in agent_bindings if b.id == device), None)
        point = find_point(binding.profile, name) if binding is not None else None
        value = value_from_text(point, str(req["text"])) if point is not None else req["text"]
    for_whom = req.get("onBehalfOf")
    if for_whom is not None:
        if not peers.may_name_users(caller):
            raise ControlError(
                f"refused: user '{caller.user}' may not name another user (onBehalfOf): only "
                "root and the agent's own user can, for the people their front end logged in"
            )
        for_whom = _user_label(str(for_whom))
    return Command(
        cid, "local", device, name, value, origin=caller.user, peer=caller, on_behalf_of=for_whom
    )


def _user_label(name: str) -> str:
    """A front end's user name as the audit trail keeps it: printable, at most 64 characters."""
    clean = "".join(c for c in name if c.isprintable())[:64].strip()
    if not clean:
        raise ControlError("onBehalfOf must name a user")
    return clean


class ControlServer:
    def __init__(self, agent: Agent, path: Path) -> None:
        self.agent = agent
        self.path = path

    async def run(self) -> None:
        """Serve until cancelled. Runs supervised (agent/ops/alarms.py): a socket that cannot
        be created (a read-only or full directory) is an alarm, retried with backoff."""
        state_sock = Path(self.agent.loaded.config.gateway.state_dir) / SOCKET_NAME
        if state_sock != self.path:  # left by a run outside systemd: the CLI would try it first
            with contextlib.suppress(OSError):
                state_sock.unlink()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()
            server = await asyncio.start_unix_server(
                self._client, path=str(self.path), limit=MAX_LINE
            )
        except OSError as exc:
            raise ServiceUnavailable(
                f"control socket {self.path}: {exc.strerror or exc}; cityedge status/read/write "
                "cannot reach the agent until the directory is writable"
            ) from None
        try:
            os.chmod(self.path, 0o660)
            _give_to_group(self.path, self.agent.loaded.config.commands.local_group)
            async with server:
                await server.serve_forever()
        finally:
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        sock = writer.get_extra_info("socket")
        try:
            caller = peers.of_socket(sock)
        except OSError:
            writer.close()
            return
        try:
            while line := await reader.readline():
                try:
                    reply = await self.handle(json.loads(line), caller)
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

    async def handle(self, req: dict[str, Any], caller: PeerCred | None = None) -> dict[str, Any]:
        op = req.get("op")
        group = self.agent.loaded.config.commands.local_group
        if caller is None:
            caller = peers.of_process()
        caller = peers.with_claim(caller, req.get("user"))
        read_only = op in ("status", "read", "snapshot", *views.OPERATIONS)
        if read_only and (why := peers.refusal(caller, group)) is not None:
            raise ControlError(f"refused: {why}")
        if (answer := views.view(self.agent, req)) is not None:
            return {"ok": True, **answer}
        if op == "status":
            return {"ok": True, **status_of(self.agent)}
        if op == "read":
            return {
                "ok": True,
                **read_of(self.agent, str(req["device"]), [str(p) for p in req.get("points", [])]),
            }
        if op == "snapshot":
            only = req.get("devices")
            return {
                "ok": True,
                **snapshot_of(
                    self.agent,
                    None if only is None else {str(d) for d in only},
                    bool(req.get("values", True)),
                ),
            }
        if op == "write":
            cid = str(req.get("id") or new_local_id())
            cmd = local_command(self.agent.bindings, req, caller, cid)
            assert self.agent.router is not None
            res = await self.agent.router.execute(cmd)
            return {"ok": res.status is CommandStatus.OK, **res.to_dict()}
        known = ", ".join(("status", "read", "snapshot", "write", *views.OPERATIONS))
        raise ControlError(f"unknown operation {op!r} ({known})")


def new_local_id() -> str:
    return f"local-{now_ms()}-{os.getpid()}-{next(_SEQ)}"


_SEQ = itertools.count(1)


def _give_to_group(path: Path, group: str) -> None:
    """Let the local group reach the socket (mode 0660); SO_PEERCRED still checks each caller."""
    try:
        gid = grp.getgrnam(group).gr_gid
    except KeyError:
        return
    try:
        os.chown(path, -1, gid)
    except OSError as exc:
        log.warning("cannot give %s to group %s: %s", path, group, exc.strerror or exc)


async def request(path: Path, req: dict[str, Any], timeout: float = 15.0) -> dict[str, Any]:
    """Client side; raises ConnectionError / FileNotFoundError when no daemon listens."""
    reader, writer = await asyncio.wait_for(
        asyncio.open_unix_connection(str(path), limit=REPLY_LIMIT), 2.0
    )
    # who we are, for the audit when the agent's user namespace hides our uid (peer.py)
    req = {"user": peers.user_name(os.getuid()), **req}
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
