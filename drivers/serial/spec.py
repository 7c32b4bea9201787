"""The ``[serial]`` section of a profile: a request/response protocol described as data.

Validated when the profile loads (``drivers.core.profile.Profile.serial``): templates must
format, regular expressions compile, struct layouts match their field lists, and every point's
``field`` must be produced by some read (``profile_problems``). Byte strings (``start``,
``terminator``, ``separator``) are TOML strings whose characters are bytes (latin-1), so a
binary STX is written ``"\\u0002"``. Imports stay stdlib + pydantic only (see ``__init__``).
"""

from __future__ import annotations

import re
import string
import struct
from collections.abc import Sequence
from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from drivers.serial.framing import ChecksumKind

if TYPE_CHECKING:
    from drivers.core.profile import Point

Mode = Literal["ascii", "binary"]


class _M(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def to_bytes(text: str) -> bytes:
    try:
        return text.encode("latin-1")
    except UnicodeEncodeError:
        raise ValueError("byte strings hold characters U+0000..U+00FF only") from None


def render(template: str, mode: Mode, **values: object) -> bytes:
    """Format a request template: text in ascii mode, hex digits (spaces allowed) in binary."""
    text = template.format(**values)
    if mode == "binary":
        try:
            return bytes.fromhex(text)
        except ValueError:
            raise ValueError(f"template {template!r} gives invalid hex {text!r}") from None
    return to_bytes(text)


def _template_fields(template: str) -> set[str]:
    try:
        return {f for _, f, _, _ in string.Formatter().parse(template) if f}
    except ValueError as exc:
        raise ValueError(f"bad template {template!r}: {exc}") from None


class Framing(_M):
    kind: Literal["terminator", "fixed", "length_prefix"] = "terminator"
    start: str = ""  # marker a response frame begins with (resync anchor); part of the body
    terminator: str = ""  # kind = terminator
    length: int | None = Field(None, ge=1, le=4096)  # kind = fixed: whole frame, all included
    length_offset: int = Field(0, ge=0, le=64)  # kind = length_prefix: where the length field is
    length_size: Literal[1, 2] = 1
    length_order: Literal["big", "little"] = "big"
    length_adjust: int = Field(0, ge=-64, le=64)  # whole frame = value + length_adjust
    max_length: int = Field(256, ge=4, le=4096)

    @model_validator(mode="after")
    def _check(self) -> Framing:
        to_bytes(self.start)
        to_bytes(self.terminator)
        if self.kind == "terminator" and not self.terminator:
            raise ValueError("framing 'terminator' needs 'terminator'")
        if self.kind == "fixed" and self.length is None:
            raise ValueError("framing 'fixed' needs 'length'")
        return self


class Checksum(_M):
    kind: ChecksumKind = "none"
    encoding: Literal["binary", "hex"] = "binary"  # hex: ASCII hex digits, upper case sent
    byte_order: Literal["big", "little"] = "big"  # 16-bit sums in binary (Modbus CRC: little)
    skip: int = Field(0, ge=0, le=16)  # leading bytes not covered (e.g. a start marker)
    separator: str = ""  # between body and checksum, e.g. "*" (NMEA style)

    @model_validator(mode="after")
    def _check(self) -> Checksum:
        to_bytes(self.separator)
        return self


class Read(_M):
    """One request and how to parse its response into named fields."""

    request: str  # template; {addr} is the unit id
    regex: str | None = None  # ascii: fullmatch over the body; named groups are fields
    struct: str | None = None  # binary: struct format over the body (e.g. ">BBHhH")
    fields: tuple[str, ...] = ()  # binary: names of the struct items ("_" = ignored)

    @model_validator(mode="after")
    def _check(self) -> Read:
        if (self.regex is None) == (self.struct is None):
            raise ValueError("a read needs exactly one of 'regex' (ascii) or 'struct' (binary)")
        if self.regex is not None:
            try:
                re.compile(self.regex)
            except re.error as exc:
                raise ValueError(f"bad regex {self.regex!r}: {exc}") from None
        if self.struct is not None:
            try:
                n = len(struct.unpack(self.struct, bytes(struct.calcsize(self.struct))))
            except struct.error as exc:
                raise ValueError(f"bad struct format {self.struct!r}: {exc}") from None
            if n != len(self.fields):
                raise ValueError(
                    f"struct {self.struct!r} has {n} items but {len(self.fields)} fields are named"
                )
        bad = _template_fields(self.request) - {"addr"}
        if bad:
            raise ValueError(f"request template may only use {{addr}}, not {sorted(bad)}")
        return self

    def field_names(self) -> set[str]:
        if self.regex is not None:
            return set(re.compile(self.regex).groupindex)
        return {f for f in self.fields if f != "_"}


class Write(_M):
    """A writable point's command; ``{value}`` is the raw value ((value - offset) / scale)."""

    point: str
    request: str  # template with {addr} and {value}
    ack: str | None = None  # ascii: regex the reply must fullmatch; binary: hex template
    nak: str | None = None  # ascii: regex of an error reply (named group 'code' is reported)
    expect_reply: bool = True

    @model_validator(mode="after")
    def _check(self) -> Write:
        bad = _template_fields(self.request) - {"addr", "value"}
        if bad:
            raise ValueError(
                f"write template may only use {{addr}} and {{value}}, not {sorted(bad)}"
            )
        return self


class SerialSpec(_M):
    mode: Mode = "ascii"
    framing: Framing = Framing(terminator="\r")
    checksum: Checksum = Checksum()
    address_field: str | None = None  # response field that must equal the unit id
    timeout: float | None = Field(None, gt=0, le=30)  # per attempt; None: the bus's
    retries: int | None = Field(None, ge=0, le=5)  # None: the bus's
    reads: tuple[Read, ...] = Field(min_length=1)
    writes: tuple[Write, ...] = ()

    @model_validator(mode="after")
    def _check(self) -> SerialSpec:
        for i, r in enumerate(self.reads):
            if self.mode == "ascii" and r.regex is None:
                raise ValueError(f"reads[{i}]: ascii mode parses with 'regex'")
            if self.mode == "binary" and r.struct is None:
                raise ValueError(f"reads[{i}]: binary mode parses with 'struct' + 'fields'")
            _try_render(r.request, self.mode, f"reads[{i}].request", addr=1)
        for i, w in enumerate(self.writes):
            _try_render(w.request, self.mode, f"writes[{i}].request", addr=1, value=1)
            if self.mode == "binary" and w.ack is not None:
                _try_render(w.ack, self.mode, f"writes[{i}].ack", addr=1, value=1)
            for rx in (w.ack, w.nak) if self.mode == "ascii" else (w.nak,):
                if rx is not None:
                    try:
                        re.compile(rx)
                    except re.error as exc:
                        raise ValueError(f"writes[{i}]: bad regex {rx!r}: {exc}") from None
        if self.address_field is not None and not all(
            self.address_field in r.field_names() for r in self.reads
        ):
            raise ValueError(f"address_field '{self.address_field}' is not a field of every read")
        return self

    def field_names(self) -> set[str]:
        out: set[str] = set()
        for r in self.reads:
            out |= r.field_names()
        return out


def _try_render(template: str, mode: Mode, where: str, **values: object) -> None:
    try:
        render(template, mode, **values)
    except (ValueError, KeyError, IndexError) as exc:
        raise ValueError(f"{where}: {exc}") from None


PELCO_FIELDS = {"pan", "tilt", "zoom"}
PELCO_ACTIONS = {"goto_preset", "set_preset", "clear_preset"}


def profile_problems(protocol: str, spec: SerialSpec | None, points: Sequence[Point]) -> list[str]:
    """Checks linking points to the protocol section (Profile validation reaches them through
    ``drivers/registry.py``)."""
    out: list[str] = []
    if protocol == "serial" and spec is None:
        return ["protocol 'serial' needs a [serial] section (request, framing, parsing)"]
    if protocol != "serial" and spec is not None:
        out.append(f"a [serial] section is only used by protocol 'serial', not '{protocol}'")
    writes = {w.point for w in spec.writes} if spec else set()
    fields = spec.field_names() if spec else set()
    for p in points:
        if protocol == "pelco_d":
            key = p.field or p.name
            if key not in PELCO_FIELDS | PELCO_ACTIONS:
                out.append(
                    f"point '{p.name}': field '{key}' is not one of "
                    f"{sorted(PELCO_FIELDS | PELCO_ACTIONS)}"
                )
            if key in PELCO_ACTIONS and not p.writable:
                out.append(f"point '{p.name}': preset actions must be writable")
        elif protocol == "serial":
            if p.field is None and p.name not in writes:
                out.append(f"point '{p.name}' needs 'field' (a regex group or struct field)")
            elif p.field is not None and p.field not in fields:
                out.append(
                    f"point '{p.name}': no read produces field '{p.field}' "
                    f"(fields: {', '.join(sorted(fields))})"
                )
            if p.writable and p.name not in writes:
                out.append(f"point '{p.name}' is writable but [[serial.writes]] has no command")
    names = {p.name for p in points}
    for w in writes - names:
        out.append(f"[[serial.writes]] names unknown point '{w}'")
    return out
