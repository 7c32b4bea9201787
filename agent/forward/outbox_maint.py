"""Outbox maintenance, off the hot path: converting the old format, ``cityedge outbox purge``
and ``salvage --into``. Each is one or more transactions on an open :class:`Store`."""

from __future__ import annotations

import logging
import sqlite3
import time

from agent.forward.outbox_store import Store
from agent.forward.outbox_types import Rec, fault

log = logging.getLogger("cityedge.outbox")
MIGRATE_CHUNK = 20_000  # rows of a schema-1 outbox moved per transaction

# ``self`` is the store: these were its methods and keep its private mirrors up to date.


def migrate(self: Store) -> None:
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


def purge(self: Store, before_ms: int | None) -> int:
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


def insert_salvaged(self: Store, readings: list[tuple[int, bytes]], lost: int) -> tuple[int, int]:
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


def newest_ts(self: Store) -> int | None:
    """Commit time of the newest record (``cityedge outbox stats``)."""
    row = self._db.execute("SELECT max(ts) FROM rec").fetchone()
    return None if row[0] is None else int(row[0])


def count_before(self: Store, ts_ms: int) -> int:
    """Readings held that were committed before ``ts_ms`` (``purge --older-than``)."""
    return sum(
        self._remaining(rid, n, self._part)
        for rid, n in self._db.execute("SELECT id, n FROM rec WHERE ts < ?", (ts_ms,))
    )
