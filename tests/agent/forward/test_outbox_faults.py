"""The outbox under real storage faults: SQLITE_FULL from SQLite's page limit, a tmpfs filled to
the last block, a read-only mount, files damaged at the header and in the middle; partial
acknowledgements, the clock fix per boot, the old format. No SQLite mocks."""

from __future__ import annotations

import asyncio
import logging
import random
import sqlite3
import threading
import time
from pathlib import Path

import pytest

from agent.forward.outbox import ID_BLOCK, Outbox
from agent.forward.outbox_codec import reading_json
from agent.forward.outbox_files import aside_dirs
from agent.forward.outbox_salvage import salvage
from agent.ops.timesync import ClockOffset
from drivers.core.reading import Reading, TimeQuality
from tests.agent.forward.disk import damage, fill, remount, tmpfs
from tests.agent.forward.test_outbox import running

T0 = 1_763_900_000_000


def noisy(i: int, tq: TimeQuality = TimeQuality.SYNCED, at: int | None = None) -> Reading:
    """A reading whose value compresses poorly (fills a disk quickly)."""
    v = random.Random(i).random() * 1000
    return Reading(
        "gw1", f"lamp-{i % 50}", "streetlight", f"p{i % 12}", "power", v, "W", "WTT",
        T0 + i if at is None else at, seq=i, time_quality=tq,
    )  # fmt: skip


async def read_all(ob: Outbox) -> list[int]:
    return [r.id for r in await ob.read(0, 10**7)]


async def test_sqlite_full_at_the_page_limit_evicts_the_oldest_and_keeps_accepting(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "cityedge.outbox")
    async for ob in running(Outbox(tmp_path / "ob.sqlite", commit_interval=0.005)):
        n = 0
        for _ in range(10):
            await ob.submit([noisy(n + i) for i in range(300)])
            n += 300

        def freeze(ob: Outbox = ob) -> None:  # the file may not grow: SQLITE_FULL
            db = ob._w.store._db  # type: ignore[union-attr]
            (pages,) = db.execute("PRAGMA page_count").fetchone()
            db.execute(f"PRAGMA max_page_count={pages}")

        ob._executor.submit(freeze).result()
        for _ in range(30):
            await ob.submit([noisy(n + i) for i in range(300)])
            n += 300
        st = ob.stats()
        assert st.fault is None and st.drops > 0 and st.memory == 0
        assert st.depth + st.drops == n  # every accepted reading is held or counted
        ids = await read_all(ob)
        assert ids == list(range(st.drops + 1, n + 1))  # the oldest went, in order
        rows = await ob.read(0, 3)
        assert [r.reading.seq for r in rows] == [st.drops, st.drops + 1, st.drops + 2]
        assert any("dropping the oldest" in a for a in st.alarms)
    warnings = [r for r in caplog.records if "dropping the oldest" in r.getMessage()]
    assert len(warnings) == 1  # one warning per episode


async def test_disk_full_then_a_restart_on_the_full_disk_sends_nothing_twice(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with tmpfs(tmp_path / "fs", "2m") as d:
        path = d / "ob.sqlite"
        n = 0
        async for ob in running(Outbox(path, commit_interval=0.005)):
            while ob.stats().drops == 0 and n < 200_000:  # it fills the disk by itself
                await ob.submit([noisy(n + i) for i in range(500)])
                n += 500
            fill(d)  # then something else takes the rest: SQLITE_FULL from now on
            for _ in range(20):  # it evicts and goes on
                await ob.submit([noisy(n + i) for i in range(500)])
                n += 500
            st = ob.stats()
            assert st.fault is None and st.depth + st.drops == n and n < 200_000
            assert "released the reserve" in caplog.text
            ids = await read_all(ob)
            assert ids == list(range(st.drops + 1, n + 1))
            half = ids[len(ids) // 2]
            ob.ack(ids[0], half, half - ids[0] + 1)  # the broker has these
            dropped = ob.stats().drops
        fill(d, "ballast2")  # what the stop freed goes too: nothing left, not even for a WAL
        async for ob in running(Outbox(path, commit_interval=0.005, retry_interval=0.05)):
            ids = await read_all(ob)
            assert ids == list(range(half + 1, n + 1))  # starts and reads its backlog
            ob.ack(ids[0], ids[-1], len(ids))
            await ob.submit([noisy(n + i) for i in range(100)])  # held, if it cannot write
            held = ob.stats().memory
        async for ob in running(Outbox(path, commit_interval=0.005, retry_interval=0.05)):
            ids = await read_all(ob)
            assert not set(ids) & set(range(1, n + 1))  # nothing acknowledged comes back
            assert len(ids) + held == 100 and ob.stats().drops == dropped + held


async def test_read_only_state_dir_holds_readings_in_memory_and_recovers(tmp_path: Path) -> None:
    with tmpfs(tmp_path / "fs", "8m") as d:
        path = d / "ob.sqlite"
        async for ob in running(Outbox(path, commit_interval=0.005)):
            await ob.submit([noisy(i) for i in range(100)])
        remount(d, "ro")
        ro = Outbox(path, commit_interval=0.005, memory_bytes=8 * 1024, retry_interval=0.1)
        async for ob in running(ro):
            assert ob.stats().fault is not None  # says so (health: failing)
            backlog = await ob.read(0, 1000)
            assert [r.id for r in backlog] == list(range(1, 101))  # still sent
            ob.ack(1, 100, 100)
            n = 100
            for _ in range(40):
                await ob.submit([noisy(n + i) for i in range(50)])  # accepted into memory
                n += 50
            st = ob.stats()
            assert st.memory > 0 and st.drops > 0 and st.memory + st.drops == n - 100
            assert await ob.read(100, 10) == []  # not sent: beyond the id reservation
            remount(d, "rw")
            async with asyncio.timeout(10):
                while ob.stats().fault is not None or ob.stats().memory:
                    await asyncio.sleep(0.05)
            ids = await read_all(ob)
            assert ids[0] > 100 and len(ids) == ob.stats().memory + st.memory  # backlog gone
            assert len(ids) + ob.stats().drops == n - 100  # what is missing is what was counted


@pytest.mark.parametrize("where", ["header", "middle"])
async def test_a_damaged_file_is_set_aside_and_salvaged(tmp_path: Path, where: str) -> None:
    path = tmp_path / "ob.sqlite"
    async for ob in running(Outbox(path, commit_interval=0.005)):
        for k in range(40):
            await ob.submit([noisy(k * 150 + i) for i in range(150)])
        ob.ack(1, 1000, 1000)
    size = path.stat().st_size
    if where == "header":
        damage(path, 0, 100)
    else:
        damage(path, size // 2, min(64 * 1024, size // 4))
    async for ob in running(Outbox(path, commit_interval=0.005)):
        await ob.submit([noisy(10_000 + i) for i in range(10)])
        ids = await read_all(ob)  # a damaged middle is found here, if not at open
        ids = await read_all(ob)
        assert ids == list(range(6001, 6011))  # fresh file; ids go on, never reused
        st = ob.stats()
        assert st.alarms and "salvage" in st.alarms[0] and st.set_aside == 5000
    [aside] = aside_dirs(path)
    got = salvage(aside)
    assert got.expected == 5000 and got.lost == 5000 - len(got.readings)
    for rid, text in got.readings:  # whatever is recovered is exactly what was stored
        assert 1000 < rid <= 6000 and text == reading_json(noisy(rid - 1))
    if where == "header":
        assert len(got.readings) == 5000  # the records are all there
    else:
        assert len(got.readings) >= 2500


async def test_partial_acknowledgements_survive_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "ob.sqlite"
    async for ob in running(Outbox(path, commit_interval=0.005)):
        for k in range(5):  # records of 10: ids 1-10, 11-20, ...
            await ob.submit([noisy(k * 10 + i) for i in range(10)])
        for a, b in [(1, 7), (8, 14), (30, 33), (15, 16), (45, 50)]:  # across records, unordered
            ob.ack(a, b, b - a + 1)
        await ob.flush()
        assert ob.stats().depth == 50 - 26
    async for ob in running(Outbox(path, commit_interval=0.005)):
        expect = [*range(17, 30), *range(34, 45)]
        rows = await ob.read(0, 100)
        assert [r.id for r in rows] == expect
        assert [r.reading.seq for r in rows] == [i - 1 for i in expect]
        ob.ack(17, 40, 24)
        await ob.flush()
        assert [r.id for r in await ob.read(0, 100)] == list(range(41, 45))
        assert ob.stats().depth == 4


async def test_clock_fix_is_exact_per_boot_and_never_waits_on_the_loop(tmp_path: Path) -> None:
    path = tmp_path / "ob.sqlite"
    unsynced = TimeQuality.UNSYNCED
    # boot A: readings taken at "1970 + 1 day", never synchronised before the reboot
    wall = [86_400.0]
    mono = [100.0]
    async for ob in running(
        Outbox(
            path,
            boot_id="aaaaaaaa-0000-0000-0000-000000000000",
            clock=lambda: wall[0],
            mono=lambda: mono[0],
        )
    ):
        await ob.submit([noisy(1, unsynced, at=86_400_000)])
    # boot B: the clock steps twice before the sync; each reading must land on its true time
    wall[0], mono[0] = 50_000.0, 10.0
    boot_b = Outbox(
        path,
        boot_id="bbbbbbbb-0000-0000-0000-000000000000",
        clock=lambda: wall[0],
        mono=lambda: mono[0],
    )
    async for ob in running(boot_b):
        await ob.submit([noisy(2, unsynced, at=50_000_000)])  # monotonic 10 s
        wall[0], mono[0] = 90_000.0, 20.0  # a wrong step (+39 990 s) before any sync
        await ob.submit([noisy(3, unsynced, at=90_000_000)])  # monotonic 20 s
        wall[0], mono[0] = 1_795_000_000.0, 30.0  # NTP: the true time, at monotonic 30 s
        await ob.submit([noisy(4, at=1_795_000_000_000)])
        gate = threading.Event()
        ob._executor.submit(gate.wait, 10)  # the storage thread is busy (an fsync, say)
        t0 = time.perf_counter()
        fix = ClockOffset(0.0, 1_795_000_000.0, 30.0, "test")
        assert ob.correct_unsynced(fix) is None  # type: ignore[func-returns-value]  # queued
        assert time.perf_counter() - t0 < 0.05  # queued, not waited for
        gate.set()
        await ob.flush()
        got = {r.reading.seq: r.reading for r in await ob.read(0, 10)}
    true_ms = {2: 1_795_000_000_000 - 20_000, 3: 1_795_000_000_000 - 10_000}
    for seq, ms in true_ms.items():
        assert got[seq].observed_at_ms == ms and got[seq].time_quality is TimeQuality.CORRECTED
    assert got[1].observed_at_ms == 86_400_000 and got[1].time_quality is unsynced  # boot A
    assert got[4].time_quality is TimeQuality.SYNCED


async def test_the_old_one_row_per_reading_format_is_converted(tmp_path: Path) -> None:
    path = tmp_path / "ob.sqlite"
    db = sqlite3.connect(path)
    db.executescript(
        "CREATE TABLE outbox (id INTEGER PRIMARY KEY AUTOINCREMENT, ts INTEGER NOT NULL, "
        "data BLOB NOT NULL); CREATE TABLE meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);"
        "INSERT INTO meta VALUES ('schema', 1), ('drops', 7);"
    )
    db.executemany(
        "INSERT INTO outbox(id, ts, data) VALUES (?, ?, ?)",
        [(i, T0, reading_json(noisy(i))) for i in [*range(8, 30), *range(31, 40)]],
    )
    db.execute("UPDATE sqlite_sequence SET seq = 45 WHERE name = 'outbox'")
    db.commit()
    db.close()
    async for ob in running(Outbox(path, commit_interval=0.005)):
        rows = await ob.read(0, 100)
        assert [r.id for r in rows] == [*range(8, 30), *range(31, 40)]
        assert all(r.data == reading_json(noisy(r.id)) for r in rows)
        assert ob.stats().drops == 7
        await ob.submit([noisy(99)])
        assert (await ob.read(39, 10))[0].id == 46  # ids never reused


async def test_ids_skip_past_the_reservation_after_an_unclean_stop(tmp_path: Path) -> None:
    path = tmp_path / "ob.sqlite"
    ob = Outbox(path, commit_interval=0.005)
    task = asyncio.create_task(ob.run())
    await ob.submit([noisy(i) for i in range(10)])
    task.cancel()  # never closed: as after kill -9 (memory readings may have been sent)
    async for ob2 in running(Outbox(path, commit_interval=0.005)):
        await ob2.submit([noisy(10)])
        rows = await ob2.read(0, 100)
        assert [r.id for r in rows][:10] == list(range(1, 11)) and rows[-1].id > ID_BLOCK
