"""The interface between the runtime and a bus driver.

One BusDriver instance owns one physical bus (a serial port, or one TCP endpoint / serial
server) for the life of its task: it alone talks on it, serializing every unit id, pacing
frames, giving writes priority over polls and quarantining silent units. It hands each poll's
readings (one device, one batch) to ``emit``; the pipeline filters, numbers and forwards them.
"""

from __future__ import annotations

import enum
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from drivers.core.config import BusConfig, DeviceConfig
from drivers.core.profile import Point, Profile
from drivers.core.reading import Quality, Reading, Source, Value

if TYPE_CHECKING:
    from drivers.device_state import Transition


@dataclass(frozen=True, slots=True)
class DeviceBinding:
    """A configured device with its resolved profile: everything a driver needs about it."""

    gateway_id: str
    device: DeviceConfig
    profile: Profile
    gateway_location: tuple[float, float] | None = None  # [gateway] location, inherited

    @property
    def id(self) -> str:
        return self.device.id

    @property
    def location(self) -> tuple[float, float] | None:
        """(lat, lon) WGS84: the device's own, else the gateway's."""
        return self.device.location or self.gateway_location


Emit = Callable[[DeviceBinding, Sequence[Reading]], Awaitable[None]]
# A device changed state (drivers/device_state.py). The bus owner awaits it in order with
# ``emit``: the readings of a poll that brought a device back come after its transition, the
# readings before a device went down come before it.
StateListener = Callable[["Transition"], Awaitable[None]]


async def no_listener(_: Transition) -> None:
    return None


def point_reading(
    binding: DeviceBinding,
    point: Point,
    value: Value,
    ts: int,
    source: Source,
    quality: Quality = Quality.GOOD,
    reason: str | None = None,
) -> Reading:
    """The Reading of one profile point: every driver builds its readings here."""
    return Reading(
        gateway_id=binding.gateway_id,
        device_id=binding.id,
        device_kind=binding.profile.kind,
        point=point.name,
        metric=point.metric_name,
        value=value,
        unit=point.unit,
        unit_code=point.unit_code,
        observed_at_ms=ts,
        quality=quality,
        reason=reason,
        entity_id=binding.device.entity_id,
        source=source,
    )


class WriteStatus(enum.StrEnum):
    OK = "ok"
    REJECTED = "rejected"  # refused before anything went on the wire (reason says why)
    FAILED = "failed"  # the device answered with an error
    TIMEOUT = "timeout"  # the device did not answer


@dataclass(frozen=True, slots=True)
class WriteResult:
    status: WriteStatus
    reason: str | None = None
    readback: Value = None  # value read back after the write, when it succeeded


@dataclass(frozen=True, slots=True)
class Excluded:
    """Something a device rejected and is not read any more until its re-probe."""

    what: str  # "input registers 44..45 (FC04)", "point p10"
    reason: str  # "exception 2"
    since_ms: int  # wall clock, when it was learned
    retry_at: float  # monotonic, when it is probed again


@dataclass
class DeviceStats:
    requests: int = 0
    timeouts: int = 0
    exceptions: int = 0
    bad_frames: int = 0
    polls: int = 0
    overruns: int = 0  # ticks skipped because the previous poll was still running
    last_success_ms: int | None = None
    last_cycle_s: float = 0.0
    online: bool = False  # online or degraded (kept in step by drivers/device_state.py)
    quarantined_until: float = 0.0  # monotonic: while offline, the time of the next probe
    unsupported_points: tuple[str, ...] = ()
    state: str = "unknown"  # drivers.device_state.State
    reason: str | None = None  # drivers.device_state.Reason, while degraded / offline
    detail: str | None = None
    state_since_ms: int | None = None  # wall clock of the last transition
    transitions: int = 0
    excluded: tuple[Excluded, ...] = ()


@dataclass
class BusStats:
    requests: int = 0
    busy_s: float = 0.0  # time the bus was occupied by our traffic (for utilization)
    reconnects: int = 0
    connected: bool = False
    link_error: str | None = None  # why the last connect failed / the link was lost
    retry_in: float = 0.0  # the reconnect delay scheduled last (s)
    devices: dict[str, DeviceStats] = field(default_factory=dict)


class BusDriver(Protocol):
    bus_id: str
    stats: BusStats

    async def run(self) -> None:
        """Own the bus until cancelled: connect, poll on schedule, serve writes, reconnect."""

    async def write(
        self, device_id: str, point: str, value: Value, timeout: float = 10.0
    ) -> WriteResult:
        """Queue a write ahead of polls; validate, encode, send, read back."""

    async def ready(self) -> None:
        """Return once the bus has been opened (or the first attempt has failed)."""


DriverFactory = Callable[[BusConfig, Sequence[DeviceBinding], Emit], BusDriver]
