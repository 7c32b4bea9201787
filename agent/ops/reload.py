"""Config reload: validate the new config, then apply only the difference.

A bus restarts only when its own settings or the set of its devices (config or resolved
profile) changed; every other bus keeps polling without a gap. Filter state is carried over for
points whose chain did not change, and the outbox is never touched. Changes to outputs or the
gateway section cannot be applied live: they are reported (restart needed) and the rest applies.
A config that does not validate changes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from agent.config.loader import LoadedConfig
from drivers.base import DeviceBinding


@dataclass(frozen=True)
class ReloadPlan:
    start: tuple[str, ...] = ()  # bus ids new in the config
    stop: tuple[str, ...] = ()  # bus ids gone from the config
    restart: tuple[str, ...] = ()  # bus ids whose settings or devices changed
    unchanged: tuple[str, ...] = ()
    needs_restart: tuple[str, ...] = ()  # sections that only a process restart applies

    @property
    def empty(self) -> bool:
        return not (self.start or self.stop or self.restart)


@dataclass
class ReloadResult:
    ok: bool
    source: str  # "SIGHUP", "file change", "mqtt:<id>"
    errors: list[str] = field(default_factory=list)
    plan: ReloadPlan | None = None
    at_ms: int = 0

    def summary(self) -> str:
        if not self.ok:
            return f"reload ({self.source}) refused: " + "; ".join(self.errors[:5])
        p = self.plan
        if p is None:
            return f"reload ({self.source}) applied"
        text = (
            f"reload ({self.source}) applied: {len(p.start)} started, {len(p.stop)} "
            f"stopped, {len(p.restart)} restarted, {len(p.unchanged)} unchanged"
        )
        if p.needs_restart:
            text += f"; restart needed for {', '.join(p.needs_restart)}"
        return text

    def to_dict(self) -> dict[str, object]:
        d: dict[str, object] = {"ok": self.ok, "source": self.source, "at": self.at_ms}
        if self.errors:
            d["errors"] = self.errors
        if self.plan is not None:
            d.update(
                started=list(self.plan.start),
                stopped=list(self.plan.stop),
                restarted=list(self.plan.restart),
                unchanged=len(self.plan.unchanged),
                needs_restart=list(self.plan.needs_restart),
            )
        return d


def _bus_devices(
    loaded: LoadedConfig, bindings: list[DeviceBinding], bus_id: str
) -> list[tuple[object, object]]:
    return [(b.device, b.profile) for b in bindings if b.device.bus == bus_id]


def diff(
    old: LoadedConfig,
    old_bindings: list[DeviceBinding],
    new: LoadedConfig,
    new_bindings: list[DeviceBinding],
) -> ReloadPlan:
    old_buses = {b.id: b for b in old.config.buses}
    new_buses = {b.id: b for b in new.config.buses}
    start, stop, restart, same = [], [], [], []
    for bid, bus in new_buses.items():
        if bid not in old_buses:
            start.append(bid)
        elif old_buses[bid] != bus or _bus_devices(old, old_bindings, bid) != _bus_devices(
            new, new_bindings, bid
        ):
            restart.append(bid)
        else:
            same.append(bid)
    stop = [bid for bid in old_buses if bid not in new_buses]
    needs = []
    if old.config.outputs != new.config.outputs:
        needs.append("outputs")
    if old.config.gateway != new.config.gateway:
        needs.append("gateway")
    if old.config.secrets != new.config.secrets:
        needs.append("secrets")
    if old.config.commands != new.config.commands:
        needs.append("commands")  # policies, keys and the store are set up at start
    return ReloadPlan(tuple(start), tuple(stop), tuple(restart), tuple(same), tuple(needs))
