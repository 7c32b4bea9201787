"""Outbox: group commit, ordered reads, delete after ack, bounds, and kill -9 durability."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from agent.forward.outbox import Outbox, decode_reading, encode_reading
from drivers.core.reading import Quality, Reading, Source, TimeQuality

T0 = 1_763_900_000_000


def reading(i: int, device: str = "m1") -> Reading:
    return Reading(
        "gw1", device, "water_meter", "volume", "volume", float(i), "m3", "MTQ", T0 + i, seq=i
    )


class Clock:
    def __init__(self) -> None:
        self.t = T0 / 1000

    def __call__(self) -> float:
        return self.t


async def running(ob: Outbox) -> AsyncIterator[Outbox]:
    async with asyncio.TaskGroup() as tg:
        task = tg.create_task(ob.run(), name="outbox")
        try:
            yield ob
        finally:
            await ob.close()
            await task


@pytest.fixture
async def outbox(tmp_path: Path) -> AsyncIterator[Outbox]:
    async for ob in running(Outbox(tmp_path / "ob.sqlite", commit_interval=0.02)):
        yield ob


def test_codec_round_trip() -> None:
    r = Reading(
        "gw1",
        "cam-2",
        "camera",
        "preset",
        "preset",
        ("a", "b"),
        None,
        None,
        T0,
        Quality.STALE,
        "quarantined",
        42,
        True,
        TimeQuality.CORRECTED,
        "urn:x",
        Source("pelco-d", "bus2", 2, None, None, None),
    )
    back = decode_reading(encode_reading(r))
    assert back == r and back.source == r.source
    assert decode_reading(encode_reading(reading(3))) == reading(3)


async def test_submit_read_ack_in_order(outbox: Outbox) -> None:
    await outbox.submit([reading(i) for i in range(5)])
    await outbox.submit([reading(i, "m2") for i in range(5, 8)])
    rows = await outbox.read(0, 100)
    assert [r.id for r in rows] == list(range(1, 9))
    assert [r.reading for r in rows] == [reading(i) for i in range(5)] + [
        reading(i, "m2") for i in range(5, 8)
    ]
    assert [r.id for r in await outbox.read(3, 2)] == [4, 5]
    outbox.ack(1, 5, 5)
    assert outbox.stats().depth == 3
    await outbox.flush()
    assert [r.id for r in await outbox.read(0, 100)] == [6, 7, 8]
    st = outbox.stats()
    assert st.depth == 3 and st.last_id == 8 and st.committed == 8 and st.drops == 0


async def test_group_commit_batches_concurrent_submitters(outbox: Outbox) -> None:
    async with asyncio.TaskGroup() as tg:
        for i in range(50):
            tg.create_task(outbox.submit([reading(i)]))
    st = outbox.stats()
    assert st.committed == 50 and st.depth == 50
    assert st.commits <= 3  # one window (sometimes split by timing), not 50 fsyncs


async def test_submit_returns_within_the_commit_latency(tmp_path: Path) -> None:
    async for ob in running(Outbox(tmp_path / "ob.sqlite")):  # default commit_interval 0.1 s
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        await ob.submit([reading(1)])
        assert loop.time() - t0 < 0.2 + 0.1  # 200 ms target, plus slack for a busy CI box


async def test_commit_rows_triggers_immediate_commit(tmp_path: Path) -> None:
    async for ob in running(Outbox(tmp_path / "ob.sqlite", commit_interval=5, commit_rows=100)):
        async with asyncio.timeout(2):  # would take 5 s without the row trigger
            await ob.submit([reading(i) for i in range(150)])
        assert ob.stats().depth == 150


async def test_acks_wait_to_share_a_commit_with_readings(tmp_path: Path, monkeypatch) -> None:
    import agent.forward.outbox as outbox_mod

    monkeypatch.setattr(outbox_mod, "ACK_DELAY", 0.4)
    async for ob in running(Outbox(tmp_path / "ob.sqlite", commit_interval=0.01)):
        await ob.submit([reading(i) for i in range(6)])
        commits = ob.stats().commits
        ob.ack(1, 2, 2)
        await asyncio.sleep(0.1)
        assert ob.stats().commits == commits, "an ack alone cost a commit at once"
        assert ob.stats().depth == 4  # acked rows are not counted while they wait
        await ob.submit([reading(9)])  # readings arrive: one commit for both
        assert ob.stats().commits == commits + 1
        assert [r.id for r in ob._read_sync(0, 100)] == [3, 4, 5, 6, 7]
        ob.ack(3, 7, 5)  # no readings follow: committed alone after ACK_DELAY
        async with asyncio.timeout(3):
            while ob.stats().commits == commits + 1:
                await asyncio.sleep(0.02)
        assert ob._read_sync(0, 100) == []


async def test_ids_survive_reopen_and_are_never_reused(tmp_path: Path) -> None:
    path = tmp_path / "ob.sqlite"
    async for ob in running(Outbox(path, commit_interval=0.01)):
        await ob.submit([reading(i) for i in range(4)])
        ob.ack(1, 4, 4)
    async for ob in running(Outbox(path, commit_interval=0.01)):
        assert ob.stats().depth == 0 and ob.last_id == 4
        await ob.submit([reading(9)])
        [row] = await ob.read(0, 10)
        assert row.id == 5 and row.reading == reading(9)


async def test_full_drops_oldest_counts_and_persists(tmp_path: Path) -> None:
    path = tmp_path / "ob.sqlite"
    async for ob in running(Outbox(path, max_rows=100, commit_interval=0.01)):
        for k in range(5):
            await ob.submit([reading(k * 40 + i) for i in range(40)])
        st = ob.stats()
        assert st.depth == 100 and st.drops == 100
        rows = await ob.read(0, 1000)
        assert [r.id for r in rows] == list(range(101, 201))
        await ob.submit([reading(1000)])  # still accepting
    async for ob in running(Outbox(path, max_rows=100)):
        assert ob.stats().drops == 101 and ob.stats().depth == 100


async def test_max_age_expires_old_rows(tmp_path: Path) -> None:
    clock = Clock()
    async for ob in running(
        Outbox(tmp_path / "ob.sqlite", max_age=60, clock=clock, mono=clock, commit_interval=0.01)
    ):
        await ob.submit([reading(i) for i in range(10)])
        clock.t += 30
        await ob.submit([reading(i) for i in range(10, 15)])
        assert ob.stats().oldest_age_s == pytest.approx(30)
        clock.t += 40  # the first 10 are 70 s old now
        await ob.submit([reading(99)])
        st = ob.stats()
        assert st.drops == 10 and st.depth == 6
        assert (await ob.read(0, 100))[0].id == 11


async def test_submit_after_close_fails(tmp_path: Path) -> None:
    ob = Outbox(tmp_path / "ob.sqlite")
    await ob.close()
    with pytest.raises(Exception, match="closed"):
        await ob.submit([reading(1)])


WRITER = textwrap.dedent("""
    import asyncio, sys
    from pathlib import Path
    from agent.forward.outbox import Outbox
    from drivers.core.reading import Reading

    async def main():
        ob = Outbox(Path(sys.argv[1]), commit_interval=0.005)
        async with asyncio.TaskGroup() as tg:
            tg.create_task(ob.run())
            n = 0
            while True:
                batch = [Reading("gw1", "d%d" % (i % 7), "k", "p", "p", float(n + i), None,
                                 None, 1763900000000 + n + i, seq=n + i) for i in range(50)]
                await ob.submit(batch)
                n += 50
                sys.stdout.write("%d\\n" % n)
                sys.stdout.flush()

    asyncio.run(main())
""")


def test_kill_9_loses_nothing_committed(tmp_path: Path) -> None:
    path = tmp_path / "ob.sqlite"
    proc = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(path)],
        stdout=subprocess.PIPE,
        cwd=Path(__file__).parents[3],
        text=True,
    )
    assert proc.stdout is not None
    acknowledged = 0
    try:
        for line in proc.stdout:
            acknowledged = int(line)
            if acknowledged >= 3000:
                break
        os.kill(proc.pid, signal.SIGKILL)  # mid-stream: more submits are in flight
    finally:
        proc.kill()
        proc.wait()
    assert acknowledged >= 3000

    async def check() -> None:
        ob = Outbox(path)
        rows = await ob.read(0, 1_000_000)
        await ob.close()
        assert len(rows) >= acknowledged
        assert [r.id for r in rows] == list(range(1, len(rows) + 1))
        assert [r.reading.seq for r in rows] == list(range(len(rows)))

    asyncio.run(check())


async def test_pre_sync_timestamps_are_corrected_in_place(tmp_path: Path) -> None:
    from agent.ops.timesync import ClockOffset
    from drivers.core.reading import Reading, TimeQuality

    # submitted while the wall clock said 2 January 1970, monotonic 0
    box = Outbox(tmp_path / "o.sqlite", clock=lambda: 86_400.0, mono=lambda: 0.0)
    runner = asyncio.create_task(box.run())
    boot_1970 = 86_400_000  # a gateway without RTC believes it is 2 January 1970
    readings = [
        Reading(
            "gw",
            "lamp",
            "streetlight",
            "p",
            "p",
            float(i),
            None,
            None,
            boot_1970 + i,
            seq=i,
            time_quality=TimeQuality.UNSYNCED,
        )
        for i in range(5)
    ] + [Reading("gw", "lamp", "streetlight", "p", "p", 9.0, None, None, 1_795_000_000_000, seq=9)]
    await box.submit(readings)
    offset = ClockOffset(
        offset_s=1_795_000_000.0 - 86_400.0, wall_at=1_795_000_000.0, mono_at=0.0, source="test"
    )
    box.correct_unsynced(offset)
    await box.flush()
    rows = await box.read(0, 10)
    fixed = [r.reading for r in rows]
    assert [r.observed_at_ms for r in fixed[:5]] == [1_795_000_000_000 + i for i in range(5)]
    assert {r.time_quality for r in fixed[:5]} == {TimeQuality.CORRECTED}
    assert fixed[5].observed_at_ms == 1_795_000_000_000 and fixed[5].time_quality.value == "synced"
    await box.close()
    await runner


async def test_publisher_reads_come_from_memory_and_match_the_database(tmp_path: Path) -> None:
    """A publisher that keeps up reads the rows of the last commits without a SELECT; what it
    gets must be exactly what the table holds, through acks, overflow drops and stale cursors."""
    async for ob in running(Outbox(tmp_path / "ob.sqlite", max_rows=60, commit_interval=0.01)):
        cursor, n = 0, 0
        for step in range(12):
            await ob.submit([reading(n + i) for i in range(7 + step % 5)])
            n += 7 + step % 5
            rows = await ob.read(cursor, 8)
            assert rows == ob._read_sync(cursor, 8), step
            if rows:
                cursor = rows[-1].id
                if step % 3 == 0:
                    ob.ack(rows[0].id, rows[-1].id, len(rows))
            if step == 6:  # a reconnect: the publisher starts again from an older cursor
                cursor = 0
        assert ob.tail_reads >= 6
        before = ob.tail_reads
        await ob.submit([reading(i) for i in range(100)])  # overflow: the oldest are dropped
        assert ob.stats().drops > 0
        rows = await ob.read(0, 1000)
        assert rows == ob._read_sync(0, 1000) and len(rows) == 60
        assert ob.tail_reads == before  # after a drop the tail is not trusted
