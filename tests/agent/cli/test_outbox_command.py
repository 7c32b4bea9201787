from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from agent.cli.main import main
from agent.forward.outbox import Outbox
from drivers.core.reading import Reading

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
    out = capsys.readouterr().out  # a table for people: output, waiting, oldest, newest...
    head, row = out.splitlines()[:2]
    assert head.split()[:3] == ["output", "waiting", "oldest"]
    assert row.split()[:2] == ["uplink", "7"]
    assert "{" not in out  # not a Python/JSON dict
    assert main(["outbox", "-c", str(cfg), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["uplink"]["depth"] == 7

    assert main(["outbox", "export", "-c", str(cfg), "--limit", "3"]) == 0
    rows = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert [r["value"] for r in rows] == [0.0, 1.0, 2.0]

    assert main(["outbox", "purge", "-c", str(cfg), "--all"]) == 0
    assert "would delete 7" in capsys.readouterr().out
    assert main(["outbox", "purge", "-c", str(cfg), "--all", "--yes"]) == 0
    assert "deleted 7" in capsys.readouterr().out
    assert main(["outbox", "-c", str(cfg), "--json"]) == 0
    after = json.loads(capsys.readouterr().out)["uplink"]
    assert after["depth"] == 0 and after["drops"] == 7


def test_no_outbox_yet(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = tmp_path / "gateway.toml"
    cfg.write_text(CONFIG)
    assert main(["outbox", "-c", str(cfg)]) == 1
    assert "no outbox yet" in capsys.readouterr().err


def test_a_damaged_file_is_reported_not_a_traceback_and_salvaged_to_json_lines(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = tmp_path / "gateway.toml"
    cfg.write_text(CONFIG)
    path = tmp_path / "state" / "outbox-uplink.sqlite"
    for _ in range(8):  # records of ~1 KiB each: several pages
        _fill(path, 50)
    size = path.stat().st_size
    with open(path, "r+b") as f:  # torn sectors in the middle of the file
        f.seek(size // 2)
        f.write(b"\x5a" * (size // 4))
    for action in (["outbox", "-c", str(cfg)], ["outbox", "export", "-c", str(cfg)]):
        assert main(action) == 1
        err = capsys.readouterr().err
        assert "is damaged" in err and "cityedge outbox salvage" in err and str(path) in err
        assert "Traceback" not in err
    assert main(["outbox", "salvage", str(path)]) == 0
    out = capsys.readouterr()
    rows = [json.loads(x) for x in out.out.splitlines()]
    assert rows and all(r["value"] == float((r["id"] - 1) % 50) for r in rows)
    assert [r["id"] for r in rows] == sorted({r["id"] for r in rows})
    assert "salvaged" in out.err and "unreadable" in out.err


def test_check_names_the_state_directory_and_what_to_do(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import os

    state = tmp_path / "state"
    state.mkdir(mode=0o755)
    cfg = tmp_path / "gateway.toml"
    cfg.write_text(CONFIG.replace('"state"', f'"{state}"'))
    assert main(["check", str(cfg)]) == 0
    out = capsys.readouterr().out
    assert f"state directory {state}: OK" in out and "outbox uplink: budget" in out
    # the service runs as another user: a directory it does not own is not writable for it
    from agent.forward import statedir

    rep = statedir.inspect(state, user=(65534, {65534}))
    assert not rep.ok and f"state directory {state}: not writable by user" in rep.errors[0]
    assert "chown" in rep.errors[0]
    state.chmod(0o700)
    os.chown(state, 65534, 65534)
    assert statedir.inspect(state, user=(65534, {65534})).ok
