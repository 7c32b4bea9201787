"""The outbox's storage thread: opening the file, committing, reading, and what a failing disk
makes of each:

- disk nearly full: the budget shrinks to what the file holds before the disk fills;
- disk full (SQLITE_FULL, ENOSPC, EIO on write, at any statement, the commit or a checkpoint):
  let the WAL start over (releasing the reserve if the checkpoint needs room), evict the oldest
  records (counted), keep the budget to what fits, retry;
- nothing can be written (read-only, wrong owner, still full): the records go back to the
  loop, which holds them in memory; writes are retried every ``retry_interval``;
- damaged file (on open, read or write): set aside with its WAL under a dated name, logged at
  critical, a health alarm raised, a fresh file started (``cityedge outbox salvage``).

Every method runs on the outbox's one storage thread, or at construction before the event
loop uses the outbox. The loop hands a job over and gets an :class:`Outcome` back, which it
applies to its own state (memory buffer, alarms, counters); the figures it shows are the
snapshot this worker keeps of the store (depth, drops, live bytes, ...).
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from agent.forward import outbox_ranges as rg
from agent.forward import statedir
from agent.forward.outbox_files import AckLog, finish_move_aside, move_aside, read_ids, write_ids
from agent.forward.outbox_store import Store
from agent.forward.outbox_types import CommitIn, OutboxRow, Rec, StoreFault
from drivers.core.reading import iso_ms

log = logging.getLogger("cityedge.outbox")

ID_BLOCK = 10_000_000  # delivery ids reserved ahead in <file>.ids
MIN_BUDGET = 64 * 1024


@dataclass(slots=True)
class Outcome:
    """What a storage-thread job did, applied on the loop afterwards."""

    persisted: bool = False
    acked: int = 0
    dropped: int = 0
    reason: str = ""  # why readings were dropped
    kept: list[Rec] = field(default_factory=list)  # not written: stay in memory
    fault: str | None = None
    set_aside: int = 0
    aside_msgs: list[str] = field(default_factory=list)


class Worker:
    def __init__(
        self,
        path: Path,
        *,
        synchronous: str,
        boot_id: str,
        budget: int,
        max_rows: int | None,
        max_age: float | None,
        clock: Callable[[], float] = time.time,
        mono: Callable[[], float] = time.monotonic,
    ) -> None:
        self.path = path
        self.sync = synchronous
        self.boot_id = boot_id
        self.budget = budget  # configured (or derived from the free space)
        self.eff_budget = budget  # in force: lower while the disk is nearly full
        self.max_rows = max_rows
        self.max_age = max_age
        self._clock = clock
        self._mono = mono
        self.store: Store | None = None
        self.acklog = AckLog(path)
        self.durable_hwm = 0  # ids up to this are reserved in <file>.ids
        self.mem_drops = 0  # dropped from memory, not yet in the file's counter
        # snapshot of the store, for the loop's statistics
        self.depth = 0
        self.drops = 0
        self.set_aside = 0
        self.oldest: tuple[int, int, int] | None = None
        self.live = 0

    # -- opening ---------------------------------------------------------------------------
    def open(self, out: Outcome) -> tuple[int, rg.Ranges]:
        """Open the file (setting a damaged one aside); returns the next delivery id and the
        acknowledgements an earlier run could not commit."""
        ids = read_ids(self.path)
        acks, self.mem_drops = self.acklog.read()
        with contextlib.suppress(OSError):
            done = finish_move_aside(self.path)  # a set-aside interrupted by a crash
            if done is not None:
                out.aside_msgs.append(self.aside_message(done, "interrupted move completed"))
        st = self.ensure_store(out, ids)
        last = st.last_id if st is not None else 0
        if ids.get("clean") == 1 and st is not None:
            nxt = max(last, ids.get("last", 0)) + 1
        else:  # unclean stop or no file: skip whatever may have been handed out
            nxt = max(last, ids.get("hwm", 0), ids.get("last", 0)) + 1
            if not ids and out.aside_msgs:  # the ids were in the damaged file alone
                nxt = max(nxt, int(self._clock()) * 1000)
        self.reserve_ids(nxt, clean=False)
        return nxt, acks

    def ensure_store(self, out: Outcome, ids: dict[str, int] | None = None) -> Store | None:
        """The open store, opening (or re-opening) it when needed."""
        if self.store is not None:
            return self.store
        for attempt in range(3):
            try:
                self.store = Store.open(
                    self.path, synchronous=self.sync, boot_id=self.boot_id, max_bytes=self.budget
                )
                break
            except StoreFault as f:
                out.fault = f"{f.kind}: {f.detail}"
                if f.kind == "corrupt" and attempt == 0:
                    self.move_aside(None, f, out, ids or read_ids(self.path))
                else:
                    return None
        st = self.store
        if st is not None:
            out.fault = None if not st.readonly else "readonly: the file cannot be written"
            if out.set_aside:
                st.note_set_aside(out.set_aside)
            self.snapshot(st)
        return st

    def snapshot(self, st: Store) -> None:
        self.depth, self.drops, self.set_aside = st.depth, st.drops, st.set_aside
        self.oldest, self.live = st.oldest, st.live

    def reserve_ids(self, next_id: int, clean: bool) -> None:
        """Write the id reservation (or the clean-close mark)."""
        last = next_id - 1
        hwm = last if clean else last + ID_BLOCK
        doc = {"clean": int(clean), "last": last, "hwm": max(hwm, self.durable_hwm)}
        st = self.store
        if clean and st is not None:
            doc["depth"] = st.depth
            with contextlib.suppress(Exception):
                doc["first"] = st.first_id() or 0
        try:
            write_ids(self.path, doc)
        except OSError:
            return
        self.durable_hwm = doc["hwm"]

    def aside_message(self, dest: Path, why: str) -> str:
        return (
            f"outbox {self.path.name} was damaged ({why}) and set aside as {dest}; recover "
            f"its readings with: cityedge outbox salvage {dest}"
        )

    def move_aside(
        self, st: Store | None, f: StoreFault, out: Outcome, ids: dict[str, int]
    ) -> None:
        """Close the damaged file and move it (with WAL and SHM) aside, with a manifest of
        what it held (so salvage can count what it could not read)."""
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
        self.store = None
        try:
            dest = move_aside(self.path, manifest, self._clock())
        except OSError as exc:
            log.critical("outbox %s: damaged and cannot be set aside: %s", self.path, exc)
            out.fault = f"damaged file cannot be moved aside: {exc}"
            return
        msg = self.aside_message(dest, f.detail)
        log.critical("%s", msg)
        out.aside_msgs.append(msg)
        out.set_aside += held

    # -- committing ------------------------------------------------------------------------
    def commit(
        self,
        mem: list[Rec],
        recs: list[Rec],
        acks: list[tuple[int, int]],
        now: float,
        expire: bool,
        fix: int | None,
        retry: bool,
        next_id: int,
        fault: str | None,
    ) -> Outcome:
        """Write memory records and new ones in one commit, handling faults."""
        out = Outcome()
        for r in recs:
            r.packed()
        allrecs = [*mem, *recs]
        if not retry:
            out.kept, out.fault = allrecs, fault
            return out
        if self.store is not None and self.store.readonly:  # writable again?
            self.store.close()
            self.store = None
        st = self.ensure_store(out)
        if st is not None:
            self.space(st, expire)
        cutoff = None
        if expire and self.max_age is not None:
            age_ms = int(self.max_age * 1000)
            cutoff = (int(now * 1000) - age_ms, int(self._mono() * 1000) - age_ms)
        extra = self.mem_drops
        for attempt in range(5):
            if st is None:
                break
            try:
                res = st.commit(
                    CommitIn(allrecs, acks, self.eff_budget, self.max_rows, cutoff, fix, extra)
                )
            except StoreFault as f:
                out.fault = f"{f.kind}: {f.detail}"
                if f.kind == "corrupt":
                    self.move_aside(st, f, out, {})
                    st = self.ensure_store(out)
                    acks = []  # of readings in the damaged file: nothing to delete now
                    continue
                if f.kind != "full" or not self.make_room(st, allrecs, attempt, out):
                    break
                continue
            out.persisted, out.fault = True, None
            out.acked = res.acked
            self.acklog.clear()
            if res.dropped:
                out.dropped += res.dropped
                out.reason = out.reason or (
                    "disk nearly full"
                    if res.budget_dropped and self.eff_budget < self.budget
                    else f"byte budget {statedir.mib(self.budget)}"
                    if res.budget_dropped
                    else "row or age limit"
                )
            self.mem_drops = 0
            if next_id - 1 > self.durable_hwm - ID_BLOCK // 2:
                self.reserve_ids(next_id, clean=False)
            break
        if not out.persisted:
            out.kept = allrecs
            if acks or self.mem_drops:  # so that a restart does not send them again
                self.acklog.write(acks, self.mem_drops)
        if st is not None:
            self.snapshot(st)
        return out

    def make_room(self, st: Store, recs: list[Rec], attempt: int, out: Outcome) -> bool:
        """After SQLITE_FULL. First let the WAL start over within its file (a checkpoint,
        with the reserve released if the file needs room for it); then evict the oldest
        records (counted as dropped) and keep the budget to what fits. False when nothing
        more can be done."""
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
        self.eff_budget = max(MIN_BUDGET, min(self.eff_budget, live))
        return True

    def space(self, st: Store, housekeeping: bool) -> None:
        """Before every commit: keep the file system from filling. While less than the
        reserve's worth is free the budget is lowered to what the file holds (so the next
        records replace the oldest instead of growing the file); it is given back as space
        returns. At housekeeping the reserve and ack files are put back when there is room."""
        free = statedir.free_bytes(self.path.parent)
        if free is None or st.readonly:
            return
        room = st.reserve_bytes
        if free < room:
            self.eff_budget = max(MIN_BUDGET, min(self.eff_budget, st.live - (room - free)))
        elif self.eff_budget < self.budget and free > 3 * room:
            self.eff_budget = min(self.budget, self.eff_budget + free - 3 * room)
            if self.eff_budget == self.budget:
                log.info("outbox %s: the disk has room again: budget back to %s",
                         self.path.name, statedir.mib(self.budget))  # fmt: skip
        if housekeeping:
            st.keep_reserve(free)
            self.acklog.ensure()

    # -- reading and closing ---------------------------------------------------------------
    def read(
        self, after_id: int, limit: int, skip: rg.Ranges | None = None
    ) -> tuple[list[OutboxRow], Outcome]:
        out = Outcome()
        st = self.store
        if st is None or after_id >= st.last_id:
            return [], out
        try:
            return st.read(after_id, limit, skip), out
        except StoreFault as f:
            if f.kind == "corrupt":
                self.move_aside(st, f, out, {})
                self.ensure_store(out)
            return [], out

    def close(self, mem: list[Rec], acks: list[tuple[int, int]], next_id: int, ok: bool) -> None:
        """Readings still in memory are lost with the process: counted (in the ack file),
        never silent. A clean close marks every id handed out as being in the file."""
        if mem or self.mem_drops:
            lost = sum(r.n - rg.count(r.done) for r in mem)
            self.acklog.write(acks, self.mem_drops + lost)
            log.error(
                "outbox %s: stopping with %d reading(s) that could not be written: counted "
                "as dropped",
                self.path.name,
                lost,
            )
        st = self.store
        if st is None:
            return
        if not mem and not st.readonly and ok:
            st.checkpoint()
            self.reserve_ids(next_id, clean=True)
        st.close()
        self.store = None
