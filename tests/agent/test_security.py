from __future__ import annotations

import os
from pathlib import Path

import pytest

from agent.config.gateway import GatewayConfig
from agent.security import exposed_secret_files


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
