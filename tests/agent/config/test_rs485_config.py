"""``[buses.rs485]``: the RS-485 line options are checked like every other setting, the
broken ones refused naming file, field and line."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.config import ConfigError, load_config
from tests.agent.config.test_config_errors import Edit, gw

TCP = 'endpoint = "tcp://127.0.0.1:5020"\n'
RTU = 'endpoint = "rtu:///dev/ttyUSB0?baudrate=9600&parity=E"\n'

# (case id, edit, field path, message fragment)
CASES: list[tuple[str, Edit, str, str]] = [
    (
        "kernel-mode-on-tcp",
        gw(TCP, TCP + "rs485 = { kernel = true }\n"),
        "buses[bus1].rs485.kernel",
        "local serial port",
    ),
    (
        "echo-on-modbus-tcp",
        gw(TCP, TCP + "rs485 = { echo = true }\n"),
        "buses[bus1].rs485.echo",
        "no line echo",
    ),
    (
        "delay-without-kernel-mode",
        gw(RTU, RTU + "rs485 = { echo = true, delay_before_send_ms = 2 }\n"),
        "buses[rs485].rs485",
        "delay_before_send_ms: only with kernel = true",
    ),
    (
        "delay-above-the-kernels-limit",
        gw(RTU, RTU + "rs485 = { kernel = true, delay_after_send_ms = 150 }\n"),
        "buses[rs485].rs485.delay_after_send_ms",
        "less than or equal to 100",
    ),
    (
        "delay-in-seconds-by-mistake",
        gw(RTU, RTU + "rs485 = { kernel = true, delay_before_send_ms = 0.5 }\n"),
        "buses[rs485].rs485.delay_before_send_ms",
        "valid integer",
    ),
    (
        "rts-levels-equal",
        gw(RTU, RTU + 'rs485 = { kernel = true, rts_on_send = "low" }\n'),
        "buses[rs485].rs485",
        "must differ",
    ),
    (
        "unknown-key",
        gw(RTU, RTU + "rs485 = { echos = true }\n"),
        "buses[rs485].rs485.echos",
        "unknown key",
    ),
]


@pytest.mark.parametrize(("edit", "path", "msg"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_broken_rs485_options_are_refused(cfgdir: Path, edit: Edit, path: str, msg: str) -> None:
    edit(cfgdir)
    with pytest.raises(ConfigError) as info:
        load_config(cfgdir / "gateway.toml")
    text = "\n".join(str(i) for i in info.value.issues)
    match = [i for i in info.value.issues if i.path == path and msg in i.message]
    assert match, f"no issue at {path!r} with {msg!r} in:\n{text}"
    assert match[0].file.endswith("gateway.toml") and match[0].line, text


def test_rs485_table_loads(cfgdir: Path) -> None:
    gw(
        RTU,
        RTU + "[buses.rs485]\necho = true\nkernel = true\ndelay_before_send_ms = 1\n",
    )(cfgdir)
    cfg = load_config(cfgdir / "gateway.toml").config
    rs = cfg.buses[1].rs485
    assert rs is not None and (rs.echo, rs.kernel, rs.delay_before_send_ms) == (True, True, 1)
    assert (rs.rts_on_send, rs.rts_after_send, rs.delay_after_send_ms) == ("high", "low", 0)
    assert cfg.buses[0].rs485 is None
