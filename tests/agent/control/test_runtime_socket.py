"""The control socket under the installed unit: in systemd's runtime directory (0750, group
cityedge), reachable by the group's members without sudo, not by others; the CLI finds it
there; a member the agent's user namespace cannot name is audited by the name its CLI sends,
marked as claimed (issue 19). Runs as root (CI does) to act as other users."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
from pathlib import Path

import pytest

from agent.config import load_config
from agent.control import peer
from agent.control.ctl import socket_path
from agent.control.model import PeerCred
from agent.runtime import Agent
from drivers.sim.server import SimulatorServer
from tests.agent.cli.test_cli_write import as_user, audit, configure, open_dir, sim
from tests.agent.cli.test_tools import cli
from tests.agent.test_runtime import SlowSink

__all__ = ["open_dir", "sim"]
NOGROUP = 65534  # local_group of the test config ("nogroup"), standing for cityedge


async def test_group_members_reach_the_socket_in_the_runtime_directory(
    sim: SimulatorServer, tmp_path: Path, open_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert os.geteuid() == 0, "this test switches users: run the suite as root (CI does)"
    run = open_dir / "run"  # what RuntimeDirectory=cityedge + RuntimeDirectoryMode=0750 make
    run.mkdir()
    os.chown(run, 0, NOGROUP)
    run.chmod(0o750)
    monkeypatch.setenv("RUNTIME_DIRECTORY", str(run))
    cfg = configure(tmp_path, sim)
    stale = tmp_path / "state" / "control.sock"  # left behind by a manual run
    stale.parent.mkdir()
    stale.write_text("")
    agent = Agent(load_config(cfg), sinks=[SlowSink(0)])
    task = asyncio.create_task(agent.run())
    sock = run / "control.sock"
    loop = asyncio.get_running_loop()
    try:
        while not sock.exists() or agent.pipeline.received < 5:
            await asyncio.sleep(0.05)
        assert not stale.exists()  # the CLI would try it first
        assert socket_path(tmp_path / "state") == sock
        req = {"op": "write", "device": "lamp-1", "point": "dim_level", "text": "0.3"}
        claimed = {**req, "id": "r1", "user": "alice"}
        member = await loop.run_in_executor(None, as_user, sock, claimed, 1, [NOGROUP])
        assert member["status"] == "ok", member
        assert sim.registers(1, "holding", 0, 1) == [30]
        outsider = await loop.run_in_executor(
            None,
            lambda: subprocess.run(
                ["socat", "-t", "5", "-", f"UNIX-CONNECT:{sock}"],
                input=json.dumps({"op": "status"}).encode() + b"\n",
                capture_output=True, user=65534, group=1, extra_groups=[], timeout=20,
                check=False,
            ),
        )  # fmt: skip
        assert outsider.returncode != 0 and b"Permission denied" in outsider.stderr
        rc, out, err = await cli("status", "-c", str(cfg), "--json", cwd=tmp_path)
        assert rc == 0, err
        assert json.loads(out)["gateway"] == "gw-cli"
    finally:
        agent.request_shutdown()
        await asyncio.wait_for(task, 10)
    assert not sock.exists()
    [record] = audit(tmp_path / "state")
    assert (record["id"], record["user"]) == ("r1", "alice (claimed; uid hidden from the agent)")


def test_a_claim_only_names_a_hidden_uid() -> None:
    hidden = PeerCred(10, peer.OVERFLOW_UID, 1, (NOGROUP,), "nobody")
    assert peer.with_claim(hidden, "alice").user == "alice (claimed; uid hidden from the agent)"
    root = PeerCred(10, 0, 0, (), "root")
    assert peer.with_claim(root, "alice") is root  # a visible uid is named by the kernel
    assert peer.with_claim(hidden, "evil\nline") is hidden
    assert peer.with_claim(hidden, None) is hidden
