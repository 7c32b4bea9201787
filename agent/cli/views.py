"""What ``cityedge status`` and ``cityedge outbox`` print for people (``--json`` for machines).

Built from the control socket's ``status`` and ``snapshot`` replies (agent/control/ctl.py,
agent/control/snapshot.py) and from ``outbox`` statistics; docs/CLI.md shows examples.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from rich.columns import Columns
from rich.console import Console, Group, RenderableType
from rich.text import Text

from agent.cli.render import (
    age_text,
    bytes_text,
    count_text,
    since_age,
    state_text,
    table,
    with_unit,
)

STATUS_VALUES = 6  # last values shown per device in `status` (all of them: `cityedge read`)


def values_summary(values: Sequence[Mapping[str, Any]], limit: int = STATUS_VALUES) -> Columns:
    """The first values of a device as name/value cells that never break inside a pair."""
    cells = []
    for v in values[:limit]:
        style = "bold" if v.get("quality") == "good" else "red"
        cell = Text(f"{v['point']} ")
        cell.append(with_unit(v.get("value"), v.get("unit")), style=style)
        cells.append(cell)
    if len(values) > limit:
        cells.append(Text(f"… (+{len(values) - limit})", style="dim"))
    return Columns(cells, padding=(0, 2))


def devices_table(devices: Mapping[str, Mapping[str, Any]]) -> RenderableType:
    t = table(
        "device", "bus", "state", "since", "last ok", "polls", "timeouts",
        right=("since", "last ok", "polls", "timeouts"),
    )  # fmt: skip
    vals = table("device", "last values")
    notes: list[Text] = []
    for dev, st in devices.items():
        state = str(st.get("state") or ("online" if st.get("online") else "offline"))
        t.add_row(
            dev,
            str(st.get("bus", "")),
            state_text(state, st.get("reason"), st.get("detail")),
            age_text(since_age(st.get("since"))),
            age_text(st.get("lastSuccessAgeS")),
            count_text(st.get("polls")),
            count_text(st.get("timeouts")),
        )
        if st.get("values"):
            vals.add_row(dev, values_summary(st["values"]))
        for x in st.get("excluded") or []:
            notes.append(
                Text(
                    f"  {dev}: {x['what']} not polled ({x['reason']}) since {x['since']}, "
                    f"asked again in {age_text(x.get('retryInS'))}",
                    style="yellow",
                )
            )
    parts: list[RenderableType] = [t, *notes]
    if vals.row_count:
        parts += [Text(""), vals]
    return Group(*parts)


def outbox_cells(ob: Mapping[str, Any]) -> list[str]:
    """waiting, oldest, dropped, size of budget."""
    waiting = f"{count_text(ob.get('depth'))}"
    if ob.get("inMemory"):
        waiting += f" ({count_text(ob['inMemory'])} in memory)"
    size = bytes_text(ob.get("bytes"))
    if ob.get("budgetBytes"):
        size += f" of {bytes_text(ob['budgetBytes'])}"
    oldest = age_text(ob.get("oldestAgeS")) if ob.get("depth") else "—"
    return [waiting, oldest, count_text(ob.get("drops") or 0), size]


def outputs_table(sinks: Sequence[Mapping[str, Any]]) -> RenderableType:
    t = table(
        "output", "type", "link", "waiting", "oldest", "dropped", "disk",
        right=("waiting", "oldest", "dropped"),
    )  # fmt: skip
    notes: list[Text] = []
    for s in sinks:
        kind = str(s.get("type", ""))
        if s.get("encoding"):
            kind += f" ({s['encoding']})"
        if s.get("connected") is None:
            link = Text("—", style="dim")
        elif s["connected"]:
            link = Text("connected", style="green")
        else:
            link = Text("DISCONNECTED", style="bold red")
        if s.get("broker"):
            link.append(f" {s['broker']}", style="dim")
        ob = s.get("outbox")
        cells = outbox_cells(ob) if ob else ["—", "—", "—", "—"]
        t.add_row(str(s.get("name")), kind, link, *cells)
        if ob and ob.get("fault"):
            notes.append(Text(f"  {s.get('name')}: FAILING: {ob['fault']}", style="bold red"))
        for alarm in (ob or {}).get("alarms") or []:
            notes.append(Text(f"  {s.get('name')}: {alarm}", style="yellow"))
    return Group(t, *notes) if notes else t


def print_status(con: Console, reply: Mapping[str, Any]) -> None:
    head = Text()
    head.append(f"gateway {reply['gateway']}", style="bold")
    head.append(
        f"  up {age_text(reply.get('uptimeS'))}, {count_text(reply.get('readingsRead'))} "
        f"readings read, {count_text(reply.get('readingsDelivered'))} delivered"
    )
    con.print(head)
    for alarm in reply.get("alarms") or []:  # auxiliary services down (agent/ops/alarms.py)
        con.print(
            Text(f"ALARM {alarm['source']}: {alarm['message']} (since {alarm['since']})"),
            style="bold red",
        )
    devices = reply.get("devices") or {}
    states = [str(d.get("state")) for d in devices.values()]
    counts = ", ".join(f"{states.count(s)} {s}" for s in STATE_ORDER if states.count(s))
    con.print()
    con.print(Text(f"devices: {counts or 'none'}", style="bold"))
    con.print(devices_table(dict(sorted(devices.items()))))
    con.print()
    con.print(Text("outputs", style="bold"))
    con.print(outputs_table(reply.get("sinks") or []))
    if reply.get("lastReload"):
        rl = reply["lastReload"]
        con.print()
        ok = rl.get("ok", True) if isinstance(rl, Mapping) else True
        con.print(Text(f"last reload: {_reload_text(rl)}", style="" if ok else "red"))
    cmds = reply.get("commands")
    if cmds:
        counts = ", ".join(f"{cmds.get(k, 0)} {k}" for k in ("ok", "rejected", "failed", "timeout"))
        con.print(f"commands: {counts}")
        if cmds.get("storeDegraded"):
            con.print(Text(f"COMMAND STORE NOT DURABLE: {cmds['storeDegraded']}", style="bold red"))


STATE_ORDER = ("online", "degraded", "offline", "unknown")


def _reload_text(rl: Any) -> str:
    if not isinstance(rl, Mapping):
        return str(rl)
    from drivers.core.reading import iso_ms

    at = rl.get("at")
    when = iso_ms(int(at)) if isinstance(at, int | float) else str(at or "")
    what = "applied" if rl.get("ok", True) else "refused: " + "; ".join(rl.get("errors") or [])
    if rl.get("ok", True) and (rl.get("needs_restart") or []):
        what += f" (needs a restart: {', '.join(rl['needs_restart'])})"
    return f"{when} from {rl.get('source', '?')}: {what}"


def print_outbox(con: Console, stats: Mapping[str, Mapping[str, Any]]) -> None:
    t = table(
        "output", "waiting", "oldest", "newest", "dropped", "file", "last id",
        right=("waiting", "oldest", "newest", "dropped", "file", "last id"),
    )  # fmt: skip
    notes: list[Text] = []
    for out, st in stats.items():
        t.add_row(
            out,
            count_text(st.get("depth")),
            age_text(st.get("oldestAgeS")),
            age_text(st.get("newestAgeS")),
            count_text(st.get("drops")),
            bytes_text(st.get("bytes")),
            str(st.get("lastId", "—")),
        )
        if st.get("setAside"):
            notes.append(
                Text(f"  {out}: {st['setAside']} reading(s) set aside (unreadable)", "yellow")
            )
        for d in st.get("damagedFiles") or []:
            notes.append(
                Text(f"  {out}: damaged file set aside: {d} (cityedge outbox salvage)", "yellow")
            )
    con.print(Group(t, *notes) if notes else t)
