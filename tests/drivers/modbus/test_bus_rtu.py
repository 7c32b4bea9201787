"""ModbusBus over a pty pair (RTU and ASCII framing) with several unit ids on one line."""

from __future__ import annotations

import asyncio

import pytest
from pymodbus import FramerType

from drivers.base import WriteStatus
from drivers.core.endpoint import parse_endpoint
from drivers.core.profile import DataType, Point, Table
from drivers.core.reading import Quality
from drivers.modbus.adapter import inter_frame_gap, response_timeout
from drivers.modbus.bus import ModbusBus
from tests.drivers.modbus.conftest import (
    Collector,
    make_binding,
    make_bus_config,
    make_profile,
    running,
    sim_device,
)

LAMP = make_profile(
    [
        Point(name="dim", type=DataType.UINT16, address=0, writable=True, min=0, max=100, unit="%"),
        Point(name="power", type=DataType.FLOAT32, address=1, unit="W"),
        Point(name="hours", type=DataType.UINT32, address=3),
        Point(name="on", table=Table.COIL, type=DataType.BOOL, address=0),
    ],
    kind="streetlight",
)


def lamp(unit: int) -> object:
    # 100.5 W as float32 ABCD = 0x42C9 0x0000
    return sim_device(
        unit, holding={0: unit * 10, 1: 0x42C9, 2: 0, 3: 0, 4: unit}, coils={0: unit % 2 == 1}
    )


@pytest.mark.parametrize("framer", [FramerType.RTU, FramerType.ASCII])
async def test_several_units_on_one_line(modbus_rtu_server, framer):
    srv = await modbus_rtu_server([lamp(1), lamp(2), lamp(5)], framer=framer)
    got = Collector()
    binds = [make_binding(f"l{u}", u, LAMP, interval=0.05) for u in (1, 2, 5)]
    bus = ModbusBus(make_bus_config(srv.url(), timeout=0.2), binds, got)
    async with running(bus):
        await got.wait_for(lambda: all(len(got.of(b.id)) >= 3 for b in binds))
        res = await bus.write("l2", "dim", 55)
        assert (res.status, res.readback) == (WriteStatus.OK, 55)
        await got.wait_for(lambda: got.last("l2")["dim"].value == 55)
    for u in (1, 2, 5):
        last = got.last(f"l{u}")
        assert last["power"].value == 100.5 and last["power"].quality is Quality.GOOD
        assert last["hours"].value == u
        assert last["on"].value is (u % 2 == 1)
        assert last["power"].source is not None and last["power"].source.unit_id == u
        st = bus.stats.devices[f"l{u}"]
        assert st.timeouts == 0 and st.exceptions == 0 and st.bad_frames == 0
    assert got.last("l1")["dim"].value == 10


async def test_inter_frame_gap_is_kept(modbus_rtu_server):
    srv = await modbus_rtu_server([lamp(1), lamp(2)])
    loop = asyncio.get_running_loop()
    sent: list[float] = []
    answered: list[float] = []

    def on_request(data: bytes) -> bytes:
        sent.append(loop.time())
        return data

    def on_response(data: bytes) -> bytes:
        answered.append(loop.time())
        return data

    srv.wire.to_server, srv.wire.to_client = on_request, on_response
    got = Collector()
    binds = [make_binding(f"l{u}", u, LAMP, interval=0.01) for u in (1, 2)]
    bus = ModbusBus(make_bus_config(srv.url(), inter_frame_gap=0.01), binds, got)
    async with running(bus):
        await got.wait_for(lambda: len(got.batches) >= 6)
    gaps = [s - a for a, s in zip(answered, sent[1:], strict=False)]
    assert len(gaps) >= 10
    assert min(gaps) >= 0.0095  # never two frames closer than the configured silence
    # polls never overlap: every request got its answer before the next one went out
    assert all(a < s for a, s in zip(answered, sent[1:], strict=False))


def test_timing_defaults_follow_the_baud_rate():
    slow = parse_endpoint("rtu:///dev/ttyUSB0?baudrate=9600&parity=E")
    fast = parse_endpoint("rtu:///dev/ttyUSB0?baudrate=115200")
    tcp = parse_endpoint("tcp://10.0.0.7:502")
    assert inter_frame_gap(slow, None) == pytest.approx(3.5 * 11 / 9600)
    assert inter_frame_gap(fast, None) == 0.00175  # fixed above 19200 baud (spec 2.5.1.1)
    assert inter_frame_gap(tcp, None) == 0.0
    assert inter_frame_gap(slow, 0.02) == 0.02
    # sub-second on RS-485, sized from the frame length; 1 s on TCP; the config wins
    assert response_timeout(slow, None) < 0.5
    assert response_timeout(slow, None, 20) == pytest.approx(max(0.1, 20 * 11 / 9600 + 0.05))
    assert response_timeout(fast, None, 20) == 0.1
    assert response_timeout(tcp, None) == 1.0
    assert response_timeout(slow, 0.3, 20) == 0.3
