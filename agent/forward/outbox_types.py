"""What the outbox's parts pass between them: records, rows, commits, faults.

``StoreFault.kind`` tells the outbox what a failure means:

- ``full``: SQLITE_FULL or an I/O error on write (ENOSPC, EIO): make room, retry;
- ``readonly``: the file or its directory cannot be written (read-only mount, wrong owner);
- ``corrupt``: SQLITE_CORRUPT / SQLITE_NOTADB, a read that fails with an I/O error, or a record
  that fails its checksum: the file is set aside and a fresh one started;
- ``busy``: another process holds the lock (``cityedge outbox purge`` with the agent running);
- ``other``: anything else SQLite says; treated like ``readonly`` (kept in memory, retried).
"""

from __future__ import annotations

import os
import sqlite3
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from agent.forward import outbox_ranges as rg
from agent.forward.outbox_codec import RecordError, pack, reading_from_json, unpack
from drivers.core.reading import Reading

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
    code = exc.sqlite_errorcode if isinstance(exc, sqlite3.Error) else None
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
    data: bytes  # the reading as native JSON (see agent.forward.outbox_codec.reading_json)

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
