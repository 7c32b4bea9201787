"""DeviceFilters on Readings: chains from profiles and device overrides, for both kernels."""

from __future__ import annotations

from types import ModuleType
from typing import Any

import pytest

import ext._pyfilters as py
from agent.ingest.filtering import DeviceFilters, compile_chain
from drivers.base import DeviceBinding
from drivers.core.config import DeviceConfig
from drivers.core.filters import (
    DeadbandFilter,
    RangeFilter,
    SmoothFilter,
    SpikeFilter,
    SwingingDoorFilter,
    TotalizerFilter,
)
from drivers.core.profile import DataType, Point, Profile
from drivers.core.reading import Quality, Reading
from tests.ext.conftest import compiled

T0 = 1_795_000_000_000


@pytest.fixture(params=["python", "cython"])
def impl(request: pytest.FixtureRequest) -> ModuleType:
    return py if request.param == "python" else compiled()


def binding(filters: dict[str, Any] | None = None) -> DeviceBinding:
    profile = Profile(
        id="lamp",
        kind="streetlight",
        points=(
            Point(
                name="power",
                type=DataType.UINT16,
                filters=(
                    RangeFilter(type="range", min=0, max=500),
                    DeadbandFilter(type="deadband", abs=2.0, heartbeat=60.0),
                ),
            ),
            Point(
                name="energy",
                address=1,
                type=DataType.UINT16,
                scale=0.5,
                filters=(TotalizerFilter(type="totalizer", width=16),),
            ),
            Point(
                name="level",
                address=2,
                type=DataType.FLOAT32,
                filters=(SwingingDoorFilter(type="swd", deviation=1.0),),
            ),
            Point(name="status", address=4, type=DataType.STRING, length=2),
            Point(name="temp", address=6, type=DataType.INT16),
        ),
    )
    dev = DeviceConfig(id="lamp-1", bus="rs485", profile="lamp", filters=filters or {})
    return DeviceBinding(gateway_id="gw1", device=dev, profile=profile)


def rd(
    point: str, value: Any, t_s: float, quality: Quality = Quality.GOOD, reason: str | None = None
) -> Reading:
    return Reading(
        gateway_id="gw1",
        device_id="lamp-1",
        device_kind="streetlight",
        point=point,
        metric=point,
        value=value,
        unit=None,
        unit_code=None,
        observed_at_ms=T0 + int(t_s * 1000),
        quality=quality,
        reason=reason,
    )


def test_range_and_deadband_on_readings(impl: ModuleType) -> None:
    f = DeviceFilters(binding(), impl=impl)
    batch = [
        rd("power", 100, 0),
        rd("status", "ok", 0),
        rd("temp", 21, 0),
        rd("power", 101, 1),
        rd("power", 999, 2),
        rd("power", 104, 3),
    ]
    out = f.apply(batch)
    assert [(r.point, r.value, r.quality, r.reason) for r in out] == [
        ("power", 100, Quality.GOOD, None),
        ("status", "ok", Quality.GOOD, None),
        ("temp", 21, Quality.GOOD, None),
        ("power", 999, Quality.BAD, "out_of_range"),  # quality change: reported, raw kept
        ("power", 104, Quality.GOOD, None),  # quality back
    ]
    assert out[0] is batch[0] and out[1] is batch[1]  # untouched readings are not copied
    assert isinstance(out[4].value, int)  # a value the chain did not change keeps its type
    assert (f.stats.inputs, f.stats.passed, f.stats.suppressed, f.stats.rejected) == (4, 3, 1, 1)
    assert f.stats.suppression_ratio == 0.25


def test_heartbeat_and_timeouts(impl: ModuleType) -> None:
    f = DeviceFilters(binding(), impl=impl)
    assert len(f.apply([rd("power", 100, 0)])) == 1
    assert f.apply([rd("power", 100, 30)]) == []
    timeout = rd("power", None, 40, Quality.BAD, "timeout")
    assert f.apply([timeout]) == [timeout]  # a value-less failure goes through untouched
    assert [r.value for r in f.apply([rd("power", 100, 50)])] == [100]  # quality recovered
    assert f.apply([rd("power", 100.5, 100)]) == []
    assert len(f.apply([rd("power", 100.5, 110)])) == 1  # heartbeat after 60 s


def test_totalizer_uses_the_point_scale(impl: ModuleType) -> None:
    f = DeviceFilters(binding(), impl=impl)
    # uint16 counter at 0.5 units per count wraps at 32768.0 units
    out = f.apply([rd("energy", 32700.0, 0), rd("energy", 10.0, 60), rd("energy", 2.0, 120)])
    assert [r.value for r in out] == [32700.0, 32778.0, 32780.0]
    assert [r.reason for r in out] == [None, None, "counter_reset"]
    assert all(r.quality is Quality.GOOD for r in out)


def test_swinging_door_emits_the_held_reading_late(impl: ModuleType) -> None:
    f = DeviceFilters(binding(), impl=impl)
    first = f.apply([rd("level", float(i), i) for i in range(5)])
    assert [r.value for r in first] == [0.0]
    out = f.apply([rd("level", 0.0, 5), rd("temp", 20, 5)])
    assert [(r.point, r.value) for r in out] == [("level", 4.0), ("temp", 20)]
    assert out[0].observed_at_ms == T0 + 4000  # archived with its own timestamp
    assert f.stats.passed == 2 and f.stats.suppressed == 3  # one still held


def test_device_override_replaces_the_profile_chain(impl: ModuleType) -> None:
    f = DeviceFilters(
        binding({"power": (), "temp": (SmoothFilter(type="smooth", alpha=0.5),)}), impl=impl
    )
    assert f.points == ("energy", "level", "temp")
    out = f.apply([rd("power", 999, 0), rd("temp", 20, 0), rd("temp", 10, 1)])
    assert [r.value for r in out] == [999, 20, 15.0]


def test_unknown_override_and_bad_chain_are_refused() -> None:
    with pytest.raises(ValueError, match="unknown points"):
        DeviceFilters(binding({"nope": ()}), impl=py)
    bad = (SwingingDoorFilter(type="swd", deviation=1.0), SmoothFilter(type="smooth", alpha=0.5))
    # refused when the config is validated, before any filter bank is built
    with pytest.raises(ValueError, match="swd must be the last"):
        DeviceFilters(binding({"temp": bad}), impl=py)


def test_state_survives_a_reload_for_unchanged_chains(impl: ModuleType) -> None:
    old = DeviceFilters(binding(), impl=impl)
    old.apply([rd("power", 100, 0), rd("level", 0.0, 0), rd("level", 1.0, 1)])
    # reload: power unchanged, temp gains a chain
    new = DeviceFilters(binding({"temp": (SmoothFilter(type="smooth", alpha=0.5),)}), impl=impl)
    assert new.carry_state_from(old) == 3  # power, energy, level
    assert new.apply([rd("power", 101, 10)]) == []  # deadband remembered 100
    out = new.apply([rd("level", 10.0, 2)])
    assert [r.value for r in out] == [1.0]  # the held reading came across too
    fresh = DeviceFilters(
        binding({"power": (DeadbandFilter(type="deadband", abs=3.0),)}), impl=impl
    )
    assert fresh.carry_state_from(old) == 2  # power's chain changed: starts afresh
    assert len(fresh.apply([rd("power", 101, 10)])) == 1


def test_compile_chain_maps_specs() -> None:
    p = Point(name="x", scale=0.1)
    chain = compile_chain(
        (
            SpikeFilter(type="spike", window=7, k=2.0, action="replace"),
            TotalizerFilter(type="totalizer", width=16, output="delta"),
        ),
        p,
    )
    assert chain[0] == (2, (7.0, 2.0, 0.0, 1.0))
    assert chain[1] == (6, (65536 * 0.1, 0.1, 1.0))


def test_the_documented_toml_example_validates(impl: ModuleType) -> None:
    import tomllib

    doc = tomllib.loads(
        """
        [[points]]
        name = "active_power"
        type = "uint16"
        filters = [
          { type = "range", min = 0, max = 500 },
          { type = "spike", window = 5, k = 3.0, min_dev = 2.0 },
          { type = "deadband", abs = 3.0, heartbeat = 900 },
        ]
        [[points]]
        name = "energy"
        type = "uint32"
        scale = 0.01
        filters = [{ type = "totalizer", width = 32, output = "total" },
                   { type = "swd", deviation = 0.5 }]
        [[devices]]
        id = "lamp-17"
        bus = "rs485-1"
        profile = "streetlight-x"
        filters = { active_power = [{ type = "deadband", pct = 5, heartbeat = 300 }] }
        """
    )
    profile = Profile(
        id="streetlight-x",
        kind="streetlight",
        points=tuple(Point.model_validate(p) for p in doc["points"]),
    )
    dev = DeviceConfig.model_validate(doc["devices"][0])
    f = DeviceFilters(DeviceBinding(gateway_id="gw1", device=dev, profile=profile), impl=impl)
    assert f.points == ("active_power", "energy")
    out = f.apply([rd("active_power", 100, 0), rd("active_power", 104, 1)])
    assert len(out) == 1  # the device's 5 % deadband replaced the profile chain


def test_check_chain_refuses_swd_before_another_step() -> None:
    from drivers.core.filters import check_chain

    swd = SwingingDoorFilter(type="swd", deviation=1.0)
    check_chain((RangeFilter(type="range"), swd))
    with pytest.raises(ValueError, match="swd must be the last"):
        check_chain((swd, RangeFilter(type="range")))
