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
                "devices": ["lamp-1"], "connected": true, "linkError": null, "retryInS": 0.0,
                "requests": 9120, "busyS": 141.2031, "reconnects": 0}],
     "devices": [{"id": "lamp-1", "bus": "rs485-1", "profile": "cityedge/streetlight",
                  "kind": "streetlight", "unitId": 1, "interval": 5.0, "online": true,
                  "state": "online", "reason": null, "detail": null,
                  "since": "2026-11-23T17:46:28.301Z", "polls": 162, "timeouts": 0,
                  "exceptions": 0, "badFrames": 0, "lastSuccessAgeS": 0.8,
                  "unsupported": [], "excluded": [], "lastOkAgeS": 0.8,
                  "values": [{"point": "active_power", "metric": "totalActivePower",
                              "unit": "W", "value": 61.2, "quality": "good",
                              "observedAt": "2026-11-23T18:00:00.101Z", "ageS": 0.0}]}]}

Devices and points come in configuration and profile order (stable, so a view does not jump).
A point not read yet is absent from ``values``; a value that failed has ``quality`` ``bad`` and
a ``reason``. A bus that no owner runs (no enabled device on it) has ``connected`` and
``linkError`` null and zero counters.

The rows are the control socket's one shape of a bus, of a device and its state, and of a
value: ``status`` (``device_state``, also the MQTT health message's), ``buses`` and ``values``
(agent/control/views.py, read by the commissioning page's hub) build theirs with the functions
below, so ``cityedge status``, ``watch`` and the page get the same fields under the same names.
``lastOkAgeS`` is ``lastSuccessAgeS`` under the name the snapshot had first.
"""

from __future__ import annotations

import time
from collections.abc import Collection, Mapping, Sequence
from typing import Any, Protocol

from agent.config.loader import LoadedConfig
from drivers.base import BusDriver, DeviceBinding, DeviceStats
from drivers.core.config import BusConfig
from drivers.core.reading import Reading, iso_ms, now_ms


class _Pipeline(Protocol):
    @property
    def last_values(self) -> Mapping[tuple[str, str], Reading]: ...


class SnapshotSource(Protocol):
    """What the control socket's views read of the running agent (agent.runtime.Agent has it;
    typed structurally so that control does not import the runtime above it)."""

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


def age_s(then_ms: int, now: int) -> float:
    return round((now - then_ms) / 1000, 1)


def value_fields(r: Reading, now: int, observed: bool = True) -> dict[str, Any]:
    """A last value: ``value``, ``quality``, ``reason`` (when there is one), ``observedAt``
    (unless ``observed`` is false) and ``ageS``."""
    row: dict[str, Any] = {
        "value": list(r.value) if isinstance(r.value, tuple) else r.value,
        "quality": r.quality.value,
    }
    if r.reason is not None:
        row["reason"] = r.reason
    if observed:
        row["observedAt"] = iso_ms(r.observed_at_ms)
    row["ageS"] = age_s(r.observed_at_ms, now)
    return row


def value_row(r: Reading, now: int) -> dict[str, Any]:
    """One last value as the snapshot carries it."""
    return {"point": r.point, "metric": r.metric, "unit": r.unit, **value_fields(r, now)}


def device_state(st: DeviceStats, now: int, mono: float) -> dict[str, Any]:
    """A device's state and counters as its bus owner keeps them."""
    return {
        "online": st.online,
        "state": st.state,
        "reason": st.reason,
        "detail": st.detail,
        "since": None if st.state_since_ms is None else iso_ms(st.state_since_ms),
        "polls": st.polls,
        "timeouts": st.timeouts,
        "exceptions": st.exceptions,
        "badFrames": st.bad_frames,
        "lastSuccessAgeS": None if st.last_success_ms is None else age_s(st.last_success_ms, now),
        "unsupported": list(st.unsupported_points),
        "excluded": [
            {
                "what": x.what,
                "reason": x.reason,
                "since": iso_ms(x.since_ms),
                "retryInS": round(max(0.0, x.retry_at - mono), 1),
            }
            for x in st.excluded
        ],
    }


def device_info(b: DeviceBinding) -> dict[str, Any]:
    """What a device is: its bus, profile (as the gateway file names it), kind, unit id and
    poll interval."""
    return {
        "bus": b.device.bus,
        "profile": b.device.profile,
        "kind": b.profile.kind,
        "unitId": b.device.unit_id,
        "interval": b.device.interval,
    }


def bus_row(agent: SnapshotSource, bus: BusConfig) -> dict[str, Any]:
    """A bus, its devices and, when an owner runs it (it has enabled devices), its link and
    traffic counters."""
    row: dict[str, Any] = {
        "id": bus.id,
        "endpoint": bus.endpoint,
        "protocol": bus.protocol,
        "devices": [d.id for d in agent.loaded.devices_on(bus.id)],
    }
    driver = agent.drivers.get(bus.id)
    if driver is not None:
        st = driver.stats
        row.update(
            connected=st.connected,
            linkError=st.link_error,
            retryInS=round(st.retry_in, 1),
            requests=st.requests,
            busyS=round(st.busy_s, 4),
            reconnects=st.reconnects,
        )
    return row


# the snapshot names every link field, null or zero on a bus no owner runs
_NO_OWNER = {"connected": None, "linkError": None, "requests": 0, "reconnects": 0, "busyS": 0.0}


def snapshot_of(
    agent: SnapshotSource, devices: Collection[str] | None = None, values: bool = True
) -> dict[str, Any]:
    now, mono = now_ms(), time.monotonic()
    last = agent.pipeline.last_values
    out: list[dict[str, Any]] = []
    for b in agent.bindings:
        if devices is not None and b.id not in devices:
            continue
        driver = agent.drivers.get(b.device.bus)
        st = driver.stats.devices.get(b.id) if driver is not None else None
        entry = {"id": b.id, **device_info(b), **device_state(st or DeviceStats(), now, mono)}
        entry["lastOkAgeS"] = entry["lastSuccessAgeS"]
        if values:
            rows = (last.get((b.id, p.name)) for p in b.profile.points)
            entry["values"] = [value_row(r, now) for r in rows if r is not None]
        out.append(entry)
    cfg = agent.loaded.config
    return {
        "gateway": cfg.gateway.id,
        "at": iso_ms(now),
        "uptimeS": round(mono - agent.started_at, 1),
        "buses": [{**_NO_OWNER, **bus_row(agent, bus)} for bus in cfg.buses],
        "devices": out,
    }
