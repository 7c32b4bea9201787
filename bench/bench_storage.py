"""Outbox storage: bytes per stored reading, outage capacity, replay after a 1-hour outage.

1. bytes: the agent polls the W600 fleet (50 streetlight controllers x 12 points at 1 s, 10
   Modbus TCP simulators) with its broker unreachable for --sample seconds; then the outbox
   file is measured: bytes of disk per stored reading (the file) and of live pages;
2. capacity: the outage the default budget covers (``agent/forward/statedir.py``: half the free
   space of the state directory, 64 MiB .. 2 GiB) and the cap and the floor, at 600 readings/s and
   at a typical filtered rate (deadband filters passing one reading in ten: 60/s);
3. replay: a 1-hour outage at 600 readings/s (2.16 million readings, one record per poll
   cycle, built from the readings of step 1) is replayed to a local Mosquitto at QoS 1 while
   live readings keep coming at 600/s. A subscriber in another process counts readings and
   checks that message ids only go up (in order). Figures: backlog readings/s, and the live
   submit latency during the replay (p50 / p99 / max: polling never stalls).

    .venv/bin/python bench/bench_storage.py [--quick] [--json] [--sample S] [--hours H]
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import logging
import subprocess
import sys
import textwrap
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from agent.forward import statedir
from agent.forward.outbox import Outbox
from agent.forward.outbox_codec import reading_from_json
from agent.forward.outbox_store import Store
from agent.forward.sinks.mqtt import MqttSink
from bench.common import (
    PY,
    ROOT,
    Mosquitto,
    SimFleet,
    emit_json,
    free_port,
    gateway_config,
    local_mqtt_output,
    start_agent,
    stop_agent,
    workdir,
)
from drivers.core.reading import Reading

RATE = 600  # readings/s of the W600 load
TYPICAL_FILTERED = 60  # readings/s: deadband filters passing one reading in ten
TARGET_BYTES = 100
TARGET_REPLAY = 20_000

SUBSCRIBER = textwrap.dedent("""
    import json, re, sys, time
    import paho.mqtt.client as mqtt
    MSG = re.compile(rb'"msgId":"(\\d+)-(\\d+)"')
    state = {"n": 0, "last": 0, "disorder": 0, "t": None}
    def on_message(c, u, m):
        a, b = map(int, MSG.search(m.payload[:300]).groups())
        if a <= state["last"]:
            state["disorder"] += 1
        state["last"] = max(state["last"], b)
        state["n"] += m.payload.count(b'{"id":')
        state["t"] = time.monotonic()
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="bench-storage",
                    clean_session=True)
    c.on_message = on_message
    c.on_connect = lambda c, u, f, rc, p=None: c.subscribe("cityedge/gw1/data", qos=1)
    c.max_inflight_messages_set(1000)
    c.connect("127.0.0.1", int(sys.argv[1]))
    c.loop_start()
    print("ready", flush=True)
    while True:
        time.sleep(0.5)
        print(json.dumps(state), flush=True)
""")


def sample_readings(base: Path, seconds: float) -> tuple[Path, list[Reading], float]:
    """Step 1: the real agent, W600, broker unreachable. Returns the outbox file, one poll
    cycle of its readings, and the stored rate (readings/s) after the filters."""
    fleet = SimFleet(10, 5)
    try:
        dead = f"mqtt://127.0.0.1:{free_port()}"
        cfg = gateway_config(base, fleet.ports, 5, points=12, interval=1.0, broker_url=dead)
        proc = start_agent(cfg)
        try:
            time.sleep(seconds)
        finally:
            stop_agent(proc, cfg)
    finally:
        fleet.stop()
    path = base / "state" / "outbox-city.sqlite"
    st = Store.open_readonly(path)
    try:
        rows = st.read(0, 10**7)
    finally:
        st.close()
    first, last = rows[0].reading.observed_at_ms, rows[-1].reading.observed_at_ms
    rate = len(rows) / max(1.0, (last - first) / 1000)
    cycle = [reading_from_json(r.data) for r in rows[-RATE:]]
    return path, cycle, rate


def file_bytes(path: Path) -> int:
    """The database with its WAL and SHM (the reserve, id and ack files are a fixed ~1 MiB)."""
    return sum(
        p.stat().st_size for p in (path, Path(f"{path}-wal"), Path(f"{path}-shm")) if p.exists()
    )


def live_bytes(path: Path) -> tuple[int, int]:
    st = Store.open_readonly(path)
    try:
        return st.live_bytes(), st.depth
    finally:
        st.close()


async def build_backlog(path: Path, cycle: list[Reading], seconds: int) -> None:
    """One record per poll cycle, as the agent commits them (aligned polls), 1 s apart."""
    wall = [cycle[0].observed_at_ms / 1000 - seconds]
    ob = Outbox(path, synchronous="NORMAL", clock=lambda: wall[0], max_age=None)
    seq0 = cycle[0].seq
    t0 = cycle[0].observed_at_ms
    for k in range(seconds):
        for i, r in enumerate(cycle):
            r.seq = seq0 + k * len(cycle) + i
            r.observed_at_ms = t0 - (seconds - k) * 1000 + (r.observed_at_ms % 1000)
        task = asyncio.ensure_future(ob.submit(cycle))  # one commit per cycle, no run() loop
        await asyncio.sleep(0)
        await ob.flush()
        await task
        wall[0] += 1
    await ob.close()


def subscriber(port: int) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [PY, "-c", SUBSCRIBER, str(port)], stdout=subprocess.PIPE, text=True, cwd=ROOT
    )


async def replay(
    broker: Mosquitto, sub: subprocess.Popen[str], state: Path, cycle: list[Reading], backlog: int
) -> dict[str, float]:
    try:
        assert sub.stdout is not None
        assert sub.stdout.readline().strip() == "ready"
        sink = MqttSink("up", local_mqtt_output(broker.port), "gw1", [], state)
        lat: list[float] = []
        live = 0
        stop = asyncio.Event()

        async def poll() -> None:  # live readings keep coming at 600/s while it replays
            nonlocal live
            loop = asyncio.get_running_loop()
            tick = loop.time()
            seq = cycle[-1].seq + 1
            while not stop.is_set():
                tick += 1.0
                await asyncio.sleep(max(0.0, tick - loop.time()))
                batch = [dataclasses.replace(r, seq=seq + i) for i, r in enumerate(cycle)]
                seq += len(batch)
                t = time.perf_counter()
                await sink.submit(batch)
                lat.append(time.perf_counter() - t)
                live += len(batch)

        loop = asyncio.get_running_loop()
        got: dict[str, int] = {"n": 0, "disorder": 0}

        def follow() -> None:
            assert sub.stdout is not None
            for line in sub.stdout:
                got.update(json.loads(line))

        reader = loop.run_in_executor(None, follow)
        async with asyncio.TaskGroup() as tg:
            t0 = time.perf_counter()
            st = tg.create_task(sink.run(), name="sink")
            pt = tg.create_task(poll(), name="poll")
            while got["n"] < backlog:
                await asyncio.sleep(0.5)
                if time.perf_counter() - t0 > 900:
                    raise TimeoutError(f"replay stalled at {got['n']} of {backlog}")
            dt = time.perf_counter() - t0
            await asyncio.sleep(3)  # live readings queued behind the backlog drain too
            stop.set()
            await pt
            await sink.close()
            st.cancel()
        sub.terminate()
        await reader
    finally:
        if sub.poll() is None:
            sub.kill()
        broker.stop()
    lat.sort()
    return {
        "replay_per_s": backlog / dt,
        "replay_s": dt,
        "disorder": got["disorder"],
        "live_submitted": live,
        "live_p50_ms": lat[len(lat) // 2] * 1e3 if lat else 0.0,
        "live_p99_ms": lat[min(len(lat) - 1, int(len(lat) * 0.99))] * 1e3 if lat else 0.0,
        "live_max_ms": lat[-1] * 1e3 if lat else 0.0,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="a 6-minute outage, 15 s sample")
    ap.add_argument("--json", action="store_true", help="also print a BENCH-JSON line")
    ap.add_argument("--sample", type=float, default=None, help="seconds of real polling (30)")
    ap.add_argument("--hours", type=float, default=None, help="outage replayed (1 h)")
    a = ap.parse_args()
    logging.basicConfig(level=logging.ERROR)  # the publisher's close warnings are noise here
    logging.getLogger("mqtt").setLevel(logging.ERROR)  # paho: "pending publish calls"
    sample = a.sample or (15.0 if a.quick else 30.0)
    hours = a.hours or (0.1 if a.quick else 1.0)
    seconds = int(hours * 3600)
    with workdir("storage") as base:
        path, cycle, stored_rate = sample_readings(base / "w600", sample)
        live, depth = live_bytes(path)
        sample_bpr = file_bytes(path) / depth
        print(
            f"W600 sample (the agent, {sample:.0f} s of polling, broker down): {depth} readings "
            f"stored; file {file_bytes(path)} bytes = {sample_bpr:.1f} bytes/reading, live "
            f"pages {live / depth:.1f}"
        )
        state = base / "replay" / "state"
        state.mkdir(parents=True)
        big = state / "outbox-up.sqlite"
        t = time.perf_counter()
        asyncio.run(build_backlog(big, cycle, seconds))
        build_s = time.perf_counter() - t
        backlog = seconds * len(cycle)
        fb = file_bytes(big)
        live, depth = live_bytes(big)
        bpr = fb / backlog
        print(
            f"{hours:g} h outage at {RATE}/s: {backlog} readings, one record per cycle: file "
            f"{fb / 2**20:.1f} MiB = {bpr:.1f} bytes/reading (target <= {TARGET_BYTES}), "
            f"live pages {live / depth:.1f}; built in {build_s:.0f} s"
        )
        budget, how = statedir.budget_for(state, None)
        caps = {
            "default here": budget,
            "cap": statedir.BUDGET_CAP,
            "floor": statedir.BUDGET_FLOOR,
        }
        for name, b in caps.items():
            print(
                f"outage capacity at the {name} budget ({statedir.mib(b)}"
                f"{', ' + how if name == 'default here' else ''}): "
                f"{b / bpr / RATE / 3600:.1f} h at {RATE}/s, "
                f"{b / bpr / TYPICAL_FILTERED / 3600:.0f} h at {TYPICAL_FILTERED}/s"
            )
        broker = Mosquitto(base / "replay")
        broker.start()
        r = asyncio.run(replay(broker, subscriber(broker.port), state, cycle, backlog))
        print(
            f"replay of the {hours:g} h backlog: {backlog} readings in {r['replay_s']:.1f} s = "
            f"{r['replay_per_s']:.0f} readings/s (target >= {TARGET_REPLAY}), "
            f"out-of-order messages {r['disorder']}; live polling meanwhile: "
            f"{r['live_submitted']} readings accepted, submit latency p50 "
            f"{r['live_p50_ms']:.0f} ms, p99 {r['live_p99_ms']:.0f} ms, max "
            f"{r['live_max_ms']:.0f} ms"
        )
    if a.json:
        emit_json(
            {
                "bench": "storage",
                "bytes_per_reading": round(bpr, 1),
                "sample_bytes_per_reading": round(sample_bpr, 1),
                "sample_rate": round(stored_rate),
                "hours": hours,
                "backlog": backlog,
                "budget_default": budget,
                "hours_at_600_default": round(budget / bpr / RATE / 3600, 1),
                "hours_at_600_cap": round(statedir.BUDGET_CAP / bpr / RATE / 3600, 1),
                "hours_at_60_cap": round(statedir.BUDGET_CAP / bpr / TYPICAL_FILTERED / 3600),
                "hours_at_600_floor": round(statedir.BUDGET_FLOOR / bpr / RATE / 3600, 2),
                **{k: round(v, 1) for k, v in r.items()},
                "target_bytes": TARGET_BYTES,
                "target_replay": TARGET_REPLAY,
            }
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
