"""Human output of the technician commands: units, ages, sizes, states, and rich tables.

Only commands that print import this module (rich costs ~45 ms and ~5 MB of RSS at import,
docs/CLI.md): ``cityedge run`` and the daemon's modules never do, and the subcommand modules
import it inside their handlers, since ``cityedge`` imports every subcommand module to build
its parser. rich drops colour and cursor movement by itself when the output is not a terminal
(and honours ``NO_COLOR``), so a pipe gets plain aligned text.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

# UCUM symbols (what readings carry, docs/PAYLOADS.md) as a technician reads them
_UNITS = {
    "1": "",
    "Cel": "°C",
    "deg": "°",
    "m3": "m³",
    "m3/h": "m³/h",
    "kW.h": "kWh",
    "W.h": "Wh",
    "kV.A": "kVA",
    "V.A": "VA",
    "kV.A.h": "kVAh",
    "var": "var",
    "L": "L",
    "L/min": "L/min",
}

STATE_STYLE = {
    "online": "green",
    "degraded": "yellow",
    "offline": "bold red",
    "unknown": "dim",
}
QUALITY_STYLE = {"good": "", "bad": "red", "stale": "yellow"}


def console(stderr: bool = False) -> Console:
    return Console(stderr=stderr, highlight=False)


def unit_label(unit: str | None) -> str:
    if unit is None:
        return ""
    return _UNITS.get(unit, unit)


def value_text(value: Any) -> str:
    """A decoded value as text: numbers as read (already rounded to the device's
    resolution), flag sets as their names, nothing as an em dash."""
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list | tuple):
        return ", ".join(str(v) for v in value) if value else "—"
    if isinstance(value, float):
        if math.isnan(value) or math.isinf(value):
            return str(value)
        return f"{value:g}" if abs(value) >= 1e15 or (value and abs(value) < 1e-6) else repr(value)
    return str(value)


def with_unit(value: Any, unit: str | None) -> str:
    u = unit_label(unit)
    text = value_text(value)
    if not u or text == "—":
        return text
    return f"{text}{u}" if u in ("%", "°") else f"{text} {u}"


def age_text(seconds: float | None) -> str:
    """0.4 s, 12 s, 3 min 05 s, 2 h 05 min, 3 d 4 h."""
    if seconds is None:
        return "—"
    s = max(0.0, float(seconds))
    if s < 10:
        return f"{s:.1f} s"
    if s < 60:
        return f"{s:.0f} s"
    m = int(s // 60)
    if m < 60:
        return f"{m} min {int(s % 60):02d} s" if m < 10 else f"{m} min"
    h = m // 60
    if h < 24:
        return f"{h} h {m % 60:02d} min"
    return f"{h // 24} d {h % 24} h"


def bytes_text(n: int | None) -> str:
    if n is None:
        return "—"
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"  # unreachable


def count_text(n: int | None) -> str:
    return "—" if n is None else f"{n:,}".replace(",", " ")


def since_age(iso: str | None, now: datetime | None = None) -> float | None:
    """Seconds since an ISO-8601 UTC timestamp of the agent (same machine, same clock)."""
    if not iso:
        return None
    try:
        t = datetime.fromisoformat(iso.replace("Z", "+00:00"))
    except ValueError:
        return None
    return ((now or datetime.now(UTC)) - t).total_seconds()


def state_text(state: str | None, reason: str | None = None, detail: str | None = None) -> Text:
    st = state or "unknown"
    text = Text(st, style=STATE_STYLE.get(st, ""))
    if reason:
        text.append(f" ({reason}{': ' + detail if detail else ''})", style="dim")
    return text


def quality_text(quality: str | None, reason: str | None = None) -> Text:
    q = quality or "?"
    text = Text(q, style=QUALITY_STYLE.get(q, ""))
    if reason:
        text.append(f" ({reason})", style="dim")
    return text


def table(*columns: str, title: str | None = None, right: Iterable[str] = ()) -> Table:
    """A plain table: header row, no box (reads well in a pipe and on an 80-column
    console); columns named in ``right`` are right-aligned (numbers)."""
    t = Table(title=title, title_justify="left", box=None, pad_edge=False, header_style="bold")
    keep = set(right)
    for c in columns:
        t.add_column(c, justify="right" if c in keep else "left", overflow="fold")
    return t


def values_table(rows: Iterable[Mapping[str, Any]], *, device: bool = False) -> Table:
    """Readings as ``cityedge read`` shows them (rows: reading dicts, with ``ageS``)."""
    cols = (("device",) if device else ()) + ("point", "value", "unit", "quality", "age", "metric")
    t = table(*cols, right=("value", "age"))
    for r in rows:
        age = r.get("ageS")
        if age is None and r.get("observedAt"):
            age = since_age(str(r["observedAt"]))
        cells: list[Any] = [str(r["device"])] if device else []
        cells += [
            str(r.get("point")),
            value_text(r.get("value")),
            unit_label(r.get("unit")),
            quality_text(r.get("quality"), r.get("reason")),
            age_text(age),
            Text(str(r.get("metric") or ""), style="dim"),
        ]
        t.add_row(*cells)
    return t
