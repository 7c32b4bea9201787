"""agent/ops/timesync.py's ctypes ``struct timex`` against the C library of the machine running
the tests: on 64-bit (amd64, arm64) and 32-bit (armhf: 32-bit ``long`` and ``time_t``) alike
the layout must match what glibc's ``adjtimex`` symbol expects, and both must read the same
clock state. ``make test-arm`` runs this in the arm64 and armhf roots."""

from __future__ import annotations

import ctypes
import platform
import subprocess
from pathlib import Path

from agent.ops import timesync

PROGRAM = r"""
#include <stddef.h>
#include <stdio.h>
#include <sys/timex.h>
int main(void) {
    struct timex tx = {0};
    int state = adjtimex(&tx);
    printf("%zu %zu %zu %zu %d %d\n", sizeof(struct timex), sizeof(long),
           offsetof(struct timex, status), offsetof(struct timex, offset), state, tx.status);
    return 0;
}
"""


def c_answer(tmp_path: Path) -> list[int]:
    src, exe = tmp_path / "timex.c", tmp_path / "timex"
    src.write_text(PROGRAM)
    # plain gcc, as on Raspberry Pi OS: no -D_TIME_BITS=64, so the same symbol ctypes finds
    subprocess.run(["gcc", "-O0", "-o", str(exe), str(src)], check=True)
    out = subprocess.run([str(exe)], check=True, capture_output=True, text=True).stdout
    return [int(v) for v in out.split()]


def test_timex_layout_matches_the_c_library(tmp_path: Path) -> None:
    size, long_size, status_off, offset_off, c_state, c_status = c_answer(tmp_path)
    T = timesync._Timex
    print(
        f"{platform.machine()}: sizeof(struct timex) {size}, long {long_size}, "
        f"status at {status_off}; ctypes {ctypes.sizeof(T)}, status at {T.status.offset}"
    )
    assert long_size == ctypes.sizeof(ctypes.c_long)
    assert T.offset.offset == offset_off and T.status.offset == status_off
    assert ctypes.sizeof(T) >= size  # the kernel writes the whole struct back
    got = timesync.kernel_clock_state()
    assert got is not None, "adjtimex(modes=0) refused outside the unit's seccomp filter"
    # the same call through ctypes reads the same state (unless NTP changed it in between)
    assert got == (c_state, c_status)
