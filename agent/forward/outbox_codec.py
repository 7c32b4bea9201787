"""The outbox's stored form: reading JSON, and records of many readings compressed together.

A reading is stored as its native JSON (``Reading.to_dict`` in compact ASCII, without the
delivery id): the native publisher splices those bytes into its envelope without re-encoding,
the other encoders get a :class:`Reading` back with :func:`reading_from_json`.

A *record* holds the readings of one group commit (one poll cycle of a gateway, typically),
their JSON texts joined by newlines (JSON escapes every newline inside a string) and compressed
with zlib against a preset dictionary of the envelope's field names. Readings of one cycle
share nearly everything but their values and times, so a record of the W600 load (50
streetlight controllers x 12 points) takes about 20 bytes per reading against ~330 as JSON
(docs/BENCHMARKS.md). The first byte names the format, so a later one can be added beside it;
zlib's Adler-32 trailer lets ``outbox salvage`` tell a real record from stale bytes.

The outbox owns this format; encoders import it from here (``agent/forward/encoders/native.py``).
"""

from __future__ import annotations

import calendar
import dataclasses
import json
import math
import zlib
from json.encoder import encode_basestring_ascii as _esc

from drivers.core.reading import Quality, Reading, Source, TimeQuality, iso_ms


def _opt(s: str | None) -> str:
    return "null" if s is None else str(_esc(s))


def _value_json(v: object) -> str:
    if v is None or v is True or v is False:
        return "null" if v is None else "true" if v else "false"
    if isinstance(v, float):
        return repr(v) if math.isfinite(v) else "null"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, str):
        return str(_esc(v))
    return "[" + ",".join(_esc(x) for x in v) + "]"  # type: ignore[attr-defined]


# The fields fixed per point (names, units, entity, source) -> their JSON, built once: every
# reading of a point repeats them. Keyed by the values themselves (Source by identity: drivers
# keep one per point), so a reading with any other field value gets its own entry.
_static: dict[tuple[object, ...], tuple[Source | None, str, str, str]] = {}
_STATIC_MAX = 65536


def _static_json(r: Reading) -> tuple[Source | None, str, str, str]:
    if len(_static) >= _STATIC_MAX:  # config churn over months: start again
        _static.clear()
    head = (
        f'{{"gateway":{_esc(r.gateway_id)},"device":{_esc(r.device_id)},'
        f'"kind":{_esc(r.device_kind)},"point":{_esc(r.point)},"metric":{_esc(r.metric)},'
        f'"value":'
    )
    mid = f',"unit":{_opt(r.unit)},"unitCode":{_opt(r.unit_code)},"observedAt":"'
    tail = ""
    if r.entity_id is not None:
        tail += f',"entityId":{_esc(r.entity_id)}'
    if r.source is not None:
        tail += _source_json(r.source)
    return (r.source, head, mid, tail + "}")


def reading_json(r: Reading) -> bytes:
    """``json.dumps(r.to_dict())`` in compact ASCII, several times faster: the outbox stores
    every reading in this form, so the native publisher only splices bytes. Non-finite floats
    become null (JSON has no NaN)."""
    src = r.source
    key = (r.gateway_id, r.device_id, r.device_kind, r.point, r.metric, r.unit, r.unit_code,
           r.entity_id, id(src))  # fmt: skip
    st = _static.get(key)
    if st is None or st[0] is not src:
        st = _static[key] = _static_json(r)
    # ``_value_``: the attribute behind ``Enum.value``, which on 3.11 is a Python-level
    # descriptor call (two per reading add up at thousands of readings a second)
    s = (
        f"{st[1]}{_value_json(r.value)}{st[2]}{iso_ms(r.observed_at_ms)}"
        f'","quality":"{r.quality._value_}","seq":{r.seq}'
    )
    if r.reason is not None:
        s += f',"reason":{_esc(r.reason)}'
    if r.historical:
        s += ',"historical":true'
    if r.time_quality is not TimeQuality.SYNCED:
        s += f',"timeQuality":"{r.time_quality._value_}"'
    return (s + st[3]).encode()


def _source_json(src: Source) -> str:
    return ',"source":' + json.dumps(src.to_dict(), separators=(",", ":"))


def parse_iso_ms(t: str) -> int:
    """Inverse of ``iso_ms`` ("2025-11-23T12:13:20.001Z")."""
    secs = calendar.timegm(
        (
            int(t[0:4]),
            int(t[5:7]),
            int(t[8:10]),
            int(t[11:13]),
            int(t[14:16]),
            int(t[17:19]),
            0,
            0,
            0,
        )
    )
    return secs * 1000 + int(t[20:23])


def reading_from_json(data: bytes | str) -> Reading:
    """Inverse of :func:`reading_json` / ``Reading.to_dict`` (for the non-native encoders)."""
    d = json.loads(data)
    v = d["value"]
    src = d.get("source")
    return Reading(
        d["gateway"],
        d["device"],
        d["kind"],
        d["point"],
        d["metric"],
        tuple(v) if isinstance(v, list) else v,
        d["unit"],
        d["unitCode"],
        parse_iso_ms(d["observedAt"]),
        Quality(d["quality"]),
        d.get("reason"),
        d["seq"],
        d.get("historical", False),
        TimeQuality(d.get("timeQuality", "synced")),
        d.get("entityId"),
        None
        if src is None
        else Source(
            src["protocol"],
            src["bus"],
            src.get("unitId"),
            src.get("table"),
            src.get("address"),
            src.get("rawType"),
        ),
    )


# --- records -----------------------------------------------------------------------------

FORMAT_ZLIB_V1 = 1
LEVEL = 1  # level 6 saves ~20 % more at three times the CPU; the fsync costs more than either
# Fragments of the reading JSON, most frequent last (zlib prefers short distances): a record of
# a few readings compresses to about half of what it would without them. Never change these
# bytes: stored records name the dictionary through their format byte.
ZDICT_V1 = (
    b'"kind":"water_meter","kind":"camera","kind":"energy_meter","unit":"m3","unitCode":"MTQ",'
    b'"quality":"stale","reason":"quarantined","quality":"bad","reason":"timeout",'
    b'"timeQuality":"unsynced",,"entityId":"urn:ngsi-ld:Streetlight:","rawType":"float32"}},'
    b'"rawType":"uint32"}},"table":"holding","address":'
    b'{"gateway":"gw","device":"","kind":"streetlight","point":"","metric":"","value":0.0,'
    b'"unit":null,"unitCode":null,"observedAt":"2026-01-01T00:00:00.000Z","quality":"good",'
    b'"seq":1770000000000000,"source":{"protocol":"modbus","bus":"bus","unitId":1,'
    b'"table":"input","address":1,"rawType":"uint16"}}\n'
)
_UNSYNCED = b'"timeQuality":"unsynced"'


class RecordError(ValueError):
    """Bytes that are not a record of a known format (damaged, or not ours)."""


def pack(parts: list[bytes]) -> tuple[bytes, int]:
    """Reading JSON texts -> (one stored record, how many of them are flagged unsynced)."""
    raw = b"\n".join(parts)
    co = zlib.compressobj(LEVEL, zdict=ZDICT_V1)
    return b"\x01" + co.compress(raw) + co.flush(), raw.count(_UNSYNCED)


def unpack(blob: bytes) -> list[bytes]:
    """Inverse of :func:`pack`; raises :class:`RecordError` on anything else."""
    if not blob or blob[0] != FORMAT_ZLIB_V1:
        raise RecordError(f"unknown record format {blob[:1]!r}")
    try:
        do = zlib.decompressobj(zdict=ZDICT_V1)
        raw = do.decompress(blob[1:]) + do.flush()
    except zlib.error as exc:
        raise RecordError(f"damaged record: {exc}") from exc
    if not do.eof or do.unused_data:
        raise RecordError("damaged record: truncated or trailing bytes")
    return raw.split(b"\n")


def is_unsynced(part: bytes) -> bool:
    return _UNSYNCED in part


def corrected(part: bytes, fix_ms: int) -> bytes:
    """A stored reading taken before the clock was synchronised, with ``fix_ms`` added to its
    time and flagged ``corrected``; any other reading is returned as it is."""
    if _UNSYNCED not in part:
        return part
    r = reading_from_json(part)
    return reading_json(
        dataclasses.replace(
            r, observed_at_ms=r.observed_at_ms + fix_ms, time_quality=TimeQuality.CORRECTED
        )
    )
