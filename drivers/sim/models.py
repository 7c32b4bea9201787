"""Device physics of the simulated field devices (pure classes, injectable clock).

Each model keeps its state in engineering units, integrates totalizers over simulated time when
``update()`` is called, and exposes ``values()``: point name -> engineering value, keyed by the
point names of its shipped profile (enum points give their integer code, bitfields their raw
word). ``write(point, value)`` applies a Modbus write in engineering units and raises
``WriteRejected`` for values the device would refuse. The server turns values into registers
with the profile, so the profile *is* the register map and cannot drift from the simulator.
"""

from __future__ import annotations

import math
from typing import ClassVar

from drivers.sim.physics import (
    U32,
    Clock,
    Stepper,
    Totalizer,
    ambient_lux,
    is_daytime,
    local_hour,
    now_clock,
    traffic_rate,
    water_demand,
)

SimValue = float | int | bool | str


class WriteRejected(ValueError):
    def __init__(self, point: str, reason: str) -> None:
        self.point = point
        self.reason = reason
        super().__init__(f"write to '{point}' rejected: {reason}")


class _Model:
    kind: ClassVar[str] = ""
    profile_ref: ClassVar[str] = ""

    def __init__(self, unit_id: int, clock: Clock | None) -> None:
        self.unit_id = unit_id
        self.clock = clock or now_clock
        self.step = Stepper(self.clock, seed=unit_id * 7919 + len(self.kind))
        self._now: dict[str, SimValue] = {}
        # values the unit states whatever its physics (the identification of the profile it
        # serves: drivers/core/identify.py), set by the server
        self.overrides: dict[str, SimValue] = {}

    def update(self) -> None:
        t = self.step.last
        for t, dt in self.step.steps():
            self._integrate(t, dt)
        if not self._now or t != self._instant_t:
            self._instant(t)

    def values(self) -> dict[str, SimValue]:
        self.update()
        return {**self._now, **self.overrides}

    def write(self, point: str, value: float) -> None:
        raise WriteRejected(point, "not writable")

    _instant_t = math.nan

    def _instant(self, t: float) -> None:
        self._instant_t = t

    def _integrate(self, t: float, dt: float) -> None:
        raise NotImplementedError


class StreetlightModel(_Model):
    """Single LED lamp: astronomical auto mode (off by day), dimming, energy metering."""

    kind = "streetlight"
    profile_ref = "cityedge/streetlight"

    def __init__(
        self,
        unit_id: int,
        clock: Clock | None = None,
        rated_power: float = 150.0,
        energy_wh: float | None = None,
    ) -> None:
        self.rated_power = rated_power
        self.dim_pct = 100
        self.switch = 0
        self.mode = 0  # 0 automatic, 1 manual
        self.failed = False
        start_wh = 1_000_000.0 + unit_id * 12_345.0 if energy_wh is None else energy_wh
        self.energy = Totalizer(start_wh)
        self.burning_s = 3600.0 * (1200 + 37 * unit_id)
        super().__init__(unit_id, clock)
        self.update()

    def lamp_on(self, t: float) -> bool:
        if self.failed or self.dim_pct == 0:
            return False
        return not is_daytime(t) if self.mode == 0 else self.switch == 1

    def relay_closed(self, t: float) -> bool:
        return (not is_daytime(t)) if self.mode == 0 else self.switch == 1

    def _power(self, t: float) -> float:
        if not self.lamp_on(t):
            return 0.0
        return self.rated_power * self.dim_pct / 100.0 * self.step.noise(0.01)

    def _integrate(self, t: float, dt: float) -> None:
        p = self._power(t)
        self.energy.add(p * dt / 3600.0)
        if p > 0:
            self.burning_s += dt

    def _instant(self, t: float) -> None:
        super()._instant(t)
        h = local_hour(t)
        volts = (231.0 - 5.0 * math.exp(-0.5 * ((h - 19.5) / 2.0) ** 2)) * self.step.noise(0.003)
        on = self.lamp_on(t)
        p = self._power(t)
        pf = (0.97 - 0.12 * (1 - self.dim_pct / 100.0)) if on else 1.0
        flags = (
            (on << 0)
            | (self.failed << 1)
            | ((volts > 253) << 2)
            | ((volts < 207) << 3)
            | (is_daytime(t) << 4)
            | ((self.mode == 1) << 5)
        )
        self._now = {
            "dim_level": self.dim_pct / 100.0,
            "lamp_switch": self.switch,
            "working_mode": self.mode,
            "rated_power": self.rated_power,
            "power_state": (2 if self.dim_pct < 50 else 1) if on else 0,
            "status_flags": flags,
            "lamp_failure": self.failed,
            "status": 1 if self.failed else 0,
            "voltage": volts,
            "current": p / (volts * pf) if on else 0.0,
            "active_power": p,
            "power_factor": pf,
            "frequency": 50.0 + 0.02 * self.step.rng.gauss(0.0, 1.0),
            "energy": self.energy.raw / 1000.0,
            "burning_hours": int(self.burning_s // 3600) % U32,
            "firmware": "2.4.1",
            "relay_closed": self.relay_closed(t),
            "ambient_light": round(ambient_lux(t) * self.step.noise(0.05)),
        }

    # --- commands (engineering units, as the profile decodes them) ---
    def write(self, point: str, value: float) -> None:
        self.update()
        if point == "dim_level":
            if not 0.0 <= value <= 1.0:
                raise WriteRejected(point, "level must be 0..1")
            self.dim_pct = round(value * 100)
        elif point in ("lamp_switch", "working_mode"):
            if value not in (0, 1):
                raise WriteRejected(point, "must be 0 or 1")
            setattr(self, "switch" if point == "lamp_switch" else "mode", int(value))
        else:
            raise WriteRejected(point, "not writable")
        self._instant(self.step.last)

    def set_dim(self, percent: int) -> None:
        self.write("dim_level", percent / 100.0)

    def set_manual(self, on: bool) -> None:
        self.write("working_mode", 1)
        self.write("lamp_switch", int(on))

    def fail_lamp(self, failed: bool = True) -> None:
        self.update()
        self.failed = failed
        self._instant(self.step.last)

    def preset_energy(self, wh: float) -> None:
        """Set the Wh totalizer (e.g. just below 2**32 to test roll-over)."""
        self.update()
        self.energy.preset(wh)
        self._instant(self.step.last)


class WaterMeterModel(_Model):
    """DN20 meter: diurnal demand, leak (steady extra flow), backflow, battery."""

    kind = "water_meter"
    profile_ref = "cityedge/water_meter"
    LEAK_M3H = 0.12
    BACKFLOW_M3H = 0.05

    def __init__(self, unit_id: int, clock: Clock | None = None, size: float = 1.0) -> None:
        self.size = size
        self.volume = Totalizer(500_000.0 + unit_id * 3_217.0)  # litres
        self.reverse = Totalizer(12.0 * unit_id)
        self.leak = False
        self.leak_seen = False
        self.backflow = False
        self.tamper = False
        self.battery = 97.0
        self.serial = f"UWM-2026-{unit_id:06d}"
        super().__init__(unit_id, clock)
        self.update()

    def _flow(self, t: float) -> float:
        base = 0.6 * self.size * water_demand(local_hour(t)) * self.step.noise(0.08)
        return max(0.0, base) + (self.LEAK_M3H if self.leak else 0.0)

    def _integrate(self, t: float, dt: float) -> None:
        self.volume.add(self._flow(t) * dt / 3.6)  # m3/h -> L/s is /3.6
        if self.backflow:
            self.reverse.add(self.BACKFLOW_M3H * dt / 3.6)
        self.battery = max(0.0, self.battery - dt / (30 * 86400.0))  # ~1 % a month

    def _instant(self, t: float) -> None:
        super()._instant(t)
        h = local_hour(t)
        low_batt = self.battery < 20
        any_alarm = self.leak or self.backflow or self.tamper or low_batt
        word = (
            (self.leak << 0)
            | (self.backflow << 1)
            | (self.tamper << 2)
            | (low_batt << 3)
            | (any_alarm << 15)
        )
        self._now = {
            "volume": self.volume.raw,  # litres, as the profile's register
            "flow_rate": self._flow(t) - (self.BACKFLOW_M3H if self.backflow else 0.0),
            "reverse_volume": self.reverse.raw,
            "temperature": (27.0 + 2.0 * math.sin(2 * math.pi * (h - 9) / 24))
            * self.step.noise(0.005),
            "battery": round(self.battery) / 100.0,
            "alarm_flags": word,
            "leak": self.leak,
            "backflow": self.backflow,
            "tamper": self.tamper,
            "alarm_in_progress": any_alarm,
            "flow_persistence": 3 if self.leak else (4 if self.leak_seen else 0),
            "serial_number": self.serial,
        }

    def set_leak(self, on: bool = True) -> None:
        self.update()
        self.leak = on
        self.leak_seen = self.leak_seen or on
        self._instant(self.step.last)

    def set_backflow(self, on: bool = True) -> None:
        self.update()
        self.backflow = on
        self._instant(self.step.last)

    def set_tamper(self, on: bool = True) -> None:
        self.update()
        self.tamper = on
        self._instant(self.step.last)

    def preset_volume(self, litres: float) -> None:
        self.update()
        self.volume.preset(litres)
        self._instant(self.step.last)


PRESETS: dict[int, tuple[float, float, float]] = {  # pan deg, tilt deg, zoom x
    1: (0.0, -10.0, 1.0),
    2: (90.0, -15.0, 4.0),
    3: (180.0, -20.0, 2.0),
    4: (270.0, -5.0, 10.0),
    5: (45.0, -30.0, 12.0),
    6: (135.0, -25.0, 6.0),
    7: (225.0, -12.0, 3.0),
    8: (315.0, -8.0, 20.0),
}
PAN_RATE, TILT_RATE, ZOOM_RATE = 60.0, 30.0, 4.0  # per simulated second


def _approach(cur: float, target: float, step: float) -> float:
    return target if abs(target - cur) <= step else cur + math.copysign(step, target - cur)


class CameraModel(_Model):
    """PTZ head that slews to set-points/presets, plus a video vehicle counter."""

    kind = "camera"
    profile_ref = "cityedge/camera"

    def __init__(self, unit_id: int, clock: Clock | None = None) -> None:
        self.preset = 1
        self.target = PRESETS[1]
        self.pan, self.tilt, self.zoom = PRESETS[1]
        self.count = Totalizer(1_000_000.0 * unit_id)
        self.video_loss = False
        super().__init__(unit_id, clock)
        self.update()

    def _move(self, dt: float) -> None:
        tp, tt, tz = self.target
        diff = (tp - self.pan + 180.0) % 360.0 - 180.0  # shortest way round
        self.pan = (self.pan + _approach(0.0, diff, PAN_RATE * dt)) % 360.0
        if abs((tp - self.pan + 180.0) % 360.0 - 180.0) < 1e-9:
            self.pan = tp
        self.tilt = _approach(self.tilt, tt, TILT_RATE * dt)
        self.zoom = _approach(self.zoom, tz, ZOOM_RATE * dt)

    def _integrate(self, t: float, dt: float) -> None:
        self._move(dt)
        if not self.video_loss:
            self.count.add(self.step.poisson(traffic_rate(local_hour(t)) * dt / 3600.0))

    def _instant(self, t: float) -> None:
        super()._instant(t)
        rate = 0.0 if self.video_loss else traffic_rate(local_hour(t)) * self.step.noise(0.05)
        speed = max(5.0, 52.0 * (1 - 0.55 * min(1.0, rate / 1800.0) ** 2) * self.step.noise(0.04))
        occupancy = min(0.95, rate / speed * 5.5 / 1000.0)
        congested = speed < 30.0 or occupancy > 0.3
        moving = (self.pan, self.tilt, self.zoom) != self.target
        self._now = {
            "preset": self.preset,
            "pan_setpoint": self.target[0],
            "tilt_setpoint": self.target[1],
            "zoom_setpoint": self.target[2],
            "pan": self.pan,
            "tilt": self.tilt,
            "zoom": self.zoom,
            "ptz_status": int(moving),
            "vehicle_count": self.count.raw,
            "intensity": round(rate),
            "average_speed": 0.0 if self.video_loss else speed,
            "occupancy": occupancy,
            "traffic_flags": congested | (self.video_loss << 1) | ((not is_daytime(t)) << 2),
            "congested": congested,
        }

    def write(self, point: str, value: float) -> None:
        self.update()
        pan, tilt, zoom = self.target
        if point == "preset":
            if int(value) != value or int(value) not in (0, *PRESETS):
                raise WriteRejected(point, f"presets are 0..{max(PRESETS)}")
            if value:
                self.target = PRESETS[int(value)]
            self.preset = int(value)
        elif point == "pan_setpoint" and 0.0 <= value < 360.0:
            self.target, self.preset = (value, tilt, zoom), 0
        elif point == "tilt_setpoint" and -90.0 <= value <= 30.0:
            self.target, self.preset = (pan, value, zoom), 0
        elif point == "zoom_setpoint" and 1.0 <= value <= 30.0:
            self.target, self.preset = (pan, tilt, value), 0
        else:
            raise WriteRejected(point, "not writable or out of range")
        self._instant(self.step.last)

    def goto_preset(self, n: int) -> None:
        self.write("preset", n)

    def preset_count(self, n: int) -> None:
        self.update()
        self.count.preset(n)
        self._instant(self.step.last)


class EnergyMeterModel(_Model):
    """Three-phase cabinet energy meter (Eastron SDM630 map): a lighting load on three phases
    that follows the lamps (on at night), IEEE 754 float32 values as the meter sends them."""

    kind = "energy_meter"
    profile_ref = "eastron/sdm630"

    def __init__(self, unit_id: int, clock: Clock | None = None) -> None:
        self.imported = Totalizer(12_000.0 + 100.0 * unit_id)  # kWh
        self.demand_period = 60.0
        super().__init__(unit_id, clock)
        self.update()

    def _load_w(self, t: float) -> float:
        return 450.0 + (2400.0 if not is_daytime(t) else 0.0)  # per phase: cabinet + lamps

    def _integrate(self, t: float, dt: float) -> None:
        self.imported.add(3 * self._load_w(t) * dt / 3_600_000.0)

    def _instant(self, t: float) -> None:
        super()._instant(t)
        now: dict[str, SimValue] = {}
        total = 0.0
        for i, ph in enumerate(("l1", "l2", "l3")):
            v = 230.0 * self.step.noise(0.01)
            pf = 0.95 - 0.02 * i
            p = self._load_w(t) * self.step.noise(0.02)
            now[f"voltage_{ph}"] = v
            now[f"current_{ph}"] = p / (v * pf)
            now[f"power_{ph}"] = p
            now[f"power_factor_{ph}"] = pf
            total += p
        now.update(
            {
                "total_power": total,
                "total_power_factor": 0.93,
                "frequency": 50.0 * self.step.noise(0.001),
                "import_energy": self.imported.value,
                "export_energy": 0.0,
                "voltage_l12": 398.4 * self.step.noise(0.01),
                "voltage_l23": 398.4 * self.step.noise(0.01),
                "voltage_l31": 398.4 * self.step.noise(0.01),
                "current_n": 0.4 * self.step.noise(0.1),
                "total_energy": self.imported.value,
                "demand_period": self.demand_period,
            }
        )
        self._now = now

    def write(self, point: str, value: float) -> None:
        if point != "demand_period" or value not in (0, 5, 8, 10, 15, 20, 30, 60):
            raise WriteRejected(point, "demand_period takes 0, 5, 8, 10, 15, 20, 30 or 60")
        self.update()
        self.demand_period = float(value)
        self._instant(self.step.last)


SimModel = StreetlightModel | WaterMeterModel | CameraModel | EnergyMeterModel
MODEL_CLASSES: dict[str, type[SimModel]] = {
    "streetlight": StreetlightModel,
    "water_meter": WaterMeterModel,
    "camera": CameraModel,
    "energy_meter": EnergyMeterModel,
}
