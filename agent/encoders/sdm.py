"""FIWARE Smart Data Models used by the NGSI-LD encoder: entity types, attribute allow-lists,
JSON-LD contexts and UCUM -> UN/CEFACT unit codes.

The allow-lists hold the attribute names each model's JSON Schema defines (plus the GSMA and
Location commons every model includes). A reading whose metric is not an attribute of its
device's entity type is published as a DeviceMeasurement instead of inventing an attribute,
so every entity we emit validates against its model. Sources: smart-data-models
dataModel.Streetlighting/Streetlight, dataModel.WaterConsumption/WaterConsumptionObserved,
dataModel.Transportation/TrafficFlowObserved, dataModel.Device/Device and /DeviceMeasurement.
"""

from __future__ import annotations

from dataclasses import dataclass

CORE_CONTEXT = "https://uri.etsi.org/ngsi-ld/v1/ngsi-ld-core-context.jsonld"
_SDM = "https://raw.githubusercontent.com/smart-data-models/{}/master/context.jsonld"

# Our one extension attribute: the stable message id (NGSI-LD has no envelope for it). As an
# absolute IRI ("cityedge:" scheme) it needs no @context entry and cannot clash with a model.
MSG_ID = "cityedge:msgId"
EXTENSIONS = frozenset({MSG_ID})

COMMON = frozenset(
    {
        "id",
        "type",
        "name",
        "description",
        "alternateName",
        "dataProvider",
        "dateCreated",
        "dateModified",
        "source",
        "seeAlso",
        "owner",
        "address",
        "areaServed",
        "location",
    }
)


@dataclass(frozen=True, slots=True)
class EntityModel:
    type: str
    context: str  # the model's JSON-LD @context URL
    attributes: frozenset[str]  # model-specific attributes (COMMON ones are always allowed)

    def allows(self, attribute: str) -> bool:
        return attribute in self.attributes or attribute in COMMON

    @property
    def contexts(self) -> list[str]:
        # the core context goes last: model terms must not be shadowed by core definitions
        return [self.context, CORE_CONTEXT]


STREETLIGHT = EntityModel(
    "Streetlight",
    _SDM.format("dataModel.Streetlighting"),
    frozenset(
        {
            "circuit",
            "controllingMethod",
            "current",
            "dateLastLampChange",
            "dateLastSwitchingOff",
            "dateLastSwitchingOn",
            "dateServiceStarted",
            "deviceInfo",
            "feederID",
            "feederPillarNum",
            "illuminanceLevel",
            "image",
            "lanternHeight",
            "locationCategory",
            "municipalityInfo",
            "observationDateTime",
            "powerConsumption",
            "powerFactor",
            "powerRating",
            "powerState",
            "refDevice",
            "refStreetlightControlCabinet",
            "refStreetlightGroup",
            "refStreetlightModel",
            "status",
            "streetPoleNum",
            "voltage",
            "annotations",
            "color",
        }
    ),
)

WATER_CONSUMPTION = EntityModel(
    "WaterConsumptionObserved",
    _SDM.format("dataModel.WaterConsumption"),
    frozenset(
        {
            "acquisitionStageFailure",
            "alarmFlowPersistence",
            "alarmInProgress",
            "alarmStopsLeaks",
            "alarmTamper",
            "alarmWaterQuality",
            "maxFlow",
            "minFlow",
            "moduleTampered",
            "persistenceFlowDuration",
            "waterConsumption",
            "waterType",
        }
    ),
)

TRAFFIC_FLOW = EntityModel(
    "TrafficFlowObserved",
    _SDM.format("dataModel.Transportation"),
    frozenset(
        {
            "averageGapDistance",
            "averageHeadwayTime",
            "averageVehicleLength",
            "averageVehicleSpeed",
            "congested",
            "dateObserved",
            "dateObservedFrom",
            "dateObservedTo",
            "intensity",
            "laneDirection",
            "laneId",
            "occupancy",
            "refRoadSegment",
            "reversedLane",
            "vehicleSubType",
            "vehicleType",
        }
    ),
)

DEVICE = EntityModel(
    "Device",
    _SDM.format("dataModel.Device"),
    frozenset(
        {
            "batteryLevel",
            "category",
            "configuration",
            "controlledAsset",
            "controlledProperty",
            "dateFirstUsed",
            "dateInstalled",
            "dateLastCalibration",
            "dateLastValueReported",
            "dateManufactured",
            "deviceState",
            "direction",
            "distance",
            "dstAware",
            "depth",
            "firmwareVersion",
            "hardwareVersion",
            "ipAddress",
            "macAddress",
            "mcc",
            "mnc",
            "osVersion",
            "provider",
            "refDeviceModel",
            "relativePosition",
            "rssi",
            "serialNumber",
            "softwareVersion",
            "supportedProtocol",
            "value",
        }
    ),
)

DEVICE_MEASUREMENT = EntityModel(
    "DeviceMeasurement",
    _SDM.format("dataModel.Device"),
    frozenset(
        {
            "controlledProperty",
            "dateObserved",
            "deviceType",
            "measurementType",
            "numValue",
            "outlier",
            "refDevice",
            "textValue",
            "unit",
        }
    ),
)

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
