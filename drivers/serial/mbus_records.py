"""EN 13757-3 variable data structure (RSP_UD with CI 0x72 / 0x7A / 0x78): header + records.

A record is DIF [DIFE...] VIF [VIFE...] data. Implemented subset:
- DIF data field codes 0-7 (integers, little endian, signed; 5 = float32), 9-C and E (BCD, an
  'F' in the top nibble makes it negative), D (LVAR: text, BCD or binary); 0x0F / 0x1F
  manufacturer data to the end (0x1F: more records follow), 0x2F idle filler.
- VIF primary table (energy, volume 10^(n-6) m3, mass, on/operating time, power, flow 10^(n-6)
  m3/h and the m3/min and m3/s variants converted to m3/h, temperatures, pressure, date type G
  (0x6C), date-time type F (0x6D), durations, fabrication number 0x78, bus address, plain text
  VIF 0x7C); 0xFD extension table: error flags 0x17, firmware/software version, battery days.
Each record gets a key for ``Point.field``: the quantity (``volume``, ``flow``, ...), then
``.max`` / ``.min`` / ``.err`` for the function, ``.s<n>`` storage, ``.t<n>`` tariff,
``.u<n>`` subunit, ``.x<hh>`` per combinable VIFE; ``r<i>`` also names the i-th record. Values
are converted to the unit listed (m3, m3/h, Wh, W, s, Cel, bar, kg). Dates are the meter's
local time without offset (ISO 8601, e.g. ``2014-03-13T12:10``).
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass

from drivers.serial.mbus import manufacturer_text

Value = int | float | str | None

_LEN = {0: 0, 1: 1, 2: 2, 3: 3, 4: 4, 5: 4, 6: 6, 7: 8, 8: 0, 9: 1, 0xA: 2, 0xB: 3, 0xC: 4, 0xE: 6}
_BCD = {9, 0xA, 0xB, 0xC, 0xE}
_FUNC = ("", ".max", ".min", ".err")
_TIME = (1, 60, 3600, 86400)
STATUS_FLAGS = {0: "busy", 1: "error", 2: "power_low", 3: "permanent_error", 4: "temporary_error"}


class RecordError(ValueError):
    def __init__(self, reason: str, offset: int) -> None:
        self.reason = reason
        self.offset = offset
        super().__init__(f"{reason} at data byte {offset}")


@dataclass(frozen=True, slots=True)
class Record:
    key: str
    value: Value
    unit: str | None
    function: int
    storage: int
    tariff: int
    subunit: int


@dataclass(frozen=True, slots=True)
class Telegram:
    address: int
    header: dict[str, Value]
    records: tuple[Record, ...]
    more: bool  # DIF 0x1F: the meter has another telegram (send REQ_UD2 again)

    def fields(self) -> dict[str, Value]:
        out: dict[str, Value] = dict(self.header)
        for i, r in enumerate(self.records):
            out.setdefault(r.key, r.value)  # the first record of a key wins
            out[f"r{i}"] = r.value
        return out


def _quantity(vif: int, vifes: list[int]) -> tuple[str, float, str | None]:
    """(key, multiplier, unit) for a VIF; multiplier None-like 0 means 'not numeric scaling'."""
    v = vif & 0x7F
    n = v & 0x07
    if vif in (0xFD, 0xFB):
        ext = vifes[0] & 0x7F if vifes else 0
        if vif == 0xFD:
            named = {
                0x17: "error_flags",
                0x0E: "firmware_version",
                0x0F: "software_version",
                0x0C: "model_version",
                0x74: "battery_days",
            }
            if ext in named:
                return named[ext], 1.0, "d" if ext == 0x74 else None
        return f"{'fd' if vif == 0xFD else 'fb'}_{ext:02x}", 1.0, None
    table: list[tuple[int, int, str, float, str | None]] = [
        (0x00, 0x07, "energy", 10.0 ** (n - 3), "Wh"),
        (0x08, 0x0F, "energy_j", 10.0**n, "J"),
        (0x10, 0x17, "volume", 10.0 ** (n - 6), "m3"),
        (0x18, 0x1F, "mass", 10.0 ** (n - 3), "kg"),
        (0x20, 0x23, "on_time", _TIME[n & 3], "s"),
        (0x24, 0x27, "operating_time", _TIME[n & 3], "s"),
        (0x28, 0x2F, "power", 10.0 ** (n - 3), "W"),
        (0x30, 0x37, "power_jh", 10.0**n, "J/h"),
        (0x38, 0x3F, "flow", 10.0 ** (n - 6), "m3/h"),
        (0x40, 0x47, "flow", 10.0 ** (n - 7) * 60, "m3/h"),
        (0x48, 0x4F, "flow", 10.0 ** (n - 9) * 3600, "m3/h"),
        (0x50, 0x57, "mass_flow", 10.0 ** (n - 3), "kg/h"),
        (0x58, 0x5B, "flow_temperature", 10.0 ** ((n & 3) - 3), "Cel"),
        (0x5C, 0x5F, "return_temperature", 10.0 ** ((n & 3) - 3), "Cel"),
        (0x60, 0x63, "temperature_difference", 10.0 ** ((n & 3) - 3), "K"),
        (0x64, 0x67, "external_temperature", 10.0 ** ((n & 3) - 3), "Cel"),
        (0x68, 0x6B, "pressure", 10.0 ** ((n & 3) - 3), "bar"),
        (0x6C, 0x6C, "date", 1.0, None),
        (0x6D, 0x6D, "datetime", 1.0, None),
        (0x6E, 0x6E, "hca", 1.0, None),
        (0x70, 0x73, "averaging_duration", _TIME[n & 3], "s"),
        (0x74, 0x77, "actuality_duration", _TIME[n & 3], "s"),
        (0x78, 0x78, "fabrication_no", 1.0, None),
        (0x79, 0x79, "enhanced_id", 1.0, None),
        (0x7A, 0x7A, "bus_address", 1.0, None),
        (0x7E, 0x7E, "any", 1.0, None),
        (0x7F, 0x7F, "manufacturer", 1.0, None),
    ]
    for lo, hi, key, mult, unit in table:
        if lo <= v <= hi:
            return key, mult, unit
    return f"vif_{v:02x}", 1.0, None


def _bcd(raw: bytes) -> int | None:
    digits = raw[::-1].hex()
    neg = digits[0] in "fF"
    if neg:
        digits = digits[1:]
    if not digits or not digits.isdigit():
        return None  # hex digits A-F in BCD: the meter flags an error (e.g. "EEEE")
    return -int(digits) if neg else int(digits)


def _date_g(raw: bytes) -> str | None:
    day, month = raw[0] & 0x1F, raw[1] & 0x0F
    year = ((raw[0] & 0xE0) >> 5) | ((raw[1] & 0xF0) >> 1)
    if not (1 <= day <= 31 and 1 <= month <= 12):
        return None
    return f"{2000 + year if year < 81 else 1900 + year:04d}-{month:02d}-{day:02d}"


def _datetime_f(raw: bytes) -> str | None:
    if raw[0] & 0x80:  # IV: time invalid
        return None
    minute, hour = raw[0] & 0x3F, raw[1] & 0x1F
    date = _date_g(raw[2:4])
    if date is None or minute > 59 or hour > 23:
        return None
    return f"{date}T{hour:02d}:{minute:02d}"


def _lvar(data: bytes, pos: int) -> tuple[Value, int]:
    lvar = data[pos]
    pos += 1
    if lvar <= 0xBF:
        n, kind = lvar, "text"
    elif lvar <= 0xDF:
        n, kind = lvar & 0x0F, "bcd"
    elif lvar <= 0xEF:
        n, kind = lvar - 0xE0, "bin"
    elif lvar <= 0xFA:
        n, kind = 4 * (lvar - 0xEC), "bin"
    else:
        raise RecordError(f"reserved LVAR {lvar:#04x}", pos - 1)
    raw = data[pos : pos + n]
    if len(raw) < n:
        raise RecordError("truncated variable-length data", pos)
    pos += n
    if kind == "text":
        return raw[::-1].decode("latin-1"), pos
    if kind == "bcd":
        v = _bcd(raw) if raw else None
        return (-v if v is not None and lvar >= 0xD0 else v), pos
    return int.from_bytes(raw, "little", signed=True), pos


def _scale(v: int | float, mult: float) -> float:
    if mult >= 1:
        return v * mult
    return v / round(1 / mult)  # division keeps 332 * 1e-3 exactly 0.332


def decode_records(data: bytes) -> tuple[list[Record], bool]:
    records: list[Record] = []
    pos, more = 0, False
    try:
        while pos < len(data):
            dif = data[pos]
            pos += 1
            if dif == 0x2F:
                continue
            if dif in (0x0F, 0x1F):
                more = dif == 0x1F
                break
            code, func = dif & 0x0F, (dif >> 4) & 3
            storage, tariff, subunit, n, ext = (dif >> 6) & 1, 0, 0, 0, dif & 0x80
            while ext:
                if n >= 10:
                    raise RecordError("more than 10 DIFEs", pos)
                e = data[pos]
                pos += 1
                storage |= (e & 0x0F) << (1 + 4 * n)
                tariff |= ((e >> 4) & 3) << (2 * n)
                subunit |= ((e >> 6) & 1) << n
                n, ext = n + 1, e & 0x80
            vif = data[pos]
            pos += 1
            label = None
            if vif & 0x7F == 0x7C:
                ln = data[pos]
                label = data[pos + 1 : pos + 1 + ln][::-1].decode("latin-1")
                pos += 1 + ln
            vifes: list[int] = []
            ext = vif & 0x80
            while ext:
                if len(vifes) >= 10:
                    raise RecordError("more than 10 VIFEs", pos)
                vifes.append(data[pos])
                pos += 1
                ext = vifes[-1] & 0x80
            key, mult, unit = _quantity(vif, vifes)
            if label is not None:
                key = f"text:{label}"
            value: Value
            if code == 0xD:
                value, pos = _lvar(data, pos)
            else:
                size = _LEN.get(code, -1)
                if size < 0:
                    raise RecordError(f"reserved DIF data code {code:#x}", pos)
                raw = data[pos : pos + size]
                if len(raw) < size:
                    raise RecordError("truncated record data", pos)
                pos += size
                value = _value(code, raw, vif & 0x7F)
            if isinstance(value, int | float) and not isinstance(value, bool) and mult != 1.0:
                value = _scale(value, mult)
            comb = vifes[1:] if vif in (0xFD, 0xFB) else vifes
            key += (
                _FUNC[func]
                + (f".s{storage}" if storage else "")
                + (f".t{tariff}" if tariff else "")
                + (f".u{subunit}" if subunit else "")
                + "".join(f".x{x & 0x7F:02x}" for x in comb)
            )
            records.append(Record(key, value, unit, func, storage, tariff, subunit))
    except IndexError:
        raise RecordError("truncated record", pos) from None
    return records, more


def _value(code: int, raw: bytes, vif: int) -> Value:
    if code in (0, 8):
        return None
    if vif == 0x6D and code == 4:
        return _datetime_f(raw)
    if vif == 0x6C and code == 2:
        return _date_g(raw)
    if code in _BCD:
        return _bcd(raw)
    if code == 5:
        f: float = struct.unpack("<f", raw)[0]
        return None if math.isnan(f) else f
    return int.from_bytes(raw, "little", signed=True)


def decode_rsp_ud(address: int, ci: int, data: bytes) -> Telegram:
    header: dict[str, Value] = {}
    if ci == 0x72:
        if len(data) < 12:
            raise RecordError("long header truncated", len(data))
        header["id"] = _bcd(data[0:4])
        header["manufacturer"] = manufacturer_text(int.from_bytes(data[4:6], "little"))
        header["version"], header["medium"] = data[6], data[7]
        header["access_no"], header["status"] = data[8], data[9]
        header["signature"] = int.from_bytes(data[10:12], "little")
        body = data[12:]
    elif ci == 0x7A:
        if len(data) < 4:
            raise RecordError("short header truncated", len(data))
        header["access_no"], header["status"] = data[0], data[1]
        header["signature"] = int.from_bytes(data[2:4], "little")
        body = data[4:]
    elif ci == 0x78:
        body = data
    else:
        raise RecordError(f"unsupported CI {ci:#04x}", 0)
    records, more = decode_records(body)
    return Telegram(address, header, tuple(records), more)
