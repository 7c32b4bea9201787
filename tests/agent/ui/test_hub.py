"""The page's poller (agent/ui/hub.py) against a scripted agent: the measured bus load, the
warnings it keeps, when it asks again for the plan and the devices' description, and what a
page sees of an agent that answers nonsense. (The real agent is in test_server.py.)"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from agent.ui.hub import ControlClient, Hub


class ScriptedAgent(ControlClient):
    """Answers the hub's requests from fields a test changes between polls."""

    def __init__(self) -> None:
        super().__init__(Path("/nonexistent"))
        self.uptime = 10.0
        self.busy = 0.0
        self.reload: dict[str, Any] | None = None
        self.warnings: list[dict[str, Any]] = []
        self.asked: list[str] = []
        self.broken = False

    async def call(self, req: dict[str, Any]) -> dict[str, Any]:
        op = req["op"]
        self.asked.append(op)
        if op == "status":
            if self.broken:
                return {"ok": True, "gateway": "gw"}  # no uptimeS, devices...
            return {
                "ok": True,
                "gateway": "gw",
                "uptimeS": self.uptime,
                "readingsRead": 1,
                "readingsDelivered": 1,
                "devices": {"lamp-1": {"state": "online", "bus": "b"}},
                "sinks": [],
                "lastReload": self.reload,
            }
        if op == "values":
            point = {"point": "dim", "value": 0.5, "quality": "good", "ageS": 0.1}
            if req.get("meta", True):
                point = {**point, "unit": "1", "writable": True, "observedAt": "x"}
            return {"ok": True, "devices": {"lamp-1": {"kind": "streetlight", "points": [point]}}}
        if op == "buses":
            return {
                "ok": True,
                "uptimeS": self.uptime,
                "buses": [{"id": "b", "busyS": self.busy, "connected": True}],
            }
        if op == "warnings":
            since = int(req.get("since") or 0)
            return {"ok": True, "warnings": [w for w in self.warnings if w["seq"] > since]}
        if op == "plan":
            return {"ok": True, "turnaroundS": 0.005, "buses": []}
        raise AssertionError(op)


def _warning(seq: int, message: str, count: int = 1) -> dict[str, Any]:
    return {"seq": seq, "level": "WARNING", "logger": "x", "message": message, "count": count}


async def test_measured_load_is_busy_time_over_the_last_ten_seconds() -> None:
    agent = ScriptedAgent()
    hub = Hub(agent)
    loads = []
    for _ in range(30):  # a poll a second; the bus is busy 0.2 s a second, then 0.5
        snap = await hub.poll_once()
        loads.append(snap["buses"][0]["load"])
        agent.uptime += 1.0
        agent.busy += 0.2 if agent.uptime < 25 else 0.5
    assert loads[0] is None  # one answer: no rate yet
    assert loads[5] == 0.2 and loads[14] == 0.2
    assert loads[-1] == 0.5  # ten seconds after the change, only the new rate is in the window


async def test_plan_and_description_once_per_config_and_after_a_restart() -> None:
    agent = ScriptedAgent()
    hub = Hub(agent)
    await hub.poll_once()
    await hub.poll_once()
    assert agent.asked.count("plan") == 1
    assert set(hub.last) == {"plan", "devices", "snapshot"}
    assert '"writable":true' in hub.last["devices"][1]  # the description...
    assert '"value"' not in hub.last["devices"][1]
    assert '"writable"' not in hub.last["snapshot"][1]  # ...is not repeated every second
    agent.reload = {"ok": True, "source": "SIGHUP"}
    await hub.poll_once()
    assert agent.asked.count("plan") == 2
    agent.uptime = 1.0  # the agent restarted between two polls (maybe with a new config)
    await hub.poll_once()
    assert agent.asked.count("plan") == 3


async def test_warnings_are_merged_newest_first_and_asked_since_the_last() -> None:
    agent = ScriptedAgent()
    hub = Hub(agent)
    agent.warnings = [_warning(1, "clock not synchronised"), _warning(2, "lamp-3 offline")]
    snap = await hub.poll_once()
    assert [w["message"] for w in snap["warnings"]] == ["lamp-3 offline", "clock not synchronised"]
    agent.warnings = [_warning(1, "clock not synchronised"), _warning(3, "lamp-3 offline", 2)]
    snap = await hub.poll_once()
    assert [(w["message"], w["count"]) for w in snap["warnings"]] == [
        ("lamp-3 offline", 2),
        ("clock not synchronised", 1),
    ]


async def test_an_agent_answering_nonsense_is_reported_not_a_crash() -> None:
    agent = ScriptedAgent()
    agent.broken = True
    snap = await Hub(agent).poll_once()
    assert snap["agent"]["reachable"] is False
    assert "unexpected answer from the agent" in snap["agent"]["error"]
