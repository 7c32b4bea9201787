"""Recover every readable reading from a damaged outbox file (``cityedge outbox salvage``).

The way SQLite's own recovery works: ignore the damaged b-tree structure and read the file page
by page. Every table-leaf page is parsed (cells, overflow chains, records), pages on the
freelist are skipped when the header still names them (they hold deleted records), and the
WAL's committed frames are laid over the file first (its newest commits may not have reached
the file). A record is accepted only when its blob decompresses and checks out (zlib's
Adler-32) with the reading count it claims, so stale or torn bytes are never taken for data.
Nothing here writes to the damaged file: it is read as bytes.
"""

from __future__ import annotations

import json
import re
import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from agent.forward import outbox_ranges as rg
from agent.forward.outbox_codec import RecordError, corrected, unpack

_HEADER = b"SQLite format 3\x00"
_RANGES = re.compile(rb"^\d+-\d+(,\d+-\d+)*$")
_MAX_CHAIN = 1 << 16  # overflow pages followed for one cell, at most


@dataclass
class Salvaged:
    readings: list[tuple[int, bytes]] = field(default_factory=list)  # (id, JSON), by id
    records: int = 0  # records recovered
    legacy_rows: int = 0  # one-reading rows of the schema-1 format recovered
    pages: int = 0
    unreadable_cells: int = 0  # cells whose record could not be decoded
    wal_frames: int = 0  # pages taken from the WAL's committed frames
    expected: int | None = None  # readings the file held when set aside (manifest)
    manifest: dict[str, object] = field(default_factory=dict)

    @property
    def lost(self) -> int | None:
        if self.expected is None:
            return None
        return max(0, self.expected - len(self.readings))


def locate(target: Path) -> tuple[Path, dict[str, object]]:
    """The database file (and the manifest) for a file or a set-aside directory."""
    if target.is_dir():
        dbs = sorted(p for p in target.iterdir() if p.suffix == ".sqlite")
        if not dbs:
            raise FileNotFoundError(f"{target}: no .sqlite file in this directory")
        manifest: dict[str, object] = {}
        mf = target / "manifest.json"
        if mf.exists():
            try:
                doc = json.loads(mf.read_text())
                manifest = doc if isinstance(doc, dict) else {}
            except ValueError:
                manifest = {}
        return dbs[0], manifest
    if not target.exists():
        raise FileNotFoundError(f"{target}: no such file")
    return target, {}


def salvage(target: Path) -> Salvaged:
    db_path, manifest = locate(target)
    data = db_path.read_bytes()
    page_size = _page_size(data)
    wal = Path(f"{db_path}-wal")
    overlay: dict[int, bytes] = {}
    if wal.exists():
        overlay, wal_ps = _wal_pages(wal.read_bytes())
        if wal_ps and not data.startswith(_HEADER):
            page_size = wal_ps
    out = Salvaged(manifest=manifest, wal_frames=len(overlay))
    depth = manifest.get("depth")
    out.expected = depth if isinstance(depth, int) else None
    npages = max(len(data) // page_size, max(overlay, default=0))

    def page(no: int) -> bytes:
        got = overlay.get(no)
        if got is not None:
            return got
        return data[(no - 1) * page_size : no * page_size]

    p1 = page(1)
    reserved = p1[20] if p1.startswith(_HEADER) else 0
    usable = page_size - reserved
    free = _freelist(p1, page, npages) if p1.startswith(_HEADER) else set()
    recs: dict[int, tuple[int, int, int, int, list[bytes]]] = {}
    parts: dict[int, rg.Ranges] = {}
    fixes: list[tuple[int, int, int]] = []
    legacy: dict[int, bytes] = {}
    for no in range(1, npages + 1):
        if no in free:
            continue
        buf = page(no)
        out.pages += 1
        for rowid, cols in _leaf_cells(buf, no, usable, page, npages, out):
            _classify(rowid, cols, recs, parts, fixes, legacy, out)
    fixes.sort()
    got: dict[int, bytes] = {}
    for rid, (n, _ts, boot, base, texts) in recs.items():
        fix = next((fb - base for upto, b, fb in fixes if upto >= rid and b == boot), None)
        done = parts.get(rid, [])
        for off, t in enumerate(texts[:n]):
            if done and rg.contains(done, off):
                continue
            got[rid + off] = t if fix is None else corrected(t, fix)
    for rid, t in legacy.items():
        got.setdefault(rid, t)
    # What the file held when it was set aside lies between these; anything else is a deleted
    # record read back from a free page the damaged header no longer lists.
    lo, hi = manifest.get("first_id"), manifest.get("last_id")
    if isinstance(lo, int) and lo > 0:
        got = {i: t for i, t in got.items() if i >= lo}
    if isinstance(hi, int) and hi > 0:
        got = {i: t for i, t in got.items() if i <= hi}
    out.records = len(recs)
    out.legacy_rows = len(legacy)
    out.readings = sorted(got.items())
    return out


def _page_size(data: bytes) -> int:
    if data.startswith(_HEADER):
        (ps,) = struct.unpack(">H", data[16:18])
        ps = 65536 if ps == 1 else ps
        if ps >= 512 and ps & (ps - 1) == 0:
            return int(ps)
    return 4096


def _wal_pages(wal: bytes) -> tuple[dict[int, bytes], int]:
    """Page number -> newest committed image, from the frames of the WAL's current
    generation (matching salts, valid checksum chain) up to its last commit frame."""
    if len(wal) < 32:
        return {}, 0
    magic, _ver, ps, _seq, salt1, salt2, c1, c2 = struct.unpack(">8I", wal[:32])
    if magic not in (0x377F0682, 0x377F0683):
        return {}, 0
    big = magic == 0x377F0683
    s0, s1 = _cksum(wal[:24], 0, 0, big)
    if (s0, s1) != (c1, c2):
        return {}, 0
    pages: dict[int, bytes] = {}
    pending: dict[int, bytes] = {}
    off = 32
    while off + 24 + ps <= len(wal):
        pgno, commit, fs1, fs2, fc1, fc2 = struct.unpack(">6I", wal[off : off + 24])
        body = wal[off + 24 : off + 24 + ps]
        if (fs1, fs2) != (salt1, salt2):
            break
        s0, s1 = _cksum(wal[off : off + 8], s0, s1, big)
        s0, s1 = _cksum(body, s0, s1, big)
        if (s0, s1) != (fc1, fc2):
            break
        pending[pgno] = body
        if commit:
            pages.update(pending)
            pending = {}
        off += 24 + ps
    return pages, ps


def _cksum(data: bytes, s0: int, s1: int, big: bool) -> tuple[int, int]:
    words = struct.unpack(f"{'>' if big else '<'}{len(data) // 4}I", data)
    for i in range(0, len(words), 2):
        s0 = (s0 + words[i] + s1) & 0xFFFFFFFF
        s1 = (s1 + words[i + 1] + s0) & 0xFFFFFFFF
    return s0, s1


def _freelist(p1: bytes, page: Callable[[int], bytes], npages: int) -> set[int]:
    (trunk,) = struct.unpack(">I", p1[32:36])
    free: set[int] = set()
    while 0 < trunk <= npages and trunk not in free:
        free.add(trunk)
        buf = page(trunk)
        nxt, n = struct.unpack(">II", buf[:8])
        n = min(n, (len(buf) - 8) // 4)
        free.update(struct.unpack(f">{n}I", buf[8 : 8 + 4 * n]))
        trunk = nxt
    return free


def _varint(b: bytes, i: int) -> tuple[int, int]:
    v = 0
    for k in range(9):
        c = b[i + k]
        if k == 8:
            return (v << 8) | c, i + 9
        v = (v << 7) | (c & 0x7F)
        if c < 0x80:
            return v, i + k + 1
    raise IndexError  # pragma: no cover


def _leaf_cells(
    buf: bytes, no: int, usable: int, page: Callable[[int], bytes], npages: int, out: Salvaged
) -> Iterator[tuple[int, list[object]]]:
    h = 100 if no == 1 else 0
    if len(buf) < h + 8 or buf[h] != 0x0D:
        return
    (ncells,) = struct.unpack(">H", buf[h + 3 : h + 5])
    x = usable - 35
    m = ((usable - 12) * 32 // 255) - 23
    for k in range(ncells):
        try:
            (ptr,) = struct.unpack(">H", buf[h + 8 + 2 * k : h + 10 + 2 * k])
            size, i = _varint(buf, ptr)
            rowid, i = _varint(buf, i)
            if size <= x:
                payload = buf[i : i + size]
            else:
                local = m + (size - m) % (usable - 4)
                local = local if local <= x else m
                payload = buf[i : i + local]
                (ovf,) = struct.unpack(">I", buf[i + local : i + local + 4])
                chunks = [payload]
                have, seen = local, 0
                while have < size and 0 < ovf <= npages and seen < _MAX_CHAIN:
                    ob = page(ovf)
                    take = min(usable - 4, size - have)
                    chunks.append(ob[4 : 4 + take])
                    have += take
                    seen += 1
                    (ovf,) = struct.unpack(">I", ob[:4])
                payload = b"".join(chunks)
            if len(payload) != size:
                raise ValueError("short payload")
            yield rowid, _record(payload)
        except (IndexError, ValueError, struct.error):
            out.unreadable_cells += 1


def _record(p: bytes) -> list[object]:
    hsize, i = _varint(p, 0)
    types: list[int] = []
    while i < hsize:
        t, i = _varint(p, i)
        types.append(t)
    j = hsize
    cols: list[object] = []
    for t in types:
        if t == 0:
            cols.append(None)
        elif 1 <= t <= 6:
            n = (1, 2, 3, 4, 6, 8)[t - 1]
            cols.append(int.from_bytes(p[j : j + n], "big", signed=True))
            j += n
        elif t == 7:
            cols.append(struct.unpack(">d", p[j : j + 8])[0])
            j += 8
        elif t in (8, 9):
            cols.append(t - 8)
        elif t >= 12:
            n = (t - 12) // 2
            raw = p[j : j + n]
            if len(raw) != n:
                raise ValueError("truncated column")
            cols.append(raw if t % 2 == 0 else raw.decode("utf-8", "replace"))
            j += n
        else:
            raise ValueError(f"serial type {t}")
    return cols


def _classify(
    rowid: int,
    cols: list[object],
    recs: dict[int, tuple[int, int, int, int, list[bytes]]],
    parts: dict[int, rg.Ranges],
    fixes: list[tuple[int, int, int]],
    legacy: dict[int, bytes],
    out: Salvaged,
) -> None:
    """Which table a row belongs to, by its shape (the b-tree that would say is damaged)."""
    ints = [c for c in cols[1:] if isinstance(c, int)]
    if len(cols) == 7 and cols[0] is None and len(ints) == 5 and isinstance(cols[6], bytes):
        n, ts, boot, base, _unsynced = ints
        try:
            texts = unpack(cols[6])
        except RecordError:
            out.unreadable_cells += 1
            return
        if len(texts) == n and rowid not in recs:
            recs[rowid] = (n, ts, boot, base, texts)
        return
    if len(cols) == 2 and cols[0] is None and isinstance(cols[1], str):
        if _RANGES.match(cols[1].encode()):
            parts[rowid] = rg.from_text(cols[1])
        return
    if len(cols) == 4 and cols[0] is None and len(ints) == 3:
        boot, upto, base = ints
        fixes.append((upto, boot, base))
        return
    if len(cols) == 3 and cols[0] is None and isinstance(cols[1], int):
        d = cols[2]
        raw = d.encode() if isinstance(d, str) else d
        if isinstance(raw, bytes) and raw.startswith(b'{"gateway":'):
            try:
                json.loads(raw)
            except ValueError:
                out.unreadable_cells += 1
                return
            legacy.setdefault(rowid, raw)
