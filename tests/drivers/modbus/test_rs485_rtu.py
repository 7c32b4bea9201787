"""Modbus RTU through an RS-485 adapter that hears its own transmission (pty pair, echoing
peer) and with the kernel RS-485 mode, which a pty refuses (drivers/rs485.py)."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest

from drivers.base import WriteStatus
from drivers.core.config import Rs485Config
from drivers.core.endpoint import parse_endpoint
from drivers.core.profile import Point, Table
from drivers.core.reading import Quality
from drivers.modbus.adapter import EchoFailed, NoResponse, NotConnected, modbus_client
from drivers.modbus.bus import ModbusBus
from drivers.rs485 import EchoMismatch, NoEcho
from tests.drivers.modbus.conftest import (
    Collector,
    States,
    make_binding,
    make_bus_config,
    make_profile,
    running,
    sim_device,
)
from tests.fixtures.ptywire import PtyWire

PROFILE = make_profile(
    [
        Point(name="a", address=0, writable=True, min=0, max=1000),
        Point(name="b", address=1),
        Point(name="c", table=Table.INPUT, address=0),
    ]
)
READ_0_2 = bytes.fromhex("01 03 00 00 00 02 c4 0b")  # FC03 unit 1, registers 0..1, CRC


def unit(n: int) -> Any:
    return sim_device(n, holding={0: n, 1: 2 * n}, inputs={0: 3 * n})


def flip_third(data: bytes) -> bytes:
    return data[:2] + bytes([data[2] ^ 0xFF]) + data[3:] if len(data) > 2 else data


async def test_echoed_frames_are_dropped_and_polls_and_writes_work(modbus_rtu_server):
    srv = await modbus_rtu_server([unit(1), unit(2)], char_time=0.0005)
    echoed: list[bytes] = []

    def echo(d: bytes) -> bytes:
        echoed.append(d)
        return d

    srv.wire.echo = echo
    got = Collector()
    binds = [make_binding(f"d{u}", u, PROFILE, interval=0.1) for u in (1, 2)]
    # live units: a timeout with room for a slow machine (make test-arm); none may expire
    cfg = make_bus_config(srv.url(), timeout=1.0, rs485=Rs485Config(echo=True))
    bus = ModbusBus(cfg, binds, got)
    async with running(bus):
        await got.wait_for(lambda: all(len(got.of(b.id)) >= 2 for b in binds))
        res = await bus.write("d2", "a", 77)
        assert (res.status, res.readback) == (WriteStatus.OK, 77)
    assert echoed, "the peer echoed nothing"
    for u in (1, 2):
        assert got.last(f"d{u}")["b"].value == 2 * u
        assert all(r.quality is Quality.GOOD for r in got.last(f"d{u}").values())
        st = bus.stats.devices[f"d{u}"]
        assert st.bad_frames == 0 and st.timeouts == 0


async def test_without_echo_handling_a_dead_units_write_looks_confirmed():
    # Why the option exists: FC06's answer is a copy of the request, so through an echoing
    # adapter the echo alone "confirms" a write nobody received. With rs485.echo the echo is
    # verified and dropped, and the write times out as it must.
    async with PtyWire() as wire:  # nobody serves the far end: the unit is dead
        wire.echo = lambda d: d
        ep = parse_endpoint(f"rtu://{wire.client_path}?baudrate=19200&parity=N")
        plain = modbus_client(ep, 0.2)
        await plain.connect(1.0)
        try:
            await plain.write_registers(1, 0, [55], 0.2)  # "succeeds": the echo answered
        finally:
            plain.close()
        checked = modbus_client(ep, 0.2, Rs485Config(echo=True))
        await checked.connect(1.0)
        try:
            with pytest.raises(NoResponse) as info:
                await checked.write_registers(1, 0, [55], 0.2)
        finally:
            checked.close()
    assert not isinstance(info.value, EchoFailed) and not info.value.bad_frame


@pytest.mark.parametrize(
    ("echo", "offset", "heard"),
    [
        (flip_third, 2, "01 03 ff"),  # a collision: the third byte came back wrong
        (lambda d: None, 2, "01 03 04"),  # the adapter does not echo: the reply came instead
    ],
    ids=["corrupted-echo", "adapter-without-echo"],
)
async def test_a_wrong_echo_is_a_bad_frame_with_both_frames(
    modbus_rtu_server, caplog, echo, offset, heard
):
    srv = await modbus_rtu_server([unit(1)])
    srv.wire.echo = echo
    client = modbus_client(parse_endpoint(srv.url()), 0.2, Rs485Config(echo=True))
    await client.connect(1.0)
    try:
        with caplog.at_level(logging.WARNING, logger="drivers.modbus.adapter"):
            with pytest.raises(EchoFailed) as info:
                await client.read(Table.HOLDING, 0, 2, 1, 0.2)
            with pytest.raises(EchoFailed):
                await client.read(Table.HOLDING, 0, 2, 1, 0.2)
        srv.wire.echo = lambda d: d  # the line is right again
        assert await client.read(Table.HOLDING, 0, 2, 1, 1.0) == [1, 2]
    finally:
        client.close()
    exc = info.value
    assert exc.bad_frame and isinstance(exc.echo, EchoMismatch)
    assert (exc.echo.sent, exc.echo.offset) == (READ_0_2, offset)
    want = f"at byte {offset}: sent {READ_0_2.hex(' ')}, read back {heard}"
    assert want in exc.reason and want in str(exc)
    # logged once for the run of failures, not once per request
    assert [r.getMessage().count(want) for r in caplog.records] == [1]


async def test_a_wrong_echo_on_the_bus_is_a_bad_frame_not_a_dead_unit(modbus_rtu_server):
    srv = await modbus_rtu_server([unit(1)])
    srv.wire.echo = flip_third
    got, states = Collector(), States()
    cfg = make_bus_config(srv.url(), timeout=0.15, rs485=Rs485Config(echo=True))
    bus = ModbusBus(
        cfg, [make_binding("d1", 1, PROFILE, interval=0.1)], got, quarantine_min=5, on_state=states
    )
    async with running(bus):
        # the unit answered, the line garbled the exchange: offline for bad frames, not silence
        await states.wait_for(lambda: states.of("d1") == [("offline", "bad frames")])
        # the only device on its bus is probed on every tick, not held back by the 5 s
        # quarantine (an offline device emits nothing, so count its requests)
        async with asyncio.timeout(3):
            while bus.stats.devices["d1"].bad_frames < 3:
                await asyncio.sleep(0.05)
    assert all(r.quality is Quality.BAD for r in got.of("d1")[0])


async def test_silence_where_the_echo_should_be_is_a_timeout():
    async with PtyWire() as wire:  # no echo and nobody answers
        ep = parse_endpoint(f"rtu://{wire.client_path}?baudrate=19200&parity=N")
        client = modbus_client(ep, 0.1, Rs485Config(echo=True))
        await client.connect(1.0)
        try:
            with pytest.raises(EchoFailed) as info:
                await client.read(Table.HOLDING, 0, 2, 1, 0.1)
        finally:
            client.close()
    assert isinstance(info.value.echo, NoEcho) and not info.value.bad_frame
    assert "0 of 8 bytes read back" in info.value.reason


@pytest.mark.parametrize("scheme", ["rtu", "ascii"])
async def test_kernel_rs485_mode_refused_by_a_pty_is_an_error_at_open(
    modbus_rtu_server, caplog, scheme
):
    srv = await modbus_rtu_server([unit(1)])
    url = srv.url().replace("rtu://", f"{scheme}://") + ("&bytesize=8" if scheme == "ascii" else "")
    rs = Rs485Config(kernel=True, delay_before_send_ms=1)
    client = modbus_client(parse_endpoint(url), 0.2, rs)
    with pytest.raises(NotConnected) as info:
        await client.connect(1.0)
    reason = info.value.reason
    assert "kernel RS-485 mode (rs485.kernel = true) refused by" in reason
    # a pty has no TIOCSRS485: ENOTTY from Linux, ENOSYS from qemu-user (make test-arm)
    assert "Failed to set RS485 mode: [Errno" in reason
    assert not client.connected
    # the port was closed again: the next owner can open it (it is opened exclusively)
    other = modbus_client(parse_endpoint(url), 0.2)
    await other.connect(1.0)
    other.close()

    # the bus owner reports it as a port that cannot be opened, and keeps retrying
    got, states = Collector(), States()
    cfg = make_bus_config(url, rs485=rs)
    bus = ModbusBus(cfg, [make_binding("d1", 1, PROFILE, interval=0.1)], got, on_state=states)
    with caplog.at_level(logging.WARNING):
        async with running(bus):
            await states.wait_for(lambda: states.of("d1") == [("offline", "port gone")])
    assert not bus.stats.connected
    assert "refused by" in (bus.stats.devices["d1"].detail or "")
    assert any("refused by" in r.getMessage() for r in caplog.records)


def crc16(frame: bytes) -> bytes:
    crc = 0xFFFF
    for b in frame:
        crc ^= b
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
    return crc.to_bytes(2, "little")


async def test_echo_through_a_serial_server_rtu_over_tcp():
    # a serial-to-Ethernet server in transparent mode on an echoing two-wire line: our frame
    # comes back over TCP first, then the device's reply
    reply = bytes.fromhex("01 03 04 00 05 00 06")
    reply += crc16(reply)

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while request := await reader.read(256):
            writer.write(request)
            if request[1] == 3:  # reads are answered; the unit ignores writes (dead for them)
                writer.write(reply)
            await writer.drain()
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        ep = parse_endpoint(f"rtu+tcp://127.0.0.1:{port}")
        client = modbus_client(ep, 0.5, Rs485Config(echo=True))
        await client.connect(1.0)
        try:
            assert await client.read(Table.HOLDING, 0, 2, 1, 0.5) == [5, 6]
            with pytest.raises(NoResponse):  # the echo of FC06 is not taken for its answer
                await client.write_registers(1, 0, [9], 0.3)
        finally:
            client.close()
    finally:
        server.close()
        await server.wait_closed()
