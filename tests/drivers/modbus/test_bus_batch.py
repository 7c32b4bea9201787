"""Modbus TCP bus owner: a tick's reads go out as one batch on the I/O thread
(drivers/modbus/mbap_io.py), and the poll semantics stay those of one read at a time.

The spy sits on the session's seams (``begin`` and the client's ``transact``); before issue 20
it replaced the client's ``read_batch`` and ``read``, which are gone."""

from __future__ import annotations

import asyncio
import struct
from typing import Any

from pymodbus.constants import ExcCodes

from drivers.core.profile import Point, Table
from drivers.core.reading import Quality
from drivers.modbus.bus import ModbusBus
from tests.drivers.modbus.conftest import (
    Collector,
    make_binding,
    make_bus_config,
    make_profile,
    running,
    silent_action,
    sim_device,
)

# two requests per poll: holding 0..1 and input 0
PROFILE = make_profile(
    [
        Point(name="a", address=0),
        Point(name="b", address=1),
        Point(name="c", table=Table.INPUT, address=0),
    ]
)


def unit(n: int, **kw: Any) -> Any:
    return sim_device(n, holding={0: n, 1: 2 * n}, inputs={0: 3 * n}, **kw)


_TABLE = {1: Table.COIL, 2: Table.DISCRETE, 3: Table.HOLDING, 4: Table.INPUT}


class Spy:
    """Counts the client's tick batches (sent by the session's ``begin``: "read these
    groups") and its one-at-a-time reads, as (table, start, count, unit)."""

    def __init__(self, bus: ModbusBus) -> None:
        self.batches: list[list[tuple[Table, int, int, int]]] = []
        self.single = 0
        session, client = bus.session, bus.session.client  # type: ignore[attr-defined]
        begin, transact = session.begin, client.transact
        in_begin = [False]

        async def tick(polls: Any) -> None:
            in_begin[0] = True
            try:
                await begin(polls)
            finally:
                in_begin[0] = False

        async def spied(reqs: Any, timeout: float | None = None) -> Any:
            if in_begin[0]:
                self.batches.append(
                    [(_TABLE[p[0]], *struct.unpack(">HH", p[1:5]), u) for u, p in reqs]
                )
            else:
                self.single += len(reqs)
            return await transact(reqs, timeout)

        session.begin = tick  # type: ignore[method-assign]
        client.transact = spied


async def test_a_tick_is_one_batch(modbus_tcp_server):
    srv = await modbus_tcp_server([unit(u) for u in range(1, 6)])
    got = Collector()
    binds = [make_binding(f"d{u}", u, PROFILE, interval=0.1) for u in range(1, 6)]
    bus = ModbusBus(make_bus_config(srv.url, align_polls=True), binds, got)
    spy = Spy(bus)
    async with running(bus):
        await got.wait_for(lambda: all(len(got.of(f"d{u}")) >= 4 for u in range(1, 6)))
    assert spy.single == 0
    # aligned ticks: every batch holds the reads of all five devices (a tick whose polls
    # straddle the next tick on a loaded machine may split one)
    full = [b for b in spy.batches if len(b) == 10]
    assert len(full) >= len(spy.batches) - 1 >= 3
    assert {r[3] for r in full[-1]} == {1, 2, 3, 4, 5}
    for u in range(1, 6):
        last = got.last(f"d{u}")
        assert {p: r.value for p, r in last.items()} == {"a": u, "b": 2 * u, "c": 3 * u}
        st = bus.stats.devices[f"d{u}"]
        assert st.requests == 2 * st.polls and st.timeouts == 0 and st.online


async def test_readings_carry_the_time_their_reply_came(modbus_tcp_server):
    async def slow(*_: Any) -> ExcCodes | None:
        await asyncio.sleep(0.04)
        return None

    srv = await modbus_tcp_server([unit(1, action=slow), unit(2, action=slow)])
    got = Collector()
    binds = [make_binding(f"d{u}", u, PROFILE, interval=10) for u in (1, 2)]
    bus = ModbusBus(make_bus_config(srv.url, timeout=1.0), binds, got)
    async with running(bus):
        await got.wait_for(lambda: bool(got.of("d1")) and bool(got.of("d2")))
    one, two = got.last("d1"), got.last("d2")
    # both batches reached the bus owner at once; their readings were read 80 ms apart
    assert one["a"].observed_at_ms + 60 <= two["a"].observed_at_ms
    assert one["a"].observed_at_ms + 20 <= one["c"].observed_at_ms


async def test_dead_unit_in_a_batch(modbus_tcp_server):
    srv = await modbus_tcp_server([unit(1), unit(2, action=silent_action()), unit(3)])
    got = Collector()
    binds = [make_binding(f"d{u}", u, PROFILE, interval=0.1) for u in (1, 2, 3)]
    # a timeout the live units meet with room to spare at a third of this machine's speed
    # (make test-arm): only the dead unit may time out
    bus = ModbusBus(make_bus_config(srv.url, timeout=0.5), binds, got, quarantine_min=5.0)
    spy = Spy(bus)
    async with running(bus):
        await got.wait_for(lambda: len(got.of("d3")) >= 4)
    # the batch stopped at unit 2's timeout; unit 3 was still read in that tick, one read at
    # a time, and later ticks leave the quarantined unit out of the batch. (The long first
    # tick may leave units 1 and 3 due at different times, so a later tick can batch one of
    # them alone: each later batch is checked for unit 2 only.)
    first = got.of("d3")[0]
    assert all(r.quality is Quality.GOOD for r in first)
    assert spy.single == 2
    later = [{r[3] for r in b} for b in spy.batches[1:]]
    assert later and all(2 not in units for units in later), later
    assert set().union(*later) == {1, 3}
    dead = bus.stats.devices["d2"]
    assert dead.timeouts == 1 and not dead.online
    (bad,) = got.of("d2")  # the failed poll; offline since, it emits nothing (no stale stream)
    assert {r.reason for r in bad} == {"timeout"} and all(r.value is None for r in bad)
    assert (dead.state, dead.reason) == ("offline", "timeout")
