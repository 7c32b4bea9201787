"""Durable store-and-forward between the pipeline and the MQTT publisher (SQLite, WAL).

Group commit: ``submit`` queues readings and waits; ``run`` commits every ``commit_interval``
seconds or as soon as ``commit_rows`` readings wait, whichever comes first, so a poll batch is
accepted within about ``commit_interval`` plus one fsync. Each commit stores one compressed
record (``agent/outbox_codec.py``, ``agent/outbox_store.py``): about 20 bytes of disk per
reading instead of ~375 for a row of JSON, and one row to insert and delete instead of hundreds.

Delivery ids: every reading gets the next id when its commit starts; the platform
de-duplicates on it. Ids continue across restarts and are never reused, even when the file is
lost (``<file>.ids`` keeps how far ids were handed out; after an unclean stop the next ones
start past that reservation).

``synchronous=FULL``: in WAL mode NORMAL already survives a process crash (``kill -9``), but a
power cut can lose the last transactions, and losing power is the normal failure of a
pole-mounted gateway. FULL costs one WAL fsync per commit; group commit caps that at ~10/s.

Deletion happens only after the publisher saw the PUBACK (``ack``); acks are committed with the
next group of readings, or after ``ACK_DELAY`` when none come. A record acknowledged in part
keeps the offsets done (``agent/outbox_ranges.py``): nothing acknowledged is sent again after a
restart, nothing unacknowledged is deleted.

Bounds: ``max_bytes`` (of live pages; default derived from the free space, see
``agent/statedir.py``), ``max_rows`` and ``max_age``; beyond them the oldest readings are
dropped and counted in a persistent counter, with one warning per episode.

Storage faults never take the agent down:
- disk full (SQLITE_FULL, ENOSPC, EIO on write, at any statement or the commit): evict the
  oldest records, lower the budget to what fits, retry; a reserve file gives deletes room;
- nothing can be written (read-only, wrong owner, still full): the newest readings are kept in
  a bounded memory buffer (what falls out is counted as dropped); writes are retried every
  ``retry_interval`` and the buffer goes to disk once they work again. Memory records are sent
  only within the id reservation (so a crash cannot make their ids be reused);
- damaged file (on open, read or write): set aside with its WAL under a dated name, logged at
  critical, a health alarm raised, a fresh file started (``cityedge outbox salvage``).

Clock sync: rows carry the boot id and ``wall - monotonic`` at submit, so a reading's monotonic
time is known; ``correct_unsynced`` queues one fix row (boot, ids so far, clock base) written
with the next commit on the storage thread, and readings are corrected when read.

All SQLite work runs on one dedicated thread so an fsync never blocks the event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from agent import outbox_ranges as rg
from agent import statedir
from agent.outbox_codec import corrected, reading_from_json, reading_json
from agent.outbox_files import AckLog, finish_move_aside, move_aside, read_ids, write_ids
from agent.outbox_store import Store
from agent.outbox_types import (
    CommitIn,
    OutboxRow,
    Rec,
    StoreFault,
    boot_number,
    read_boot_id,
)
from agent.reading import Reading, iso_ms
from agent.timesync import ClockOffset
from agent.waits import wait_event

__all__ = [
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
BASE_TOLERANCE_MS = 20  # a clock step larger than this between submits starts a new record
EPISODE_QUIET = 60.0  # seconds without a drop that end a dropping episode
ID_BLOCK = 10_000_000  # delivery ids reserved ahead in <file>.ids
MIN_BUDGET = 64 * 1024

encode_reading = reading_json
decode_reading = reading_from_json


class OutboxError(Exception):
    def __init__(self, path: Path, reason: str) -> None:
        super().__init__(f"outbox {path}: {reason}")
        self.path = path
        self.reason = reason


@dataclass(frozen=True, slots=True)
class OutboxStats:
    depth: int  # readings waiting for a PUBACK (on disk and in memory)
    oldest_age_s: float | None  # age of the oldest waiting reading (commit time), None when empty
    drops: int  # readings dropped by the bounds or faults since the file was created
    commits: int  # transactions committed by this process
    committed: int  # readings accepted by this process
    last_id: int  # highest id assigned
    bytes: int = 0  # live bytes of the file
    budget: int = 0  # byte budget in force (lowered while the disk is full)
    memory: int = 0  # readings held in memory because nothing can be written
    set_aside: int = 0  # readings in damaged files set aside (salvage can recover them)
    fault: str | None = None  # why nothing can be written now (health: failing)
    alarms: tuple[str, ...] = ()  # drop episode, damaged file set aside (health: degraded)


@dataclass(slots=True)
class _Outcome:
    """What a storage-thread job did, applied on the loop afterwards."""

    persisted: bool = False
    acked: int = 0
    dropped: int = 0
    reason: str = ""  # why readings were dropped
    kept: list[Rec] = field(default_factory=list)  # not written: stay in memory
    fault: str | None = None
    set_aside: int = 0
    aside_msgs: list[str] = field(default_factory=list)


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
        self.max_rows = max_rows
        self.max_age = max_age
        self.commit_interval = commit_interval
        self.commit_rows = commit_rows
        self.memory_bytes = memory_bytes
        self.retry_interval = retry_interval
        self._sync = synchronous
        self._clock = clock
        self._mono = mono
        self._boot_id = boot_id if boot_id is not None else read_boot_id()
        self.budget, self.budget_source = statedir.budget_for(path.parent, max_bytes)
        self._configured_bytes = max_bytes
        self._eff_budget = self.budget
        self._executor = ThreadPoolExecutor(1, thread_name_prefix=f"outbox-{path.stem}")
        self._store: Store | None = None
        self._pending: list[Rec] = []
        self._pending_n = 0
        # The readings of the latest commits, as committed: a publisher that keeps up reads
        # them from here instead of SELECTing back what it just wrote (a thread round trip per
        # commit). Contiguous ids only; anything else is read from the database.
        self._tail: deque[OutboxRow] = deque()
        self._waiters: list[asyncio.Future[None]] = []
        self._acks: list[tuple[int, int]] = []
        self._acked_pending = 0
        self._mem: deque[Rec] = deque()  # written nowhere yet (faults), oldest first
        self._mem_bytes = 0
        self._mem_drops = 0  # dropped from memory, not yet in the file's counter
        self._fix_base: int | None = None  # a clock fix waiting for a commit
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
        self._depth = 0
        self._drops = 0
        self._set_aside = 0
        self._oldest: tuple[int, int, int] | None = None
        self._live = 0
        self._durable_hwm = 0  # ids up to this are reserved in <file>.ids
        self._next_id = 1
        self._visible = 0
        self._open_sync()

    # -- opening (construction: before the loop runs anything else) ------------------------
    def _open_sync(self) -> None:
        ids = read_ids(self.path)
        out = _Outcome()
        self._acklog = AckLog(self.path)
        # acknowledged, or lost from memory, while nothing could be written
        self._acks, self._mem_drops = self._acklog.read()
        with contextlib.suppress(OSError):
            done = finish_move_aside(self.path)  # a set-aside interrupted by a crash
            if done is not None:
                out.aside_msgs.append(self._aside_message(done, "interrupted move completed"))
        st = self._ensure_store(out, ids)
        last = st.last_id if st is not None else 0
        if ids.get("clean") == 1 and st is not None:
            nxt = max(last, ids.get("last", 0)) + 1
        else:  # unclean stop or no file: skip whatever may have been handed out
            nxt = max(last, ids.get("hwm", 0), ids.get("last", 0)) + 1
            if not ids and out.aside_msgs:  # the ids were in the damaged file alone
                nxt = max(nxt, int(self._clock()) * 1000)
        self._next_id = nxt
        self._reserve_ids(clean=False)
        self._apply(out)
        self._update_visible()

    def _ensure_store(self, out: _Outcome, ids: dict[str, int] | None = None) -> Store | None:
        """The open store, opening (or re-opening) it when needed; storage thread or
        construction only."""
        if self._store is not None:
            return self._store
        for attempt in range(3):
            try:
                self._store = Store.open(
                    self.path,
                    synchronous=self._sync,
                    boot_id=self._boot_id,
                    max_bytes=self.budget,
                )
                break
            except StoreFault as f:
                out.fault = f"{f.kind}: {f.detail}"
                if f.kind == "corrupt" and attempt == 0:
                    self._move_aside(None, f, out, ids or read_ids(self.path))
                else:
                    return None
        st = self._store
        if st is not None:
            out.fault = None if not st.readonly else "readonly: the file cannot be written"
            if out.set_aside:
                st.note_set_aside(out.set_aside)
            self._sync_from(st)
        return st

    def _sync_from(self, st: Store) -> None:
        self._depth, self._drops, self._set_aside = st.depth, st.drops, st.set_aside
        self._oldest, self._live = st.oldest, st.live

    def _reserve_ids(self, clean: bool) -> None:
        """Write the id reservation (or the clean-close mark); storage thread or construction."""
        last = self._next_id - 1
        hwm = last if clean else last + ID_BLOCK
        doc = {"clean": int(clean), "last": last, "hwm": max(hwm, self._durable_hwm)}
        st = self._store
        if clean and st is not None:
            doc["depth"] = st.depth
            with contextlib.suppress(Exception):
                doc["first"] = st.first_id() or 0
        try:
            write_ids(self.path, doc)
        except OSError:
            return
        self._durable_hwm = doc["hwm"]

    def _aside_message(self, dest: Path, why: str) -> str:
        return (
            f"outbox {self.path.name} was damaged ({why}) and set aside as {dest}; recover "
            f"its readings with: cityedge outbox salvage {dest}"
        )

    def _move_aside(
        self, st: Store | None, f: StoreFault, out: _Outcome, ids: dict[str, int]
    ) -> None:
        """Storage thread: close the damaged file and move it (with WAL and SHM) aside."""
        manifest: dict[str, object] = {
            "reason": f.detail,
            "time": iso_ms(int(self._clock() * 1000)),
        }
        held = 0
        if st is not None:
            held = st.depth
            with contextlib.suppress(Exception):
                manifest["first_id"] = st.first_id() or 0
            manifest.update(last_id=st.last_id, depth=st.depth, drops=st.drops)
            st.close()
        else:
            manifest.update({f"ids_{k}": v for k, v in ids.items()})
            if ids.get("clean") == 1 and "depth" in ids:
                held = ids["depth"]
                manifest.update(depth=ids["depth"], first_id=ids.get("first", 0))
                manifest.update(last_id=ids.get("last", 0))
        self._store = None
        try:
            dest = move_aside(self.path, manifest, self._clock())
        except OSError as exc:
            log.critical("outbox %s: damaged and cannot be set aside: %s", self.path, exc)
            out.fault = f"damaged file cannot be moved aside: {exc}"
            return
        msg = self._aside_message(dest, f.detail)
        log.critical("%s", msg)
        out.aside_msgs.append(msg)
        out.set_aside += held

    # -- producer side -------------------------------------------------------------------
    async def submit(self, batch: Sequence[Reading]) -> None:
        """Return once every reading of ``batch`` is committed (needs ``run`` or ``flush``),
        or held in the memory buffer while nothing can be written."""
        if self._closed:
            raise OutboxError(self.path, "closed")
        if not batch:
            return
        wall = self._clock()
        ts = int(wall * 1000)
        base = int((wall - self._mono()) * 1000)
        rec = self._pending[-1] if self._pending else None
        if rec is None or abs(rec.base - base) > BASE_TOLERANCE_MS:
            rec = Rec(0, 0, ts, base, 0, [])
            self._pending.append(rec)
        parts = rec.parts
        assert parts is not None
        parts.extend([reading_json(r) for r in batch])
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
            mem = list(self._mem)
            loop = asyncio.get_running_loop()
            try:
                out = await loop.run_in_executor(
                    self._executor, self._commit_job, mem, recs, acks, now, expire, fix, retry
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
                self._mem_bytes = 0
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
                if fix is not None:
                    self._fix_base = fix
                    for r in out.kept:
                        if r.unsynced and r.fix is None and r.boot is None:
                            r.fix = fix - r.base
                self._tail.clear()
                self._hold(out.kept)
                if retry:
                    self._retry_at = self._mono() + self.retry_interval
            self._apply(out)
            self._update_visible()
            for w in waiters:
                if not w.done():
                    w.set_result(None)
            if new_rows or out.set_aside:
                self.wake_readers()

    def _commit_job(
        self,
        mem: list[Rec],
        recs: list[Rec],
        acks: list[tuple[int, int]],
        now: float,
        expire: bool,
        fix: int | None,
        retry: bool,
    ) -> _Outcome:
        """Storage thread: write memory records and new ones in one commit, handling faults."""
        out = _Outcome()
        for r in recs:
            r.packed()
        allrecs = [*mem, *recs]
        if not retry:
            out.kept, out.fault = allrecs, self._fault
            return out
        if self._store is not None and self._store.readonly:  # writable again?
            self._store.close()
            self._store = None
        st = self._ensure_store(out)
        if st is not None:
            self._space(st, expire)
        cutoff = None
        if expire and self.max_age is not None:
            age_ms = int(self.max_age * 1000)
            cutoff = (int(now * 1000) - age_ms, int(self._mono() * 1000) - age_ms)
        extra = self._mem_drops
        for attempt in range(5):
            if st is None:
                break
            try:
                res = st.commit(
                    CommitIn(allrecs, acks, self._eff_budget, self.max_rows, cutoff, fix, extra)
                )
            except StoreFault as f:
                out.fault = f"{f.kind}: {f.detail}"
                if f.kind == "corrupt":
                    self._move_aside(st, f, out, {})
                    st = self._ensure_store(out)
                    acks = []  # of readings in the damaged file: nothing to delete now
                    continue
                if f.kind != "full" or not self._make_room(st, allrecs, attempt, out):
                    break
                continue
            out.persisted, out.fault = True, None
            out.acked = res.acked
            self._acklog.clear()
            if res.dropped:
                out.dropped += res.dropped
                out.reason = out.reason or (
                    "disk nearly full"
                    if res.budget_dropped and self._eff_budget < self.budget
                    else f"byte budget {statedir.mib(self.budget)}"
                    if res.budget_dropped
                    else "row or age limit"
                )
            self._mem_drops = 0
            if self._next_id - 1 > self._durable_hwm - ID_BLOCK // 2:
                self._reserve_ids(clean=False)
            break
        if not out.persisted:
            out.kept = allrecs
            if acks or self._mem_drops:  # so that a restart does not send them again
                self._acklog.write(acks, self._mem_drops)
        if st is not None:
            self._sync_from(st)
        return out

    def _make_room(self, st: Store, recs: list[Rec], attempt: int, out: _Outcome) -> bool:
        """Storage thread, after SQLITE_FULL. First let the WAL start over within its file
        (a checkpoint, with the reserve released if the file needs room for it); then evict
        the oldest records (counted as dropped) and keep the budget to what fits. False when
        nothing more can be done."""
        if attempt == 0:
            if not st.checkpoint():
                st.release_reserve()
                st.checkpoint()
            return True
        need = (sum(len(r.blob or b"") for r in recs) + 64 * 1024) << (attempt - 1)
        try:
            dropped, live = st.make_room(need)
        except StoreFault as f:
            if f.kind != "full" or not st.release_reserve():
                return False
            try:
                dropped, live = st.make_room(need)
            except StoreFault:
                return False
        if dropped:
            out.dropped += dropped
            out.reason = "disk full"
        elif not st.release_reserve():
            return False  # nothing left to evict and no reserve: memory it is
        self._eff_budget = max(MIN_BUDGET, min(self._eff_budget, live))
        return True

    def _space(self, st: Store, housekeeping: bool) -> None:
        """Storage thread, before every commit: keep the file system from filling. While less
        than the reserve's worth is free the budget is lowered to what the file holds (so the
        next records replace the oldest instead of growing the file); it is given back as
        space returns. Every EXPIRY_PERIOD the reserve file is put back when there is room."""
        free = statedir.free_bytes(self.path.parent)
        if free is None or st.readonly:
            return
        room = st.reserve_bytes
        if free < room:
            self._eff_budget = max(MIN_BUDGET, min(self._eff_budget, st.live - (room - free)))
        elif self._eff_budget < self.budget and free > 3 * room:
            self._eff_budget = min(self.budget, self._eff_budget + free - 3 * room)
            if self._eff_budget == self.budget:
                log.info("outbox %s: the disk has room again: budget back to %s",
                         self.path.name, statedir.mib(self.budget))  # fmt: skip
        if housekeeping:
            st.keep_reserve(free)
            self._acklog.ensure()

    def _hold(self, recs: list[Rec]) -> None:
        """Keep what could not be written in memory, newest first: the oldest fall out and are
        counted as dropped."""
        self._mem = deque(r for r in recs if r.n > rg.count(r.done))
        self._mem_bytes = sum(len(r.blob or b"") for r in self._mem)
        lost = 0
        while self._mem and self._mem_bytes > self.memory_bytes:
            r = self._mem.popleft()
            self._mem_bytes -= len(r.blob or b"")
            lost += r.n - rg.count(r.done)
        for r in self._mem:
            r.parts = None  # the packed blob is what memory keeps
        if lost:
            self._mem_drops += lost
            self._note_drops(lost, "nothing can be written and the memory buffer is full")

    def _apply(self, out: _Outcome) -> None:
        """Loop side of an outcome: counters, alarms, logs."""
        if out.fault != self._fault:
            if out.fault is not None and self._fault is None:
                log.error(
                    "outbox %s: cannot write (%s): keeping readings in memory (up to %s), "
                    "retrying every %.0f s",
                    self.path,
                    out.fault,
                    statedir.mib(self.memory_bytes),
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
        vis = self._store.last_id if self._store is not None else 0
        for r in self._mem:
            if r.last <= self._durable_hwm:
                vis = max(vis, r.last)
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
        if self._store is not None:
            loop = asyncio.get_running_loop()
            rows, out = await loop.run_in_executor(
                self._executor, self._read_job, after_id, limit, skip
            )
            if out.set_aside or out.aside_msgs:
                self._tail.clear()
                self._acks = []
                self._acked_pending = 0
                self._apply(out)
                self._update_visible()
        if len(rows) < limit and self._mem:
            rows += self._read_mem(rows[-1].id if rows else after_id, limit - len(rows))
        return rows

    def _read_job(
        self, after_id: int, limit: int, skip: rg.Ranges | None = None
    ) -> tuple[list[OutboxRow], _Outcome]:
        out = _Outcome()
        st = self._store
        if st is None or after_id >= st.last_id:
            return [], out
        try:
            return st.read(after_id, limit, skip), out
        except StoreFault as f:
            if f.kind == "corrupt":
                self._move_aside(st, f, out, {})
                self._ensure_store(out)
            return [], out

    def _read_sync(self, after_id: int, limit: int) -> list[OutboxRow]:
        """What the file holds (tests compare the tail against it)."""
        return self._executor.submit(self._read_job, after_id, limit).result()[0]

    def _read_mem(self, after_id: int, limit: int) -> list[OutboxRow]:
        out: list[OutboxRow] = []
        for r in list(self._mem):
            if r.last <= after_id:
                continue
            if r.last > self._durable_hwm:  # beyond the id reservation: held, not sent
                break
            texts = r.texts()
            for off in range(max(0, after_id + 1 - r.first), r.n):
                if r.done and rg.contains(r.done, off):
                    continue
                t = texts[off]
                out.append(
                    OutboxRow(r.first + off, r.ts, t if r.fix is None else corrected(t, r.fix))
                )
                if len(out) >= limit:
                    return out
        return out

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
            self._ack_mem(first_id, last_id)
            if first_id > (self._store.last_id if self._store else 0):
                count = 0
        self._acks.append((first_id, last_id))
        if len(self._acks) > 64:
            self._acks = rg.merged(self._acks)
        self._acked_pending += count
        self._wake.set()

    def _ack_mem(self, a: int, b: int) -> None:
        keep: deque[Rec] = deque()
        for r in self._mem:
            if r.last >= a and r.first <= b:
                r.done = rg.add(r.done, max(a, r.first) - r.first, min(b, r.last) - r.first)
                if rg.count(r.done) >= r.n:
                    self._mem_bytes -= len(r.blob or b"")
                    continue
            keep.append(r)
        self._mem = keep

    def correct_unsynced(self, offset: ClockOffset) -> None:
        """The clock was synchronised: readings taken before (flagged ``unsynced``) get their
        time corrected from their monotonic time, exactly, whatever steps the clock took
        before. Queues one fix row for the storage thread (written with the next commit; the
        event loop never waits for it); it covers the readings of this boot only."""
        if self._shut:
            return
        base = round((offset.wall_at - offset.mono_at) * 1000)
        self._fix_base = base
        for r in self._mem:
            if r.unsynced and r.fix is None and r.boot is None:
                r.fix = base - r.base
        self._tail.clear()
        self._wake.set()

    def stats(self) -> OutboxStats:
        mem = sum(r.n - rg.count(r.done) for r in self._mem)
        alarms = list(self._alarms)
        if self._episode is not None:
            start, n, why = self._episode
            alarms.append(
                f"dropping the oldest readings ({why}): {n} in {self._mono() - start:.0f} s"
            )
        return OutboxStats(
            max(0, self._depth + mem - self._acked_pending),
            self._oldest_age(),
            self._drops + self._mem_drops,
            self.commits,
            self.committed,
            self.last_id,
            self._live,
            self._eff_budget,
            mem,
            self._set_aside,
            None
            if self._fault is None
            else f"cannot write {self.path} ({self._fault}): {mem} reading(s) held in memory",
            tuple(alarms),
        )

    def _oldest_age(self) -> float | None:
        o = self._oldest
        if o is None:
            if not self._mem:
                return None
            r = self._mem[0]
            o = (r.ts, r.base, boot_number(self._boot_id))
        ts, base, boot = o
        if boot == boot_number(self._boot_id):  # this boot: monotonic age
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
            await loop.run_in_executor(self._executor, self._close_job)
        self._executor.shutdown(wait=False)

    def _close_job(self) -> None:
        st = self._store
        if self._mem or self._mem_drops:  # lost with the process: counted, never silent
            lost = sum(r.n - rg.count(r.done) for r in self._mem)
            self._acklog.write(self._acks, self._mem_drops + lost)
            log.error(
                "outbox %s: stopping with %d reading(s) that could not be written: counted "
                "as dropped",
                self.path.name,
                lost,
            )
        if st is None:
            return
        if not self._mem and not st.readonly and self._fault is None:
            st.checkpoint()
            self._reserve_ids(clean=True)  # every id handed out is in the file
        st.close()
        self._store = None
