"""The clock base each reading was taken under, decided where readings enter the outbox.

A stored record carries ``base`` = wall clock minus monotonic clock (ms), so that a reading's
monotonic time is ``observedAt - base`` and the clock-sync fix can put it on its true time
whatever steps the clock took (agent/forward/outbox.py, docs/DEPLOY.md). ``base`` is taken when
the readings are submitted, which is a few milliseconds to a group commit after they were read.
A clock step in between (NTP stepping a gateway from 1970 to today) would give the readings
read just before it the new base, and the fix would then leave them on their wrong time while
flagging them corrected. So, for a while after a step, each reading is given the base under
which its monotonic time is possible: one read before the step has, under the new base, a
monotonic time before the previous submit (a forward step) or after now (a backward one).

Readings read before a synchronisation but submitted after the outbox was told about it (they
waited in the pipeline's queues) come after the fix row's ids, so the fix does not reach them;
they are corrected here instead, on their way in, with the same rule.

Exact for steps larger than the time between a reading and the previous submit (every poll
submits; 20 ms or a poll interval); a smaller step stays an error of that size. Sans-I/O: the
outbox passes its clocks in.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from drivers.core.reading import Reading, TimeQuality

BASE_TOLERANCE_MS = 20  # clock changes below this are jitter, not a step
HORIZON_MS = 120_000  # how long a reading may wait between its read and its submit


class ClockBases:
    def __init__(self) -> None:
        self._base: int | None = None  # base of the last submit
        self._seen = 0  # monotonic ms of the last submit
        self._step: tuple[int, int, int] | None = None  # (old base, its last submit, seen at)
        self._sync: tuple[int, int] | None = None  # (base at the sync, monotonic ms of it)

    def synced(self, base_ms: int, mono_ms: int) -> None:
        """The clock was synchronised at monotonic ``mono_ms``; ``base_ms`` is right since."""
        self._sync = (base_ms, mono_ms)

    def split(
        self, batch: Sequence[Reading], wall_s: float, mono_s: float
    ) -> list[tuple[int, Sequence[Reading]]]:
        """``batch`` as runs of ``(base, readings)`` in order; normally one run, untouched."""
        base = self.quiet(wall_s, mono_s)
        return [(base, batch)] if base is not None else self.runs(batch)

    def quiet(self, wall_s: float, mono_s: float) -> int | None:
        """A submit at these clocks: its base while no step or sync is recent (then every
        reading of the batch has it, and the readings need not come here), else None: the
        batch must go through ``runs``."""
        base, now = int((wall_s - mono_s) * 1000), int(mono_s * 1000)
        if self._base is not None and abs(base - self._base) > BASE_TOLERANCE_MS:
            self._step = (self._base, self._seen, now)
        self._base, self._seen = base, now
        step, sync = self._step, self._sync
        if step is not None and now - step[2] > HORIZON_MS:
            self._step = step = None
        if sync is not None and now - sync[1] > HORIZON_MS:
            self._sync = sync = None
        return base if step is None and sync is None else None

    def runs(self, batch: Sequence[Reading]) -> list[tuple[int, Sequence[Reading]]]:
        """``batch`` as runs of ``(base, readings)`` under the step or sync that ``quiet``
        (just called for this submit) found recent."""
        base, now = self._base, self._seen
        assert base is not None
        step, sync = self._step, self._sync
        runs: list[tuple[int, list[Reading]]] = []
        unsynced = TimeQuality.UNSYNCED
        for r in batch:
            b = base
            if step is not None:
                mono = r.observed_at_ms - base
                if mono < step[1] - BASE_TOLERANCE_MS or mono > now + BASE_TOLERANCE_MS:
                    b = step[0]  # read before the step
            out = r
            if sync is not None and r.time_quality is unsynced and r.observed_at_ms - b < sync[1]:
                out = dataclasses.replace(  # a copy: other sinks hold the same reading
                    r,
                    observed_at_ms=r.observed_at_ms - b + sync[0],
                    time_quality=TimeQuality.CORRECTED,
                )
            if runs and runs[-1][0] == b:
                runs[-1][1].append(out)
            else:
                runs.append((b, [out]))
        return list(runs)
