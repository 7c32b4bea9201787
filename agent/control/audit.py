"""Append-only audit trail: one JSON line per command outcome (and a log line)."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

from agent.config.gateway import GatewayConfig
from agent.control.model import Command, CommandResult
from drivers.core.reading import iso_ms, now_ms

log = logging.getLogger("cityedge.audit")


def audit_path(cfg: GatewayConfig) -> Path:
    return Path(cfg.commands.audit_file or Path(cfg.gateway.state_dir) / "audit.jsonl")


class AuditLog:
    """One JSON line per command outcome: time, id, source (the channel), topic (MQTT) or user
    (local channel), onBehalfOf (the person a local front end logged in), device, target,
    value (as requested), written (when the register's resolution changed it), result, reason,
    duplicate. A trail that cannot be written is logged at error, once per episode; the
    command itself is not held up by it."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self.errors = 0
        self._failing = False
        if path is not None:
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
            except OSError:
                pass  # reported by the first record()

    def record(self, cmd: Command, result: CommandResult) -> None:
        entry: dict[str, object] = {"time": iso_ms(now_ms()), "id": cmd.id, "source": cmd.source}
        if cmd.origin is not None:
            entry["user" if cmd.source == "local" else "topic"] = cmd.origin
        if cmd.on_behalf_of is not None:
            entry["onBehalfOf"] = cmd.on_behalf_of
        entry.update(
            {
                "device": cmd.device,
                "target": cmd.target,
                "value": list(cmd.value) if isinstance(cmd.value, tuple) else cmd.value,
            }
        )
        if result.requested is not None:
            entry["written"] = result.value
        entry.update(
            {
                "result": result.status.value,
                "reason": result.reason,
                "duplicate": result.duplicate,
            }
        )
        level = logging.INFO if result.status.value == "ok" else logging.WARNING
        log.log(
            level,
            "command %s from %s%s: %s/%s = %r -> %s%s",
            cmd.id,
            cmd.source,
            _who(cmd),
            cmd.device or "gateway",
            cmd.target,
            cmd.value,
            result.status.value,
            f" ({result.reason})" if result.reason else "",
        )
        if self.path is None:
            return
        line = json.dumps(entry, separators=(",", ":"), default=str) + "\n"
        try:
            # O_APPEND keeps concurrent lines whole; 0600 because values may be sensitive.
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            try:
                os.write(fd, line.encode())
            finally:
                os.close(fd)
        except OSError as exc:
            self.errors += 1
            if not self._failing:
                log.error("cannot append to the audit trail %s: %s", self.path, exc)
            self._failing = True
            return
        self._failing = False


def _who(cmd: Command) -> str:
    if cmd.origin is None:
        return ""
    return f" ({cmd.origin} for {cmd.on_behalf_of})" if cmd.on_behalf_of else f" ({cmd.origin})"
