"""Bus and device configuration: the parts of the gateway file the drivers consume.

``agent/config/gateway.py`` composes these into the whole gateway model; the drivers read them
from here, so nothing on the drivers side imports the agent.
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from drivers.core.endpoint import parse_endpoint
from drivers.core.filters import FilterSpec, check_chain

ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$")


def _check_id(v: str) -> str:
    if not ID_RE.match(v):
        raise ValueError(
            "ids hold letters, digits, '_', '-', '.', ':' (max 64), starting with a letter or digit"
        )
    return v


class _M(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


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
