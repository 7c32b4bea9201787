"""What exactly-once costs a command: latency through the router with the durable store
(claim and answer committed with synchronous=FULL before the answer) against the same router
remembering in memory only, and the end-to-end round trip (platform -> Mosquitto -> agent ->
Modbus TCP simulator -> read back -> answer) with the durable store: once with Mosquitto's
defaults, once with ``set_tcp_nodelay true`` in the broker's configuration (the agent's own
MQTT socket always has TCP_NODELAY, agent/forward/mqtt/connect.py).

    .venv/bin/python bench/bench_commands.py [--quick] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.common import Mosquitto, emit_json, workdir  # noqa: E402


def _ms(xs: list[float]) -> dict[str, float]:
    xs = sorted(xs)
    return {
        "median_ms": round(statistics.median(xs) * 1000, 2),
        "p95_ms": round(xs[int(0.95 * (len(xs) - 1))] * 1000, 2),
    }


async def router_latency(base: Path, n: int, durable: bool) -> dict[str, float]:
    from agent.config.gateway import CommandsSection
    from agent.control.audit import AuditLog
    from agent.control.model import Command
    from agent.control.router import CommandRouter, nonce_window
    from agent.control.store import CommandStore
    from drivers.base import DeviceBinding, WriteResult, WriteStatus
    from drivers.core.config import DeviceConfig
    from drivers.core.library import ProfileLibrary
    from drivers.core.reading import Value
    from drivers.sim.server import PROFILE_DIR

    profile = ProfileLibrary([PROFILE_DIR]).load("cityedge/streetlight")
    binding = DeviceBinding("gw", DeviceConfig(id="lamp-1", bus="b", profile=profile.id), profile)
    policy = CommandsSection(rate_per_minute=6000)

    async def writer(device: str, point: str, value: Value, timeout: float) -> WriteResult:
        return WriteResult(WriteStatus.OK, readback=value)

    tag = "durable" if durable else "memory"
    store = CommandStore(
        base / f"{tag}.sqlite" if durable else None,
        window=policy.dedup_window,
        nonce_window=nonce_window(policy),
    )
    router = CommandRouter(
        policy, [binding], writer, AuditLog(base / f"{tag}-audit.jsonl"), store=store
    )
    times = []
    for i in range(n):
        cmd = Command(f"{tag}-{i}", "native", "lamp-1", "dim_level", (i % 100) / 100)
        t0 = time.perf_counter()
        await router.execute(cmd)
        times.append(time.perf_counter() - t0)
    replay = []
    for i in range(min(n, 50)):
        cmd = Command(f"{tag}-{i}", "native", "lamp-1", "dim_level", 0.5)
        t0 = time.perf_counter()
        await router.execute(cmd)
        replay.append(time.perf_counter() - t0)
    store.close()
    return {**_ms(times), "replay_median_ms": _ms(replay)["median_ms"]}


async def round_trip(base: Path, n: int, broker_nodelay: bool = False) -> dict[str, float]:
    import aiomqtt

    from agent.config import load_config
    from agent.runtime import Agent
    from drivers.sim.server import SimSpec, SimulatorServer

    base = base / ("nodelay" if broker_nodelay else "default")
    broker = Mosquitto(base, ["set_tcp_nodelay true"] if broker_nodelay else [])
    broker.start()
    async with SimulatorServer(SimSpec(streetlights=(1,), water_meters=(), cameras=())) as sim:
        cfg = base / "gateway.toml"
        cfg.write_text(
            f"""[gateway]
id = "gw-bench"
state_dir = "{base / "state"}"
watch_config = 0

[[buses]]
id = "sim"
endpoint = "tcp://127.0.0.1:{sim.port}"
timeout = 1.0

[[devices]]
id = "lamp-1"
bus = "sim"
profile = "cityedge/streetlight"
unit_id = 1
interval = 1.0

[[outputs]]
type = "mqtt"
id = "uplink"
brokers = [{{ url = "{broker.url}" }}]
health_interval = 0

[commands]
rate_per_minute = 6000
"""
        )
        agent = Agent(load_config(cfg))
        task = asyncio.create_task(agent.run())
        got: dict[str, float] = {}
        try:
            sink: Any = agent.sinks[0]
            while not sink.link.connected:  # noqa: ASYNC110 (a flag of the sink, no event)
                await asyncio.sleep(0.05)
            # the platform's client sends without Nagle's delay, so the figure is the agent's and
            # the broker's (paho leaves TCP_NODELAY off: ~40 ms per hop with delayed ACKs)
            nodelay = ((socket.IPPROTO_TCP, socket.TCP_NODELAY, 1),)
            async with aiomqtt.Client(
                "127.0.0.1", broker.port, identifier="bench-cmd", socket_options=nodelay
            ) as client:
                await client.subscribe("cityedge/gw-bench/lamp-1/cmd/res", qos=1)

                async def listen() -> None:
                    async for msg in client.messages:
                        got[json.loads(msg.payload)["id"]] = time.perf_counter()

                listener = asyncio.create_task(listen())
                times = []
                for i in range(n):
                    cid = f"rt-{i}"
                    body = {"id": cid, "point": "dim_level", "value": (i % 100) / 100}
                    t0 = time.perf_counter()
                    await client.publish("cityedge/gw-bench/lamp-1/cmd", json.dumps(body), qos=1)
                    while cid not in got:  # noqa: ASYNC110 (0.5 ms resolution is enough)
                        await asyncio.sleep(0.0005)
                    times.append(got[cid] - t0)
                listener.cancel()
                await asyncio.gather(listener, return_exceptions=True)
        finally:
            agent.request_shutdown()
            await asyncio.wait_for(task, 10)
            broker.stop()
    return _ms(times)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer commands")
    ap.add_argument("--json", action="store_true", help="also print a BENCH-JSON result line")
    args = ap.parse_args()
    n = 100 if args.quick else 300
    with workdir("commands") as base:
        durable = asyncio.run(router_latency(base, n, durable=True))
        memory = asyncio.run(router_latency(base, n, durable=False))
        e2e = asyncio.run(round_trip(base, n // 2))
        e2e_nd = asyncio.run(round_trip(base, n // 2, broker_nodelay=True))
    print(
        f"router, {n} commands, durable store (2 commits): median {durable['median_ms']} ms, "
        f"p95 {durable['p95_ms']} ms; replay answered from the store "
        f"{durable['replay_median_ms']} ms"
    )
    print(
        f"router, {n} commands, memory only:                median {memory['median_ms']} ms, "
        f"p95 {memory['p95_ms']} ms; replay {memory['replay_median_ms']} ms"
    )
    print(
        f"round trip platform -> Mosquitto -> agent -> Modbus TCP device -> read back -> answer, "
        f"{n // 2} commands: median {e2e['median_ms']} ms, p95 {e2e['p95_ms']} ms"
    )
    print(
        f"the same with set_tcp_nodelay true in mosquitto.conf:                                 "
        f"median {e2e_nd['median_ms']} ms, p95 {e2e_nd['p95_ms']} ms"
    )
    if args.json:
        emit_json(
            {
                "durable": durable,
                "memory": memory,
                "round_trip": e2e,
                "round_trip_broker_nodelay": e2e_nd,
                "n": n,
            }
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
