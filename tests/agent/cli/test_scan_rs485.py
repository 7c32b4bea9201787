"""``cityedge scan`` on RS-485 lines: through an adapter that echoes (``--echo``), counting
garbled replies (termination, biasing, baud rate), and ``--rs485`` on a port without the
kernel RS-485 mode."""

from __future__ import annotations

import argparse
import os

import pytest

from agent.cli import scan as scan_cmd
from agent.cli.scan import Progress, scan
from drivers.core.config import Rs485Config
from drivers.core.profile import Table
from tests.drivers.modbus.conftest import modbus_rtu_server, sim_device

__all__ = ["modbus_rtu_server"]


def present(*units: int):
    # absent unit ids stay silent, as on a real line (SimDevice answers them with exception 4)
    return lambda chunk: chunk if chunk[:1] in {bytes([u]) for u in units} else None


async def test_scan_through_an_echoing_adapter(modbus_rtu_server) -> None:
    rtu = await modbus_rtu_server([sim_device(2, holding={0: 1}), sim_device(5, holding={0: 1})])
    rtu.wire.echo = lambda d: d
    rtu.wire.to_server = present(2, 5)
    url = rtu.url()
    # present units get a timeout with room for a slow machine (make test-arm)
    found = await scan(
        [url],
        [1, 2, 5, 6],
        Table.HOLDING,
        0,
        0.5,
        False,
        Progress(4, False),
        rs485=Rs485Config(echo=True),
    )
    assert sorted(f.unit for f in found) == [2, 5]


async def test_garbled_replies_are_counted_per_setting(modbus_rtu_server) -> None:
    rtu = await modbus_rtu_server([sim_device(3, holding={0: 1})])
    rtu.wire.to_server = present(3)
    rtu.wire.to_client = lambda d: d[:-1] + bytes([d[-1] ^ 0x55])  # CRC broken: line noise
    garbled: dict[str, int] = {}
    url = rtu.url()
    found = await scan(
        [url], [2, 3], Table.HOLDING, 0, 0.5, False, Progress(2, False), garbled=garbled
    )
    assert found == [] and garbled == {url: 1}


async def test_rs485_on_a_port_without_it_stops_with_the_reason(modbus_rtu_server) -> None:
    rtu = await modbus_rtu_server([sim_device(1)])
    with pytest.raises(SystemExit) as info:
        await scan(
            [rtu.url()],
            [1],
            Table.HOLDING,
            0,
            0.1,
            False,
            Progress(1, False),
            rs485=Rs485Config(kernel=True),
        )
    assert "kernel RS-485 mode (rs485.kernel = true) refused by" in str(info.value.code)


def test_options_reach_the_scan(monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    seen = {}
    master, slave = os.openpty()  # the scan checks that the device node exists
    port = os.ttyname(slave)

    async def fake_scan(*args, rs485=None, garbled=None):
        seen["rs485"] = rs485
        garbled[f"rtu://{port}?baudrate=9600&parity=E&stopbits=1"] = 3
        return []

    monkeypatch.setattr(scan_cmd, "scan", fake_scan)
    parser = argparse.ArgumentParser()
    scan_cmd.register(parser.add_subparsers())
    args = parser.parse_args(
        ["scan", f"rtu://{port}", "--baud", "9600", "--parity", "E", "--echo", "--rs485"]
    )
    try:
        assert args.func(args) == 1
    finally:
        os.close(master)
        os.close(slave)
    assert seen["rs485"] == Rs485Config(echo=True, kernel=True)
    assert "3 garbled replies at baudrate=9600&parity=E&stopbits=1" in capsys.readouterr().err
