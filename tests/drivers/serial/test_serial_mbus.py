"""M-Bus: link frames, RSP_UD decoding against published telegrams, meters on a pty line."""

from __future__ import annotations

import asyncio

import pytest

from drivers.base import WriteStatus
from drivers.serial import mbus
from drivers.serial.mbus_records import RecordError, decode_records, decode_rsp_ud
from drivers.sim.serial_devices import MBusLine
from drivers.sim.serial_sims import SerialSims
from tests.drivers.serial.serial_harness import make_bus

H = bytes.fromhex

# Real meter telegrams from the libmbus test suite (github.com/rscada/libmbus,
# test/test-frames/EFE_Engelmann-WaterStar.hex and ACW_Itron-CYBLE-M-Bus-14.hex); the expected
# values are those of the matching *.norm.xml files there.
ENGELMANN_WATERSTAR = H(
    "68 51 51 68 08 0B 72 54 02 99 04 C5 14 00 06 0C 27 00 00 04 78 2E 25 4C 00 04 6D 0A 0C CD"
    " 13 04 13 4C 01 00 00 44 13 4B 01 00 00 84 01 13 4C 01 00 00 42 6C BF 1C 02 6C DF 1C 04 3B"
    " 00 00 00 00 14 3B 16 08 00 00 02 23 A7 04 01 FD 17 00 04 90 28 08 00 00 00 3F 16"
)
ITRON_CYBLE = H(
    "68 56 56 68 08 01 72 23 15 01 09 77 04 14 07 25 00 00 00 0C 78 23 15 01 09 0D 7C 08 44 49"
    " 20 2E 74 73 75 63 0A 35 35 37 36 37 30 41 4C 39 30 04 6D 1A 0E CD 13 02 7C 09 65 6D 69 74"
    " 20 2E 74 61 62 D4 09 04 13 1F 00 00 00 04 93 7F 00 00 00 00 44 13 1F 00 00 00 0F 00 01 1F"
    " A9 16"
)


def decode(raw: bytes) -> dict[str, object]:
    d = mbus.MBusDeframer()
    frame = d.feed(raw)
    assert frame is not None and d.bad == 0
    f = mbus.parse_frame(frame)
    return dict(decode_rsp_ud(f.a, f.ci, f.data).fields())


def test_link_frames() -> None:
    assert mbus.snd_nke(1) == H("10 40 01 41 16")
    assert mbus.req_ud2(1, fcb=False) == H("10 5B 01 5C 16")
    assert mbus.req_ud2(1, fcb=True) == H("10 7B 01 7C 16")
    assert mbus.req_ud2(0xFE, fcb=False) == H("10 5B FE 59 16")
    # secondary selection of ID 12345678, other parts wildcarded (EN 13757-3, CI 0x52)
    assert mbus.select_secondary(12345678) == H(
        "68 0B 0B 68 53 FD 52 78 56 34 12 FF FF FF FF B2 16"
    )
    assert mbus.manufacturer_text(0x14C5) == "EFE" and mbus.manufacturer_code("ACW") == 0x0477


def test_engelmann_waterstar() -> None:
    f = decode(ENGELMANN_WATERSTAR)
    assert f["id"] == 4990254 and f["manufacturer"] == "EFE" and f["medium"] == 6
    assert f["access_no"] == 12 and f["status"] == 0x27
    assert f["fabrication_no"] == 4990254
    assert f["datetime"] == "2014-03-13T12:10"
    assert f["volume"] == 0.332 and f["volume.s1"] == 0.331 and f["volume.s2"] == 0.332
    assert f["date.s1"] == "2013-12-31" and f["date"] == "2014-12-31"
    assert f["flow"] == 0.0 and f["flow.max"] == 2.07
    assert f["on_time"] == 102902400
    assert f["error_flags"] == 0
    assert f["r11"] == pytest.approx(0.000008)


def test_itron_cyble() -> None:
    f = decode(ITRON_CYBLE)
    assert f["id"] == 9011523 and f["manufacturer"] == "ACW" and f["version"] == 20
    assert f["medium"] == 7 and f["access_no"] == 37 and f["status"] == 0
    assert f["fabrication_no"] == 9011523
    assert f["text:cust. ID"] == "09LA076755"
    assert f["datetime"] == "2014-03-13T14:26"
    assert f["text:bat. time"] == 2516
    assert f["volume"] == 0.031 and f["volume.s1"] == 0.031


def test_encodings_and_errors() -> None:
    # BCD negative (F in the top nibble), invalid BCD, 24-bit signed, float, date-time invalid
    recs, more = decode_records(
        H("0A 13 34 F2  0A 13 EE EE  03 13 FF FF FF  05 3B 00 00 20 41  04 6D 80 0C CD 13  1F")
    )
    assert [r.value for r in recs] == [-0.234, None, -0.001, 0.01, None] and more
    with pytest.raises(RecordError):
        decode_records(H("04 13 01 02"))  # truncated data
    with pytest.raises(RecordError):
        decode_records(H("84 84 84 84 84 84 84 84 84 84 84 84 13"))  # endless DIFEs
    with pytest.raises(RecordError):
        decode_rsp_ud(1, 0x72, H("01 02 03"))


def test_deframer_resync() -> None:
    good = ENGELMANN_WATERSTAR
    bad = good[:-2] + bytes(((good[-2] + 1) & 0xFF,)) + b"\x16"
    d = mbus.MBusDeframer()
    assert d.feed(b"\x00\x68\x05\x06\x68" + bad + b"\x10\x40\x01\x00\x16" + good[:40]) is None
    assert d.feed(good[40:]) == good
    assert d.bad >= 3


async def test_three_meters_on_one_line(sims: SerialSims) -> None:
    line = sims.responder("mbus")
    assert isinstance(line, MBusLine)
    h = make_bus("mbus", f"serial://{sims.paths['mbus']}?baudrate=9600", [1, 2, 5], timeout=0.3)
    async with asyncio.TaskGroup() as tg:
        task = tg.create_task(h.bus.run(), name="mbus-bus")
        first = {
            dev: {r.point: r for r in await h.next_batch(dev)}
            for dev in ("mbus-1", "mbus-2", "mbus-5")
        }
        second = {r.point: r for r in await h.next_batch("mbus-2")}
        task.cancel()
    for addr in (1, 2, 5):
        r = first[f"mbus-{addr}"]
        assert r["fabrication_no"].value == 12345600 + addr
        assert r["flow"].value == 0.35 and r["flow"].unit == "m3/h"
        assert r["status"].value == () and r["error_flags"].value == 0
        assert isinstance(r["meter_time"].value, str) and len(r["meter_time"].value) == 16
        assert r["volume"].unit == "L" and r["volume"].source.unit_id == addr  # type: ignore[union-attr]
    # meter 2 answers in two telegrams (DIF 1F): every poll merges both and the FCB toggles
    assert first["mbus-2"]["volume"].value == 123456 + 2000 + 7  # litres (profile)
    assert second["volume"].value == 123456 + 2000 + 21  # litres (profile)
    assert h.bus.stats.devices["mbus-2"].bad_frames == 0
    sent = bytes(sims.lines["mbus"].received)
    assert sent.startswith(H("10 40 01 41 16 10 7B 01 7C 16"))
    # SND_NKE once, then REQ_UD2 FCB=1, FCB=0 (second telegram), FCB=1 again on the next poll
    assert H("10 40 02 42 16 10 7B 02 7D 16 10 5B 02 5D 16") in sent
    assert sent.count(H("10 7B 02 7D 16 10 5B 02 5D 16")) == 2
    assert sent.count(H("10 40 02 42 16")) == 1
    assert (await h.bus.write("mbus-1", "volume", 1.0)).status is WriteStatus.REJECTED


async def test_meter_faults_are_counted_and_survived(sims: SerialSims) -> None:
    line = sims.responder("mbus")
    assert isinstance(line, MBusLine)
    line.faults[1].bad_checksum = 1  # its "corrupted" E5 ack is no ack at all: lost once
    line.faults[2].truncate = 30  # meter 2 stops mid-telegram once
    line.faults[5].noise = b"\x68\x04\x04\x68\x00\xe6"  # a false long-frame start before each
    h = make_bus("mbus", f"serial://{sims.paths['mbus']}", [1, 2, 5], timeout=0.2, retries=2)
    async with asyncio.TaskGroup() as tg:
        task = tg.create_task(h.bus.run(), name="mbus-bus")
        got = {dev: await h.next_batch(dev) for dev in ("mbus-1", "mbus-2", "mbus-5")}
        task.cancel()
    for dev, batch in got.items():
        assert all(r.quality.value == "good" for r in batch), (dev, batch)
    st = h.bus.stats.devices
    assert st["mbus-1"].timeouts == 1 and st["mbus-1"].bad_frames == 0
    assert st["mbus-2"].bad_frames >= 1  # the fragment (bytes inside it may look like E5)
    assert st["mbus-5"].bad_frames >= 1
