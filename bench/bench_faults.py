"""Field faults: time to offline and time to recover, per fault kind (issue 15).

One device polled every second by the real bus owner (``ModbusBus``), its state decided by
``drivers/device_state.py``. Each fault starts at a random phase of the poll tick, is held until
the device is reported offline (plus 2-3 s, to show it stays offline without flapping), then
the peer is made healthy again, at a random phase too. Measured at the bus owner, where the
transition is decided (the MQTT message follows one outbox commit later, ~0.1 s):

- time to offline: fault start -> offline transition; bound max(2 x interval, (retries + 1) x
  timeout + 1 s);
- time to recover: peer healthy -> online transition; bound one interval, plus the reconnect
  delay in force when the fault closed the link (capped at 10 s).

The offline bound is tight at a 1 s interval: a fault starting just after a tick is seen by
the next one, which ends after (retries + 1) x timeout, so the worst case is the bound itself
plus the scheduling time of the poll (milliseconds). Both checks allow ``SLACK`` (50 ms) for it.

Modbus TCP against the hostile peer (tests/fixtures/hostile.py): exception replies, a gateway
whose target is silent (exception 0B), garbage, a wrong unit id, a half frame then silence, a
peer that stops reading, a reset, a refused endpoint (peer process gone). Modbus RTU at 9600
baud over a pty pair (pymodbus server): silent, garbled (CRC), port gone (USB unplug).

    .venv/bin/python bench/bench_faults.py [--quick] [--json] [--reps N]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import random
import statistics
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import emit_json
from drivers.base import DeviceBinding
from drivers.core.config import BusConfig, DeviceConfig
from drivers.core.profile import Point, Profile
from drivers.core.reading import Reading
from drivers.device_state import Transition
from drivers.modbus.bus import ModbusBus
from tests.fixtures.hostile import HostilePeer
from tests.fixtures.ptywire import PtyWire

INTERVAL = 1.0
TCP_TIMEOUT = 0.5
RETRIES = 1
REGISTERS = {a: 100 + a for a in range(16)}
SLACK = 0.05  # s of scheduling a bound check allows
PROFILE = Profile(
    id="bench/faults",
    kind="streetlight",
    points=(
        Point(name="dim", address=0),
        Point(name="mode", address=1),
        Point(name="p", address=8),
    ),
)
BINDING = DeviceBinding(
    "bench-gw",
    DeviceConfig(id="dev", bus="b", profile=PROFILE.id, unit_id=1, interval=INTERVAL),
    PROFILE,
)


@dataclass
class Result:
    kind: str
    reason: str = ""
    offline: list[float] = field(default_factory=list)
    recover: list[float] = field(default_factory=list)
    off_bound: float = 0.0
    rec_bound: list[float] = field(default_factory=list)  # interval + reconnect delay in force
    flaps: int = 0  # transitions beyond the two a fault should cause


class Watch:
    """The bus owner's ``on_state`` listener: the device's state with the time it changed."""

    def __init__(self) -> None:
        self.log: list[tuple[float, Transition]] = []
        self.changed = asyncio.Event()

    async def __call__(self, t: Transition) -> None:
        self.log.append((time.monotonic(), t))
        self.changed.set()

    async def until(self, state: str, after: float, timeout: float = 30.0) -> tuple[float, str]:
        async with asyncio.timeout(timeout):
            while True:
                for at, t in self.log:
                    if at >= after and t.state.value == state:
                        return at, (t.reason.value if t.reason else "")
                self.changed.clear()
                await self.changed.wait()


async def _noop(_: DeviceBinding, __: Sequence[Reading]) -> None:
    return None


Fault = Callable[[], Awaitable[None]]


async def run_fault(
    bus_cfg: BusConfig, start: Fault, heal: Fault, res: Result, rng: random.Random
) -> None:
    watch = Watch()
    bus = ModbusBus(bus_cfg, [BINDING], _noop, on_state=watch, rng=rng)
    task = asyncio.create_task(bus.run(), name="bench-bus")
    try:
        await watch.until("online", 0.0, 10.0)
        await asyncio.sleep(1.5 + rng.uniform(0, INTERVAL))  # a random phase of the tick
        t0 = time.monotonic()
        await start()
        at, reason = await watch.until("offline", t0)
        res.offline.append(at - t0)
        res.reason = reason
        await asyncio.sleep(2.0 + rng.uniform(0, INTERVAL))  # held (offline, once); any phase
        t1 = time.monotonic()
        # the reconnect scheduled last, when the link is down: recovery waits for it
        delay = 0.0 if bus.stats.connected else bus.stats.retry_in
        res.rec_bound.append(INTERVAL + delay)
        await heal()
        at, _ = await watch.until("online", t1)
        res.recover.append(at - t1)
        await asyncio.sleep(0.5)
        res.flaps += len(watch.log) - 3  # online, offline, online
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def tcp_kind(kind: str, mode: str, reps: int, rng: random.Random) -> Result:
    res = Result(kind, off_bound=max(2 * INTERVAL, (RETRIES + 1) * TCP_TIMEOUT + 1.0))
    for _ in range(reps):
        peer = HostilePeer(REGISTERS)
        await peer.start()
        cfg = BusConfig(id="b", endpoint=peer.url, timeout=TCP_TIMEOUT, retries=RETRIES)

        async def start(peer: HostilePeer = peer) -> None:
            if mode == "refused":
                await peer.stop()  # the peer process is gone: connections refused
            else:
                peer.mode = mode

        async def heal(peer: HostilePeer = peer) -> None:
            if mode == "refused":
                await peer.start()  # same port
            peer.mode = "healthy"

        try:
            await run_fault(cfg, start, heal, res, rng)
        finally:
            await peer.stop()
    return res


async def rtu_kind(kind: str, reps: int, rng: random.Random) -> Result:
    from pymodbus.server import ModbusSerialServer
    from pymodbus.simulator import DataType, SimData, SimDevice

    res = Result(kind)
    for _ in range(reps):
        wire = PtyWire(char_time=11 / 9600, frame_gap=3.5 * 11 / 9600)
        wire.start()
        dev = SimDevice(
            1,
            simdata=(
                [SimData(0, values=[False] * 16, datatype=DataType.BITS)],
                [SimData(0, values=[False] * 16, datatype=DataType.BITS)],
                [SimData(0, values=list(REGISTERS.values()), datatype=DataType.REGISTERS)],
                [SimData(0, values=[0] * 16, datatype=DataType.REGISTERS)],
            ),
        )
        server = ModbusSerialServer([dev], port=wire.server_path, baudrate=9600, timeout=0.05)
        await server.serve_forever(background=True)
        url = f"rtu://{wire.client_path}?baudrate=9600&parity=N"
        cfg = BusConfig(id="b", endpoint=url, retries=RETRIES)  # timeout sized from the baud
        bus_probe = ModbusBus(cfg, [BINDING], _noop)
        from drivers.modbus.adapter import response_timeout

        timeout = response_timeout(bus_probe.endpoint, None)
        res.off_bound = max(2 * INTERVAL, (RETRIES + 1) * timeout + 1.0)

        async def start(wire: PtyWire = wire) -> None:
            if kind == "rtu silent":
                wire.to_client = lambda _: None
            elif kind == "rtu garbled (CRC)":
                wire.to_client = lambda d: d[:-1] + bytes([d[-1] ^ 0xFF])
            else:
                wire.unplug()

        async def heal(wire: PtyWire = wire) -> None:
            wire.to_client = None
            if kind == "rtu port gone":
                wire.plug()

        try:
            await run_fault(cfg, start, heal, res, rng)
        finally:
            await server.shutdown()
            wire.close()
    return res


TCP_KINDS = (
    ("tcp exception 02", "exc02"),
    ("tcp gateway target (0B)", "exc0B"),
    ("tcp garbage", "garbage"),
    ("tcp wrong unit id", "wrong_unit"),
    ("tcp half frame, silent", "truncated"),
    ("tcp stops reading", "stop_reading"),
    ("tcp reset mid-frame", "reset"),
    ("tcp peer killed, refused", "refused"),
)
RTU_KINDS = ("rtu silent", "rtu garbled (CRC)", "rtu port gone")


async def main_async(reps: int) -> list[Result]:
    rng = random.Random(15)
    out = [await tcp_kind(k, m, reps, rng) for k, m in TCP_KINDS]
    out += [await rtu_kind(k, reps, rng) for k in RTU_KINDS]
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="one repetition per fault kind")
    ap.add_argument("--json", action="store_true", help="also print a BENCH-JSON result line")
    ap.add_argument("--reps", type=int, default=None)
    args = ap.parse_args()
    reps = args.reps or (1 if args.quick else 3)
    logging.basicConfig(level=logging.ERROR)
    results = asyncio.run(main_async(reps))
    print(
        f"one device, interval {INTERVAL:g} s, retries {RETRIES}, TCP timeout {TCP_TIMEOUT:g} s, "
        f"{reps} run(s) per kind; seconds, median / max"
    )
    print(
        f"{'fault':<26} {'reason':<11} {'to offline':>13} {'bound':>6} {'to recover':>13} "
        f"{'bound':>6} {'flaps':>5}"
    )
    for r in results:
        off, rec = statistics.median(r.offline), statistics.median(r.recover)
        print(
            f"{r.kind:<26} {r.reason:<11} {off:6.2f} /{max(r.offline):5.2f} "
            f"{r.off_bound:6.2f} {rec:6.2f} /{max(r.recover):5.2f} {max(r.rec_bound):6.2f} "
            f"{r.flaps:5d}"
        )
    within = all(max(r.offline) <= r.off_bound + SLACK for r in results)
    back = all(
        rec <= bound + SLACK
        for r in results
        for rec, bound in zip(r.recover, r.rec_bound, strict=True)
    )
    print(f"every time to offline within its bound (+{SLACK * 1000:.0f} ms): {_yes(within)}")
    print(f"every time to recover within its bound (+{SLACK * 1000:.0f} ms): {_yes(back)}")
    if args.json:
        emit_json(
            {
                "bench": "faults",
                "interval_s": INTERVAL,
                "reps": reps,
                "kinds": [
                    {
                        "kind": r.kind,
                        "reason": r.reason,
                        "offline_median_s": round(statistics.median(r.offline), 3),
                        "offline_max_s": round(max(r.offline), 3),
                        "offline_bound_s": round(r.off_bound, 3),
                        "recover_median_s": round(statistics.median(r.recover), 3),
                        "recover_max_s": round(max(r.recover), 3),
                        "recover_bound_s": round(max(r.rec_bound), 3),
                        "recover_over_bound_s": round(
                            max(a - b for a, b in zip(r.recover, r.rec_bound, strict=True)), 3
                        ),
                        "flaps": r.flaps,
                    }
                    for r in results
                ],
                "all_within_bound": within,
                "all_recovered_within_bound": back,
                "slack_s": SLACK,
            }
        )
    return 0


def _yes(ok: bool) -> str:
    return "yes" if ok else "NO"


if __name__ == "__main__":
    sys.exit(main())
