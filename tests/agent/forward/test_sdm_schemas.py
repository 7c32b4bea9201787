"""agent/forward/encoders/sdm*.py against the vendored official Smart Data Models schemas: attribute
names, the types / enums / bounds of the attributes readings fill, required attributes, the
Device controlledProperty vocabulary. The encoders decide from these tables, so they must be
the schemas' own."""

from __future__ import annotations

from typing import Any

import pytest

from agent.forward.encoders import sdm
from drivers.core.sdm_terms import CONTROLLED_PROPERTIES
from tests.standards import SDM, SDM_TYPES, load

COMMON = load(SDM / "common-schema.json")["definitions"]
DEVICE_COMMON = load(SDM / "device-schema.json")["definitions"]


def _resolve(node: dict[str, Any], local: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    while "$ref" in node:
        ref = node["$ref"]
        name = ref.rsplit("/", 1)[-1]
        if "common-schema.json" in ref:
            local = COMMON
        elif "device-schema.json" in ref:
            local = DEVICE_COMMON
        node = local[name]
    return node, local


def schema_properties(entity_type: str) -> dict[str, dict[str, Any]]:
    schema = load(SDM / f"{entity_type}.schema.json")
    props: dict[str, dict[str, Any]] = {}
    for ref in schema["allOf"]:
        part, local = _resolve(ref, {})
        for name, node in part.get("properties", {}).items():
            props[name] = _resolve(node, local)[0]
    return props


@pytest.mark.parametrize("entity_type", SDM_TYPES)
def test_models_match_their_schemas(entity_type: str) -> None:
    model = sdm.MODELS[entity_type]
    props = schema_properties(entity_type)
    schema = load(SDM / f"{entity_type}.schema.json")
    assert model.attributes == frozenset(props) - {"id", "type"}
    assert set(model.required) == set(schema["required"]) - {"id", "type"}
    fillable = {
        name
        for name, node in props.items()
        if node.get("type") in ("number", "integer", "string", "boolean")
        and "format" not in node
        and "pattern" not in node
        and name not in ("id", "type", "dateObserved")
    }
    assert set(model.readings) == fillable
    for name, spec in model.readings.items():
        node = props[name]
        assert spec.type == node["type"], name
        assert spec.enum == (tuple(node["enum"]) if "enum" in node else None), name
        assert spec.minimum == node.get("minimum") and spec.maximum == node.get("maximum"), name


def test_controlled_property_vocabulary_is_the_device_enum() -> None:
    enum = DEVICE_COMMON["ControlledPropertyType"]["items"]["enum"]
    assert frozenset(enum) == CONTROLLED_PROPERTIES
    assert schema_properties("Device")["controlledProperty"]["type"] == "array"


def test_attribute_specs_hold_and_convert() -> None:
    alarm = sdm.WATER_CONSUMPTION.readings["alarmTamper"]
    assert sdm.model_value(alarm, True) == 1 and type(sdm.model_value(alarm, True)) is int
    assert alarm.holds(1) and not alarm.holds(2)
    level = sdm.STREETLIGHT.readings["illuminanceLevel"]
    assert level.holds(0.4) and not level.holds(1.2) and not level.holds(float("nan"))
    volume = sdm.WATER_CONSUMPTION.readings["waterConsumption"]
    assert type(sdm.model_value(volume, 1234.0)) is int
