"""The command store with real SQLite files and real faults: what survives a reopen (a
restart), the claim left by a crash, pruning, a damaged file set aside, a full or unusable
file degrading to memory without raising."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from agent.control.model import CommandResult, CommandStatus
from agent.control.store import INTERRUPTED, Claim, CommandStore

NOW = 1_795_000_000.0


def store(path: Path, now: float = NOW) -> CommandStore:
    return CommandStore(path, window=3600, nonce_window=3600, clock=lambda: now)


def ok(cid: str) -> CommandResult:
    return CommandResult(cid, CommandStatus.OK, None, "lamp-1", "dim_level", 0.4, requested=0.405)


def test_answers_nonces_and_rate_slots_survive_a_reopen(tmp_path: Path) -> None:
    s = store(tmp_path / "c.sqlite")
    s.claim([Claim("c1", "n1", ("lamp-1",))], NOW)
    s.finish([ok("c1")], NOW)
    s.close()
    s = store(tmp_path / "c.sqlite")
    assert s.answer("c1", NOW + 10) == ok("c1")
    assert s.nonce_used("n1", NOW + 10)
    assert not s.nonce_used("n2", NOW + 10)
    assert s.recent_writes("lamp-1", NOW + 10) == 1
    assert s.recent_writes("lamp-1", NOW + 61) == 0
    assert s.answer("c1", NOW + 3601) is None  # past the window


def test_a_claim_without_answer_is_answered_interrupted(tmp_path: Path) -> None:
    """kill -9 between the claim and the answer: the write may have happened."""
    s = store(tmp_path / "c.sqlite")
    s.claim([Claim("c1", None, ("lamp-1",))], NOW)
    del s  # no close: as after kill -9 (the commit is what counts)
    again = store(tmp_path / "c.sqlite").answer("c1", NOW + 5)
    assert again is not None
    assert again.status is CommandStatus.TIMEOUT and again.reason == INTERRUPTED


def test_old_rows_are_pruned(tmp_path: Path) -> None:
    s = store(tmp_path / "c.sqlite")
    s.claim([Claim("old", "n-old", ("lamp-1",))], NOW)
    s.finish([ok("old")], NOW)
    s.claim([Claim("new", "n-new", ("lamp-1",))], NOW + 4000)
    db = sqlite3.connect(tmp_path / "c.sqlite")
    assert [r[0] for r in db.execute("SELECT id FROM answers")] == ["new"]
    assert [r[0] for r in db.execute("SELECT nonce FROM nonces")] == ["n-new"]
    assert db.execute("SELECT count(*) FROM writes").fetchone()[0] == 1
    db.close()


def _filled(path: Path) -> None:
    s = store(path)
    s.claim([Claim(f"c{i}", f"n{i}", ("lamp-1",)) for i in range(300)], NOW)
    s.finish([ok(f"c{i}") for i in range(300)], NOW)
    s.close()


def test_damaged_header_is_set_aside_and_a_fresh_store_starts(tmp_path: Path) -> None:
    path = tmp_path / "c.sqlite"
    _filled(path)
    with path.open("r+b") as f:
        f.write(b"\xff" * 100)  # the SQLite header
    s = store(path)
    assert s.degraded is None and len(s.set_aside) == 1
    assert s.set_aside[0].name.startswith("c.sqlite.corrupt-") and s.set_aside[0].exists()
    assert s.answer("c1", NOW) is None  # a fresh store
    s.claim([Claim("x", None, ())], NOW)
    s.finish([ok("x")], NOW)
    assert store(path).answer("x", NOW) == ok("x")


def test_damaged_middle_is_set_aside(tmp_path: Path) -> None:
    path = tmp_path / "c.sqlite"
    _filled(path)
    size = path.stat().st_size
    with path.open("r+b") as f:
        f.seek(size // 2)
        f.write(b"\x00\xff" * 2048)
    s = store(path)
    # either the open check or the first use finds it; neither raises
    s.answer("c150", NOW)
    s.claim([Claim("y", None, ())], NOW)
    s.finish([ok("y")], NOW)
    assert s.answer("y", NOW) == ok("y")
    assert len(s.set_aside) == 1 and s.set_aside[0].exists()


def test_a_full_store_keeps_answers_in_memory_and_recovers(tmp_path: Path) -> None:
    path = tmp_path / "c.sqlite"
    s = store(path)
    assert s._db is not None
    pages = s._db.execute("PRAGMA page_count").fetchone()[0]
    s._db.execute(f"PRAGMA max_page_count = {pages}")  # SQLITE_FULL from now on
    big = "x" * 20_000
    s.claim([Claim(f"c-{big}", None, ("lamp-1",))], NOW)
    assert s.degraded is not None and "full" in s.degraded
    s.finish([ok(f"c-{big}")], NOW)
    assert s.answer(f"c-{big}", NOW) == ok(f"c-{big}")  # from memory
    assert s.recent_writes("lamp-1", NOW) == 1
    # the next use reopens the file (max_page_count is per connection): memory goes to disk
    s.claim([Claim("c2", None, ("lamp-1",))], NOW)
    assert s.degraded is None
    s.finish([ok("c2")], NOW)
    s.close()
    again = store(path)
    assert again.answer(f"c-{big}", NOW) == ok(f"c-{big}")
    assert again.recent_writes("lamp-1", NOW) == 2


def test_an_unusable_path_degrades_without_raising(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / "state").write_text("a file where the state directory should be")
    s = store(tmp_path / "state" / "c.sqlite")
    assert s.degraded is not None and "cannot open" in s.degraded
    for _ in range(3):  # retried at each command, said once
        s.claim([Claim("c1", "n1", ("lamp-1",))], NOW)
    assert [r.levelname for r in caplog.records] == ["ERROR"]
    s.finish([ok("c1")], NOW)
    assert s.answer("c1", NOW) == ok("c1")
    assert s.nonce_used("n1", NOW)
    assert s.recent_writes("lamp-1", NOW) == 3


def test_a_claim_over_the_rate_limit_commits_nothing(tmp_path: Path) -> None:
    s = store(tmp_path / "c.sqlite")
    assert s.claim([Claim("c1", None, ("lamp-1",))], NOW, 2) == []
    over = s.claim([Claim("c2", "n2", ("lamp-1",)), Claim("c3", None, ("lamp-1", "pump"))], NOW, 2)
    assert over == ["lamp-1"]
    assert s.answer("c2", NOW) is None and not s.nonce_used("n2", NOW)
    assert s.recent_writes("lamp-1", NOW) == 1 and s.recent_writes("pump", NOW) == 0
    assert s.claim([Claim("c4", None, ("lamp-1",))], NOW + 1, 2) == []
    assert s.recent_writes("lamp-1", NOW + 1) == 2
