"""Sparkplug B encoder: every message decoded with the generated protobuf (independent of the
encoder's own helpers), births, aliases, report by exception, bdSeq/seq rules, rebirth,
device death/birth, primary host STATE, historical replay, quality, command decoding."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path

import aiomqtt
import pytest

from agent.config.outputs import MqttOutput
from agent.forward.encoders import sparkplug_b_pb2 as pb
from agent.forward.encoders.base import OutMessage
from agent.forward.encoders.sparkplug import SparkplugEncoder, SparkplugNotReady
from agent.forward.encoders.sparkplug_codec import SparkplugDecodeError, decode_command
from agent.forward.sinks.mqtt import MqttSink
from drivers.base import DeviceBinding
from drivers.core.config import DeviceConfig
from drivers.core.profile import DataType, Point, Profile
from drivers.core.reading import Quality, Reading
from drivers.device_state import Reason, State, Transition
from tests.conftest import MosquittoFactory

GW = "gw1"
T0 = 1_700_000_000_000

LIGHT = Profile(
    id="light",
    kind="streetlight",
    points=(
        Point(name="dim", metric="illuminanceLevel", address=0, scale=0.01, writable=True),
        Point(name="on", table="coil", type=DataType.BOOL, address=0, writable=True),
        Point(name="temp", address=1, type=DataType.INT16),
        Point(name="state", address=2, enum={0: "off", 1: "on"}),
        Point(name="alarms", address=3, type=DataType.BITFIELD, flags={0: "lamp", 1: "door"}),
    ),
)
METER = Profile(
    id="meter",
    kind="water_meter",
    points=(
        Point(name="volume", address=0, type=DataType.UINT32, unit="m3", unit_code="MTQ"),
        Point(name="flow", address=2, type=DataType.FLOAT32, unit="m3/h"),
        Point(name="serial", address=4, type=DataType.STRING, length=4),
        Point(name="energy", address=8, type=DataType.INT64),
    ),
)

# Sparkplug datatypes each point must be born with
EXPECTED_TYPES = {
    ("lamp1", "dim"): pb.Double,
    ("lamp1", "on"): pb.Boolean,
    ("lamp1", "temp"): pb.Int16,
    ("lamp1", "state"): pb.String,
    ("lamp1", "alarms"): pb.String,
    ("wm1", "volume"): pb.UInt32,
    ("wm1", "flow"): pb.Float,
    ("wm1", "serial"): pb.String,
    ("wm1", "energy"): pb.Int64,
}


def binding(dev: str, profile: Profile) -> DeviceBinding:
    return DeviceBinding(GW, DeviceConfig(id=dev, bus="b1", profile=profile.id), profile)


BINDINGS = [binding("lamp1", LIGHT), binding("wm1", METER)]


def make(
    tmp_path: Path, bindings: list[DeviceBinding] | None = None, **kw: object
) -> SparkplugEncoder:
    out = MqttOutput(
        type="mqtt",
        id="sp",
        brokers=({"url": "mqtt://127.0.0.1:1883"},),
        encoding="sparkplug",
        sparkplug_group="city",
        **kw,
    )
    clock = iter(range(T0, T0 + 10**9))
    return SparkplugEncoder(
        out, GW, BINDINGS if bindings is None else bindings, tmp_path, clock=lambda: next(clock)
    )


def rd(dev: str, point: str, value: object, seq: int, ms: int = T0, **kw: object) -> Reading:
    return Reading(GW, dev, "x", point, point, value, None, None, ms, seq=seq, **kw)  # type: ignore[arg-type]


def dec(msg: OutMessage) -> pb.Payload:
    p = pb.Payload()
    p.ParseFromString(msg.payload)
    return p


def kind(msg: OutMessage) -> str:
    return msg.topic.split("/")[2]


def seqs(msgs: list[OutMessage]) -> list[int]:
    return [dec(m).seq for m in msgs]


def connect(enc: SparkplugEncoder) -> tuple[OutMessage, list[OutMessage]]:
    will = enc.will()
    return will, enc.on_connect()


def test_births_define_every_metric_with_datatype_and_alias(tmp_path: Path) -> None:
    enc = make(tmp_path)
    will, births = connect(enc)
    assert [m.topic for m in births] == [
        "spBv1.0/city/NBIRTH/gw1",
        "spBv1.0/city/DBIRTH/gw1/lamp1",
        "spBv1.0/city/DBIRTH/gw1/wm1",
    ]
    assert seqs(births) == [0, 1, 2]
    assert all(m.qos == 0 and not m.retain for m in births)
    nbirth = dec(births[0])
    node = {m.name: m for m in nbirth.metrics}
    assert node["bdSeq"].datatype == pb.Int64 and node["bdSeq"].long_value == 0
    rebirth = node["Node Control/Rebirth"]
    assert rebirth.datatype == pb.Boolean and rebirth.HasField("alias")
    assert rebirth.boolean_value is False
    aliases = [m.alias for m in nbirth.metrics if m.HasField("alias")]
    for msg in births[1:]:
        dev = msg.topic.rsplit("/", 1)[1]
        metrics = dec(msg).metrics
        profile = LIGHT if dev == "lamp1" else METER
        assert [m.name for m in metrics] == [p.name for p in profile.points]
        for m in metrics:
            assert m.datatype == EXPECTED_TYPES[(dev, m.name)]
            assert m.HasField("alias") and m.is_null  # no value read yet
            aliases.append(m.alias)
    assert len(aliases) == len(set(aliases))  # unique across the edge node
    units = {
        m.name: dict(zip(m.properties.keys, m.properties.values, strict=True))
        for m in dec(births[2]).metrics
    }
    assert units["volume"]["engUnit"].string_value == "m3"
    # the will is NDEATH, QoS 1, not retained, with the same bdSeq as the NBIRTH
    assert will.topic == "spBv1.0/city/NDEATH/gw1" and will.qos == 1 and not will.retain
    death = dec(will)
    assert [(m.name, m.datatype, m.long_value) for m in death.metrics] == [("bdSeq", pb.Int64, 0)]


def test_data_by_exception_with_aliases_and_values(tmp_path: Path) -> None:
    enc = make(tmp_path)
    _, births = connect(enc)
    alias = {
        (msg.topic.rsplit("/", 1)[1], m.name): (m.alias, m.datatype)
        for msg in births[1:]
        for m in dec(msg).metrics
    }
    batch = [
        rd("lamp1", "dim", 0.57, 10, T0 + 1),
        rd("lamp1", "temp", -5, 11, T0 + 2),
        rd("lamp1", "alarms", ("lamp", "door"), 12, T0 + 2),
        rd("wm1", "volume", 4_000_000_000, 13, T0 + 3),
        rd("wm1", "energy", -2, 14, T0 + 3),
        rd("wm1", "serial", "AB12", 15, T0 + 3),
    ]
    msgs = enc.encode(batch)
    assert [m.topic for m in msgs] == ["spBv1.0/city/DDATA/gw1/lamp1", "spBv1.0/city/DDATA/gw1/wm1"]
    assert seqs(msgs) == [3, 4]
    lamp, wm = dec(msgs[0]), dec(msgs[1])
    assert lamp.uuid == "10-12" and wm.uuid == "13-15"  # stable id from the readings' seqs
    assert all(not m.HasField("name") for m in lamp.metrics)  # alias only after birth
    assert [m.alias for m in lamp.metrics] == [
        alias[("lamp1", p)][0] for p in ("dim", "temp", "alarms")
    ]
    assert [m.timestamp for m in lamp.metrics] == [T0 + 1, T0 + 2, T0 + 2]
    assert lamp.metrics[0].double_value == pytest.approx(0.57)
    assert lamp.metrics[1].int_value == 2**32 - 5  # Int16 -5, two's complement in uint32
    assert lamp.metrics[2].string_value == "lamp,door"
    assert wm.metrics[0].int_value == 4_000_000_000
    assert wm.metrics[1].long_value == 2**64 - 2
    assert wm.metrics[2].string_value == "AB12"
    assert all(not m.is_historical for m in lamp.metrics)
    # a rebirth now carries the last values
    redo = enc.on_message("spBv1.0/city/NCMD/gw1", _rebirth_cmd())
    lamp_birth = {m.name: m for m in dec(redo[1]).metrics}
    assert lamp_birth["temp"].int_value == 2**32 - 5 and lamp_birth["temp"].timestamp == T0 + 2
    assert lamp_birth["on"].is_null


def _rebirth_cmd(by_alias: int | None = None, value: bool = True) -> bytes:
    p = pb.Payload(timestamp=T0)
    m = p.metrics.add(datatype=pb.Boolean, boolean_value=value)
    if by_alias is None:
        m.name = "Node Control/Rebirth"
    else:
        m.alias = by_alias
    return p.SerializeToString()


def test_seq_shared_and_wraps_mod_256(tmp_path: Path) -> None:
    enc = make(tmp_path)
    _, births = connect(enc)
    got = seqs(births)
    for i in range(300):
        got += seqs(
            enc.encode([rd("lamp1" if i % 2 else "wm1", "dim" if i % 2 else "flow", 1.5, i)])
        )
        if i == 100:
            got += seqs(enc.device_status("wm1", False))
            got += seqs(enc.device_status("wm1", True))
    assert got == [i % 256 for i in range(len(got))]
    assert len(got) == 3 + 300 + 2


def test_bdseq_persisted_incremented_and_wrapping(tmp_path: Path) -> None:
    enc = make(tmp_path)
    assert [dec(enc.will()).metrics[0].long_value for _ in range(3)] == [0, 1, 2]
    births = enc.on_connect()
    assert dec(births[0]).metrics[0].long_value == 2  # NBIRTH bdSeq == last will's bdSeq
    restarted = make(tmp_path)
    will, births = connect(restarted)
    assert dec(will).metrics[0].long_value == 3
    assert dec(births[0]).metrics[0].long_value == 3 and dec(births[0]).seq == 0
    state = tmp_path / "sparkplug-sp.json"
    data = json.loads(state.read_text())
    data["bdSeq"] = 255
    state.write_text(json.dumps(data))
    assert dec(make(tmp_path).will()).metrics[0].long_value == 0


def test_aliases_stable_across_restarts_and_profile_growth(tmp_path: Path) -> None:
    _, births = connect(make(tmp_path))
    before = {(m.name, m.alias) for b in births for m in dec(b).metrics}
    bigger = LIGHT.model_copy(update={"points": (Point(name="extra", address=9), *LIGHT.points)})
    _, births = connect(make(tmp_path, [binding("lamp1", bigger), binding("wm1", METER)]))
    after = {(m.name, m.alias) for b in births for m in dec(b).metrics}
    assert before < after
    (new,) = after - before
    assert new[0] == "extra" and new[1] > max(a for _, a in before if a)


def test_rebirth_on_ncmd_by_name_and_alias(tmp_path: Path) -> None:
    enc = make(tmp_path)
    _, births = connect(enc)
    enc.encode([rd("lamp1", "dim", 0.1, 1)])
    redo = enc.on_message("spBv1.0/city/NCMD/gw1", _rebirth_cmd())
    assert [kind(m) for m in redo] == ["NBIRTH", "DBIRTH", "DBIRTH"]
    assert seqs(redo) == [0, 1, 2]
    assert dec(redo[0]).metrics[0].long_value == dec(births[0]).metrics[0].long_value
    alias = next(m.alias for m in dec(births[0]).metrics if m.name == "Node Control/Rebirth")
    assert len(enc.on_message("spBv1.0/city/NCMD/gw1", _rebirth_cmd(by_alias=alias))) == 3
    assert enc.on_message("spBv1.0/city/NCMD/gw1", _rebirth_cmd(value=False)) == []
    assert enc.on_message("spBv1.0/city/NCMD/gw1", b"\xff\xff garbage") == []


def test_ddeath_and_dbirth_follow_device_status(tmp_path: Path) -> None:
    enc = make(tmp_path)
    connect(enc)
    (death,) = enc.device_status("wm1", False)
    assert death.topic == "spBv1.0/city/DDEATH/gw1/wm1" and not dec(death).metrics
    assert enc.device_status("wm1", False) == []  # already dead
    # replayed history of a dead device: born to carry it, dead again afterwards
    msgs = enc.encode([rd("wm1", "flow", 2.0, 5, T0 - 60_000, historical=True)])
    assert [kind(m) for m in msgs] == ["DBIRTH", "DDATA", "DDEATH"]
    assert dec(msgs[1]).metrics[0].is_historical
    (birth,) = enc.device_status("wm1", True)
    assert kind(birth) == "DBIRTH" and len(dec(birth).metrics) == len(METER.points)
    assert enc.device_status("wm1", True) == []
    # backlog read before the device went down: carried, but the device stays dead
    enc.device_status("lamp1", False)
    msgs = enc.encode([rd("lamp1", "dim", 0.3, 6)])
    assert [kind(m) for m in msgs] == ["DBIRTH", "DDATA", "DDEATH"]
    assert [kind(m) for m in enc.device_status("lamp1", True)] == ["DBIRTH"]
    assert [kind(m) for m in enc.encode([rd("lamp1", "dim", 0.4, 7)])] == ["DDATA"]
    # a device down at connect time gets no DBIRTH
    enc.device_status("wm1", False)
    _, births = connect(enc)
    assert [kind(m) for m in births] == ["NBIRTH", "DBIRTH"]


def test_no_ddata_for_a_dead_device_and_degraded_is_alive(tmp_path: Path) -> None:
    """Issue 15: a down device costs the uplink its transitions. Its stale values (the bus's
    ``stale_readings`` option) would be DDATA between DDEATH and DBIRTH: not sent, the DDEATH
    already made every metric stale at the host. Degraded is alive: no DDEATH."""
    enc = make(tmp_path)
    connect(enc)
    down = Transition("wm1", "b", State.OFFLINE, State.ONLINE, Reason.TIMEOUT, None, T0)
    assert [kind(m) for m in enc.device_status("wm1", False, down)] == ["DDEATH"]
    for seq in range(3):  # per tick: nothing at all, no flapping
        stale = rd("wm1", "flow", 2.0, 10 + seq, quality=Quality.STALE, reason="timeout")
        assert enc.encode([stale]) == []
    weak = Transition("wm1", "b", State.DEGRADED, State.OFFLINE, Reason.EXCEPTION, None, T0)
    assert [kind(m) for m in enc.device_status("wm1", True, weak)] == ["DBIRTH"]
    worse = Transition("wm1", "b", State.ONLINE, State.DEGRADED, None, None, T0)
    assert enc.device_status("wm1", True, worse) == []  # degraded -> online: still born
    assert [kind(m) for m in enc.encode([rd("wm1", "flow", 3.0, 20)])] == ["DDATA"]


def test_historical_flag_and_original_timestamps(tmp_path: Path) -> None:
    enc = make(tmp_path)
    connect(enc)
    old = T0 - 3_600_000
    msgs = enc.encode(
        [
            rd("lamp1", "temp", 20, 1, old, historical=True),
            rd("lamp1", "temp", 21, 2, old + 5000, historical=True),
            rd("lamp1", "temp", 22, 3, T0),
        ]
    )
    metrics = dec(msgs[0]).metrics
    assert [(m.is_historical, m.timestamp, m.int_value) for m in metrics] == [
        (True, old, 20),
        (True, old + 5000, 21),
        (False, T0, 22),
    ]


def test_quality_property_and_null(tmp_path: Path) -> None:
    enc = make(tmp_path)
    connect(enc)

    def quality(m: pb.Payload.Metric) -> int | None:
        props = dict(zip(m.properties.keys, m.properties.values, strict=True))
        return props["Quality"].int_value if "Quality" in props else None

    bad, stale, good, good2 = (
        dec(enc.encode([r])[0]).metrics[0]
        for r in (
            rd("lamp1", "temp", None, 1, quality=Quality.BAD, reason="timeout"),
            rd("lamp1", "temp", 20, 2, quality=Quality.STALE),
            rd("lamp1", "temp", 21, 3),
            rd("lamp1", "temp", 22, 4),
        )
    )
    assert bad.is_null and quality(bad) == 0
    assert quality(stale) == 64 and stale.int_value == 20
    assert quality(good) == 192  # back to good is announced once
    assert quality(good2) is None


def test_primary_host_state_gates_births_and_data(tmp_path: Path) -> None:
    enc = make(tmp_path, primary_host_id="scada")
    assert "spBv1.0/STATE/scada" in enc.subscriptions()
    will, births = connect(enc)
    assert births == [] and not enc.ready_to_publish()
    with pytest.raises(SparkplugNotReady):
        enc.encode([rd("lamp1", "dim", 0.5, 1)])
    online = json.dumps({"online": True, "timestamp": T0}).encode()
    births = enc.on_message("spBv1.0/STATE/scada", online)
    assert [kind(m) for m in births] == ["NBIRTH", "DBIRTH", "DBIRTH"] and enc.ready_to_publish()
    assert enc.on_message("spBv1.0/STATE/scada", online) == []  # duplicate: nothing new
    stale_off = json.dumps({"online": False, "timestamp": T0 - 1}).encode()
    assert enc.on_message("spBv1.0/STATE/scada", stale_off) == [] and enc.ready_to_publish()
    off = json.dumps({"online": False, "timestamp": T0 + 5}).encode()
    (death,) = enc.on_message("spBv1.0/STATE/scada", off)
    assert kind(death) == "NDEATH" and death.topic == will.topic
    assert dec(death).metrics[0].long_value == dec(will).metrics[0].long_value
    assert not enc.ready_to_publish() and enc.wants_reconnect() and not enc.wants_reconnect()
    assert enc.on_message("spBv1.0/STATE/scada", b"not json") == []
    # a new connection must see the host online again before any birth
    will2, births = connect(enc)
    assert births == [] and dec(will2).metrics[0].long_value == 1
    births = enc.on_message("spBv1.0/STATE/scada", b"ONLINE")  # Sparkplug 2.2 form
    assert dec(births[0]).metrics[0].long_value == 1


def test_on_disconnect_publishes_ndeath(tmp_path: Path) -> None:
    enc = make(tmp_path)
    will, _ = connect(enc)
    (death,) = enc.on_disconnect()
    assert death.topic == will.topic and death.qos == 1
    assert dec(death).metrics[0].long_value == dec(will).metrics[0].long_value
    assert enc.on_disconnect() == [] and not enc.ready_to_publish()


def test_unknown_points_and_node_metrics_are_born_first(tmp_path: Path) -> None:
    enc = make(tmp_path)
    connect(enc)
    msgs = enc.encode([rd("lamp1", "newpoint", 3, 1), rd(GW, "cpu", 0.25, 2)])
    assert [kind(m) for m in msgs] == ["NBIRTH", "DBIRTH", "DBIRTH", "DBIRTH", "DDATA", "NDATA"]
    assert seqs(msgs) == [0, 1, 2, 3, 4, 5]
    assert "cpu" in {m.name for m in dec(msgs[0]).metrics}
    assert "newpoint" in {m.name for m in dec(msgs[3]).metrics}
    assert msgs[5].topic == "spBv1.0/city/NDATA/gw1"


def test_subscriptions(tmp_path: Path) -> None:
    assert make(tmp_path).subscriptions() == ["spBv1.0/city/NCMD/gw1", "spBv1.0/city/DCMD/gw1/+"]


def test_decode_command(tmp_path: Path) -> None:
    enc = make(tmp_path)
    _, births = connect(enc)
    dim_alias = next(m.alias for m in dec(births[1]).metrics if m.name == "dim")
    temp_alias = next(m.alias for m in dec(births[1]).metrics if m.name == "temp")
    p = pb.Payload(timestamp=T0)
    p.metrics.add(name="on", datatype=pb.Boolean, boolean_value=True)
    p.metrics.add(alias=dim_alias, double_value=0.4)
    p.metrics.add(alias=temp_alias, int_value=2**32 - 3)  # alias only: datatype from birth
    p.metrics.add(name="x", datatype=pb.Int8, int_value=0xFF)
    p.metrics.add(name="label", datatype=pb.String, string_value="hi")
    topic = "spBv1.0/city/DCMD/gw1/lamp1"
    assert enc.decode_command(topic, p.SerializeToString()) == [
        ("lamp1", "on", True),
        ("lamp1", "dim", 0.4),
        ("lamp1", "temp", -3),
        ("lamp1", "x", -1),
        ("lamp1", "label", "hi"),
    ]
    with pytest.raises(SparkplugDecodeError, match="alias"):
        decode_command(topic, p.SerializeToString())  # no alias table
    with pytest.raises(SparkplugDecodeError, match="malformed protobuf") as err:
        decode_command(topic, b"\x0a\xff\xff\xff")
    assert err.value.topic == topic
    with pytest.raises(SparkplugDecodeError, match="not a command"):
        decode_command("spBv1.0/city/DDATA/gw1/lamp1", b"")
    with pytest.raises(SparkplugDecodeError):
        decode_command("city/NCMD/gw1", b"")
    ncmd = pb.Payload(
        metrics=[
            pb.Payload.Metric(name="Node Control/Rebirth", datatype=pb.Boolean, boolean_value=True)
        ]
    )
    assert decode_command("spBv1.0/city/NCMD/gw1", ncmd.SerializeToString()) == [
        (None, "Node Control/Rebirth", True)
    ]


# --- end to end through the real MQTT sink and Mosquitto ---------------------------------------


async def test_end_to_end_with_mqtt_sink_and_primary_host(
    mosquitto: MosquittoFactory, tmp_path: Path
) -> None:
    broker = mosquitto()
    got: list[tuple[str, pb.Payload]] = []
    subscribed = asyncio.Event()

    async def collect() -> None:
        async with aiomqtt.Client(broker.host, broker.port) as c:
            await c.subscribe("spBv1.0/#", qos=1)
            subscribed.set()
            async for m in c.messages:
                if "/STATE/" in m.topic.value or "/NCMD/" in m.topic.value:
                    continue
                p = pb.Payload()
                p.ParseFromString(m.payload)
                got.append((m.topic.value, p))

    def kinds() -> list[str]:
        return [t.split("/")[2] for t, _ in got]

    async def until(cond: Callable[[], bool]) -> None:
        async with asyncio.timeout(10):
            while not cond():
                await asyncio.sleep(0.02)

    out = MqttOutput.model_validate(
        {
            "type": "mqtt",
            "id": "sp",
            "brokers": [{"url": broker.url}],
            "encoding": "sparkplug",
            "sparkplug_group": "city",
            "primary_host_id": "scada",
            "reconnect_min": 0.05,
            "reconnect_max": 0.2,
            "batch_latency": 0.02,
            "commit_interval": 0.01,
            "health_interval": 0,
            "keepalive": 5,
        }
    )
    sink = MqttSink("sp", out, GW, BINDINGS, tmp_path)
    async with asyncio.TaskGroup() as tg:
        col = tg.create_task(collect(), name="test-collect")
        await asyncio.wait_for(subscribed.wait(), 5)
        run = tg.create_task(sink.run(), name="test-sink")
        await until(lambda: sink.connected)
        await sink.submit([rd("lamp1", "dim", 0.5, 1), rd("wm1", "volume", 7, 2)])
        await asyncio.sleep(0.3)
        assert got == []  # primary host offline: no birth, no data
        async with aiomqtt.Client(broker.host, broker.port) as host:
            state = {"online": True, "timestamp": T0}
            await host.publish("spBv1.0/STATE/scada", json.dumps(state).encode(), 1, True)
            await until(lambda: kinds().count("DDATA") == 2)
            await host.publish("spBv1.0/city/NCMD/gw1", _rebirth_cmd(), qos=1)
            await until(lambda: kinds().count("NBIRTH") == 2)
            await sink.submit([rd("lamp1", "temp", -4, 3)])
            await until(lambda: kinds().count("DDATA") == 3)
        await sink.close()
        await until(lambda: "NDEATH" in kinds())
        run.cancel()
        col.cancel()
    assert kinds() == [
        "NBIRTH",
        "DBIRTH",
        "DBIRTH",
        "DDATA",
        "DDATA",
        "NBIRTH",
        "DBIRTH",
        "DBIRTH",
        "DDATA",
        "NDEATH",
    ]
    assert [p.seq for _, p in got[:-1]] == [0, 1, 2, 3, 4, 0, 1, 2, 3]
    bdseqs = {
        next(m.long_value for m in p.metrics if m.name == "bdSeq")
        for t, p in got
        if "NBIRTH" in t or "NDEATH" in t
    }
    assert bdseqs == {0}
    # held back while the host was offline, then sent with their own timestamps (not flagged
    # historical: the sink flags rows committed before the connection only)
    assert [(m.timestamp, m.is_historical) for _, p in got[3:5] for m in p.metrics] == [
        (T0, False),
        (T0, False),
    ]
    assert got[8][1].metrics[0].int_value == 2**32 - 4
