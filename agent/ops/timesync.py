"""Wall-clock trust: is the clock NTP-synchronised yet, did it jump, and by how much.

A gateway without a battery-backed RTC boots with a wrong wall clock (1970, or whatever
fake-hwclock saved at the last shutdown) and only gets the right time once NTP syncs, which
may be hours later in a cabinet with a flaky modem. Readings taken before that are stamped
``TimeQuality.UNSYNCED``; when sync arrives the ``on_sync`` callbacks get the offset and the
timestamps of those readings can be corrected with :func:`correct` (``TimeQuality.CORRECTED``).

Signals (any positive one means synchronised):
1. the kernel's NTP status via read-only ``adjtimex(2)`` (``STA_UNSYNC``; timesyncd, chrony
   and ntpd keep it). The shipped unit's seccomp filter refuses this call (``ProtectClock=``,
   see docs/DEPLOY.md): EPERM makes the probe say "unknown", never "unsynchronised";
2. ``/run/systemd/timesync/synchronized``, created by systemd-timesyncd (the Raspberry Pi OS
   default) at its first sync after boot;
3. a sanity floor: a year before 2024 is never trusted. With no signal at all and a
   plausible year the clock is trusted (flagging every reading would help nobody).

Jumps are found by comparing the wall clock with the monotonic clock: ``wall - monotonic`` is
constant while the clock only ticks (or is slewed, at most 0.5 ms/s), so a change larger than
``jump_tolerance`` between two checks is a step.
"""

from __future__ import annotations

import asyncio
import ctypes
import dataclasses
import functools
import logging
import time
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from drivers.core.reading import Reading, TimeQuality

log = logging.getLogger("cityedge.timesync")

TIMESYNCD_MARKER = Path("/run/systemd/timesync/synchronized")
MIN_YEAR_EPOCH = 1704067200.0  # 2024-01-01T00:00:00Z: no gateway runs earlier than this
_STA_UNSYNC = 0x0040  # include/uapi/linux/timex.h
_TIME_ERROR = 5  # adjtimex return value: "clock not synchronised"


class _Timex(ctypes.Structure):
    # struct timex (include/uapi/linux/timex.h) with the C ``long`` fields of the native ABI;
    # only ``modes`` (in) and ``status`` (out) are used, the tail is generous padding.
    # 32-bit Raspberry Pi OS (armhf): ``long`` and ``time_t`` are 32-bit, and the ``adjtimex``
    # symbol found here is glibc's default one, whose struct has 32-bit ``long`` fields (the
    # 64-bit time variant is ``__adjtimex64``, which only ``-D_TIME_BITS=64`` code calls).
    # tests/agent/ops/test_timex_abi.py compiles C against <sys/timex.h> on each architecture
    # and checks the offsets and the answer against this layout.
    _fields_ = [
        ("modes", ctypes.c_uint),
        ("offset", ctypes.c_long),
        ("freq", ctypes.c_long),
        ("maxerror", ctypes.c_long),
        ("esterror", ctypes.c_long),
        ("status", ctypes.c_int),
        ("_rest", ctypes.c_long * 32),
    ]


@functools.cache
def _adjtimex() -> Callable[[Any], int] | None:
    # CDLL(None): libc is already mapped into the interpreter; ctypes.util.find_library would
    # run ldconfig in a subprocess on every call.
    try:
        fn: Callable[[Any], int] = ctypes.CDLL(None, use_errno=True).adjtimex
    except (OSError, AttributeError):
        return None
    return fn


def kernel_clock_state() -> tuple[int, int] | None:
    """``adjtimex(2)``'s return value (clock state) and ``status`` field; None when it cannot
    be read (seccomp, not Linux). ``modes = 0`` only reads: no privilege is needed or used."""
    fn = _adjtimex()
    if fn is None:
        return None
    tx = _Timex()
    state = int(fn(ctypes.byref(tx)))
    if state < 0:
        return None  # EPERM from the unit's seccomp filter (see the module docstring)
    return state, int(tx.status)


def kernel_unsynced() -> bool | None:
    """True/False from the kernel's NTP state; None when it cannot be read."""
    got = kernel_clock_state()
    if got is None:
        return None
    state, status = got
    return bool(status & _STA_UNSYNC) or state == _TIME_ERROR


def marker_synced(path: Path = TIMESYNCD_MARKER) -> bool | None:
    """True once systemd-timesyncd has synchronised since boot; None if it is not running."""
    if path.exists():
        return True
    return False if path.parent.is_dir() else None


@dataclass(frozen=True, slots=True)
class ClockOffset:
    """What a sync (or a step) changed: add ``offset_s`` to wall times taken before it."""

    offset_s: float
    wall_at: float  # wall clock (epoch s) right after the change
    mono_at: float  # time.monotonic() at the same instant
    source: str  # "kernel", "timesyncd", "heuristic"


@runtime_checkable
class ClockFixSink(Protocol):
    """A sink that stores readings and fixes the pre-sync ones when the clock synchronises
    (agent/ops/ops.py calls it from the time-sync task; agent/forward/sinks/base.py)."""

    name: str

    def correct_unsynced(self, offset: ClockOffset) -> int | None:
        """Synchronous and cheap: the outbox queues one fix for its storage thread and
        returns None; a sink that fixes in place may return how many readings it changed."""


def correct(observed_at_ms: int, taken_monotonic: float | None, offset: ClockOffset) -> int:
    """Corrected epoch-ms timestamp of a reading taken before ``offset`` (pure).

    With the monotonic time of the read the result is exact even if the clock stepped several
    times before sync; without it the last offset is applied (exact for readings taken after
    the last pre-sync step, which is the usual case: one step, at sync)."""
    if taken_monotonic is not None:
        return round((offset.wall_at - (offset.mono_at - taken_monotonic)) * 1000.0)
    return observed_at_ms + round(offset.offset_s * 1000.0)


def correct_reading(
    r: Reading, offset: ClockOffset, taken_monotonic: float | None = None
) -> Reading:
    """A pre-sync reading with its timestamp corrected; others are returned unchanged."""
    if r.time_quality is not TimeQuality.UNSYNCED:
        return r
    return dataclasses.replace(
        r,
        observed_at_ms=correct(r.observed_at_ms, taken_monotonic, offset),
        time_quality=TimeQuality.CORRECTED,
    )


SyncCallback = Callable[[float], None]


class TimeKeeper:
    """Tracks clock trust; call :meth:`check` periodically (``run`` does, once a second)."""

    def __init__(
        self,
        *,
        wall: Callable[[], float] = time.time,
        mono: Callable[[], float] = time.monotonic,
        kernel_probe: Callable[[], bool | None] = kernel_unsynced,
        marker_probe: Callable[[], bool | None] = marker_synced,
        jump_tolerance: float = 2.0,
        settle_s: float = 60.0,
    ) -> None:
        self._wall = wall
        self._mono = mono
        self._kernel = kernel_probe
        self._marker = marker_probe
        self.jump_tolerance = jump_tolerance
        self.settle_s = settle_s
        self._unsynced_steps: list[tuple[float, float]] = []  # (monotonic, base before step)
        self._callbacks: list[SyncCallback] = []
        self._watchers: list[Callable[[bool], None]] = []
        self._base = wall() - mono()
        self.jumps = 0
        self.last_jump_s: float | None = None
        self.last_sync: ClockOffset | None = None
        self.source = "heuristic"
        self._synced = self._probe()

    # --- public API ----------------------------------------------------------------------
    def quality(self) -> TimeQuality:
        """The quality to stamp on a reading taken now."""
        return TimeQuality.SYNCED if self._synced else TimeQuality.UNSYNCED

    @property
    def synced(self) -> bool:
        return self._synced

    def on_sync(self, callback: SyncCallback) -> None:
        """``callback(offset_s)`` runs when an unsynchronised clock becomes synchronised
        (offset_s = how far pre-sync timestamps were off; add it to correct them)."""
        self._callbacks.append(callback)

    def on_change(self, callback: Callable[[bool], None]) -> None:
        """``callback(synced)`` now and whenever the clock gains or loses synchronisation (the
        pipeline calls ``mark`` only while it is not: one call per batch fewer)."""
        self._watchers.append(callback)
        callback(self._synced)

    def check(self) -> ClockOffset | None:
        """Probe once; returns the offset when this check saw the clock become synchronised."""
        wall, mono = self._wall(), self._mono()
        base = wall - mono
        step = base - self._base
        if abs(step) > self.jump_tolerance:
            self.jumps += 1
            self.last_jump_s = step
            if self._synced:
                log.warning("wall clock stepped by %+.3f s while synchronised", step)
            else:
                self._unsynced_steps.append((mono, self._base))
                log.info("wall clock stepped by %+.3f s (not yet synchronised)", step)
        was = self._synced
        self._synced = self._probe()
        previous, self._base = self._base, base
        if was != self._synced:
            for watch in list(self._watchers):
                watch(self._synced)
        if was or not self._synced:
            return None
        # timesyncd steps the clock and only then writes its marker, so a step seen shortly
        # before the sync flag is the sync itself: measure from the base before that step.
        recent = [b for t, b in self._unsynced_steps if mono - t <= self.settle_s]
        before = recent[0] if recent else previous
        self._unsynced_steps.clear()
        off = ClockOffset(base - before, wall, mono, self.source)
        self.last_sync = off
        log.info("wall clock synchronised (%s); pre-sync offset %+.3f s", self.source, off.offset_s)
        for cb in list(self._callbacks):
            try:
                cb(off.offset_s)
            except Exception:
                log.exception("time-sync callback failed")
        return off

    def mark(self, batch: Sequence[Reading]) -> Sequence[Reading]:
        """Stamp a batch taken now: unchanged while synced (no copy), UNSYNCED otherwise."""
        if self._synced:
            return batch
        # in place: the batch is fresh from the driver and owned by the pipeline until the
        # sinks serialize it (a copy per reading cost as much as decoding it)
        synced, unsynced = TimeQuality.SYNCED, TimeQuality.UNSYNCED
        for r in batch:
            if r.time_quality is synced:
                r.time_quality = unsynced
        return batch

    def snapshot(self) -> dict[str, object]:
        """For the health document."""
        d: dict[str, object] = {
            "synchronized": self._synced,
            "quality": self.quality().value,
            "source": self.source,
            "jumps": self.jumps,
        }
        if self.last_jump_s is not None:
            d["last_jump_s"] = round(self.last_jump_s, 3)
        if self.last_sync is not None:
            d["last_sync_offset_s"] = round(self.last_sync.offset_s, 3)
        return d

    async def run(self, interval: float = 1.0) -> None:
        while True:
            await asyncio.sleep(interval)
            self.check()

    # --- internals -----------------------------------------------------------------------
    def _probe(self) -> bool:
        # Positive evidence from any source wins: timesyncd may have synchronised while the
        # kernel flag is unreadable (seccomp) or, in a container, belongs to the host.
        if self._wall() < MIN_YEAR_EPOCH:
            self.source = "heuristic"
            return False
        kernel = self._kernel()
        marker = self._marker()
        if kernel is False:
            self.source = "kernel"
            return True
        if marker is True:
            self.source = "timesyncd"
            return True
        if kernel is True:
            self.source = "kernel"
            return False
        if marker is False:
            self.source = "timesyncd"
            return False
        self.source = "heuristic"
        return True  # no signal and a plausible year: trust it rather than flag every reading


def timesync_service(
    keeper: TimeKeeper, interval: float = 1.0
) -> Callable[[], Coroutine[Any, Any, None]]:
    """Coroutine factory for ``Agent.services``: checks the clock every ``interval`` s."""
    return lambda: keeper.run(interval)
