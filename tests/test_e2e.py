"""End to end: simulators -> `cityedge run` (a real process) -> JSON lines, then SIGTERM."""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import re
import signal
import sys
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from bench.common import service_env
from drivers.sim.server import SimSpec, SimulatorServer

CONFIG = """\
[gateway]
id = "gw-e2e"
state_dir = "state"
shutdown_grace = 4.0
log_level = "info"

[[buses]]
id = "sim"
endpoint = "tcp://127.0.0.1:{port}"
timeout = 1.0

[[devices]]
id = "lamp-1"
bus = "sim"
profile = "cityedge/streetlight"
unit_id = 1
interval = 0.5

[[devices]]
id = "lamp-2"
bus = "sim"
profile = "cityedge/streetlight"
unit_id = 2
interval = 0.5

[[devices]]
id = "meter-11"
bus = "sim"
profile = "cityedge/water_meter"
unit_id = 11
interval = 0.5

[[devices]]
id = "cam-21"
bus = "sim"
profile = "cityedge/camera"
unit_id = 21
interval = 0.5

[[outputs]]
type = "jsonl"
id = "file"
path = "readings.jsonl"
"""


@pytest.fixture
async def simulators() -> AsyncIterator[SimulatorServer]:
    async with SimulatorServer(
        SimSpec(streetlights=(1, 2), water_meters=(11,), cameras=(21,), speed=600.0)
    ) as sim:
        yield sim


async def _start_agent(tmp_path: Path, port: int) -> asyncio.subprocess.Process:
    cfg = tmp_path / "gateway.toml"
    cfg.write_text(CONFIG.format(port=port))
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "agent",
        "run",
        str(cfg),
        cwd=tmp_path,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        # the systemd unit's environment (python -OO, bytecode cache under %C)
        env={**os.environ, **service_env(tmp_path / "cache")},
    )


def _lines(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()]


async def _wait_for_readings(path: Path, n: int, timeout: float = 60.0) -> None:
    # generous: the first start compiles the -OO bytecode, ~10 s under qemu-user (test-arm)
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while len(_lines(path)) < n:
        assert loop.time() < end, f"fewer than {n} readings after {timeout} s"
        await asyncio.sleep(0.2)


async def test_readings_flow_and_sigterm_loses_nothing(
    simulators: SimulatorServer, tmp_path: Path
) -> None:
    proc = await _start_agent(tmp_path, simulators.port)
    out = tmp_path / "readings.jsonl"
    try:
        await _wait_for_readings(out, 200)
        proc.send_signal(signal.SIGHUP)  # must not kill the process (reload)
        await asyncio.sleep(1.0)
        assert proc.returncode is None
        n_before = len(_lines(out))
        await asyncio.sleep(1.0)
        assert len(_lines(out)) > n_before, "polling stopped after SIGHUP"
        t0 = asyncio.get_running_loop().time()
        proc.send_signal(signal.SIGTERM)
        _, err = await asyncio.wait_for(proc.communicate(), 4.0 + 3.0)
        elapsed = asyncio.get_running_loop().time() - t0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    log = err.decode()
    assert proc.returncode == 0, log
    assert "(event loop asyncio, python 3." in log, "the daemon runs on the standard loop"
    assert re.search(r"python 3\.\d+\.\d+\S* -OO\)", log), "the unit's -OO did not apply"
    assert list((tmp_path / "cache").rglob("*.opt-2.pyc")), "no bytecode in the unit's cache"
    assert elapsed < 4.0 + 1.0, f"shutdown took {elapsed:.1f} s"
    m = re.search(r"stopped: (\d+) readings read, (\d+) delivered", log)
    assert m, log
    readings = _lines(out)
    assert len(readings) == int(m.group(2)) == int(m.group(1)), "readings lost at shutdown"

    devices = {r["device"] for r in readings}
    assert devices == {"lamp-1", "lamp-2", "meter-11", "cam-21"}
    kinds = {r["device"]: r["kind"] for r in readings}
    assert kinds["lamp-1"] == "streetlight" and kinds["meter-11"] == "water_meter"
    seqs = [int(r["seq"]) for r in readings]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
    for r in readings:
        ts = datetime.strptime(str(r["observedAt"]), "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)
        assert abs((datetime.now(UTC) - ts).total_seconds()) < 120
        assert r["quality"] == "good", r
    by = {(r["device"], r["point"]): r for r in readings}
    assert by[("lamp-1", "voltage")]["unit"] == "V"
    assert 180 < float(by[("lamp-1", "voltage")]["value"]) < 260
    # totalizers never go down (energy of the lamps, volume of the meter)
    for dev, point in (("lamp-1", "energy"), ("lamp-2", "energy"), ("meter-11", "volume")):
        series = [float(r["value"]) for r in readings if r["device"] == dev and r["point"] == point]
        assert len(series) >= 3, (dev, point)
        assert all(b >= a for a, b in itertools.pairwise(series)), (dev, series)
