"""Simulated field devices (streetlight controller, water meter, PTZ traffic camera) served as
Modbus TCP units by pymodbus, with realistic physics and the shipped profiles as register maps.
"""

from drivers.sim.models import CameraModel, StreetlightModel, WaterMeterModel, WriteRejected
from drivers.sim.server import SimSpec, SimulatorServer

__all__ = [
    "CameraModel",
    "SimSpec",
    "SimulatorServer",
    "StreetlightModel",
    "WaterMeterModel",
    "WriteRejected",
]
