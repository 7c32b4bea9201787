"""examples/gateway.toml is what install.sh puts in /etc/cityedge: it must pass `check`, with
the MQTT password delivered the way the unit delivers it ($CREDENTIALS_DIRECTORY)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from agent.cli.main import main
from agent.config import load_config

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "gateway.toml"
UNIT = ROOT / "systemd" / "cityedge.service"


def test_example_passes_check_with_systemd_credentials(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    creds = tmp_path / "creds"
    creds.mkdir()
    # the credential name the unit loads is the secret name the example references
    names = re.findall(r"(?m)^LoadCredential=([^:]+):", UNIT.read_text())
    assert names == ["mqtt_password"]
    (creds / names[0]).write_text("s3cret\n")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(creds))
    loaded = load_config(EXAMPLE)
    cfg = loaded.config
    assert cfg.secrets["mqtt_password"].get_secret_value() == "s3cret"
    assert cfg.outputs[0].password_secret == "mqtt_password"  # type: ignore[union-attr]
    assert (cfg.metrics.host, cfg.metrics.port) == ("127.0.0.1", 9108)
    assert {d.profile for d in cfg.devices} == {
        "cityedge/streetlight",
        "cityedge/water_meter",
        "cityedge/camera",
    }
    # `check` of the installed copy (profiles/ beside it, the CA in place): test_install.py


def test_example_without_the_password_is_refused(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)
    monkeypatch.delenv("CITYEDGE_SECRETS__MQTT_PASSWORD", raising=False)
    assert main(["check", str(EXAMPLE)]) == 78
    assert "mqtt_password" in capsys.readouterr().err
