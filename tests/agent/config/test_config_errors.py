"""A table of broken configurations; each must be refused naming file, field and line."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from pydantic import ValidationError

from agent.config import ConfigError, load_config
from tests.agent.conftest import GATEWAY, PROFILE

Edit = Callable[[Path], None]


def gw(old: str, new: str) -> Edit:
    def edit(d: Path) -> None:
        text = (d / "gateway.toml").read_text()
        assert old in text, old
        (d / "gateway.toml").write_text(text.replace(old, new, 1))

    return edit


def gw_append(extra: str) -> Edit:
    def edit(d: Path) -> None:
        (d / "gateway.toml").write_text((d / "gateway.toml").read_text() + extra)

    return edit


def prof(old: str, new: str, name: str = "lamp.toml") -> Edit:
    def edit(d: Path) -> None:
        p = d / "profiles" / "test" / name
        text = p.read_text() if p.exists() else PROFILE
        assert old in text, old
        p.write_text(text.replace(old, new, 1))

    return edit


def new_profile(name: str, text: str) -> Edit:
    def edit(d: Path) -> None:
        (d / "profiles" / "test" / name).write_text(text)

    return edit


def dropin(name: str, text: str) -> Edit:
    def edit(d: Path) -> None:
        (d / "conf.d").mkdir(exist_ok=True)
        (d / "conf.d" / name).write_text(text)

    return edit


# (case id, edit, file suffix, field path, message fragment, line expected)
CASES: list[tuple[str, Edit, str, str, str, bool]] = [
    (
        "stale-readings-not-a-bool",
        gw(
            'endpoint = "tcp://127.0.0.1:5020"',
            'endpoint = "tcp://127.0.0.1:5020"\nstale_readings = "sometimes"',
        ),
        "gateway.toml",
        "buses[bus1].stale_readings",
        "valid boolean",
        True,
    ),
    (
        "wrong-type-interval",
        gw("interval = 5", 'interval = "fast"'),
        "gateway.toml",
        "devices[lamp1].interval",
        "valid number",
        True,
    ),
    (
        "unknown-key-device",
        gw("unit_id = 1\n", "unit_id = 1\ncolour = 1\n"),
        "gateway.toml",
        "devices[lamp1].colour",
        "unknown key",
        True,
    ),
    (
        "unknown-key-gateway",
        gw('id = "gw-test"', 'id = "gw-test"\nnmae = "x"'),
        "gateway.toml",
        "gateway.nmae",
        "unknown key",
        True,
    ),
    (
        "missing-gateway-id",
        gw('id = "gw-test"\n', ""),
        "gateway.toml",
        "gateway.id",
        "Field required",
        False,
    ),
    (
        "missing-profile-file",
        gw('profile = "test/lamp"\nunit_id = 1', 'profile = "test/nope"\nunit_id = 1'),
        "gateway.toml",
        "devices[lamp1].profile",
        "not found",
        True,
    ),
    (
        "extends-unknown",
        prof('kind = "streetlight"', 'extends = "test/ghost"\nkind = "x"'),
        "lamp.toml",
        "extends",
        "unknown profile 'test/ghost'",
        True,
    ),
    (
        "extends-cycle",
        new_profile("lamp.toml", 'extends = "test/lamp"\nkind = "x"\n'),
        "lamp.toml",
        "extends",
        "circular",
        True,
    ),
    (
        "duplicate-device-id",
        gw('id = "lamp2"', 'id = "lamp1"'),
        "gateway.toml",
        "devices[1].id",
        "duplicate id 'lamp1'",
        True,
    ),
    (
        "duplicate-bus-id",
        gw('id = "rs485"', 'id = "bus1"'),
        "gateway.toml",
        "buses[1].id",
        "duplicate id",
        True,
    ),
    (
        "unit-id-too-big",
        gw("unit_id = 1\n", "unit_id = 256\n"),
        "gateway.toml",
        "devices[lamp1].unit_id",
        "less than or equal to 255",
        True,
    ),
    (
        "unit-id-rtu-range",
        gw("unit_id = 2", "unit_id = 0"),
        "gateway.toml",
        "devices[lamp2].unit_id",
        "out of range 1..247",
        True,
    ),
    (
        "address-not-mbus",
        gw("unit_id = 1\n", 'unit_id = 1\naddress = "12345678"\n'),
        "gateway.toml",
        "devices[lamp1].address",
        "only used by M-Bus devices",
        True,
    ),
    (
        "unit-id-shared",
        gw(
            'bus = "rs485"\nprofile = "test/lamp"\nunit_id = 2',
            'bus = "bus1"\nprofile = "test/lamp"\nunit_id = 1',
        ),
        "gateway.toml",
        "devices[lamp2].unit_id",
        "already used",
        True,
    ),
    (
        "overlapping-points",
        prof('table = "input"\naddress = 2', 'table = "holding"\naddress = 0'),
        "lamp.toml",
        "points[power].address",
        "overlaps 'dim'",
        True,
    ),
    (
        "point-in-undefined",
        prof("address = 0\n", "address = 21\n"),
        "lamp.toml",
        "points[dim].address",
        "undefined range",
        True,
    ),
    (
        "bad-endpoint-scheme",
        gw("tcp://127.0.0.1:5020", "udp://127.0.0.1:5020"),
        "gateway.toml",
        "buses[bus1].endpoint",
        "scheme must be one of",
        True,
    ),
    (
        "bad-endpoint-baud",
        gw("baudrate=9600", "baudrate=9601"),
        "gateway.toml",
        "buses[rs485].endpoint",
        "not a standard rate",
        True,
    ),
    (
        "bad-endpoint-serial-host",
        gw("rtu:///dev/ttyUSB0", "rtu://dev/ttyUSB0"),
        "gateway.toml",
        "buses[rs485].endpoint",
        "three slashes",
        True,
    ),
    (
        "bad-endpoint-port",
        gw("tcp://127.0.0.1:5020", "tcp://127.0.0.1:99999"),
        "gateway.toml",
        "buses[bus1].endpoint",
        "port",
        True,
    ),
    (
        "negative-interval",
        gw("interval = 5", "interval = -5"),
        "gateway.toml",
        "devices[lamp1].interval",
        "greater than 0",
        True,
    ),
    (
        "unknown-bus",
        gw('bus = "rs485"', 'bus = "rs422"'),
        "gateway.toml",
        "devices[lamp2].bus",
        "unknown bus 'rs422'",
        True,
    ),
    (
        "point-bad-type",
        prof('type = "float32"', 'type = "float16"'),
        "lamp.toml",
        "points[power].type",
        "Input should be",
        True,
    ),
    (
        "point-unknown-key",
        prof('unit = "W"', 'unit = "W"\nscael = 2'),
        "lamp.toml",
        "points[power].scael",
        "unknown key",
        True,
    ),
    (
        "point-min-gt-max",
        prof("min = 0\n", "min = 200\n"),
        "lamp.toml",
        "points[dim]",
        "greater than max",
        True,
    ),
    (
        "writable-input-table",
        prof('table = "input"', 'table = "input"\nwritable = true'),
        "lamp.toml",
        "points[power].writable",
        "read-only",
        True,
    ),
    (
        "coil-non-bool",
        prof('table = "input"', 'table = "coil"'),
        "lamp.toml",
        "points[power]",
        "must have type 'bool'",
        True,
    ),
    ("toml-syntax", gw("interval = 5", "interval = = 5"), "gateway.toml", "", "TOML syntax", True),
    (
        "dropin-error",
        dropin(
            "10-extra.toml",
            '[[devices]]\nid = "x"\nbus = "bus1"\n'
            'profile = "test/lamp"\nunit_id = 5\ninterval = 0\n',
        ),
        "10-extra.toml",
        "devices[x].interval",
        "greater than 0",
        True,
    ),
    (
        "mqtt-insecure-remote",
        gw_append(
            '\n[[outputs]]\ntype = "mqtt"\nid = "m"\n'
            'brokers = [{ url = "mqtt://broker.city.example:1883" }]\n'
        ),
        "gateway.toml",
        "outputs[m].brokers[0].url",
        "non-loopback",
        True,
    ),
    (
        "missing-secret",
        gw_append(
            '\n[[outputs]]\ntype = "mqtt"\nid = "m"\n'
            'brokers = [{ url = "mqtt://127.0.0.1:1883" }]\n'
            'password_secret = "mqtt_pw"\n'
        ),
        "gateway.toml",
        "outputs[m].password_secret",
        "not found",
        True,
    ),
    (
        "filter-unknown-point",
        gw("interval = 5\n", "interval = 5\nfilters = { nope = [] }\n"),
        "gateway.toml",
        "devices[lamp1].filters.nope",
        "no point",
        True,
    ),
    (
        "filter-swd-not-last",
        prof(
            'unit_code = "WTT"',
            'unit_code = "WTT"\nfilters = [{ type = "swd", deviation = 1 }, '
            '{ type = "smooth", alpha = 0.5 }]',
        ),
        "lamp.toml",
        "points[power]",
        "swd must be the last",
        True,
    ),
    (
        "filter-bad-spec",
        prof('unit_code = "WTT"', 'unit_code = "WTT"\nfilters = [{ type = "smooth", alpha = 2 }]'),
        "lamp.toml",
        "points[power].filters[0]",
        "less than or equal to 1",
        True,
    ),
    (  # issue #17: a Sparkplug payload cannot carry a signature
        "sparkplug-signature-policy",
        gw_append('\n[commands]\nmax_age = 60\n\n[commands.policy]\nsparkplug = "signature"\n'),
        "gateway.toml",
        "commands.policy.sparkplug",
        "no field for a signature",
        True,
    ),
    (
        "signature-policy-without-key",
        gw_append('\n[commands.policy]\nnative = "signature"\n'),
        "gateway.toml",
        "commands.hmac_secret",
        "native and config channel(s) require signatures",
        False,
    ),
    (
        "require-signature-contradicts-broker",
        gw_append(
            '\n[commands]\nrequire_signature = true\nhmac_secret = "k"\n'
            '[commands.policy]\nnative = "broker"\n'
        ),
        "gateway.toml",
        "commands.policy.native",
        "contradicts require_signature",
        False,
    ),
]


@pytest.mark.parametrize(
    ("edit", "file", "path", "msg", "has_line"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_broken_config_is_refused_with_location(
    cfgdir: Path, edit: Edit, file: str, path: str, msg: str, has_line: bool
) -> None:
    edit(cfgdir)
    with pytest.raises(ConfigError) as info:
        load_config(cfgdir / "gateway.toml")
    issues = info.value.issues
    text = "\n".join(str(i) for i in issues)
    match = [i for i in issues if i.file.endswith(file) and path in i.path and msg in i.message]
    assert match, f"no issue with file *{file}, path {path!r}, message {msg!r} in:\n{text}"
    if has_line:
        assert match[0].line is not None and match[0].line > 0, text


def test_table_has_at_least_twenty_cases() -> None:
    assert len(CASES) >= 20


def test_all_errors_reported_at_once(cfgdir: Path) -> None:
    gw("interval = 5", "interval = -1")(cfgdir)
    gw("unit_id = 1\n", "unit_id = 999\n")(cfgdir)
    gw('id = "rs485"', 'id = "rs 485"')(cfgdir)
    with pytest.raises(ConfigError) as info:
        load_config(cfgdir / "gateway.toml")
    paths = {i.path for i in info.value.issues}
    assert {"devices[lamp1].interval", "devices[lamp1].unit_id", "buses[1].id"} <= paths


def test_valid_config_loads_frozen(cfgdir: Path) -> None:
    loaded = load_config(cfgdir / "gateway.toml")
    cfg = loaded.config
    assert cfg.gateway.id == "gw-test"
    assert [d.id for d in cfg.devices] == ["lamp1", "lamp2"]
    # offline devices cost the uplink their transitions only, unless a bus asks for more
    assert [b.stale_readings for b in cfg.buses] == [False, False]
    assert loaded.profiles["test/lamp"].point("power").registers == 2
    with pytest.raises(ValidationError):
        cfg.gateway.id = "x"  # type: ignore[misc]


def test_env_override_and_credentials(cfgdir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    creds = cfgdir / "creds"
    creds.mkdir()
    (creds / "mqtt_pw").write_text("s3cret\n")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(creds))
    monkeypatch.setenv("CITYEDGE_GATEWAY__LOG_LEVEL", "debug")
    gw_append(
        '\n[[outputs]]\ntype = "mqtt"\nid = "m"\n'
        'brokers = [{ url = "mqtt://127.0.0.1:1883" }]\npassword_secret = "mqtt_pw"\n'
    )(cfgdir)
    loaded = load_config(cfgdir / "gateway.toml")
    assert loaded.config.gateway.log_level == "debug"
    assert loaded.config.secrets["mqtt_pw"].get_secret_value() == "s3cret"
    assert "s3cret" not in repr(loaded.config)


def test_dropin_appends_devices(cfgdir: Path) -> None:
    dropin(
        "20-more.toml",
        '[[devices]]\nid = "lamp3"\nbus = "bus1"\nprofile = "test/lamp"\nunit_id = 3\n',
    )(cfgdir)
    loaded = load_config(cfgdir / "gateway.toml")
    assert [d.id for d in loaded.config.devices] == ["lamp1", "lamp2", "lamp3"]


def test_extends_merges_points_by_name(cfgdir: Path) -> None:
    new_profile(
        "lamp_v2.toml",
        'extends = "test/lamp"\nword_order = "CDAB"\n\n[[points]]\n'
        'name = "power"\naddress = 4\n\n[[points]]\nname = "hours"\ntable = "input"\n'
        'address = 10\ntype = "uint32"\n',
    )(cfgdir)
    gw('profile = "test/lamp"\nunit_id = 1', 'profile = "test/lamp_v2"\nunit_id = 1')(cfgdir)
    loaded = load_config(cfgdir / "gateway.toml")
    p = loaded.profiles["test/lamp_v2"]
    assert p.word_order.value == "CDAB"
    assert [x.name for x in p.points] == ["dim", "power", "hours"]
    assert p.point("power").address == 4 and p.point("power").type.value == "float32"


def test_missing_file() -> None:
    with pytest.raises(ConfigError) as info:
        load_config(Path("/nonexistent/gateway.toml"))
    assert "not found" in str(info.value)


GATEWAY_TEXT = GATEWAY  # re-exported for other tests
