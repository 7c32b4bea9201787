"""Runtime semantics with a scripted bus driver: readiness, shutdown flush, sd_notify."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Sequence
from pathlib import Path

import pytest

from agent.config import load_config
from agent.ops.observe import SinkStats
from agent.runtime import Agent
from drivers.base import BusStats, DeviceBinding, Emit, StateListener, WriteResult, WriteStatus
from drivers.core.reading import Reading, now_ms
from drivers.device_state import Reason, State, Transition


class ScriptedBus:
    """Emits one batch per device every `period` seconds, like a bus owner task would."""

    def __init__(
        self,
        bus_id: str,
        devices: Sequence[DeviceBinding],
        emit: Emit,
        period: float = 0.01,
        on_state: StateListener | None = None,
    ) -> None:
        self.bus_id = bus_id
        self.stats = BusStats()
        self._devices = devices
        self._emit = emit
        self.on_state = on_state
        self._period = period
        self._ready = asyncio.Event()
        self.polls = 0

    async def ready(self) -> None:
        await self._ready.wait()

    async def write(
        self, device_id: str, point: str, value: object, timeout: float = 10.0
    ) -> WriteResult:
        return WriteResult(WriteStatus.REJECTED, "scripted")

    async def run(self) -> None:
        self._ready.set()
        while True:
            for b in self._devices:
                self.polls += 1
                r = Reading(
                    b.gateway_id,
                    b.id,
                    b.profile.kind,
                    "dim",
                    "dimmingLevel",
                    float(self.polls),
                    "%",
                    "P1",
                    now_ms(),
                )
                await self._emit(b, [r])
            await asyncio.sleep(self._period)


class SlowSink:
    """Accepts batches into memory; flushing on close takes a while (like a disk/network)."""

    def __init__(self, flush_delay: float = 0.05) -> None:
        self.name = "slow"
        self.pending: list[Reading] = []
        self.flushed: list[Reading] = []
        self.flush_delay = flush_delay

    async def submit(self, batch: Sequence[Reading]) -> None:
        self.pending.extend(batch)

    async def run(self) -> None:
        await asyncio.Event().wait()

    async def close(self) -> None:
        await asyncio.sleep(self.flush_delay)
        self.flushed.extend(self.pending)
        self.pending.clear()

    def stats(self) -> SinkStats:
        return SinkStats(name=self.name, kind=type(self).__name__, readings=len(self.flushed))


@pytest.fixture
def agent_cfg(cfgdir: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    buses: list[ScriptedBus] = []

    def factory(bus, devices, emit, on_state):
        d = ScriptedBus(bus.id, devices, emit, on_state=on_state)
        buses.append(d)
        return d

    monkeypatch.setattr("agent.runtime.create_driver", factory)
    return cfgdir / "gateway.toml"


async def test_shutdown_flushes_everything_accepted(agent_cfg: Path) -> None:
    loaded = load_config(agent_cfg)
    sink = SlowSink()
    agent = Agent(loaded, sinks=[sink])
    task = asyncio.create_task(agent.run())
    while agent.pipeline.delivered < 20:
        await asyncio.sleep(0.005)
    agent.request_shutdown()
    await asyncio.wait_for(task, timeout=agent.grace + 1)
    assert len(sink.flushed) == agent.pipeline.delivered >= 20
    assert not sink.pending
    seqs = [r.seq for r in sink.flushed]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)


async def test_ready_is_notified(
    agent_cfg: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = str(tmp_path / "notify.sock")
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    srv.bind(path)
    srv.setblocking(False)
    monkeypatch.setenv("NOTIFY_SOCKET", path)
    agent = Agent(load_config(agent_cfg), sinks=[SlowSink(0)])
    task = asyncio.create_task(agent.run())
    loop = asyncio.get_running_loop()
    msg = await asyncio.wait_for(loop.sock_recv(srv, 100), 5)
    assert msg == b"READY=1"
    assert agent.ready_at is not None
    agent.request_shutdown()
    await asyncio.wait_for(task, 5)
    assert await asyncio.wait_for(loop.sock_recv(srv, 100), 5) == b"STOPPING=1"
    srv.close()


async def test_sink_that_cannot_flush_is_bounded_by_grace(agent_cfg: Path) -> None:
    agent_cfg.write_text(
        agent_cfg.read_text().replace(
            'state_dir = "state"', 'state_dir = "state"\nshutdown_grace = 1.0'
        )
    )
    loaded = load_config(agent_cfg)
    assert loaded.config.gateway.shutdown_grace == 1.0
    sink = SlowSink(flush_delay=60)
    agent = Agent(loaded, sinks=[sink])
    task = asyncio.create_task(agent.run())
    await asyncio.sleep(0.05)
    t0 = asyncio.get_running_loop().time()
    agent.request_shutdown()
    await asyncio.wait_for(task, timeout=agent.grace + 2)
    assert asyncio.get_running_loop().time() - t0 <= agent.grace + 0.5


async def test_reload_applies_only_the_difference(agent_cfg: Path) -> None:
    agent = Agent(load_config(agent_cfg), sinks=[SlowSink(0)])
    task = asyncio.create_task(agent.run())
    while agent.pipeline.delivered < 10:
        await asyncio.sleep(0.005)
    bus1, rs485 = agent.drivers["bus1"], agent.drivers["rs485"]
    text = agent_cfg.read_text()
    agent_cfg.write_text(text.replace("unit_id = 2\n", "unit_id = 2\ninterval = 9\n"))
    result = await agent.reload("test")
    assert result.ok and result.plan is not None
    assert result.plan.restart == ("rs485",) and result.plan.unchanged == ("bus1",)
    assert agent.drivers["bus1"] is bus1 and agent.drivers["rs485"] is not rs485
    before = bus1.polls  # type: ignore[attr-defined]
    await asyncio.sleep(0.05)
    assert bus1.polls > before  # type: ignore[attr-defined]  # the unchanged bus kept polling

    agent_cfg.write_text(text.replace("unit_id = 2\n", "unit_id = 999\n"))
    bad = await agent.reload("test")
    assert not bad.ok and any("unit_id" in e for e in bad.errors)
    assert agent.last_reload is bad
    assert agent.loaded.config.devices[1].interval == 9  # nothing changed
    agent.request_shutdown()
    await asyncio.wait_for(task, 5)


def test_sequence_never_goes_backwards_after_a_clock_reset(tmp_path: Path) -> None:
    from agent.runtime import _first_seq, _write_seq

    mark = tmp_path / "seq"
    future = (time.time_ns() // 1000) * 2  # numbers issued while the clock was far ahead
    _write_seq(mark, future)
    assert _first_seq(mark) > future
    assert _first_seq(tmp_path / "missing") > 0


class SlowCommitSink(SlowSink):
    """Accepts a batch only after a slow commit, like the outbox's group commit + fsync."""

    def __init__(self) -> None:
        super().__init__(0)
        self.submits = 0

    async def submit(self, batch: Sequence[Reading]) -> None:
        await asyncio.sleep(0.2)
        self.submits += 1
        await super().submit(batch)


async def test_slow_sink_commit_does_not_slow_polling(agent_cfg: Path) -> None:
    sink = SlowCommitSink()
    agent = Agent(load_config(agent_cfg), sinks=[sink])
    task = asyncio.create_task(agent.run())
    await asyncio.sleep(0.6)
    assert agent.pipeline.received >= 40  # ~10 ms per poll, not 200 ms per poll
    assert sink.submits <= 4  # queued batches were coalesced into few commits
    agent.request_shutdown()
    await asyncio.wait_for(task, agent.grace + 1)
    assert len(sink.flushed) == agent.pipeline.delivered == agent.pipeline.received


class StatusSink(SlowSink):
    """A sink that wants device state transitions (Sparkplug DDEATH / DBIRTH, native device
    status): records them with how many readings it had been handed before each."""

    def __init__(self) -> None:
        super().__init__(0)
        self.status: list[tuple[int, Transition]] = []

    def device_status(self, transition: Transition) -> None:
        self.status.append((len(self.pending), transition))


async def test_sinks_hear_device_transitions_in_order_with_readings(agent_cfg: Path) -> None:
    """Transitions travel the readings' queues: a sink gets one after every reading the bus
    emitted before it, and exactly once."""
    sink = StatusSink()
    agent = Agent(load_config(agent_cfg), sinks=[sink])
    bus = agent.drivers["bus1"]
    task = asyncio.create_task(agent.run())
    while agent.pipeline.received < 10:
        await asyncio.sleep(0.005)
    assert bus.on_state is not None  # type: ignore[attr-defined]
    before = agent.pipeline.received
    t = Transition("lamp1", "bus1", State.OFFLINE, State.ONLINE, Reason.TIMEOUT, None, now_ms())
    await bus.on_state(t)  # type: ignore[attr-defined]
    while agent.pipeline.delivered < before + 10:
        await asyncio.sleep(0.005)
    agent.request_shutdown()
    await asyncio.wait_for(task, agent.grace + 1)
    assert [s for _, s in sink.status] == [t]
    assert sink.status[0][0] >= before  # every reading emitted before it came first


class ClosingSink(SlowSink):
    """Refuses batches once closed, as the outbox does. Its first submit hangs until the
    close begins (a commit stuck on a slow card), so the shutdown's drain runs out."""

    def __init__(self) -> None:
        super().__init__(flush_delay=0.5)
        self.closed = False
        self._closing = asyncio.Event()

    async def submit(self, batch: Sequence[Reading]) -> None:
        if self.closed:
            raise RuntimeError("submit after close")
        await self._closing.wait()
        await super().submit(batch)

    async def close(self) -> None:
        self.closed = True
        self._closing.set()
        await super().close()


async def test_a_sink_is_never_fed_after_it_closed(agent_cfg: Path) -> None:
    """A shutdown whose grace runs out while batches are queued: the feeders stop before the
    sinks close (a late submit used to hit a closed outbox and end the agent with a
    traceback), and what was still queued is counted in the log."""
    agent_cfg.write_text(
        agent_cfg.read_text().replace(
            'state_dir = "state"', 'state_dir = "state"\nshutdown_grace = 0.3'
        )
    )
    sink = ClosingSink()
    agent = Agent(load_config(agent_cfg), sinks=[sink])
    task = asyncio.create_task(agent.run())
    while agent.pipeline.received < 20:  # batches pile up behind the stuck submit
        await asyncio.sleep(0.01)
    agent.request_shutdown()
    await asyncio.wait_for(task, timeout=5)  # returns, no exception group
    assert sink.closed
