"""``cityedge plan``: a real config and profile library on disk, run through the CLI entry."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.cli.main import main

PROFILE = """\
kind = "streetlight"
word_order = "ABCD"

[limits]
max_registers = 10
max_gap = 2
undefined = [{ table = "holding", start = 3, end = 3 }]

[[points]]
name = "dim"
address = 0

[[points]]
name = "state"
address = 1
type = "bit"
bit = 0

[[points]]
name = "fault"
address = 1
type = "bit"
bit = 1

[[points]]
name = "mode"
address = 4
enum = { 0 = "auto", 1 = "manual" }

[[points]]
name = "power"
table = "input"
address = 0
type = "float32"

[[points]]
name = "energy"
table = "input"
address = 4
type = "uint32"
interval = 60

[[points]]
name = "relay"
table = "coil"
type = "bool"
address = 7
"""

GATEWAY = """\
[gateway]
id = "gw-test"
profile_dirs = ["profiles"]

[[buses]]
id = "rs485"
endpoint = "rtu:///dev/ttyUSB0?baudrate=9600&parity=E"

[[buses]]
id = "lan"
endpoint = "tcp://127.0.0.1:1502"

[[devices]]
id = "lamp-1"
bus = "rs485"
profile = "test/lamp"
unit_id = 1
interval = 5

[[devices]]
id = "lamp-2"
bus = "lan"
profile = "test/lamp"
unit_id = 2
"""


@pytest.fixture
def config(tmp_path: Path) -> Path:
    (tmp_path / "profiles" / "test").mkdir(parents=True)
    (tmp_path / "profiles" / "test" / "lamp.toml").write_text(PROFILE)
    cfg = tmp_path / "gateway.toml"
    cfg.write_text(GATEWAY)
    return cfg


def test_plan_prints_requests_and_wire_time(
    config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["plan", str(config), "lamp-1"]) == 0
    out = capsys.readouterr().out
    lines = [ln.split() for ln in out.splitlines()]
    assert "9600 8E1" in out and "1.146 ms per character" in out
    assert "every 5 s: 4 request(s), 6 register(s)" in out
    # the undefined register 3 splits holding 0..1 from 4; the bits share register 1
    assert ["3", "holding", "0", "2", "dim,", "state,", "fault"] in lines
    assert ["3", "holding", "4", "1", "mode"] in lines
    assert ["1", "coil", "7", "1", "relay"] in lines
    assert ["4", "input", "0", "2", "power"] in lines
    assert ["4", "input", "4", "2", "energy"] in lines
    # 4 requests: 4 x 8 + (5+4 + 5+2 + 5+1 + 5+4) + 4 x 7 chars, + 4 x 5 ms turnaround
    chars = 4 * 8 + 31 + 4 * 7
    assert f"{(chars * 11 / 9600 + 0.020) * 1000:.1f} ms wire time per cycle" in out
    assert "one request per point would be 7 requests /" in out
    assert "bus load:" in out


def test_plan_tcp_bus_says_network(config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["plan", str(config)]) == 0
    out = capsys.readouterr().out
    assert "device lamp-1" in out and "device lamp-2" in out
    assert "bus lan: tcp://127.0.0.1:1502 (network: wire time not estimated)" in out
    lan = out.split("bus lan:")[1]
    assert " ms" not in lan and "one request per point would be 7 requests" in lan


def test_unknown_device_lists_known_ids(config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["plan", str(config), "lamp-9"]) == 2
    err = capsys.readouterr().err
    assert "unknown device 'lamp-9'" in err and "lamp-1, lamp-2" in err


def test_bad_config_lists_every_issue(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = tmp_path / "gateway.toml"
    cfg.write_text(
        '[gateway]\nid = "gw"\nbogus = 1\n\n[[devices]]\nid = "x"\nbus = "nope"\n'
        'profile = "missing/profile"\n'
    )
    assert main(["plan", str(cfg)]) == 2
    err = capsys.readouterr().err
    assert "bogus" in err and "configuration refused" in err
