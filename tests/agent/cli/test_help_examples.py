"""Every example in every `cityedge ... --help` is executed, as a technician would type it.

The examples are read from the parser's help texts; each must have an entry in ``HOW`` (so a
new example cannot go untested). Only what a test machine cannot offer is mapped: the
paths and addresses of real hardware (``/etc/cityedge/gateway.toml``, ``/dev/ttyUSB0``,
``192.168.10.20:502``...) become the test's config, a pty served by a Modbus RTU simulator and
loopback simulators; fixed TCP ports become free ones; ``systemctl stop cityedge &&`` (the
agent is not a service here) is dropped. Commands without ``-c`` find the config through
``$CITYEDGE_CONFIG``. Long-running commands (run, simulate, demo) are started, awaited until
they serve, and stopped with the signal their help names; every example must exit 0.
"""

from __future__ import annotations

import asyncio
import os
import re
import shlex
import shutil
import signal
import sys
import tomllib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from pymodbus import FramerType

from agent.cli.main import build_parser
from drivers.sim.server import SimSpec, SimulatorServer
from tests.conftest import free_port
from tests.drivers.modbus.conftest import modbus_rtu_server, modbus_tcp_server, sim_device

__all__ = ["modbus_rtu_server", "modbus_tcp_server"]
ROOT = Path(__file__).resolve().parents[3]
BIN = Path(sys.executable).parent


def help_examples() -> list[str]:
    sub = build_parser()._subparsers._group_actions[0]  # type: ignore[union-attr]
    out = []
    for parser in sub.choices.values():  # type: ignore[union-attr]
        lines = parser.format_help().splitlines()
        if "examples:" not in lines:
            continue
        for line in lines[lines.index("examples:") + 1 :]:
            if not line.startswith("  "):
                break
            if "cityedge" in line:
                out.append(re.split(r"\s{2,}#", line.strip())[0].strip())
    return out


@dataclass(frozen=True)
class How:
    phase: int  # 1: no daemon; 2: while `cityedge run /etc/cityedge/gateway.toml` runs; 3: after
    ready: str | None = None  # long-running: text its output shows once it serves
    stop: int = signal.SIGINT
    subs: tuple[tuple[str, str], ...] = ()  # (text of the example, replacement template)


# Each example's own time limit, a hang guard: under qemu-user (the gateway's speed) an
# interpreter takes ~2.5 s of CPU to start, and an example up to ~10 s on a loaded machine
EXAMPLE_S = 120.0
# Examples that need no daemon run this many at a time: all ~35 at once on 2 cores took over a
# minute each under qemu-user, past their limit; in slots each limit is its own example's
SLOTS = max(2, os.cpu_count() or 2)
CFG = ("/etc/cityedge/gateway.toml", "{cfg}")
SERVE = "serving until SIGINT/SIGTERM"
HOW: dict[str, How] = {
    "cityedge run /etc/cityedge/gateway.toml": How(2, "ready:", signal.SIGTERM, (CFG,)),
    "CITYEDGE_GATEWAY__LOG_LEVEL=debug cityedge run examples/demo.toml": How(
        1, "ready:", signal.SIGTERM
    ),
    # the same demo file as the example above: after it (one agent per state directory)
    "cityedge run examples/demo.toml --output human": How(3, "ready:", signal.SIGTERM),
    "cityedge check /etc/cityedge/gateway.toml": How(1, subs=(CFG,)),
    "cityedge check examples/demo.toml --dropin /etc/cityedge/conf.d": How(
        1, subs=(("/etc/cityedge/conf.d", "{work}/conf.d"),)
    ),
    "cityedge simulate": How(1, SERVE, subs=(("simulate", "simulate --port {port}"),)),
    "cityedge simulate --port 1502 --streetlights 10": How(1, SERVE, subs=(("1502", "{port}"),)),
    "cityedge simulate --speed 3600 --leak 12": How(
        1, SERVE, subs=(("simulate", "simulate --port {port}"),)
    ),
    "cityedge simulate --verbose": How(1, SERVE, subs=(("simulate", "simulate --port {port}"),)),
    "cityedge demo": How(1, '"device"'),  # stdout is a file here: JSON lines
    "cityedge demo --output json --duration 5 > readings.jsonl": How(1),
    "cityedge demo --verbose --duration 5": How(1),
    "cityedge demo --duration 5": How(1),
    "cityedge demo --speed 720": How(1, '"device"'),
    "cityedge plan /etc/cityedge/gateway.toml": How(1, subs=(CFG,)),
    "cityedge plan /etc/cityedge/gateway.toml lamp-1 --turnaround 8": How(1, subs=(CFG,)),
    "cityedge profiles": How(1),
    "cityedge profiles --json": How(1),
    "cityedge profiles -c /etc/cityedge/gateway.toml": How(1, subs=(CFG,)),
    "cityedge read lamp-1": How(2),
    "cityedge read lamp-1 dim_level totalActivePower": How(2),
    "cityedge read -c examples/demo.toml meter-11 --json": How(3),
    "cityedge write lamp-1 dim_level 0.4": How(2),
    "cityedge write lamp-1 illuminanceLevel 0.4": How(2),
    "cityedge write lamp-1 working_mode manual": How(2),
    "cityedge write lamp-1 lamp_switch on": How(2),
    "cityedge write --id wo-2291 cam-21 preset 3": How(2),
    # not a terminal here: a frame per interval, one after the other
    "cityedge watch": How(2, "meter-12"),
    "cityedge watch lamp-1 meter-11 --interval 2": How(2, "meter-11"),
    "cityedge watch --once > cabinet.txt": How(2),
    "cityedge status": How(2),
    "cityedge status --json": How(2),
    "cityedge scan rtu:///dev/ttyUSB0 --units 1-8": How(1, subs=(("/dev/ttyUSB0", "{pty}"),)),
    # the ptys of the test machines refuse parity (tcsetattr EINVAL once PARENB is set; a USB
    # adapter takes it, and the first example shows the scan skipping a refused setting): no
    # parity goes through the same code
    "cityedge scan rtu:///dev/ttyUSB0 --baud 9600 --parity E --units 1-32": How(
        1, subs=(("/dev/ttyUSB0", "{pty}"), ("--parity E", "--parity N"))
    ),
    # a pty has neither the kernel's RS-485 mode nor an echoing transceiver (both are tested
    # over pty pairs in tests/drivers/*/test_*rs485.py): the plain scan of the same line
    "cityedge scan rtu:///dev/ttyAMA0 --rs485 --echo --units 1-8": How(
        1, subs=(("/dev/ttyAMA0", "{pty}"), ("--rs485 --echo ", ""))
    ),
    "cityedge scan tcp://192.168.10.20:502 --units 1-10": How(
        1, subs=(("192.168.10.20:502", "127.0.0.1:{sim}"),)
    ),
    "cityedge scan rtu+tcp://10.1.1.5:4001 --units 1-16 --timeout 0.3 --json": How(
        1, subs=(("10.1.1.5:4001", "127.0.0.1:{rtutcp}"),)
    ),
    "cityedge scan tcp://192.168.10.20:502 --units 1-30 --emit-config > cabinet.toml": How(
        1, subs=(("192.168.10.20:502", "127.0.0.1:{sim}"),)
    ),
    "cityedge outbox": How(3),
    "cityedge outbox --json": How(3),
    "cityedge outbox export > backlog.jsonl": How(3),
    "cityedge outbox export --limit 100 --output uplink": How(3),
    "systemctl stop cityedge && cityedge outbox purge --older-than 86400 --yes": How(
        3, subs=(("systemctl stop cityedge && ", ""),)
    ),
    "cityedge outbox salvage /var/lib/cityedge/outbox-uplink.sqlite.damaged-20260101T000000Z "
    "> r.jsonl": How(3, subs=(("/var/lib/cityedge", "{work}/state"),)),
    "systemctl stop cityedge && cityedge outbox salvage DIR --into": How(
        3,
        subs=(
            ("systemctl stop cityedge && ", ""),
            ("DIR", "{work}/state/outbox-uplink.sqlite.damaged-20260101T000000Z"),
        ),
    ),
    "cityedge ui": How(2, SERVE, subs=(("cityedge ui", "cityedge ui --port {port}"),)),
    "cityedge ui --port 8090 --interval 2": How(2, SERVE, subs=(("8090", "{port}"),)),
    # the cabinet LAN's address is the test machine's loopback; the users file is the one
    # the next example writes (phase 1, before the daemon starts)
    "cityedge ui --host 0.0.0.0 --users /etc/cityedge/credentials/ui_users": How(
        2,
        SERVE,
        subs=(
            ("--host 0.0.0.0", "--host 127.0.0.1 --port {port}"),
            ("/etc/cityedge/credentials", "{work}"),
        ),
    ),
    "cityedge ui --add-user alice --users /etc/cityedge/credentials/ui_users": How(
        1,
        subs=(
            ("cityedge ui", "printf 'correct horse battery staple\\n' | cityedge ui"),
            ("/etc/cityedge/credentials", "{work}"),
        ),
    ),
    "cityedge completion bash > cityedge.bash": How(1),
    "cityedge completion zsh > _cityedge": How(1),
    "cityedge sign lamp-1 dim_level 0.4": How(1),
    "cityedge sign --topic --action ping": How(1),
    "cityedge sign --key-file cmd.key --kid cmd_key --gateway hn-cabinet-0042 lamp-01 "
    "lamp_switch on": How(1),
    "cityedge sign --id wo-2291 --ts 2026-11-23T18:00:00Z --nonce 7f3a9c cam-21 preset 3": How(1),
}


@pytest.fixture
async def sim() -> AsyncIterator[SimulatorServer]:
    # what `cityedge simulate` serves: the demo's units
    async with SimulatorServer(SimSpec()) as server:
        yield server


class Run:
    """One example as a process; its output goes to files (a full pipe would block it)."""

    def __init__(self, n: int, example: str, how: How, work: Path, values: dict[str, str]):
        self.example, self.how = example, how
        text = example
        for old, new in how.subs:
            text = text.replace(old, new.format(**values, port=free_port()), 1)
        self.text = text
        self.out, self.err = work / f"ex{n}.out", work / f"ex{n}.err"
        self.proc: asyncio.subprocess.Process | None = None
        self.work = work

    async def start(self, env: dict[str, str]) -> None:
        with self.out.open("wb") as out, self.err.open("wb") as err:
            if re.search(r"[|>&;]", self.text):
                argv = ["sh", "-c", self.text]
            else:
                words = shlex.split(self.text)
                while "=" in words[0]:  # VAR=value before the command
                    key, _, value = words.pop(0).partition("=")
                    env = {**env, key: value}
                argv = words
            self.proc = await asyncio.create_subprocess_exec(
                *argv, cwd=self.work, env=env, stdout=out, stderr=err
            )

    def output(self) -> str:
        return self.out.read_text(errors="replace") + self.err.read_text(errors="replace")

    async def finish(self, timeout: float = EXAMPLE_S) -> None:
        assert self.proc is not None
        if self.how.ready is not None:
            for _ in range(int(timeout * 20)):
                if self.how.ready in self.output() or self.proc.returncode is not None:
                    break
                await asyncio.sleep(0.05)
            assert self.how.ready in self.output(), f"{self.text}: not ready\n{self.output()}"
            self.proc.send_signal(self.how.stop)
        try:
            rc = await asyncio.wait_for(self.proc.wait(), timeout)
        except TimeoutError:
            why = f"{self.text}: still running after {timeout:g} s\n{self.output()[-3000:]}"
            raise AssertionError(why) from None
        assert rc == 0, f"{self.text} (for: {self.example}) exited {rc}:\n{self.output()[-3000:]}"


async def test_every_help_example_runs(
    sim: SimulatorServer,
    mosquitto: Any,
    modbus_rtu_server: Any,
    modbus_tcp_server: Any,
    tmp_path: Path,
) -> None:
    examples = help_examples()
    assert sorted(examples) == sorted(HOW), "an example without a way to run it, or gone"
    broker = mosquitto()
    rtu = await modbus_rtu_server([sim_device(3, holding={0: 1}), sim_device(7, holding={0: 2})])
    rtutcp = await modbus_tcp_server([sim_device(5, holding={0: 3})], framer=FramerType.RTU)
    work = tmp_path
    demo = (ROOT / "examples" / "demo.toml").read_text()
    demo = demo.replace("127.0.0.1:5020", f"127.0.0.1:{sim.port}")
    (work / "examples").mkdir()
    (work / "examples" / "demo.toml").write_text(
        demo.replace("/tmp/cityedge-demo", str(work / "demo-state"))
    )
    (work / "conf.d").mkdir()
    (work / "cmd.key").write_text("7b5f2c9e3a1d4f6b8e0c2a4d6f8b1e3c\n")
    site = demo.replace("/tmp/cityedge-demo", str(work / "state"))
    site += f"""
[[outputs]]
type = "mqtt"
id = "uplink"
brokers = [{{ url = "mqtt://127.0.0.1:{broker.port}" }}]
health_interval = 0

[commands]
hmac_secret = "cmd_key"
"""
    (work / "gateway.toml").write_text(site)
    values = {
        "cfg": str(work / "gateway.toml"),
        "work": str(work),
        "pty": rtu.wire.client_path,
        "sim": str(sim.port),
        "rtutcp": str(rtutcp.port),
    }
    env = {
        **os.environ,
        "PATH": f"{BIN}:{os.environ.get('PATH', '')}",
        "CITYEDGE_CONFIG": str(work / "gateway.toml"),
        "CITYEDGE_SECRETS__CMD_KEY": "7b5f2c9e3a1d4f6b8e0c2a4d6f8b1e3c",
        "COLUMNS": "200",
    }
    runs = [Run(i, ex, HOW[ex], work, values) for i, ex in enumerate(examples)]

    async def together(batch: list[Run]) -> None:
        for r in batch:
            await r.start(env)
        await asyncio.gather(*(r.finish() for r in batch))

    serial = [r for r in runs if r.how.phase == 1 and "{pty}" in str(r.how.subs)]
    phase1 = [r for r in runs if r.how.phase == 1 and r not in serial]
    slots = asyncio.Semaphore(SLOTS)

    async def in_slot(r: Run) -> None:
        async with slots:
            await together([r])

    async def one_by_one(batch: list[Run]) -> None:
        for r in batch:  # one owner at a time on the serial line
            await in_slot(r)

    try:
        # the whole run's guard: pytest-timeout's (120 s here, more under qemu-user:
        # .ci/arm-test) comes first; this one only makes sure no example outlives the test
        async with asyncio.timeout(900):
            await asyncio.gather(*(in_slot(r) for r in phase1), one_by_one(serial))

            daemon = next(r for r in runs if r.example == "cityedge run /etc/cityedge/gateway.toml")
            await daemon.start(env)
            for _ in range(600):  # served: every lamp-1 point has been polled once
                if "ready:" in daemon.output() and '"point":"active_power"' in daemon.output():
                    break
                await asyncio.sleep(0.05)
            await together([r for r in runs if r.how.phase == 2 and r is not daemon])
            await daemon.finish()
            # what the agent does with a damaged outbox file: set it aside in a dated directory
            aside = work / "state" / "outbox-uplink.sqlite.damaged-20260101T000000Z"
            aside.mkdir()
            shutil.copy(work / "state" / "outbox-uplink.sqlite", aside / "outbox-uplink.sqlite")
            for r in [r for r in runs if r.how.phase == 3]:
                await together([r])
    finally:
        # a failed example must not leave the others running (a leaked `cityedge demo` keeps
        # its ports, and the next run of the suite meets them)
        for r in runs:
            if r.proc is not None and r.proc.returncode is None:
                r.proc.kill()
                await r.proc.wait()
    assert sim.registers(21, "holding", 0, 1) == [3]  # the preset example reached the camera
    assert (work / "backlog.jsonl").exists()
    assert (work / "r.jsonl").exists()  # (empty: the broker had taken every reading)
    assert (work / "ui_users").read_text().startswith("alice:scrypt$")
    assert "lamp-1" in (work / "cabinet.txt").read_text()  # the watch frame
    assert "_shtab_cityedge" in (work / "cityedge.bash").read_text()
    assert '"device":' in (work / "readings.jsonl").read_text()
    scanned = tomllib.loads((work / "cabinet.toml").read_text())
    assert {d.get("profile") for d in scanned["devices"]} >= {"cityedge/streetlight"}
