"""The commissioning page's units: `systemd-analyze verify` clean for the socket and the
service together, the service's `security` exposure within the agent's budget, and the one
thing the page needs from the agent's unit: the same dynamic user and state directory."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from tests.deploy.test_systemd_unit import ANALYZE, MAX_EXPOSURE, ROOT, verify

SYSTEMD = ROOT / "systemd"


def staged(tmp_path: Path) -> Path:
    """Both units, ExecStart pointed at this interpreter (the /opt venv is not here)."""
    for name in ("cityedge-ui.socket", "cityedge-ui.service"):
        text = (SYSTEMD / name).read_text()
        text = re.sub(r"(?m)^ExecStart=\S+", f"ExecStart={sys.executable} -m agent", text)
        (tmp_path / name).write_text(text)
    return tmp_path / "cityedge-ui.service"


def test_socket_and_service_verify_clean(tmp_path: Path) -> None:
    service = staged(tmp_path)
    for unit in (service, tmp_path / "cityedge-ui.socket"):
        res = verify(unit)
        assert res.returncode == 0, res.stderr
        assert res.stderr.strip() == "" and res.stdout.strip() == "", res.stderr + res.stdout


def test_service_exposure_within_budget(tmp_path: Path) -> None:
    res = subprocess.run(
        [ANALYZE, "security", "--offline=true", "--no-pager", str(staged(tmp_path))],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    m = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", res.stdout)
    assert m, res.stdout + res.stderr
    assert float(m.group(1)) <= MAX_EXPOSURE, res.stdout


def test_page_runs_as_the_agents_user_on_its_control_socket() -> None:
    def directives(name: str) -> set[str]:
        return {ln.strip() for ln in (SYSTEMD / name).read_text().splitlines()}

    agent, page = directives("cityedge.service"), directives("cityedge-ui.service")
    shared = {"DynamicUser=yes", "User=cityedge", "Group=cityedge", "StateDirectory=cityedge"}
    assert shared <= agent and shared <= page
    exec_start = next(d for d in page if d.startswith("ExecStart="))
    assert "--socket /var/lib/cityedge/control.sock" in exec_start
    assert "ListenStream=127.0.0.1:8088" in directives("cityedge-ui.socket")  # loopback
