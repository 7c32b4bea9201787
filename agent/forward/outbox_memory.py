"""Readings the outbox could not write yet: records held in memory, oldest first, bounded.

When nothing can be written (a read-only card, a disk still full after evicting) the newest
readings are kept here, compressed as they would be stored. Past ``limit`` bytes the oldest
records fall out and are counted as dropped. Once writes work again the held records go to the
file ahead of anything newer (they have the lower ids). They can be sent meanwhile, but only
within the id reservation on disk (``hwm``): after a crash, the next start skips past it, so
an id that reached the platform is never handed out again.
"""

from __future__ import annotations

from collections import deque

from agent.forward import outbox_ranges as rg
from agent.forward.outbox_codec import corrected
from agent.forward.outbox_types import OutboxRow, Rec


class Held:
    def __init__(self, limit: int) -> None:
        self.limit = limit  # bytes of compressed records
        self.recs: deque[Rec] = deque()
        self.bytes = 0

    def __bool__(self) -> bool:
        return bool(self.recs)

    def readings(self) -> int:
        return sum(r.n - rg.count(r.done) for r in self.recs)

    def first(self) -> Rec | None:
        return self.recs[0] if self.recs else None

    def clear(self) -> None:
        self.recs.clear()
        self.bytes = 0

    def extend(self, recs: list[Rec]) -> None:
        self.recs.extend(recs)

    def replace(self, recs: list[Rec]) -> int:
        """Hold ``recs`` (packed), newest kept; returns the readings that fell out."""
        self.recs = deque(r for r in recs if r.n > rg.count(r.done))
        self.bytes = sum(len(r.blob or b"") for r in self.recs)
        lost = 0
        while self.recs and self.bytes > self.limit:
            r = self.recs.popleft()
            self.bytes -= len(r.blob or b"")
            lost += r.n - rg.count(r.done)
        for r in self.recs:
            r.parts = None  # the packed blob is what memory keeps
        return lost

    def ack(self, a: int, b: int) -> None:
        keep: deque[Rec] = deque()
        for r in self.recs:
            if r.last >= a and r.first <= b:
                r.done = rg.add(r.done, max(a, r.first) - r.first, min(b, r.last) - r.first)
                if rg.count(r.done) >= r.n:
                    self.bytes -= len(r.blob or b"")
                    continue
            keep.append(r)
        self.recs = keep

    def fix(self, base: int) -> None:
        """The clock synchronised: this boot's held unsynced readings get corrected on read."""
        for r in self.recs:
            if r.unsynced and r.fix is None and r.boot is None:
                r.fix = base - r.base

    def last_sendable(self, hwm: int) -> int:
        last = 0
        for r in self.recs:
            if r.last <= hwm:
                last = r.last
        return last

    def read(self, after_id: int, limit: int, hwm: int) -> list[OutboxRow]:
        out: list[OutboxRow] = []
        for r in list(self.recs):
            if r.last <= after_id:
                continue
            if r.last > hwm:  # beyond the id reservation: held, not sent
                break
            texts = r.texts()
            for off in range(max(0, after_id + 1 - r.first), r.n):
                if r.done and rg.contains(r.done, off):
                    continue
                t = texts[off] if r.fix is None else corrected(texts[off], r.fix)
                out.append(OutboxRow(r.first + off, r.ts, t))
                if len(out) >= limit:
                    return out
        return out
