"""Append-only audit trail: one JSON line per command outcome (and a log line)."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

from agent.config.gateway import GatewayConfig
from agent.control.model import Command, CommandResult
from agent.reading import iso_ms, now_ms

log = logging.getLogger("cityedge.audit")


def audit_path(cfg: GatewayConfig) -> Path:
    return Path(cfg.commands.audit_file or Path(cfg.gateway.state_dir) / "audit.jsonl")


class AuditLog:
    def __init__(self, path: Path | None) -> None:
        self.path = path
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)

    def record(self, cmd: Command, result: CommandResult) -> None:
        entry = {
            "time": iso_ms(now_ms()),
            "id": cmd.id,
            "source": cmd.source,
            "device": cmd.device,
            "target": cmd.target,
            "value": list(cmd.value) if isinstance(cmd.value, tuple) else cmd.value,
            "result": result.status.value,
            "reason": result.reason,
            "duplicate": result.duplicate,
        }
        level = logging.INFO if result.status.value == "ok" else logging.WARNING
        log.log(
            level,
            "command %s from %s: %s/%s = %r -> %s%s",
            cmd.id,
            cmd.source,
            cmd.device or "gateway",
            cmd.target,
            cmd.value,
            result.status.value,
            f" ({result.reason})" if result.reason else "",
        )
        if self.path is None:
            return
        line = json.dumps(entry, separators=(",", ":"), default=str) + "\n"
        # O_APPEND keeps concurrent lines whole; 0600 because values may be sensitive.
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(fd, line.encode())
        finally:
            os.close(fd)
