"""Command and result records shared by the parsers, the router and the MQTT binding."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from agent.reading import Value

GATEWAY_ACTIONS = ("ping", "rebirth", "reload", "config")


class CommandStatus(enum.StrEnum):
    OK = "ok"
    REJECTED = "rejected"  # refused before anything reached the device; reason says why
    FAILED = "failed"  # the device answered with an error
    TIMEOUT = "timeout"  # no answer in time


class CommandRejected(Exception):
    """A command refused with a reason meant for the operator (never a traceback)."""

    def __init__(self, reason: str, command_id: str | None = None) -> None:
        self.reason = reason
        self.command_id = command_id
        super().__init__(reason)


@dataclass(frozen=True, slots=True)
class Command:
    id: str
    source: str  # "native", "sparkplug", "iota" (+ topic), for the audit trail
    device: str | None  # None for gateway-level actions
    target: str  # point name, or a gateway action (ping / rebirth / reload)
    value: Value = None
    issued_at_ms: int | None = None
    nonce: str | None = None
    signature: str | None = None
    reply_to: str | None = None  # response topic, when the encoding has one
    extra: dict[str, str] = field(default_factory=dict, compare=False)


@dataclass(frozen=True, slots=True)
class CommandResult:
    id: str
    status: CommandStatus
    reason: str | None = None
    device: str | None = None
    target: str | None = None
    value: Value = None  # read back after a successful write
    duplicate: bool = False  # answered from the idempotency cache, not executed again

    def to_dict(self) -> dict[str, object]:
        d: dict[str, object] = {"id": self.id, "status": self.status.value}
        if self.device is not None:
            d["device"] = self.device
        if self.target is not None:
            d["target"] = self.target
        if self.reason is not None:
            d["reason"] = self.reason
        if self.value is not None:
            d["value"] = list(self.value) if isinstance(self.value, tuple) else self.value
        if self.duplicate:
            d["duplicate"] = True
        return d
