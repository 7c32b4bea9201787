"""Start-up checks of how secrets are stored (warnings, never fatal: the gateway must run)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from agent.config.gateway import GatewayConfig
from agent.config.outputs import MqttOutput


def secret_files(cfg: GatewayConfig) -> list[Path]:
    files: list[Path] = []
    cred_dir = os.environ.get("CREDENTIALS_DIRECTORY")
    if cred_dir and Path(cred_dir).is_dir():
        files.extend(p for p in sorted(Path(cred_dir).iterdir()) if p.is_file())
    for out in cfg.outputs:
        if isinstance(out, MqttOutput) and out.tls is not None and out.tls.key_file:
            files.append(Path(out.tls.key_file))
    return files


def exposed_secret_files(cfg: GatewayConfig) -> list[str]:
    """One warning per file holding a secret that users other than its owner may read."""
    warnings = []
    for f in secret_files(cfg):
        try:
            mode = f.stat().st_mode
        except OSError:
            continue
        if mode & (stat.S_IROTH | stat.S_IWOTH):
            warnings.append(
                f"{f} holds a secret and is readable by every user "
                f"(mode {stat.filemode(mode)}): run chmod 600 {f}"
            )
        elif mode & stat.S_IRGRP:
            warnings.append(
                f"{f} holds a secret and is readable by its group "
                f"(mode {stat.filemode(mode)}): consider chmod 600 {f}"
            )
    return warnings


def config_warnings(cfg: GatewayConfig) -> list[str]:
    """Settings that weaken the command path: said at start-up and by ``cityedge check``."""
    warnings = []
    effective = cfg.commands.effective_policy()
    for out in cfg.outputs:
        if not isinstance(out, MqttOutput):
            continue
        if out.tls is not None and out.tls.insecure_skip_verify:
            warnings.append(
                f"output '{out.id}': tls.insecure_skip_verify = true: the broker's certificate "
                "and name are not checked, so anyone on the network path can pose as the "
                "broker, read the readings and send commands"
            )
        trusting = [ch for ch in channels_of(out) if effective[ch] == "broker"]
        has_cert = out.tls is not None and out.tls.cert_file is not None
        if trusting and out.username is None and not has_cert:
            warnings.append(
                f"output '{out.id}': the {', '.join(trusting)} command channel(s) rely on the "
                "broker's identity checks, but the output connects without an account or a "
                "client certificate: give the broker an ACL on the command topics, or set "
                "[commands.policy] to 'signature' (native) or 'off'"
            )
    return warnings


def channels_of(out: MqttOutput) -> list[str]:
    """The remote command channels an MQTT output carries."""
    extra = {"sparkplug": ["sparkplug"], "ngsild": ["iota"]}.get(out.encoding, [])
    return ["native", "config", *extra]
