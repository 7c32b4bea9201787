"""Learned exclusions against real pymodbus peers: the SDM630 of issue 15 (exactly the holes it
rejects, 8 requests per cycle), and rejections that go away again (re-probed, not for good)."""

from __future__ import annotations

import random
from typing import Any

from pymodbus.constants import ExcCodes

from drivers.core.library import ProfileLibrary
from drivers.core.profile import DataType, Point, Table
from drivers.core.reading import Quality
from drivers.modbus.bus import ModbusBus
from tests.drivers.modbus.conftest import (
    Collector,
    States,
    make_binding,
    make_bus_config,
    make_profile,
    running,
    sim_device,
)
from tests.drivers.serial.serial_harness import PROFILES

# undocumented input registers the meter of the issue rejects
HOLES = (44, 45, 50, 51, 54, 55, 58, 59, 64, 65, 68, 69)


async def test_sdm630_learns_exactly_the_rejected_registers(modbus_tcp_server) -> None:
    """Issue 15, point 2: the old bisection logged "input registers 18..29 rejected"
    (readable VA/VAr registers) and every cycle took 9 requests where 8 is optimal. Here: one
    10x-interval point at input 40 too, as in the issue."""
    base = ProfileLibrary([PROFILES]).load("eastron/sdm630")
    extra = Point(name="undoc40", table=Table.INPUT, address=40, type=DataType.FLOAT32)
    prof = base.model_copy(
        update={"points": (*base.points, extra.model_copy(update={"interval": 1.0}))}
    )
    inputs = {a: a for a in range(0, 350) if a not in HOLES}
    srv = await modbus_tcp_server([sim_device(1, inputs=inputs, holding={2: 0, 3: 60})])
    got, states = Collector(), States()
    bus = ModbusBus(
        make_bus_config(srv.url, timeout=0.5),
        [make_binding("meter", 1, prof, interval=0.1)],
        got,
        on_state=states,
    )
    dev = bus.devices["meter"]
    st = bus.stats.devices["meter"]
    async with running(bus):
        await got.wait_for(lambda: len(got.of("meter")) >= 3)
        exceptions, requests, polls = st.exceptions, st.requests, st.polls
        await got.wait_for(lambda: len(got.of("meter")) >= 3 + 12)  # >= one 1 s tick too
        assert st.exceptions == exceptions  # learned: nothing rejected any more
        assert (st.requests - requests) == 8 * (st.polls - polls)  # 8 in every cycle
    assert dev.learned.registers == {(Table.INPUT, a) for a in HOLES}
    assert [x.what for x in st.excluded] == [
        "input registers 44..45 (FC04)",
        "input registers 50..51 (FC04)",
        "input registers 54..55 (FC04)",
        "input registers 58..59 (FC04)",
        "input registers 64..65 (FC04)",
        "input registers 68..69 (FC04)",
    ]
    assert st.unsupported_points == ()
    assert states.of("meter") == [("online", None)]  # holes between points: still online
    for batch in got.of("meter"):
        assert all(r.quality is Quality.GOOD for r in batch), batch
    assert sum(1 for b in got.of("meter") for r in b if r.point == "undoc40") >= 2


async def test_transient_rejection_is_reprobed_not_kept(modbus_tcp_server) -> None:
    """A point the device rejected for a while (exception 2) is re-probed with backoff and
    read again once the device accepts it; meanwhile the device is degraded, not offline."""
    rejecting = {"on": True}

    async def flaky(_fc: int, _start: int, address: int, count: int, *_: Any) -> ExcCodes | None:
        touches = address <= 10 < address + count
        return ExcCodes.ILLEGAL_ADDRESS if rejecting["on"] and touches else None

    srv = await modbus_tcp_server([sim_device(1, holding={0: 1, 10: 2, 11: 3}, action=flaky)])
    prof = make_profile([Point(name=f"p{a}", address=a) for a in (0, 10, 11)])
    got, states = Collector(), States()
    bus = ModbusBus(
        make_bus_config(srv.url),
        [make_binding("d", 1, prof, interval=0.05)],
        got,
        on_state=states,
        reprobe_min=0.3,
        reprobe_max=0.6,
        rng=random.Random(3),
    )
    st = bus.stats.devices["d"]
    async with running(bus):
        await states.wait_for(lambda: states.state("d") == "degraded")
        await got.wait_for(lambda: st.unsupported_points == ("p10",))  # the next plan
        assert [x.what for x in st.excluded] == ["holding registers 1..10 (FC03)"]
        rejecting["on"] = False
        await states.wait_for(lambda: states.state("d") == "online", timeout=5)
        await got.wait_for(lambda: "p10" in got.last("d"))
    assert got.last("d")["p10"].value == 2 and got.last("d")["p10"].quality is Quality.GOOD
    assert st.unsupported_points == () and st.excluded == ()
    assert states.of("d") == [("degraded", "exception"), ("online", None)]
