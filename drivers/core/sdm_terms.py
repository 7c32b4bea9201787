"""Smart Data Models vocabulary that profiles are validated against at load time.

``CONTROLLED_PROPERTIES`` is the enum of ``ControlledPropertyType`` in dataModel.Device's
device-schema.json (tests/agent/standards/ checks it against the vendored copy). The Device
entity requires ``controlledProperty``; a profile names its terms with ``controlled_property``,
else its kind's default below applies.
"""

from __future__ import annotations

CONTROLLED_PROPERTIES = frozenset(
    {
        "airPollution",
        "atmosphericPressure",
        "averageVelocity",
        "batteryLife",
        "batterySupply",
        "cdom",
        "conductance",
        "conductivity",
        "depth",
        "eatingActivity",
        "electricityConsumption",
        "energy",
        "fillingLevel",
        "freeChlorine",
        "gasConsumption",
        "gateOpening",
        "heading",
        "humidity",
        "light",
        "location",
        "milking",
        "motion",
        "movementActivity",
        "noiseLevel",
        "occupancy",
        "orp",
        "pH",
        "power",
        "precipitation",
        "pressure",
        "refractiveIndex",
        "salinity",
        "smoke",
        "soilMoisture",
        "solarRadiation",
        "speed",
        "tds",
        "temperature",
        "trafficFlow",
        "tss",
        "turbidity",
        "uvLampIntensity",
        "uvOrganicLoad",
        "waterConsumption",
        "waterFlow",
        "waterLevel",
        "waterPollution",
        "weatherConditions",
        "weight",
        "windDirection",
        "windSpeed",
    }
)

KIND_CONTROLLED_PROPERTIES: dict[str, tuple[str, ...]] = {
    "streetlight": ("light", "power"),
    "water_meter": ("waterConsumption", "waterFlow"),
    "energy_meter": ("electricityConsumption", "energy", "power"),
    "camera": ("trafficFlow",),
    "traffic": ("trafficFlow",),
    "traffic_counter": ("trafficFlow",),
    "traffic_controller": ("trafficFlow",),
}

# The kinds a profile may declare: the ones above, whose readings map onto a Smart Data Models
# entity (or a Device with these defaults), and "device" for any other field device (a Device
# with DeviceMeasurements; its profile names its controlled_property).
KINDS: tuple[str, ...] = (*KIND_CONTROLLED_PROPERTIES, "device")
