"""Validators built from the vendored standard schemas (PROVENANCE.md): Smart Data Models
(Draft 2020-12, ``$ref``s resolved to the local copies) and the IoT Agent provisioning
templates of iotagent-node-lib (Draft 3, as its revalidator reads them)."""

from __future__ import annotations

import functools
import json
import re
from datetime import datetime
from pathlib import Path
from typing import Any

from jsonschema import Draft3Validator, Draft202012Validator, FormatChecker
from referencing import Registry, Resource

HERE = Path(__file__).parent
SDM = HERE / "smart-data-models"
IOTA = HERE / "iotagent-node-lib"
SDM_TYPES = (
    "Streetlight",
    "WaterConsumptionObserved",
    "TrafficFlowObserved",
    "Device",
    "DeviceMeasurement",
)
_REFS = {
    "https://smart-data-models.github.io/data-models/common-schema.json": "common-schema.json",
    "https://smart-data-models.github.io/dataModel.Device/device-schema.json": "device-schema.json",
}

# RFC 3339 date-time (what JSON Schema's "date-time" format means); jsonschema only checks it
# with an optional package, so the rule is spelled out here
_RFC3339 = re.compile(r"^\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$")
_URI = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:[^\s]+$")
FORMATS = FormatChecker()


@FORMATS.checks("date-time")
def _date_time(value: object) -> bool:
    if not isinstance(value, str) or not _RFC3339.match(value):
        return False
    datetime.fromisoformat(value.replace("Z", "+00:00").replace("z", "+00:00"))
    return True


@FORMATS.checks("uri")
def _uri(value: object) -> bool:
    return not isinstance(value, str) or bool(_URI.match(value))


def load(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


@functools.cache
def sdm_validator(entity_type: str) -> Draft202012Validator:
    registry: Registry[Any] = Registry().with_resources(
        (url, Resource.from_contents(load(SDM / name))) for url, name in _REFS.items()
    )
    schema = load(SDM / f"{entity_type}.schema.json")
    return Draft202012Validator(schema, registry=registry, format_checker=FORMATS)


def key_values(entity: dict[str, Any]) -> dict[str, Any]:
    """The key-values form of a normalized NGSI-LD entity: each attribute's ``value`` (a
    JSON-LD typed literal ``{"@type", "@value"}`` read as its ``@value``), a Relationship's
    ``object``, a GeoProperty's GeoJSON; ``@context`` dropped."""
    out: dict[str, Any] = {}
    for name, attr in entity.items():
        if name == "@context":
            continue
        if name in ("id", "type"):
            out[name] = attr
        elif attr["type"] == "Relationship":
            out[name] = attr["object"]
        else:
            v = attr["value"]
            out[name] = v["@value"] if isinstance(v, dict) and "@value" in v else v
    return out


def sdm_errors(entity: dict[str, Any]) -> list[str]:
    """Every schema error of one normalized entity against its official model."""
    kv = key_values(entity)
    v = sdm_validator(kv["type"])
    return [
        f"{kv['id']}: {'/'.join(map(str, e.absolute_path)) or '(entity)'}: {e.message}"
        for e in v.iter_errors(kv)
    ]


@functools.cache
def iota_validator(template: str) -> Draft3Validator:
    return Draft3Validator(load(IOTA / f"{template}.json"))


def iota_errors(template: str, body: Any) -> list[str]:
    return [
        f"{'/'.join(map(str, e.absolute_path)) or '(body)'}: {e.message}"
        for e in iota_validator(template).iter_errors(body)
    ]
