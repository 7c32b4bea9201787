"""The ``snapshot`` operation of the control socket: buses, devices and last values, at once.

What a live view needs in one request (``cityedge watch``, the commissioning page): every bus
with its link, every device with its state and why, and the last value of each of its points
with unit, quality and age. It is built from what the daemon keeps anyway (the bus owners'
counters and ``Pipeline.last_values``), in one pass over them: no bus traffic, no copy kept,
a few hundred microseconds at 50 devices x 12 points, so a viewer refreshing every second
costs the daemon nothing it would notice.

Request: ``{"op": "snapshot"}``, optionally ``"devices": ["lamp-1", ...]`` (only those) and
``"values": false`` (states only). Reply (docs/CLI.md, "JSON output", documents each field)::

    {"ok": true, "gateway": "hn-0042", "at": "2026-11-23T18:00:00.123Z", "uptimeS": 812.4,
     "buses": [{"id": "rs485-1", "endpoint": "rtu:///dev/ttyUSB0?...", "protocol": "modbus",
                "connected": true, "linkError": null, "requests": 9120, "reconnects": 0,
                "busyS": 141.2}],
     "devices": [{"id": "lamp-1", "bus": "rs485-1", "profile": "cityedge/streetlight",
                  "kind": "streetlight", "unitId": 1, "interval": 5.0, "state": "online",
                  "reason": null, "detail": null, "since": "2026-11-23T17:46:28.301Z",
                  "lastOkAgeS": 0.8, "polls": 162, "timeouts": 0, "exceptions": 0,
                  "badFrames": 0,
                  "values": [{"point": "active_power", "metric": "totalActivePower",
                              "value": 61.2, "unit": "W", "quality": "good",
                              "observedAt": "2026-11-23T18:00:00.101Z", "ageS": 0.0}]}]}

Devices and points come in configuration and profile order (stable, so a view does not jump).
A point not read yet is absent from ``values``; a value that failed has ``quality`` ``bad`` and
a ``reason``.
"""

from __future__ import annotations

import time
from collections.abc import Collection, Mapping, Sequence
from typing import Any, Protocol

from agent.config.loader import LoadedConfig
from drivers.base import BusDriver, DeviceBinding
from drivers.core.reading import Reading, iso_ms, now_ms


class _Pipeline(Protocol):
    @property
    def last_values(self) -> Mapping[tuple[str, str], Reading]: ...


class SnapshotSource(Protocol):
    """What the snapshot reads of the running agent (agent.runtime.Agent has it; typed
    structurally so that control does not import the runtime above it)."""

    @property
    def loaded(self) -> LoadedConfig: ...
    @property
    def bindings(self) -> Sequence[DeviceBinding]: ...
    @property
    def drivers(self) -> Mapping[str, BusDriver]: ...
    @property
    def pipeline(self) -> _Pipeline: ...
    @property
    def started_at(self) -> float: ...


def value_row(r: Reading, now: int) -> dict[str, Any]:
    """One last value as the snapshot carries it."""
    row: dict[str, Any] = {
        "point": r.point,
        "metric": r.metric,
        "value": list(r.value) if isinstance(r.value, tuple) else r.value,
        "unit": r.unit,
        "quality": r.quality.value,
        "observedAt": iso_ms(r.observed_at_ms),
        "ageS": round((now - r.observed_at_ms) / 1000, 1),
    }
    if r.reason is not None:
        row["reason"] = r.reason
    return row


def snapshot_of(
    agent: SnapshotSource, devices: Collection[str] | None = None, values: bool = True
) -> dict[str, Any]:
    now = now_ms()
    cfg = agent.loaded.config
    last = agent.pipeline.last_values
    buses: list[dict[str, Any]] = []
    for bus in cfg.buses:
        driver = agent.drivers.get(bus.id)
        bs = driver.stats if driver is not None else None
        buses.append(
            {
                "id": bus.id,
                "endpoint": bus.endpoint,
                "protocol": bus.protocol,
                "connected": None if bs is None else bs.connected,
                "linkError": None if bs is None else bs.link_error,
                "requests": 0 if bs is None else bs.requests,
                "reconnects": 0 if bs is None else bs.reconnects,
                "busyS": 0.0 if bs is None else round(bs.busy_s, 1),
            }
        )
    out: list[dict[str, Any]] = []
    for b in agent.bindings:
        if devices is not None and b.id not in devices:
            continue
        driver = agent.drivers.get(b.device.bus)
        st = driver.stats.devices.get(b.id) if driver is not None else None
        entry: dict[str, Any] = {
            "id": b.id,
            "bus": b.device.bus,
            "profile": b.profile.id,
            "kind": b.profile.kind,
            "unitId": b.device.unit_id,
            "interval": b.device.interval,
            "state": "unknown" if st is None else st.state,
            "reason": None if st is None else st.reason,
            "detail": None if st is None else st.detail,
            "since": None if st is None or st.state_since_ms is None else iso_ms(st.state_since_ms),
            "lastOkAgeS": None
            if st is None or st.last_success_ms is None
            else round((now - st.last_success_ms) / 1000, 1),
            "polls": 0 if st is None else st.polls,
            "timeouts": 0 if st is None else st.timeouts,
            "exceptions": 0 if st is None else st.exceptions,
            "badFrames": 0 if st is None else st.bad_frames,
        }
        if values:
            rows = []
            for p in b.profile.points:
                r = last.get((b.id, p.name))
                if r is not None:
                    rows.append(value_row(r, now))
            entry["values"] = rows
        out.append(entry)
    return {
        "gateway": cfg.gateway.id,
        "at": iso_ms(now),
        "uptimeS": round(time.monotonic() - agent.started_at, 1),
        "buses": buses,
        "devices": out,
    }
