"""`cityedge write` and `read` on the local channel, with a running agent and without one:
the same router, the same answers and the same audit record; labels and Smart Data Models
names; idempotency and the rate limit across CLI runs; and the control socket's peer
credentials checked against real users (the caller runs as `nobody`)."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any, cast

import pytest

from agent.config import load_config
from agent.runtime import Agent
from drivers.sim.models import StreetlightModel
from drivers.sim.server import SimSpec, SimulatorServer
from tests.agent.cli.test_tools import cli
from tests.agent.test_runtime import SlowSink

CONFIG = """\
[gateway]
id = "gw-cli"
state_dir = "{state}"
watch_config = 0

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

[[outputs]]
type = "jsonl"
id = "out"
path = "readings.jsonl"

[commands]
rate_per_minute = {rate}
local_group = "nogroup"
"""


def lamp(sim: SimulatorServer) -> StreetlightModel:
    """The simulated streetlight at unit 1."""
    return cast(StreetlightModel, sim.device(1))


@pytest.fixture
async def sim() -> AsyncIterator[SimulatorServer]:
    async with SimulatorServer(SimSpec(streetlights=(1,), water_meters=(), cameras=())) as server:
        yield server


def configure(tmp_path: Path, sim: SimulatorServer, rate: int = 30, state: str = "state") -> Path:
    cfg = tmp_path / "gateway.toml"
    cfg.write_text(CONFIG.format(port=sim.port, rate=rate, state=state))
    return cfg


def audit(state: Path) -> list[dict[str, Any]]:
    return [json.loads(x) for x in (state / "audit.jsonl").read_text().splitlines()]


def same(record: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in record.items() if k not in ("time", "id")}


async def write(cfg: Path, *args: str) -> tuple[int, dict[str, Any], str]:
    rc, out, err = await cli("write", "-c", str(cfg), "--json", *args, cwd=cfg.parent)
    return rc, (json.loads(out) if out.strip() else {}), err


async def test_same_answer_and_audit_record_with_and_without_daemon(
    sim: SimulatorServer, tmp_path: Path
) -> None:
    cfg = configure(tmp_path, sim)
    state = tmp_path / "state"
    regs = lambda: sim.registers(1, "holding", 0, 3)  # noqa: E731
    cases = [  # (point as typed, value as typed, register index, register value)
        ("lamp_switch", "on", 1, 1),  # issue #17: "on" is the label of an enum point
        ("working_mode", "manual", 2, 1),
        ("illuminanceLevel", "0.405", 0, 40),  # Smart Data Models name; rounded and said so
        ("lamp_switch", "dazzle", 1, None),  # rejected: the register keeps its value
    ]
    read = ("read", "-c", str(cfg), "--json", "lamp-1", "totalActivePower", "dim_level")
    rc, out, err = await cli(*read, cwd=tmp_path)  # Smart Data Models and point names
    assert rc == 0, err
    assert sorted(r["point"] for r in json.loads(out)) == ["active_power", "dim_level"]
    rc, _, err = await cli("read", "-c", str(cfg), "lamp-1", "nonsense", cwd=tmp_path)
    assert rc == 2 and "has no point nonsense" in err
    alone: list[tuple[int, dict[str, Any]]] = []
    for i, (point, value, reg, expect) in enumerate(cases):
        before = regs()
        rc, answer, err = await write(cfg, "--id", f"alone-{i}", "lamp-1", point, value)
        assert rc == (0 if expect is not None else 2), err
        assert regs()[reg] == (expect if expect is not None else before[reg])
        alone.append((rc, answer))
    assert alone[2][1]["value"] == 0.4 and alone[2][1]["requested"] == 0.405
    assert "expects one of off, on" in alone[3][1]["reason"]
    lamp(sim).set_manual(False)
    lamp(sim).set_dim(100)
    sim.device(1).write("working_mode", 0)

    agent = Agent(load_config(cfg), sinks=[SlowSink(0)])
    task = asyncio.create_task(agent.run())
    try:
        while agent.pipeline.received < 5:
            await asyncio.sleep(0.05)
        for i, (point, value, reg, expect) in enumerate(cases):
            before = regs()
            rc, answer, err = await write(cfg, "--id", f"daemon-{i}", "lamp-1", point, value)
            assert (rc, {**answer, "id": None}) == (alone[i][0], {**alone[i][1], "id": None}), err
            assert regs()[reg] == (expect if expect is not None else before[reg])
        rc, out, err = await cli(*read, cwd=tmp_path)
        assert rc == 0, err
        assert sorted(r["point"] for r in json.loads(out)) == ["active_power", "dim_level"]
    finally:
        agent.request_shutdown()
        await asyncio.wait_for(task, 10)
    records = audit(state)
    assert len(records) == 2 * len(cases)
    for a, b in zip(records[: len(cases)], records[len(cases) :], strict=True):
        assert same(a) == same(b)
    assert records[0]["source"] == "local" and records[0]["user"] == "root"
    assert records[2]["written"] == 0.4


async def test_repeated_id_and_rate_limit_hold_across_cli_runs(
    sim: SimulatorServer, tmp_path: Path
) -> None:
    cfg = configure(tmp_path, sim, rate=2)
    rc, first, err = await write(cfg, "--id", "wo-1", "lamp-1", "dim_level", "0.3")
    assert rc == 0 and sim.registers(1, "holding", 0, 1) == [30], err
    lamp(sim).set_dim(55)
    rc, again, _ = await write(cfg, "--id", "wo-1", "lamp-1", "dim_level", "0.3")
    assert rc == 0 and again == {**first, "duplicate": True}
    assert sim.registers(1, "holding", 0, 1) == [55]  # not written again
    rc, _, _ = await write(cfg, "lamp-1", "dim_level", "0.6")
    assert rc == 0 and sim.registers(1, "holding", 0, 1) == [60]
    rc, third, _ = await write(cfg, "lamp-1", "dim_level", "0.7")
    assert rc == 2 and "rate limit" in third["reason"]
    assert sim.registers(1, "holding", 0, 1) == [60]
    rc, unknown, _ = await write(cfg, "lamp-9", "dim_level", "0.7")
    assert rc == 2 and "unknown device 'lamp-9'" in unknown["reason"]
    results = [(a["id"], a["result"], a["duplicate"]) for a in audit(tmp_path / "state")]
    assert results[:2] == [("wo-1", "ok", False), ("wo-1", "ok", True)]
    assert [r[1] for r in results[2:]] == ["ok", "rejected", "rejected"]


@pytest.fixture
def open_dir() -> Iterator[Path]:
    """A state directory other users can reach (pytest's tmp tree is private to root)."""
    d = Path(tempfile.mkdtemp(prefix="cityedge-peer-"))
    d.chmod(0o755)
    yield d
    shutil.rmtree(d, ignore_errors=True)


def as_user(sock: Path, request: dict[str, Any], group: int, extra: list[int]) -> dict[str, Any]:
    """Talk to the control socket as the user nobody, through socat (a process of its own)."""
    proc = subprocess.run(
        ["socat", "-t", "10", "-", f"UNIX-CONNECT:{sock}"],
        input=json.dumps(request).encode() + b"\n",
        capture_output=True,
        user=65534,
        group=group,
        extra_groups=extra,
        timeout=20,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr.decode()
    reply: dict[str, Any] = json.loads(proc.stdout)
    return reply


async def test_control_socket_checks_peer_credentials(
    sim: SimulatorServer, tmp_path: Path, open_dir: Path
) -> None:
    """Needs root (CI runs as root) to become `nobody`; refuses to pass vacuously otherwise."""
    assert os.geteuid() == 0, "this test switches users: run the suite as root (CI does)"
    cfg = configure(tmp_path, sim, state=str(open_dir / "state"))
    agent = Agent(load_config(cfg), sinks=[SlowSink(0)])
    task = asyncio.create_task(agent.run())
    sock = open_dir / "state" / "control.sock"
    try:
        while not sock.exists() or agent.pipeline.received < 5:
            await asyncio.sleep(0.05)
        (open_dir / "state").chmod(0o755)
        assert sock.stat().st_gid == 65534  # given to local_group (nogroup), mode 0660
        sock.chmod(0o666)  # a socket left too open: the credentials still decide
        req = {"op": "write", "device": "lamp-1", "point": "dim_level", "text": "0.2"}
        loop = asyncio.get_running_loop()
        refused = await loop.run_in_executor(None, as_user, sock, {**req, "id": "p1"}, 1, [])
        assert refused["status"] == "rejected"
        assert refused["reason"] == "user 'nobody' is neither root nor in group 'nogroup'"
        assert sim.registers(1, "holding", 0, 1) == [100]
        status = await loop.run_in_executor(None, as_user, sock, {"op": "status"}, 1, [])
        assert status == {"ok": False, "error": "refused: " + refused["reason"]}
        member = await loop.run_in_executor(None, as_user, sock, {**req, "id": "p2"}, 1, [65534])
        assert member["status"] == "ok", member  # in the group by a supplementary group
        assert sim.registers(1, "holding", 0, 1) == [20]
    finally:
        agent.request_shutdown()
        await asyncio.wait_for(task, 10)
    records = audit(open_dir / "state")
    assert [(r["id"], r["user"], r["result"]) for r in records] == [
        ("p1", "nobody", "rejected"),
        ("p2", "nobody", "ok"),
    ]
