"""install/install.sh and uninstall.sh into a temporary root (never the real system).

The wheelhouse path (the offline install) is exercised with a wheel of this source tree built
without a compiler (CC=false: the extension build fails softly, as on a gateway without
build-essential) and --no-deps, so the test needs no network and stays fast.
"""

from __future__ import annotations

import os
import re
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
INSTALL = ROOT / "install" / "install.sh"
UNINSTALL = ROOT / "install" / "uninstall.sh"


def run(*args: str | Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(a) for a in args], check=False, capture_output=True, text=True, timeout=120, env=env
    )


@pytest.fixture(scope="module")
def wheelhouse(tmp_path_factory: pytest.TempPathFactory) -> Path:
    src = tmp_path_factory.mktemp("src")
    for name in ("agent", "drivers", "ext"):
        shutil.copytree(
            ROOT / name, src / name, ignore=shutil.ignore_patterns("*.so", "*.c", "__pycache__")
        )
    for name in ("pyproject.toml", "setup.py", "README.md"):
        shutil.copy(ROOT / name, src / name)
    wh = tmp_path_factory.mktemp("wheelhouse")
    env = {k: v for k, v in os.environ.items() if k != "CITYEDGE_REQUIRE_EXT"}
    env["CC"] = "false"  # no compiler: the Python twin, like a gateway without build-essential
    res = run(
        sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
        "-w", wh, src, env=env,
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    assert list(wh.glob("cityedge-*.whl"))
    return wh


def mode(p: Path) -> int:
    return stat.S_IMODE(p.stat().st_mode)


def test_install_twice_then_uninstall(tmp_path: Path, wheelhouse: Path) -> None:
    root = tmp_path / "root"
    py = shutil.which("python3") or sys.executable
    args = (INSTALL, "--root", root, "--wheelhouse", wheelhouse, "--no-deps", "--python", py)
    first = run(*args)
    assert first.returncode == 0, first.stdout + first.stderr
    assert "systemd not touched" in first.stdout
    assert "Cython module was not built" in first.stderr  # the fallback says so
    # --no-deps leaves the venv without its dependencies: the completion step says it skipped
    # (tests/agent/cli/test_completion.py runs the generated script in bash)
    assert "no bash completion installed" in first.stderr

    venv = root / "opt/cityedge/venv"
    unit = root / "etc/systemd/system/cityedge.service"
    etc = root / "etc/cityedge"
    assert os.access(venv / "bin/cityedge", os.X_OK)
    assert os.readlink(root / "usr/local/bin/cityedge") == "/opt/cityedge/venv/bin/cityedge"
    assert "ExecStart=/opt/cityedge/venv/bin/cityedge run /etc/cityedge/gateway.toml" in (
        unit.read_text()
    )
    assert (etc / "gateway.toml").read_text() == (ROOT / "examples/gateway.toml").read_text()
    assert mode(etc / "credentials") == 0o700
    assert mode(etc / "credentials/mqtt_password") == 0o600
    assert (etc / "conf.d").is_dir() and (etc / "profiles").is_dir()
    ok = run(venv / "bin/python", "-I", "-c", "import agent, ext; print(ext.IMPLEMENTATION)")
    assert ok.stdout.strip() == "python", ok.stderr

    # the installed unit, with its own (staged) entry point, verifies clean
    staged = tmp_path / "cityedge.service"
    staged.write_text(
        re.sub(r"(?m)^ExecStart=\S+", f"ExecStart={venv}/bin/cityedge", unit.read_text())
    )
    ver = run("/usr/bin/systemd-analyze", "verify", "--man=no", "--generators=no", staged)
    assert ver.returncode == 0 and ver.stderr.strip() == "", ver.stderr

    # second run: upgrade in place, the technician's config and password survive, and the
    # service's -OO bytecode compiled from the old package is dropped
    (etc / "gateway.toml").write_text("# site config\n")
    (etc / "credentials/mqtt_password").write_text("s3cret\n")
    pyc = root / "var/cache/private/cityedge/pycache/x.opt-2.pyc"
    pyc.parent.mkdir(parents=True)
    pyc.write_bytes(b"old")
    second = run(*args)
    assert not pyc.exists()
    assert second.returncode == 0, second.stdout + second.stderr
    assert "reusing virtualenv" in second.stdout
    assert "keeping existing /etc/cityedge/gateway.toml" in second.stdout
    assert (etc / "gateway.toml").read_text() == "# site config\n"
    assert (etc / "credentials/mqtt_password").read_text() == "s3cret\n"

    # uninstall keeps config and state; --purge removes them
    state = root / "var/lib/private/cityedge"
    state.mkdir(parents=True)
    (state / "outbox.db").write_bytes(b"x")
    pyc.parent.mkdir(parents=True)
    pyc.write_bytes(b"new")
    completion = root / "usr/share/bash-completion/completions/cityedge"
    completion.parent.mkdir(parents=True, exist_ok=True)
    completion.write_text("complete -F _shtab_cityedge cityedge\n")
    un = run(UNINSTALL, "--root", root)
    assert not completion.exists()
    assert un.returncode == 0, un.stderr
    assert not unit.exists() and not venv.exists()
    assert not (root / "var/cache/private/cityedge").exists()  # a cache of the removed venv
    assert not (root / "usr/local/bin/cityedge").is_symlink()
    assert (etc / "gateway.toml").exists() and (state / "outbox.db").exists()
    purge = run(UNINSTALL, "--root", root, "--purge")
    assert purge.returncode == 0, purge.stderr
    assert not etc.exists() and not state.exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--prefix", "opt/x"], "--prefix must be absolute"),
        (["--bogus"], "unknown option '--bogus'"),
        (["--wheelhouse", "/nonexistent"], "is not a directory"),
    ],
)
def test_install_refuses_bad_arguments(tmp_path: Path, args: list[str], message: str) -> None:
    res = run(INSTALL, "--root", tmp_path / "r", *args)
    assert res.returncode != 0
    assert message in res.stderr
    assert not (tmp_path / "r/opt").exists()


def test_empty_wheelhouse_names_the_fix(tmp_path: Path) -> None:
    res = run(INSTALL, "--root", tmp_path / "r", "--wheelhouse", tmp_path)
    assert res.returncode != 0
    assert "pip wheel . -w" in res.stderr


def test_installed_gateway_checks_as_the_documented_steps_do(
    tmp_path: Path,
    wheelhouse: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """docs/DEPLOY.md: install, give the broker's CA and the password, `cityedge check`. The
    CLI reads the password where the installed unit loads it from (LoadCredential=), with no
    $CREDENTIALS_DIRECTORY; `plan` never needs it. The staged root stands for /."""
    from agent.cli.main import main

    root = tmp_path / "root"
    py = shutil.which("python3") or sys.executable
    res = run(INSTALL, "--root", root, "--wheelhouse", wheelhouse, "--no-deps", "--python", py)
    assert res.returncode == 0, res.stdout + res.stderr
    sysusers = root / "usr/lib/sysusers.d/cityedge.conf"
    assert sysusers.read_text() == (ROOT / "systemd/cityedge.sysusers").read_text()
    assert "created at first boot" in res.stdout
    etc = root / "etc/cityedge"
    gw = etc / "gateway.toml"
    for k in os.environ:  # a technician's shell: no systemd credentials, no overrides
        if k == "CREDENTIALS_DIRECTORY" or k.startswith("CITYEDGE_"):
            monkeypatch.delenv(k)

    def cityedge(*args: str | Path) -> tuple[int, str, str]:
        rc = main([str(a) for a in args])
        out = capsys.readouterr()
        return rc, out.out, out.err

    (etc / "tls").mkdir()
    (etc / "tls/ca.pem").write_text("-----BEGIN CERTIFICATE-----\n")  # the broker's CA
    lines = gw.read_text().splitlines()
    line = next(i for i, t in enumerate(lines, 1) if t.startswith("password_secret"))
    placeholder = etc / "credentials/mqtt_password"
    rc, out, err = cityedge("check", gw)
    assert rc == 78, out + err
    assert (
        f"{gw}:{line}: outputs[city-platform].password_secret: secret 'mqtt_password': "
        f"{placeholder} is empty (LoadCredential= in {root}/etc/systemd/system/cityedge.service)"
    ) in err
    rc, out, err = cityedge("plan", gw)
    assert rc == 0 and "bus rs485-lamps" in out, err

    # echo -n 'the-broker-password' | sudo tee /etc/cityedge/credentials/mqtt_password
    placeholder.write_text("the-broker-password")
    rc, out, err = cityedge("check", gw)
    assert rc == 0, out + err
    assert f"  mqtt_password: {placeholder} (LoadCredential= in " in out
    assert "warning" not in out, out

    # a password readable by others is refused with the fix
    placeholder.chmod(0o644)
    rc, out, err = cityedge("check", gw)
    assert rc == 78 and f"chmod 600 {placeholder}" in err
