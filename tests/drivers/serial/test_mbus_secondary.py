"""M-Bus secondary addressing (EN 13757-3 selection, CI 0x52 at 0xFD): frames, meters sharing a
primary address on a pty line, a wrong or ambiguous address, and the config checks."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Sequence
from pathlib import Path

import pytest

from agent.config import ConfigError, load_config
from drivers.base import DeviceBinding
from drivers.core.config import BusConfig, DeviceConfig
from drivers.core.reading import Quality, Reading
from drivers.serial import mbus
from drivers.serial.bus import SerialBus
from drivers.serial.handlers import MBusHandler
from drivers.sim.serial_devices import MBusLine
from drivers.sim.serial_sims import SerialSims
from tests.drivers.serial.serial_harness import PROFILE_OF, Harness, load_profile
from tests.drivers.serial.test_serial_mbus import ENGELMANN_WATERSTAR

H = bytes.fromhex
SELECT_01 = mbus.SecondaryAddress.parse("12345601").select()
SELECT_02 = mbus.SecondaryAddress.parse("12345602.CTY.01.07").select()
NKE_FD = H("10 40 FD 3D 16")


def test_parse_and_selection_frames() -> None:
    sa = mbus.SecondaryAddress.parse
    # the published selection of ID 12345678 with everything else wildcarded
    assert sa("12345678").select() == H("68 0B 0B 68 53 FD 52 78 56 34 12 FF FF FF FF B2 16")
    assert sa("12345678").select() == mbus.select_secondary(12345678)
    full = sa("12345678.els.*.07")
    assert (full.manufacturer, full.version, full.medium) == ("ELS", None, 0x07)
    assert str(full) == "12345678.ELS.*.07" and str(sa("1234567f.*.FF.*")) == "1234567F"
    # F nibbles go on the wire as the wildcard nibble, still LSB byte first
    assert sa("1234567F.ELS.0A.07").select()[7:15] == H("7F 56 34 12") + H("93 15 0A 07")
    for bad in ("1234567", "123456789", "1234567A", "12345678.EL.*.07", "12345678.ELS.*", ""):
        with pytest.raises(ValueError, match="not an M-Bus secondary address"):
            sa(bad)


def test_reply_identification_is_verified() -> None:
    # Engelmann WaterStar (libmbus test frame): ID 04990254, EFE, version 0, medium 6
    prof = load_profile(PROFILE_OF["mbus"])
    frame = ENGELMANN_WATERSTAR
    for good in ("04990254", "0499025F.EFE.00.06", "FFFFFFFF.*.*.06"):
        h = MBusHandler(prof, 0, mbus.SecondaryAddress.parse(good))
        assert h.addr == mbus.ADDR_SECONDARY
        tel = h._telegram(frame)
        assert tel is not None and tel.header["id"] == 4990254
    for other in ("04990255", "04990254.ACW.*.*", "04990254.*.01.*", "04990254.*.*.07"):
        with pytest.raises(ValueError, match="another secondary address"):
            MBusHandler(prof, 0, mbus.SecondaryAddress.parse(other))._telegram(frame)


def make_line_bus(
    path: str, devices: Sequence[tuple[str, int, str | None]], **bus_opts: object
) -> Harness:
    """A SerialBus over the M-Bus simulator: devices are (id, unit_id, address)."""
    prof = load_profile(PROFILE_OF["mbus"])
    bus_cfg = BusConfig.model_validate(
        {
            "id": "mbus-bus",
            "endpoint": f"serial://{path}?baudrate=38400",
            "protocol": "mbus",
            **bus_opts,
        }
    )
    bindings = [
        DeviceBinding(
            "gw1",
            DeviceConfig(
                id=dev, bus=bus_cfg.id, profile=prof.id, unit_id=unit, address=addr, interval=0.2
            ),
            prof,
        )
        for dev, unit, addr in devices
    ]
    holder: list[Harness] = []

    async def emit(b: DeviceBinding, rs: Sequence[Reading]) -> None:
        holder[0].readings.extend(rs)
        holder[0].batches.put_nowait((b.id, list(rs)))

    h = Harness(SerialBus(bus_cfg, bindings, emit, rng=random.Random(4)))
    holder.append(h)
    return h


def share_primary_zero(sims: SerialSims) -> MBusLine:
    line = sims.responder("mbus")
    assert isinstance(line, MBusLine)
    line.meters[1].primary = line.meters[2].primary = 0  # factory default, twice
    return line


async def test_two_meters_behind_primary_zero(sims: SerialSims) -> None:
    share_primary_zero(sims)
    h = make_line_bus(
        sims.paths["mbus"],
        [("m-a", 0, "12345601"), ("m-b", 0, "12345602.CTY.01.07"), ("m-5", 5, None)],
        timeout=0.3,
    )
    async with asyncio.TaskGroup() as tg:
        task = tg.create_task(h.bus.run(), name="mbus-bus")
        first = {d: {r.point: r for r in await h.next_batch(d)} for d in ("m-a", "m-b", "m-5")}
        second = {d: {r.point: r for r in await h.next_batch(d)} for d in ("m-a", "m-b")}
        task.cancel()
    for dev, ident in (("m-a", 12345601), ("m-b", 12345602), ("m-5", 12345605)):
        r = first[dev]
        assert all(x.quality is Quality.GOOD for x in r.values()), r
        assert r["fabrication_no"].value == ident
        assert r["flow"].value == 0.35
    assert first["m-a"]["volume"].value == 123456 + 1000 + 7  # litres (profile)
    # meter 2 answers in two telegrams (DIF 1F), both fetched at 0xFD while it stays selected
    assert first["m-b"]["volume"].value == 123456 + 2000 + 7  # litres (profile)
    assert second["m-a"]["volume"].value == 123456 + 1000 + 14  # litres (profile)
    assert second["m-b"]["volume"].value == 123456 + 2000 + 21  # litres (profile)
    for dev in ("m-a", "m-b", "m-5"):
        st = h.bus.stats.devices[dev]
        assert (st.timeouts, st.bad_frames) == (0, 0), (dev, st)
    sent = bytes(sims.lines["mbus"].received)
    # nothing is ever sent to the shared primary address 0
    assert H("10 40 00 40 16") not in sent and H("10 7B 00 7B 16") not in sent
    # session start: select, SND_NKE to 0xFD (resets the FCB, deselects), select, REQ_UD2
    assert SELECT_01 + NKE_FD + SELECT_01 + H("10 7B FD 78 16") in sent
    assert SELECT_02 + NKE_FD + SELECT_02 + H("10 7B FD 78 16 10 5B FD 58 16") in sent
    # later polls: select again (the other meter's selection deselected it), FCB toggled
    assert SELECT_01 + H("10 5B FD 58 16") in sent
    assert sent.count(NKE_FD) == 2


async def test_wrong_or_ambiguous_address_spares_neighbours(sims: SerialSims) -> None:
    share_primary_zero(sims)
    h = make_line_bus(
        sims.paths["mbus"],
        [
            ("m-a", 0, "12345601"),
            ("ghost", 0, "99999999"),  # nobody answers the selection
            ("both", 0, "1234560F"),  # selects meters 1, 2 and 5: their replies collide
            ("m-5", 5, None),
        ],
        timeout=0.15,
        retries=1,
    )
    got: dict[str, list[list[Reading]]] = {d: [] for d in ("m-a", "ghost", "both", "m-5")}
    st = h.bus.stats.devices
    async with asyncio.TaskGroup() as tg:
        task = tg.create_task(h.bus.run(), name="mbus-bus")
        async with asyncio.timeout(4):
            while (
                min(len(got["m-a"]), len(got["m-5"])) < 3
                or st["both"].state != "offline"
                or st["ghost"].state != "offline"
            ):
                dev, batch = await h.batches.get()
                got[dev].append(batch)
        task.cancel()
    # the ghost: one silent poll with its retry, then offline and probed with backoff; it
    # emits nothing more (issue 15: a down device costs the uplink its transition only)
    assert [b[0].reason for b in got["ghost"]] == ["timeout"]
    assert st["ghost"].timeouts >= 2 and not st["ghost"].online
    assert (st["ghost"].state, st["ghost"].reason) == ("offline", "timeout")
    assert st["ghost"].quarantined_until > 0
    # the ambiguous mask: both meters ack and answer at once, a garbled frame every time: a
    # poll of bad frames (its retry garbled too) takes it offline, and it is probed like a
    # silent one (issue 15: a device that keeps answering garbage must not slow neighbours)
    assert [b[0].reason for b in got["both"]] == ["bad frame"]
    assert (st["both"].state, st["both"].reason) == ("offline", "bad frames")
    assert st["both"].bad_frames >= 2 and st["both"].quarantined_until > 0
    for dev, ident in (("m-a", 12345601), ("m-5", 12345605)):
        assert st[dev].timeouts == 0 and st[dev].bad_frames == 0, (dev, st[dev])
        for batch in got[dev]:
            r = {x.point: x for x in batch}
            assert all(x.quality is Quality.GOOD for x in batch), (dev, batch)
            assert r["fabrication_no"].value == ident


GATEWAY = """\
[gateway]
id = "gw-test"
state_dir = "state"

[[buses]]
id = "tcp1"
endpoint = "tcp://127.0.0.1:5020"

[[buses]]
id = "mbus1"
endpoint = "serial:///dev/ttyUSB2?baudrate=2400&parity=E"
protocol = "mbus"

[[devices]]
id = "meter-a"
bus = "mbus1"
profile = "cityedge/mbus_water_meter"
unit_id = 0
address = "12345601"

[[devices]]
id = "meter-b"
bus = "mbus1"
profile = "cityedge/mbus_water_meter"
unit_id = 0
address = "12345602.CTY.*.07"

[[devices]]
id = "meter-c"
bus = "mbus1"
profile = "cityedge/mbus_water_meter"
unit_id = 253
address = "FFFFFF03"

[[devices]]
id = "meter-p"
bus = "mbus1"
profile = "cityedge/mbus_water_meter"
unit_id = 0

[[devices]]
id = "meter-tcp"
bus = "tcp1"
profile = "cityedge/water_meter"
unit_id = 1

[[outputs]]
type = "jsonl"
id = "out"
path = "-"
"""


def test_config_accepts_secondary_addresses(tmp_path: Path) -> None:
    (tmp_path / "gateway.toml").write_text(GATEWAY)
    cfg = load_config(tmp_path / "gateway.toml").config
    assert [d.address for d in cfg.devices] == [
        "12345601",
        "12345602.CTY.*.07",
        "FFFFFF03",
        None,
        None,
    ]


@pytest.mark.parametrize(
    ("old", "new", "path", "msg"),
    [
        ('address = "12345601"', 'address = "1234501"', "devices[meter-a].address", "not an M-Bus"),
        ('"12345602.CTY.*.07"', '"12345602-CTY"', "devices[meter-b].address", "e.g. '12345678'"),
        (
            "unit_id = 1\n",
            'unit_id = 1\naddress = "12345678"\n',
            "devices[meter-tcp].address",
            "address is only used by M-Bus devices",
        ),
        ('"FFFFFF03"', '"12345601"', "devices[meter-c].address", "already used on bus 'mbus1'"),
        (
            'unit_id = 253\naddress = "FFFFFF03"\n',
            "unit_id = 253\n",
            "devices[meter-c].unit_id",
            "0..250",
        ),
    ],
    ids=["short-id", "bad-syntax", "not-mbus", "duplicate", "253-needs-address"],
)
def test_config_rejects_bad_addresses(
    tmp_path: Path, old: str, new: str, path: str, msg: str
) -> None:
    assert old in GATEWAY
    (tmp_path / "gateway.toml").write_text(GATEWAY.replace(old, new, 1))
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path / "gateway.toml")
    issues = info.value.issues
    text = "\n".join(str(i) for i in issues)
    match = [i for i in issues if i.path == path and msg in i.message]
    assert match, f"no issue at {path!r} with {msg!r} in:\n{text}"
    assert match[0].file.endswith("gateway.toml") and match[0].line, text
    assert len(issues) == 1, text
