"""The readable output of ``cityedge run --output human`` and ``cityedge demo``.

A sink (agent/forward/sinks/base.py) that prints one line per device poll: the time (UTC), the
device and each value with its unit, bad values in red with their reason; a device state
change gets a line of its own, highlighted (up green, degraded yellow, offline red). It takes
the place of the JSON-lines outputs that write to stdout; MQTT outputs and JSON-lines files
are unchanged. The transition hook keeps the pipeline's order, so the line saying a device went
offline comes after its last values, as the platform sees it.

rich is imported when this sink is built, which only these two commands do on request; the
daemon's default output stays JSON lines without it.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, TextIO

from agent.ops.observe import SinkStats
from drivers.core.reading import Quality, Reading, iso_ms

if TYPE_CHECKING:
    from agent.config.loader import LoadedConfig
    from agent.forward.sinks.base import Sink
    from drivers.device_state import Transition

OUTPUT_MODES = ("human", "json")


class PollLines:
    """One line per device poll, for people."""

    def __init__(self, name: str, file: TextIO | None = None) -> None:
        from rich.console import Console

        self.name = name
        self.console = Console(file=file or sys.stdout, highlight=False, soft_wrap=True)
        self.written = 0

    async def submit(self, batch: Sequence[Reading]) -> None:
        # the pipeline may hand over several polls at once: one line per device, in order
        polls: dict[str, list[Reading]] = {}
        for r in batch:
            polls.setdefault(r.device_id, []).append(r)
        for readings in polls.values():
            self.console.print(self.poll_line(readings))
        self.written += len(batch)

    def poll_line(self, readings: Sequence[Reading]) -> Any:
        from rich.text import Text

        from agent.cli.render import unit_label, value_text

        first = readings[0]
        line = Text(_clock(first.observed_at_ms), style="dim")
        line.append(f"  {first.device_id:<12}", style="bold")
        for r in readings:
            line.append(f"  {r.point} ", style="dim")
            bad = r.quality is not Quality.GOOD
            line.append(value_text(r.value), style="red" if bad else "")
            if unit_label(r.unit):
                line.append(f" {unit_label(r.unit)}")
            if bad:
                line.append(f" ({r.quality.value}: {r.reason or '?'})", style="red")
            if r.historical:
                line.append(" (replayed)", style="dim")
        return line

    def device_status(self, t: Transition) -> None:
        from rich.text import Text

        from agent.cli.render import STATE_STYLE

        state = str(t.state)
        line = Text(_clock(t.at_ms), style="dim")
        line.append(f"  {t.device_id:<12}", style="bold")
        arrow = "▲" if t.online and state == "online" else "▼"
        line.append(f"  {arrow} {state}", style="reverse " + STATE_STYLE.get(state, ""))
        if t.reason is not None:
            line.append(f"  {t.reason}{': ' + t.detail if t.detail else ''}")
        line.append(f"  (was {t.previous}, bus {t.bus_id})", style="dim")
        self.console.print(line)

    def stats(self) -> SinkStats:
        return SinkStats(name=self.name, kind=type(self).__name__, readings=self.written)

    async def run(self) -> None:
        return None  # prints as it goes: nothing to flush on a schedule

    async def close(self) -> None:
        self.console.file.flush()


def _clock(ms: int) -> str:
    return iso_ms(ms)[11:23] + "Z"  # HH:MM:SS.mmmZ: UTC, said so


def readable_sinks(loaded: LoadedConfig, sinks: Sequence[Sink]) -> list[Sink]:
    """``sinks`` with every JSON-lines output to stdout replaced by a readable one."""
    from agent.config.outputs import JsonLinesOutput

    stdout = {
        o.id for o in loaded.config.outputs if isinstance(o, JsonLinesOutput) and o.path == "-"
    }
    return [PollLines(s.name) if s.name in stdout else s for s in sinks]


def output_mode(choice: str | None, default_human: bool) -> str:
    """``--output``, else human on a terminal when the command defaults to it."""
    if choice:
        return choice
    return "human" if default_human and sys.stdout.isatty() else "json"
