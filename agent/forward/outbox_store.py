"""The outbox's SQLite file: records, acknowledgements, bounds, clock fixes.

Everything here runs on the outbox's one storage thread (``agent/forward/outbox_worker.py``),
never on the event loop. Failures are raised as ``StoreFault``
(``agent/forward/outbox_types.py`` says what each kind means to the outbox).

Tables (``SCHEMA``): ``rec`` holds one row per group commit, its readings packed by
``agent/forward/outbox_codec.py``; ``part`` the acknowledged or dropped offsets of records that are
partly done; ``fixes`` the clock corrections (one row per synchronisation); ``meta`` counters.
``rec.boot`` is the boot the readings were taken in (60 bits of the kernel's boot id; -1 when
unknown: converted or salvaged readings), so a correction never touches another boot's rows.
A reading's delivery id is ``rec.id`` plus its offset: ids are assigned by the outbox, continue
across restarts and are never reused.

Disk full: SQLite reuses the pages of deleted records and the WAL reuses its file after a
checkpoint, so an outbox at its size cycles without new blocks. What needs new blocks is a
WAL (and its -shm, needed even to read) recreated after a restart, or a file still growing;
for those the reserve file (``agent/forward/outbox_files.py``) is released the moment the disk is
full. The WAL is checkpointed at half the reserve, so releasing it always lets a checkpoint
finish, and the WAL then starts over within its own file.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
from pathlib import Path

from agent.forward import outbox_files
from agent.forward import outbox_ranges as rg
from agent.forward.outbox_bounds import Deletes
from agent.forward.outbox_codec import RecordError, corrected, unpack
from agent.forward.outbox_types import (
    CommitIn,
    CommitOut,
    OutboxRow,
    StoreFault,
    boot_number,
    fault,
    read_boot_id,
)

log = logging.getLogger("cityedge.outbox")

SCHEMA_VERSION = 2
SCHEMA = """
CREATE TABLE IF NOT EXISTS rec (
    id INTEGER PRIMARY KEY,
    n INTEGER NOT NULL,
    ts INTEGER NOT NULL,
    boot INTEGER NOT NULL,
    base INTEGER NOT NULL,
    unsynced INTEGER NOT NULL,
    data BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS part (id INTEGER PRIMARY KEY, done TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS fixes (
    id INTEGER PRIMARY KEY, boot INTEGER NOT NULL, upto INTEGER NOT NULL, base INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
"""


class Store(Deletes):
    """An open outbox file. Mirrors (depth, drops, last id, partial records, fixes) are kept
    in memory and changed only after a COMMIT succeeded."""

    def __init__(self, path: Path, db: sqlite3.Connection, boot_id: str, readonly: bool) -> None:
        self.path = path
        self._db = db
        self.readonly = readonly
        self.page_size = 4096
        self.last_id = 0
        self.drops = 0
        self.set_aside = 0
        self.depth = 0
        self.boot = boot_number(boot_id)
        self.boot_id = boot_id
        self.oldest: tuple[int, int, int] | None = None  # ts, base, boot of the oldest record
        self.live = 0  # bytes of pages in use, as of the last commit
        self._meta_last = 0  # meta.last_id as written
        self._part: dict[int, rg.Ranges] = {}
        self._fixes: list[tuple[int, int, int]] = []  # (upto, boot, base), by upto
        self._cache: tuple[int, list[bytes]] | None = None  # the last record read, decoded
        self.reserve_bytes = outbox_files.RESERVE_MAX

    # -- opening -------------------------------------------------------------------------
    @classmethod
    def open(
        cls,
        path: Path,
        *,
        synchronous: str = "FULL",
        boot_id: str = "unknown",
        max_bytes: int | None = None,
    ) -> Store:
        """Open (creating or migrating) the file. On a full disk the reserve is released
        first (a WAL database needs its -shm even to be read); a file that still cannot be
        written is opened read-only, so its backlog can be sent. Raises :class:`StoreFault`."""
        try:
            return cls._open(path, synchronous, boot_id, max_bytes, mode="rw")
        except StoreFault as f:
            if f.kind == "corrupt" or not path.exists():
                raise
            if f.kind == "full" and cls.release_reserve_of(path):
                with contextlib.suppress(StoreFault):
                    return cls._open(path, synchronous, boot_id, max_bytes, mode="rw")
        try:
            return cls._open(path, synchronous, boot_id, max_bytes, mode="ro")
        except StoreFault as f:
            if f.kind == "corrupt":
                raise
        # no room even for the -shm: read the file as it is (what only the WAL holds waits)
        return cls._open(path, synchronous, boot_id, max_bytes, mode="immutable")

    @classmethod
    def open_readonly(cls, path: Path) -> Store:
        """For ``cityedge outbox`` beside a running agent (WAL lets readers in)."""
        return cls._open(path, "FULL", read_boot_id(), None, mode="ro")

    @classmethod
    def _open(
        cls, path: Path, synchronous: str, boot_id: str, max_bytes: int | None, mode: str
    ) -> Store:
        db: sqlite3.Connection | None = None
        try:
            if mode != "rw":
                uri = f"file:{path}?mode=ro{'&immutable=1' if mode == 'immutable' else ''}"
                db = sqlite3.connect(uri, uri=True, isolation_level=None, check_same_thread=False)
            else:
                path.parent.mkdir(parents=True, exist_ok=True)
                db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
            st = cls(path, db, boot_id, mode != "rw")
            st._setup(synchronous, max_bytes)
            return st
        except (sqlite3.Error, OSError, RecordError) as exc:
            if db is not None:
                with contextlib.suppress(sqlite3.Error):
                    db.close()
            raise fault(exc) from exc

    def _setup(self, synchronous: str, max_bytes: int | None) -> None:
        db = self._db
        if not self.readonly:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute(f"PRAGMA synchronous={synchronous}")
            # the WAL keeps its file between checkpoints (reused: no new blocks on a full disk)
            try:
                fs = os.statvfs(self.path.parent)
                self.reserve_bytes = outbox_files.reserve_size(fs.f_blocks * fs.f_frsize)
            except OSError:
                pass
            (ps,) = db.execute("PRAGMA page_size").fetchone()
            db.execute(f"PRAGMA wal_autocheckpoint={max(16, self.reserve_bytes // ps // 2)}")
            db.execute(f"PRAGMA journal_size_limit={self.reserve_bytes // 2}")
        # the hot pages are the two ends of one b-tree: 256 KiB of page cache, not 2 MiB
        db.execute("PRAGMA cache_size=-256")
        # Debian builds SQLite with secure_delete on: every page freed by a delete is zeroed,
        # which doubles the writes (SD card wear) and can make deleting acknowledged records
        # need more WAL room than a full disk has. FAST zeroes only inside pages written anyway.
        db.execute("PRAGMA secure_delete=FAST")
        (self.page_size,) = db.execute("PRAGMA page_size").fetchone()
        tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        if not self.readonly:
            if max_bytes is not None:  # hard stop a little above the budget: SQLITE_FULL
                pages = (max_bytes + max(max_bytes // 4, 256 * self.page_size)) // self.page_size
                db.execute(f"PRAGMA max_page_count={pages}")
            if "rec" not in tables:
                db.executescript(SCHEMA)
            db.execute("INSERT OR IGNORE INTO meta VALUES ('schema', ?)", (SCHEMA_VERSION,))
            db.execute("INSERT OR IGNORE INTO meta VALUES ('drops', 0), ('last_id', 0)")
            db.execute("INSERT OR IGNORE INTO meta VALUES ('set_aside', 0)")
            if "outbox" in tables:
                from agent.forward.outbox_maint import migrate

                migrate(self)
        elif "rec" not in tables:
            raise StoreFault(
                "readonly",
                "in the old format (the agent converts it at its next start)"
                if "outbox" in tables
                else "not an outbox file",
            )
        meta = dict(db.execute("SELECT key, value FROM meta"))
        self.drops = int(meta.get("drops", 0))
        self.last_id = self._meta_last = int(meta.get("last_id", 0))
        self.set_aside = int(meta.get("set_aside", 0))
        self._part = {i: rg.from_text(t) for i, t in db.execute("SELECT id, done FROM part")}
        self._fixes = sorted(
            (u, b, base) for u, b, base in db.execute("SELECT upto, boot, base FROM fixes")
        )
        total = db.execute("SELECT coalesce(sum(n), 0), max(id + n - 1) FROM rec").fetchone()
        self.depth = total[0] - sum(rg.count(r) for r in self._part.values())
        self.last_id = max(self.last_id, total[1] or 0)
        self.live = self.live_bytes()
        self._load_oldest()

    # -- writing -------------------------------------------------------------------------
    def commit(self, c: CommitIn) -> CommitOut:
        """One transaction: acknowledgements, new records, bounds, a clock fix, counters."""
        if self.readonly:
            raise StoreFault("readonly", "opened read-only (the file cannot be written)")
        for r in c.recs:
            r.packed()  # compress before taking the write lock
        db = self._db
        part = dict(self._part)
        depth, last_id = self.depth, self.last_id
        try:
            db.execute("BEGIN IMMEDIATE")
            acked = self._apply_acks(c.acks, part) if c.acks else 0
            depth -= acked
            if c.recs:
                db.executemany(
                    "INSERT INTO rec VALUES (?, ?, ?, ?, ?, ?, ?)",
                    [
                        (
                            r.first,
                            r.n,
                            r.ts,
                            self.boot if r.boot is None else r.boot,
                            r.base,
                            r.unsynced,
                            r.blob,
                        )
                        for r in c.recs
                    ],
                )
                for r in c.recs:
                    if r.done:
                        part[r.first] = list(r.done)
                        db.execute(
                            "INSERT OR REPLACE INTO part VALUES (?, ?)",
                            (r.first, rg.to_text(r.done)),
                        )
                depth += sum(r.n - rg.count(r.done) for r in c.recs)
                last_id = max(last_id, c.recs[-1].last)
            protect = c.recs[0].first if c.recs else last_id + 1
            dropped = 0
            if c.max_rows is not None and depth > c.max_rows:
                dropped += self._drop_readings(depth - c.max_rows, part)
            if c.age_cutoff is not None:
                dropped += self._expire(c.age_cutoff, part)
            budget_dropped = self._bound_bytes(c.budget, protect, part)
            dropped += budget_dropped
            depth -= dropped
            fixes = self._fixes
            if c.fix_base is not None:
                db.execute(
                    "INSERT INTO fixes(boot, upto, base) VALUES (?, ?, ?)",
                    (self.boot, last_id, c.fix_base),
                )
                fixes = sorted([*fixes, (last_id, self.boot, c.fix_base)])
            meta_last = self._meta_last
            if last_id != meta_last and (acked or dropped):
                # the highest id is the last record's, unless deletes may empty the table
                db.execute("UPDATE meta SET value = ? WHERE key='last_id'", (last_id,))
                meta_last = last_id
            if dropped or c.extra_drops:
                db.execute(
                    "UPDATE meta SET value = value + ? WHERE key='drops'",
                    (dropped + c.extra_drops,),
                )
            db.execute("COMMIT")
        except (sqlite3.Error, OSError) as exc:
            self._rollback()
            raise fault(exc) from exc
        self._part, self.depth, self.last_id, self._fixes = part, depth, last_id, fixes
        self._meta_last = meta_last
        self.drops += dropped + c.extra_drops
        self._cache = None if (dropped or c.fix_base is not None) else self._cache
        if acked or dropped or (c.recs and self.oldest is None):
            self._safe_oldest()
        return CommitOut(acked, dropped, budget_dropped)

    # -- reserve -------------------------------------------------------------------------
    def release_reserve(self) -> bool:
        return outbox_files.release_reserve(self.path)

    @staticmethod
    def release_reserve_of(path: Path) -> bool:
        return outbox_files.release_reserve(path)

    def keep_reserve(self, free_bytes: int) -> None:
        if not self.readonly:
            outbox_files.keep_reserve(self.path, self.reserve_bytes, free_bytes)

    # -- reading -------------------------------------------------------------------------
    def read(self, after_id: int, limit: int, skip: rg.Ranges | None = None) -> list[OutboxRow]:
        """Up to ``limit`` readings with ``id > after_id``, oldest first, skipping what is
        done (and the ids in ``skip``: acknowledged, not yet committed); unsynced readings
        come corrected once a fix covers them."""
        db = self._db
        out: list[OutboxRow] = []
        try:
            start = db.execute("SELECT max(id) FROM rec WHERE id <= ?", (after_id + 1,)).fetchone()
            lo = after_id + 1 if start[0] is None else start[0]
            cur = db.execute(
                "SELECT id, n, ts, boot, base, unsynced, data FROM rec WHERE id >= ? ORDER BY id",
                (lo,),
            )
            for rid, n, ts, boot, base, unsynced, data in cur:
                if rid + n - 1 <= after_id:
                    continue
                texts = self._texts(rid, data)
                if len(texts) != n:
                    raise RecordError(f"record {rid}: {len(texts)} readings, expected {n}")
                fix = self.fix_for(rid, boot, base) if unsynced else None
                done = self._part.get(rid, [])
                for off in range(max(0, after_id + 1 - rid), n):
                    if done and rg.contains(done, off):
                        continue
                    if skip and rg.contains(skip, rid + off):
                        continue
                    t = texts[off]
                    out.append(OutboxRow(rid + off, ts, t if fix is None else corrected(t, fix)))
                    if len(out) >= limit:
                        return out
        except (sqlite3.Error, RecordError) as exc:
            raise fault(exc, reading=True) from exc
        return out

    def _texts(self, rid: int, data: bytes) -> list[bytes]:
        if self._cache is not None and self._cache[0] == rid:
            return self._cache[1]
        texts = unpack(data)
        self._cache = (rid, texts)
        return texts

    def fix_for(self, rid: int, boot: int, base: int) -> int | None:
        """The correction of a record's unsynced readings: from the first synchronisation of
        the record's boot committed after it (records of another boot are never touched)."""
        for upto, fboot, fbase in self._fixes:
            if upto >= rid and fboot == boot:
                return fbase - base
        return None

    def first_id(self) -> int | None:
        row = self._db.execute("SELECT id FROM rec ORDER BY id LIMIT 1").fetchone()
        return None if row is None else int(row[0])

    def note_set_aside(self, count: int) -> None:
        """Carry the set-aside count of a replaced file into this one."""
        with contextlib.suppress(sqlite3.Error):
            self._db.execute("UPDATE meta SET value = value + ? WHERE key='set_aside'", (count,))
            self.set_aside += count

    def close(self) -> None:
        with contextlib.suppress(sqlite3.Error):
            self._db.close()
