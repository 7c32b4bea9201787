"""Physics of the simulated devices, driven by an injected clock (no real time passes)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from drivers.sim.models import CameraModel, StreetlightModel, WaterMeterModel, WriteRejected
from drivers.sim.physics import U32, Totalizer, is_daytime, local_hour

HANOI = timezone(timedelta(hours=7))


def at_local(hour: float, day: int = 15) -> float:
    """UTC epoch seconds of ``hour`` o'clock in Hanoi on 2026-01-<day>."""
    return datetime(2026, 1, day, tzinfo=HANOI).timestamp() + hour * 3600


def vals(model: StreetlightModel | WaterMeterModel | CameraModel) -> dict[str, Any]:
    """The model's register values; each test knows which of them are numbers."""
    return model.values()


class FakeClock:
    def __init__(self, t: float) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t

    def advance(self, seconds: float) -> None:
        self.t += seconds


def test_local_time_is_utc_plus_7() -> None:
    t = datetime(2026, 1, 15, 5, 0, tzinfo=UTC).timestamp()  # 12:00 in Hanoi
    assert local_hour(t) == pytest.approx(12.0)
    assert is_daytime(t)
    assert not is_daytime(at_local(22))
    assert not is_daytime(at_local(5.5)) and is_daytime(at_local(6.5))


def test_totalizer_only_grows_and_wraps() -> None:
    tot = Totalizer(U32 - 2.5)
    tot.add(3.0)
    assert tot.raw == 0
    with pytest.raises(ValueError):
        tot.add(-1)


# --- streetlight ---


def test_lamp_is_off_by_day_and_on_at_night_in_auto_mode() -> None:
    clock = FakeClock(at_local(12))
    lamp = StreetlightModel(1, clock=clock)
    v = vals(lamp)
    assert v["working_mode"] == 0
    assert v["active_power"] == 0 and v["power_state"] == 0 and v["relay_closed"] is False
    assert v["status_flags"] & 0b1_0000  # daytime flag
    clock.t = at_local(22)
    v = vals(lamp)
    assert v["power_state"] == 1 and v["relay_closed"] is True
    assert v["active_power"] == pytest.approx(150, rel=0.04)
    assert v["current"] == pytest.approx(v["active_power"] / (v["voltage"] * v["power_factor"]))
    assert 215 < v["voltage"] < 245 and 49.9 < v["frequency"] < 50.1


def test_power_follows_dim_level() -> None:
    lamp = StreetlightModel(2, clock=FakeClock(at_local(23)))
    lamp.set_dim(40)
    v = vals(lamp)
    assert v["dim_level"] == pytest.approx(0.40)
    assert v["active_power"] == pytest.approx(60, rel=0.04)
    assert v["power_state"] == 2  # "low"
    lamp.set_dim(0)
    assert vals(lamp)["active_power"] == 0


def test_manual_mode_obeys_the_switch_even_by_day() -> None:
    lamp = StreetlightModel(3, clock=FakeClock(at_local(10)))
    lamp.set_manual(True)
    assert vals(lamp)["active_power"] > 100
    lamp.set_manual(False)
    assert vals(lamp)["active_power"] == 0
    with pytest.raises(WriteRejected):
        lamp.write("dim_level", 1.5)
    with pytest.raises(WriteRejected):
        lamp.write("rated_power", 100)


def test_lamp_failure_sets_status_and_bits() -> None:
    lamp = StreetlightModel(1, clock=FakeClock(at_local(21)))
    lamp.fail_lamp()
    v = vals(lamp)
    assert v["active_power"] == 0 and v["status"] == 1 and v["lamp_failure"] is True
    assert v["status_flags"] & 0b10


def test_energy_integrates_power_never_decreases_and_rolls_over() -> None:
    clock = FakeClock(at_local(19))
    lamp = StreetlightModel(1, clock=clock, energy_wh=0.0)
    readings = []
    for _ in range(24 * 6):  # one day in 10-minute steps
        clock.advance(600)
        readings.append(vals(lamp)["energy"])
    assert readings == sorted(readings)
    # lit 12 of the 24 hours at ~150 W -> ~1.8 kWh
    assert readings[-1] == pytest.approx(1.8, rel=0.05)
    clock.t = at_local(22, day=16)
    vals(lamp)
    lamp.preset_energy(U32 - 10)  # Wh, just below the uint32 roll-over
    clock.advance(3600)
    assert vals(lamp)["energy"] * 1000 == pytest.approx(140, abs=3)  # wrapped past 2**32


def test_burning_hours_count_lit_time_only() -> None:
    clock = FakeClock(at_local(20))
    lamp = StreetlightModel(1, clock=clock)
    h0 = vals(lamp)["burning_hours"]
    clock.advance(5 * 3600)
    assert vals(lamp)["burning_hours"] == h0 + 5
    clock.t = at_local(9, day=16)
    h1 = vals(lamp)["burning_hours"]
    clock.advance(5 * 3600)
    assert vals(lamp)["burning_hours"] == h1


# --- water meter ---


def test_flow_follows_the_day() -> None:
    clock = FakeClock(at_local(3))
    meter = WaterMeterModel(11, clock=clock)
    night = vals(meter)["flow_rate"]
    clock.t = at_local(7)
    morning = vals(meter)["flow_rate"]
    clock.t = at_local(19.5)
    evening = vals(meter)["flow_rate"]
    assert night < 0.05 < 0.3 < morning and evening > 0.3


def test_leak_raises_bits_and_adds_night_flow() -> None:
    clock = FakeClock(at_local(3))
    meter = WaterMeterModel(12, clock=clock)
    v = vals(meter)
    assert v["alarm_flags"] == 0 and v["leak"] is False and v["flow_persistence"] == 0
    meter.set_leak(True)
    v = vals(meter)
    assert v["leak"] is True and v["alarm_in_progress"] is True
    assert v["alarm_flags"] & 1 and v["alarm_flags"] & 0x8000
    assert v["flow_rate"] >= WaterMeterModel.LEAK_M3H
    assert v["flow_persistence"] == 3
    start = v["volume"]
    clock.advance(3600)  # 03:00-04:00: the leak alone is 120 L
    assert vals(meter)["volume"] - start >= 120
    meter.set_leak(False)
    assert vals(meter)["flow_persistence"] == 4  # "Past Persistence during the period"


def test_volume_never_decreases_and_rolls_over() -> None:
    clock = FakeClock(at_local(0))
    meter = WaterMeterModel(11, clock=clock)
    vols = []
    for _ in range(2 * 24 * 6):
        clock.advance(600)
        vols.append(vals(meter)["volume"])
    assert vols == sorted(vols) and vols[-1] > vols[0]
    clock.t = at_local(8, day=20)
    vals(meter)
    meter.preset_volume(U32 - 5)
    clock.advance(3600)
    assert 0 < vals(meter)["volume"] < 2000  # litres, wrapped


def test_backflow_counts_reverse_volume() -> None:
    clock = FakeClock(at_local(3))
    meter = WaterMeterModel(11, clock=clock)
    r0 = vals(meter)["reverse_volume"]
    meter.set_backflow(True)
    clock.advance(3600)
    v = vals(meter)
    assert v["reverse_volume"] - r0 == pytest.approx(50, abs=2)  # litres
    assert v["backflow"] is True and v["alarm_flags"] & 0b10


# --- camera / traffic ---


def test_vehicle_counter_grows_faster_at_rush_hour() -> None:
    clock = FakeClock(at_local(2))
    cam = CameraModel(21, clock=clock)
    c0 = vals(cam)["vehicle_count"]
    clock.advance(3600)
    night = vals(cam)["vehicle_count"] - c0
    clock.t = at_local(17)
    c1 = vals(cam)["vehicle_count"]
    clock.advance(3600)
    rush = vals(cam)["vehicle_count"] - c1
    assert 0 < night < 300 < 1000 < rush
    v = vals(cam)
    assert v["intensity"] > 1000 and v["average_speed"] < 45 and v["occupancy"] > 0.1


def test_counter_rolls_over() -> None:
    clock = FakeClock(at_local(8))
    cam = CameraModel(21, clock=clock)
    cam.preset_count(U32 - 3)
    clock.advance(600)
    assert vals(cam)["vehicle_count"] < 1000


def test_preset_moves_the_head() -> None:
    clock = FakeClock(at_local(12))
    cam = CameraModel(21, clock=clock)
    cam.goto_preset(2)  # pan 90, tilt -15, zoom 4
    v = vals(cam)
    assert v["preset"] == 2 and v["pan_setpoint"] == 90 and v["ptz_status"] == 1
    clock.advance(1)  # pan slews at 60 deg/s
    v = vals(cam)
    assert v["pan"] == pytest.approx(60) and v["ptz_status"] == 1
    clock.advance(10)
    v = vals(cam)
    assert (v["pan"], v["tilt"], v["zoom"], v["ptz_status"]) == (90, -15, 4, 0)
    cam.write("pan_setpoint", 350.0)  # shortest way round: 90 -> 350 goes down through 0
    clock.advance(1)
    assert vals(cam)["pan"] == pytest.approx(30)
    assert vals(cam)["preset"] == 0
    with pytest.raises(WriteRejected):
        cam.goto_preset(9)
    with pytest.raises(WriteRejected):
        cam.write("tilt_setpoint", 45.0)
