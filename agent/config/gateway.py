"""Gateway file model (gateway.toml + conf.d/*.toml drop-ins)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, SecretStr, ValidationInfo, field_validator

from agent.config.outputs import OutputConfig
from drivers.core.config import _M, BusConfig, DeviceConfig, _check_id


class GatewaySection(_M):
    id: str
    name: str | None = None
    state_dir: str = "/var/lib/cityedge"
    profile_dirs: tuple[str, ...] = ()  # searched before the built-in library
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    shutdown_grace: float = Field(5.0, gt=0, le=120)
    watch_config: float = Field(5.0, ge=0, le=3600)  # poll config files for changes; 0 = off
    # (lat, lon) WGS84 of the cabinet: devices without their own location inherit it
    location: tuple[float, float] | None = None

    _id = field_validator("id")(_check_id)


REMOTE_SIGNABLE = ("signature", "broker", "off")
_UNSIGNABLE = {
    "sparkplug": "Sparkplug B payloads have no field for a signature",
    "iota": 'IoT Agent commands are {"<command>": value} with no room for a signature',
}


class ChannelPolicies(_M):
    """One policy per command channel (docs/COMMANDS.md, "Channels and their policies").

    - ``signature``: an HMAC-SHA256 signature with ``ts`` and ``nonce`` is required.
    - ``broker``: the broker's identity checks are relied on (TLS client certificate or an
      account, plus an ACL on the command topics); a signature, if one is sent, is verified.
    - ``peer``: the local control socket's Unix peer credentials (root or ``local_group``).
    - ``off``: every command on the channel is refused (answered and audited).

    ``native`` and ``config`` default to ``signature`` when ``require_signature = true``,
    else to ``broker``.
    """

    native: Literal["signature", "broker", "off"] | None = None
    config: Literal["signature", "broker", "off"] | None = None
    sparkplug: str = "broker"
    iota: str = "broker"
    local: Literal["peer", "off"] = "peer"

    @field_validator("sparkplug", "iota")
    @classmethod
    def _unsignable(cls, v: str, info: ValidationInfo) -> str:
        if v == "signature":
            raise ValueError(
                f"{_UNSIGNABLE[str(info.field_name)]}: use 'broker' (TLS client certificate or "
                "account + ACL on the command topics) or 'off'"
            )
        if v not in ("broker", "off"):
            raise ValueError("use 'broker' or 'off'")
        return v


class CommandsSection(_M):
    """Downlink command policy (see docs/COMMANDS.md)."""

    enabled: bool = True  # false: every remote channel is off (the local one keeps its policy)
    max_age: float = Field(300.0, gt=0, le=86400)  # older commands are rejected as stale
    dedup_window: float = Field(3600.0, gt=0, le=7 * 86400)  # same id -> same answer, no re-run
    rate_per_minute: int = Field(30, ge=1, le=6000)  # per device
    require_signature: bool = False  # shorthand for policy.native = policy.config = "signature"
    hmac_secret: str | None = None  # secret name holding the per-gateway HMAC key (default kid)
    hmac_extra_secrets: tuple[str, ...] = ()  # more accepted key ids (key rotation)
    audit_file: str | None = None  # default <state_dir>/audit.jsonl
    timeout: float = Field(10.0, gt=0, le=120)  # write + read-back deadline
    policy: ChannelPolicies = ChannelPolicies()
    local_group: str = "cityedge"  # besides root, members of this group may use the socket

    def effective_policy(self) -> dict[str, str]:
        """channel -> signature / broker / peer / off, with the defaults applied."""
        p = self.policy
        default = "signature" if self.require_signature else "broker"
        out = {
            "native": p.native or default,
            "config": p.config or p.native or default,
            "sparkplug": p.sparkplug,
            "iota": p.iota,
            "local": p.local,
        }
        if not self.enabled:
            out.update({k: "off" for k in ("native", "config", "sparkplug", "iota")})
        return out


class MetricsSection(_M):
    """Local HTTP endpoint (agent/ops/httpd.py): GET /metrics (Prometheus text), GET /health (JSON).
    Loopback only by default: it is unauthenticated and meant for a local scraper or an SSH
    tunnel, never the street-side network."""

    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = Field(9108, ge=0, le=65535)  # 0 = any free port (tests)


class GatewayConfig(_M):
    """The validated, frozen gateway configuration."""

    gateway: GatewaySection
    buses: tuple[BusConfig, ...] = ()
    devices: tuple[DeviceConfig, ...] = ()
    outputs: tuple[OutputConfig, ...] = ()
    commands: CommandsSection = CommandsSection()
    metrics: MetricsSection = MetricsSection()
    secrets: dict[str, SecretStr] = {}
