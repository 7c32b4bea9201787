"""Secrets as the installed unit delivers them, read by the CLI without systemd (issue 19).

A staged root holds the shipped unit (systemd/cityedge.service) and the config at
<root>/etc/cityedge/gateway.toml, as install.sh --root lays them out; the unit's
LoadCredential= paths are taken under that root.
"""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from agent.config import ConfigError, load_config
from agent.config.credentials import find, service_lines
from tests.agent.conftest import GATEWAY, PROFILE

ROOT = Path(__file__).resolve().parents[3]
UNIT = ROOT / "systemd" / "cityedge.service"
OUTPUT = """
[[outputs]]
type = "mqtt"
id = "up"
brokers = [{ url = "mqtt://127.0.0.1:1883" }]
password_secret = "mqtt_password"
"""


@pytest.fixture
def root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)
    etc = tmp_path / "etc" / "cityedge"
    (etc / "profiles" / "test").mkdir(parents=True)
    (etc / "profiles" / "test" / "lamp.toml").write_text(PROFILE)
    (etc / "gateway.toml").write_text(GATEWAY + OUTPUT)
    (etc / "credentials").mkdir(mode=0o700)
    units = tmp_path / "etc" / "systemd" / "system"
    units.mkdir(parents=True)
    (units / "cityedge.service").write_text(UNIT.read_text())
    return tmp_path


def secret(root: Path, name: str, text: str, mode: int = 0o600) -> Path:
    f = root / "etc" / "cityedge" / "credentials" / name
    f.write_text(text)
    f.chmod(mode)
    return f


def dropin(root: Path, text: str, name: str = "override.conf") -> None:
    d = root / "etc" / "systemd" / "system" / "cityedge.service.d"
    d.mkdir(exist_ok=True)
    (d / name).write_text(f"[Service]\n{text}\n")


def refused(root: Path, **kw: object) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_config(root / "etc" / "cityedge" / "gateway.toml", env={}, **kw)  # type: ignore[arg-type]
    return [str(i) for i in info.value.issues]


def test_the_cli_reads_what_the_unit_loads(root: Path) -> None:
    secret(root, "mqtt_password", "s3cret\n")
    loaded = load_config(root / "etc/cityedge/gateway.toml", env={})
    assert loaded.config.secrets["mqtt_password"].get_secret_value() == "s3cret"
    where = loaded.secret_sources["mqtt_password"]
    assert where.startswith(str(root / "etc/cityedge/credentials/mqtt_password"))
    assert "LoadCredential= in" in where


def test_credentials_directory_wins_when_systemd_sets_it(root: Path, tmp_path: Path) -> None:
    secret(root, "mqtt_password", "from-etc")
    cd = tmp_path / "run-creds"
    cd.mkdir()
    (cd / "mqtt_password").write_text("from-systemd")
    env = {"CREDENTIALS_DIRECTORY": str(cd)}
    loaded = load_config(root / "etc/cityedge/gateway.toml", env=env)
    assert loaded.config.secrets["mqtt_password"].get_secret_value() == "from-systemd"


def test_drop_ins_add_and_reset(root: Path) -> None:
    secret(root, "mqtt_password", "pw")
    secret(root, "cmd_key", "k")
    gw = root / "etc/cityedge/gateway.toml"
    gw.write_text(gw.read_text() + '\n[commands]\nhmac_secret = "cmd_key"\n')
    # the shipped unit alone does not load cmd_key: the file beside it is not enough
    [issue] = refused(root)
    assert "commands.hmac_secret: secret 'cmd_key' not found" in issue
    assert "credentials/cmd_key exists, but the unit" in issue
    assert "LoadCredential=cmd_key:/etc/cityedge/credentials/cmd_key" in issue
    assert "sudo systemctl edit cityedge" in issue
    dropin(root, "LoadCredential=cmd_key:/etc/cityedge/credentials/cmd_key")
    loaded = load_config(gw, env={})
    assert loaded.config.secrets["cmd_key"].get_secret_value() == "k"
    # an empty LoadCredential= resets the list: only what follows it counts
    dropin(
        root, "LoadCredential=\nLoadCredential=cmd_key:%E/cityedge/credentials/cmd_key", "z.conf"
    )
    assert any("secret 'mqtt_password' not found" in i for i in refused(root))


def test_directory_and_credstore_sources(root: Path) -> None:
    tls = root / "etc" / "cityedge" / "tls"
    tls.mkdir()
    (tls / "pass").write_text("from-dir")
    store = root / "etc" / "credstore"
    store.mkdir()
    (store / "mqtt_password").write_text("from-store")
    dropin(
        root, "LoadCredential=\nLoadCredential=tls:/etc/cityedge/tls\nLoadCredential=mqtt_password"
    )
    creds = find(root / "etc/cityedge/gateway.toml", {})
    values, notes = creds.read()
    assert values == {"tls_pass": "from-dir", "mqtt_password": "from-store"} and not notes


def test_unit_parsing_follows_continuations_and_sections(tmp_path: Path) -> None:
    f = tmp_path / "x.service"
    f.write_text("[Unit]\nLoadCredential=no:/x\n[Service]\n# LoadCredential=c:/c\nA=1 \\\n 2\n")
    assert service_lines([f]) == [(f, "A", "1 2")]


def test_optional_never_needs_the_secret(root: Path) -> None:
    """plan, status, read...: a missing or unreadable secret is no reason to refuse."""
    loaded = load_config(root / "etc/cityedge/gateway.toml", env={}, secrets="optional")
    assert "mqtt_password" not in loaded.config.secrets


def test_verify_checks_the_file_without_reading_it_into_the_config(root: Path) -> None:
    gw = root / "etc/cityedge/gateway.toml"
    [missing] = refused(root, secrets="verify")
    assert f"{gw}:" in missing and "outputs[up].password_secret" in missing
    assert "mqtt_password does not exist" in missing
    f = secret(root, "mqtt_password", "")  # the placeholder install.sh leaves
    [empty] = refused(root, secrets="verify")
    assert "is empty" in empty and str(f) in empty
    secret(root, "mqtt_password", "pw\n", 0o640)
    [shared] = refused(root, secrets="verify")
    assert "other than its owner (mode -rw-r-----): chmod 600" in shared
    secret(root, "mqtt_password", "pw\n")
    loaded = load_config(gw, env={}, secrets="verify")
    assert loaded.config.secrets == {}  # verified, not read
    assert not loaded.warnings


def test_the_daemon_names_the_unreadable_source(root: Path) -> None:
    f = secret(root, "mqtt_password", "")
    f.write_bytes(b"\xff\xfe not text")  # unreadable even for root
    [issue] = refused(root)
    assert "outputs[up].password_secret: secret 'mqtt_password' not found: cannot read" in issue
    assert str(f) in issue


def test_a_set_credential_is_a_warning(root: Path) -> None:
    dropin(root, "LoadCredential=\nSetCredential=mqtt_password:pw")
    loaded = load_config(root / "etc/cityedge/gateway.toml", env={}, secrets="verify")
    [w] = [str(x) for x in loaded.warnings]
    assert "written in the unit" in w and "every user can read" in w
    assert stat.S_IMODE((root / "etc/cityedge/credentials").stat().st_mode) == 0o700
