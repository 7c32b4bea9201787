"""``cityedge scan`` as a technician meets it: the time left in a terminal, a refused line
setting skipped, a missing or busy port named, and ``--emit-config`` TOML that the agent
accepts, with the profile of each unit from its identification or its register map. Over
pty pairs (a pymodbus RTU server behind a pty wire) and the TCP simulator."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tomllib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pexpect
import pytest
import serial

from agent.cli.scan import Found
from agent.cli.scan_config import emit_config
from agent.cli.serial_ports import ports_text, serial_ports
from agent.config import load_config
from drivers.sim.server import SimSpec, SimulatorServer
from tests.drivers.modbus.conftest import modbus_rtu_server, sim_device

__all__ = ["modbus_rtu_server"]


@pytest.fixture
async def sim() -> AsyncIterator[SimulatorServer]:
    async with SimulatorServer(SimSpec()) as server:
        yield server


async def cli(*args: str, cwd: Path | None = None) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "agent", "scan", *args, cwd=cwd,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    # a hang guard: one CLI run took over 30 s under qemu-user on a loaded machine
    out, err = await asyncio.wait_for(proc.communicate(), 120)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


def present(*units: int):
    # absent unit ids stay silent, as on a real line (SimDevice answers them with exception 4)
    return lambda chunk: chunk if chunk[:1] in {bytes([u]) for u in units} else None


def test_serial_ports_are_listed_with_their_by_id_names(tmp_path: Path) -> None:
    dev = tmp_path / "dev"
    (dev / "serial" / "by-id").mkdir(parents=True)
    for name in ("ttyUSB0", "ttyACM1", "null", "tty5"):
        (dev / name).touch()
    link = dev / "serial" / "by-id" / "usb-FTDI_FT232R_USB_UART_A10K1234-if00-port0"
    link.symlink_to("../../ttyUSB0")
    ports = serial_ports(dev)
    assert [p.device for p in ports] == [str(dev / "ttyACM1"), str(dev / "ttyUSB0")]
    assert ports[1].links == (str(link),)
    text = ports_text(ports)
    assert f"  {dev}/ttyUSB0\n      {link}" in text and "replugged" in text
    assert "no serial port found" in ports_text([])


async def test_a_missing_device_node_is_named_with_the_ports_that_exist() -> None:
    rc, _, err = await cli("rtu:///dev/ttyUSB9", "--units", "1-8")
    assert rc == 2
    assert err.startswith("cityedge: /dev/ttyUSB9 does not exist\n")
    assert "serial ports here:" in err or "no serial port found" in err
    assert "daemon" not in err and "Traceback" not in err


async def test_a_refused_line_setting_is_skipped_and_the_scan_goes_on(modbus_rtu_server) -> None:
    rtu = await modbus_rtu_server([sim_device(3, holding={0: 1}), sim_device(7, holding={0: 2})])
    rtu.wire.to_server = present(3, 7)
    path = rtu.wire.client_path
    # parity E then N, every setting tried: a pty refuses parity flags (EINVAL) on the test
    # machines, a USB adapter without even parity does the same; either way the scan must
    # go on to the next setting and say what it skipped
    rc, out, err = await cli(
        f"rtu://{path}", "--baud", "19200", "--parity", "E,N", "--units", "1-8",
        "--timeout", "0.3", "--all-settings",
    )  # fmt: skip
    assert rc == 0, err
    hits = {line.split()[1] for line in out.splitlines() if line.startswith("unit")}
    assert hits == {"3", "7"}
    assert f"rtu://{path}?baudrate=19200&parity=N&stopbits=2" in out
    if "parity=E" not in out:
        assert "skipping 19200 baud 8E1: the port refuses this setting" in err
    assert "daemon" not in err and "Traceback" not in err


async def test_a_busy_port_stops_the_scan_with_the_reason(modbus_rtu_server) -> None:
    rtu = await modbus_rtu_server([sim_device(3, holding={0: 1})])
    path = rtu.wire.client_path
    holder = serial.Serial(path, exclusive=True)  # another program has the port
    try:
        rc, _, err = await cli(f"rtu://{path}", "--parity", "N", "--units", "1-3")
    finally:
        holder.close()
    assert rc == 1
    assert f"{path} is in use by another program" in err and "systemctl stop cityedge" in err
    assert err.count("\n") == 1  # one line, not one per setting


async def test_progress_shows_the_time_left_in_a_terminal() -> None:
    master, slave = os.openpty()  # a line nobody answers on
    path = os.ttyname(slave)
    try:
        child = pexpect.spawn(
            sys.executable,
            ["-m", "agent", "scan", f"rtu://{path}", "--baud", "9600", "--parity", "N",
             "--units", "1-12", "--timeout", "0.1"],
            env={**os.environ, "TERM": "xterm-256color"},
            dimensions=(24, 160),
            encoding="utf-8",
            timeout=30,
        )  # fmt: skip
        await asyncio.to_thread(child.expect, r"12 probes \(1 line setting\(s\) x 12 unit ids\)")
        await asyncio.to_thread(child.expect, r"9600 baud 8N2 unit \d+")
        left = r"\d+/12.*probes, 0 found.*\d:\d\d:\d\d(\x1b\[[0-9;]*m)* left"  # the ETA column
        await asyncio.to_thread(child.expect, left)
        await asyncio.to_thread(child.expect, pexpect.EOF)
        await asyncio.to_thread(child.close)
        assert child.exitstatus == 1  # nothing answered
        assert "no units answered" in str(child.before)
    finally:
        os.close(master)
        os.close(slave)


async def test_emit_config_over_tcp_is_a_config_the_agent_accepts(
    sim: SimulatorServer, tmp_path: Path
) -> None:
    rc, out, err = await cli(
        f"tcp://127.0.0.1:{sim.port}", "--units", "1-25", "--emit-config", cwd=tmp_path
    )
    assert rc == 0, err
    doc = tomllib.loads(out)
    [bus] = doc["buses"]
    assert bus["endpoint"] == f"tcp://127.0.0.1:{sim.port}"
    got = {d["unit_id"]: (d["id"], d.get("profile")) for d in doc["devices"]}
    assert got == {
        1: ("streetlight-1", "cityedge/streetlight"),
        2: ("streetlight-2", "cityedge/streetlight"),
        3: ("streetlight-3", "cityedge/streetlight"),
        11: ("water-meter-11", "cityedge/water_meter"),
        12: ("water-meter-12", "cityedge/water_meter"),
        21: ("camera-21", "cityedge/camera"),
    }
    assert 'profile = "cityedge/streetlight"  # identified: its firmware is "2.4.1"' in out
    assert 'identified: its serial_number is "UWM-2026-000011"' in out
    assert 'profile = "cityedge/camera"  # guessed: it answers this profile\'s whole' in out
    # as a conf.d file of a gateway, it loads: the agent would poll exactly these
    (tmp_path / "conf.d").mkdir()
    (tmp_path / "conf.d" / "scanned.toml").write_text(out)
    (tmp_path / "gateway.toml").write_text(
        '[gateway]\nid = "gw"\nstate_dir = "state"\n\n'
        '[[outputs]]\ntype = "jsonl"\nid = "o"\npath = "r.jsonl"\n'
    )
    loaded = load_config(tmp_path / "gateway.toml")
    assert [d.id for d in loaded.config.devices] == [g[0] for g in got.values()]


async def test_identification_tells_firmware_generations_apart() -> None:
    spec = SimSpec(streetlights=[5], water_meters=[], cameras=[],
                   profiles={"streetlight": "cityedge/streetlight_fw3"})  # fmt: skip
    server = SimulatorServer(spec)
    await server.start()
    task = asyncio.create_task(server.run())
    try:
        url = f"tcp://127.0.0.1:{server.port}"
        args = argparse.Namespace(timeout=0.3, profile_dir=[])
        text = await emit_config([Found(5, url, "registers")], args, None)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await server.stop()
    assert 'profile = "cityedge/streetlight_fw3"  # identified: its firmware is "3.4.1"' in text


async def test_emit_config_leaves_an_unknown_device_for_the_technician(
    modbus_rtu_server: Any,
) -> None:
    rtu = await modbus_rtu_server([sim_device(3, holding={0: 1})])
    rtu.wire.to_server = present(3)
    rc, out, err = await cli(
        f"rtu://{rtu.wire.client_path}", "--baud", "19200", "--parity", "N", "--units", "1-4",
        "--timeout", "0.3", "--emit-config",
    )  # fmt: skip
    assert rc == 0, err
    doc = tomllib.loads(out)
    assert doc["buses"][0]["endpoint"].endswith("?baudrate=19200&parity=N&stopbits=2")
    [dev] = doc["devices"]
    assert dev == {"id": "unit-3", "bus": doc["buses"][0]["id"], "unit_id": 3, "interval": 5.0}
    assert '# profile = "?"  # no profile of the library fits: write one' in out
