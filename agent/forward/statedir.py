"""The state directory (``gateway.state_dir``): can the service keep its outbox there, and how
much of the disk may the outbox use.

``cityedge check`` and the daemon's start-up both call :func:`inspect`; every problem names the
path and what to do about it. The outbox budget defaults to half of what the file system has
free (counting what the outbox files already hold), no less than ``BUDGET_FLOOR`` and no more
than ``BUDGET_CAP``: enough for hours of outage, while the journal and an upgrade keep room.
"""

from __future__ import annotations

import contextlib
import errno
import os
import pwd
import stat
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

BUDGET_SHARE = 0.5
BUDGET_FLOOR = 64 << 20
BUDGET_CAP = 2 << 30
MIN_FREE = 16 << 20  # below this the outbox cannot keep even a few minutes
SERVICE_USER = "cityedge"  # a static account, when the unit does not use DynamicUser
SYSTEMD_STATE_DIR = Path("/var/lib/cityedge")  # StateDirectory=cityedge creates and chowns it
# Disk per stored reading of a polling gateway (bench/bench_storage.py, W600 load: 50
# streetlight controllers x 12 points, one record per poll cycle), for capacity estimates.
BYTES_PER_READING = 25.0


def mib(n: float) -> str:
    return f"{n / (1 << 30):.1f} GiB" if n >= 1 << 30 else f"{n / (1 << 20):.0f} MiB"


def default_budget(free_bytes: int, outbox_bytes: int = 0) -> int:
    share = int((free_bytes + outbox_bytes) * BUDGET_SHARE)
    return max(BUDGET_FLOOR, min(BUDGET_CAP, share))


def outage_hours(budget: int, readings_per_s: float) -> float | None:
    """How long an outage the budget covers at a rate (None without a rate)."""
    if readings_per_s <= 0:
        return None
    return budget / BYTES_PER_READING / readings_per_s / 3600


def outbox_files_bytes(state_dir: Path) -> int:
    total = 0
    for p in state_dir.glob("outbox-*.sqlite*"):
        with contextlib.suppress(OSError):
            if p.is_file():
                total += p.stat().st_size
    return total


def free_bytes(path: Path) -> int | None:
    """Free bytes for an unprivileged writer on the file system holding ``path`` (or its
    nearest existing parent)."""
    p = path
    while not p.exists() and p != p.parent:
        p = p.parent
    try:
        st = os.statvfs(p)
    except OSError:
        return None
    return st.f_bavail * st.f_frsize


def budget_for(state_dir: Path, configured: int | None) -> tuple[int, str]:
    """The outbox budget in bytes and how it was chosen (for ``check`` and ``status``)."""
    if configured is not None:
        return configured, "outbox_max_bytes"
    free = free_bytes(state_dir)
    if free is None:
        return BUDGET_FLOOR, "default floor (free space unknown)"
    used = outbox_files_bytes(state_dir) if state_dir.is_dir() else 0
    b = default_budget(free, used)
    how = (
        "default cap"
        if b == BUDGET_CAP
        else "default floor"
        if b == BUDGET_FLOOR
        else f"default: {BUDGET_SHARE:.0%} of free space"
    )
    return b, f"{how}, {mib(free)} free"


@dataclass
class StateDirReport:
    path: Path
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    free: int | None = None
    exists: bool = False

    @property
    def ok(self) -> bool:
        return not self.errors


def _service_account() -> pwd.struct_passwd | None:
    try:
        return pwd.getpwnam(SERVICE_USER)
    except KeyError:
        return None


def _writable_by(st: os.stat_result, uid: int, gids: set[int]) -> bool:
    mode = st.st_mode
    if st.st_uid == uid:
        return bool(mode & stat.S_IWUSR and mode & stat.S_IXUSR)
    if st.st_gid in gids:
        return bool(mode & stat.S_IWGRP and mode & stat.S_IXGRP)
    return bool(mode & stat.S_IWOTH and mode & stat.S_IXOTH)


def _probe(d: Path) -> OSError | None:
    """Really write (and fsync) a file: catches read-only mounts, full disks and I/O errors
    that permission bits do not show."""
    try:
        fd, name = tempfile.mkstemp(prefix=".cityedge-check-", dir=d)
    except OSError as exc:
        return exc
    try:
        os.write(fd, b"x" * 4096)
        os.fsync(fd)
    except OSError as exc:
        return exc
    finally:
        os.close(fd)
        with contextlib.suppress(OSError):
            os.unlink(name)
    return None


def _why(exc: OSError) -> str:
    return os.strerror(exc.errno) if exc.errno else str(exc)


def inspect(path: Path, user: tuple[int, set[int]] | None = None) -> StateDirReport:
    """Exists or can be created; writable by the service user; free space.

    ``user`` (uid, gids) is whom the service runs as; by default the caller when it is not
    root, else the static ``cityedge`` account if there is one (with DynamicUser=yes, systemd
    gives StateDirectory= to the service's user itself)."""
    rep = StateDirReport(path)
    try:
        rep.exists = path.exists()
        if rep.exists and not path.is_dir():
            rep.errors.append(
                f"state directory {path}: exists but is not a directory; "
                "move it away or set gateway.state_dir to a directory"
            )
            return rep
    except PermissionError:
        rep.errors.append(
            f"state directory {path}: cannot be inspected (permission denied); "
            "run the check as root (sudo cityedge check …)"
        )
        return rep
    if not rep.exists:
        parent = path.parent
        while not parent.exists() and parent != parent.parent:
            parent = parent.parent
        if path == SYSTEMD_STATE_DIR:
            rep.warnings.append(
                f"state directory {path}: not created yet (systemd creates it at the first "
                "start, StateDirectory=cityedge)"
            )
        elif not os.access(parent, os.W_OK | os.X_OK):
            rep.errors.append(
                f"state directory {path}: does not exist and cannot be created ({parent} is "
                f"not writable); create it: sudo install -d -m 0700 -o {SERVICE_USER} {path}, "
                "or set gateway.state_dir"
            )
    else:
        _check_writable(path, rep, user)
    rep.free = free_bytes(path)
    if rep.free is not None and rep.ok:
        if rep.free < MIN_FREE:
            rep.errors.append(
                f"state directory {path}: only {mib(rep.free)} free; the outbox needs at least "
                f"{mib(MIN_FREE)}: free space on that file system (old logs, exports, "
                "set-aside outbox files) or move gateway.state_dir"
            )
        elif rep.free < BUDGET_FLOOR:
            rep.warnings.append(
                f"state directory {path}: {mib(rep.free)} free, less than the outbox's default "
                f"budget of {mib(BUDGET_FLOOR)}: an outage will drop the oldest readings early"
            )
    return rep


def _check_writable(path: Path, rep: StateDirReport, user: tuple[int, set[int]] | None) -> None:
    st = path.stat()
    if hasattr(os, "statvfs") and os.statvfs(path).f_flag & os.ST_RDONLY:
        rep.errors.append(
            f"state directory {path}: the file system is mounted read-only; remount it "
            f"read-write (mount -o remount,rw …) or check the card (dmesg: I/O errors make "
            "the kernel remount it read-only)"
        )
        return
    euid = os.geteuid()
    if user is None and euid == 0:
        acct = _service_account()
        user = (acct.pw_uid, _groups(acct)) if acct is not None else None
    if user is None and euid != 0 and not os.access(path, os.W_OK | os.X_OK):
        user = (euid, set(os.getgroups()) | {os.getegid()})
    if user is not None and not _writable_by(st, user[0], user[1]):
        who = _name(user[0])
        rep.errors.append(
            f"state directory {path}: not writable by user {who}, whom the service runs as "
            f"(owner {_name(st.st_uid)}, mode {stat.S_IMODE(st.st_mode):04o}); fix the owner: "
            f"sudo chown -R {who}: {path}"
        )
        return
    exc = _probe(path)
    if exc is not None:
        hint = {
            errno.EROFS: "remount it read-write or check the card",
            errno.ENOSPC: "free space on that file system",
            errno.EDQUOT: "raise the quota or free space",
            errno.EIO: "the card is failing: replace it",
        }.get(exc.errno or 0, "check the owner and the mount")
        rep.errors.append(f"state directory {path}: cannot write a file ({_why(exc)}); {hint}")


def _groups(acct: pwd.struct_passwd) -> set[int]:
    import grp

    gids = {acct.pw_gid}
    with contextlib.suppress(OSError):
        gids |= {g.gr_gid for g in grp.getgrall() if acct.pw_name in g.gr_mem}
    return gids


def _name(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)
