"""Native JSON envelope: every message validates against agent/schemas/native-v1.json."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from agent.config.outputs import MqttOutput
from agent.forward.encoders import make_encoder
from agent.forward.encoders.native import (
    NativeEncoder,
    parse_iso_ms,
    reading_from_json,
    reading_json,
)
from agent.forward.outbox import OutboxRow
from drivers.core.reading import Quality, Reading, Source, TimeQuality, iso_ms
from drivers.device_state import Reason, State, Transition

SCHEMA = json.loads(
    (Path(__file__).parents[3] / "agent" / "schemas" / "native-v1.json").read_text()
)
VALIDATOR = jsonschema.Draft202012Validator(SCHEMA, format_checker=jsonschema.FormatChecker())
T0 = 1_763_900_000_000


def reading(i: int, device: str = "lamp-1", **kw: object) -> Reading:
    base: dict[str, object] = {
        "gateway_id": "gw1",
        "device_id": device,
        "device_kind": "streetlight",
        "point": "power",
        "metric": "powerConsumption",
        "value": float(i),
        "unit": "W",
        "unit_code": "WTT",
        "observed_at_ms": T0 + i,
        "seq": i,
    }
    base.update(kw)
    return Reading(**base)  # type: ignore[arg-type]


def rows_of(pairs: list[tuple[int, Reading]]) -> list[OutboxRow]:
    return [OutboxRow(i, T0, reading_json(r)) for i, r in pairs]


def decode(payload: bytes) -> dict[str, Any]:
    doc = json.loads(payload)
    VALIDATOR.validate(doc)
    return doc


def test_data_envelope_carries_ids_and_original_fields() -> None:
    enc = NativeEncoder("gw1", clock=lambda: T0 + 5000)
    rows = [
        (10, reading(1)),
        (11, reading(2, quality=Quality.BAD, reason="timeout", value=None)),
        (
            12,
            reading(
                3,
                historical=True,
                time_quality=TimeQuality.UNSYNCED,
                value=("a", "b"),
                entity_id="urn:ngsi-ld:Streetlight:gw1:lamp-1",
                source=Source("modbus", "bus1", 3, "holding", 40, "float32"),
            ),
        ),
        (14, reading(4, value=True)),
    ]
    [msg] = enc.encode_rows(rows_of(rows), 0)
    assert msg.topic == "cityedge/gw1/data" and msg.qos == 1 and not msg.retain
    doc = decode(msg.payload)
    assert doc["msgId"] == "10-14" and doc["count"] == 4
    rs = doc["readings"]
    assert isinstance(rs, list)
    assert [r["id"] for r in rs] == [10, 11, 12, 14]
    assert rs[0]["observedAt"] == "2025-11-23T12:13:20.001Z"
    assert rs[1]["reason"] == "timeout" and rs[1]["value"] is None
    assert rs[2]["historical"] is True and rs[2]["value"] == ["a", "b"]
    assert rs[2]["source"]["unitId"] == 3
    assert "historical" not in rs[0]


def test_size_cap_splits_messages_in_order() -> None:
    enc = NativeEncoder("gw1", max_message_bytes=2048)
    rows = [(i, reading(i)) for i in range(1, 101)]
    msgs = enc.encode_rows(rows_of(rows), 0)
    assert len(msgs) > 3
    ids: list[int] = []
    for m in msgs:
        assert len(m.payload) <= 2048
        doc = decode(m.payload)
        first, last = (int(x) for x in str(doc["msgId"]).split("-"))
        got = [r["id"] for r in doc["readings"]]
        assert got[0] == first and got[-1] == last
        ids += got
    assert ids == list(range(1, 101))


def test_oversized_single_reading_goes_alone() -> None:
    enc = NativeEncoder("gw1", max_message_bytes=1024)
    big = reading(1, value="x" * 3000)
    msgs = enc.encode_rows(rows_of([(1, big), (2, reading(2))]), 0)
    assert len(msgs) == 2
    for m in msgs:
        decode(m.payload)


def test_status_will_online_and_device_status() -> None:
    enc = NativeEncoder("gw1", topic_prefix="city", clock=lambda: T0)
    will = enc.will()
    assert will is not None and will.retain and will.topic == "city/gw1/status"
    assert decode(will.payload)["state"] == "offline"
    [dev] = enc.device_status("lamp-1", False)
    assert dev.topic == "city/gw1/lamp-1/status" and dev.retain
    assert decode(dev.payload)["state"] == "offline"
    online, again = enc.on_connect()
    assert decode(online.payload)["state"] == "online"
    assert again.topic == dev.topic
    [off] = enc.on_disconnect()
    assert decode(off.payload) == json.loads(will.payload)
    assert enc.subscriptions() == [] and enc.on_message("x", b"") == []


def test_device_transitions_carry_state_reason_and_their_own_time() -> None:
    enc = NativeEncoder("gw1", clock=lambda: T0 + 99_000)
    t = Transition(
        "lamp-1", "rs485", State.DEGRADED, State.ONLINE, Reason.EXCEPTION, "points p10", T0
    )
    [msg] = enc.device_status("lamp-1", True, t)
    assert decode(msg.payload) == {
        "v": 1,
        "type": "device",
        "gateway": "gw1",
        "device": "lamp-1",
        "state": "degraded",
        "since": iso_ms(T0),  # when it happened, not when it was published
        "reason": "exception",
        "detail": "points p10",
    }
    up = Transition("lamp-1", "rs485", State.ONLINE, State.DEGRADED, None, None, T0 + 1000)
    [msg] = enc.device_status("lamp-1", True, up)
    assert decode(msg.payload)["state"] == "online" and "reason" not in decode(msg.payload)
    _, again = enc.on_connect()  # restated after a reconnect, unchanged
    assert again.payload == msg.payload


def test_unicode_values_stay_within_size_cap() -> None:
    enc = NativeEncoder("gw1", max_message_bytes=1024)
    msgs = enc.encode_rows(
        rows_of([(i, reading(i, value="đèn đường " * 10)) for i in range(1, 20)]), 0
    )
    assert all(len(m.payload) <= 1024 for m in msgs)
    assert sum(len(decode(m.payload)["readings"]) for m in msgs) == 19


@pytest.mark.parametrize("prefix", ["cityedge", "hcmc/district1"])
def test_make_encoder_native(tmp_path: Path, prefix: str) -> None:
    out = MqttOutput(
        type="mqtt",
        id="up",
        brokers=({"url": "mqtt://127.0.0.1"},),
        topic_prefix=prefix,
        max_message_bytes=4096,
    )
    enc = make_encoder(out, "gw1", [], tmp_path)
    assert isinstance(enc, NativeEncoder)
    assert enc.data_topic == f"{prefix}/gw1/data" and enc.max_message_bytes == 4096
    [m] = enc.encode([reading(7)])
    assert decode(m.payload)["msgId"] == "7-7"


def test_historical_through_flags_rows_once() -> None:
    enc = NativeEncoder("gw1")
    rows = rows_of([(1, reading(1)), (2, reading(2, historical=True)), (3, reading(3))])
    [m] = enc.encode_rows(rows, 2)
    rs = decode(m.payload)["readings"]
    assert [r.get("historical", False) for r in rs] == [True, True, False]
    assert m.payload.count(b'"historical"') == 2


SAMPLES = [
    reading(1),
    reading(2, value=None, quality=Quality.BAD, reason='timeout "x" \\ ✓'),
    reading(3, value=True),
    reading(4, value=-7),
    reading(5, value="đèn", unit=None, unit_code=None),
    reading(6, value=("a", "b\n")),
    reading(
        7,
        historical=True,
        time_quality=TimeQuality.CORRECTED,
        entity_id="urn:x:1",
        source=Source("modbus", "bus1", 3, "holding", 40, "float32"),
    ),
    reading(8, value=1e-300, source=Source("pelco-d", "b2")),
]


@pytest.mark.parametrize("r", SAMPLES, ids=range(len(SAMPLES)))
def test_fast_json_matches_to_dict_and_round_trips(r: Reading) -> None:
    assert json.loads(reading_json(r)) == r.to_dict()
    back = reading_from_json(reading_json(r))
    assert back == r and back.source == r.source


def test_non_finite_float_becomes_null() -> None:
    assert json.loads(reading_json(reading(1, value=float("nan"))))["value"] is None


def test_parse_iso_ms_inverts_iso_ms() -> None:
    for ms in (0, T0, T0 + 999, 4_102_444_800_123):
        assert parse_iso_ms(iso_ms(ms)) == ms


def test_per_point_json_cache_never_mixes_points() -> None:
    """The static part of a reading's JSON is cached per point; a reading differing in any
    static field (same Source object included) must get its own."""
    src = Source("modbus", "bus1", 3, "holding", 40, "float32")
    base = reading(1, source=src, entity_id="urn:x:1")
    variants = [
        base,
        dataclasses.replace(base, unit="kW", unit_code="KWT"),
        dataclasses.replace(base, point="other", metric="other"),
        dataclasses.replace(base, device_id="dev-2", entity_id=None),
        dataclasses.replace(base, source=Source("modbus", "bus1", 3, "holding", 40, "float32")),
        dataclasses.replace(base, source=None, gateway_id="gw-2"),
    ]
    for _ in range(2):  # second round: every entry comes from the cache
        for r in variants:
            assert reading_json(r) == json.dumps(r.to_dict(), separators=(",", ":")).encode()
