"""Durable store-and-forward between the pipeline and the MQTT publisher (SQLite, WAL).

One row per reading: ``id INTEGER PRIMARY KEY AUTOINCREMENT`` is the reading's stable delivery
id (AUTOINCREMENT never reuses an id, even after the table was emptied), ``ts`` the commit time
(wall clock ms, for the age bound) and ``data`` the reading as native JSON (``to_dict`` form).

Group commit: ``submit`` queues rows and waits; ``run`` commits every ``commit_interval`` seconds
or as soon as ``commit_rows`` rows wait, whichever comes first, so a poll batch is accepted within
about ``commit_interval`` plus one fsync.

``synchronous=FULL``: in WAL mode NORMAL already survives a process crash (``kill -9``), but a
power cut can lose the last transactions, and losing power is the normal failure of a
pole-mounted gateway. FULL costs one WAL fsync per commit; group commit caps that at ~10/s, which
SD cards and eMMC handle, so "accepted" means on stable storage.

Deletion happens only after the publisher saw the PUBACK (``ack``); acks are committed with the
next group of readings, or after ``ACK_DELAY`` when none come. When the table holds more than
``max_rows`` or rows older than ``max_age`` the oldest are dropped and counted in a persistent
counter.

All SQLite work runs on one dedicated thread so an fsync never blocks the event loop.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import sqlite3
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from agent.encoders.native import reading_from_json, reading_json
from agent.reading import Reading
from agent.waits import wait_event

log = logging.getLogger("cityedge.outbox")

EXPIRY_PERIOD = 5.0  # seconds between age-bound checks when nothing else is committed
ACK_DELAY = 1.0  # seconds acks alone wait for readings to share their commit
TAIL_ROWS = 4_000  # rows of the latest commits kept for the publisher (~2 MB at most)

SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    ts INTEGER NOT NULL,
    data BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
INSERT OR IGNORE INTO meta(key, value) VALUES ('schema', 1), ('drops', 0);
"""


class OutboxError(Exception):
    def __init__(self, path: Path, reason: str) -> None:
        super().__init__(f"outbox {path}: {reason}")
        self.path = path
        self.reason = reason


# not frozen: one is built per reading committed, and a frozen dataclass costs three times
# as much to construct (0.77 us against 0.25 us); treated as immutable
@dataclass(slots=True)
class OutboxRow:
    id: int  # stable delivery id of the reading
    ts_ms: int  # commit time, UTC epoch ms
    data: bytes  # the reading as native JSON (see agent.encoders.native.reading_json)

    @property
    def reading(self) -> Reading:
        return reading_from_json(self.data)


@dataclass(frozen=True, slots=True)
class OutboxStats:
    depth: int  # rows waiting for a PUBACK
    oldest_age_s: float | None  # age of the oldest waiting row (commit time), None when empty
    drops: int  # rows dropped by the size/age bounds since the database was created
    commits: int  # transactions committed by this process
    committed: int  # readings committed by this process
    last_id: int  # highest id ever assigned


# Rows hold the reading in its native JSON form (Reading.to_dict): the native publisher splices
# the bytes without re-encoding, the other encoders get a Reading back.
encode_reading = reading_json
decode_reading = reading_from_json


@dataclass(slots=True)
class _Commit:
    last_id: int
    deleted: int
    dropped: int
    depth: int
    oldest_ts: int | None


class Outbox:
    def __init__(
        self,
        path: Path,
        *,
        max_rows: int = 1_000_000,
        max_age: float | None = 7 * 86400.0,
        commit_interval: float = 0.1,
        commit_rows: int = 5000,
        synchronous: str = "FULL",
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.path = path
        self.max_rows = max_rows
        self.max_age = max_age
        self.commit_interval = commit_interval
        self.commit_rows = commit_rows
        self._clock = clock
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute(f"PRAGMA synchronous={synchronous}")
            self._db.execute("PRAGMA journal_size_limit=67108864")
            # the hot pages are the two ends of one b-tree (appends, oldest-first reads and
            # deletes): 256 KiB of page cache instead of the default 2 MiB, on 1 GB gateways
            self._db.execute("PRAGMA cache_size=-256")
            self._db.executescript(SCHEMA)
            (self._depth,) = self._db.execute("SELECT count(*) FROM outbox").fetchone()
            seq = self._db.execute("SELECT seq FROM sqlite_sequence WHERE name='outbox'").fetchone()
            (self._drops,) = self._db.execute("SELECT value FROM meta WHERE key='drops'").fetchone()
            oldest = self._db.execute("SELECT ts FROM outbox ORDER BY id LIMIT 1").fetchone()
        except sqlite3.Error as exc:
            raise OutboxError(path, str(exc)) from exc
        self._last_id: int = seq[0] if seq else 0
        self._oldest_ts: int | None = oldest[0] if oldest else None
        self._executor = ThreadPoolExecutor(1, thread_name_prefix=f"outbox-{path.stem}")
        self._pending: list[tuple[int, bytes]] = []
        # The rows of the latest commits, as committed: a publisher that keeps up reads them
        # from here instead of SELECTing back what it just wrote (a thread round trip per
        # commit). Contiguous ids only; anything else is read from the database.
        self._tail: deque[OutboxRow] = deque()
        self._waiters: list[asyncio.Future[None]] = []
        self._acks: list[tuple[int, int]] = []
        self._acked_pending = 0
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

    # -- producer side -------------------------------------------------------------------
    async def submit(self, batch: Sequence[Reading]) -> None:
        """Return once every reading of ``batch`` is committed (needs ``run`` or ``flush``)."""
        if self._closed:
            raise OutboxError(self.path, "closed")
        if not batch:
            return
        ts = int(self._clock() * 1000)
        self._pending.extend((ts, encode_reading(r)) for r in batch)
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(fut)
        self._wake.set()
        self._rows_in.set()
        if len(self._pending) >= self.commit_rows:
            self._full.set()
        await fut

    async def run(self) -> None:
        """Group-commit loop; returns after ``close``."""
        while not self._closed:
            await wait_event(self._wake, EXPIRY_PERIOD)  # idle: still expire old rows
            if self._closed:
                break
            if not self._pending and self._acks:
                # Acks alone are not urgent (an ack lost to a crash is a redelivery the
                # platform drops by id): they ride with the next readings, which on a polling
                # gateway come within a cycle, instead of costing a commit and an fsync each.
                await wait_event(self._rows_in, ACK_DELAY)
            if self._pending and len(self._pending) < self.commit_rows:
                await wait_event(self._full, self.commit_interval)
            if self._shut:  # close() committed the rest meanwhile
                break
            await self.flush()

    async def flush(self) -> None:
        """Commit queued rows and acks now."""
        async with self._lock:
            if self._shut:
                return
            self._wake.clear()
            self._full.clear()
            self._rows_in.clear()
            rows, self._pending = self._pending, []
            waiters, self._waiters = self._waiters, []
            acks, self._acks = self._acks, []
            acked, self._acked_pending = self._acked_pending, 0
            now = self._clock()
            expire = now - self._last_expiry >= EXPIRY_PERIOD
            if not rows and not acks and not expire:
                return
            if expire:
                self._last_expiry = now
            loop = asyncio.get_running_loop()
            try:
                res = await loop.run_in_executor(
                    self._executor, self._commit_sync, rows, acks, int(now * 1000), expire
                )
            except BaseException as exc:
                err = OutboxError(self.path, f"commit failed: {exc!r}")
                for w in waiters:
                    if not w.done():
                        w.set_exception(err)
                self._acks[:0] = acks  # retried with the next commit
                self._acked_pending += acked
                raise
            if res.dropped:
                log.warning(
                    "outbox %s full: dropped %d oldest reading(s)", self.path.name, res.dropped
                )
            self.commits += 1
            self.committed += len(rows)
            self._drops += res.dropped
            self._depth, self._oldest_ts = res.depth, res.oldest_ts
            new_rows = res.last_id > self._last_id
            self._remember(rows, res)
            self._last_id = res.last_id
            for w in waiters:
                if not w.done():
                    w.set_result(None)
            if new_rows:
                self.wake_readers()

    def _remember(self, rows: list[tuple[int, bytes]], res: _Commit) -> None:
        tail = self._tail
        first = res.last_id - len(rows) + 1
        # AUTOINCREMENT gives one transaction's inserts consecutive ids (single writer);
        # a drop may have removed some of them, and a gap means the tail is not the table's end
        if res.dropped or (tail and tail[-1].id != first - 1) or first != self._last_id + 1:
            tail.clear()
            if res.dropped:
                return
        tail.extend(OutboxRow(first + i, ts, data) for i, (ts, data) in enumerate(rows))
        while len(tail) > TAIL_ROWS:
            tail.popleft()

    def _commit_sync(
        self,
        rows: list[tuple[int, bytes]],
        acks: list[tuple[int, int]],
        now_ms: int,
        expire: bool,
    ) -> _Commit:
        db = self._db
        db.execute("BEGIN IMMEDIATE")
        try:
            deleted = 0
            for ab in acks:
                deleted += db.execute("DELETE FROM outbox WHERE id BETWEEN ? AND ?", ab).rowcount
            if rows:
                db.executemany("INSERT INTO outbox(ts, data) VALUES (?, ?)", rows)
            depth = self._depth - deleted + len(rows)
            dropped = 0
            if depth > self.max_rows:
                cut = db.execute(
                    "SELECT id FROM outbox ORDER BY id LIMIT 1 OFFSET ?",
                    (depth - self.max_rows - 1,),
                ).fetchone()
                if cut is not None:
                    dropped += db.execute("DELETE FROM outbox WHERE id <= ?", cut).rowcount
            if expire and self.max_age is not None:
                cutoff = now_ms - int(self.max_age * 1000)
                young = db.execute(
                    "SELECT id FROM outbox WHERE ts >= ? ORDER BY id LIMIT 1", (cutoff,)
                ).fetchone()
                dropped += db.execute(
                    "DELETE FROM outbox WHERE id < ?", young if young else (1 << 62,)
                ).rowcount
            if dropped:
                db.execute("UPDATE meta SET value = value + ? WHERE key='drops'", (dropped,))
                depth -= dropped
            seq = db.execute("SELECT seq FROM sqlite_sequence WHERE name='outbox'").fetchone()
            oldest = db.execute("SELECT ts FROM outbox ORDER BY id LIMIT 1").fetchone()
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        return _Commit(seq[0] if seq else 0, deleted, dropped, depth, oldest[0] if oldest else None)

    # -- publisher side ------------------------------------------------------------------
    @property
    def last_id(self) -> int:
        """Highest id committed so far (rows with a smaller id are all visible to ``read``)."""
        return self._last_id

    async def read(self, after_id: int, limit: int) -> list[OutboxRow]:
        """Up to ``limit`` committed rows with ``id > after_id``, oldest first."""
        if self._shut:
            raise OutboxError(self.path, "closed")
        tail = self._tail
        while tail and tail[0].id <= after_id:  # read before: the publisher moved on
            tail.popleft()
        if tail and tail[0].id == after_id + 1:
            self.tail_reads += 1
            return list(itertools.islice(tail, limit))
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self._read_sync, after_id, limit)

    def _read_sync(self, after_id: int, limit: int) -> list[OutboxRow]:
        cur = self._db.execute(
            "SELECT id, ts, data FROM outbox WHERE id > ? ORDER BY id LIMIT ?", (after_id, limit)
        )
        return [OutboxRow(i, ts, d) for i, ts, d in cur]

    async def wait_for_rows(self, after_id: int) -> None:
        """Return when a row with ``id > after_id`` is committed, or on ``wake_readers``."""
        if self._last_id > after_id:
            return
        await self._rows_event.wait()

    def wake_readers(self) -> None:
        self._rows_event.set()
        self._rows_event = asyncio.Event()

    def ack(self, first_id: int, last_id: int, count: int) -> None:
        """Rows ``first_id..last_id`` (``count`` of them) were acknowledged: delete them with
        the next group commit."""
        self._acks.append((first_id, last_id))
        self._acked_pending += count
        self._wake.set()

    def correct_unsynced(self, fix: Callable[[Reading], Reading]) -> int:
        """Rewrite the stored readings taken before the wall clock was synchronised (gateways
        without RTC boot in 1970 or at the last shutdown time). Runs on the database thread,
        between group commits; rows already published are the platform's to correct (they carry
        ``timeQuality: unsynced``)."""

        def work() -> int:
            rows = self._db.execute(
                "SELECT id, data FROM outbox WHERE instr(data, ?) > 0",
                (b'"timeQuality":"unsynced"',),
            ).fetchall()
            updates = [(encode_reading(fix(decode_reading(d))), i) for i, d in rows]
            if updates:
                self._db.execute("BEGIN")
                self._db.executemany("UPDATE outbox SET data = ? WHERE id = ?", updates)
                self._db.execute("COMMIT")
            return len(updates)

        if self._shut:
            return 0
        self._tail.clear()
        return self._executor.submit(work).result(timeout=60)

    def stats(self) -> OutboxStats:
        age = None if self._oldest_ts is None else max(0.0, self._clock() - self._oldest_ts / 1000)
        return OutboxStats(
            max(0, self._depth - self._acked_pending),
            age,
            self._drops,
            self.commits,
            self.committed,
            self._last_id,
        )

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
            await loop.run_in_executor(self._executor, self._db.close)
        self._executor.shutdown(wait=False)
