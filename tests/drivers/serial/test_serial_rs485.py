"""Plain serial protocol buses through an RS-485 adapter that echoes (pty pairs with an
echoing peer), and the kernel RS-485 mode, which a pty refuses (drivers/rs485.py)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import tty
from collections.abc import AsyncIterator

import pytest

from drivers.base import WriteStatus
from drivers.core.config import Rs485Config
from drivers.core.endpoint import parse_endpoint
from drivers.core.reading import Quality
from drivers.link import Link, LinkError
from drivers.rs485 import ECHO_MARGIN, EchoMismatch, NoEcho
from drivers.sim.serial_sims import SerialSims
from tests.drivers.serial.serial_harness import make_bus
from tests.drivers.serial.test_serial_bus import DEVS, bus_for, fast_profile, until

ECHO = {"echo": True}


def flip_last(data: bytes) -> bytes:
    return data[:-1] + bytes([data[-1] ^ 0x01])


@contextlib.asynccontextmanager
async def running(h: object) -> AsyncIterator[None]:
    async with asyncio.TaskGroup() as tg:
        task = tg.create_task(h.bus.run(), name="serial-bus")  # type: ignore[attr-defined]
        try:
            yield
        finally:
            task.cancel()


@pytest.mark.parametrize("protocol", ["serial", "pelco_d", "mbus"])
async def test_echo_is_read_back_and_dropped(sims: SerialSims, protocol: str) -> None:
    line = sims.lines[protocol]
    line.echo = lambda d: d
    # live devices: timeouts with room for a slow machine (make test-arm); none may expire
    if protocol == "serial":
        prof = fast_profile()
        assert prof.serial is not None
        prof = prof.model_copy(update={"serial": prof.serial.model_copy(update={"timeout": 1.0})})
        h, _ = bus_for(sims, rs485=ECHO, profile=prof)
    else:
        h = make_bus(protocol, f"serial://{line.path}", [1, 2], timeout=1.0, rs485=ECHO)
    async with running(h):
        devs = DEVS if protocol == "serial" else (f"{protocol}-1", f"{protocol}-2")
        for d in devs:
            batch = await h.next_batch(d)
            assert all(r.quality is Quality.GOOD for r in batch), batch
        if protocol == "serial":
            res = await h.bus.write("serial-2", "illuminance_level", 0.25)
            assert (res.status, res.readback) == (WriteStatus.OK, 0.25)
    for d in devs:
        st = h.bus.stats.devices[d]
        assert st.bad_frames == 0 and st.timeouts == 0, (d, st)


async def test_a_wrong_echo_is_a_bad_frame_logged_with_both_frames(
    sims: SerialSims, caplog: pytest.LogCaptureFixture
) -> None:
    line = sims.lines["serial"]
    line.echo = flip_last
    h, _ = bus_for(sims, rs485=ECHO, interval=0.1)
    with caplog.at_level(logging.WARNING, logger="cityedge.serial"):
        async with running(h):
            # offline for bad frames (no readings while it is), and probed again on every tick
            await until(lambda: h.bus.stats.devices["serial-1"].bad_frames >= 3)
            assert h.bus.stats.devices["serial-1"].reason == "bad frames"
            bad = [r for r in h.readings if r.device_id == "serial-1"]
            line.echo = lambda d: d  # the collisions stop
            h.readings.clear()
            await until(
                lambda: any(
                    r.device_id == "serial-1" and r.quality is Quality.GOOD for r in h.readings
                )
            )
    assert bad and all(r.quality is Quality.BAD for r in bad)
    assert h.bus.stats.devices["serial-1"].state == "online"  # back at the first good poll
    msgs = [r.getMessage() for r in caplog.records]
    echo_msgs = [m for m in msgs if "echo differs from the frame sent" in m]
    assert len(echo_msgs) == 1, msgs  # once for the run of failures
    assert "read back" in echo_msgs[0] and "rs485.echo = false" in echo_msgs[0]


async def test_kernel_rs485_mode_refused_by_a_pty_fails_the_open(
    sims: SerialSims, caplog: pytest.LogCaptureFixture
) -> None:
    path = sims.paths["serial"]
    link = Link(parse_endpoint(f"serial://{path}"), Rs485Config(kernel=True))
    with pytest.raises(LinkError) as info:
        await link.open()
    assert "kernel RS-485 mode (rs485.kernel = true) refused by" in info.value.reason
    assert "Failed to set RS485 mode: [Errno" in info.value.reason  # ENOTTY (qemu: ENOSYS)
    assert not link.is_open
    other = Link(parse_endpoint(f"serial://{path}"))  # closed again: exclusive open works
    await other.open()
    await other.close()

    h, _ = bus_for(sims, rs485={"kernel": True, "delay_after_send_ms": 2}, interval=0.1)
    with caplog.at_level(logging.WARNING, logger="cityedge.serial"):
        async with running(h):
            await until(lambda: h.bus.stats.devices["serial-1"].state == "offline")
    assert not h.bus.stats.connected
    assert h.bus.stats.devices["serial-1"].reason == "port gone"
    assert all(r.quality is not Quality.GOOD for r in h.readings)
    assert any("refused by" in r.getMessage() for r in caplog.records)


@contextlib.asynccontextmanager
async def raw_pty() -> AsyncIterator[tuple[int, str]]:
    master, slave = os.openpty()
    tty.setraw(master)
    tty.setraw(slave)
    try:
        yield master, os.ttyname(slave)
    finally:
        os.close(master)
        os.close(slave)


async def test_link_echo_then_reply_in_one_chunk_and_commands_without_reply() -> None:
    async with raw_pty() as (peer, path):
        link = Link(parse_endpoint(f"serial://{path}?baudrate=9600"), Rs485Config(echo=True))
        await link.open()
        loop = asyncio.get_running_loop()
        try:
            # the echo and the start of the reply arrive together; the reply is kept
            loop.call_later(0.01, os.write, peer, b"#01?*" + b"#01=1")
            await link.send(b"#01?*")
            assert await link.receive(0.5) == b"#01=1"
            # a command with no reply: its echo is consumed, nothing is left as "junk"
            loop.call_later(0.01, os.write, peer, b"#01GO*")
            await link.send(b"#01GO*")
            assert link.discard_input() == b""
            # a byte that comes back wrong
            loop.call_later(0.01, os.write, peer, b"#01X*")
            with pytest.raises(EchoMismatch) as bad:
                await link.send(b"#01?*")
            assert bad.value.offset == 3
            link.discard_input()
            # silence where the echo should be (9 bytes at 9600 baud + the margin)
            with pytest.raises(NoEcho) as none:
                await link.send(b"#01?*#02?")
            assert f"within {9 / 960 * 1000 + ECHO_MARGIN * 1000:.0f} ms, 0 of 9 bytes" in (
                none.value.reason
            )
        finally:
            await link.close()


async def test_link_echo_through_a_serial_server() -> None:
    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while request := await reader.read(256):
            writer.write(request + b"#01=1")  # the echo, then the device's answer
            await writer.drain()
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    link = Link(parse_endpoint(f"serial+tcp://127.0.0.1:{port}"), Rs485Config(echo=True))
    try:
        await link.open()
        await link.send(b"#01?*")
        data = b""
        while len(data) < 5:
            data += await link.receive(0.5)
        assert data == b"#01=1"
    finally:
        await link.close()
        server.close()
        await server.wait_closed()
