"""The MQTT output (outbox + publisher) against a real Mosquitto while its storage fails: a disk
filled for real, a damaged file, a read-only state directory, kill -9 in the middle of an
eviction and of setting a damaged file aside. Each shows that the agent keeps running, that
what is counted as dropped is exactly what is missing at the broker, and that nothing is
delivered twice after a restart."""

from __future__ import annotations

import asyncio
import collections
import json
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import aiomqtt
import pytest

from agent.cli.main import main
from agent.forward.outbox_files import aside_dirs
from agent.forward.sinks.mqtt import MqttSink
from tests.agent.forward.disk import damage, fill, remount, tmpfs
from tests.agent.forward.test_mqtt_sink import GW, Collector, output, started, wait_until
from tests.agent.forward.test_outbox_faults import noisy
from tests.conftest import MosquittoFactory, free_port

CONFIG = """\
[gateway]
id = "gw1"
state_dir = "{state}"

[[outputs]]
type = "mqtt"
id = "up"
brokers = [{{ url = "{url}" }}]
"""


class Platform(Collector):
    """The independent subscriber, without schema validation: these tests move ~10^5
    readings through one event loop (test_mqtt_sink.py validates every message shape)."""

    async def run(self) -> None:
        while True:
            try:
                async with aiomqtt.Client(self.broker.host, self.broker.port, **self.kw) as client:
                    await client.subscribe(self.topic, qos=1)
                    self.subscribed.set()
                    async for m in client.messages:
                        assert isinstance(m.payload, bytes)
                        self.messages.append((m.topic.value, json.loads(m.payload), m.retain))
            except aiomqtt.MqttError:
                self.subscribed.clear()
                await asyncio.sleep(0.05)


def seqs(col: Collector) -> collections.Counter[int]:
    return collections.Counter(r["seq"] for r in col.readings())


async def settled(sink: MqttSink, col: Collector, made: list[int], timeout: float = 20) -> int:
    """Wait until the outbox is empty and the platform has everything that was not dropped
    (the subscriber gets a message a moment after the agent's PUBACK); returns the drops."""
    try:
        await wait_until(
            lambda: (
                sink.outbox.stats().depth == 0
                and len(set(made) - set(seqs(col))) <= sink.stats().outbox.drops
            ),
            timeout,
        )
    except TimeoutError:
        missing = sorted(set(made) - set(seqs(col)))
        raise AssertionError(
            f"not settled: {sink.outbox.stats()}, {len(missing)} missing "
            f"({missing[:3]}..{missing[-3:]}), connected {sink.connected}"
        ) from None
    await asyncio.sleep(0.1)
    return sink.stats().outbox.drops


def ids_once(col: Collector) -> bool:
    """Nothing was delivered twice (by delivery id)."""
    c = collections.Counter(r["id"] for r in col.readings())
    return all(v == 1 for v in c.values())


async def produce(sink: MqttSink, start: int, batches: int, size: int = 200) -> list[int]:
    for k in range(batches):
        await sink.submit([noisy(start + k * size + i) for i in range(size)])
    return list(range(start, start + batches * size))


def write_config(tmp_path: Path, state: Path, url: str) -> Path:
    cfg = tmp_path / "gateway.toml"
    cfg.write_text(CONFIG.format(state=state, url=url))
    return cfg


async def test_full_disk_drops_what_it_counts_and_a_restart_sends_nothing_twice(
    mosquitto: MosquittoFactory, tmp_path: Path
) -> None:
    broker = mosquitto(persistence=True)
    col = Platform(broker, identifier="platform", clean_session=False)
    with tmpfs(tmp_path / "fs", "2m") as d:
        sink = MqttSink("up", output(broker, max_batch=200), GW, [], d)
        async with started(col, sink):
            await wait_until(lambda: sink.connected)
            broker.stop()
            await wait_until(lambda: not sink.connected)
            made = await produce(sink, 0, 5)
            while sink.stats().outbox.drops == 0 and len(made) < 200_000:  # fills the disk
                made += await produce(sink, len(made), 5)
            fill(d)  # something else takes the rest: SQLITE_FULL
            made += await produce(sink, len(made), 20)  # still accepted: evicting
            st = sink.stats().outbox
            assert st.fault is None and st.drops > 0
            broker.start()
            drops = await settled(sink, col, made, 30)
            got = seqs(col)
            missing = set(made) - set(got)
            assert len(missing) == drops  # dropped == missing
            assert max(missing) < min(got)  # the oldest went
        # a restart on the full disk: it starts, sends new readings, and nothing again
        sink = MqttSink("up", output(broker, max_batch=200), GW, [], d)
        async with started(col, sink):
            more = await produce(sink, len(made), 2)
            await wait_until(lambda: set(more) <= set(seqs(col)), 15)
    assert ids_once(col) and max(seqs(col).values()) == 1


@pytest.mark.parametrize("where", ["header", "middle"])
async def test_a_damaged_outbox_is_set_aside_and_salvaged_into_the_stream(
    mosquitto: MosquittoFactory, tmp_path: Path, where: str, capsys: pytest.CaptureFixture[str]
) -> None:
    broker = mosquitto(persistence=True)
    col = Platform(broker, identifier="platform", clean_session=False)
    state = tmp_path / "state"
    down = MqttSink("up", output(f"mqtt://127.0.0.1:{free_port()}"), GW, [], state)
    async with started(down):  # an outage: 6 000 readings wait in the outbox
        made = await produce(down, 0, 30)
    path = state / "outbox-up.sqlite"
    size = path.stat().st_size
    damage(path, *((0, 100) if where == "header" else (size // 2, min(65536, size // 4))))
    cfg = write_config(tmp_path, state, broker.url)
    assert main(["outbox", "stats", "-c", str(cfg)]) in (0, 1)  # no traceback either way
    assert "Traceback" not in capsys.readouterr().err
    sink = MqttSink("up", output(broker), GW, [], state)
    async with started(col, sink):  # starts, sets the file aside, goes on
        fresh = await produce(sink, 10_000, 1, 10)
        await wait_until(lambda: set(fresh) <= set(seqs(col)))
        await wait_until(lambda: bool(sink.stats().outbox.alarms))
        assert "salvage" in sink.stats().outbox.alarms[0]
    [aside] = aside_dirs(path)
    assert main(["outbox", "salvage", str(aside), "--into", "-c", str(cfg)]) == 0
    report = capsys.readouterr()
    assert "back in the outbox" in report.out
    sink = MqttSink("up", output(broker), GW, [], state)
    async with started(col, sink):
        drops = await settled(sink, col, made)
    missing = set(made) - set(seqs(col))
    assert len(missing) == drops  # the unreadable ones are counted, nothing else is missing
    if where == "header":
        assert not missing
    assert ids_once(col)


async def test_read_only_state_dir_holds_in_memory_and_recovers_by_itself(
    mosquitto: MosquittoFactory, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    broker = mosquitto(persistence=True)
    col = Platform(broker, identifier="platform", clean_session=False)
    with tmpfs(tmp_path / "fs", "8m", ro=True) as d:
        cfg = write_config(tmp_path, d, broker.url)
        assert main(["check", str(cfg)]) == 1
        out = capsys.readouterr().out
        assert f"state directory {d}" in out and "read-only" in out and "remount" in out
        sink = MqttSink("up", output(broker), GW, [], d)
        sink.outbox.memory_bytes, sink.outbox.retry_interval = 16 * 1024, 0.2
        async with started(col, sink):
            await wait_until(lambda: sink.connected)
            made = await produce(sink, 0, 20)  # accepted into memory, the oldest fall out
            st = sink.stats().outbox
            assert st.fault and "cannot write" in st.fault and st.memory and st.drops
            remount(d, "rw")  # fixed: it writes what it held and sends it, by itself
            await wait_until(lambda: sink.stats().outbox.fault is None, 10)
            drops = await settled(sink, col, made)
            missing = set(made) - set(seqs(col))
            assert len(missing) == drops
    assert ids_once(col)


AGENT = textwrap.dedent("""
    import asyncio, sys
    from pathlib import Path
    from agent.config.outputs import MqttOutput
    from agent.forward.sinks.mqtt import MqttSink
    from tests.agent.forward.test_outbox_faults import noisy

    async def main():
        out = MqttOutput.model_validate({"type": "mqtt", "id": "up",
            "brokers": [{"url": sys.argv[1]}], "commit_interval": 0.01, "batch_latency": 0.01,
            "health_interval": 0, "reconnect_min": 0.05, "reconnect_max": 0.3})
        sink = MqttSink("up", out, "gw1", [], Path(sys.argv[2]))
        async with asyncio.TaskGroup() as tg:
            tg.create_task(sink.run())
            n = int(sys.argv[3])
            while True:
                await sink.submit([noisy(n + k) for k in range(200)])
                n += 200
                print(n, flush=True)

    asyncio.run(main())
""")


async def run_until_failpoint(url: str, state: Path, start: int, point: str) -> int:
    """Run the agent in a process of its own until it stops at ``point``, then kill -9 it.
    Returns the readings it had accepted (``start`` ..)."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        AGENT,
        url,
        str(state),
        str(start),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=Path(__file__).parents[3],
        env={**os.environ, "CITYEDGE_OUTBOX_FAILPOINT": point},
    )
    assert proc.stdout is not None and proc.stderr is not None
    accepted = start
    try:

        async def lines() -> None:
            nonlocal accepted
            while line := await proc.stdout.readline():  # type: ignore[union-attr]
                accepted = int(line)

        reader = asyncio.create_task(lines())
        async with asyncio.timeout(30):
            while b"failpoint" not in await proc.stderr.readline():
                assert proc.returncode is None
        await asyncio.sleep(0.1)  # it stays there; the process is alive
        assert proc.returncode is None
        os.kill(proc.pid, signal.SIGKILL)
        await proc.wait()
        await reader
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    return accepted


def integrity(path: Path) -> str:
    db = sqlite3.connect(path)
    try:
        return str(db.execute("PRAGMA integrity_check").fetchone()[0])
    finally:
        db.close()


async def test_kill_9_during_an_eviction_loses_nothing_uncounted(
    mosquitto: MosquittoFactory, tmp_path: Path
) -> None:
    broker = mosquitto(persistence=True)
    col = Platform(broker, identifier="platform", clean_session=False)
    with tmpfs(tmp_path / "fs", "2m") as d:
        dead = f"mqtt://127.0.0.1:{free_port()}"
        # it fills the disk, evicts twice, and is killed in the middle of the third eviction
        accepted = await run_until_failpoint(dead, d, 0, "evict:3")
        assert integrity(d / "outbox-up.sqlite") == "ok"
        sink = MqttSink("up", output(broker), GW, [], d)
        async with started(col, sink):
            drops = await settled(sink, col, list(range(accepted)))
    missing = set(range(accepted)) - set(seqs(col))
    assert drops > 0 and len(missing) == drops and ids_once(col)


async def test_kill_9_while_setting_a_damaged_file_aside(
    mosquitto: MosquittoFactory, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    broker = mosquitto(persistence=True)
    col = Platform(broker, identifier="platform", clean_session=False)
    state = tmp_path / "state"
    down = MqttSink("up", output(f"mqtt://127.0.0.1:{free_port()}"), GW, [], state)
    async with started(down):
        made = await produce(down, 0, 10)
    path = state / "outbox-up.sqlite"
    damage(path, 0, 100)
    await run_until_failpoint(broker.url, state, 50_000, "move-aside")
    assert [p.name.endswith(".partial") for p in aside_dirs(path)] == [True]
    sink = MqttSink("up", output(broker), GW, [], state)
    async with started(col, sink):  # finishes the move, starts afresh, runs
        fresh = await produce(sink, 100_000, 1, 10)
        await wait_until(lambda: set(fresh) <= set(seqs(col)))
    [aside] = aside_dirs(path)
    assert not aside.name.endswith(".partial") and (aside / path.name).exists()
    cfg = write_config(tmp_path, state, broker.url)
    assert main(["outbox", "salvage", str(aside), "--into", "-c", str(cfg)]) == 0
    capsys.readouterr()
    sink = MqttSink("up", output(broker), GW, [], state)
    async with started(col, sink):
        await wait_until(lambda: set(made) <= set(seqs(col)), 20)
    assert sink.stats().outbox.drops == 0 and ids_once(col)
