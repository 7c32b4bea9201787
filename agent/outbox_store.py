"""The outbox's SQLite file: records, acknowledgements, bounds, clock fixes.

Everything here runs on the outbox's one storage thread (``agent/outbox.py`` owns it), never on
the event loop. A failure is raised as :class:`StoreFault` with a ``kind`` the outbox acts on:

- ``full``: SQLITE_FULL or an I/O error on write (ENOSPC, EIO): make room, retry;
- ``readonly``: the file or its directory cannot be written (read-only mount, wrong owner);
- ``corrupt``: SQLITE_CORRUPT / SQLITE_NOTADB, or a read that fails with an I/O error: the
  file is set aside (:func:`move_aside`) and a fresh one started;
- ``busy``: another process holds the lock (``cityedge outbox purge`` with the agent running);
- ``other``: anything else SQLite says; treated like ``readonly`` (kept in memory, retried).

Tables (``SCHEMA``): ``rec`` holds one row per group commit, its readings packed by
``agent/outbox_codec.py``; ``part`` the acknowledged or dropped offsets of records that are
partly done; ``fixes`` the clock corrections (one row per synchronisation); ``meta`` counters.
``rec.boot`` is the boot the readings were taken in (60 bits of the kernel's boot id; -1 when
unknown: converted or salvaged readings), so a correction never touches another boot's rows.
A reading's delivery id is ``rec.id`` plus its offset: ids are assigned by the outbox, continue
across restarts and are never reused.

Disk full: SQLite reuses the pages of deleted records and the WAL reuses its file after a
checkpoint, so an outbox at its size cycles without new blocks. What needs new blocks is a
WAL (and its -shm, needed even to read) recreated after a restart, or a file still growing;
for those a reserve file (``<db>.reserve``) holds space that is released the moment the disk
is full, so deleting acknowledged rows and evicting old ones has room; it is put back once the
disk has room again. Should even that be gone, acknowledgements that cannot be committed are
written into ``<db>.acked``, a small file overwritten in place (no new blocks), so a restart
does not send them again.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sqlite3
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from agent import outbox_ranges as rg
from agent.outbox_codec import (
    RecordError,
    corrected,
    pack,
    reading_from_json,
    unpack,
)
from agent.reading import Reading

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
PLAUSIBLE_MS = 1_704_067_200_000  # 2024-01-01: an earlier commit time is a clock not yet set
REC_OVERHEAD = 48  # bytes of a rec row besides its blob (cell, header, integers), roughly
# The WAL is checkpointed before it holds more than the reserve: on a full disk, releasing the
# reserve always leaves the file room to take the WAL's pages, and the WAL can then start over.
# The reserve is 1/16 of the file system, 128 KiB..1 MiB. A checkpoint grows the file to the
# size the WAL records (the WAL's new pages plus those of the commit in progress), so the WAL
# is checkpointed at half the reserve: releasing the reserve always lets a checkpoint finish,
# and the WAL then starts over within its own file.
RESERVE_MIN, RESERVE_MAX = 128 * 1024, 1 << 20


def reserve_size(fs_bytes: int) -> int:
    return max(RESERVE_MIN, min(RESERVE_MAX, fs_bytes // 16))


MIGRATE_CHUNK = 20_000  # rows of a schema-1 outbox moved per transaction

# tests: kill -9 at a known point ("evict", or "evict:3" for its third pass)
_FAILPOINT, _, _NTH = (os.environ.get("CITYEDGE_OUTBOX_FAILPOINT") or "").partition(":")
_passes: dict[str, int] = {}


def failpoint(name: str) -> None:
    """Stop here for ever when ``CITYEDGE_OUTBOX_FAILPOINT`` names this point (and pass),
    after saying so on stderr (the kill -9 tests wait for that line)."""
    if name != _FAILPOINT:
        return
    _passes[name] = _passes.get(name, 0) + 1
    if _passes[name] < int(_NTH or 1):
        return
    sys.stderr.write(f"failpoint {name}\n")
    sys.stderr.flush()
    while True:
        time.sleep(3600)


class StoreFault(Exception):
    def __init__(self, kind: str, detail: str) -> None:
        super().__init__(f"{kind}: {detail}")
        self.kind = kind
        self.detail = detail


_CODES = {13: "full", 10: "full", 8: "readonly", 14: "readonly", 3: "readonly", 23: "readonly"}
_CODES |= {11: "corrupt", 26: "corrupt", 5: "busy", 6: "busy"}


def fault(exc: BaseException, *, reading: bool = False) -> StoreFault:
    """The fault an exception from SQLite (or the file system) means."""
    if isinstance(exc, StoreFault):
        return exc
    if isinstance(exc, RecordError):
        return StoreFault("corrupt", str(exc))
    if isinstance(exc, OSError):
        kind = "readonly" if exc.errno in (30, 13, 1) else "full"
        return StoreFault(kind, exc.strerror or str(exc))
    code = getattr(exc, "sqlite_errorcode", None)
    kind = _CODES.get(code & 0xFF, "") if isinstance(code, int) else ""
    if not kind:
        msg = str(exc).lower()
        kind = (
            "corrupt"
            if "malformed" in msg or "not a database" in msg
            else "full"
            if "full" in msg or "i/o" in msg
            else "readonly"
            if "readonly" in msg or "read-only" in msg or "unable to open" in msg
            else "busy"
            if "locked" in msg
            else "other"
        )
    if kind == "full" and reading:  # an I/O error while reading: the file cannot be read
        kind = "corrupt"
    return StoreFault(kind, str(exc))


@dataclass(slots=True)
class Rec:
    """One group commit's readings (in memory before or instead of the file)."""

    first: int  # delivery id of the first reading
    n: int
    ts: int  # commit time, wall-clock ms
    base: int  # wall minus monotonic clock at submit (ms): monotonic time = observedAt - base
    unsynced: int  # readings flagged timeQuality=unsynced
    parts: list[bytes] | None  # reading JSON texts, until packed
    blob: bytes | None = None
    boot: int | None = None  # None: taken in this boot
    done: rg.Ranges = field(default_factory=list)  # offsets acknowledged or dropped (memory)
    fix: int | None = None  # ms to add to its unsynced readings, once the clock synced

    @property
    def last(self) -> int:
        return self.first + self.n - 1

    def packed(self) -> bytes:
        """Compress (storage thread); counts the unsynced readings on the way, so the event
        loop does not look at every reading's time quality."""
        if self.blob is None:
            assert self.parts is not None
            self.blob, self.unsynced = pack(self.parts)
        return self.blob

    def texts(self) -> list[bytes]:
        return self.parts if self.parts is not None else unpack(self.packed())


@dataclass(slots=True)
class CommitIn:
    recs: list[Rec]
    acks: list[tuple[int, int]]
    budget: int  # bytes of live pages to keep to
    max_rows: int | None
    age_cutoff: tuple[int, int] | None  # (wall ms, monotonic ms): older records expire
    fix_base: int | None  # clock synchronised: wall minus monotonic now (ms)
    extra_drops: int  # readings dropped outside the file (memory overflow) to persist


@dataclass(slots=True)
class CommitOut:
    acked: int  # readings newly acknowledged (deleted or marked)
    dropped: int  # readings dropped by the bounds
    budget_dropped: int  # of which by the byte budget


# not frozen: one is built per reading read, and a frozen dataclass costs three times as much
# to construct (0.77 us against 0.25 us); treated as immutable
@dataclass(slots=True)
class OutboxRow:
    id: int  # stable delivery id of the reading
    ts_ms: int  # commit time, UTC epoch ms
    data: bytes  # the reading as native JSON (see agent.outbox_codec.reading_json)

    @property
    def reading(self) -> Reading:
        return reading_from_json(self.data)


def read_boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip() or "unknown"
    except OSError:
        return "unknown"


def boot_number(boot_id: str) -> int:
    """60 bits of the boot id (a random UUID): fits SQLite's integer, never negative."""
    digits = "".join(c for c in boot_id.lower() if c in "0123456789abcdef")
    return int(digits[:15], 16) if len(digits) >= 15 else 0


class Store:
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
        self.reserve = Path(f"{path}.reserve")
        self.reserve_bytes = RESERVE_MAX

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
                self.reserve_bytes = reserve_size(fs.f_blocks * fs.f_frsize)
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
                self._migrate()
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

    def _migrate(self) -> None:
        """Schema 1 (one JSON row per reading) -> records, in chunks that commit one by one,
        so a crash or a full disk midway loses nothing and the next start goes on."""
        db = self._db
        seq = db.execute("SELECT seq FROM sqlite_sequence WHERE name='outbox'").fetchone()
        old = db.execute("SELECT value FROM meta WHERE key='drops'").fetchone()
        moved = 0
        while True:
            db.execute("BEGIN IMMEDIATE")
            rows = db.execute(
                "SELECT id, ts, data FROM outbox ORDER BY id LIMIT ?", (MIGRATE_CHUNK,)
            ).fetchall()
            recs: list[Rec] = []
            for rid, ts, data in rows:
                d = data if isinstance(data, bytes) else str(data).encode()
                r = recs[-1] if recs else None
                if r is not None and r.last + 1 == rid and r.n < 1000 and r.parts is not None:
                    r.parts.append(d)
                    r.n += 1
                    r.ts = max(r.ts, ts)
                else:
                    recs.append(Rec(rid, 1, ts, 0, 0, [d], boot=-1))
            db.executemany(
                "INSERT INTO rec VALUES (?, ?, ?, -1, 0, ?, ?)",
                [(r.first, r.n, r.ts, r.unsynced, blob) for r in recs if (blob := r.packed())],
            )
            if rows:
                db.execute("DELETE FROM outbox WHERE id <= ?", (rows[-1][0],))
            else:
                last = seq[0] if seq else 0
                db.execute("UPDATE meta SET value = max(value, ?) WHERE key='last_id'", (last,))
                db.execute("DROP TABLE outbox")
            db.execute("COMMIT")
            moved += len(rows)
            if not rows:
                break
        log.info(
            "outbox %s: migrated %d reading(s) to the record format (drops so far %s)",
            self.path.name,
            moved,
            old[0] if old else 0,
        )

    def _load_oldest(self) -> None:
        row = self._db.execute("SELECT ts, base, boot FROM rec ORDER BY id LIMIT 1").fetchone()
        self.oldest = (row[0], row[1], row[2]) if row else None

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

    def _rollback(self) -> None:
        # after SQLITE_FULL or an I/O error SQLite may already have rolled the transaction
        # back itself; a ROLLBACK then fails with "no transaction is active"
        if self._db.in_transaction:
            with contextlib.suppress(sqlite3.Error):
                self._db.execute("ROLLBACK")

    def _safe_oldest(self) -> None:
        with contextlib.suppress(sqlite3.Error):
            self._load_oldest()

    def _apply_acks(self, acks: list[tuple[int, int]], part: dict[int, rg.Ranges]) -> int:
        db = self._db
        newly = 0
        for a, b in rg.merged(acks):
            start = db.execute("SELECT max(id) FROM rec WHERE id <= ?", (a,)).fetchone()[0]
            rows = db.execute(
                "SELECT id, n FROM rec WHERE id >= ? AND id <= ? ORDER BY id",
                (a if start is None else start, b),
            ).fetchall()
            whole: list[int] = []
            for rid, n in rows:
                last = rid + n - 1
                if last < a:
                    continue
                old = part.get(rid, [])
                if a <= rid and last <= b:
                    newly += n - rg.count(old)
                    whole.append(rid)
                    part.pop(rid, None)
                    continue
                new = rg.add(old, max(a, rid) - rid, min(b, last) - rid)
                gained = rg.count(new) - rg.count(old)
                if not gained:
                    continue
                newly += gained
                if rg.count(new) == n:
                    whole.append(rid)
                    part.pop(rid, None)
                else:
                    part[rid] = new
                    db.execute("INSERT OR REPLACE INTO part VALUES (?, ?)", (rid, rg.to_text(new)))
            if whole:
                # one contiguous range: every record between the first and the last whole one
                # is whole too (only the two edge records can be left partly done)
                db.execute("DELETE FROM rec WHERE id BETWEEN ? AND ?", (whole[0], whole[-1]))
                db.execute("DELETE FROM part WHERE id BETWEEN ? AND ?", (whole[0], whole[-1]))
        return newly

    def _remaining(self, rid: int, n: int, part: dict[int, rg.Ranges]) -> int:
        return n - rg.count(part.get(rid, []))

    def _delete_through(self, cut: int, part: dict[int, rg.Ranges]) -> None:
        self._db.execute("DELETE FROM rec WHERE id <= ?", (cut,))
        self._db.execute("DELETE FROM part WHERE id <= ?", (cut,))
        for rid in [i for i in part if i <= cut]:
            del part[rid]

    def _drop_readings(self, excess: int, part: dict[int, rg.Ranges]) -> int:
        """Drop the ``excess`` oldest readings (the row bound): whole records, then the
        oldest readings of the next one."""
        db = self._db
        dropped, cut = 0, None
        partial: tuple[int, rg.Ranges] | None = None
        for rid, n in db.execute("SELECT id, n FROM rec ORDER BY id"):
            left = self._remaining(rid, n, part)
            if dropped + left <= excess:
                dropped += left
                cut = rid
                if dropped == excess:
                    break
                continue
            done = part.get(rid, [])
            off = 0
            while dropped < excess:
                off = rg.first_gap(done, off)
                done = rg.add(done, off, off)
                dropped += 1
            partial = (rid, done)
            break
        if cut is not None:
            self._delete_through(cut, part)
        if partial is not None:
            part[partial[0]] = partial[1]
            db.execute(
                "INSERT OR REPLACE INTO part VALUES (?, ?)", (partial[0], rg.to_text(partial[1]))
            )
        return dropped

    def _expire(self, cutoff: tuple[int, int], part: dict[int, rg.Ranges]) -> int:
        """Drop records committed before the cutoff. Age counts in monotonic time for this
        boot's records (a clock stepped by years at sync must not expire them all) and in
        wall-clock time for older boots' records, unless their time cannot be right (taken
        before the clock was set: their age is unknown, the byte budget bounds them)."""
        wall_ms, mono_ms = cutoff
        db = self._db
        young = db.execute(
            "SELECT id FROM rec WHERE (boot = ? AND ts - base >= ?) "
            "OR (boot != ? AND (ts >= ? OR ts < ?)) ORDER BY id LIMIT 1",
            (self.boot, mono_ms, self.boot, wall_ms, PLAUSIBLE_MS),
        ).fetchone()
        bound = young[0] if young else self.last_id + 1
        dropped = 0
        cut = None
        for rid, n in db.execute("SELECT id, n FROM rec WHERE id < ? ORDER BY id", (bound,)):
            dropped += self._remaining(rid, n, part)
            cut = rid
        if cut is not None:
            self._delete_through(cut, part)
        return dropped

    def live_bytes(self) -> int:
        (pages,) = self._db.execute("PRAGMA page_count").fetchone()
        (free,) = self._db.execute("PRAGMA freelist_count").fetchone()
        return int((pages - free) * self.page_size)

    def _bound_bytes(self, budget: int, protect: int, part: dict[int, rg.Ranges]) -> int:
        """Oldest-first eviction down to the byte budget (a little under, so eviction comes
        in steps rather than at every commit)."""
        live = self.live = self.live_bytes()
        if live <= budget:
            return 0
        need = live - budget + max(budget // 100, 16 * self.page_size)
        freed, dropped, cut = 0, 0, None
        cur = self._db.execute(
            "SELECT id, n, length(data) FROM rec WHERE id < ? ORDER BY id", (protect,)
        )
        for rid, n, size in cur:
            freed += size + REC_OVERHEAD
            dropped += self._remaining(rid, n, part)
            cut = rid
            if freed >= need:
                break
        if cut is not None:
            self._delete_through(cut, part)
            self.live = max(0, live - freed)
            failpoint("evict")  # inside the transaction: a kill here must roll it all back
        return dropped

    def make_room(self, need_bytes: int) -> tuple[int, int]:
        """The disk (or the page limit) is full: evict the oldest records worth at least
        ``need_bytes`` in a transaction of its own, and let the WAL start over. Returns
        (readings dropped, live bytes after). Raises :class:`StoreFault` when even that
        cannot be written."""
        if not self.checkpoint():  # the file could not take the WAL's pages: give it room
            self.release_reserve()
            self.checkpoint()
        part = dict(self._part)
        db = self._db
        try:
            db.execute("BEGIN IMMEDIATE")
            freed, dropped, cut = 0, 0, None
            for rid, n, size in db.execute("SELECT id, n, length(data) FROM rec ORDER BY id"):
                freed += size + REC_OVERHEAD
                dropped += self._remaining(rid, n, part)
                cut = rid
                if freed >= need_bytes:
                    break
            if cut is not None:
                self._delete_through(cut, part)
                db.execute("UPDATE meta SET value = value + ? WHERE key='drops'", (dropped,))
                db.execute("UPDATE meta SET value = ? WHERE key='last_id'", (self.last_id,))
            failpoint("evict")
            db.execute("COMMIT")
        except (sqlite3.Error, OSError) as exc:
            self._rollback()
            raise fault(exc) from exc
        self._part = part
        self.depth -= dropped
        self.drops += dropped
        self._meta_last = self.last_id if cut is not None else self._meta_last
        self._cache = None
        self._safe_oldest()
        self.checkpoint()
        self.live = self.live_bytes()
        return dropped, self.live

    def checkpoint(self) -> bool:
        """PASSIVE: copies the WAL into the file and lets the WAL start over at its beginning
        (its file is kept: no new blocks needed for the next writes). False if it failed."""
        try:
            row = self._db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        except sqlite3.Error:
            return False
        return row is None or (row[0] == 0 and row[1] == row[2])

    # -- reserve -------------------------------------------------------------------------
    def release_reserve(self) -> bool:
        return Store.release_reserve_of(self.path)

    @staticmethod
    def release_reserve_of(path: Path) -> bool:
        reserve = Path(f"{path}.reserve")
        try:
            reserve.unlink()
        except FileNotFoundError:
            return False
        except OSError:
            return False
        log.warning("outbox %s: disk full: released the reserve file", path.name)
        return True

    def keep_reserve(self, free_bytes: int) -> None:
        """Put the reserve back once the disk has room for it and more."""
        if self.readonly or self.reserve.exists() or free_bytes < 2 * self.reserve_bytes:
            return
        tmp = Path(f"{self.reserve}.tmp")
        try:
            with open(tmp, "wb") as f:
                f.write(bytes(self.reserve_bytes))  # written, not sparse: blocks are taken
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.reserve)
        except OSError:
            with contextlib.suppress(OSError):
                tmp.unlink()

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

    def count_between(self, lo: int, hi: int) -> int:
        """Readings still held with ids in ``lo..hi`` (for a manifest)."""
        return sum(
            n - rg.count(self._part.get(rid, []))
            for rid, n in self._db.execute(
                "SELECT id, n FROM rec WHERE id BETWEEN ? AND ?", (lo, hi)
            )
        )

    def newest_ts(self) -> int | None:
        row = self._db.execute("SELECT max(ts) FROM rec").fetchone()
        return None if row[0] is None else int(row[0])

    def count_before(self, ts_ms: int) -> int:
        return sum(
            self._remaining(rid, n, self._part)
            for rid, n in self._db.execute("SELECT id, n FROM rec WHERE ts < ?", (ts_ms,))
        )

    def first_id(self) -> int | None:
        row = self._db.execute("SELECT id FROM rec ORDER BY id LIMIT 1").fetchone()
        return None if row is None else int(row[0])

    def purge(self, before_ms: int | None) -> int:
        """Delete every record (or those committed before ``before_ms``); the readings are
        counted as dropped. Returns how many."""
        part = dict(self._part)
        db = self._db
        try:
            db.execute("BEGIN IMMEDIATE")
            where, args = ("", ()) if before_ms is None else (" WHERE ts < ?", (before_ms,))
            gone = [(i, n) for i, n in db.execute(f"SELECT id, n FROM rec{where}", args)]
            count = sum(self._remaining(i, n, part) for i, n in gone)
            db.execute(f"DELETE FROM rec{where}", args)
            for i, _ in gone:
                part.pop(i, None)
                db.execute("DELETE FROM part WHERE id = ?", (i,))
            db.execute("UPDATE meta SET value = value + ? WHERE key='drops'", (count,))
            db.execute("UPDATE meta SET value = ? WHERE key='last_id'", (self.last_id,))
            db.execute("COMMIT")
        except sqlite3.Error as exc:
            self._rollback()
            raise fault(exc) from exc
        self._part, self.depth, self.drops = part, self.depth - count, self.drops + count
        self._meta_last = self.last_id
        return count

    def insert_salvaged(self, readings: list[tuple[int, bytes]], lost: int) -> tuple[int, int]:
        """Recovered readings back in, with their own ids (never in use here: ids are never
        reused), as records of contiguous ids; ``lost`` is added to the drops. Returns
        (inserted, refused because their ids overlap what this file holds)."""
        recs: list[Rec] = []
        for rid, text in readings:
            r = recs[-1] if recs else None
            if r is not None and r.last + 1 == rid and r.n < 1000 and r.parts is not None:
                r.parts.append(text)
                r.n += 1
            else:
                recs.append(Rec(rid, 1, int(time.time() * 1000), 0, 0, [text], boot=-1))
        db = self._db
        inserted = refused = 0
        try:
            db.execute("BEGIN IMMEDIATE")
            for r in recs:
                clash = db.execute(
                    "SELECT 1 FROM rec WHERE id <= ? AND id + n - 1 >= ? LIMIT 1", (r.last, r.first)
                ).fetchone()
                if clash:
                    refused += r.n
                    continue
                blob = r.packed()
                db.execute(
                    "INSERT INTO rec VALUES (?, ?, ?, -1, 0, ?, ?)",
                    (r.first, r.n, r.ts, r.unsynced, blob),
                )
                inserted += r.n
            db.execute("UPDATE meta SET value = value + ? WHERE key='drops'", (lost,))
            db.execute("COMMIT")
        except sqlite3.Error as exc:
            self._rollback()
            raise fault(exc) from exc
        self.depth += inserted
        self.drops += lost
        return inserted, refused

    def note_set_aside(self, count: int) -> None:
        """Carry the set-aside count of a replaced file into this one."""
        with contextlib.suppress(sqlite3.Error):
            self._db.execute("UPDATE meta SET value = value + ? WHERE key='set_aside'", (count,))
            self.set_aside += count

    def close(self) -> None:
        with contextlib.suppress(sqlite3.Error):
            self._db.close()


# --- acknowledgements that could not be committed -------------------------------------------


class AckLog:
    """``<db>.acked``: a preallocated file overwritten in place (no new blocks needed) with
    what the database could not take on a full or read-only disk: acknowledged id ranges, and
    readings lost from the memory buffer at a stop. Read back at the next start."""

    SIZE = 4096

    def __init__(self, path: Path) -> None:
        self.path = Path(f"{path}.acked")
        self.dirty = False
        self.ensure()

    def ensure(self) -> None:
        """Create the file (its blocks) while there is room; a no-op once it exists."""
        if not self.path.exists():
            with contextlib.suppress(OSError), open(self.path, "wb") as f:
                f.write(bytes(self.SIZE))
                f.flush()
                os.fsync(f.fileno())

    def read(self) -> tuple[rg.Ranges, int]:
        """(acknowledged ranges, readings dropped) recorded by an earlier run."""
        try:
            raw = self.path.read_bytes().split(b"\0", 1)[0].decode()
            head, _, ranges = raw.partition("\n")
            drops = int(head.removeprefix("drops=")) if head else 0
            got = rg.from_text(ranges) if ranges else []
        except (OSError, ValueError):
            return [], 0
        self.dirty = bool(got or drops)
        return got, drops

    def write(self, ranges: rg.Ranges, drops: int = 0) -> None:
        items = rg.merged(ranges)
        text = f"drops={drops}\n{rg.to_text(items)}".encode()
        while len(text) > self.SIZE and items:  # keep the oldest: the newest re-send at worst
            items.pop()
            text = f"drops={drops}\n{rg.to_text(items)}".encode()
        try:
            fd = os.open(self.path, os.O_WRONLY)
        except OSError:
            return
        try:
            os.pwrite(fd, text.ljust(self.SIZE, b"\0"), 0)
            os.fdatasync(fd)
            self.dirty = bool(items or drops)
        except OSError:
            pass
        finally:
            os.close(fd)

    def clear(self) -> None:
        if self.dirty:
            self.write([])


# --- delivery ids that survive the file ---------------------------------------------------


def ids_path(path: Path) -> Path:
    return Path(f"{path}.ids")


IDS_SIZE = 512  # one sector: an overwrite in place is not torn


def read_ids(path: Path) -> dict[str, int]:
    """The id sidecar: ``last`` (at a clean close), ``hwm`` (ids handed out up to, at most),
    ``clean`` (1 after a clean close). Missing or unreadable: {}."""
    try:
        doc = json.loads(ids_path(path).read_bytes().rstrip(b"\0 ") or b"{}")
    except (OSError, ValueError):
        return {}
    if not isinstance(doc, dict):
        return {}
    return {k: int(v) for k, v in doc.items() if isinstance(v, int)}


def write_ids(path: Path, doc: dict[str, int]) -> None:
    """Overwrite the sidecar in place (created once, then never needs a new block: a full disk
    can still take it), and wait for it to be on disk. Raises OSError."""
    target = ids_path(path)
    text = json.dumps(doc).encode()
    if len(text) > IDS_SIZE:
        raise OSError(f"{target}: record too long")
    fd = os.open(target, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        os.pwrite(fd, text.ljust(IDS_SIZE, b"\0"), 0)
        os.fdatasync(fd)
    finally:
        os.close(fd)


def fsync_dir(d: Path) -> None:
    fd = os.open(d, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# --- setting a damaged file aside -----------------------------------------------------------


def aside_dirs(path: Path) -> list[Path]:
    return sorted(path.parent.glob(f"{path.name}.damaged-*"))


def move_aside(path: Path, manifest: dict[str, object], now: float) -> Path:
    """Move the file with its WAL and SHM into ``<file>.damaged-<UTC time>/``.

    The directory is built as ``….partial`` and renamed when complete, so a kill -9 midway
    leaves a partial directory that :func:`finish_move_aside` completes at the next start
    (never a WAL left beside a missing database, which SQLite would apply to a new one)."""
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(now))
    final = path.parent / f"{path.name}.damaged-{stamp}"
    n = 1
    while final.exists():
        n += 1
        final = path.parent / f"{path.name}.damaged-{stamp}-{n}"
    partial = Path(f"{final}.partial")
    partial.mkdir()
    (partial / "manifest.json").write_text(json.dumps(manifest, indent=1))
    return _finish(path, partial)


def finish_move_aside(path: Path) -> Path | None:
    """Complete a move interrupted by a crash; returns the directory, or None."""
    for d in aside_dirs(path):
        if d.name.endswith(".partial"):
            return _finish(path, d)
    return None


def _finish(path: Path, partial: Path) -> Path:
    for suffix in ("-wal", "-shm"):  # the WAL first: never a WAL beside the wrong database
        src = Path(f"{path}{suffix}")
        if src.exists():
            os.replace(src, partial / src.name)
            fsync_dir(path.parent)
        if suffix == "-wal":
            failpoint("move-aside")
    if path.exists():
        os.replace(path, partial / path.name)
    final = Path(str(partial).removesuffix(".partial"))
    os.replace(partial, final)
    fsync_dir(path.parent)
    return final
