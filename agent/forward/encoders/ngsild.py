"""NGSI-LD encoder: normalized entities with FIWARE Smart Data Models (docs/PAYLOADS.md).

Each device maps to one primary entity whose type follows its kind (agent/forward/encoders/sdm.py):
a reading whose metric is an attribute of that model becomes a Property of it; any other
reading becomes a DeviceMeasurement entity of its own (one per point) that refers to the
device, so nothing we publish steps outside a model. Messages follow the FIWARE IoT Agent MQTT
convention: topic ``/<apikey>/<device id>/attrs``, payload a JSON array of normalized entities
(config group ``payloadType: "ngsild"``). The same array is a valid body for
``POST /ngsi-ld/v1/entityOperations/upsert`` (Content-Type application/ld+json).

One message never holds two values of one attribute: a batch with several observations of a
point (a replay) is cut into consecutive snapshots, one message each, oldest first, each with
its own ``observedAt`` values.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agent.config.outputs import MqttOutput
from agent.forward.encoders import sdm
from agent.forward.encoders.base import IotAgentTopics, OutMessage
from drivers.base import DeviceBinding
from drivers.core.profile import Point
from drivers.core.reading import Quality, Reading, Value, iso_ms, now_ms
from drivers.device_state import Transition

Entity = dict[str, Any]


# required attributes the encoder supplies itself (from the config or the observation time);
# any other required attribute (Streetlight ``status``) must come from a reading
_SUPPLIED = frozenset({"location", "controlledProperty", "dateObserved"})


@dataclass(frozen=True, slots=True)
class _Device:
    model: sdm.EntityModel  # primary entity model, from the device kind
    entity_id: str  # primary entity id
    device_entity_id: str  # the Device entity that DeviceMeasurements refer to
    location: tuple[float, float] | None  # (lat, lon)
    controlled: tuple[str, ...]  # Device controlledProperty
    points: dict[str, Point]


@dataclass(frozen=True, slots=True)
class _Target:
    model: sdm.EntityModel
    entity_id: str
    attribute: str  # attribute name in the entity (model attribute or controlledProperty)
    spec: sdm.AttrSpec | None = None  # the model attribute's type (None: DM or extension)


# a reading with a value, where it goes, and whether its model attribute could not hold it
_Placed = tuple[Reading, _Target, bool]


class NgsiLdEncoder(IotAgentTopics):
    name = "ngsild"

    def __init__(
        self,
        output: MqttOutput,
        gateway_id: str,
        bindings: Sequence[DeviceBinding],
        state_dir: Path,
        *,
        clock: Callable[[], int] = now_ms,
    ) -> None:
        super().__init__(output, gateway_id, clock)
        self._devices: dict[str, _Device] = {}
        for b in bindings:
            self._devices[b.id] = self._describe(
                b.id,
                b.profile.kind,
                b.device.entity_id,
                b.location,
                b.profile.controlled_properties,
                {p.name: p for p in b.profile.points},
            )
        self._targets: dict[tuple[str, str, str], _Target] = {}
        # last published value of each reading-fed required attribute, per device: every
        # entity must carry them (a Streetlight its ``status``), also when a message lacks it
        self._required: dict[tuple[str, str], Entity] = {}

    # --- Encoder protocol -----------------------------------------------------------------
    def encode(self, batch: Sequence[Reading]) -> list[OutMessage]:
        by_device: dict[str, list[Reading]] = {}
        for r in batch:
            by_device.setdefault(r.device_id, []).append(r)
        out: list[OutMessage] = []
        for device_id, readings in by_device.items():
            for snapshot in self._snapshots(readings):
                msg = self._message(device_id, snapshot)
                if msg is not None:
                    out.append(msg)
        return out

    def device_status(
        self, device_id: str, online: bool, transition: Transition | None = None
    ) -> list[OutMessage]:
        """The device's Device entity gets ``deviceState`` "online" / "degraded" / "offline",
        with the reason (a sub-property) when it is not online."""
        dev = self._device(device_id, None)
        now = self._clock() if transition is None else transition.at_ms
        entity = self._entity(sdm.DEVICE, dev.device_entity_id, dev)  # with controlledProperty
        state = transition.state.value if transition else "online" if online else "offline"
        entity["deviceState"] = _prop(state, now)
        if transition is not None and transition.reason is not None:
            entity["deviceState"]["reason"] = {"type": "Property", "value": transition.reason.value}
        entity[sdm.MSG_ID] = {
            "type": "Property",
            "value": f"urn:cityedge:{self.gateway}:{device_id}:status:{now}",
        }
        entity["@context"] = entity.pop("@context")
        return [OutMessage(self.topic(device_id), _dump([entity]), qos=self._qos)]

    # --- mapping --------------------------------------------------------------------------
    def _describe(
        self,
        device_id: str,
        kind: str,
        entity_id: str | None,
        location: tuple[float, float] | None,
        controlled: tuple[str, ...],
        points: dict[str, Point],
    ) -> _Device:
        model = sdm.model_for_kind(kind)
        primary = entity_id or f"urn:ngsi-ld:{model.type}:{self.gateway}:{device_id}"
        device_entity = (
            primary if model is sdm.DEVICE else f"urn:ngsi-ld:Device:{self.gateway}:{device_id}"
        )
        return _Device(model, primary, device_entity, location, controlled, points)

    def _device(self, device_id: str, reading: Reading | None) -> _Device:
        dev = self._devices.get(device_id)
        if dev is None:  # not configured (should not happen): map from what the reading says
            kind = reading.device_kind if reading is not None else ""
            entity_id = reading.entity_id if reading is not None else None
            dev = self._devices[device_id] = self._describe(
                device_id, kind, entity_id, None, (), {}
            )
        return dev

    def _target(self, r: Reading) -> _Target:
        """Where a reading goes: an attribute of the device's entity when the model has one
        of that name whose type every value of the point fits (or a ``cityedge:`` extension),
        else a DeviceMeasurement of its own. Fixed per point, so entity ids stay stable."""
        key = (r.device_id, r.point, r.metric)
        t = self._targets.get(key)
        if t is None:
            dev = self._device(r.device_id, r)
            spec = dev.model.readings.get(r.metric)
            point = dev.points.get(r.point)
            if sdm.is_extension(r.metric):
                t = _Target(dev.model, dev.entity_id, r.metric)
            elif spec is not None and point is not None and sdm.fits(spec, point):
                t = _Target(dev.model, dev.entity_id, r.metric, spec)
            else:
                t = self._measurement_target(r)
            self._targets[key] = t
        return t

    def _measurement_target(self, r: Reading) -> _Target:
        mid = f"urn:ngsi-ld:DeviceMeasurement:{self.gateway}:{r.device_id}:{r.point}"
        return _Target(sdm.DEVICE_MEASUREMENT, mid, r.metric)

    def _snapshots(self, readings: Sequence[Reading]) -> list[list[Reading]]:
        """Cut where an (entity, attribute) would repeat, keeping arrival order."""
        snaps: list[list[Reading]] = [[]]
        seen: set[tuple[str, str]] = set()
        for r in readings:
            t = self._target(r)
            key = (t.entity_id, t.attribute)
            if key in seen:
                snaps.append([])
                seen.clear()
            seen.add(key)
            snaps[-1].append(r)
        return snaps

    # --- messages -------------------------------------------------------------------------
    def _placed(self, dev: _Device, readings: Sequence[Reading]) -> list[_Placed]:
        """Each reading with a value and its target for this message. A value outside the
        model attribute's enum or bounds goes to its DeviceMeasurement (``outlier``); when the
        primary entity cannot carry what its model requires (a Streetlight's location, or a
        status never read yet) its readings go to DeviceMeasurements too, so every entity
        published validates against its model."""
        placed: list[_Placed] = []
        for r in readings:
            if r.quality is Quality.BAD or r.value is None:
                continue  # no trustworthy value: NGSI-LD has no null Property value
            t = self._target(r)
            if t.spec is not None and not t.spec.holds(sdm.model_value(t.spec, r.value)):
                placed.append((r, self._measurement_target(r), True))
            else:
                placed.append((r, t, False))
        if not self._primary_complete(dev, placed):
            placed = [
                (r, self._measurement_target(r), o) if t.entity_id == dev.entity_id else (r, t, o)
                for r, t, o in placed
            ]
        return placed

    def _primary_complete(self, dev: _Device, placed: list[_Placed]) -> bool:
        for attr in dev.model.required:
            if attr == "location":
                if dev.location is None:
                    return False
            elif (
                attr not in _SUPPLIED
                and (dev.entity_id, attr) not in self._required
                and not any(t.attribute == attr and t.spec is not None for _, t, _ in placed)
            ):
                return False
        return True

    def _message(self, device_id: str, readings: Sequence[Reading]) -> OutMessage | None:
        """None when no reading has a value to publish (all bad)."""
        dev = self._device(device_id, readings[0])
        seqs = [r.seq for r in readings]
        msg_id = f"urn:cityedge:{self.gateway}:{device_id}:{min(seqs)}-{max(seqs)}"
        entities: dict[str, Entity] = {}
        for r, t, outlier in self._placed(dev, readings):
            entity = entities.get(t.entity_id)
            if entity is None:
                entity = entities[t.entity_id] = self._entity(t.model, t.entity_id, dev)
            if t.model is sdm.DEVICE_MEASUREMENT:
                self._measurement(entity, dev, r, outlier=outlier)
            else:
                prop = _reading_prop(r, sdm.model_value(t.spec, r.value) if t.spec else None)
                entity[t.attribute] = prop
                if t.attribute in dev.model.required:
                    self._required[(t.entity_id, t.attribute)] = prop
        if not entities:
            return None
        primary = entities.get(dev.entity_id)
        if primary is not None:
            for attr in dev.model.required:  # the last known value, with its own observedAt
                if attr not in primary and (dev.entity_id, attr) in self._required:
                    primary[attr] = self._required[(dev.entity_id, attr)]
        for entity in entities.values():
            if entity["type"] == sdm.TRAFFIC_FLOW.type and "dateObserved" not in entity:
                # required by the model: the latest observation time in the entity
                latest = max(
                    v["observedAt"]
                    for v in entity.values()
                    if isinstance(v, dict) and "observedAt" in v
                )
                entity["dateObserved"] = _datetime(latest)
            entity[sdm.MSG_ID] = {"type": "Property", "value": msg_id}
            entity["@context"] = entity.pop("@context")  # last, for readability
        return OutMessage(self.topic(device_id), _dump(list(entities.values())), qos=self._qos)

    def _entity(self, model: sdm.EntityModel, entity_id: str, dev: _Device) -> Entity:
        e: Entity = {"id": entity_id, "type": model.type}
        if dev.location is not None:
            lat, lon = dev.location
            e["location"] = {
                "type": "GeoProperty",
                "value": {"type": "Point", "coordinates": [lon, lat]},
            }
        if model is sdm.DEVICE:  # required by the model: what the device senses or controls
            e["controlledProperty"] = {"type": "Property", "value": list(dev.controlled)}
        e["@context"] = model.contexts
        return e

    def _measurement(self, e: Entity, dev: _Device, r: Reading, *, outlier: bool = False) -> None:
        value = r.value
        if isinstance(value, str | tuple):
            e["textValue"] = _reading_prop(
                r, ",".join(value) if isinstance(value, tuple) else value, unit=False
            )
        else:
            e["numValue"] = _reading_prop(r, int(value) if isinstance(value, bool) else value)
        e["controlledProperty"] = {"type": "Property", "value": r.metric}
        e["dateObserved"] = _datetime(_iso(r.observed_at_ms))
        e["refDevice"] = {"type": "Relationship", "object": dev.device_entity_id}
        code = sdm.unit_code(r.unit, r.unit_code)
        if code is not None:
            e["unit"] = {"type": "Property", "value": code}
        if outlier:  # a value its model attribute cannot hold (out of range or enum)
            e["outlier"] = {"type": "Property", "value": True}


def _prop(value: object, observed_ms: int) -> Entity:
    return {"type": "Property", "value": value, "observedAt": _iso(observed_ms)}


def _reading_prop(r: Reading, value: Value = None, *, unit: bool = True) -> Entity:
    v = r.value if value is None else value
    p = _prop(list(v) if isinstance(v, tuple) else v, r.observed_at_ms)
    code = sdm.unit_code(r.unit, r.unit_code) if unit else None
    if code is not None:
        p["unitCode"] = code
    if r.quality is Quality.STALE:
        p["quality"] = {"type": "Property", "value": "stale"}  # sub-property: last known value
    return p


# readings of one poll share their timestamp: formatting dominates otherwise
_iso = functools.lru_cache(maxsize=256)(iso_ms)


def _datetime(iso: str) -> Entity:
    # the JSON-LD typed literal the Smart Data Models normalized examples use for DateTime
    return {"type": "Property", "value": {"@type": "DateTime", "@value": iso}}


def _dump(entities: list[Entity]) -> bytes:
    return json.dumps(entities, separators=(",", ":"), ensure_ascii=False).encode()
