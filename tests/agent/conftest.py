from __future__ import annotations

from pathlib import Path

import pytest

PROFILE = """\
kind = "streetlight"
manufacturer = "Test"
word_order = "ABCD"

[limits]
max_registers = 100
max_gap = 8
undefined = [{ table = "holding", start = 20, end = 29 }]

[[points]]
name = "dim"
metric = "dimmingLevel"
address = 0
writable = true
min = 0
max = 100
unit = "%"
unit_code = "P1"

[[points]]
name = "power"
table = "input"
address = 2
type = "float32"
unit = "W"
unit_code = "WTT"
"""

GATEWAY = """\
[gateway]
id = "gw-test"
state_dir = "state"
profile_dirs = ["profiles"]

[[buses]]
id = "bus1"
endpoint = "tcp://127.0.0.1:5020"

[[buses]]
id = "rs485"
endpoint = "rtu:///dev/ttyUSB0?baudrate=9600&parity=E"

[[devices]]
id = "lamp1"
bus = "bus1"
profile = "test/lamp"
unit_id = 1
interval = 5

[[devices]]
id = "lamp2"
bus = "rs485"
profile = "test/lamp"
unit_id = 2

[[outputs]]
type = "jsonl"
id = "out"
path = "-"
"""


@pytest.fixture
def cfgdir(tmp_path: Path) -> Path:
    (tmp_path / "profiles" / "test").mkdir(parents=True)
    (tmp_path / "profiles" / "test" / "lamp.toml").write_text(PROFILE)
    (tmp_path / "gateway.toml").write_text(GATEWAY)
    return tmp_path
