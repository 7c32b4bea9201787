"""Command and result records shared by the parsers, the router and the MQTT binding."""

from __future__ import annotations

import dataclasses
import enum
from dataclasses import dataclass, field
from typing import Any

from drivers.core.reading import Value

GATEWAY_ACTIONS = ("ping", "rebirth", "reload", "config")
# Command channels, each with one policy ([commands.policy], docs/COMMANDS.md).
CHANNELS = ("native", "config", "sparkplug", "iota", "local")


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
class PeerCred:
    """Who is on the other end of the local control socket (SO_PEERCRED, SO_PEERGROUPS), or
    the credentials of the CLI process itself when it writes without a daemon."""

    pid: int
    uid: int
    gid: int
    groups: tuple[int, ...]
    user: str  # the uid's name, or "uid N" when the system has none


@dataclass(frozen=True, slots=True)
class Command:
    id: str
    source: str  # the channel: native, config, sparkplug, iota or local (CHANNELS)
    device: str | None  # None for gateway-level actions
    target: str  # point name, or a gateway action (ping / rebirth / reload)
    value: Value = None
    issued_at_ms: int | None = None
    nonce: str | None = None
    signature: str | None = None
    reply_to: str | None = None  # response topic, when the encoding has one
    extra: dict[str, str] = field(default_factory=dict, compare=False)
    ts_text: str | None = None  # "ts" exactly as sent (the signature covers this text)
    kid: str | None = None  # key id of a signed command
    origin: str | None = None  # MQTT topic, or the local user's name (audit trail)
    peer: PeerCred | None = None  # local channel: the caller's credentials
    # local channel: the person a front end authenticated (the commissioning page's login),
    # named by a caller trusted to do so (agent/control/peer.py, may_name_users); audited
    # beside the caller's own user, never instead of it
    on_behalf_of: str | None = None


@dataclass(frozen=True, slots=True)
class CommandResult:
    id: str
    status: CommandStatus
    reason: str | None = None
    device: str | None = None
    target: str | None = None
    value: Value = None  # read back after a successful write
    duplicate: bool = False  # answered from the idempotency cache, not executed again
    requested: Value = None  # set when the register's resolution changed the value written

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
        if self.requested is not None:
            d["requested"] = self.requested
        if self.duplicate:
            d["duplicate"] = True
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> CommandResult:
        """The inverse of ``to_dict`` (answers kept in the command store)."""
        value = d.get("value")
        return cls(
            str(d["id"]),
            CommandStatus(d["status"]),
            d.get("reason"),
            d.get("device"),
            d.get("target"),
            tuple(value) if isinstance(value, list) else value,
            bool(d.get("duplicate", False)),
            d.get("requested"),
        )

    def again(self, cid: str | None = None) -> CommandResult:
        """This answer given again to a replay (``duplicate: true``)."""
        return dataclasses.replace(self, id=cid or self.id, duplicate=True)
