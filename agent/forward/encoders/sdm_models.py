"""The five Smart Data Models CityEdge emits, as data: every attribute each official schema
defines, the JSON type of those a reading may fill, and what it requires (see sdm.py; checked
against the vendored schemas by tests/agent/test_sdm_schemas.py)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

_SDM = "https://raw.githubusercontent.com/smart-data-models/{}/master/context.jsonld"
CORE_CONTEXT = "https://uri.etsi.org/ngsi-ld/v1/ngsi-ld-core-context.jsonld"

JsonType = Literal["number", "integer", "string", "boolean"]


@dataclass(frozen=True, slots=True)
class AttrSpec:
    """The JSON type a model attribute's value must have (key-values form)."""

    type: JsonType
    enum: tuple[str | int, ...] | None = None
    minimum: float | None = None
    maximum: float | None = None

    def holds(self, value: object) -> bool:
        """Does ``value`` (already converted by :func:`model_value`) satisfy this spec?"""
        if self.enum is not None and value not in self.enum:
            return False
        if self.minimum is None and self.maximum is None:
            return True
        if not isinstance(value, int | float) or not math.isfinite(value):
            return False
        if self.minimum is not None and value < self.minimum:
            return False
        return self.maximum is None or value <= self.maximum


@dataclass(frozen=True, slots=True)
class EntityModel:
    type: str
    context: str  # the model's JSON-LD @context URL
    attributes: frozenset[str]  # every property the schema defines
    readings: Mapping[str, AttrSpec] = field(default_factory=dict)  # fillable by a reading
    required: tuple[str, ...] = ()  # beyond id and type

    def allows(self, attribute: str) -> bool:
        return attribute in self.attributes

    @property
    def contexts(self) -> list[str]:
        # the core context goes last: model terms must not be shadowed by core definitions
        return [self.context, CORE_CONTEXT]


STREETLIGHT = EntityModel(
    "Streetlight",
    _SDM.format("dataModel.Streetlighting"),
    frozenset(
        {
            "address",
            "alternateName",
            "annotations",
            "areaServed",
            "circuit",
            "color",
            "controllingMethod",
            "current",
            "dataProvider",
            "dateCreated",
            "dateLastLampChange",
            "dateLastSwitchingOff",
            "dateLastSwitchingOn",
            "dateModified",
            "dateServiceStarted",
            "description",
            "deviceInfo",
            "feederID",
            "feederPillarNum",
            "illuminanceLevel",
            "image",
            "lanternHeight",
            "lifetimeMotionDetected",
            "lifetimePowerConsumption",
            "location",
            "locationCategory",
            "municipalityInfo",
            "name",
            "observationDateTime",
            "owner",
            "powerConsumption",
            "powerFactor",
            "powerRating",
            "powerState",
            "refDevice",
            "refStreetlightControlCabinet",
            "refStreetlightGroup",
            "refStreetlightModel",
            "seeAlso",
            "source",
            "status",
            "streetPoleNum",
            "voltage",
        }
    ),
    {
        "alternateName": AttrSpec("string"),
        "areaServed": AttrSpec("string"),
        "circuit": AttrSpec("string"),
        "color": AttrSpec("string"),
        "controllingMethod": AttrSpec("string", enum=("group", "individual")),
        "current": AttrSpec("number"),
        "dataProvider": AttrSpec("string"),
        "description": AttrSpec("string"),
        "feederPillarNum": AttrSpec("string"),
        "illuminanceLevel": AttrSpec("number", minimum=0, maximum=1),
        "lanternHeight": AttrSpec("number", minimum=0),
        "lifetimeMotionDetected": AttrSpec("number"),
        "lifetimePowerConsumption": AttrSpec("number"),
        "locationCategory": AttrSpec(
            "string",
            enum=(
                "bridge",
                "centralIsland",
                "facade",
                "garden",
                "park",
                "parking",
                "pedestrianPath",
                "playground",
                "road",
                "sidewalk",
                "tunnel",
            ),
        ),
        "name": AttrSpec("string"),
        "powerConsumption": AttrSpec("number"),
        "powerFactor": AttrSpec("number"),
        "powerRating": AttrSpec("number"),
        "powerState": AttrSpec("string", enum=("bootingUp", "low", "off", "on")),
        "source": AttrSpec("string"),
        "status": AttrSpec("string", enum=("brokenLantern", "columnIssue", "defectiveLamp", "ok")),
        "streetPoleNum": AttrSpec("string"),
        "voltage": AttrSpec("number"),
    },
    required=("location", "status"),
)


WATER_CONSUMPTION = EntityModel(
    "WaterConsumptionObserved",
    _SDM.format("dataModel.WaterConsumption"),
    frozenset(
        {
            "acquisitionStageFailure",
            "address",
            "alarmFlowPersistence",
            "alarmInProgress",
            "alarmStopsLeaks",
            "alarmTamper",
            "alarmWaterQuality",
            "alternateName",
            "areaServed",
            "dataProvider",
            "dateCreated",
            "dateModified",
            "description",
            "location",
            "maxFlow",
            "minFlow",
            "moduleTampered",
            "name",
            "owner",
            "persistenceFlowDuration",
            "seeAlso",
            "source",
            "waterConsumption",
            "waterType",
        }
    ),
    {
        "acquisitionStageFailure": AttrSpec("integer"),
        "alarmFlowPersistence": AttrSpec(
            "string",
            enum=(
                "Nothing to report",
                "No persistence",
                "In progress impacting persistence",
                "In progress persistence",
                "Past Persistence during the period",
            ),
        ),
        "alarmInProgress": AttrSpec("integer", enum=(0, 1)),
        "alarmStopsLeaks": AttrSpec("integer", enum=(0, 1)),
        "alarmTamper": AttrSpec("integer", enum=(0, 1)),
        "alarmWaterQuality": AttrSpec("integer", enum=(0, 1)),
        "alternateName": AttrSpec("string"),
        "areaServed": AttrSpec("string"),
        "dataProvider": AttrSpec("string"),
        "description": AttrSpec("string"),
        "maxFlow": AttrSpec("integer"),
        "minFlow": AttrSpec("integer"),
        "moduleTampered": AttrSpec("integer"),
        "name": AttrSpec("string"),
        "persistenceFlowDuration": AttrSpec(
            "string",
            enum=(
                "15m < 60m",
                "60m < 3h",
                "3h < 6h",
                "6h < 12h",
                "12h < 24h",
                "24h < 2d",
                "2d < 4d",
                "4d < 8d",
                "8d < 15d",
                "15d < 30d",
                "30d < 90d",
                "90d < 180d",
                "> 180d",
            ),
        ),
        "source": AttrSpec("string"),
        "waterConsumption": AttrSpec("integer"),
        "waterType": AttrSpec("string", enum=("hotWater", "serviceWater")),
    },
    required=(),
)


TRAFFIC_FLOW = EntityModel(
    "TrafficFlowObserved",
    _SDM.format("dataModel.Transportation"),
    frozenset(
        {
            "address",
            "alternateName",
            "areaServed",
            "averageGapDistance",
            "averageHeadwayTime",
            "averageVehicleLength",
            "averageVehicleSpeed",
            "congested",
            "dataProvider",
            "dateCreated",
            "dateModified",
            "dateObserved",
            "dateObservedFrom",
            "dateObservedTo",
            "description",
            "intensity",
            "laneDirection",
            "laneId",
            "location",
            "name",
            "occupancy",
            "owner",
            "refRoadSegment",
            "reversedLane",
            "seeAlso",
            "source",
            "vehicleSubType",
            "vehicleType",
        }
    ),
    {
        "alternateName": AttrSpec("string"),
        "areaServed": AttrSpec("string"),
        "averageGapDistance": AttrSpec("number", minimum=0),
        "averageHeadwayTime": AttrSpec("number", minimum=0),
        "averageVehicleLength": AttrSpec("number", minimum=0),
        "averageVehicleSpeed": AttrSpec("number", minimum=0),
        "congested": AttrSpec("boolean"),
        "dataProvider": AttrSpec("string"),
        "description": AttrSpec("string"),
        "intensity": AttrSpec("number", minimum=0),
        "laneDirection": AttrSpec("string", enum=("forward", "backward")),
        "laneId": AttrSpec("integer", minimum=1),
        "name": AttrSpec("string"),
        "occupancy": AttrSpec("number", minimum=0, maximum=1),
        "reversedLane": AttrSpec("boolean"),
        "source": AttrSpec("string"),
        "vehicleSubType": AttrSpec("string"),
        "vehicleType": AttrSpec(
            "string",
            enum=(
                "agriculturalVehicle",
                "bicycle",
                "bus",
                "minibus",
                "car",
                "caravan",
                "tram",
                "tanker",
                "carWithCaravan",
                "carWithTrailer",
                "lorry",
                "moped",
                "motorcycle",
                "motorcycleWithSideCar",
                "motorscooter",
                "trailer",
                "van",
                "constructionOrMaintenanceVehicle",
                "trolley",
                "binTrolley",
                "sweepingMachine",
                "cleaningTrolley",
            ),
        ),
    },
    required=("dateObserved",),
)


DEVICE = EntityModel(
    "Device",
    _SDM.format("dataModel.Device"),
    frozenset(
        {
            "address",
            "alternateName",
            "areaServed",
            "batteryLevel",
            "category",
            "configuration",
            "controlledAsset",
            "controlledProperty",
            "dataProvider",
            "dateCreated",
            "dateFirstUsed",
            "dateInstalled",
            "dateLastCalibration",
            "dateLastValueReported",
            "dateManufactured",
            "dateModified",
            "dateObserved",
            "depth",
            "description",
            "deviceCategory",
            "deviceState",
            "direction",
            "distance",
            "dstAware",
            "firmwareVersion",
            "hardwareVersion",
            "ipAddress",
            "location",
            "macAddress",
            "mcc",
            "mnc",
            "name",
            "osVersion",
            "owner",
            "provider",
            "refDeviceModel",
            "relativePosition",
            "rssi",
            "seeAlso",
            "serialNumber",
            "softwareVersion",
            "source",
            "supportedProtocol",
            "value",
        }
    ),
    {
        "alternateName": AttrSpec("string"),
        "areaServed": AttrSpec("string"),
        "dataProvider": AttrSpec("string"),
        "depth": AttrSpec("number"),
        "description": AttrSpec("string"),
        "deviceState": AttrSpec("string"),
        "direction": AttrSpec("string", enum=("Inlet", "Outlet", "Entry", "Exit")),
        "distance": AttrSpec("number"),
        "dstAware": AttrSpec("boolean"),
        "firmwareVersion": AttrSpec("string"),
        "hardwareVersion": AttrSpec("string"),
        "mcc": AttrSpec("string"),
        "mnc": AttrSpec("string"),
        "name": AttrSpec("string"),
        "osVersion": AttrSpec("string"),
        "provider": AttrSpec("string"),
        "relativePosition": AttrSpec("string"),
        "rssi": AttrSpec("number"),
        "serialNumber": AttrSpec("string"),
        "softwareVersion": AttrSpec("string"),
        "source": AttrSpec("string"),
        "value": AttrSpec("string"),
    },
    required=("controlledProperty",),
)


DEVICE_MEASUREMENT = EntityModel(
    "DeviceMeasurement",
    _SDM.format("dataModel.Device"),
    frozenset(
        {
            "address",
            "alternateName",
            "areaServed",
            "controlledProperty",
            "dataProvider",
            "dateCreated",
            "dateModified",
            "dateObserved",
            "description",
            "deviceType",
            "location",
            "measurementType",
            "name",
            "numValue",
            "outlier",
            "owner",
            "refDevice",
            "seeAlso",
            "source",
            "textValue",
            "unit",
        }
    ),
    {
        "alternateName": AttrSpec("string"),
        "areaServed": AttrSpec("string"),
        "controlledProperty": AttrSpec("string"),
        "dataProvider": AttrSpec("string"),
        "description": AttrSpec("string"),
        "deviceType": AttrSpec("string"),
        "measurementType": AttrSpec("string"),
        "name": AttrSpec("string"),
        "numValue": AttrSpec("number"),
        "outlier": AttrSpec("boolean"),
        "source": AttrSpec("string"),
        "textValue": AttrSpec("string"),
        "unit": AttrSpec("string"),
    },
    required=(),
)
