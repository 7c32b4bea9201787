"""Process figures (agent/ops/procstat.py): plausible on this kernel and under qemu-user, where
/proc/self/stat reads 0 for RSS and CPU; each figure says where it came from."""

from __future__ import annotations

import resource
import time
from pathlib import Path

from agent.ops import procstat

QEMU_STAT = b"4242 (python3) R 1 4242 4242 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 0 0 0 0" + b" 0" * 30


def burn(cpu_s: float) -> None:
    t0 = time.process_time()
    x = 0
    while time.process_time() - t0 < cpu_s:
        x += sum(range(1000))


def test_figures_are_plausible() -> None:
    before = procstat.sample()
    burn(0.2)
    f = procstat.sample()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # kB on Linux
    print(f"process figures from {f.sources}: rss {f.rss_bytes} B, cpu {f.cpu_seconds:.2f} s")
    assert f.sources["cpu"] == "getrusage"
    assert f.sources.get("rss") in {"statm", "status"}, f.sources
    assert f.rss_bytes is not None and f.vms_bytes is not None
    # an interpreter with pydantic, pymodbus and the test suite loaded; and the current size
    # cannot exceed the peak the kernel reports through another call
    assert 10e6 < f.rss_bytes <= peak + 1e6, (f.sources, f.rss_bytes, peak)
    assert f.vms_bytes >= f.rss_bytes
    assert 0.15 <= f.cpu_seconds - before.cpu_seconds < 10, f.sources
    assert f.open_fds is not None and f.open_fds >= 3 and f.max_fds >= f.open_fds
    if f.start_time is not None:  # /proc/self/stat field 22 (qemu-user writes 0 there)
        assert f.sources["start_time"] == "stat"
        assert time.time() - 86400 < f.start_time <= time.time()


def test_zeroed_stat_and_no_statm_fall_back_to_status(tmp_path: Path) -> None:
    # what qemu-user shows: stat is all zeros; here statm is gone too
    (tmp_path / "stat").write_bytes(QEMU_STAT)
    (tmp_path / "status").write_bytes(b"Name:\tpython3\nVmSize:\t  81920 kB\nVmRSS:\t   40960 kB\n")
    (tmp_path / "fd").mkdir()
    f = procstat.sample(tmp_path)
    assert f.sources["rss"] == "status" and f.rss_bytes == 40960 * 1024
    assert f.vms_bytes == 81920 * 1024
    assert f.start_time is None and "start_time" not in f.sources
    assert f.open_fds == 0


def test_statm_reading_zero_is_not_a_figure(tmp_path: Path) -> None:
    (tmp_path / "statm").write_bytes(b"0 0 0 0 0 0 0\n")
    (tmp_path / "status").write_bytes(b"VmRSS:\t   1024 kB\n")
    f = procstat.sample(tmp_path)
    assert f.sources["rss"] == "status" and f.rss_bytes == 1024 * 1024
    (tmp_path / "statm").write_bytes(b"2000 1000 0 0 0 0 0\n")
    f = procstat.sample(tmp_path)
    assert f.sources["rss"] == "statm" and f.rss_bytes == 1000 * procstat.PAGE


def test_no_source_leaves_the_figure_out(tmp_path: Path) -> None:
    f = procstat.sample(tmp_path)  # an empty directory: nothing readable
    assert f.rss_bytes is None and f.vms_bytes is None and f.open_fds is None
    assert "rss" not in f.sources
    assert f.cpu_seconds > 0  # a system call, not a file
