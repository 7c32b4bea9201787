"""The unit sets MemoryDenyWriteExecute=yes: CPython, our Cython module and every dependency
must run without writable+executable memory. The kernel's own MDWE (prctl PR_SET_MDWE, the
mechanism systemd uses on Linux >= 6.3) is switched on in a child that then runs the demo
(simulators, Modbus polling, filters, JSON output); on older kernels the check falls back to
looking for W+X mappings after the same run."""

from __future__ import annotations

import json
import subprocess
import sys

CHILD = r"""
import contextlib, ctypes, io, json, os
libc = ctypes.CDLL(None, use_errno=True)
PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN = 65, 1
enforced = libc.prctl(PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN, 0, 0, 0) == 0
import ext
from agent.cli.main import main
from agent.ops.timesync import kernel_unsynced
kernel_unsynced()  # ctypes foreign call
out = io.StringIO()
with contextlib.redirect_stdout(out):
    rc = main(["demo", "--duration", "1.5"])
wx = [m for m in open("/proc/self/maps") if "w" in m.split()[1] and "x" in m.split()[1]]
print(json.dumps({"enforced": enforced, "rc": rc, "impl": ext.IMPLEMENTATION,
                  "readings": out.getvalue().count("\n"), "wx": wx}))
"""


def test_agent_runs_under_mdwe() -> None:
    res = subprocess.run(
        [sys.executable, "-c", CHILD], check=False, capture_output=True, text=True, timeout=60
    )
    assert res.returncode == 0, res.stderr[-2000:]
    report = json.loads(res.stdout.strip().splitlines()[-1])
    assert report["rc"] == 0, res.stderr[-2000:]
    assert report["readings"] > 0
    assert report["wx"] == []
    print(report)  # enforced: whether the kernel enforced MDWE during the run
