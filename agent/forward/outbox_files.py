"""The outbox's small files beside its database, and setting a damaged database aside.

- ``<db>.reserve``: space held for a full disk (released at once when it is needed, put back
  when there is room), so deleting acknowledged rows and evicting old ones can always write;
- ``<db>.acked``: acknowledgements (and readings lost from memory) a full or read-only disk
  could not take, overwritten in place, read back at the next start;
- ``<db>.ids``: how far delivery ids were handed out, overwritten in place;
- ``<db>.damaged-<UTC time>/``: a damaged database with its WAL, SHM and a manifest.

The in-place files are created once, while there is room; afterwards an overwrite needs no new
blocks, so a disk full to the last block can still take them.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import time
from pathlib import Path

from agent.forward import outbox_ranges as rg
from agent.forward.outbox_types import failpoint

log = logging.getLogger("cityedge.outbox")

# The WAL is checkpointed before it holds more than the reserve: on a full disk, releasing the
# reserve always leaves the file room to take the WAL's pages, and the WAL can then start over.
# The reserve is 1/16 of the file system, 128 KiB..1 MiB. A checkpoint grows the file to the
# size the WAL records (the WAL's new pages plus those of the commit in progress), so the WAL
# is checkpointed at half the reserve: releasing the reserve always lets a checkpoint finish,
# and the WAL then starts over within its own file.
RESERVE_MIN, RESERVE_MAX = 128 * 1024, 1 << 20


def reserve_size(fs_bytes: int) -> int:
    return max(RESERVE_MIN, min(RESERVE_MAX, fs_bytes // 16))


def release_reserve(path: Path) -> bool:
    reserve = Path(f"{path}.reserve")
    try:
        reserve.unlink()
    except OSError:
        return False
    log.warning("outbox %s: disk full: released the reserve file", path.name)
    return True


def keep_reserve(path: Path, size: int, free_bytes: int) -> None:
    """Put the reserve back once the disk has room for it and more."""
    reserve = Path(f"{path}.reserve")
    if reserve.exists() or free_bytes < 2 * size:
        return
    tmp = Path(f"{reserve}.tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(bytes(size))  # written, not sparse: the blocks are taken
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, reserve)
    except OSError:
        with contextlib.suppress(OSError):
            tmp.unlink()


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
