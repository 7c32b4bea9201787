"""``cityedge watch`` in a pseudo-terminal (pexpect), against a running agent polling the
simulators: it draws, follows a value the simulator changes, and Ctrl-C ends it with exit
status 0 and the terminal given back (cursor shown, no traceback)."""

from __future__ import annotations

import asyncio
import os
import re
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pexpect
import pytest

from agent.config import load_config
from agent.control.ctl import socket_path
from agent.runtime import Agent
from drivers.sim.models import StreetlightModel
from drivers.sim.server import SimSpec, SimulatorServer

CONFIG = """\
[gateway]
id = "gw-watch"
state_dir = "state"
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
interval = 0.3

[[devices]]
id = "cam-21"
bus = "sim"
profile = "cityedge/camera"
unit_id = 21
interval = 0.3

[[outputs]]
type = "jsonl"
id = "file"
path = "{out}"
"""
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


@pytest.fixture
async def sim() -> AsyncIterator[SimulatorServer]:
    async with SimulatorServer(SimSpec()) as server:
        yield server


async def test_watch_draws_updates_and_exits_cleanly_on_ctrl_c(
    sim: SimulatorServer, tmp_path: Path
) -> None:
    cfg = tmp_path / "gateway.toml"
    cfg.write_text(CONFIG.format(port=sim.port, out=tmp_path / "readings.jsonl"))
    loaded = load_config(cfg)
    agent = Agent(loaded)
    task = asyncio.create_task(agent.run())
    child = None
    try:
        for _ in range(200):
            if socket_path(loaded.config.gateway.state_dir).exists() and agent.pipeline.received:
                break
            await asyncio.sleep(0.05)
        env = {**os.environ, "TERM": "xterm-256color", "COLUMNS": "", "LINES": ""}
        child = pexpect.spawn(
            sys.executable,
            ["-m", "agent", "watch", "-c", str(cfg), "--interval", "0.3"],
            cwd=str(tmp_path),
            env=env,
            dimensions=(50, 160),
            encoding="utf-8",
            timeout=20,
        )

        async def expect(pattern: str) -> str:
            assert child is not None
            await asyncio.to_thread(child.expect, pattern)
            return str(child.before) + str(child.after)

        first = await expect(r"dim_level\s+(\x1b\[[0-9;]*m)*1\.0")
        assert "\x1b[?25l" in first  # rich's Live hides the cursor while it draws
        plain = ANSI.sub("", first)
        assert "gateway gw-watch" in plain and "link up" in plain
        lamp = sim.device(1)
        assert isinstance(lamp, StreetlightModel)
        lamp.dim_pct = 37  # the controller's set-point changes: the next frame shows it
        await expect(r"dim_level\s+(\x1b\[[0-9;]*m)*0\.37")
        await expect(r"cam-21")  # every device is drawn, frame after frame
        child.sendintr()
        rest = await expect(pexpect.EOF)
        await asyncio.to_thread(child.close)
        assert child.exitstatus == 0, rest
        assert "\x1b[?25h" in rest  # cursor shown again
        assert "Traceback" not in rest and "KeyboardInterrupt" not in rest
    finally:
        if child is not None and child.isalive():
            child.terminate(force=True)
        agent.request_shutdown()
        await asyncio.wait_for(task, 10)
