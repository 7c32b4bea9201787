"""``cityedge scan --emit-config``: the units a scan found as ``[[buses]]``/``[[devices]]`` TOML.

Which profile fits a unit is asked of the unit itself, after the scan, on the setting it was
found at:

1. every Modbus profile of the library that defines ``[identify]`` (drivers/core/identify.py)
   has its identification point read and decoded; a unit that exactly one profile recognises
   gets that profile;
2. otherwise the profiles without an identification are tried by their register maps: a
   profile fits when the unit answers every read of its plan (the same coalesced requests the
   agent would send). One that fits is written as a guess with a comment saying so; none or
   several leave a commented ``# profile = "?"`` with the candidates, since a wrong profile
   would make the agent report wrong values with good quality.

Identical reads are sent once per unit, so a library of eight profiles costs a few requests
per unit: a second or two at 9600 baud.
"""

from __future__ import annotations

import argparse
import json
import re
import shlex
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from drivers.core.endpoint import parse_endpoint
from drivers.core.profile import Profile, Table
from drivers.core.reading import Value, iso_ms, now_ms

if TYPE_CHECKING:
    from agent.cli.scan import Found
    from drivers.core.config import Rs485Config

Read = tuple[Table, int, int]


@dataclass
class Guess:
    profile: Profile | None  # the profile to write, None: the technician chooses
    why: str  # the comment written beside it
    candidates: list[str] = field(default_factory=list)


def library_profiles(dirs: Sequence[str]) -> list[Profile]:
    """The Modbus profiles of the library (site directories first), skipping broken ones."""
    from agent.config.loader import BUILTIN_PROFILES
    from drivers.core.errors import ConfigError
    from drivers.core.library import ProfileLibrary

    lib = ProfileLibrary([*(Path(d) for d in dirs), BUILTIN_PROFILES])
    out = []
    for ref in lib.available():
        try:
            profile = lib.load(ref)
        except (ConfigError, KeyError):
            continue
        if profile.protocol == "modbus":
            out.append(profile)
    return out


class UnitReader:
    """Reads of one unit, each sent once; a failed read is remembered as failed."""

    def __init__(self, client: Any, unit: int, timeout: float) -> None:
        self.client, self.unit, self.timeout = client, unit, timeout
        self.cache: dict[Read, list[int] | list[bool] | None] = {}

    async def read(self, table: Table, start: int, count: int) -> list[int] | list[bool] | None:
        from drivers.modbus.adapter import ModbusError

        key = (table, start, count)
        if key not in self.cache:
            try:
                self.cache[key] = await self.client.read(
                    table, start, count, self.unit, self.timeout
                )
            except ModbusError:
                self.cache[key] = None
        return self.cache[key]


async def identity(reader: UnitReader, profile: Profile) -> Value | None:
    """The decoded identification point of ``profile`` as the unit answers it (None: no
    answer, or it does not decode)."""
    from drivers.modbus.codec import CodecError, decode_point

    assert profile.identify is not None
    point = profile.point(profile.identify.point)
    regs = await reader.read(
        point.table, point.address, 1 if point.table.is_bits else point.registers
    )
    if regs is None:
        return None
    try:
        return decode_point(point, regs, point.order or profile.word_order)
    except CodecError:
        return None


async def map_answers(reader: UnitReader, profile: Profile) -> bool:
    from drivers.modbus.planner import PlanError, plan_reads

    try:
        plan = plan_reads(profile.points, profile.limits)
    except PlanError:
        return False
    for req in plan:
        if await reader.read(req.table, req.start, req.count) is None:
            return False
    return True


async def guess_profile(reader: UnitReader, profiles: Sequence[Profile]) -> Guess:
    recognised: list[tuple[Profile, Value]] = []
    for p in profiles:
        if p.identify is not None:
            value = await identity(reader, p)
            if value is not None and p.identify.matches(value):
                recognised.append((p, value))
    if len(recognised) == 1:
        p, value = recognised[0]
        point = p.identify.point if p.identify else "?"
        return Guess(p, f"identified: its {point} is {json.dumps(value)}")
    if recognised:
        refs = [p.id for p, _ in recognised]
        return Guess(None, "several profiles recognise this unit", refs)
    fits = [p for p in profiles if p.identify is None and await map_answers(reader, p)]
    if len(fits) == 1:
        return Guess(
            fits[0],
            "guessed: it answers this profile's whole register map (the profile has no "
            "[identify]); check its readings",
        )
    if fits:
        return Guess(None, "the register maps of several profiles answer", [p.id for p in fits])
    return Guess(None, "no profile of the library fits: write one (docs/PROFILES.md)")


def _bus_id(url: str) -> str:
    ep = parse_endpoint(url)
    raw = Path(ep.path).name if ep.is_serial and ep.path else f"{ep.host}-{ep.port}"
    return re.sub(r"[^A-Za-z0-9_.:-]", "-", raw)[:64].lstrip("-_.:") or "bus"


def _q(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


async def emit_config(
    found: Sequence[Found], args: argparse.Namespace, rs485: Rs485Config | None
) -> str:
    from drivers.modbus.adapter import NotConnected, modbus_client

    profiles = library_profiles(args.profile_dir)
    by_url: dict[str, list[Found]] = {}
    for f in found:
        by_url.setdefault(f.endpoint, []).append(f)
    timeout = max(0.3, 2 * args.timeout)
    command = " ".join(shlex.quote(a) for a in ["cityedge", *sys.argv[1:]])
    lines = [
        f"# Found by: {command}",
        f"# at {iso_ms(now_ms())}: {len(found)} unit(s) on {len(by_url)} line setting(s).",
        '# Check the ids and intervals, fill in any `profile = "?"`, then: cityedge check',
    ]
    if len(by_url) > 1:
        lines.append(
            "# Units answered at more than one line setting: one physical line should have "
            "one setting (a wiring or configuration fault to fix, or keep only one bus)."
        )
    used: set[str] = set()
    for url, units in by_url.items():
        ep = parse_endpoint(url)
        bus = _bus_id(url)
        while bus in used:
            bus += "-2"
        used.add(bus)
        lines += ["", "[[buses]]", f"id = {_q(bus)}", f"endpoint = {_q(url)}"]
        if rs485 is not None:
            lines += ["[buses.rs485]", f"echo = {str(rs485.echo).lower()}"]
            lines.append(f"kernel = {str(rs485.kernel).lower()}")
        client = modbus_client(ep, timeout, rs485 if ep.is_serial else None)
        try:
            await client.connect(max(1.0, timeout))
            connected = True
        except NotConnected:
            connected = False
        try:
            for f in units:
                if connected:
                    guess = await guess_profile(UnitReader(client, f.unit, timeout), profiles)
                else:
                    guess = Guess(None, "the line could not be opened again to identify it")
                lines += ["", *_device(f.unit, bus, guess, used)]
        finally:
            client.close()
    return "\n".join(lines)


def _device(unit: int, bus: str, guess: Guess, used: set[str]) -> list[str]:
    kind = guess.profile.kind.replace("_", "-") if guess.profile else "unit"
    base = f"{kind}-{unit}"
    dev = base
    if dev in used:
        dev = f"{base}-{bus}"
    used.add(dev)
    out = ["[[devices]]", f"id = {_q(dev)}", f"bus = {_q(bus)}", f"unit_id = {unit}"]
    if guess.profile is not None:
        out.append(f"profile = {_q(guess.profile.id)}  # {guess.why}")
    else:
        out.append(f'# profile = "?"  # {guess.why}')
        if guess.candidates:
            out.append(f"#   candidates: {', '.join(guess.candidates)}")
    out.append("interval = 5.0")
    return out
