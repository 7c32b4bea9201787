"""Readings that straddle a clock step or a synchronisation between their read and their
submit land on their true time (agent/forward/outbox_clock.py), through a real outbox."""

from __future__ import annotations

from pathlib import Path

from agent.forward.outbox import Outbox
from agent.forward.outbox_clock import ClockBases
from agent.ops.timesync import ClockOffset
from drivers.core.reading import TimeQuality
from tests.agent.forward.test_outbox import running
from tests.agent.forward.test_outbox_faults import noisy

UNSYNCED, CORRECTED = TimeQuality.UNSYNCED, TimeQuality.CORRECTED
TRUE = 1_795_000_000.0  # the true time (epoch s) at monotonic 30 s


async def test_a_reading_read_before_the_sync_step_but_submitted_after_it(tmp_path: Path) -> None:
    """NTP steps the clock from 1970 to today between a poll's read and its submit (and the
    time keeper notices a moment later): the reading keeps the base it was read under, and the
    fix puts it on its true time instead of flagging its 1970 time corrected."""
    wall, mono = [86_400.0], [20.0]
    box = Outbox(tmp_path / "ob.sqlite", clock=lambda: wall[0], mono=lambda: mono[0], boot_id="b")
    async for ob in running(box):
        await ob.submit([noisy(1, UNSYNCED, at=86_400_000)])  # monotonic 20 s
        mono[0], wall[0] = 29.5, 86_409.5
        read = noisy(2, UNSYNCED, at=86_409_500)  # read at monotonic 29.5 s
        wall[0], mono[0] = TRUE, 30.0  # the step, then the submit
        await ob.submit([read])
        after = noisy(3, UNSYNCED, at=int(TRUE * 1000) + 200)  # read after the step
        mono[0], wall[0] = 30.2, TRUE + 0.2
        await ob.submit([after])
        ob.correct_unsynced(ClockOffset(TRUE - 86_410.0, TRUE + 0.5, 30.5, "test"))
        await ob.flush()
        got = {r.reading.seq: r.reading for r in await ob.read(0, 10)}
    ms = int(TRUE * 1000)
    assert got[1].observed_at_ms == ms - 10_000 and got[1].time_quality is CORRECTED
    assert got[2].observed_at_ms == ms - 500 and got[2].time_quality is CORRECTED
    assert got[3].observed_at_ms == ms + 200 and got[3].time_quality is CORRECTED


async def test_readings_still_queued_at_the_sync_are_corrected_on_their_way_in(
    tmp_path: Path,
) -> None:
    """The fix row covers the ids committed before it; a pre-sync reading that waited in the
    pipeline's queue comes after them and is corrected as it enters the outbox."""
    wall, mono = [86_400.0], [20.0]
    box = Outbox(tmp_path / "ob.sqlite", clock=lambda: wall[0], mono=lambda: mono[0], boot_id="b")
    async for ob in running(box):
        await ob.submit([noisy(1, UNSYNCED, at=86_400_000)])
        queued = noisy(2, UNSYNCED, at=86_405_000)  # read at monotonic 25 s
        wall[0], mono[0] = TRUE, 30.0
        ob.correct_unsynced(ClockOffset(TRUE - 86_410.0, TRUE, 30.0, "test"))
        await ob.flush()  # the fix row is written: ids up to 1
        mono[0], wall[0] = 31.0, TRUE + 1
        await ob.submit([queued, noisy(3, at=int(TRUE * 1000) + 1000)])
        await ob.flush()
        got = {r.reading.seq: r.reading for r in await ob.read(0, 10)}
    ms = int(TRUE * 1000)
    assert got[1].observed_at_ms == ms - 10_000 and got[1].time_quality is CORRECTED
    assert got[2].observed_at_ms == ms - 5_000 and got[2].time_quality is CORRECTED
    assert got[3].observed_at_ms == ms + 1000 and got[3].time_quality is TimeQuality.SYNCED


def test_a_backward_step_and_the_quiet_case() -> None:
    c = ClockBases()
    batch = [noisy(1), noisy(2)]
    [(base, same)] = c.split(batch, 1_800_000_000.0, 10.0)
    assert same is batch and base == 1_799_999_990_000  # no step: nothing looked at
    # the clock steps back an hour between a read (monotonic 10.5 s) and its submit
    early = noisy(3, at=1_800_000_000_500)
    runs = c.split([early, noisy(4, at=1_799_996_400_900)], 1_799_996_401.0, 11.0)
    assert [(b, [r.seq for r in rs]) for b, rs in runs] == [
        (1_799_999_990_000, [3]),
        (1_799_996_390_000, [4]),
    ]
    # long after the step, a batch is one run again, untouched
    later = [noisy(5, at=1_799_996_600_000)]
    [(b, rs)] = c.split(later, 1_799_996_600.0, 210.0)
    assert rs is later and b == 1_799_996_390_000


def test_a_quiet_clock_hands_back_the_base_and_a_step_sends_the_batch_through_runs() -> None:
    """The outbox's fast path: no step or sync within the horizon, one base for the batch."""
    bases = ClockBases()
    assert bases.quiet(TRUE, 30.0) == int((TRUE - 30.0) * 1000)
    assert bases.quiet(TRUE + 1, 31.0) == int((TRUE - 30.0) * 1000)
    assert bases.quiet(TRUE + 3602, 32.0) is None  # stepped an hour forward
    read = noisy(1, at=int((TRUE + 1.5) * 1000))  # read before the step, at monotonic 31.5 s
    [(base, [r])] = bases.runs([read])
    assert base == int((TRUE - 30.0) * 1000) and r is read
    assert bases.quiet(TRUE + 3602 + 121, 32.0 + 121) is not None  # past the horizon
