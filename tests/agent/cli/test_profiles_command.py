"""`cityedge profiles`: the library a gateway sees, with kinds and point counts (issue 19)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from agent.cli.main import main
from tests.agent.conftest import GATEWAY, PROFILE


def test_lists_site_and_builtin_profiles(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    site = tmp_path / "profiles"
    (site / "test").mkdir(parents=True)
    (site / "test" / "lamp.toml").write_text(
        PROFILE.replace('manufacturer = "Test"', 'manufacturer = "Test"\nmodel = "L-1"')
    )
    (site / "test" / "odd.toml").write_text(
        PROFILE.replace('kind = "streetlight"', 'kind = "lampp"')
    )
    (site / "cityedge").mkdir()
    (site / "cityedge" / "water_meter.toml").write_text(PROFILE)  # shadows the built-in one
    cfg = tmp_path / "gateway.toml"
    cfg.write_text(GATEWAY.replace("unit_id = 1\n", 'unit_id = "broken"\n'))  # still listed
    assert main(["profiles", "-c", str(cfg), "--json"]) == 0
    rows = {r["ref"]: r for r in json.loads(capsys.readouterr().out)}
    lamp = rows["test/lamp"]
    assert (lamp["kind"], lamp["protocol"], lamp["points"], lamp["writable"]) == (
        "streetlight", "modbus", 2, 1,
    )  # fmt: skip
    assert "unknown kind 'lampp'" in rows["test/odd"]["error"]
    assert rows["cityedge/water_meter"]["library"] == str(site)
    assert rows["cityedge/water_meter"]["shadows"][0].endswith(
        "drivers/profiles/cityedge/water_meter.toml"
    )
    assert rows["eastron/sdm630"]["kind"] == "energy_meter"
    assert main(["profiles", "-c", str(cfg)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split() == ["PROFILE", "KIND", "PROTOCOL", "POINTS", "MODEL"]
    [line] = [ln for ln in out if ln.startswith("test/lamp ")]
    assert line.split()[:5] == ["test/lamp", "streetlight", "modbus", "2", "(1"]
    assert line.rstrip().endswith("Test L-1")
    assert any(ln.startswith("test/odd ") and "ERROR" in ln for ln in out)


def test_a_missing_dir_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["profiles", "--dir", str(tmp_path / "nope")]) == 2
    assert "does not exist" in capsys.readouterr().err
