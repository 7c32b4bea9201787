from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from agent.config.gateway import GatewayConfig
from agent.control.security import exposed_secret_files


def test_world_readable_secret_is_reported(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / "mqtt_password").write_text("x")
    (creds / "hmac").write_text("y")
    os.chmod(creds / "mqtt_password", 0o644)
    os.chmod(creds / "hmac", 0o600)
    key = tmp_path / "client.key"
    key.write_text("k")
    os.chmod(key, 0o640)
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(creds))
    cfg = GatewayConfig.model_validate(
        {
            "gateway": {"id": "gw"},
            "outputs": [
                {
                    "type": "mqtt",
                    "id": "m",
                    "brokers": [{"url": "mqtts://h:8883"}],
                    "tls": {"key_file": str(key)},
                }
            ],
        }
    )
    warnings = exposed_secret_files(cfg)
    assert len(warnings) == 2
    assert "mqtt_password" in warnings[0] and "every user" in warnings[0]
    assert "client.key" in warnings[1] and "group" in warnings[1]


CHECKED = """\
[gateway]
id = "gw-warn"
state_dir = "state"
watch_config = 0
shutdown_grace = 1.0

[[outputs]]
type = "mqtt"
id = "lax-uplink"
brokers = [{{ url = "mqtts://localhost:{port}" }}]
encoding = "sparkplug"
health_interval = 0

[outputs.tls]
insecure_skip_verify = true

[commands]
hmac_secret = "cmd_key"

[commands.policy]
native = "signature"
iota = "off"
"""


async def test_insecure_skip_verify_warns_in_check_and_at_start(
    tmp_path: Path,
    mosquitto: Any,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Issue #17 item 7: a broker whose certificate does not even name it is accepted with
    insecure_skip_verify; `cityedge check` and the start-up log say so, naming the output.
    `check` also prints the effective policy of every command channel."""
    import argparse
    import asyncio
    import logging

    from agent.cli import check
    from agent.config import load_config
    from agent.runtime import Agent

    monkeypatch.setenv("CITYEDGE_SECRETS__CMD_KEY", "k" * 32)
    broker = mosquitto(tls=True, wrong_server_name=True)
    cfg = tmp_path / "gateway.toml"
    cfg.write_text(CHECKED.format(port=broker.port))
    assert check.run(argparse.Namespace(config=str(cfg), dropin=None)) == 0
    out = capsys.readouterr().out
    assert "warning: output 'lax-uplink': tls.insecure_skip_verify = true" in out
    assert "output 'lax-uplink': the sparkplug command channel(s) rely on the broker" in out
    table = out.split("command channels (effective policy, docs/COMMANDS.md):\n")[1]
    rows = {line.split()[0]: line.split()[1] for line in table.splitlines()[:5]}
    assert rows == {
        "native": "signature",
        "config": "signature",
        "sparkplug": "broker",
        "iota": "off",
        "local": "peer",
    }
    caplog.set_level(logging.WARNING)
    agent = Agent(load_config(cfg))
    task = asyncio.create_task(agent.run())
    try:
        sink: Any = agent.sinks[0]
        for _ in range(400):
            if sink.link.connected and agent.ready_at is not None:
                break
            await asyncio.sleep(0.025)
        assert sink.link.connected  # the wrong certificate was accepted...
    finally:
        agent.request_shutdown()
        await asyncio.wait_for(task, 10)
    warned = [r.getMessage() for r in caplog.records if "insecure_skip_verify" in r.getMessage()]
    assert warned and "output 'lax-uplink'" in warned[0]  # ...and said so at start
