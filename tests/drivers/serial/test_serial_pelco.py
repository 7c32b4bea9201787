"""Pelco-D: frames against the protocol manual's examples, and three heads on one pty line."""

from __future__ import annotations

import asyncio

from drivers.base import WriteStatus
from drivers.serial import pelco_d
from drivers.sim.serial_devices import PelcoLine
from drivers.sim.serial_sims import SerialSims
from tests.drivers.serial.serial_harness import make_bus

H = bytes.fromhex


def test_frames_match_published_examples() -> None:
    # Pelco D protocol manual examples: pan left at speed 0x3F, go to preset 1.
    assert pelco_d.command(1, 0x00, 0x04, 0x3F, 0x00) == H("FF 01 00 04 3F 00 44")
    assert pelco_d.preset(1, "goto_preset", 1) == H("FF 01 00 07 00 01 09")
    assert pelco_d.preset(1, "set_preset", 1) == H("FF 01 00 03 00 01 05")
    assert pelco_d.query(1, "pan") == H("FF 01 00 51 00 00 52")
    assert pelco_d.query(2, "tilt") == H("FF 02 00 53 00 00 55")
    assert pelco_d.query(255, "zoom") == H("FF FF 00 55 00 00 54")  # checksum wraps mod 256
    assert pelco_d.general_response(1) == H("FF 01 00 01")


def test_replies_and_resync() -> None:
    reply = pelco_d.extended_response(1, pelco_d.PAN_REPLY, 9000)  # 90.00 degrees
    assert reply == H("FF 01 00 59 23 28 A5")
    d = pelco_d.PelcoDeframer(1, pelco_d.PAN_REPLY)
    # noise, a reply for address 2, a reply with a wrong checksum, then ours in two pieces
    noise = b"\x13\xff\xff" + pelco_d.extended_response(2, pelco_d.PAN_REPLY, 1)
    wrong = reply[:-1] + b"\x00"
    assert d.feed(noise + wrong + reply[:3]) is None
    assert d.feed(reply[3:]) == reply
    assert d.bad >= 2
    assert pelco_d.reply_value(reply) == 9000
    assert pelco_d.to_degrees("tilt", 35000) == -10.0
    assert pelco_d.to_degrees("tilt", 4500) == 45.0
    assert pelco_d.to_degrees("pan", 35999) == 359.99


async def test_three_heads_poll_and_presets(sims: SerialSims) -> None:
    h = make_bus("pelco_d", f"serial://{sims.paths['pelco_d']}", [1, 2, 3], timeout=0.3)
    line = sims.responder("pelco_d")
    assert isinstance(line, PelcoLine)
    async with asyncio.TaskGroup() as tg:
        task = tg.create_task(h.bus.run(), name="pelco-bus")
        await h.bus.ready()
        got = {}
        for dev in ("pelco_d-1", "pelco_d-2", "pelco_d-3"):
            got[dev] = {r.point: r for r in await h.next_batch(dev)}
        assert got["pelco_d-1"]["pan"].value == 45.0
        assert got["pelco_d-2"]["pan"].value == 55.0
        assert got["pelco_d-3"]["tilt"].value == -12.0  # raw 34800 -> -12.00 deg
        assert got["pelco_d-3"]["zoom"].value == 1024
        r = got["pelco_d-2"]["pan"]
        assert r.unit == "deg" and r.source is not None and r.source.unit_id == 2
        assert r.source.protocol == "pelco-d" and r.quality.value == "good"

        # set preset 5 on head 2, move it by hand, go back to the preset
        assert (await h.bus.write("pelco_d-2", "set_preset", 5)).status is WriteStatus.OK
        line.heads[2].pan = 100
        res = await h.bus.write("pelco_d-2", "goto_preset", 5)
        assert res.status is WriteStatus.OK
        assert line.heads[2].pan == 5500
        sent = [c for c in line.commands if c[1] == 2 and c[3] in (0x03, 0x07)]
        assert sent == [H("FF 02 00 03 00 05 0A"), H("FF 02 00 07 00 05 0E")]

        # refused before touching the line
        before = len(line.commands)
        for point, value in (
            ("goto_preset", 0),
            ("goto_preset", 256),
            ("pan", 10.0),
            ("nope", 1),
            ("goto_preset", "x"),
            ("goto_preset", 1.5),
        ):
            res = await h.bus.write("pelco_d-1", point, value)
            assert res.status is WriteStatus.REJECTED, (point, value, res)
        assert (await h.bus.write("pelco_d-9", "goto_preset", 1)).status is WriteStatus.REJECTED
        assert len(line.commands) == before
        task.cancel()
    assert h.bus.stats.devices["pelco_d-1"].bad_frames == 0


async def test_head_faults_are_counted_and_survived(sims: SerialSims) -> None:
    line = sims.responder("pelco_d")
    assert isinstance(line, PelcoLine)
    line.faults[1].bad_checksum = 1
    line.faults[2].truncate = 4
    line.faults[3].noise = b"\xff\x03\x00\x59"  # a false sync + address before each reply
    h = make_bus("pelco_d", f"serial://{sims.paths['pelco_d']}", [1, 2, 3], timeout=0.1)
    async with asyncio.TaskGroup() as tg:
        task = tg.create_task(h.bus.run(), name="pelco-bus")
        got = {dev: await h.next_batch(dev) for dev in ("pelco_d-1", "pelco_d-2", "pelco_d-3")}
        task.cancel()
    for dev, batch in got.items():
        assert all(r.quality.value == "good" for r in batch), (dev, batch)
    st = h.bus.stats.devices
    assert st["pelco_d-1"].bad_frames == 1 and st["pelco_d-2"].bad_frames == 1
    assert st["pelco_d-3"].bad_frames >= 3  # one per query
