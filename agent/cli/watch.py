"""``cityedge watch``: a live view of buses, devices and values from the running agent.

It asks the daemon's control socket for a ``snapshot`` (agent/control/snapshot.py) every
``--interval`` seconds on one connection and redraws in place with rich's ``Live``. The
daemon does no extra bus traffic for it: the values are those of its own polls. Values that
changed since the previous frame are highlighted. Ctrl-C ends it with exit status 0 and the
terminal as it was (cursor shown, the last frame left on screen). When the output is not a
terminal it prints a frame per interval, one after the other (like ``top -b``), or one frame
with ``--once``.
"""

from __future__ import annotations

import argparse
import json
import socket
import sys
import time
from collections.abc import Mapping, Sequence
from typing import Any

from agent.cli.common import config_option, describe, load_or_report

EXAMPLES = """examples:
  cityedge watch                       # every bus and device, refreshed each second (Ctrl-C)
  cityedge watch lamp-1 meter-11 --interval 2
  cityedge watch --once > cabinet.txt  # one frame, e.g. for a commissioning report
exit status: 0 stopped with Ctrl-C (or --once shown), 3 no running agent, 78 bad configuration"""


def register(sub: Any) -> None:
    p = sub.add_parser(
        "watch",
        help="live view of buses, devices and values of the running agent",
        description=describe(__doc__),
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("devices", nargs="*", help="only these devices (default: all)")
    config_option(p)
    p.add_argument(
        "--interval", type=float, default=1.0, help="seconds between refreshes (default 1)"
    )
    p.add_argument("--once", action="store_true", help="print one frame and exit")
    p.set_defaults(func=run)


class Link:
    """One connection to the control socket, reopened when the agent restarts."""

    def __init__(self, path: str, timeout: float = 5.0) -> None:
        self.path, self.timeout = path, timeout
        self._sock: socket.socket | None = None
        self._file: Any = None

    def ask(self, req: Mapping[str, Any]) -> dict[str, Any]:
        if self._sock is None:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.settimeout(self.timeout)
            try:
                sock.connect(self.path)
            except OSError:
                sock.close()
                raise
            self._sock, self._file = sock, sock.makefile("rb")
        try:
            self._sock.sendall(json.dumps(req).encode() + b"\n")
            line = self._file.readline()
        except OSError:
            self.close()
            raise
        if not line:
            self.close()
            raise ConnectionError("the agent closed the control connection")
        reply: dict[str, Any] = json.loads(line)
        return reply

    def close(self) -> None:
        if self._sock is not None:
            self._file.close()
            self._sock.close()
        self._sock = self._file = None


def run(args: argparse.Namespace) -> int:
    loaded = load_or_report(args.config)
    if loaded is None:
        return 78
    from agent.control.ctl import socket_path

    path = socket_path(loaded.config.gateway.state_dir)
    known = {d.id for d in loaded.config.devices}
    unknown = [d for d in args.devices if d not in known]
    if unknown:
        print(
            f"cityedge: unknown device {', '.join(unknown)} (configured: "
            f"{', '.join(sorted(known))})",
            file=sys.stderr,
        )
        return 2
    req: dict[str, Any] = {"op": "snapshot"}
    if args.devices:
        req["devices"] = list(args.devices)
    link = Link(str(path))
    try:
        first = link.ask(req)
    except (OSError, ValueError) as exc:
        print(
            f"cityedge: no running agent answers on {path} "
            f"({getattr(exc, 'strerror', None) or exc}); is the service running? "
            "(systemctl status cityedge)",
            file=sys.stderr,
        )
        return 3
    if not first.get("ok"):
        print(f"cityedge: agent says: {first.get('error')}", file=sys.stderr)
        return 1
    from agent.cli.render import console

    con = console()
    view = View()
    if args.once or not con.is_terminal:
        try:
            con.print(view.frame(first))
            while not args.once:
                time.sleep(max(0.1, args.interval))
                con.rule(style="dim")
                con.print(view.frame(_ask(link, req)))
        except KeyboardInterrupt:
            pass
        finally:
            link.close()
        return 0
    from rich.live import Live

    try:
        with Live(view.frame(first), console=con, auto_refresh=False) as live:
            while True:
                time.sleep(max(0.1, args.interval))
                live.update(view.frame(_ask(link, req)), refresh=True)
    except KeyboardInterrupt:
        pass
    finally:
        link.close()
    return 0


def _ask(link: Link, req: Mapping[str, Any]) -> dict[str, Any]:
    """The next snapshot, or a reply saying why there is none (the view keeps going)."""
    try:
        return link.ask(req)
    except (OSError, ValueError) as exc:
        return {"ok": False, "error": f"agent not answering ({exc}); retrying"}


class View:
    """Renders snapshots; remembers the previous values to highlight what changed."""

    def __init__(self) -> None:
        self._last: dict[tuple[str, str], Any] = {}
        self._snap: Mapping[str, Any] | None = None

    def frame(self, snap: Mapping[str, Any]) -> Any:
        from rich.console import Group
        from rich.text import Text

        from agent.cli.render import age_text, count_text

        error = None
        if not snap.get("ok"):
            error = Text(f"  {snap.get('error')}", style="bold red")
            if self._snap is None:
                return error
            snap = self._snap  # keep the last picture under the warning
        self._snap = snap
        head = Text()
        head.append(f"gateway {snap.get('gateway')}", style="bold")
        head.append(f"  {snap.get('at', '')}  up {age_text(snap.get('uptimeS'))}", style="dim")
        parts: list[Any] = [head]
        if error is not None:
            parts.append(error)
        devices: Sequence[Mapping[str, Any]] = snap.get("devices") or []
        for bus in snap.get("buses") or []:
            mine = [d for d in devices if d.get("bus") == bus.get("id")]
            if not mine:
                continue
            title = Text(f"\n{bus['id']}", style="bold")
            title.append(f"  {bus.get('endpoint')}  ", style="dim")
            if bus.get("connected"):
                title.append("link up", style="green")
            elif bus.get("connected") is False:
                title.append(f"link DOWN: {bus.get('linkError') or '?'}", style="bold red")
            title.append(f"  {count_text(bus.get('requests'))} requests", style="dim")
            parts.append(title)
            parts.append(self._devices(mine))
        return Group(*parts)

    def _devices(self, devices: Sequence[Mapping[str, Any]]) -> Any:
        from rich.columns import Columns
        from rich.text import Text

        from agent.cli.render import age_text, state_text, table, unit_label, value_text

        t = table("device", "state", "last ok", "polls", "values", right=("last ok", "polls"))
        for d in devices:
            cells: list[Text] = []
            for v in d.get("values") or []:
                key = (str(d["id"]), str(v["point"]))
                shown = value_text(v.get("value"))
                changed = key in self._last and self._last[key] != shown
                self._last[key] = shown
                style = "red" if v.get("quality") != "good" else "bold"
                cell = Text(f"{v['point']} ", style="dim")
                cell.append(shown, style="reverse " + style if changed else style)
                if unit_label(v.get("unit")):
                    cell.append(f" {unit_label(v.get('unit'))}")
                cells.append(cell)
            values = Columns(cells, padding=(0, 2))
            t.add_row(
                str(d["id"]),
                state_text(d.get("state"), d.get("reason"), d.get("detail")),
                age_text(d.get("lastSuccessAgeS")),
                str(d.get("polls", 0)),
                values,
            )
        return t
