"""Build the command router from a gateway config: the daemon and the CLI without a daemon
use this one function, so both apply the same policies, store, rate limit and audit."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from agent.config.gateway import GatewayConfig
from agent.control.audit import AuditLog, audit_path
from agent.control.router import Action, CommandRouter, Writer, nonce_window
from agent.control.store import CommandStore
from drivers.base import DeviceBinding


def store_path(cfg: GatewayConfig) -> Path:
    return Path(cfg.gateway.state_dir) / "commands.sqlite"


def command_keys(cfg: GatewayConfig) -> dict[str, bytes]:
    """Key id (the secret's name) -> HMAC key (the secret's UTF-8 bytes)."""
    c = cfg.commands
    names = ([c.hmac_secret] if c.hmac_secret else []) + list(c.hmac_extra_secrets)
    return {n: cfg.secrets[n].get_secret_value().encode() for n in names if n in cfg.secrets}


def build_router(
    cfg: GatewayConfig,
    bindings: Sequence[DeviceBinding],
    writer: Writer,
    actions: Mapping[str, Action] | None = None,
) -> CommandRouter:
    c = cfg.commands
    store = CommandStore(store_path(cfg), window=c.dedup_window, nonce_window=nonce_window(c))
    return CommandRouter(
        c,
        bindings,
        writer,
        AuditLog(audit_path(cfg)),
        gateway_id=cfg.gateway.id,
        keys=command_keys(cfg),
        default_kid=c.hmac_secret,
        actions=actions,
        store=store,
    )
