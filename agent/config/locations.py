"""Checks of configured locations and of what NGSI-LD entities require (cityedge check, load).

Coordinates are (lat, lon) WGS84, as in ``[gateway] location`` and ``devices[].location``.
A latitude beyond ±90 whose swap is a valid point is almost always (lon, lat) written the
GeoJSON way round; and a device far from its gateway (or from the other devices when the
gateway has no location) whose swapped coordinates land next to it is the same mistake with
both numbers in range (in Vietnam lat 8..24, lon 102..110 fail the first test; in western
Europe lat 36..60, lon -10..20 only the second can catch it).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

from agent.config.gateway import GatewayConfig
from agent.config.outputs import MqttOutput
from drivers.core.profile import Profile

Loc = tuple[str | int, ...]
LatLon = tuple[float, float]

NEAR_KM = 50.0  # a device is polled from its cabinet over RS-485 or the cabinet LAN
NGSI_ENCODINGS = ("ngsild", "iotagent")


def _valid(p: LatLon) -> bool:
    lat, lon = p
    return math.isfinite(lat) and math.isfinite(lon) and -90 <= lat <= 90 and -180 <= lon <= 180


def distance_km(a: LatLon, b: LatLon) -> float:
    """Great-circle distance (haversine, mean Earth radius)."""
    la1, lo1, la2, lo2 = map(math.radians, (*a, *b))
    h = (
        math.sin((la2 - la1) / 2) ** 2
        + math.cos(la1) * math.cos(la2) * math.sin((lo2 - lo1) / 2) ** 2
    )
    return 2 * 6371.0 * math.asin(min(1.0, math.sqrt(h)))


def range_problem(p: LatLon) -> str | None:
    lat, lon = p
    if _valid(p):
        return None
    if _valid((lon, lat)):
        return (
            f"latitude {lat:g} is outside -90..90: this looks like [lon, lat]; "
            f"locations are [lat, lon], so write [{lon:g}, {lat:g}]"
        )
    return f"({lat:g}, {lon:g}) is not a WGS84 point (lat -90..90, lon -180..180)"


def _median(points: Sequence[LatLon]) -> LatLon:
    lats = sorted(p[0] for p in points)
    lons = sorted(p[1] for p in points)
    mid = len(points) // 2
    return (lats[mid], lons[mid])


def location_problems(cfg: GatewayConfig) -> list[tuple[Loc, str]]:
    out: list[tuple[Loc, str]] = []
    here = cfg.gateway.location
    if here is not None and (msg := range_problem(here)) is not None:
        out.append((("gateway", "location"), msg))
        here = None
    own: list[tuple[int, LatLon]] = []
    for i, d in enumerate(cfg.devices):
        if d.location is None:
            continue
        msg = range_problem(d.location)
        if msg is not None:
            out.append((("devices", i, "location"), msg))
        else:
            own.append((i, d.location))
    ref, what = here, "the gateway location"
    if ref is None and len(own) >= 3:
        ref, what = _median([p for _, p in own]), "the other devices"
    if ref is None:
        return out
    for i, p in own:
        far = distance_km(p, ref)
        swapped = (p[1], p[0])
        if far > NEAR_KM and _valid(swapped) and distance_km(swapped, ref) <= NEAR_KM:
            out.append(
                (
                    ("devices", i, "location"),
                    f"[{p[0]:g}, {p[1]:g}] is {far:.0f} km from {what}, but "
                    f"[{p[1]:g}, {p[0]:g}] is next to it: lat and lon look swapped "
                    "(locations are [lat, lon])",
                )
            )
    return out


def ngsi_problems(cfg: GatewayConfig, profiles: Mapping[str, Profile]) -> list[tuple[Loc, str]]:
    """What the entity types of an NGSI-LD output require from the config: a location where
    the model requires one (Streetlight), controlledProperty terms for every Device entity."""
    if not any(isinstance(o, MqttOutput) and o.encoding in NGSI_ENCODINGS for o in cfg.outputs):
        return []
    from agent.forward.encoders.sdm import model_for_kind

    out: list[tuple[Loc, str]] = []
    for i, d in enumerate(cfg.devices):
        prof = profiles.get(d.profile)
        if prof is None or not d.enabled:
            continue
        model = model_for_kind(prof.kind)
        if "location" in model.required and d.location is None and cfg.gateway.location is None:
            out.append(
                (
                    ("devices", i, "location"),
                    f"an NGSI-LD output publishes '{d.id}' as a {model.type}, whose Smart Data "
                    "Model requires a location: set location = [lat, lon] here or in [gateway]",
                )
            )
        if not prof.controlled_properties:
            out.append(
                (
                    ("devices", i, "profile"),
                    f"profile '{d.profile}' (kind '{prof.kind}') names no controlled_property, "
                    "which the Device entity of an NGSI-LD output requires",
                )
            )
    return out
