"""Poll cycle time on a simulated RS-485 line at 9600 baud 8E1 vs the plan's wire-time bound.

The line is a pty pair joined by tests.fixtures.ptywire.PtyWire, which holds every chunk back
for its byte count × 11/9600 s and keeps 3.5 characters of silence after it (the line is
half duplex: a reply cannot start before the request is clocked in). A real pymodbus
ModbusSerialServer answers several unit ids; ModbusBus polls them back to back (intervals far
below the cycle time, so the bus never idles). Cycle time = time for every device to be polled
once. Lower bound = planner.plan_wire_time(plan, char_time, turnaround=0) summed over the
devices: request + response bytes + two 3.5-character silences per request. The simulated
devices add no turnaround of their own beyond the server's processing time.

    .venv/bin/python bench/bench_rtu_cycle.py [--quick] [--units N] [--cycles N]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
import time
from collections.abc import Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pymodbus import FramerType
from pymodbus.server import ModbusSerialServer
from pymodbus.simulator import DataType as SimType
from pymodbus.simulator import SimData, SimDevice

from drivers.base import DeviceBinding
from drivers.core.config import BusConfig, DeviceConfig
from drivers.core.profile import DataType, Limits, Point, Profile, Table
from drivers.core.reading import Reading
from drivers.modbus.bus import ModbusBus
from drivers.modbus.planner import plan_reads, plan_wire_time
from tests.fixtures.ptywire import PtyWire

BAUD = 9600
CHAR = 11 / BAUD  # 8E1: start + 8 data + parity + stop
# Linux ptys refuse PARENB (EINVAL), so the ports are opened 8N2: also 11 bits per character,
# hence the same char time, inter-frame gap and timeouts as 8E1.

# A streetlight-controller-like map: status words, a float block, counters, a coil block.
PROFILE = Profile(
    id="bench-lamp",
    kind="streetlight",
    limits=Limits(max_gap=8),
    points=(
        Point(name="status", type=DataType.BITFIELD, address=0, flags={0: "on", 1: "fault"}),
        Point(name="dim", type=DataType.UINT16, address=1),
        Point(name="voltage", type=DataType.FLOAT32, address=10),
        Point(name="current", type=DataType.FLOAT32, address=12),
        Point(name="power", type=DataType.FLOAT32, address=14),
        Point(name="pf", type=DataType.INT16, address=16, scale=0.001),
        Point(name="energy", type=DataType.UINT32, address=40),
        Point(name="hours", type=DataType.UINT32, address=42),
        Point(name="temp", table=Table.INPUT, type=DataType.INT16, address=3, scale=0.1),
        Point(name="relay", table=Table.COIL, type=DataType.BOOL, address=0),
        Point(name="door", table=Table.COIL, type=DataType.BOOL, address=5),
    ),
)


def sim(unit: int) -> SimDevice:
    return SimDevice(
        unit,
        simdata=(
            [SimData(0, values=[True] * 16, datatype=SimType.BITS)],
            [SimData(0, values=[False] * 16, datatype=SimType.BITS)],
            [SimData(0, values=list(range(50)), datatype=SimType.REGISTERS)],
            [SimData(0, values=list(range(8)), datatype=SimType.REGISTERS)],
        ),
    )


async def run(units: int, cycles: int) -> float:
    wire = PtyWire(CHAR, frame_gap=3.5 * CHAR)
    wire.start()
    server = ModbusSerialServer(
        [sim(u) for u in range(1, units + 1)],
        framer=FramerType.RTU,
        port=wire.server_path,
        baudrate=BAUD,
        stopbits=2,
    )
    await server.serve_forever(background=True)
    times: dict[str, list[float]] = {}
    done = asyncio.Event()
    last = f"lamp{units}"

    async def emit(b: DeviceBinding, readings: Sequence[Reading]) -> None:
        times.setdefault(b.id, []).append(time.perf_counter())
        if len(times.get(last, ())) >= cycles + 2:
            done.set()

    bus_cfg = BusConfig(
        id="rs485", endpoint=f"rtu://{wire.client_path}?baudrate={BAUD}&parity=N&stopbits=2"
    )
    binds = [
        DeviceBinding(
            "bench",
            DeviceConfig(id=f"lamp{u}", bus="rs485", profile=PROFILE.id, unit_id=u, interval=0.001),
            PROFILE,
        )
        for u in range(1, units + 1)
    ]
    bus = ModbusBus(bus_cfg, binds, emit)
    plan = plan_reads(PROFILE.points, PROFILE.limits)
    bound = units * plan_wire_time(plan, CHAR, turnaround=0.0)
    print(
        f"line: {BAUD} baud 8E1, {CHAR * 1000:.3f} ms/char; {units} units, "
        f"{len(PROFILE.points)} points each"
    )
    for r in plan:
        print(
            f"  FC{r.function_code:02d} start={r.start:<3} count={r.count:<3} "
            f"points={len(r.points)}"
        )
    async with asyncio.TaskGroup() as tg:
        task = tg.create_task(bus.run(), name="bench-bus")
        await bus.ready()
        await done.wait()
        task.cancel()
    await server.shutdown()
    wire.close()
    # cycles between the 2nd and the last completed poll of the last device (warm-up skipped)
    t = times[last]
    measured = (t[-1] - t[1]) / (len(t) - 2)
    st = bus.stats
    timeouts = sum(d.timeouts for d in st.devices.values())
    print(
        f"requests per cycle: {len(plan) * units}  timeouts: {timeouts}  "
        f"bus busy: {st.busy_s:.2f} s"
    )
    print(f"wire-time lower bound per cycle: {bound * 1000:8.2f} ms")
    print(f"measured cycle time:             {measured * 1000:8.2f} ms")
    ratio = measured / bound
    print(
        f"ratio measured / bound:          {ratio:8.3f}  "
        f"({'within' if ratio <= 1.10 else 'OVER'} the 10 % target)"
    )
    return ratio


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="few cycles (~3 s)")
    ap.add_argument("--units", type=int, default=4)
    ap.add_argument("--cycles", type=int, default=None)
    args = ap.parse_args()
    cycles = args.cycles or (10 if args.quick else 60)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(run(args.units, cycles))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
