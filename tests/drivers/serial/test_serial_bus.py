"""SerialBus with the ASCII streetlight profile on real pty pairs (and over TCP): polling
several devices, writes, faults, quarantine, unplug/replug."""

from __future__ import annotations

import asyncio
import os

from drivers.base import WriteStatus
from drivers.core.profile import Profile
from drivers.core.reading import Quality
from drivers.sim.serial_devices import StreetlightLine
from drivers.sim.serial_sims import SerialSims
from tests.drivers.serial.serial_harness import Harness, load_profile, make_bus

DEVS = ("serial-1", "serial-2", "serial-3")


def fast_profile(**point_updates: object) -> Profile:
    """The example profile with a 0.1 s timeout (and optionally looser write bounds)."""
    prof = load_profile("cityedge/ascii_streetlight")
    assert prof.serial is not None
    pts = tuple(
        p.model_copy(update=point_updates) if p.name == "illuminance_level" else p
        for p in prof.points
    )
    return prof.model_copy(
        update={"serial": prof.serial.model_copy(update={"timeout": 0.1}), "points": pts}
    )


def bus_for(sims: SerialSims, **kw: object) -> tuple[Harness, StreetlightLine]:
    line = sims.responder("serial")
    assert isinstance(line, StreetlightLine)
    kw.setdefault("profile", fast_profile())
    return make_bus("serial", f"serial://{sims.paths['serial']}", [1, 2, 3], **kw), line  # type: ignore[arg-type]


async def until(cond: object, timeout: float = 3.0) -> None:
    async with asyncio.timeout(timeout):
        while not cond():  # type: ignore[operator]
            await asyncio.sleep(0.01)


async def test_polls_three_lamps_and_writes(sims: SerialSims) -> None:
    h, line = bus_for(sims)
    async with asyncio.TaskGroup() as tg:
        task = tg.create_task(h.bus.run(), name="serial-bus")
        batches = {d: {r.point: r for r in await h.next_batch(d)} for d in DEVS}
        r = batches["serial-2"]
        assert r["illuminance_level"].value == 0.5 and r["active_power"].value == 31.2
        assert r["voltage"].value == 230.1 and r["voltage"].unit == "V"
        assert (
            r["status"].value == "ok"
            and r["status_bits"].value == ()
            and r["energy"].unit == "kW.h"
        )
        assert (
            r["active_power"].metric == "activePower" and r["active_power"].quality is Quality.GOOD
        )
        assert r["voltage"].source is not None and r["voltage"].source.unit_id == 2
        assert (
            abs(
                r["voltage"].observed_at_ms - (h.bus.stats.devices["serial-2"].last_success_ms or 0)
            )
            < 1000
        )

        res = await h.bus.write("serial-3", "illuminance_level", 0.25)
        assert res.status is WriteStatus.OK and res.readback == 0.25
        assert line.lamps[3].dim == 25
        assert b"#03DIM025*" in bytes(sims.lines["serial"].received)

        sent = len(sims.lines["serial"].received)
        for point, value in (
            ("illuminance_level", 1.5),
            ("illuminance_level", -0.1),
            ("illuminance_level", 0.255),
            ("illuminance_level", "high"),
            ("voltage", 1.0),
            ("missing", 1),
        ):
            res = await h.bus.write("serial-1", point, value)
            assert res.status is WriteStatus.REJECTED, (point, value, res)
        assert (
            await h.bus.write("serial-9", "illuminance_level", 0.1)
        ).status is WriteStatus.REJECTED
        # polls may have gone out meanwhile, but no DIM command
        assert b"DIM" not in bytes(sims.lines["serial"].received[sent:])
        task.cancel()


async def test_device_refusal_is_failed(sims: SerialSims) -> None:
    h, line = bus_for(sims, profile=fast_profile(max=2.0))
    async with asyncio.TaskGroup() as tg:
        task = tg.create_task(h.bus.run(), name="serial-bus")
        res = await h.bus.write("serial-1", "illuminance_level", 1.5)  # raw 150: device ERR2
        assert res.status is WriteStatus.FAILED and "2" in (res.reason or "")
        assert h.bus.stats.devices["serial-1"].exceptions == 1
        task.cancel()
    assert line.lamps[1].dim == 40


async def test_noise_bad_checksum_and_cut_frames_are_survived(sims: SerialSims) -> None:
    h, line = bus_for(sims)
    f = line.faults
    f[1].noise = b"\x00\xff\x13garbage!!\r"
    f[2].bad_checksum = 1
    f[3].truncate = 12
    async with asyncio.TaskGroup() as tg:
        task = tg.create_task(h.bus.run(), name="serial-bus")
        got = {d: await h.next_batch(d) for d in DEVS}
        # unsolicited junk on the line between polls
        os.write(sims.lines["serial"].master, b"\x7f\x00!99,XX*00\rjunk")
        await asyncio.sleep(0.05)
        more = await h.next_batch("serial-1")
        task.cancel()
    for d in DEVS:
        assert all(r.quality is Quality.GOOD for r in got[d]), got[d]
    assert all(r.quality is Quality.GOOD for r in more)
    st = h.bus.stats.devices
    assert st["serial-1"].bad_frames >= 2  # noise on every reply (and the unsolicited junk)
    assert st["serial-2"].bad_frames == 1 and st["serial-2"].timeouts == 0
    assert st["serial-3"].bad_frames == 1 and st["serial-3"].timeouts == 0


async def test_silent_device_is_quarantined_without_stalling_neighbours(sims: SerialSims) -> None:
    h, line = bus_for(sims, interval=0.1, quarantine_max=1.0, driver_opts={"quarantine_min": 0.1})
    st2 = h.bus.stats.devices["serial-2"]
    async with asyncio.TaskGroup() as tg:
        task = tg.create_task(h.bus.run(), name="serial-bus")
        await h.next_batch("serial-2")
        line.faults[2].silent = True
        await until(lambda: st2.state == "offline")
        await asyncio.sleep(0.3)  # a few ticks: the offline device emits nothing on them
        bad = [r for r in h.readings if r.device_id == "serial-2" and r.quality is Quality.BAD]
        assert bad and bad[0].reason == "timeout" and bad[0].value is None
        assert {r.quality for r in h.readings if r.device_id == "serial-2"} == {
            Quality.GOOD,
            Quality.BAD,
        }
        assert st2.reason == "timeout"
        assert not st2.online and st2.quarantined_until > 0 and st2.timeouts >= 2
        await until(lambda: st2.timeouts >= 4)  # backoff now 0.4 s and growing
        n1 = sum(1 for r in h.readings if r.device_id == "serial-1" and r.point == "voltage")
        await asyncio.sleep(0.6)
        n1b = sum(1 for r in h.readings if r.device_id == "serial-1" and r.point == "voltage")
        assert n1b - n1 >= 3  # neighbours keep their schedule: one 0.2 s probe at most
        polls_quarantined = st2.polls
        line.faults[2].silent = False
        await until(lambda: h.bus.stats.devices["serial-2"].online)
        assert st2.polls <= polls_quarantined + 2  # probed once per backoff, not every tick
        task.cancel()


async def test_unplug_and_replug_reopens_the_port(sims: SerialSims) -> None:
    h, _ = bus_for(sims, interval=0.05, stale_readings=True, driver_opts={"reconnect_min": 0.05})
    pty = sims.lines["serial"]
    async with asyncio.TaskGroup() as tg:
        task = tg.create_task(h.bus.run(), name="serial-bus")
        await h.next_batch("serial-1")
        pty.unplug()
        await until(lambda: not h.bus.stats.connected)
        # stale_readings = true: ticks of the offline device carry its last good values
        await until(
            lambda: any(r.reason == "port gone" and r.device_id == "serial-1" for r in h.readings)
        )
        stale = [r for r in h.readings if r.reason == "port gone"]
        assert all(r.quality is Quality.STALE for r in stale)
        assert next(r.value for r in stale if r.device_id == "serial-1") is not None  # last good
        assert h.bus.stats.devices["serial-1"].state == "offline"
        res = await h.bus.write("serial-1", "illuminance_level", 0.5, timeout=2.0)
        # refused at once, as on every bus kind (issue 20: this bus used to say TIMEOUT)
        assert res.status is WriteStatus.REJECTED and res.reason == "bus not connected"
        pty.plug()
        await until(lambda: h.bus.stats.reconnects >= 1 and h.bus.stats.connected, 5.0)
        h.readings.clear()
        await until(
            lambda: any(
                r.device_id == "serial-3" and r.quality is Quality.GOOD for r in h.readings
            ),
            5.0,
        )
        task.cancel()


async def test_serial_server_over_tcp(sims: SerialSims) -> None:
    port = await sims.serve_tcp("serial")
    h = make_bus("serial", f"serial+tcp://127.0.0.1:{port}", [1, 2, 3], profile=fast_profile())
    async with asyncio.TaskGroup() as tg:
        task = tg.create_task(h.bus.run(), name="serial-tcp-bus")
        for d in DEVS:
            assert all(r.quality is Quality.GOOD for r in await h.next_batch(d))
        assert (await h.bus.write("serial-1", "illuminance_level", 0.9)).status is WriteStatus.OK
        task.cancel()


async def test_ticks_fall_on_wall_clock_multiples_of_the_interval(sims: SerialSims) -> None:
    """align_polls (default): after the immediate first poll, ticks are wall-clock aligned."""
    h, _ = bus_for(sims, interval=0.5)
    async with asyncio.TaskGroup() as tg:
        task = tg.create_task(h.bus.run(), name="serial-bus")
        stamps = [(await h.next_batch("serial-1"))[0].observed_at_ms for _ in range(5)]
        task.cancel()
    late = [t % 500 for t in stamps[1:]]
    assert all(x < 80 for x in late), late  # the tick plus the line time, on a busy CI box
