"""What `cityedge check` must find before run time (issue 19), each case with the file (the
drop-in or the environment variable itself), the line, the field by its key and the device or
point by its name, and a "did you mean" where a near miss is likely."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from agent.config import ConfigError, load_config
from tests.agent.config.test_config_errors import dropin, gw, gw_append, new_profile, prof

Edit = Callable[[Path], None]
Env = dict[str, str]
TLS = '\n[[outputs]]\ntype = "mqtt"\nid = "up"\nbrokers = [{ url = "mqtts://127.0.0.1:8883" }]\n'


def profile_dir(name: str) -> Edit:
    return gw('profile_dirs = ["profiles"]', f'profile_dirs = ["profiles", "{name}"]')


# The line: the first one of the file holding this text (or its n-th occurrence); None: a variable
At = str | tuple[str, int] | None
# (case id, edit, environment, file suffix, field path, message fragment, line)
CASES: list[tuple[str, Edit, Env, str, str, str, At]] = [
    # --- strict types: TOML has numbers and booleans; a string is a mistake ---
    ("port-as-string", gw_append('\n[metrics]\nport = "9108"\n'), {},
     "gateway.toml", "metrics.port", 'a whole number, not the text "9108"', 'port = "9108"'),
    ("bool-as-string", gw('endpoint = "tcp://127.0.0.1:5020"',
                          'endpoint = "tcp://127.0.0.1:5020"\nalign_polls = "true"'), {},
     "gateway.toml", "buses[bus1].align_polls", 'true or false, not the text "true"',
     "align_polls"),
    ("bool-as-number", gw_append("\n[metrics]\nenabled = 1\n"), {},
     "gateway.toml", "metrics.enabled", "true or false, not 1", "enabled = 1"),
    ("unit-id-fraction", gw("unit_id = 1\n", "unit_id = 1.0\n"), {},
     "gateway.toml", "devices[lamp1].unit_id", "a whole number, not 1.0", "unit_id = 1.0"),
    ("profile-address-string", prof("address = 2", 'address = "2"'), {},
     "lamp.toml", "points[power].address", 'a whole number, not the text "2"', 'address = "2"'),
    # --- unit ids per transport, and where one must be given ---
    ("tcp-unit-0", gw("unit_id = 1\n", "unit_id = 0\n"), {},
     "gateway.toml", "devices[lamp1].unit_id", "out of range 1..247 or 255", "unit_id = 0"),
    ("tcp-unit-248", gw("unit_id = 1\n", "unit_id = 248\n"), {},
     "gateway.toml", "devices[lamp1].unit_id", "0 would be forwarded as a broadcast",
     "unit_id = 248"),
    ("rtu-unit-0", gw("unit_id = 2", "unit_id = 0"), {},
     "gateway.toml", "devices[lamp2].unit_id", "0 is the broadcast address", "unit_id = 0"),
    ("rtu-unit-255", gw("unit_id = 2", "unit_id = 255"), {},
     "gateway.toml", "devices[lamp2].unit_id", "out of range 1..247", "unit_id = 255"),
    ("unit-id-missing", gw("unit_id = 2\n", ""), {},
     "gateway.toml", "devices[lamp2].unit_id", "needs its address there", ("[[devices]]", 2)),
    # --- files the config names ---
    ("profile-dir-missing", profile_dir("site-profiles"), {},
     "gateway.toml", "gateway.profile_dirs[1]", "site-profiles does not exist", "profile_dirs"),
    ("tls-ca-missing", gw_append(TLS + '[outputs.tls]\nca_file = "tls/ca.pem"\n'), {},
     "gateway.toml", "outputs[up].tls.ca_file", "tls/ca.pem does not exist", "ca_file"),
    ("tls-key-without-cert", gw_append(TLS + 'tls = { key_file = "/etc/hostname" }\n'), {},
     "gateway.toml", "outputs[up].tls.key_file", "key_file without cert_file", "tls = {"),
    # --- the environment: each error at its variable ---
    ("env-unknown-section", lambda d: None, {"CITYEDGE_GATWAY__LOG_LEVEL": "debug"},
     "$CITYEDGE_GATWAY__LOG_LEVEL", "gatway.log_level",
     "did you mean CITYEDGE_GATEWAY__LOG_LEVEL?", None),
    ("env-bad-value", lambda d: None, {"CITYEDGE_METRICS__PORT": "nine"},
     "$CITYEDGE_METRICS__PORT", "metrics.port", "valid integer", None),
    ("env-unknown-key", lambda d: None, {"CITYEDGE_METRICS__PROT": "9200"},
     "$CITYEDGE_METRICS__PROT", "metrics.prot", "did you mean CITYEDGE_METRICS__PORT?", None),
    ("env-bad-json", lambda d: None, {"CITYEDGE_GATEWAY__PROFILE_DIRS": "[profiles"},
     "$CITYEDGE_GATEWAY__PROFILE_DIRS", "gateway.profile_dirs", "not valid JSON", None),
    ("env-bad-json-pair", lambda d: None, {"CITYEDGE_GATEWAY__LOCATION": "[45.07, 7.68"},
     "$CITYEDGE_GATEWAY__LOCATION", "gateway.location", "not valid JSON", None),
    ("env-bad-json-section", lambda d: None, {"CITYEDGE_METRICS": "{port: 9200}"},
     "$CITYEDGE_METRICS", "metrics", "not valid JSON", None),
    ("env-value-in-section", lambda d: None, {"CITYEDGE_METRICS": '{"port": "nine"}'},
     "$CITYEDGE_METRICS", "metrics.port", "valid integer", None),
    ("env-inside-whole-value", lambda d: None,
     {"CITYEDGE_GATEWAY__LOCATION": "[45.07, 7.68]", "CITYEDGE_GATEWAY__LOCATION__LAT": "45"},
     "$CITYEDGE_GATEWAY__LOCATION__LAT", "gateway.location.lat",
     "gateway.location is set as a whole by $CITYEDGE_GATEWAY__LOCATION", None),
    ("env-array-entry", lambda d: None, {"CITYEDGE_DEVICES__0__UNIT_ID": "3"},
     "$CITYEDGE_DEVICES__0__UNIT_ID", "devices.0.unit_id", "use a conf.d drop-in", None),
    ("env-bad-choice", lambda d: None, {"CITYEDGE_GATEWAY__LOG_LEVEL": "warn"},
     "$CITYEDGE_GATEWAY__LOG_LEVEL", "gateway.log_level", "did you mean 'warning'?", None),
    # --- drop-ins: each error at its own file and line ---
    ("dropin-table-value", dropin("20-metrics.toml", '# site port\n[metrics]\nport = "x"\n'), {},
     "20-metrics.toml", "metrics.port", "valid integer", 'port = "x"'),
    ("dropin-missing-key", dropin("30-more.toml", '[[devices]]\nid = "lamp3"\nbus = "bus1"\n'
                                  'unit_id = 3\n'), {},
     "30-more.toml", "devices[lamp3].profile", "Field required", "[[devices]]"),
    ("dropin-unknown-bus", dropin("30-more.toml", '\n[[devices]]\nid = "lamp3"\nbus = "bus2"\n'
                                  'profile = "test/lamp"\nunit_id = 3\n'), {},
     "30-more.toml", "devices[lamp3].bus", "unknown bus 'bus2' (did you mean 'bus1'?)", "bus ="),
    # --- did you mean ---
    ("unknown-key", gw("interval = 5", "intervall = 5"), {},
     "gateway.toml", "devices[lamp1].intervall", "did you mean 'interval'?", "intervall"),
    ("unknown-profile",
     gw('profile = "test/lamp"\nunit_id = 1', 'profile = "test/lmap"\nunit_id = 1'),
     {}, "gateway.toml", "devices[lamp1].profile", "did you mean 'test/lamp'?", "test/lmap"),
    ("unknown-bus", gw('bus = "rs485"', 'bus = "rs458"'), {},
     "gateway.toml", "devices[lamp2].bus", "did you mean 'rs485'?", "rs458"),
    ("unknown-point", gw("interval = 5\n", "interval = 5\nfilters = { powr = [] }\n"), {},
     "gateway.toml", "devices[lamp1].filters.powr", "no point 'powr' (did you mean 'power'?)",
     "filters"),
    ("unknown-choice", gw('id = "gw-test"', 'id = "gw-test"\nlog_level = "warn"'), {},
     "gateway.toml", "gateway.log_level", "did you mean 'warning'?", "log_level"),
    ("unknown-extends",
     prof('kind = "streetlight"', 'extends = "test/lampp"\nkind = "streetlight"'),
     {}, "lamp.toml", "extends", "did you mean 'test/lamp'?", "extends"),
    # --- profiles: the kind, and points by name (where they are written) ---
    ("kind-unknown", prof('kind = "streetlight"', 'kind = "streetlite"'), {},
     "lamp.toml", "kind", "unknown kind 'streetlite' (did you mean 'streetlight'?)", "kind ="),
    ("point-by-name", prof('type = "float32"', 'type = "float16"'), {},
     "lamp.toml", "points[power].type", "Input should be", "float16"),
    ("point-inherited", lambda d: [
        new_profile("lamp_v2.toml", 'extends = "test/lamp"\nkind = "streetlight"\n\n[[points]]\n'
                    'name = "dim"\naddress = 21\n')(d),
        gw('profile = "test/lamp"\nunit_id = 1', 'profile = "test/lamp_v2"\nunit_id = 1')(d)][0],
     {}, "lamp_v2.toml", "points[dim].address", "undefined range 20..29", "address = 21"),
    # --- missing keys and ranges, with a line ---
    ("missing-gateway-id", gw('id = "gw-test"\n', ""), {},
     "gateway.toml", "gateway.id", "Field required", "[gateway]"),
    ("port-out-of-range", gw_append("\n[metrics]\nport = 70000\n"), {},
     "gateway.toml", "metrics.port", "less than or equal to 65535", "port = 70000"),
    ("secrets-in-file", gw_append('\n[secrets]\nmqtt_pw = "x"\n'), {},
     "gateway.toml", "secrets", "secrets never go in a config file", "[secrets]"),
]  # fmt: skip


def line_of(file: str, at: At) -> int | None:
    if at is None:
        return None
    text, n = (at, 1) if isinstance(at, str) else at
    hits = [i for i, ln in enumerate(Path(file).read_text().splitlines(), 1) if text in ln]
    return hits[n - 1]


@pytest.mark.parametrize(
    ("edit", "env", "file", "path", "msg", "at"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_check_finds_it_where_it_is(
    cfgdir: Path, edit: Edit, env: Env, file: str, path: str, msg: str, at: At
) -> None:
    edit(cfgdir)
    with pytest.raises(ConfigError) as info:
        load_config(cfgdir / "gateway.toml", env=env, secrets="verify", check_files=True)
    issues = info.value.issues
    text = "\n".join(str(i) for i in issues)
    match = [i for i in issues if i.file.endswith(file) and i.path == path and msg in i.message]
    assert match, f"no issue with file *{file}, path {path!r}, message {msg!r} in:\n{text}"
    assert match[0].line == line_of(match[0].file, at), text


def test_every_case_is_refused_by_the_daemon_too(cfgdir: Path) -> None:
    """What check refuses is what `run` refuses, files aside (a missing CA is the output's
    problem at run time, logged with its path; collection goes on)."""
    gw("unit_id = 1\n", 'unit_id = "1"\n')(cfgdir)
    with pytest.raises(ConfigError) as info:
        load_config(cfgdir / "gateway.toml")
    assert [i.path for i in info.value.issues] == ["devices[lamp1].unit_id"]


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ("unit_id = 1\n", "unit_id = 255\n"),  # a Modbus TCP device itself
        ("unit_id = 1\n", "unit_id = 247\n"),
        ("unit_id = 2", "unit_id = 247"),
    ],
)
def test_unit_ids_that_are_fine(cfgdir: Path, old: str, new: str) -> None:
    gw(old, new)(cfgdir)
    load_config(cfgdir / "gateway.toml")


def test_environment_values_are_text_and_still_typed(cfgdir: Path) -> None:
    loaded = load_config(
        cfgdir / "gateway.toml",
        env={
            "CITYEDGE_METRICS__PORT": "9200",
            "CITYEDGE_METRICS__ENABLED": "false",
            "CITYEDGE_GATEWAY__PROFILE_DIRS": '["profiles"]',
            "CITYEDGE_CONFIG": "/not/a/config/override",  # not config: left alone
            "CITYEDGE_EVENT_LOOP": "asyncio",
            "cityedge_commands": '{"rate_per_minute": 12}',  # any case; a section as JSON,
            "CITYEDGE_COMMANDS__POLICY__LOCAL": "off",  # merged with a variable inside it
            "CITYEDGE_GATEWAY__LOCATION": "[45.07, 7.68]",
        },
    )
    m, c = loaded.config.metrics, loaded.config.commands
    assert (m.port, m.enabled) == (9200, False)
    assert (c.rate_per_minute, c.policy.local) == (12, "off")
    assert loaded.config.gateway.location == (45.07, 7.68)


def test_a_bad_file_value_is_reported_under_a_variable(cfgdir: Path) -> None:
    """A variable of this shell may replace the value, but the service does not have this
    shell's environment: the file's string is still a mistake."""
    gw_append('\n[metrics]\nport = "9108"\n')(cfgdir)
    with pytest.raises(ConfigError) as info:
        load_config(cfgdir / "gateway.toml", env={"CITYEDGE_METRICS__PORT": "9200"})
    [issue] = info.value.issues
    assert issue.file.endswith("gateway.toml")
    assert issue.line == line_of(issue.file, 'port = "9108"')
