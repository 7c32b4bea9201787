"""The agent's own process figures (CPU, memory, descriptors) for ``/metrics``.

Every figure comes from a source that every Linux kernel fills, with a second one where the
first may be empty. ``/proc/self/stat`` is not the first source for anything: under qemu-user
(the arm64 / armhf test roots, see docs/DEPLOY.md) it is written by the emulator and reports 0
for RSS and the CPU times, and a gauge that silently reads 0 is worse than none.

- CPU seconds: ``getrusage(RUSAGE_SELF)`` (user + system of every thread, microseconds), a
  system call every kernel answers, qemu-user included (it reports the emulator's own process,
  which is the process doing the work).
- Resident memory: ``/proc/self/statm`` (resident pages x page size, the kernel's own count,
  one short read); if it is missing or says 0, ``VmRSS`` of ``/proc/self/status``. The peak
  from ``getrusage`` (``ru_maxrss``) is not a current size and is only used by the tests as a
  cross-check.
- Virtual memory: ``/proc/self/statm`` (size), else ``VmSize``.
- Start time: ``/proc/self/stat`` field 22 when it is not 0; otherwise left out (better than a
  start time of boot).
- Descriptors: ``/proc/self/fd`` and ``getrlimit(RLIMIT_NOFILE)``.

``ProcessFigures.sources`` names where each figure came from (the tests print and check it).
"""

from __future__ import annotations

import os
import resource
import time
from dataclasses import dataclass, field
from pathlib import Path

PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
SELF = Path("/proc/self")


@dataclass(frozen=True, slots=True)
class ProcessFigures:
    cpu_seconds: float
    rss_bytes: float | None
    vms_bytes: float | None
    start_time: float | None  # epoch seconds
    open_fds: int | None
    max_fds: float
    sources: dict[str, str] = field(default_factory=dict)  # figure -> where it came from


def _read(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except OSError:
        return None


def _status_kb(text: bytes | None, key: bytes) -> float | None:
    if text is None:
        return None
    for line in text.splitlines():
        if line.startswith(key):
            try:
                kb = float(line.split()[1])
            except (IndexError, ValueError):
                return None
            return kb * 1024 if kb > 0 else None
    return None


def sample(proc: Path = SELF) -> ProcessFigures:
    """The figures now. ``proc`` is ``/proc/self``, or a directory laid out like it (tests)."""
    src: dict[str, str] = {}
    ru = resource.getrusage(resource.RUSAGE_SELF)
    cpu = ru.ru_utime + ru.ru_stime
    src["cpu"] = "getrusage"

    rss = vms = None
    statm = _read(proc / "statm")
    if statm is not None:
        try:
            size, resident = (float(v) * PAGE for v in statm.split()[:2])
        except ValueError:
            pass
        else:
            rss = resident if resident > 0 else None
            vms = size if size > 0 else None
    if rss is not None:
        src["rss"] = "statm"
    if rss is None or vms is None:
        status = _read(proc / "status")
        if rss is None and (rss := _status_kb(status, b"VmRSS:")) is not None:
            src["rss"] = "status"
        if vms is None:
            vms = _status_kb(status, b"VmSize:")

    start = None
    stat = _read(proc / "stat")
    if stat is not None:
        try:
            ticks = float(stat.rsplit(b")", 1)[-1].split()[19])
        except (IndexError, ValueError):
            ticks = 0.0
        if ticks > 0:
            boot = time.time() - time.clock_gettime(time.CLOCK_BOOTTIME)
            start = boot + ticks / _TICKS
            src["start_time"] = "stat"

    try:
        fds: int | None = len(os.listdir(proc / "fd"))
    except OSError:
        fds = None
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    max_fds = float("inf") if soft == resource.RLIM_INFINITY else float(soft)
    return ProcessFigures(cpu, rss, vms, start, fds, max_fds, src)
