"""What an outbox commit deletes: acknowledged readings, and the oldest ones beyond the row,
age and byte bounds or when the disk is full. A mixin of :class:`agent.forward.outbox_store.Store`
(it works on the store's connection and mirrors; storage thread only).

A record is deleted whole once every reading in it is done; until then its done offsets sit
in the ``part`` table (``agent/forward/outbox_ranges.py``). Counts are of readings not done
before, so a reading is counted once, as acknowledged or as dropped, never both.
"""

from __future__ import annotations

import contextlib
import sqlite3

from agent.forward import outbox_ranges as rg
from agent.forward.outbox_types import failpoint, fault

PLAUSIBLE_MS = 1_704_067_200_000  # 2024-01-01: an earlier commit time is a clock not yet set
REC_OVERHEAD = 48  # bytes of a rec row besides its blob (cell, header, integers), roughly


class Deletes:
    _db: sqlite3.Connection
    _part: dict[int, rg.Ranges]
    _cache: tuple[int, list[bytes]] | None
    _meta_last: int
    page_size: int
    boot: int
    last_id: int
    depth: int
    drops: int
    live: int
    oldest: tuple[int, int, int] | None

    def _load_oldest(self) -> None:
        row = self._db.execute("SELECT ts, base, boot FROM rec ORDER BY id LIMIT 1").fetchone()
        self.oldest = (row[0], row[1], row[2]) if row else None

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
        freed, dropped, cut = self._oldest(need, part, below=protect)
        if cut is not None:
            self._delete_through(cut, part)
            self.live = max(0, live - freed)
            failpoint("evict")  # inside the transaction: a kill here must roll it all back
        return dropped

    def _oldest(
        self, need: int, part: dict[int, rg.Ranges], below: int | None = None
    ) -> tuple[int, int, int | None]:
        """The oldest records (with an id under ``below``) that hold at least ``need`` bytes:
        the bytes they hold, the readings in them not yet sent, and the last one's id."""
        freed, dropped, cut = 0, 0, None
        if below is None:
            cur = self._db.execute("SELECT id, n, length(data) FROM rec ORDER BY id")
        else:
            sql = "SELECT id, n, length(data) FROM rec WHERE id < ? ORDER BY id"
            cur = self._db.execute(sql, (below,))
        for rid, n, size in cur:
            freed += size + REC_OVERHEAD
            dropped += self._remaining(rid, n, part)
            cut = rid
            if freed >= need:
                break
        return freed, dropped, cut

    def make_room(self, need_bytes: int) -> tuple[int, int]:
        """The disk (or the page limit) is full: evict the oldest records worth at least
        ``need_bytes`` in a transaction of its own, and let the WAL start over. Returns
        (readings dropped, live bytes after). Raises :class:`StoreFault` when even that
        cannot be written."""
        self.checkpoint()  # the worker released the reserve first if the file needed room
        part = dict(self._part)
        db = self._db
        try:
            db.execute("BEGIN IMMEDIATE")
            _, dropped, cut = self._oldest(need_bytes, part)
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
