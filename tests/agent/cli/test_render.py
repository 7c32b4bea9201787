"""Human output helpers, help texts without markup, and rich kept out of the daemon."""

from __future__ import annotations

import io
import subprocess
import sys
from typing import Any

from rich.console import Console

from agent.cli.common import describe
from agent.cli.main import build_parser
from agent.cli.render import (
    age_text,
    bytes_text,
    count_text,
    unit_label,
    value_text,
    values_table,
    with_unit,
)
from agent.cli.views import print_outbox, print_status


def test_units_ages_and_sizes_read_as_people_write_them() -> None:
    assert [unit_label(u) for u in ("Cel", "m3/h", "kW.h", "1", None, "W")] == [
        "°C", "m³/h", "kWh", "", "", "W",
    ]  # fmt: skip
    assert with_unit(28.4, "Cel") == "28.4 °C" and with_unit(12.5, "%") == "12.5%"
    assert with_unit(0.4, "1") == "0.4" and with_unit(None, "W") == "—"
    assert value_text(("daytime", "manual")) == "daytime, manual" and value_text(()) == "—"
    assert value_text(True) == "true" and value_text(0.1 + 0.2) == "0.30000000000000004"
    assert [age_text(s) for s in (0.19277501106262207, 42, 185, 7300, 200000, None)] == [
        "0.2 s", "42 s", "3 min 05 s", "2 h 01 min", "2 d 7 h", "—",
    ]  # fmt: skip
    assert [bytes_text(n) for n in (512, 1536, 64 << 20, None)] == [
        "512 B", "1.5 KiB", "64.0 MiB", "—",
    ]  # fmt: skip
    assert count_text(1234567) == "1 234 567"


def render(fn, *args) -> str:
    buf = io.StringIO()
    fn(Console(file=buf, width=120, color_system=None), *args)
    return buf.getvalue()


def test_status_shows_states_values_and_outbox_in_human_units() -> None:
    reply = {
        "gateway": "hn-0042",
        "uptimeS": 7300.2,
        "readingsRead": 120000,
        "readingsDelivered": 119984,
        "devices": {
            "lamp-1": {
                "bus": "rs485-1", "state": "online", "since": "2026-11-23T16:00:00.000Z",
                "polls": 1460, "timeouts": 2, "lastSuccessAgeS": 0.8, "excluded": [],
                "values": [
                    {"point": "voltage", "value": 231.4, "unit": "V", "quality": "good"},
                    {"point": "dim_level", "value": 0.4, "unit": "1", "quality": "good"},
                ],
            },
            "meter-11": {
                "bus": "rs485-1", "state": "offline", "reason": "timeout",
                "detail": "no answer after 2 tries", "since": None, "polls": 3, "timeouts": 9,
                "lastSuccessAgeS": None, "values": [],
            },
        },
        "sinks": [
            {
                "name": "uplink", "type": "mqtt", "encoding": "native", "connected": False,
                "broker": "mqtt://10.0.0.5:1883",
                "outbox": {
                    "depth": 16, "oldestAgeS": 0.19277501106262207, "drops": 0,
                    "bytes": 1 << 20, "budgetBytes": 64 << 20, "inMemory": 0, "fault": None,
                    "alarms": [],
                },
            }
        ],
        "lastReload": None,
        "commands": {"ok": 3, "rejected": 1, "failed": 0, "timeout": 0},
    }  # fmt: skip
    out = render(print_status, reply)
    assert "{" not in out and "MqttSink" not in out and "0.1927" not in out
    assert "gateway hn-0042  up 2 h 01 min, 120 000 readings read" in out
    assert "devices: 1 online, 1 offline" in out
    lamp = next(line for line in out.splitlines() if line.startswith("lamp-1 "))
    assert lamp.split()[:3] == ["lamp-1", "rs485-1", "online"] and "0.8 s" in lamp
    meter = next(line for line in out.splitlines() if line.startswith("meter-11 "))
    assert "offline (timeout: no answer after 2 tries)" in meter
    assert "voltage 231.4 V" in out and "dim_level 0.4" in out
    link = next(line for line in out.splitlines() if line.startswith("uplink "))
    assert "mqtt (native)" in link and "DISCONNECTED mqtt://10.0.0.5:1883" in link
    assert "1.0 MiB of 64.0 MiB" in link and " 16 " in link and "0.2 s" in link
    assert "commands: 3 ok, 1 rejected" in out


def test_outbox_and_readings_tables() -> None:
    out = render(
        print_outbox,
        {"uplink": {"depth": 7, "oldestAgeS": 65, "newestAgeS": 1, "drops": 0, "bytes": 4096,
                    "lastId": 7, "damagedFiles": ["/var/lib/cityedge/x.damaged"]}},
    )  # fmt: skip
    head, row = out.splitlines()[:2]
    assert head.split() == [
        "output",
        "waiting",
        "oldest",
        "newest",
        "dropped",
        "file",
        "last",
        "id",
    ]
    assert row.split() == ["uplink", "7", "1", "min", "05", "s", "1.0", "s", "0", "4.0", "KiB", "7"]
    assert "damaged file set aside: /var/lib/cityedge/x.damaged" in out
    buf = io.StringIO()
    Console(file=buf, width=120, color_system=None).print(
        values_table(
            [{"point": "temperature", "value": 28.4, "unit": "Cel", "quality": "good",
              "ageS": 1.5, "metric": "temperature"},
             {"point": "flow_rate", "value": None, "unit": "m3/h", "quality": "bad",
              "reason": "exception 2", "ageS": 0.1, "metric": "flow"}]
        )
    )  # fmt: skip
    lines = buf.getvalue().splitlines()
    assert lines[1].split()[:5] == ["temperature", "28.4", "°C", "good", "1.5"]
    assert lines[2].split()[:5] == ["flow_rate", "—", "m³/h", "bad", "(exception"]


def test_no_help_shows_raw_markup() -> None:
    assert (
        describe("``cityedge scan``: find units.\n\nUse ``--all``.") == "Find units.\n\nUse --all."
    )
    sub: Any = build_parser()._subparsers._group_actions[0]  # type: ignore[union-attr]
    for name, parser in sub.choices.items():
        text = parser.format_help()
        assert "``" not in text, name


def test_rich_stays_out_of_the_daemon() -> None:
    """`cityedge run` builds the parser (every subcommand module) and the agent: none of it
    may import rich (its import costs ~5 MB of RSS and ~45 ms, docs/CLI.md)."""
    code = (
        "import sys\n"
        "from agent.cli.main import build_parser\n"
        "build_parser().parse_args(['run', 'x.toml'])\n"
        "import agent.runtime, agent.ops.ops, agent.forward.sinks.mqtt, agent.cli.run\n"
        "assert 'rich' not in sys.modules, sorted(m for m in sys.modules if 'rich' in m)\n"
        "import agent.cli.render\n"
        "assert 'rich' in sys.modules\n"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert res.returncode == 0, res.stderr
