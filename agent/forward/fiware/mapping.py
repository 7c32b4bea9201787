"""Each device's mapping onto NGSI-LD entities for the FIWARE IoT Agent (iotagent-json).

The same rules as the ``ngsild`` encoder (agent/forward/encoders/ngsild.py), fixed per point so they
can be provisioned: a point whose metric is an attribute of the device's Smart Data Model and
whose values fit its type fills that attribute of the device's entity; a ``cityedge:`` metric
is an extension attribute of that entity; any other point is the ``numValue``/``textValue`` of
a DeviceMeasurement entity of its own (an IoT Agent multi-entity attribute), with its
``controlledProperty``, ``refDevice`` and ``unit`` provisioned as static attributes. The
measure key (``object_id``) is the profile point name.

The device's state (online / degraded / offline, drivers/device_state.py) goes to its Device
entity, as with the ``ngsild`` encoding: ``deviceState`` and ``deviceStateReason`` (NGSI-LD's
``reason`` sub-property cannot be a measure). A device whose model is not Device gets that
entity as a second one (with its ``controlledProperty``), the one its DeviceMeasurements'
``refDevice`` names. Their measure keys start with ``_``, which no point name can
(drivers/core/profile.py NAME_RE), so they never collide with a point.
"""

from __future__ import annotations

from dataclasses import dataclass

from agent.forward.encoders import sdm
from drivers.base import DeviceBinding
from drivers.core.profile import DataType, Point

# IoT Agent attribute types (iotagent-node-lib converts measures by them for NGSI-LD:
# Number -> JSON number, Integer -> parseInt, Text -> string, Boolean, Array, geo:json ->
# GeoProperty, Relationship -> Relationship)
_TYPES = {"number": "Number", "integer": "Integer", "string": "Text", "boolean": "Boolean"}
STATE_KEY = "_deviceState"  # measure keys of the device state (never a point name)
REASON_KEY = "_deviceStateReason"


@dataclass(frozen=True, slots=True)
class Attr:
    object_id: str  # measure key: the point name
    name: str  # attribute name in the entity (Smart Data Models)
    type: str  # IoT Agent attribute type
    entity_name: str | None = None  # another entity (a DeviceMeasurement)
    entity_type: str | None = None
    spec: sdm.AttrSpec | None = None  # the model attribute's type, when it is one
    text: bool = False  # textValue of a measurement (bitfields joined by ",")

    def provision(self) -> dict[str, str]:
        d = {"object_id": self.object_id, "name": self.name, "type": self.type}
        if self.entity_name is not None and self.entity_type is not None:
            d["entity_name"] = self.entity_name
            d["entity_type"] = self.entity_type
        return d


@dataclass(frozen=True, slots=True)
class DeviceMap:
    device_id: str
    entity_name: str
    entity_type: str
    attributes: tuple[Attr, ...]
    statics: tuple[dict[str, object], ...]
    commands: tuple[str, ...]  # writable points
    state: tuple[Attr, Attr]  # deviceState and deviceStateReason of the Device entity

    def attr(self, point: str) -> Attr | None:
        for a in self.attributes:
            if a.object_id == point:
                return a
        return None


def _static(name: str, type_: str, value: object, extra: dict[str, object]) -> dict[str, object]:
    return {"name": name, "type": type_, "value": value, **extra}


def _kind_type(p: Point) -> str:
    kind = sdm.point_kind(p)
    return "Array" if kind is None else _TYPES[kind]


def device_map(gateway_id: str, b: DeviceBinding) -> DeviceMap:
    model = sdm.model_for_kind(b.profile.kind)
    entity = b.device.entity_id or f"urn:ngsi-ld:{model.type}:{gateway_id}:{b.id}"
    device_entity = entity if model is sdm.DEVICE else f"urn:ngsi-ld:Device:{gateway_id}:{b.id}"
    attrs: list[Attr] = []
    statics: list[dict[str, object]] = []
    if b.location is not None:
        lat, lon = b.location
        point = {"type": "Point", "coordinates": [lon, lat]}
        statics.append({"name": "location", "type": "geo:json", "value": point})
    if model is sdm.DEVICE:
        statics.append(
            {
                "name": "controlledProperty",
                "type": "Array",
                "value": list(b.profile.controlled_properties),
            }
        )
    for p in b.profile.points:
        metric = p.metric_name
        spec = model.readings.get(metric)
        if sdm.is_extension(metric):
            attrs.append(Attr(p.name, metric, _kind_type(p)))
        elif spec is not None and sdm.fits(spec, p):
            attrs.append(Attr(p.name, metric, _TYPES[spec.type], spec=spec))
        else:
            dm = f"urn:ngsi-ld:DeviceMeasurement:{gateway_id}:{b.id}:{p.name}"
            text = p.type in (DataType.STRING, DataType.BITFIELD) or sdm.point_kind(p) == "string"
            value = ("textValue", "Text") if text else ("numValue", "Number")
            attrs.append(Attr(p.name, *value, dm, "DeviceMeasurement", text=text))
            on_dm: dict[str, object] = {"entity_name": dm, "entity_type": "DeviceMeasurement"}
            statics.append(_static("controlledProperty", "Text", metric, on_dm))
            statics.append(_static("refDevice", "Relationship", device_entity, on_dm))
            code = sdm.unit_code(p.unit, p.unit_code)
            if code is not None:
                statics.append(_static("unit", "Text", code, on_dm))
    if model is sdm.DEVICE:
        on_device: tuple[str | None, str | None] = (None, None)
    else:
        on_device = (device_entity, sdm.DEVICE.type)
        statics.append(
            _static(
                "controlledProperty",
                "Array",
                list(b.profile.controlled_properties),
                {"entity_name": device_entity, "entity_type": sdm.DEVICE.type},
            )
        )
    state = (
        Attr(STATE_KEY, "deviceState", "Text", *on_device),
        Attr(REASON_KEY, "deviceStateReason", "Text", *on_device),
    )
    attrs += state
    commands = tuple(p.name for p in b.profile.points if p.writable)
    return DeviceMap(b.id, entity, model.type, tuple(attrs), tuple(statics), commands, state)
