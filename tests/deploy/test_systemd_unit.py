"""The systemd unit: `systemd-analyze verify` clean and `security` exposure within budget.

Both run offline (no booted systemd needed): verify loads the unit file and checks every
directive and the executables it names; ``security --offline=true`` scores the file itself.
The shipped ExecStart (/opt/cityedge/venv/bin/cityedge) does not exist here, so a copy with
ExecStart pointed at this interpreter is verified; everything else is byte-identical.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
UNIT = ROOT / "systemd" / "cityedge.service"
ANALYZE = "/usr/bin/systemd-analyze"
MAX_EXPOSURE = 2.0


def unit_copy(tmp_path: Path, exec_start: str) -> Path:
    text = UNIT.read_text()
    assert "ExecStart=/opt/cityedge/venv/bin/cityedge run /etc/cityedge/gateway.toml" in text
    text = re.sub(r"(?m)^ExecStart=\S+", f"ExecStart={exec_start}", text)
    out = tmp_path / "cityedge.service"
    out.write_text(text)
    return out


def verify(path: Path) -> subprocess.CompletedProcess[str]:
    # verify exits 0 even on unknown keys or unparsable values (it only warns): the test
    # demands silence as well as success.
    return subprocess.run(
        [ANALYZE, "verify", "--man=no", "--generators=no", str(path)],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=path.parent,
    )


def test_verify_clean(tmp_path: Path) -> None:
    res = verify(unit_copy(tmp_path, sys.executable))
    assert res.returncode == 0, res.stderr
    assert res.stderr.strip() == "", res.stderr
    assert res.stdout.strip() == "", res.stdout


def test_verify_catches_a_typo(tmp_path: Path) -> None:
    # guards the guard: a misspelt hardening option must not pass silently
    unit = unit_copy(tmp_path, sys.executable)
    unit.write_text(unit.read_text().replace("ProtectHome=yes", "ProtectHoem=yes"))
    res = verify(unit)
    assert "ProtectHoem" in res.stderr


def test_security_exposure_within_budget(tmp_path: Path) -> None:
    unit = unit_copy(tmp_path, sys.executable)
    res = subprocess.run(
        [ANALYZE, "security", "--offline=true", "--no-pager", str(unit)],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    m = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", res.stdout)
    assert m, res.stdout + res.stderr
    assert float(m.group(1)) <= MAX_EXPOSURE, res.stdout


@pytest.mark.parametrize(
    "line",
    [
        "Type=notify",
        "WatchdogSec=60",
        "ExecReload=/bin/kill -HUP $MAINPID",
        "Restart=on-failure",
        "RestartPreventExitStatus=78",
        "DynamicUser=yes",
        "SupplementaryGroups=dialout",
        "StateDirectory=cityedge",
        "CacheDirectory=cityedge",
        "Environment=PYTHONUNBUFFERED=1 PYTHONOPTIMIZE=2 PYTHONPYCACHEPREFIX=%C/cityedge/pycache",
        "ConfigurationDirectory=cityedge",
        "LoadCredential=mqtt_password:/etc/cityedge/credentials/mqtt_password",
        "DevicePolicy=closed",
        "DeviceAllow=char-ttyUSB rw",
        "RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6",
        "SystemCallFilter=@system-service",
        "MemoryDenyWriteExecute=yes",
        "CapabilityBoundingSet=",
    ],
)
def test_required_directives(line: str) -> None:
    assert line in UNIT.read_text().splitlines()


def test_exit_code_contract_matches_runtime() -> None:
    from agent.runtime import EXIT_CONFIG

    assert f"RestartPreventExitStatus={EXIT_CONFIG}" in UNIT.read_text()
