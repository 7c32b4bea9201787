"""What the router must remember across restarts: answers by command id, used nonces, and
each device's recent writes (the rate limit). One small SQLite file in the state directory.

Durability order (docs/COMMANDS.md): a command is *claimed* (its id, its nonce and its rate
slot committed) before anything is sent to the device, and its answer is committed before the
answer is published. After ``kill -9`` a replayed id therefore finds either the answer the
platform may already have, or the claim: then the write may or may not have reached the
device, and the replay is answered ``timeout`` with that reason instead of writing again.

Faults never take the agent down. The same policy as the readings outbox: a damaged file is
moved aside under a dated name (with its WAL and SHM) and logged at critical, and a fresh one
is started. A store that cannot be written (read-only or full card) is logged once per
episode; the router then remembers in memory (bounded) and retries the file at each command.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sqlite3
import threading
import time
from collections import Counter, OrderedDict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from agent.control.model import CommandResult, CommandStatus

log = logging.getLogger("cityedge.commands")
T = TypeVar("T")

SCHEMA = """
CREATE TABLE IF NOT EXISTS answers (id TEXT PRIMARY KEY, at REAL NOT NULL, answer TEXT);
CREATE INDEX IF NOT EXISTS answers_at ON answers(at);
CREATE TABLE IF NOT EXISTS nonces (nonce TEXT PRIMARY KEY, at REAL NOT NULL);
CREATE INDEX IF NOT EXISTS nonces_at ON nonces(at);
CREATE TABLE IF NOT EXISTS writes (device TEXT NOT NULL, at REAL NOT NULL);
CREATE INDEX IF NOT EXISTS writes_device ON writes(device, at);
"""
MEMORY_MAX = 10_000  # ids remembered while the file is unusable
RATE_SPAN = 60.0  # the rate limit counts writes per minute
INTERRUPTED = (
    "interrupted by a restart after the write was sent: it may or may not have reached the "
    "device (read the point to check); not sent again"
)


@dataclass(frozen=True, slots=True)
class Claim:
    """What is committed before the device write: the id (answer still unknown), the nonce
    of a signed command, and one rate slot per device written."""

    id: str
    nonce: str | None
    devices: tuple[str, ...]


class CommandStore:
    def __init__(
        self,
        path: Path | None,
        *,
        window: float,
        nonce_window: float,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.path = path
        self.clock = clock
        self.window = window
        self.nonce_window = nonce_window
        self.errors = 0  # writes that could not be made durable (metrics, tests)
        self.set_aside: list[Path] = []
        self._lock = threading.Lock()
        self._db: sqlite3.Connection | None = None
        self._failing: str | None = None  # reason while the file is unusable
        self._answers: OrderedDict[str, tuple[float, str | None]] = OrderedDict()
        self._nonces: OrderedDict[str, float] = OrderedDict()
        self._writes: dict[str, list[float]] = {}
        if path is not None:
            with self._lock:
                self._open()

    # -- queries (memory first: it holds what the file could not take) ----------------------
    def answer(self, cid: str, now: float) -> CommandResult | None:
        with self._lock:
            row = self._answers.get(cid)
            if row is None and self._usable():
                row = self._guard(
                    lambda db: db.execute(
                        "SELECT at, answer FROM answers WHERE id = ?", (cid,)
                    ).fetchone()
                )
        if row is None or now - row[0] > self.window:
            return None
        if row[1] is None:
            return CommandResult(cid, CommandStatus.TIMEOUT, INTERRUPTED)
        return CommandResult.from_dict(json.loads(row[1]))

    def nonce_used(self, nonce: str, now: float) -> bool:
        with self._lock:
            at = self._nonces.get(nonce)
            if at is None and self._usable():
                row = self._guard(
                    lambda db: db.execute(
                        "SELECT at FROM nonces WHERE nonce = ?", (nonce,)
                    ).fetchone()
                )
                at = None if row is None else row[0]
        return at is not None and now - at <= self.nonce_window

    def recent_writes(self, device: str, now: float) -> int:
        with self._lock:
            return self._recent(device, now)

    # -- updates (called through asyncio.to_thread: a FULL-sync commit is an fsync) ---------
    def claim(self, claims: Iterable[Claim], now: float, limit: int | None = None) -> list[str]:
        """Commit the claims; with ``limit`` (writes per device per minute) only if no device
        would exceed it: then nothing is committed and the devices over it are returned, in
        order. The check and the claim are one call: one thread round trip per command."""
        items = list(claims)
        rows = [(c.id, now) for c in items]
        nonces = [(c.nonce, now) for c in items if c.nonce]
        writes = [(d, now) for c in items for d in c.devices]

        def txn(db: sqlite3.Connection) -> None:
            with _txn(db):
                db.executemany("INSERT OR REPLACE INTO answers VALUES (?, ?, NULL)", rows)
                db.executemany("INSERT OR REPLACE INTO nonces VALUES (?, ?)", nonces)
                db.executemany("INSERT INTO writes VALUES (?, ?)", writes)
                self._prune(db, now)

        with self._lock:  # held from the check to the commit: two groups cannot both pass
            if limit is not None:
                wanted = Counter(d for c in items for d in c.devices)
                over = [d for d, n in wanted.items() if self._recent(d, now) + n > limit]
                if over:
                    return over
            if self._usable() and self._commit(txn):
                self._recovered()
                return []
            for cid, at in rows:
                self._remember(cid, at, None)
            for nonce, at in nonces:
                self._nonces[nonce] = at
            for dev, at in writes:
                self._writes.setdefault(dev, []).append(at)
        return []

    def finish(self, results: Iterable[CommandResult], now: float) -> None:
        rows = [(r.id, now, json.dumps(r.to_dict(), separators=(",", ":"))) for r in results]

        def txn(db: sqlite3.Connection) -> None:
            with _txn(db):
                db.executemany("INSERT OR REPLACE INTO answers VALUES (?, ?, ?)", rows)

        with self._lock:
            if self._usable() and self._commit(txn):
                for cid, _, _ in rows:
                    self._answers.pop(cid, None)  # the file has it now
                self._recovered()
                return
            for cid, at, text in rows:
                self._remember(cid, at, text)

    def close(self) -> None:
        with self._lock:
            if self._db is not None:
                with contextlib.suppress(sqlite3.Error):
                    self._db.close()
                self._db = None

    @property
    def degraded(self) -> str | None:
        """Why answers are kept in memory only (None while the file works)."""
        return self._failing

    # -- internals ---------------------------------------------------------------------------
    def _recent(self, device: str, now: float) -> int:
        """Writes to ``device`` within the rate span (memory and file; the lock held)."""
        mem = sum(1 for t in self._writes.get(device, ()) if now - t <= RATE_SPAN)
        if not self._usable():
            return mem
        row = self._guard(
            lambda db: db.execute(
                "SELECT count(*) FROM writes WHERE device = ? AND at >= ?",
                (device, now - RATE_SPAN),
            ).fetchone()
        )
        return mem + (row[0] if row else 0)

    def _remember(self, cid: str, at: float, text: str | None) -> None:
        self._answers[cid] = (at, text)
        self._answers.move_to_end(cid)
        while len(self._answers) > MEMORY_MAX:
            self._answers.popitem(last=False)
        cutoff = at - max(self.nonce_window, RATE_SPAN)
        while self._nonces and next(iter(self._nonces.values())) < cutoff:
            self._nonces.popitem(last=False)
        for dev in list(self._writes):
            self._writes[dev] = [t for t in self._writes[dev] if at - t <= RATE_SPAN]

    def _prune(self, db: sqlite3.Connection, now: float) -> None:
        db.execute("DELETE FROM answers WHERE at < ?", (now - self.window,))
        db.execute("DELETE FROM nonces WHERE at < ?", (now - self.nonce_window,))
        db.execute("DELETE FROM writes WHERE at < ?", (now - RATE_SPAN,))

    def _usable(self) -> bool:
        if self._db is None and self.path is not None:
            self._open()  # retried at each command while the file is unusable
        return self._db is not None

    def _open(self, fresh: bool = False) -> None:
        assert self.path is not None
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        except (OSError, sqlite3.Error) as exc:
            self._fail(f"cannot open {self.path}: {exc}")
            return
        try:
            db.execute("PRAGMA busy_timeout = 5000")
            db.execute("PRAGMA journal_mode = WAL")
            db.execute("PRAGMA synchronous = FULL")  # power cuts, not only kill -9
            db.executescript(SCHEMA)
            ok = db.execute("PRAGMA quick_check").fetchone()
            if ok is None or ok[0] != "ok":
                raise sqlite3.DatabaseError(f"quick_check: {ok[0] if ok else 'no answer'}")
        except sqlite3.DatabaseError as exc:
            with contextlib.suppress(sqlite3.Error):
                db.close()
            if _is_corrupt(exc) and not fresh:
                self._move_aside(exc)
                self._open(fresh=True)
            else:
                self._fail(f"cannot use {self.path}: {exc}")
            return
        self._db = db
        with contextlib.suppress(sqlite3.Error), _txn(db):
            self._prune(db, self.clock())

    def _recovered(self) -> None:
        """A commit went through: if the file had failed, it is durable again (said once)."""
        if self._failing is not None:
            log.warning("command store %s usable again", self.path)
            self._failing = None
            self._flush_memory()

    def _flush_memory(self) -> None:
        """Hand what was remembered in memory to the file once it works again."""
        db = self._db
        if db is None or not (self._answers or self._nonces or self._writes):
            return
        try:
            with _txn(db):
                db.executemany(
                    "INSERT OR REPLACE INTO answers VALUES (?, ?, ?)",
                    [(cid, at, text) for cid, (at, text) in self._answers.items()],
                )
                db.executemany("INSERT OR REPLACE INTO nonces VALUES (?, ?)", self._nonces.items())
                db.executemany(
                    "INSERT INTO writes VALUES (?, ?)",
                    [(d, t) for d, ts in self._writes.items() for t in ts],
                )
        except sqlite3.Error as exc:
            self._broken(exc)
            return
        self._answers.clear()
        self._nonces.clear()
        self._writes.clear()

    def _guard(self, fn: Callable[[sqlite3.Connection], T]) -> T | None:
        """Run ``fn(db)``; on a fault, degrade (and return None) instead of raising."""
        assert self._db is not None
        try:
            return fn(self._db)
        except sqlite3.Error as exc:
            self._broken(exc)
            return None

    def _commit(self, fn: Callable[[sqlite3.Connection], None]) -> bool:
        assert self._db is not None
        try:
            fn(self._db)
        except sqlite3.Error as exc:
            self._broken(exc)
            return False
        return True

    def _broken(self, exc: sqlite3.Error) -> None:
        self.errors += 1
        db, self._db = self._db, None
        if db is not None:
            with contextlib.suppress(sqlite3.Error):
                if db.in_transaction:
                    db.rollback()
                db.close()
        if isinstance(exc, sqlite3.DatabaseError) and _is_corrupt(exc):
            self._move_aside(exc)
            self._open(fresh=True)
        else:
            self._fail(f"cannot write {self.path}: {exc}")

    def _fail(self, reason: str) -> None:
        if self._failing is None:
            log.error(
                "command store: %s; de-duplication and nonces are kept in memory until it "
                "works again (a restart meanwhile forgets them)",
                reason,
            )
        self._failing = reason

    def _move_aside(self, exc: BaseException) -> None:
        assert self.path is not None
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        target = self.path.with_name(f"{self.path.name}.corrupt-{stamp}")
        for suffix in ("", "-wal", "-shm"):
            src = Path(f"{self.path}{suffix}")
            with contextlib.suppress(FileNotFoundError):
                os.replace(src, Path(f"{target}{suffix}"))
        self.set_aside.append(target)
        log.critical(
            "command store %s is damaged (%s): moved aside to %s, starting a fresh one; "
            "commands answered before now may be executed again if replayed",
            self.path,
            exc,
            target,
        )


@contextlib.contextmanager
def _txn(db: sqlite3.Connection) -> Iterator[None]:
    """One transaction, one fsync. (The connection is in autocommit mode, where ``with db``
    would not open a transaction and every statement would be a commit of its own.)"""
    db.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        if db.in_transaction:  # SQLITE_FULL may already have rolled it back
            db.rollback()
        raise
    db.execute("COMMIT")


def _is_corrupt(exc: sqlite3.DatabaseError) -> bool:
    text = str(exc).lower()
    return any(
        s in text for s in ("malformed", "not a database", "quick_check", "corrupt", "encrypted")
    )
