"""What a storage fault looks like from outside: /health, the metrics and `cityedge status`
reading a real outbox that cannot write, drops, and has set a damaged file aside."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

from agent.cli.render import count_text
from agent.cli.views import outbox_cells
from agent.control.ctl import status_of
from agent.forward.mqtt.stats import LinkStats, MqttSinkStats
from agent.forward.outbox import Outbox
from agent.ops.health import HealthReport
from agent.ops.metrics import make_registry, render
from tests.agent.forward.disk import damage, tmpfs
from tests.agent.forward.test_outbox import running
from tests.agent.forward.test_outbox_faults import noisy
from tests.agent.ops.fakes import Clock, FakeAgent


class OutboxSink:
    """An output whose statistics are a real outbox's (the MQTT sink's shape)."""

    def __init__(self, ob: Outbox) -> None:
        self.name = "up"
        self.ob = ob

    def stats(self) -> MqttSinkStats:
        link = LinkStats(connected=True)
        return MqttSinkStats.of(self.name, link, self.ob.stats(), kind=type(self).__name__)


def health(agent: FakeAgent) -> dict[str, object]:
    return HealthReport(agent, gateway_id="gw", mono=Clock(1010.0), wall=Clock(1.79e9)).document()


async def test_unwritable_outbox_fails_health_and_shows_everywhere(tmp_path: Path) -> None:
    with tmpfs(tmp_path / "fs", "2m", ro=True) as d:
        ro = Outbox(d / "ob.sqlite", commit_interval=0.005, memory_bytes=4096)
        async for ob in running(ro):
            for k in range(10):
                await ob.submit([noisy(k * 50 + i) for i in range(50)])
            agent = FakeAgent({"tcp": {"m": 5}})
            agent.sinks.append(OutboxSink(ob))
            doc = health(agent)
            out = doc["outputs"]["up"]["outbox"]  # type: ignore[index]
            assert doc["status"] == "failing"
            assert any("cannot write" in r and str(d) in r for r in doc["reasons"])  # type: ignore[attr-defined]
            assert out["in_memory"] > 0 and out["dropped"] > 0 and "fault" in out
            assert any("memory buffer is full" in a for a in out["alarms"])
            text = render(make_registry(agent)).decode()
            assert 'cityedge_outbox_writable{output="up"} 0' in text
            assert 'cityedge_outbox_memory_readings{output="up"}' in text
            assert 'cityedge_outbox_budget_bytes{output="up"}' in text
            st = ob.stats()
            waiting, _, dropped, _ = outbox_cells(
                {
                    "depth": st.depth,
                    "drops": st.drops,
                    "inMemory": st.memory,
                    "bytes": st.bytes,
                    "budgetBytes": st.budget,
                }
            )
            assert dropped == count_text(st.drops) and "in memory" in waiting


async def test_a_set_aside_file_degrades_health_with_the_salvage_command(tmp_path: Path) -> None:
    path = tmp_path / "ob.sqlite"
    async for ob in running(Outbox(path, commit_interval=0.005)):
        await ob.submit([noisy(i) for i in range(100)])
    damage(path, 0, 100)
    async for ob in running(Outbox(path, commit_interval=0.005)):
        agent = FakeAgent({"tcp": {"m": 5}})
        agent.sinks.append(OutboxSink(ob))
        doc = health(agent)
        assert doc["status"] == "degraded"
        [reason] = [r for r in doc["reasons"] if "set aside" in r]  # type: ignore[attr-defined]
        assert "cityedge outbox salvage" in reason and str(path) in reason
        agent.loaded = SimpleNamespace(
            config=SimpleNamespace(gateway=SimpleNamespace(id="gw"), outputs=())
        )
        agent.started_at, agent.last_reload = 0.0, None
        status = status_of(agent)  # type: ignore[arg-type]  # what `cityedge status` prints
        assert status["sinks"][0]["outbox"]["alarms"] == [reason.removeprefix("output up: ")]
