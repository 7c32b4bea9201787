"""Harness for the serial driver tests: profiles, a SerialBus wired to a reading queue."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from drivers.base import DeviceBinding
from drivers.core.config import BusConfig, DeviceConfig
from drivers.core.library import ProfileLibrary
from drivers.core.profile import Profile
from drivers.core.reading import Reading
from drivers.serial.bus import SerialBus

PROFILES = Path(__file__).resolve().parents[3] / "drivers" / "profiles"
PROFILE_OF = {
    "serial": "cityedge/ascii_streetlight",
    "pelco_d": "cityedge/pelco_d_camera",
    "mbus": "cityedge/mbus_water_meter",
}


def load_profile(ref: str) -> Profile:
    return ProfileLibrary([PROFILES]).load(ref)


@dataclass
class Harness:
    bus: SerialBus
    readings: list[Reading] = field(default_factory=list)
    batches: asyncio.Queue[tuple[str, list[Reading]]] = field(default_factory=asyncio.Queue)

    async def next_batch(self, device: str | None = None, timeout: float = 3.0) -> list[Reading]:
        async with asyncio.timeout(timeout):
            while True:
                dev, batch = await self.batches.get()
                if device is None or dev == device:
                    return batch


def make_bus(
    protocol: str,
    endpoint: str,
    addrs: Sequence[int],
    *,
    interval: float = 0.2,
    profile: Profile | None = None,
    driver_opts: dict[str, Any] | None = None,
    **bus_opts: object,
) -> Harness:
    prof = profile or load_profile(PROFILE_OF[protocol])
    bus_cfg = BusConfig.model_validate(
        {"id": f"{protocol}-bus", "endpoint": endpoint, "protocol": protocol, **bus_opts}
    )
    bindings = [
        DeviceBinding(
            "gw1",
            DeviceConfig(
                id=f"{protocol}-{a}", bus=bus_cfg.id, profile=prof.id, unit_id=a, interval=interval
            ),
            prof,
        )
        for a in addrs
    ]
    holder: list[Harness] = []

    async def emit(b: DeviceBinding, rs: Sequence[Reading]) -> None:
        holder[0].readings.extend(rs)
        holder[0].batches.put_nowait((b.id, list(rs)))

    h = Harness(SerialBus(bus_cfg, bindings, emit, rng=random.Random(4), **(driver_opts or {})))
    holder.append(h)
    return h
