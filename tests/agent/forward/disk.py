"""Real storage faults for the outbox tests: small tmpfs mounts (CI and this machine run as
root), a ballast that fills what is left, read-only remounts, bytes overwritten in a file."""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def tmpfs(where: Path, size: str, *, ro: bool = False) -> Iterator[Path]:
    """A tmpfs of ``size`` (mount's syntax: "2m") mounted on ``where``."""
    where.mkdir(parents=True, exist_ok=True)
    opts = f"size={size},mode=0755" + (",ro" if ro else "")
    subprocess.run(["mount", "-t", "tmpfs", "-o", opts, "tmpfs", str(where)], check=True)
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


def remount(where: Path, mode: str) -> None:
    subprocess.run(["mount", "-o", f"remount,{mode}", str(where)], check=True)


def fill(where: Path, name: str = "ballast") -> int:
    """Write a file until the file system refuses (ENOSPC); returns its size."""
    fd = os.open(where / name, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    n = 0
    try:
        while True:
            n += os.write(fd, b"\xa5" * 4096)
    except OSError:
        pass
    finally:
        os.close(fd)
    return n


def free(where: Path) -> int:
    st = os.statvfs(where)
    return st.f_bavail * st.f_frsize


def damage(path: Path, offset: int, length: int, byte: int = 0x5A) -> None:
    """Overwrite ``length`` bytes at ``offset`` in place (a failing card's torn sectors)."""
    with open(path, "r+b") as f:
        f.seek(offset)
        f.write(bytes([byte]) * length)
        f.flush()
        os.fsync(f.fileno())
