"""Which driver serves which bus protocol, and which checks a protocol's profiles must pass.

Each protocol registers the bus owner that serves it and, when its profiles need more than the
common model checks, the function that checks them. Both are named as ``module:attribute`` and
imported on first use, so an unused protocol costs nothing at start-up, this module imports no
driver, and the profile model (``drivers/core/profile.py``) can reach a protocol's checks
without importing the protocol's package.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from drivers.base import BusDriver, DeviceBinding, Emit, StateListener, no_listener

if TYPE_CHECKING:
    from drivers.core.config import BusConfig
    from drivers.core.profile import Point
    from drivers.serial.spec import SerialSpec

ProfileCheck = Callable[[str, "SerialSpec | None", Sequence["Point"]], list[str]]


@dataclass(frozen=True, slots=True)
class DriverEntry:
    driver: str  # "module:Class" of the BusDriver, built as Class(bus, devices, emit, on_state=)
    profile_check: str | None = None  # "module:function" with the signature of ProfileCheck


PROTOCOLS: dict[str, DriverEntry] = {}


def register(protocol: str, driver: str, profile_check: str | None = None) -> None:
    PROTOCOLS[protocol] = DriverEntry(driver, profile_check)


# the [serial] profile section's checks (drivers/serial/spec.py): they also refuse the section
# on a protocol that has no checks of its own
_SERIAL_CHECKS = "drivers.serial.spec:profile_problems"

register("modbus", "drivers.modbus.bus:ModbusBus")
for _serial in ("serial", "pelco_d", "mbus"):
    register(_serial, "drivers.serial.bus:SerialBus", _SERIAL_CHECKS)


def _resolve(target: str) -> Any:
    module, _, attr = target.partition(":")
    return getattr(importlib.import_module(module), attr)


def create_driver(
    bus: BusConfig,
    devices: Sequence[DeviceBinding],
    emit: Emit,
    on_state: StateListener = no_listener,
) -> BusDriver:
    """The bus owner of ``bus.protocol``, imported on first use."""
    entry = PROTOCOLS.get(bus.protocol)
    if entry is None:
        raise ValueError(f"no driver for protocol {bus.protocol!r}")
    driver: BusDriver = _resolve(entry.driver)(bus, devices, emit, on_state=on_state)
    return driver


def profile_problems(protocol: str, spec: SerialSpec | None, points: Sequence[Point]) -> list[str]:
    """The protocol's own checks of a profile. A protocol without checks of its own (Modbus)
    is checked by the ``[serial]`` section's owner, which refuses the section there."""
    entry = PROTOCOLS.get(protocol)
    check: ProfileCheck = _resolve((entry.profile_check if entry else None) or _SERIAL_CHECKS)
    return check(protocol, spec, points)
