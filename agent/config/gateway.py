"""Gateway file model (gateway.toml + conf.d/*.toml drop-ins)."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationInfo,
    field_validator,
    model_validator,
)

from agent.config.endpoint import parse_endpoint
from agent.config.filters import FilterSpec, check_chain
from agent.config.outputs import OutputConfig

ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$")


def _check_id(v: str) -> str:
    if not ID_RE.match(v):
        raise ValueError(
            "ids hold letters, digits, '_', '-', '.', ':' (max 64), starting with a letter or digit"
        )
    return v


class _M(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


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


class Rs485Config(_M):
    """RS-485 line options of a serial bus (drivers/rs485.py, docs/DEPLOY.md)."""

    # the adapter hears its own transmission: read each frame back, verify it, discard it
    echo: bool = False
    # kernel RS-485 mode (TIOCSRS485): the UART driver switches the transceiver with RTS
    kernel: bool = False
    rts_on_send: Literal["high", "low"] = "high"  # RTS (DE) level while sending
    rts_after_send: Literal["high", "low"] = "low"  # ... and after it (receiving)
    # the kernel's own units and bounds (serial_rs485: whole ms, at most 100 ms)
    delay_before_send_ms: int = Field(0, ge=0, le=100)
    delay_after_send_ms: int = Field(0, ge=0, le=100)

    @model_validator(mode="after")
    def _kernel_only(self) -> Rs485Config:
        default = Rs485Config.model_fields
        changed = [
            name
            for name in (
                "rts_on_send",
                "rts_after_send",
                "delay_before_send_ms",
                "delay_after_send_ms",
            )
            if getattr(self, name) != default[name].default
        ]
        if changed and not self.kernel:
            raise ValueError(f"{', '.join(changed)}: only with kernel = true (kernel RS-485 mode)")
        if self.kernel and self.rts_on_send == self.rts_after_send:
            raise ValueError("rts_on_send and rts_after_send must differ (RTS drives DE/RE)")
        return self


class BusConfig(_M):
    id: str
    endpoint: str
    protocol: Literal["modbus", "serial", "pelco_d", "mbus"] = "modbus"
    timeout: float | None = Field(None, gt=0, le=30)  # None: sized from the baud rate
    retries: int = Field(1, ge=0, le=5)  # only on timeout / busy
    inter_frame_gap: float | None = Field(None, ge=0, le=5)  # None: 3.5 chars, min 1.75 ms
    connect_pause: float = Field(0.0, ge=0, le=30)
    # longest wait between two probes of an offline device (drivers/device_state.py)
    quarantine_max: float = Field(60.0, gt=0, le=3600)
    align_polls: bool = True  # after a first poll at once, ticks on wall-clock multiples
    # offline devices re-report their last values as stale on every tick (default: they cost
    # the uplink their transitions only; see docs/PAYLOADS.md)
    stale_readings: bool = False
    rs485: Rs485Config | None = None  # echo suppression, kernel RS-485 mode (serial lines)

    _id = field_validator("id")(_check_id)

    @field_validator("endpoint")
    @classmethod
    def _endpoint(cls, v: str) -> str:
        parse_endpoint(v)  # raises EndpointError (a ValueError) with the reason
        return v


class DeviceConfig(_M):
    id: str
    bus: str
    profile: str
    unit_id: int = Field(1, ge=0, le=255)
    # Protocol-specific device address when the unit id is not enough (M-Bus secondary
    # address: 8-digit identification number, optionally ID.MAN.VER.MED, e.g. "12345678" or
    # "12345678.ELS.*.07"); checked per protocol in validate.cross_check.
    address: str | None = None
    entity_id: str | None = None  # NGSI-LD URN; default urn:ngsi-ld:<Type>:<gateway>:<id>
    interval: float = Field(5.0, gt=0, le=86400)
    enabled: bool = True
    location: tuple[float, float] | None = None  # (lat, lon) WGS84
    filters: dict[str, tuple[FilterSpec, ...]] = {}  # point name -> chain (replaces profile's)

    _id = field_validator("id")(_check_id)

    @field_validator("filters")
    @classmethod
    def _chains(cls, v: dict[str, tuple[FilterSpec, ...]]) -> dict[str, tuple[FilterSpec, ...]]:
        for chain in v.values():
            check_chain(chain)
        return v


REMOTE_SIGNABLE = ("signature", "broker", "off")
_UNSIGNABLE = {
    "sparkplug": "Sparkplug B payloads have no field for a signature",
    "iota": 'IoT Agent commands are {"<command>": value} with no room for a signature',
}


class ChannelPolicies(_M):
    """One policy per command channel (docs/COMMANDS.md, "One policy per channel").

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
    """Local HTTP endpoint (agent/httpd.py): GET /metrics (Prometheus text), GET /health (JSON).
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
