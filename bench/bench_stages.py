"""Stage throughput: peak readings/s of each step a reading goes through, in this process.

decode     DeviceState.decode over the plan of a 20-point device (decode_point + Reading)
filters    DeviceFilters.apply, range -> deadband(heartbeat) on the analogue points,
           compiled (ext._filters) and pure-Python twin (ext._pyfilters)
native / sparkplug / ngsild / iotagent   make_encoder(...).encode_rows / encode, batches of 200
outbox     Outbox.submit from 50 concurrent producers (120 readings each), group commit,
           synchronous=FULL on /var/tmp
publish    aiomqtt QoS 1 publishes of native messages (200 readings each), 32 in flight,
           to a local Mosquitto

.venv/bin/python bench/bench_stages.py [--quick] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from agent.config.outputs import MqttOutput
from bench.common import FILTERED, Mosquitto, emit_json, workdir, write_profiles
from drivers.base import DeviceBinding
from drivers.core.config import DeviceConfig
from drivers.core.library import ProfileLibrary
from drivers.core.reading import Reading, now_ms

if TYPE_CHECKING:
    from agent.forward.outbox import OutboxRow

GID = "bench-gw"


def binding(base: Path, n: int, dev: str = "sl-0-1") -> DeviceBinding:
    import tomllib

    lib = ProfileLibrary([write_profiles(base)])
    prof = lib.load(f"bench/sl{n}")
    flt = tomllib.loads("\n".join(f"{k} = {v}" for k, v in FILTERED.items()))
    cfg = DeviceConfig.model_validate(
        {"id": dev, "bus": "bus0", "profile": f"bench/sl{n}", "unit_id": 1, "filters": flt}
    )
    return DeviceBinding(GID, cfg, prof)


def rate(fn: Callable[[], int], seconds: float) -> float:
    """Readings per second: call ``fn`` (returns readings handled) for about ``seconds``."""
    fn()  # warm-up
    n = 0
    t0 = time.perf_counter()
    while (el := time.perf_counter() - t0) < seconds:
        n += fn()
    return n / el


def decode_stage(b: DeviceBinding, seconds: float) -> tuple[float, list[Reading]]:
    import random
    import time

    from drivers.modbus.device import DeviceState
    from drivers.polling import HealthOptions, PollResult

    opts = HealthOptions(1.0, 60.0, random.Random(1), time.monotonic, now_ms)
    st = DeviceState(b, "bus0", opts, offline_after_s=10.0)
    plan = st.plan(st.schedule.groups)
    regs = {r: [(i * 37 + 11) % 500 for i in range(r.count)] for r in plan}
    ts = now_ms()

    def once() -> int:
        poll = PollResult()
        for r in plan:
            st.decode(poll, r.points, r.start, regs[r], ts)
        return len(poll.readings)

    poll = PollResult()
    for r in plan:
        st.decode(poll, r.points, r.start, regs[r], ts)
    return rate(once, seconds), poll.readings


def varied(sample: Sequence[Reading], k: int) -> list[Reading]:
    import dataclasses

    out = []
    for r in sample:
        v = r.value
        if isinstance(v, float):
            v = v + (k % 7) * 0.5
        out.append(dataclasses.replace(r, value=v, observed_at_ms=r.observed_at_ms + k * 1000))
    return out


def filter_stage(b: DeviceBinding, sample: list[Reading], seconds: float, impl: str) -> float:
    import importlib

    from agent.ingest.filtering import DeviceFilters

    mod = importlib.import_module(f"ext._{impl}")
    f = DeviceFilters(b, impl=mod)
    batches = [varied(sample, k) for k in range(50)]
    i = 0

    def once() -> int:
        nonlocal i
        batch = batches[i % 50]
        i += 1
        f.apply(batch)
        return len(batch)

    return rate(once, seconds)


def batch_of(sample: list[Reading], n: int) -> list[Reading]:
    import dataclasses

    out: list[Reading] = []
    k = 0
    while len(out) < n:
        out += [
            dataclasses.replace(r, device_id=f"sl-0-{1 + k % 5}", seq=len(out) + j)
            for j, r in enumerate(varied(sample, k))
        ]
        k += 1
    return out[:n]


def outbox_rows(batch: Sequence[Reading]) -> list[OutboxRow]:
    """What the publisher hands a row encoder: outbox rows holding the stored reading JSON."""
    from agent.forward.encoders.native import reading_json
    from agent.forward.outbox import OutboxRow

    ts = now_ms()
    return [OutboxRow(i, ts, reading_json(r)) for i, r in enumerate(batch, 1)]


def serialize_stage(batch: list[Reading], seconds: float) -> float:
    from agent.forward.encoders.native import reading_json

    def once() -> int:
        for r in batch:
            reading_json(r)
        return len(batch)

    return rate(once, seconds)


def encoder_stage(
    name: str, base: Path, bs: list[DeviceBinding], batch: list[Reading], seconds: float
) -> float:
    from agent.forward.encoders import make_encoder

    out = MqttOutput.model_validate(
        {
            "type": "mqtt",
            "id": name,
            "encoding": name,
            "brokers": [{"url": "mqtt://127.0.0.1:1883"}],
        }
    )
    sd = base / f"state-{name}"
    sd.mkdir(exist_ok=True)
    enc = make_encoder(out, GID, bs, sd)
    enc.on_connect()
    if name == "native":  # splices the stored JSON; the others encode decoded readings
        rows = outbox_rows(batch)

        def once() -> int:
            enc.encode_rows(rows, 0)
            return len(rows)
    else:

        def once() -> int:
            enc.encode(batch)
            return len(batch)

    return rate(once, seconds)


async def outbox_stage(base: Path, sample: list[Reading], seconds: float) -> float:
    from agent.forward.outbox import Outbox

    ob = Outbox(base / "outbox-stage.sqlite")
    runner = asyncio.create_task(ob.run(), name="outbox")
    # 50 producers x 120 readings: every round exceeds commit_rows, so commits run back to
    # back (peak rate) instead of waiting out commit_interval
    batch = (sample * 6)[:120]
    n = 0
    stop = time.perf_counter() + seconds

    async def producer() -> None:
        nonlocal n
        while time.perf_counter() < stop:
            await ob.submit(batch)
            n += len(batch)

    t0 = time.perf_counter()
    async with asyncio.TaskGroup() as tg:
        for i in range(50):
            tg.create_task(producer(), name=f"producer-{i}")
    el = time.perf_counter() - t0
    await ob.close()
    runner.cancel()
    await asyncio.gather(runner, return_exceptions=True)
    return n / el


async def publish_stage(port: int, batch: list[Reading], seconds: float) -> float:
    import logging

    import aiomqtt

    logging.disable(logging.WARNING)  # aiomqtt warns about >10 pending publishes: intended
    from agent.forward.encoders.native import NativeEncoder

    msgs = NativeEncoder(GID).encode_rows(outbox_rows(batch), 0)
    per = len(batch) // len(msgs)
    sem = asyncio.Semaphore(32)
    n = 0
    stop = time.perf_counter() + seconds
    async with aiomqtt.Client(
        "127.0.0.1", port, identifier="bench-pub", max_inflight_messages=32
    ) as c:

        async def one(m: object) -> None:
            nonlocal n
            try:
                await c.publish(m.topic, m.payload, qos=1)  # type: ignore[attr-defined]
                n += per
            finally:
                sem.release()

        t0 = time.perf_counter()
        async with asyncio.TaskGroup() as tg:
            i = 0
            while time.perf_counter() < stop:
                await sem.acquire()
                tg.create_task(one(msgs[i % len(msgs)]), name=f"pub-{i}")
                i += 1
        el = time.perf_counter() - t0
    return n / el


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="1 s per stage instead of 3 s")
    ap.add_argument("--json", action="store_true", help="also print a BENCH-JSON result line")
    args = ap.parse_args()
    secs = 1.0 if args.quick else 3.0
    res: dict[str, float] = {}
    with workdir("stages") as base:
        b = binding(base, 20)
        res["decode"], sample = decode_stage(b, secs)
        res["filters (compiled)"] = filter_stage(b, sample, secs, "filters")
        res["filters (python)"] = filter_stage(b, sample, secs, "pyfilters")
        bs = [binding(base, 20, f"sl-0-{u}") for u in range(1, 6)]
        batch = batch_of(sample, 200)
        res["serialize (outbox JSON)"] = serialize_stage(batch, secs)
        for enc in ("native", "sparkplug", "ngsild", "iotagent"):
            res[f"encode {enc}"] = encoder_stage(enc, base, bs, batch, secs)
        res["outbox commit"] = asyncio.run(outbox_stage(base, sample, secs))
        broker = Mosquitto(base)
        broker.start()
        try:
            res["publish (QoS 1)"] = asyncio.run(publish_stage(broker.port, batch, secs))
        finally:
            broker.stop()
    print(f"{'stage':<22}{'readings/s':>14}")
    for k, v in res.items():
        print(f"{k:<22}{v:>14,.0f}")
    if args.json:
        emit_json({"bench": "stages", "per_s": {k: round(v) for k, v in res.items()}})
    return 0


if __name__ == "__main__":
    sys.exit(main())
