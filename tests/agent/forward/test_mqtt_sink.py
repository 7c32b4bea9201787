"""MqttSink against a real Mosquitto: delivery, auth, TLS, ACL, outage, kill -9, full outbox.

Every message the independent subscriber receives is validated against the native JSON Schema.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import ssl
import subprocess
import sys
import textwrap
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiomqtt
import jsonschema
import pytest
from pydantic import SecretStr

from agent.config.outputs import MqttOutput
from agent.forward.mqtt.connect import MqttConfigError
from agent.forward.sinks.mqtt import MqttSink
from bench.common import service_env
from drivers.core.reading import Reading, now_ms
from drivers.device_state import Reason, State, Transition
from tests.conftest import Mosquitto, MosquittoFactory

SCHEMA = json.loads(
    (Path(__file__).parents[3] / "agent" / "schemas" / "native-v1.json").read_text()
)
VALIDATOR = jsonschema.Draft202012Validator(SCHEMA)
T0 = 1_763_900_000_000
GW = "gw1"


def down(device: str) -> Transition:
    """The device state transition a bus owner hands on when ``device`` stops answering."""
    return Transition(
        device, "rs485", State.OFFLINE, State.ONLINE, Reason.TIMEOUT, "no answer", now_ms()
    )


def reading(i: int, device: str = "lamp-1") -> Reading:
    return Reading(
        GW, device, "streetlight", "power", "powerConsumption", float(i), "W", "WTT", T0 + i, seq=i
    )


def output(broker: Mosquitto | str, **kw: Any) -> MqttOutput:
    url = broker if isinstance(broker, str) else broker.url
    urls = kw.pop("urls", [url])
    base: dict[str, Any] = {
        "type": "mqtt",
        "id": "up",
        "brokers": [{"url": u} for u in urls],
        "reconnect_min": 0.05,
        "reconnect_max": 0.3,
        "batch_latency": 0.02,
        "commit_interval": 0.01,
        "health_interval": 0,
        "keepalive": 5,
        "connect_timeout": 1,
    }
    base.update(kw)
    return MqttOutput.model_validate(base)


class Collector:
    """Independent subscriber: validates every payload against the schema, keeps them all."""

    def __init__(self, broker: Mosquitto, topic: str = "cityedge/#", **client_kw: Any) -> None:
        self.broker = broker
        self.topic = topic
        self.kw = client_kw
        self.messages: list[tuple[str, dict[str, Any], bool]] = []
        self.subscribed = asyncio.Event()

    async def run(self) -> None:
        while True:
            try:
                async with aiomqtt.Client(self.broker.host, self.broker.port, **self.kw) as client:
                    await client.subscribe(self.topic, qos=1)
                    self.subscribed.set()
                    async for m in client.messages:
                        assert isinstance(m.payload, bytes)
                        doc = json.loads(m.payload)
                        VALIDATOR.validate(doc)
                        self.messages.append((m.topic.value, doc, m.retain))
            except aiomqtt.MqttError:
                self.subscribed.clear()
                await asyncio.sleep(0.05)

    def of_type(self, kind: str) -> list[dict[str, Any]]:
        return [d for _, d, _ in self.messages if d["type"] == kind]

    def readings(self) -> list[dict[str, Any]]:
        return [r for d in self.of_type("data") for r in d["readings"]]


async def wait_until(cond: Callable[[], bool], timeout: float = 10.0) -> None:
    async with asyncio.timeout(timeout):
        while not cond():
            await asyncio.sleep(0.02)


@asynccontextmanager
async def started(*sinks_and_collectors: MqttSink | Collector) -> AsyncIterator[None]:
    async with asyncio.TaskGroup() as tg:
        tasks = []
        for obj in sinks_and_collectors:
            tasks.append(tg.create_task(obj.run(), name=f"test-{type(obj).__name__}"))
            if isinstance(obj, Collector):
                await asyncio.wait_for(obj.subscribed.wait(), 5)
        try:
            yield
        finally:
            for obj in sinks_and_collectors:
                if isinstance(obj, MqttSink):
                    await obj.close()
            for t in tasks:
                t.cancel()


@pytest.mark.parametrize("protocol", ["3.1.1", "5"])
async def test_publish_receive_status_and_health(
    mosquitto: MosquittoFactory, tmp_path: Path, protocol: str
) -> None:
    broker = mosquitto()
    col = Collector(broker)
    sink = MqttSink(
        "up",
        output(broker, protocol=protocol, health_interval=0.1),
        GW,
        [],
        tmp_path,
        device_status=lambda: {"lamp-1": {"online": True}},
    )
    async with started(col, sink):
        await wait_until(lambda: sink.connected)
        for k in range(5):
            await sink.submit([reading(k * 10 + i, f"lamp-{i % 2}") for i in range(10)])
        await wait_until(lambda: len(col.readings()) == 50 and len(col.of_type("health")) >= 2)
        sink.device_status(down("lamp-0"))
        await wait_until(lambda: len(col.of_type("device")) == 1)
        st = sink.stats()
        assert st.link.connected and st.link.published_readings == 50
    got = col.readings()
    assert [r["seq"] for r in got] == list(range(50))
    assert [r["id"] for r in got] == list(range(1, 51))
    assert not any(r.get("historical") for r in got)
    statuses = [d["state"] for d in col.of_type("status")]
    assert statuses[0] == "online" and statuses[-1] == "offline"
    health = col.of_type("health")[-1]
    assert health["devices"] == {"lamp-1": {"online": True}} and health["link"]["connected"]
    assert col.of_type("device")[0] == {
        "v": 1,
        "type": "device",
        "gateway": GW,
        "device": "lamp-0",
        "state": "offline",
        "reason": "timeout",
        "detail": "no answer",
        "since": col.of_type("device")[0]["since"],
    }
    assert sink.outbox.stats().depth == 0  # acked rows deleted (committed by close)


async def test_readings_committed_before_connect_are_historical(
    mosquitto: MosquittoFactory, tmp_path: Path
) -> None:
    broker = mosquitto()
    col = Collector(broker)
    sink = MqttSink("up", output(broker), GW, [], tmp_path)
    async with started(col):
        # the sink's publisher is not running yet: commit directly, as a previous run would
        async with asyncio.TaskGroup() as tg:
            t = tg.create_task(sink.outbox.run())
            await sink.submit([reading(i) for i in range(3)])
            t.cancel()
        async with started(sink):
            await wait_until(lambda: sink.connected)
            await sink.submit([reading(i) for i in range(3, 5)])
            await wait_until(lambda: len(col.readings()) == 5)
    assert [bool(r.get("historical")) for r in col.readings()] == [True] * 3 + [False] * 2


async def test_password_auth_acl_and_no_secret_in_logs(
    mosquitto: MosquittoFactory, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    acl = "user gw1\ntopic readwrite cityedge/gw1/#\n\nuser platform\ntopic read cityedge/#\n"
    broker = mosquitto(users={"gw1": "s3cr3t-pw", "platform": "p"}, acl=acl)
    col = Collector(broker, username="platform", password="p")
    caplog.set_level(logging.DEBUG)
    bad = MqttSink(
        "bad",
        output(broker, id="bad", username="gw1", password_secret="mqtt"),
        GW,
        [],
        tmp_path,
        {"mqtt": SecretStr("wrong-pw")},
    )
    good = MqttSink(
        "up",
        output(broker, username="gw1", password_secret="mqtt", protocol="5", health_interval=0.1),
        GW,
        [],
        tmp_path,
        {"mqtt": SecretStr("s3cr3t-pw")},
    )
    async with started(col, bad, good):
        await bad.submit([reading(1)])
        await good.submit([reading(i) for i in range(20)])
        await wait_until(
            lambda: len(col.readings()) == 20 and bad.stats().link.connect_failures >= 2
        )
        assert not bad.stats().link.connected and bad.outbox.stats().depth == 1
        assert bad.stats().link.last_error
        good.device_status(down("lamp-1"))
        # every kind of message the agent sends fits the gateway-only ACL (MQTT 5 would
        # report a refused publish as last_error and keep the rows)
        await wait_until(
            lambda: (
                {"status", "data", "health", "device"}
                <= {d["type"] for d in [m[1] for m in col.messages]}
            )
        )
        assert good.stats().link.last_error is None and good.outbox.stats().depth == 0
    assert [r["seq"] for r in col.readings()] == list(range(20))
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert "s3cr3t-pw" not in text and "wrong-pw" not in text


async def test_tls_client_certificate_and_acl(mosquitto: MosquittoFactory, tmp_path: Path) -> None:
    acl = "user gw1\ntopic readwrite cityedge/gw1/#\n\nuser other\ntopic read cityedge/#\n"
    broker = mosquitto(tls=True, require_certificate=True, acl=acl)
    c = broker.certs
    assert c is not None
    tls = {"ca_file": str(c.ca), "cert_file": str(c.client_cert), "key_file": str(c.client_key)}
    sub_ctx = ssl.create_default_context(cafile=str(c.ca))
    sub_ctx.load_cert_chain(str(c.other_cert), str(c.other_key))
    col = Collector(broker, tls_context=sub_ctx)
    sink = MqttSink("up", output(broker, tls=tls), GW, [], tmp_path)
    nocert = MqttSink(
        "nocert", output(broker, id="nocert", tls={"ca_file": str(c.ca)}), GW, [], tmp_path
    )
    noca = MqttSink(
        "noca", output(broker, id="noca", tls={**tls, "ca_file": None}), GW, [], tmp_path
    )
    async with started(col, sink, nocert, noca):
        await sink.submit([reading(i) for i in range(10)])
        await wait_until(
            lambda: (
                len(col.readings()) == 10
                and all(s.stats().link.connect_failures >= 1 for s in (nocert, noca))
            )
        )
        assert not nocert.stats().link.connected and not noca.stats().link.connected
    assert broker.url.startswith("mqtts://")
    assert [r["seq"] for r in col.readings()] == list(range(10))


async def test_broker_list_falls_through_to_a_live_broker(
    mosquitto: MosquittoFactory, tmp_path: Path
) -> None:
    broker = mosquitto()
    from tests.conftest import free_port

    dead = f"mqtt://127.0.0.1:{free_port()}"
    col = Collector(broker)
    sink = MqttSink("up", output(broker, urls=[dead, broker.url]), GW, [], tmp_path)
    async with started(col, sink):
        await sink.submit([reading(1)])
        await wait_until(lambda: len(col.readings()) == 1)
        assert sink.stats().link.broker == broker.url


def test_plain_mqtt_to_remote_broker_is_refused(tmp_path: Path) -> None:
    with pytest.raises(MqttConfigError, match="non-loopback"):
        MqttSink("up", output("mqtt://10.1.2.3:1883"), GW, [], tmp_path)
    MqttSink("up", output("mqtt://10.1.2.3:1883", allow_insecure=True), GW, [], tmp_path)
    with pytest.raises(MqttConfigError, match="secret"):
        MqttSink("up", output("mqtts://broker.example", password_secret="nope"), GW, [], tmp_path)


async def test_handlers_resubscribe_after_broker_restart(
    mosquitto: MosquittoFactory, tmp_path: Path
) -> None:
    broker = mosquitto()
    got: list[tuple[str, bytes]] = []

    async def on_cmd(topic: str, payload: bytes) -> None:
        got.append((topic, payload))

    sink = MqttSink("up", output(broker), GW, [], tmp_path)
    sink.add_handler("cityedge/gw1/cmd/#", on_cmd)

    async def send(payload: bytes) -> None:
        async with aiomqtt.Client(broker.host, broker.port) as c:
            await c.publish("cityedge/gw1/cmd/dim", payload, qos=1)

    async with started(sink):
        await wait_until(lambda: sink.connected)
        await send(b"1")
        await wait_until(lambda: len(got) == 1)
        broker.stop()
        await wait_until(lambda: not sink.connected)
        broker.start()
        await wait_until(lambda: sink.connected)  # connected = subscribed
        await send(b"2")
        await wait_until(lambda: len(got) == 2)
        await sink.publish("cityedge/gw1/cmd-response", b"{}")
    assert got == [("cityedge/gw1/cmd/dim", b"1"), ("cityedge/gw1/cmd/dim", b"2")]


OUTAGE_S = float(os.environ.get("CITYEDGE_TEST_OUTAGE_S", "3"))


def check_stream(got: list[dict[str, Any]], expected: list[int]) -> dict[int, list[dict[str, Any]]]:
    """Every expected seq arrived with its original value/time; duplicates are identical
    redeliveries (same id); first arrivals are in order, per device and overall."""
    copies: dict[int, list[dict[str, Any]]] = {}
    for r in got:
        copies.setdefault(r["seq"], []).append(r)
    missing = sorted(set(expected) - set(copies))
    assert not missing, f"{len(missing)} readings lost, first {missing[:5]}"
    for seq, cs in copies.items():
        assert {c["id"] for c in cs} == {cs[0]["id"]}, "a redelivery must keep its id"
        assert all(c["value"] == float(seq) for c in cs)
        assert {c["observedAt"] for c in cs} == {cs[0]["observedAt"]}
    seen: set[int] = set()
    first = []
    for r in got:
        if r["id"] not in seen:
            seen.add(r["id"])
            first.append(r)
    assert [r["seq"] for r in first] == sorted(r["seq"] for r in first)
    for dev in {r["device"] for r in first}:
        ds = [r["seq"] for r in first if r["device"] == dev]
        assert ds == sorted(ds)
    return copies


async def test_broker_outage_every_reading_arrives_in_order(
    mosquitto: MosquittoFactory, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    broker = mosquitto(persistence=True)
    # a persistent platform session: QoS 1 messages are queued for it while it reconnects
    col = Collector(broker, identifier="platform", clean_session=False)
    sink = MqttSink("up", output(broker, max_batch=50), GW, [], tmp_path)
    produced: list[tuple[int, float, float]] = []  # seq, submit start, submit end
    stop = asyncio.Event()

    async def produce() -> None:
        n = 0
        while not stop.is_set():
            t = time.monotonic()
            await sink.submit([reading(n + k, f"lamp-{k % 3}") for k in range(6)])
            produced.extend((n + k, t, time.monotonic()) for k in range(6))
            n += 6
            await asyncio.sleep(0.01)

    async with started(col, sink):
        await wait_until(lambda: sink.connected)
        async with asyncio.TaskGroup() as tg:
            tg.create_task(produce(), name="producer")
            await asyncio.sleep(0.5)
            broker.stop()
            down_from = time.monotonic()
            await asyncio.sleep(OUTAGE_S)
            down_to = time.monotonic()
            broker.start()
            await asyncio.sleep(0.5)
            stop.set()
        seqs = [s for s, _, _ in produced]
        await wait_until(lambda: {r["seq"] for r in col.readings()} >= set(seqs), 15)
        assert sink.stats().link.connects >= 2 and sink.outbox.stats().drops == 0
    copies = check_stream(col.readings(), seqs)
    while_down = [s for s, t0, t1 in produced if t0 > down_from and t1 < down_to]
    assert len(while_down) > 50
    assert all(c.get("historical") for s in while_down for c in copies[s])
    assert not any(c.get("historical") for c in copies[0])  # sent live before the outage
    # the replay keeps a window of publishes in flight: no warning per publish beyond ten
    assert not [r for r in caplog.records if "pending publish calls" in r.getMessage()]


KILLED_AGENT = textwrap.dedent("""
    import asyncio, sys
    from pathlib import Path
    from agent.config.outputs import MqttOutput
    from drivers.core.reading import Reading
    from agent.forward.sinks.mqtt import MqttSink

    async def main():
        out = MqttOutput.model_validate({"type": "mqtt", "id": "up",
            "brokers": [{"url": sys.argv[1]}], "commit_interval": 0.01, "batch_latency": 0.01,
            "health_interval": 0, "max_batch": 50})
        sink = MqttSink("up", out, "gw1", [], Path(sys.argv[2]))
        async with asyncio.TaskGroup() as tg:
            tg.create_task(sink.run())
            n = 0
            while True:
                await sink.submit([Reading("gw1", "lamp-%d" % (k % 4), "streetlight", "power",
                    "powerConsumption", float(n + k), "W", "WTT", 1763900000000 + n + k,
                    seq=n + k) for k in range(20)])
                n += 20
                print(n, flush=True)

    asyncio.run(main())
""")


async def test_kill_9_under_load_then_restart_loses_nothing(
    mosquitto: MosquittoFactory, tmp_path: Path
) -> None:
    broker = mosquitto()
    col = Collector(broker)
    async with started(col):
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            KILLED_AGENT,
            broker.url,
            str(tmp_path),
            stdout=subprocess.PIPE,
            cwd=Path(__file__).parents[3],
            env={**os.environ, **service_env(tmp_path / "cache")},  # -OO, as the unit runs it
        )
        assert proc.stdout is not None
        accepted = 0
        try:
            async with asyncio.timeout(60):  # a guard, not a speed claim (make test-arm)
                while accepted < 3000:
                    accepted = int(await proc.stdout.readline())
            os.kill(proc.pid, signal.SIGKILL)
        finally:
            if proc.returncode is None:
                proc.kill()
            await proc.wait()
        sink = MqttSink("up", output(broker, max_batch=50), GW, [], tmp_path)
        async with started(sink):
            # the replay of 3000+ rows takes ~15 s at a third of this machine's speed
            await wait_until(
                lambda: {r["seq"] for r in col.readings()} >= set(range(accepted)), timeout=60
            )
    check_stream(col.readings(), list(range(accepted)))


async def test_outbox_full_drops_oldest_and_keeps_running(
    mosquitto: MosquittoFactory, tmp_path: Path
) -> None:
    broker = mosquitto(persistence=True)
    col = Collector(broker, identifier="platform", clean_session=False)
    sink = MqttSink(
        "up", output(broker, outbox_max_rows=100, health_interval=0.1), GW, [], tmp_path
    )
    async with started(col, sink):
        await wait_until(lambda: sink.connected)
        broker.stop()
        await wait_until(lambda: not sink.connected)
        for k in range(6):
            await sink.submit([reading(k * 50 + i) for i in range(50)])
        st = sink.stats().outbox
        assert (st.depth, st.drops) == (100, 200)
        broker.start()
        await wait_until(lambda: {r["seq"] for r in col.readings()} >= set(range(200, 300)))
        await sink.submit([reading(300)])
        await wait_until(lambda: any(r["seq"] == 300 for r in col.readings()))
        await wait_until(lambda: any(h["outbox"]["drops"] == 200 for h in col.of_type("health")))
    assert not {r["seq"] for r in col.readings()} & set(range(200))


async def test_acl_refusal_keeps_rows_mqtt5(mosquitto: MosquittoFactory, tmp_path: Path) -> None:
    broker = mosquitto(users={"gw1": "pw"}, acl="user gw1\ntopic readwrite cityedge/gw1/#\n")
    sink = MqttSink(
        "up",
        output(broker, protocol="5", username="gw1", password_secret="p", topic_prefix="elsewhere"),
        GW,
        [],
        tmp_path,
        {"p": SecretStr("pw")},
    )
    async with started(sink):
        await sink.submit([reading(i) for i in range(5)])
        await wait_until(lambda: "Not authorized" in (sink.stats().link.last_error or ""))
        await wait_until(lambda: sink.stats().link.connects >= 2)  # retries, still running
        assert sink.outbox.stats().depth == 5 and sink.stats().link.published_readings == 0


def test_backoff_grows_caps_and_resets() -> None:
    from agent.forward.mqtt.connect import Backoff

    b = Backoff(1.0, 8.0, rand=lambda lo, hi: hi)  # worst case of the jitter
    assert [b.next() for _ in range(6)] == [1.0, 2.0, 4.0, 8.0, 8.0, 8.0]
    b.reset()
    assert b.next() == 1.0
    low = Backoff(1.0, 8.0, rand=lambda lo, hi: lo)
    assert low.next() == 0.5  # never hammers a flapping broker


def test_tls_context_verifies_hostname(mqtt_certs: Any) -> None:
    from agent.forward.mqtt.connect import build_tls_context

    out = output("mqtts://broker.example", tls={"ca_file": str(mqtt_certs.ca)})
    ctx = build_tls_context(out)
    assert ctx.check_hostname and ctx.verify_mode == ssl.CERT_REQUIRED
    assert ctx.minimum_version >= ssl.TLSVersion.TLSv1_2
    lax = build_tls_context(output("mqtts://b", tls={"insecure_skip_verify": True}))
    assert not lax.check_hostname and lax.verify_mode == ssl.CERT_NONE


async def test_tls_hostname_mismatch_is_refused(
    mosquitto: MosquittoFactory, tmp_path: Path
) -> None:
    broker = mosquitto(tls=True, wrong_server_name=True)
    assert broker.certs is not None
    sink = MqttSink("up", output(broker, tls={"ca_file": str(broker.certs.ca)}), GW, [], tmp_path)
    async with started(sink):
        await wait_until(lambda: sink.stats().link.connect_failures >= 1)
        assert not sink.connected
        assert "match" in (sink.stats().link.last_error or "")  # IP address mismatch


class AckBlackhole:
    """TCP proxy agent -> broker whose broker -> agent direction can be frozen: the broker gets
    (and forwards) every PUBLISH but the agent never sees the PUBACKs, then the link is cut."""

    def __init__(self, broker: Mosquitto) -> None:
        self.broker = broker
        self.frozen = False
        self.writers: list[asyncio.StreamWriter] = []
        self.port = 0

    async def run(self) -> None:
        server = await asyncio.start_server(self._conn, "127.0.0.1", 0)
        self.port = server.sockets[0].getsockname()[1]
        async with server:
            await server.serve_forever()

    async def _conn(self, cr: asyncio.StreamReader, cw: asyncio.StreamWriter) -> None:
        br, bw = await asyncio.open_connection(self.broker.host, self.broker.port)
        self.writers += [cw, bw]

        async def pump(r: asyncio.StreamReader, w: asyncio.StreamWriter, down: bool) -> None:
            while data := await r.read(65536):
                if not (down and self.frozen):
                    w.write(data)
            w.close()

        with contextlib.suppress(OSError):
            await asyncio.gather(pump(cr, bw, False), pump(br, cw, True))

    def cut(self) -> None:
        for w in self.writers:
            w.close()
        self.writers = []


async def test_lost_pubacks_give_flagged_redeliveries_only(
    mosquitto: MosquittoFactory, tmp_path: Path
) -> None:
    broker = mosquitto()
    col = Collector(broker)
    proxy = AckBlackhole(broker)
    async with asyncio.TaskGroup() as tg:
        pt = tg.create_task(proxy.run(), name="proxy")
        await wait_until(lambda: proxy.port != 0)
        sink = MqttSink(
            "up", output(f"mqtt://127.0.0.1:{proxy.port}", max_batch=10), GW, [], tmp_path
        )
        async with started(col, sink):
            await wait_until(lambda: sink.connected)
            await sink.submit([reading(i) for i in range(30)])
            await wait_until(lambda: len(col.readings()) == 30 and sink.outbox.stats().depth == 0)
            proxy.frozen = True
            await sink.submit([reading(i) for i in range(30, 80)])
            await wait_until(lambda: len(col.readings()) == 80)  # delivered, never acked
            assert sink.outbox.stats().depth == 50
            proxy.cut()
            proxy.frozen = False
            await wait_until(lambda: sink.stats().link.connects >= 2)
            await sink.submit([reading(i) for i in range(80, 90)])
            await wait_until(
                lambda: (
                    {r["seq"] for r in col.readings()} == set(range(90))
                    and sink.outbox.stats().depth == 0
                )
            )
        pt.cancel()
    got = col.readings()
    copies = check_stream(got, list(range(90)))
    dups = {s: cs for s, cs in copies.items() if len(cs) > 1}
    assert set(dups) == set(range(30, 80))  # exactly the unacknowledged ones, once more
    for cs in dups.values():
        assert not cs[0].get("historical") and all(c.get("historical") for c in cs[1:])
    assert not any(c.get("historical") for s in range(80, 90) for c in copies[s])


async def test_a_reading_the_encoding_refuses_is_skipped_not_retried_forever(
    mosquitto: MosquittoFactory, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A poison reading (here a value the encoder refuses) once made the publisher reconnect
    and retry the same batch for ever: now it is skipped, counted and logged once, and the
    readings around it are delivered."""
    from agent.forward.encoders import make_encoder

    broker = mosquitto()
    out = output(broker)
    real = make_encoder(out, GW, [], tmp_path)

    class Refusing:
        def __getattr__(self, name: str) -> Any:
            return getattr(real, name)

        def encode_rows(self, rows: Any, boundary: int) -> Any:
            if any(row.reading.value == 13.0 for row in rows):
                raise ValueError("invalid literal for int() with base 10: 'ok'")
            return real.encode_rows(rows, boundary)

    col = Collector(broker)
    sink = MqttSink("up", out, GW, [], tmp_path, encoder=Refusing())
    with caplog.at_level(logging.ERROR, logger="cityedge.mqtt"):
        async with started(col, sink):
            await wait_until(lambda: sink.connected)
            for k in range(3):
                await sink.submit([reading(k * 10 + i) for i in range(10)])
            await wait_until(lambda: len(col.readings()) == 29)
            await sink.submit([reading(13)])  # the same point refused again: logged once
            await sink.submit([reading(40)])
            await wait_until(lambda: len(col.readings()) == 30)
            st = sink.stats()
    assert st.link.encode_errors == 2 and st.link.connects == 1  # no reconnect loop
    assert 13 not in [r["seq"] for r in col.readings()]
    assert len([r for r in caplog.records if "cannot be encoded" in r.getMessage()]) == 1
    assert sink.outbox.stats().depth == 0  # the skipped rows are not retried
