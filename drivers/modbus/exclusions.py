"""What a device was found to reject, and when to ask it again (sans-I/O bookkeeping).

Three kinds of knowledge, each learned by ``drivers/modbus/bisect.py`` from exception replies
1/2/3 and kept per register table (the table fixes the read function code, FC01-FC04):

- registers the device rejects: plans never read across them;
- points it rejects as a whole: not polled;
- a request-length cap, for a device that rejects long reads of registers it answers singly.

Nothing is learned for good. Each entry is re-probed after ``reprobe_min`` (60 s), then after
twice as long each time the device rejects it again, up to ``reprobe_max`` (about an hour),
+-20 % jitter: a transient exception costs a few extra requests, a firmware update that adds
registers is picked up within the hour. Re-probing means dropping the entry from the plan; the
next poll that reads it either succeeds (forgotten) or is rejected again (relearned, with the
next delay).
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from drivers.base import Excluded
from drivers.core.profile import Limits, Table
from drivers.core.reading import now_ms

log = logging.getLogger("cityedge.devices")

FC = {Table.COIL: 1, Table.DISCRETE: 2, Table.HOLDING: 3, Table.INPUT: 4}
Register = tuple[Table, int]


@dataclass
class _Entry:
    what: str
    code: int
    since_ms: int
    retry_at: float
    failures: int  # times it was learned in a row (the backoff exponent)


class LearnedExclusions:
    def __init__(
        self,
        label: str,
        *,
        reprobe_min: float = 60.0,
        reprobe_max: float = 3600.0,
        rng: random.Random | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall_ms: Callable[[], int] = now_ms,
    ) -> None:
        self.label = label  # "bus b1 device meter" for the log
        self.reprobe_min = reprobe_min
        self.reprobe_max = max(reprobe_min, reprobe_max)
        self._rng = rng or random.Random()
        self._clock = clock
        self._wall_ms = wall_ms
        self._runs: dict[tuple[Table, int, int], _Entry] = {}  # (table, start, end excl.)
        self._points: dict[str, _Entry] = {}
        self._caps: dict[Table, tuple[int, _Entry]] = {}
        # failures of released entries, so that a rejection after a re-probe backs off further
        self._history: dict[object, int] = {}
        self._registers: frozenset[Register] = frozenset()
        self.version = 0  # bumped on every change: cached plans are stale then

    # --- queries --------------------------------------------------------------------------
    @property
    def registers(self) -> frozenset[Register]:
        return self._registers

    @property
    def points(self) -> frozenset[str]:
        return frozenset(self._points)

    def limits(self, base: Limits) -> Limits:
        if not self._caps:
            return base
        caps = {t: n for t, (n, _) in self._caps.items()}
        regs = min((n for t, n in caps.items() if not t.is_bits), default=base.max_registers)
        bits = min((n for t, n in caps.items() if t.is_bits), default=base.max_bits)
        return base.model_copy(
            update={
                "max_registers": min(base.max_registers, regs),
                "max_bits": min(base.max_bits, bits),
            }
        )

    def describe(self) -> tuple[Excluded, ...]:
        caps = (e for _, e in self._caps.values())
        entries = [*self._runs.values(), *self._points.values(), *caps]
        return tuple(
            Excluded(e.what, f"exception {e.code}", e.since_ms, e.retry_at)
            for e in sorted(entries, key=lambda e: e.what)
        )

    # --- learning -------------------------------------------------------------------------
    def learn_registers(self, table: Table, addresses: Iterable[int], code: int) -> None:
        fresh = [a for a in addresses if (table, a) not in self._registers]
        if not fresh:
            return
        for start, end in _runs(fresh):
            keys = [(table, a) for a in range(start, end)]
            what = f"{table.value} registers {start}..{end - 1} (FC{FC[table]:02d})"
            if end - start == 1:
                what = f"{table.value} register {start} (FC{FC[table]:02d})"
            self._runs[(table, start, end)] = self._entry(what, code, keys)
        self._changed()

    def learn_point(self, name: str, code: int) -> None:
        if name not in self._points:
            self._points[name] = self._entry(f"point {name}", code, [("point", name)])
            self._changed()

    def learn_cap(self, table: Table, count: int, code: int) -> None:
        current = self._caps.get(table)
        if current is not None and current[0] <= count:
            return
        what = f"{table.value} reads longer than {count} (FC{FC[table]:02d})"
        self._caps[table] = (count, self._entry(what, code, [("cap", table)]))
        self._changed()

    def readable(self, table: Table, start: int, count: int) -> None:
        """A read of ``start..start+count-1`` succeeded: forget the past rejections there."""
        if self._history:
            for a in range(start, start + count):
                self._history.pop((table, a), None)

    def point_readable(self, name: str) -> None:
        self._history.pop(("point", name), None)

    # --- re-probing -----------------------------------------------------------------------
    def release_due(self, now: float | None = None) -> bool:
        """Drop the entries whose re-probe time has come (the next plan reads them again).
        True when something was released."""
        now = self._clock() if now is None else now
        released = False
        for key, e in list(self._runs.items()):
            if now >= e.retry_at:
                table, start, end = key
                del self._runs[key]
                for a in range(start, end):
                    self._history[(table, a)] = e.failures
                released = True
        for name, e in list(self._points.items()):
            if now >= e.retry_at:
                del self._points[name]
                self._history[("point", name)] = e.failures
                released = True
        for table, (_, e) in list(self._caps.items()):
            if now >= e.retry_at:
                del self._caps[table]
                self._history[("cap", table)] = e.failures
                released = True
        if released:
            self._changed()
        return released

    @property
    def next_retry(self) -> float | None:
        times = [e.retry_at for e in (*self._runs.values(), *self._points.values())]
        times += [e.retry_at for _, e in self._caps.values()]
        return min(times, default=None)

    # --- internals ------------------------------------------------------------------------
    def _entry(self, what: str, code: int, keys: Sequence[object]) -> _Entry:
        failures = max((self._history.pop(k, 0) for k in keys), default=0) + 1
        base = min(self.reprobe_max, self.reprobe_min * 2.0 ** min(failures - 1, 30))
        delay = min(self.reprobe_max, base * self._rng.uniform(0.8, 1.2))
        again = " again" if failures > 1 else ""
        log.warning(
            "%s: %s rejected%s (exception %d); not read, probed again in %.0f s",
            self.label,
            what,
            again,
            code,
            delay,
        )
        return _Entry(what, code, self._wall_ms(), self._clock() + delay, failures)

    def _changed(self) -> None:
        self._registers = frozenset((t, a) for (t, s, e) in self._runs for a in range(s, e))
        self.version += 1


def _runs(addresses: Iterable[int]) -> list[tuple[int, int]]:
    """Sorted addresses -> [(start, end exclusive)] of consecutive runs."""
    out: list[tuple[int, int]] = []
    for a in sorted(set(addresses)):
        if out and out[-1][1] == a:
            out[-1] = (out[-1][0], a + 1)
        else:
            out.append((a, a + 1))
    return out
