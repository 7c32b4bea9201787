"""Clock trust: sync detection from injected probes, jumps, offsets and corrections."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.ops.timesync import (
    ClockOffset,
    TimeKeeper,
    correct,
    correct_reading,
    kernel_unsynced,
    marker_synced,
)
from drivers.core.reading import Reading, TimeQuality
from tests.agent.ops.fakes import Clock

NOW = 1_790_000_000.0  # 2026-09
BOOT_1970 = 120.0  # a Pi without RTC and without fake-hwclock


class Probe:
    def __init__(self, value: bool | None) -> None:
        self.value = value

    def __call__(self) -> bool | None:
        return self.value


def keeper(wall: float, kernel: bool | None = None, marker: bool | None = None):
    mono = Clock(50.0)
    w = Clock(wall)
    k, m = Probe(kernel), Probe(marker)
    tk = TimeKeeper(wall=w, mono=mono, kernel_probe=k, marker_probe=m)
    return tk, w, mono, k, m


def tick(w: Clock, mono: Clock, dt: float) -> None:
    w.advance(dt)
    mono.advance(dt)


@pytest.mark.parametrize(
    ("wall", "kernel_unsync", "marker", "synced", "source"),
    [
        (NOW, False, None, True, "kernel"),
        (NOW, True, None, False, "kernel"),
        (NOW, None, True, True, "timesyncd"),  # seccomp refuses adjtimex; timesyncd marker
        (NOW, None, False, False, "timesyncd"),
        (NOW, True, True, True, "timesyncd"),  # container: host kernel flag, our timesyncd
        (NOW, None, None, True, "heuristic"),  # nothing to ask: plausible year is trusted
        (BOOT_1970, None, None, False, "heuristic"),
        (BOOT_1970, False, True, False, "heuristic"),  # 1970 is never right
    ],
)
def test_detection(wall, kernel_unsync, marker, synced, source) -> None:
    tk, *_ = keeper(wall, kernel_unsync, marker)
    assert tk.synced is synced
    assert tk.source == source
    assert tk.quality() is (TimeQuality.SYNCED if synced else TimeQuality.UNSYNCED)


def test_sync_after_boot_in_1970_reports_offset_and_calls_back() -> None:
    tk, w, mono, _k, m = keeper(BOOT_1970, kernel=None, marker=False)
    seen: list[float] = []
    tk.on_sync(seen.append)
    taken_mono = mono.t + 5
    tick(w, mono, 5)
    taken_wall_ms = round(w.t * 1000)
    assert tk.check() is None and not tk.synced
    tick(w, mono, 10)
    # NTP steps the clock (timesyncd writes its marker just after)
    w.advance(NOW - w.t)
    assert tk.check() is None
    assert tk.jumps == 1
    tick(w, mono, 1)
    m.value = True
    off = tk.check()
    assert off is not None and tk.synced
    assert seen == [pytest.approx(off.offset_s)]
    # offset measured from the base before the sync step, not from the last check
    assert off.offset_s == pytest.approx(NOW - (BOOT_1970 + 15))
    # correct() with and without the monotonic time of the read agree here
    exact = correct(taken_wall_ms, taken_mono, off)
    approx = correct(taken_wall_ms, None, off)
    assert exact == approx == round((NOW - 10) * 1000)


def test_correct_is_exact_across_several_presync_steps() -> None:
    off = ClockOffset(offset_s=100.0, wall_at=NOW, mono_at=1000.0, source="kernel")
    # taken at monotonic 400 s, i.e. 600 s before sync, with an unrelated wrong wall clock
    assert correct(123, 400.0, off) == round((NOW - 600.0) * 1000)
    assert correct(5_000, None, off) == 105_000


def test_correct_reading_touches_only_unsynced() -> None:
    off = ClockOffset(2.5, NOW, 10.0, "timesyncd")
    r = Reading("gw", "d", "k", "p", "m", 1.0, None, None, 1_000, time_quality=TimeQuality.UNSYNCED)
    c = correct_reading(r, off)
    assert (c.observed_at_ms, c.time_quality) == (3_500, TimeQuality.CORRECTED)
    good = Reading("gw", "d", "k", "p", "m", 1.0, None, None, 1_000)
    assert correct_reading(good, off) is good


def test_mark_only_copies_while_unsynced() -> None:
    tk, w, mono, k, _m = keeper(NOW, kernel=True)
    batch = [Reading("gw", "d", "k", "p", "m", 1.0, None, None, 1)]
    marked = tk.mark(batch)
    assert marked[0].time_quality is TimeQuality.UNSYNCED
    k.value = False
    tick(w, mono, 1)
    tk.check()
    assert tk.mark(batch) is batch


def test_jump_while_synced_is_counted_not_reported_as_sync(caplog) -> None:
    tk, w, mono, _k, _m = keeper(NOW, kernel=False)
    tick(w, mono, 1)
    w.advance(-3600)
    assert tk.check() is None
    assert tk.jumps == 1 and tk.last_jump_s == pytest.approx(-3600)
    assert "stepped" in caplog.text
    tick(w, mono, 1)
    w.advance(0.5)  # slewing-size change is not a jump
    tk.check()
    assert tk.jumps == 1
    snap = tk.snapshot()
    assert snap["synchronized"] is True and snap["jumps"] == 1


def test_marker_probe(tmp_path: Path) -> None:
    marker = tmp_path / "timesync" / "synchronized"
    assert marker_synced(marker) is None  # timesyncd not running
    marker.parent.mkdir()
    assert marker_synced(marker) is False
    marker.touch()
    assert marker_synced(marker) is True


def test_kernel_probe_reads_something_on_linux() -> None:
    # adjtimex(modes=0) needs no privilege; the answer depends on the host's NTP daemon.
    assert kernel_unsynced() in (True, False)
