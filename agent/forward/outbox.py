"""Durable store-and-forward between the pipeline and the MQTT publisher (SQLite, WAL).

Group commit: ``submit`` queues readings and waits; ``run`` commits every ``commit_interval``
seconds or as soon as ``commit_rows`` readings wait, whichever comes first, so a poll batch is
accepted within about ``commit_interval`` plus one fsync. Each commit stores one compressed
record (``agent/forward/outbox_codec.py``, ``agent/forward/outbox_store.py``): about 24 bytes
of disk per reading instead of ~375 for a row of JSON, and one row to insert and delete instead
of hundreds.
This module is the event-loop side (group commit, the memory buffer, the publisher's reads);
``agent/forward/outbox_worker.py`` is the storage thread and its fault handling.

Delivery ids: every reading gets the next id when its commit starts; the platform
de-duplicates on it. Ids continue across restarts and are never reused, even when the file is
lost (``<file>.ids`` keeps how far ids were handed out; after an unclean stop the next ones
start past that reservation).

``synchronous=FULL``: in WAL mode NORMAL already survives a process crash (``kill -9``), but a
power cut can lose the last transactions, and losing power is the normal failure of a
pole-mounted gateway. FULL costs one WAL fsync per commit; group commit caps that at ~10/s.

Deletion happens only after the publisher saw the PUBACK (``ack``); acks are committed with the
next group of readings, or after ``ACK_DELAY`` when none come. A record acknowledged in part
keeps the offsets done (``agent/forward/outbox_ranges.py``): nothing acknowledged is sent again
after a restart, nothing unacknowledged is deleted.

Bounds: ``max_bytes`` (of live pages; default derived from the free space, see
``agent/forward/statedir.py``), ``max_rows`` and ``max_age``; beyond them the oldest readings are
dropped and counted in a persistent counter, with one warning per episode.

Storage faults never take the agent down (``agent/forward/outbox_worker.py``): a full disk
evicts the oldest records; when nothing can be written the newest readings wait in a bounded memory
buffer (``agent/forward/outbox_memory.py``); a damaged file is set aside and a fresh one started.

Clock sync: rows carry the boot id and ``wall - monotonic`` of when their readings were taken
(``agent/forward/outbox_clock.py``), so a reading's monotonic time is known;
``correct_unsynced`` queues one fix row (boot, ids so far, clock base) written with the next
commit on the storage thread, and readings are corrected when read.

All SQLite work runs on one dedicated thread so an fsync never blocks the event loop.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from agent.forward import outbox_ranges as rg
from agent.forward import statedir
from agent.forward.outbox_clock import BASE_TOLERANCE_MS, ClockBases
from agent.forward.outbox_codec import reading_from_json, reading_json
from agent.forward.outbox_memory import Held
from agent.forward.outbox_types import (
    OutboxError,
    OutboxRow,
    OutboxStats,
    Rec,
    boot_number,
    read_boot_id,
)
from agent.forward.outbox_worker import ID_BLOCK, Outcome, Worker
from agent.ops.timesync import ClockOffset
from drivers.core.reading import Reading
from drivers.core.waits import wait_event

__all__ = [
    "ID_BLOCK",
    "Outbox",
    "OutboxError",
    "OutboxRow",
    "OutboxStats",
    "decode_reading",
    "encode_reading",
]

log = logging.getLogger("cityedge.outbox")

EXPIRY_PERIOD = 5.0  # seconds between age-bound / free-space checks when nothing else commits
ACK_DELAY = 1.0  # seconds acks alone wait for readings to share their commit
TAIL_ROWS = 4_000  # rows of the latest commits kept for the publisher (~2 MB at most)
EPISODE_QUIET = 60.0  # seconds without a drop that end a dropping episode

encode_reading = reading_json
decode_reading = reading_from_json


class Outbox:
    def __init__(
        self,
        path: Path,
        *,
        max_bytes: int | None = None,
        max_rows: int | None = None,
        max_age: float | None = 7 * 86400.0,
        commit_interval: float = 0.1,
        commit_rows: int = 5000,
        synchronous: str = "FULL",
        clock: Callable[[], float] = time.time,
        mono: Callable[[], float] = time.monotonic,
        boot_id: str | None = None,
        memory_bytes: int = 8 << 20,
        retry_interval: float = 5.0,
    ) -> None:
        self.path = path
        self.commit_interval = commit_interval
        self.commit_rows = commit_rows
        self.retry_interval = retry_interval
        self._clock = clock
        self._mono = mono
        boot_id = boot_id if boot_id is not None else read_boot_id()
        self._boot = boot_number(boot_id)
        self.budget, self.budget_source = statedir.budget_for(path.parent, max_bytes)
        self._executor = ThreadPoolExecutor(1, thread_name_prefix=f"outbox-{path.stem}")
        self._w = Worker(  # everything it does runs on the executor's one thread
            path,
            synchronous=synchronous,
            boot_id=boot_id,
            budget=self.budget,
            max_rows=max_rows,
            max_age=max_age,
            clock=clock,
            mono=mono,
        )
        self._pending: list[Rec] = []
        self._pending_n = 0
        # The readings of the latest commits, as committed: a publisher that keeps up reads
        # them from here instead of SELECTing back what it just wrote (a thread round trip per
        # commit). Contiguous ids only; anything else is read from the database.
        self._tail: deque[OutboxRow] = deque()
        self._waiters: list[asyncio.Future[None]] = []
        self._acks: list[tuple[int, int]] = []
        self._acked_pending = 0
        self._mem = Held(memory_bytes)  # written nowhere yet (faults), oldest first
        self._fix_base: int | None = None  # a clock fix waiting for a commit
        self._bases = ClockBases()
        self._fault: str | None = None
        self._retry_at = 0.0
        self._alarms: list[str] = []
        self._episode: tuple[float, int, str] | None = None  # (start, dropped, reason)
        self._last_drop = 0.0
        self._lock = asyncio.Lock()
        self._wake = asyncio.Event()
        self._full = asyncio.Event()
        self._rows_in = asyncio.Event()
        self._rows_event = asyncio.Event()
        self._closed = False  # no more submits
        self._shut = False  # database closed
        self._last_expiry = 0.0
        self.commits = 0
        self.committed = 0
        self.tail_reads = 0  # reads served from the last commits' rows in memory
        self._next_id = 1
        self._visible = 0
        # construction: the loop uses nothing yet, the file is opened here
        out = Outcome()
        self._next_id, self._acks = self._w.open(out)
        self._apply(out)
        self._update_visible()

    # -- producer side -------------------------------------------------------------------
    async def submit(self, batch: Sequence[Reading]) -> None:
        """Return once every reading of ``batch`` is committed (needs ``run`` or ``flush``),
        or held in the memory buffer while nothing can be written."""
        if self._closed:
            raise OutboxError(self.path, "closed")
        if not batch:
            return
        wall, mono = self._clock(), self._mono()
        now, base_now = int(wall * 1000), int((wall - mono) * 1000)
        # one run under today's base unless a clock step or sync is recent (outbox_clock.py)
        quiet = self._bases.quiet(wall, mono)
        runs = [(quiet, batch)] if quiet is not None else self._bases.runs(batch)
        for base, readings in runs:
            # the commit time on the record's own clock (read before a step: the old one)
            ts = now if base == base_now else int(mono * 1000) + base
            rec = self._pending[-1] if self._pending else None
            if rec is None or abs(rec.base - base) > BASE_TOLERANCE_MS:
                rec = Rec(0, 0, ts, base, 0, [])
                self._pending.append(rec)
            parts = rec.parts
            assert parts is not None
            parts.extend([reading_json(r) for r in readings])
            rec.n = len(parts)
            rec.ts = ts
        self._pending_n += len(batch)
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(fut)
        self._wake.set()
        self._rows_in.set()
        if self._pending_n >= self.commit_rows:
            self._full.set()
        await fut

    async def run(self) -> None:
        """Group-commit loop; returns after ``close``."""
        while not self._closed:
            period = EXPIRY_PERIOD if not self._mem else min(EXPIRY_PERIOD, self.retry_interval)
            await wait_event(self._wake, period)  # idle: still expire, retry, end episodes
            if self._closed:
                break
            if not self._pending and self._acks and not self._mem:
                # Acks alone are not urgent (an ack lost to a crash is a redelivery the
                # platform drops by id): they ride with the next readings, which on a polling
                # gateway come within a cycle, instead of costing a commit and an fsync each.
                await wait_event(self._rows_in, ACK_DELAY)
            if self._pending and self._pending_n < self.commit_rows:
                await wait_event(self._full, self.commit_interval)
            if self._shut:  # close() committed the rest meanwhile
                break
            await self.flush()
            self._end_episode()

    async def flush(self) -> None:
        """Commit queued readings and acks now (never raises for a storage fault)."""
        async with self._lock:
            if self._shut:
                return
            self._wake.clear()
            self._full.clear()
            self._rows_in.clear()
            recs, self._pending = self._pending, []
            n_new, self._pending_n = self._pending_n, 0
            waiters, self._waiters = self._waiters, []
            acks, self._acks = self._acks, []
            acked, self._acked_pending = self._acked_pending, 0
            fix, self._fix_base = self._fix_base, None
            now = self._clock()
            expire = now - self._last_expiry >= EXPIRY_PERIOD
            if not recs and not acks and not expire and fix is None and not self._mem:
                return
            if expire:
                self._last_expiry = now
            for r in recs:
                r.first = self._next_id
                self._next_id += r.n
            retry = not self._mem or self._mono() >= self._retry_at or self._closed
            mem = list(self._mem.recs)
            loop = asyncio.get_running_loop()
            try:
                out = await loop.run_in_executor(
                    self._executor,
                    self._w.commit,
                    mem,
                    recs,
                    acks,
                    now,
                    expire,
                    fix,
                    retry,
                    self._next_id,
                    self._fault,
                )
            except BaseException:  # cancelled, or a bug: nothing accepted is forgotten
                self._mem.extend(recs)
                self._acks[:0] = acks
                self._acked_pending += acked
                for w in waiters:
                    if not w.done():
                        w.set_result(None)
                raise
            self.commits += out.persisted
            self.committed += n_new
            new_rows = bool(recs) or (out.persisted and bool(mem))
            if out.persisted:
                self._mem.clear()
                if mem:
                    log.info(
                        "outbox %s: writable again: %d reading(s) held in memory written",
                        self.path.name,
                        sum(r.n - rg.count(r.done) for r in mem),
                    )
                if fix is not None or out.dropped or out.set_aside:
                    self._tail.clear()
                else:
                    self._remember(recs)
            else:
                self._acks[:0] = acks  # retried with the next commit
                self._acked_pending += acked
                self._tail.clear()
                self._hold(out.kept)
                if fix is not None:
                    self._fix_base = fix
                    self._mem.fix(fix)
                if retry:
                    self._retry_at = self._mono() + self.retry_interval
            self._apply(out)
            self._update_visible()
            for w in waiters:
                if not w.done():
                    w.set_result(None)
            if new_rows or out.set_aside:
                self.wake_readers()

    def _hold(self, recs: list[Rec]) -> None:
        """Keep what could not be written in memory: the oldest fall out, counted."""
        lost = self._mem.replace(recs)
        if lost:
            self._w.mem_drops += lost
            self._note_drops(lost, "nothing can be written and the memory buffer is full")

    def _apply(self, out: Outcome) -> None:
        """Loop side of an outcome: counters, alarms, logs."""
        if out.fault != self._fault:
            if out.fault is not None and self._fault is None:
                log.error(
                    "outbox %s: cannot write (%s): keeping readings in memory (up to %s), "
                    "retrying every %.0f s",
                    self.path,
                    out.fault,
                    statedir.mib(self._mem.limit),
                    self.retry_interval,
                )
            elif out.fault is None:
                log.info("outbox %s: writing again", self.path.name)
            self._fault = out.fault
        self._alarms.extend(out.aside_msgs)
        if out.dropped:
            self._note_drops(out.dropped, out.reason)

    def _note_drops(self, n: int, reason: str) -> None:
        now = self._mono()
        self._last_drop = now
        if self._episode is None:
            self._episode = (now, n, reason)
            log.warning(
                "outbox %s: dropping the oldest readings (%s): %d so far; one message per "
                "episode (drops in metrics, /health and cityedge status)",
                self.path.name,
                reason,
                n,
            )
        else:
            start, total, why = self._episode
            self._episode = (start, total + n, why)

    def _end_episode(self) -> None:
        ep = self._episode
        if ep is not None and self._mono() - self._last_drop >= EPISODE_QUIET:
            self._episode = None
            log.info(
                "outbox %s: no longer dropping: %d reading(s) dropped over %.0f s (%s)",
                self.path.name,
                ep[1],
                self._last_drop - ep[0],
                ep[2],
            )

    def _remember(self, recs: list[Rec]) -> None:
        tail = self._tail
        if not recs:
            return
        first = recs[0].first
        if tail and tail[-1].id != first - 1:
            tail.clear()
        for r in recs:
            assert r.parts is not None
            tail.extend(OutboxRow(r.first + i, r.ts, d) for i, d in enumerate(r.parts))
            r.parts = None  # the packed blob stays, in case it is held in memory later
        while len(tail) > TAIL_ROWS:
            tail.popleft()

    # -- publisher side ------------------------------------------------------------------
    @property
    def last_id(self) -> int:
        """Highest id committed (or held in memory and sendable) so far: rows with a smaller
        id are all visible to ``read``."""
        return self._visible

    def _update_visible(self) -> None:
        vis = self._w.store.last_id if self._w.store is not None else 0
        vis = max(vis, self._mem.last_sendable(self._w.durable_hwm))
        self._visible = max(self._visible, vis)

    async def read(self, after_id: int, limit: int) -> list[OutboxRow]:
        """Up to ``limit`` readings with ``id > after_id``, oldest first."""
        if self._shut:
            raise OutboxError(self.path, "closed")
        tail = self._tail
        while tail and tail[0].id <= after_id:  # read before: the publisher moved on
            tail.popleft()
        skip = rg.merged(self._acks) if self._acks else None
        if tail and tail[0].id == after_id + 1:
            self.tail_reads += 1
            rows = list(itertools.islice(tail, limit))
            if skip and skip[-1][1] >= rows[0].id:
                rows = [r for r in rows if not rg.contains(skip, r.id)]
            if rows:
                return rows
        rows = []
        if self._w.store is not None:
            loop = asyncio.get_running_loop()
            rows, out = await loop.run_in_executor(
                self._executor, self._w.read, after_id, limit, skip
            )
            if out.set_aside or out.aside_msgs:
                self._tail.clear()
                self._acks = []
                self._acked_pending = 0
                self._apply(out)
                self._update_visible()
        if len(rows) < limit and self._mem:
            after = rows[-1].id if rows else after_id
            rows += self._mem.read(after, limit - len(rows), self._w.durable_hwm)
        return rows

    def _read_sync(self, after_id: int, limit: int) -> list[OutboxRow]:
        """What the file holds (tests compare the tail against it)."""
        return self._executor.submit(self._w.read, after_id, limit).result()[0]

    async def wait_for_rows(self, after_id: int) -> None:
        """Return when a row with ``id > after_id`` is committed, or on ``wake_readers``."""
        start = after_id + 1
        if self._acks:  # acknowledged, not yet deleted: nothing to read there
            start = rg.first_gap(rg.merged(self._acks), start)
        if self.last_id >= start:
            return
        await self._rows_event.wait()

    def wake_readers(self) -> None:
        self._rows_event.set()
        self._rows_event = asyncio.Event()

    def ack(self, first_id: int, last_id: int, count: int) -> None:
        """Readings ``first_id..last_id`` (``count`` of them) were acknowledged: delete them
        with the next group commit (those still in memory at once)."""
        if self._mem:  # at once in memory; the file too, should a commit take them meanwhile
            self._mem.ack(first_id, last_id)
            if first_id > (self._w.store.last_id if self._w.store else 0):
                count = 0
        self._acks.append((first_id, last_id))
        if len(self._acks) > 64:
            self._acks = rg.merged(self._acks)
        self._acked_pending += count
        self._wake.set()

    def correct_unsynced(self, offset: ClockOffset) -> None:
        """The clock was synchronised: readings taken before (flagged ``unsynced``) get their
        time corrected from their monotonic time, exactly, whatever steps the clock took
        before. Queues one fix row for the storage thread (written with the next commit; the
        event loop never waits for it); it covers the readings of this boot only."""
        if self._shut:
            return
        base = round((offset.wall_at - offset.mono_at) * 1000)
        self._bases.synced(base, round(offset.mono_at * 1000))  # readings still on their way
        self._fix_base = base
        self._mem.fix(base)
        self._tail.clear()
        self._wake.set()

    @property
    def memory_bytes(self) -> int:
        return self._mem.limit

    @memory_bytes.setter
    def memory_bytes(self, limit: int) -> None:
        self._mem.limit = limit

    def stats(self) -> OutboxStats:
        mem = self._mem.readings()
        alarms = list(self._alarms)
        if self._episode is not None:
            start, n, why = self._episode
            alarms.append(
                f"dropping the oldest readings ({why}): {n} in {self._mono() - start:.0f} s"
            )
        w = self._w
        return OutboxStats(
            max(0, w.depth + mem - self._acked_pending),
            self._oldest_age(),
            w.drops + w.mem_drops,
            self.commits,
            self.committed,
            self.last_id,
            w.live,
            w.eff_budget,
            mem,
            w.set_aside,
            None
            if self._fault is None
            else f"cannot write {self.path} ({self._fault}): {mem} reading(s) held in memory",
            tuple(alarms),
        )

    def _oldest_age(self) -> float | None:
        o = self._w.oldest
        if o is None:
            r = self._mem.first()
            if r is None:
                return None
            o = (r.ts, r.base, self._boot)
        ts, base, boot = o
        if boot == self._boot:  # this boot: monotonic age
            return max(0.0, self._mono() - (ts - base) / 1000)
        return max(0.0, self._clock() - ts / 1000)

    async def close(self) -> None:
        """Commit what is queued, stop ``run`` and close the database."""
        if self._closed:
            return
        self._closed = True  # late submits fail loudly instead of waiting for a commit forever
        await self.flush()
        for ev in (self._wake, self._rows_in, self._full):  # whichever wait ``run`` is in
            ev.set()
        self.wake_readers()
        async with self._lock:
            self._shut = True
            loop = asyncio.get_running_loop()
            await loop.run_in_executor(
                self._executor,
                self._w.close,
                list(self._mem.recs),
                self._acks,
                self._next_id,
                self._fault is None,
            )
        self._executor.shutdown(wait=False)
