"""Device profile model: a device *model* described as data (points, limits, quirks).

Addresses are 0-based protocol addresses as they go on the wire. The "4xxxx" convention of
vendor manuals (holding register 40001 = address 0 of the holding table) is explained in
docs/PROFILES.md; write ``table = "holding"`` and ``address = 0`` for 40001.
"""

from __future__ import annotations

import enum
import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from drivers.core.filters import FilterSpec, check_chain
from drivers.core.identify import Identify
from drivers.core.sdm_terms import CONTROLLED_PROPERTIES, KIND_CONTROLLED_PROPERTIES
from drivers.serial.spec import SerialSpec

NAME_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,63}$")


class Table(enum.StrEnum):
    COIL = "coil"
    DISCRETE = "discrete"
    INPUT = "input"
    HOLDING = "holding"

    @property
    def is_bits(self) -> bool:
        return self in (Table.COIL, Table.DISCRETE)


class DataType(enum.StrEnum):
    BOOL = "bool"  # a coil / discrete input, or a register != 0
    BIT = "bit"  # one bit of a 16-bit register (``bit`` = 0..15, 0 = LSB)
    INT16 = "int16"
    UINT16 = "uint16"
    INT32 = "int32"
    UINT32 = "uint32"
    INT64 = "int64"
    UINT64 = "uint64"
    FLOAT32 = "float32"
    FLOAT64 = "float64"
    STRING = "string"  # ``length`` registers, 2 ASCII chars each, NUL/space padded
    BITFIELD = "bitfield"  # uint16 -> tuple of the names of the set bits in ``flags``

    @property
    def registers(self) -> int:
        return _REGS.get(self, 1)


# the integer types and the raw values each holds: the types ``flag_enum`` and implied
# decimals apply to, the range every codec checks a value against
INT_RANGES: dict[DataType, tuple[int, int]] = {
    DataType.INT16: (-(2**15), 2**15 - 1),
    DataType.UINT16: (0, 2**16 - 1),
    DataType.INT32: (-(2**31), 2**31 - 1),
    DataType.UINT32: (0, 2**32 - 1),
    DataType.INT64: (-(2**63), 2**63 - 1),
    DataType.UINT64: (0, 2**64 - 1),
}

_REGS = {
    DataType.INT32: 2,
    DataType.UINT32: 2,
    DataType.FLOAT32: 2,
    DataType.INT64: 4,
    DataType.UINT64: 4,
    DataType.FLOAT64: 4,
}


class WordOrder(enum.StrEnum):
    """Byte order of a multi-byte value as the letters of its big-endian bytes on the wire.

    ABCD: big-endian words, big-endian bytes (Modbus spec default)
    CDAB: little-endian word order ("word swap"), bytes big-endian in each register
    BADC: big-endian words, bytes swapped inside each register
    DCBA: fully little-endian
    For 64-bit values the pattern is applied the same way over four registers.
    """

    ABCD = "ABCD"
    CDAB = "CDAB"
    BADC = "BADC"
    DCBA = "DCBA"


class _M(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Point(_M):
    name: str
    metric: str | None = None  # Smart Data Models attribute; defaults to name
    description: str | None = None
    # --- Modbus addressing (ignored by non-Modbus protocols) ---
    table: Table = Table.HOLDING
    address: int = Field(0, ge=0, le=65535)
    type: DataType = DataType.UINT16
    order: WordOrder | None = None  # None -> profile default
    bit: int | None = Field(None, ge=0, le=15)
    length: int | None = Field(None, ge=1, le=123)  # registers, for strings
    # --- non-Modbus: field of the parsed response (regex group / struct field / decoder key) ---
    field: str | None = None
    # --- value semantics ---
    scale: float = 1.0
    offset: float = 0.0
    unit: str | None = None  # UCUM symbol
    unit_code: str | None = None  # UN/CEFACT common code
    enum: dict[int, str] | None = None
    flags: dict[int, str] | None = None
    # One label from fault bits (e.g. Smart Data Models Streetlight ``status``): the first
    # listed bit that is set gives the label, ``flag_enum_default`` when none of them is set.
    flag_enum: dict[int, str] | None = None
    flag_enum_default: str | None = None
    # Decimals of the engineering value; default: what the scale implies for integer
    # registers, the float's own precision for float registers (drivers/core/resolution.py)
    decimals: int | None = Field(None, ge=0, le=12)
    writable: bool = False
    min: float | None = None  # write bounds, in engineering units
    max: float | None = None
    interval: float | None = Field(None, gt=0)  # per-point poll interval (s); None = device's
    filters: tuple[FilterSpec, ...] = ()

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not NAME_RE.match(v):
            raise ValueError("must start with a letter and hold only letters, digits and _")
        return v

    @model_validator(mode="after")
    def _consistent(self) -> Point:
        if self.table.is_bits and self.type is not DataType.BOOL:
            raise ValueError(f"{self.table.value} points must have type 'bool', not '{self.type}'")
        if self.type is DataType.BIT and self.bit is None:
            raise ValueError("type 'bit' needs 'bit' (0..15)")
        if self.type is not DataType.BIT and self.bit is not None:
            raise ValueError("'bit' is only valid with type 'bit'")
        if self.type is DataType.STRING and self.length is None:
            raise ValueError("type 'string' needs 'length' (registers)")
        if self.type is DataType.BITFIELD and not self.flags:
            raise ValueError("type 'bitfield' needs 'flags' (bit number -> name)")
        if self.flags and any(not 0 <= b <= 15 for b in self.flags):
            raise ValueError("flag bit numbers must be 0..15")
        self._check_flag_enum()
        self._check_decimals()
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"min ({self.min}) is greater than max ({self.max})")
        if self.scale == 0:
            raise ValueError("scale must not be 0")
        check_chain(self.filters)
        if self.address + self.registers - 1 > 65535:
            raise ValueError("point extends past address 65535")
        return self

    def _check_flag_enum(self) -> None:
        if self.flag_enum is None:
            if self.flag_enum_default is not None:
                raise ValueError("'flag_enum_default' needs 'flag_enum'")
            return
        if self.type not in INT_RANGES or self.enum is not None:
            raise ValueError("'flag_enum' needs an integer register type and no 'enum'")
        if not self.flag_enum or any(not 0 <= b <= 63 for b in self.flag_enum):
            raise ValueError("'flag_enum' maps bit numbers 0..63 to labels")
        if self.flag_enum_default is None:
            raise ValueError("'flag_enum' needs 'flag_enum_default' (the label when no bit is set)")
        if self.writable:
            raise ValueError("a 'flag_enum' point cannot be writable")

    def _check_decimals(self) -> None:
        if self.decimals is None:
            return
        if not self.is_numeric or self.type in (DataType.BOOL, DataType.BIT):
            raise ValueError("'decimals' applies to numeric points only")
        if self.type in INT_RANGES:
            from drivers.core.resolution import implied_decimals

            implied = implied_decimals(self)
            if implied is not None and self.decimals > implied:
                raise ValueError(
                    f"decimals = {self.decimals} is finer than the register's resolution "
                    f"(scale {self.scale:g}, offset {self.offset:g}: {implied} decimal(s))"
                )

    @property
    def registers(self) -> int:
        """Width on the wire, in registers (or bits for coil/discrete tables)."""
        if self.type is DataType.STRING:
            return self.length or 1
        return self.type.registers

    @property
    def metric_name(self) -> str:
        return self.metric or self.name

    @property
    def is_numeric(self) -> bool:
        return (
            self.type not in (DataType.STRING, DataType.BITFIELD)
            and not self.enum
            and self.flag_enum is None
        )


class UndefinedRange(_M):
    """Registers the device does not implement: reads must never span them (some devices shift
    every later value instead of answering an exception)."""

    table: Table = Table.HOLDING
    start: int = Field(ge=0, le=65535)
    end: int = Field(ge=0, le=65535)  # inclusive

    @model_validator(mode="after")
    def _order(self) -> UndefinedRange:
        if self.end < self.start:
            raise ValueError(f"end ({self.end}) is before start ({self.start})")
        return self


class Limits(_M):
    max_registers: int = Field(125, ge=1, le=125)  # per request, FC3/FC4 (spec: 125)
    max_bits: int = Field(2000, ge=1, le=2000)  # per request, FC1/FC2 (spec: 2000)
    max_gap: int = Field(16, ge=0, le=124)  # unused registers a request may read to save one
    undefined: tuple[UndefinedRange, ...] = ()


Protocol = Literal["modbus", "serial", "pelco_d", "mbus"]


class Profile(_M):
    id: str
    kind: str  # streetlight | water_meter | camera | traffic | energy_meter | ...
    protocol: Protocol = "modbus"
    manufacturer: str | None = None
    model: str | None = None
    description: str | None = None
    extends: str | None = None
    word_order: WordOrder = WordOrder.ABCD
    limits: Limits = Limits()
    points: tuple[Point, ...] = ()
    # what the device senses or controls, as the Smart Data Models Device ``controlledProperty``
    # (its enum); default by kind (drivers/core/sdm_terms.py)
    controlled_property: tuple[str, ...] | None = None
    # protocol section of the profile-defined serial driver (schema: drivers/serial/spec.py)
    serial: SerialSpec | None = None
    # the point that tells this model apart, for `cityedge scan` (drivers/core/identify.py)
    identify: Identify | None = None

    @model_validator(mode="after")
    def _points(self) -> Profile:
        seen: set[str] = set()
        for p in self.points:
            if p.name in seen:
                raise ValueError(f"duplicate point name '{p.name}'")
            seen.add(p.name)
        if not self.points:
            raise ValueError("profile defines no points")
        if self.identify is not None and self.identify.point not in seen:
            raise ValueError(f"identify: no point '{self.identify.point}' in this profile")
        if self.controlled_property is not None:
            bad = [c for c in self.controlled_property if c not in CONTROLLED_PROPERTIES]
            if bad or not self.controlled_property:
                raise ValueError(
                    f"controlled_property {bad or '[]'}: use terms of the Smart Data Models "
                    f"Device enum ({', '.join(sorted(CONTROLLED_PROPERTIES))})"
                )
        if self.protocol != "modbus" or self.serial is not None:
            from drivers.registry import profile_problems

            problems = profile_problems(self.protocol, self.serial, self.points)
            if problems:
                raise ValueError("; ".join(problems))
        return self

    @property
    def controlled_properties(self) -> tuple[str, ...]:
        """``controlled_property``, else the default of the kind (empty when neither)."""
        if self.controlled_property is not None:
            return self.controlled_property
        return KIND_CONTROLLED_PROPERTIES.get(self.kind, ())

    def point(self, name: str) -> Point:
        for p in self.points:
            if p.name == name:
                return p
        raise KeyError(name)
