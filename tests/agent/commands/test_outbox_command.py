from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from agent.cli import main
from agent.outbox import Outbox
from agent.reading import Reading

CONFIG = """\
[gateway]
id = "gw-ob"
state_dir = "state"

[[outputs]]
type = "mqtt"
id = "uplink"
brokers = [{ url = "mqtt://127.0.0.1:1" }]
"""


def _fill(path: Path, n: int) -> None:
    async def go() -> None:
        box = Outbox(path)
        task = asyncio.create_task(box.run())
        await box.submit(
            [
                Reading(
                    "gw-ob",
                    "lamp",
                    "streetlight",
                    "p",
                    "p",
                    float(i),
                    "W",
                    "WTT",
                    1_795_000_000_000 + i,
                    seq=i,
                )
                for i in range(n)
            ]
        )
        await box.close()
        await task

    asyncio.run(go())


def test_stats_export_purge(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = tmp_path / "gateway.toml"
    cfg.write_text(CONFIG)
    _fill(tmp_path / "state" / "outbox-uplink.sqlite", 7)

    assert main(["outbox", "-c", str(cfg)]) == 0
    out = capsys.readouterr().out
    assert json.loads(out.split(": ", 1)[1])["depth"] == 7

    assert main(["outbox", "export", "-c", str(cfg), "--limit", "3"]) == 0
    rows = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert [r["value"] for r in rows] == [0.0, 1.0, 2.0]

    assert main(["outbox", "purge", "-c", str(cfg), "--all"]) == 0
    assert "would delete 7" in capsys.readouterr().out
    assert main(["outbox", "purge", "-c", str(cfg), "--all", "--yes"]) == 0
    assert "deleted 7" in capsys.readouterr().out
    assert main(["outbox", "-c", str(cfg)]) == 0
    after = json.loads(capsys.readouterr().out.split(": ", 1)[1])
    assert after["depth"] == 0 and after["drops"] == 7


def test_no_outbox_yet(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = tmp_path / "gateway.toml"
    cfg.write_text(CONFIG)
    assert main(["outbox", "-c", str(cfg)]) == 1
    assert "no outbox yet" in capsys.readouterr().err
