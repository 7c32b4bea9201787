"""Outbox and MQTT replay benchmark (prints figures; not a test).

1. commit rate: 50 concurrent "devices" submit 12-reading batches into the SQLite outbox
   (synchronous=FULL, then NORMAL for comparison) - readings/s, commits, readings per commit;
2. replay rate: a backlog committed while no broker was reachable is replayed to a local
   Mosquitto at QoS 1 and counted by an independent subscriber - readings/s, messages/s,
   CPU seconds per 10 000 readings (target >= 5 000 readings/s);
3. outage: readings flow at a fixed rate while Mosquitto is stopped for --outage seconds
   (default 30), then restarted on the same port: lost / duplicated / historical counts.

    .venv/bin/python bench/bench_outbox.py [--quick] [--outage 30] [--backlog 50000]
"""

from __future__ import annotations

import argparse
import asyncio
import atexit
import contextlib
import json
import logging
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiomqtt

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from agent.forward.outbox import Outbox
from agent.forward.sinks.mqtt import MqttSink
from bench.common import local_mqtt_output
from drivers.core.reading import Reading, now_ms

MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"


def reading(n: int, dev: int) -> Reading:
    return Reading(
        "gw1",
        f"dev-{dev}",
        "energy_meter",
        f"p{n % 12}",
        "activePower",
        float(n),
        "W",
        "WTT",
        now_ms(),
        seq=n,
    )


class Broker:
    def __init__(self, workdir: Path) -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = int(s.getsockname()[1])
        self.conf = workdir / "mosquitto.conf"
        root = "user root\n" if os.geteuid() == 0 else ""
        self.conf.write_text(
            f"{root}persistence true\npersistence_location {workdir}/\n"
            f"listener {self.port} 127.0.0.1\nallow_anonymous true\n"
            "max_queued_messages 0\n"
        )
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        atexit.register(self.stop)  # never leave a broker behind on Ctrl-C or an error
        self.proc = subprocess.Popen(
            [MOSQUITTO, "-c", str(self.conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        for _ in range(250):
            try:
                socket.create_connection(("127.0.0.1", self.port), 0.2).close()
                return
            except OSError:
                time.sleep(0.02)
        raise RuntimeError("mosquitto did not start")

    def stop(self) -> None:
        atexit.unregister(self.stop)
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(10)
            self.proc = None


class Counter:
    """Independent subscriber with a persistent session (survives broker restarts)."""

    async def wait_for(self, n: int, timeout: float) -> None:
        """Until ``n`` distinct reading ids arrived (TimeoutError after ``timeout``)."""
        async with asyncio.timeout(timeout):
            while len(self.unique) < n:
                self.changed.clear()
                await self.changed.wait()

    def __init__(self, port: int) -> None:
        self.port = port
        self.ids: list[int] = []
        self.unique: set[int] = set()
        self.changed = asyncio.Event()
        self.historical = 0
        self.messages = 0
        self.ready = asyncio.Event()

    async def run(self) -> None:
        while True:
            try:
                async with aiomqtt.Client(
                    "127.0.0.1", self.port, identifier="bench-platform", clean_session=False
                ) as c:
                    await c.subscribe("cityedge/gw1/data", qos=1)
                    self.ready.set()
                    async for m in c.messages:
                        assert isinstance(m.payload, bytes)
                        doc = json.loads(m.payload)
                        self.messages += 1
                        for r in doc["readings"]:
                            self.ids.append(r["id"])
                            self.unique.add(r["id"])
                            self.historical += bool(r.get("historical"))
                        self.changed.set()
            except aiomqtt.MqttError:
                await asyncio.sleep(0.05)


async def bench_commit(tmp: Path, total: int, sync: str, devices: int) -> None:
    """``devices`` concurrent submitters, each waiting for its commit before the next batch:
    50 is the field case (latency-bound), 1000 fills ``commit_rows`` (capacity)."""
    ob = Outbox(tmp / f"commit-{sync}-{devices}.sqlite", synchronous=sync, commit_interval=0.1)
    per_dev = max(1, total // (devices * 12))
    lat: list[float] = []

    async def device(d: int) -> None:
        for k in range(per_dev):
            t = time.perf_counter()
            await ob.submit([reading(k * 12 + i, d) for i in range(12)])
            lat.append(time.perf_counter() - t)

    async with asyncio.TaskGroup() as tg:
        runner = tg.create_task(ob.run())
        t0, c0 = time.perf_counter(), time.process_time()
        async with asyncio.TaskGroup() as devs:
            for d in range(devices):
                devs.create_task(device(d))
        dt, cpu = time.perf_counter() - t0, time.process_time() - c0
        st = ob.stats()
        await ob.close()
        runner.cancel()
    lat.sort()
    print(
        f"commit  sync={sync:6s} {devices:4d} submitters: {st.committed:6d} readings in "
        f"{dt:5.2f} s = {st.committed / dt:7.0f} readings/s, {st.commits:3d} commits "
        f"({st.committed / max(1, st.commits):5.0f}/commit), latency p50 "
        f"{lat[len(lat) // 2] * 1e3:4.0f} ms p99 {lat[int(len(lat) * 0.99)] * 1e3:4.0f} ms, "
        f"CPU {cpu / st.committed * 1e4:.3f} s/10k"
    )


async def bench_replay(tmp: Path, backlog: int) -> None:
    broker = Broker(tmp)
    broker.start()
    counter = Counter(broker.port)
    sink = MqttSink("up", local_mqtt_output(broker.port), "gw1", [], tmp / "replay")
    async with asyncio.TaskGroup() as tg:
        ct = tg.create_task(counter.run(), name="counter")
        await counter.ready.wait()
        ot = tg.create_task(sink.outbox.run(), name="fill")
        for k in range(0, backlog, 600):
            await sink.submit([reading(k + i, i // 12) for i in range(min(600, backlog - k))])
        ot.cancel()
        t0, c0 = time.perf_counter(), time.process_time()
        st = tg.create_task(sink.run(), name="sink")
        await counter.wait_for(backlog, 120)
        dt, cpu = time.perf_counter() - t0, time.process_time() - c0
        await sink.close()
        st.cancel()
        ct.cancel()
    broker.stop()
    print(
        f"replay  {backlog} readings / {counter.messages} msgs in {dt:5.2f} s = "
        f"{backlog / dt:8.0f} readings/s, {counter.messages / dt:6.0f} msg/s at QoS 1; "
        f"CPU (sink + subscriber) {cpu / backlog * 1e4:.3f} s/10k; "
        f"historical {counter.historical}"
    )


async def bench_outage(tmp: Path, outage: float, devices: int) -> None:
    """``devices`` x 12 points polled every second (50 devices = the issue's 600 readings/s)."""
    broker = Broker(tmp)
    broker.start()
    counter = Counter(broker.port)
    sink = MqttSink("up", local_mqtt_output(broker.port), "gw1", [], tmp / "outage")
    seq = 0
    stop = asyncio.Event()

    async def device(d: int) -> None:
        nonlocal seq
        loop = asyncio.get_running_loop()
        tick = loop.time() + d / devices  # spread the polls over the second
        while not stop.is_set():
            await asyncio.sleep(max(0.0, tick - loop.time()))
            tick += 1.0
            batch = [reading(seq + i, d) for i in range(12)]
            seq += 12
            await sink.submit(batch)

    async with asyncio.TaskGroup() as tg:
        ct = tg.create_task(counter.run(), name="counter")
        await counter.ready.wait()
        st = tg.create_task(sink.run(), name="sink")
        async with asyncio.TaskGroup() as p:
            for d in range(devices):
                p.create_task(device(d), name=f"device-{d}")
            await asyncio.sleep(2)
            broker.stop()
            await asyncio.sleep(outage)
            depth = sink.stats().outbox.depth
            broker.start()
            t0 = time.perf_counter()
            await counter.wait_for(seq - 12 * devices, 60)  # the backlog made while down
            drain = time.perf_counter() - t0
            await asyncio.sleep(1)
            stop.set()
        produced = seq
        with contextlib.suppress(TimeoutError):
            await counter.wait_for(produced, 30)
        await sink.close()
        st.cancel()
        ct.cancel()
    broker.stop()
    uniq = set(counter.ids)
    print(
        f"outage  {outage:.0f} s, {devices} devices x 12 points / s: produced {produced}, "
        f"received {len(uniq)} unique (lost {produced - len(uniq)}), duplicates "
        f"{len(counter.ids) - len(uniq)}, historical {counter.historical}; backlog {depth} "
        f"replayed {drain:.2f} s after the restart; drops {sink.stats().outbox.drops}"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="smaller sizes, 5 s outage")
    ap.add_argument("--outage", type=float, default=None, help="broker outage seconds (30)")
    ap.add_argument("--backlog", type=int, default=None, help="readings to replay (50000)")
    ap.add_argument("--devices", type=int, default=50, help="12-point devices in the outage run")
    a = ap.parse_args()
    logging.basicConfig(level=logging.ERROR)  # reconnect warnings during the outage are noise
    outage = a.outage if a.outage is not None else (5.0 if a.quick else 30.0)
    backlog = a.backlog or (10_000 if a.quick else 50_000)
    commit_total = 60_000 if a.quick else 120_000
    with tempfile.TemporaryDirectory(prefix="bench-outbox-") as d:
        tmp = Path(d)
        for sync in ("FULL", "NORMAL"):
            for devices in (50, 1000):  # 50 is latency-bound (~6k/s): keep it short
                total = commit_total // 5 if devices == 50 else commit_total
                asyncio.run(bench_commit(tmp, total, sync, devices))
        (tmp / "r").mkdir()
        asyncio.run(bench_replay(tmp / "r", backlog))
        if outage > 0:
            (tmp / "o").mkdir()
            asyncio.run(bench_outage(tmp / "o", outage, a.devices))


if __name__ == "__main__":
    main()
