"""FIWARE Smart Data Models used by the NGSI-LD and IoT Agent encoders: entity types, their
attributes and the JSON types of the ones a reading can fill, JSON-LD contexts and UCUM ->
UN/CEFACT unit codes.

``attributes`` lists every property each model's JSON Schema defines (its own and the GSMA /
Location / PhysicalObject commons it includes); ``readings`` holds the ones a reading may fill
(plain number, integer, string or boolean, with the schema's enum and bounds); ``required``
what the schema requires beyond ``id`` and ``type``. tests/agent/test_sdm_schemas.py checks
all three against the vendored official schemas (tests/standards/). A reading that does not
fit its device's model is published as a DeviceMeasurement instead of inventing or mistyping
an attribute, so every entity we emit validates against its model. Sources:
smart-data-models dataModel.Streetlighting/Streetlight, dataModel.WaterConsumption/
WaterConsumptionObserved, dataModel.Transportation/TrafficFlowObserved, dataModel.Device/
Device and /DeviceMeasurement (commits in tests/standards/PROVENANCE.md).
"""

from __future__ import annotations

from agent.forward.encoders.sdm_models import (
    CORE_CONTEXT,
    DEVICE,
    DEVICE_MEASUREMENT,
    STREETLIGHT,
    TRAFFIC_FLOW,
    WATER_CONSUMPTION,
    AttrSpec,
    EntityModel,
    JsonType,
)
from drivers.core.profile import INT_RANGES, DataType, Point
from drivers.core.reading import Value
from drivers.core.resolution import point_decimals

__all__ = [
    "CORE_CONTEXT",
    "DEVICE",
    "DEVICE_MEASUREMENT",
    "STREETLIGHT",
    "TRAFFIC_FLOW",
    "WATER_CONSUMPTION",
    "AttrSpec",
    "EntityModel",
]

# Extension attributes are absolute IRIs in the "cityedge:" scheme: they need no @context
# entry and cannot clash with a model. The stable message id is one; a profile point whose
# metric starts with "cityedge:" (raw fault bits beside a model's enum, say) is another.
EXTENSION_PREFIX = "cityedge:"
MSG_ID = "cityedge:msgId"


def is_extension(attribute: str) -> bool:
    return attribute.startswith(EXTENSION_PREFIX) and len(attribute) > len(EXTENSION_PREFIX)


MODELS = {
    m.type: m for m in (STREETLIGHT, WATER_CONSUMPTION, TRAFFIC_FLOW, DEVICE, DEVICE_MEASUREMENT)
}

# device kind (profile ``kind``) -> primary entity model; any other kind is a Device
KIND_MODELS = {
    "streetlight": STREETLIGHT,
    "water_meter": WATER_CONSUMPTION,
    "traffic": TRAFFIC_FLOW,
    "traffic_counter": TRAFFIC_FLOW,
    "traffic_controller": TRAFFIC_FLOW,
    "camera": TRAFFIC_FLOW,  # counting cameras; PTZ positions become DeviceMeasurements
}


def model_for_kind(kind: str) -> EntityModel:
    return KIND_MODELS.get(kind, DEVICE)


# UCUM symbol -> UN/CEFACT Recommendation 20 common code, for points that give a unit but no
# unit_code. Only codes we are sure of; an unknown unit is published without unitCode.
UNIT_CODES = {
    "W": "WTT",
    "kW": "KWT",
    "MW": "MAW",
    "Wh": "WHR",
    "kWh": "KWH",
    "MWh": "MWH",
    "V": "VLT",
    "kV": "KVT",
    "A": "AMP",
    "mA": "4K",
    "Hz": "HTZ",
    "m3": "MTQ",
    "L": "LTR",
    "l": "LTR",
    "m3/h": "MQH",
    "%": "P1",
    "Cel": "CEL",
    "K": "KEL",
    "lx": "LUX",
    "cd": "CDL",
    "km/h": "KMH",
    "m/s": "MTS",
    "m": "MTR",
    "cm": "CMT",
    "mm": "MMT",
    "km": "KTM",
    "s": "SEC",
    "min": "MIN",
    "h": "HUR",
    "d": "DAY",
    "deg": "DD",
    "1": "C62",
    "Pa": "PAL",
    "kPa": "KPA",
    "bar": "BAR",
    "hPa": "A97",
    "dB": "2N",
    "1/h": "H10",
}


def unit_code(unit: str | None, code: str | None) -> str | None:
    """The point's explicit UN/CEFACT code, else the one its UCUM unit maps to."""
    if code:
        return code
    return UNIT_CODES.get(unit) if unit else None


# --- which readings fit which model attribute --------------------------------------------
def point_kind(point: Point) -> JsonType | None:
    """The JSON type of the values a profile point produces (None: a list, fits no model
    attribute). Integer registers at a whole-number resolution, and any point with
    ``decimals = 0``, give integers (drivers/core/resolution.py)."""
    if point.type in (DataType.BOOL, DataType.BIT) or point.table.is_bits:
        return "boolean"
    if point.type is DataType.BITFIELD:
        return None
    if point.type is DataType.STRING or point.enum is not None or point.flag_enum is not None:
        return "string"
    d = point_decimals(point)
    plain = point.scale == 1 and point.offset == 0
    if d == 0 or (d is None and point.type in INT_RANGES and plain):
        return "integer"
    return "number"


def labels(point: Point) -> frozenset[str]:
    if point.enum is not None:
        return frozenset(point.enum.values())
    if point.flag_enum is not None:
        return frozenset(point.flag_enum.values()) | {point.flag_enum_default or ""}
    return frozenset()


def fits(spec: AttrSpec, point: Point) -> bool:
    """Can every value of ``point`` fill an attribute of this spec (its type and enum)?
    Bounds are checked per value (:meth:`AttrSpec.holds`)."""
    kind = point_kind(point)
    if spec.type == "integer":
        if kind == "boolean":  # 0/1 flags, as WaterConsumptionObserved's alarms
            return spec.enum is None or {0, 1} <= set(spec.enum)
        return kind == "integer"
    if spec.type == "number":
        return kind in ("integer", "number")
    if spec.type == "boolean":
        return kind == "boolean"
    if kind != "string":
        return False
    if spec.enum is None:
        return point.type is DataType.STRING or not labels(point)
    return bool(labels(point)) and labels(point) <= set(spec.enum)


def model_value(spec: AttrSpec, value: Value) -> Value:
    """A reading's value in the attribute's JSON type: booleans become 0/1 where the model
    wants an integer; an integral float becomes an int there."""
    if spec.type == "integer":
        if isinstance(value, bool):
            return int(value)
        if isinstance(value, float) and value.is_integer():
            return int(value)
    return value
