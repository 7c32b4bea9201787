"""The commissioning page's test bed: real peers, all on loopback, in one event loop.

Two simulators (the lamps and the camera on bus ``street``; a water meter alone on bus
``water``, so stopping its simulator takes exactly one device offline), a real Mosquitto for
the uplink and its outbox, the agent itself (``agent.runtime.Agent``, its control socket in the
state directory) and the page's server (``agent.ui.serve``) talking to it over that socket.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

from agent.config import load_config
from agent.control.ctl import socket_path
from agent.runtime import Agent
from agent.ui.app import UiSettings
from agent.ui.auth import LoginThrottle, Users, add_user
from agent.ui.serve import Listen, serve
from drivers.sim.server import SimSpec, SimulatorServer
from tests.conftest import MOSQUITTO, Mosquitto, free_port

PASSWORD = "correct horse battery staple"
METER_INTERVAL = 1.0
METER_TIMEOUT = 0.5
RETRIES = 1
# drivers/device_state.py: offline reported within max(2 x interval, (retries+1) x timeout + 1 s)
METER_BOUND = max(2 * METER_INTERVAL, (RETRIES + 1) * METER_TIMEOUT + 1.0)
UI_INTERVAL = 0.5

CONFIG = """\
[gateway]
id = "hn-cabinet-0042"
state_dir = "{state}"
watch_config = 0

[metrics]
enabled = false

[[buses]]
id = "street"
endpoint = "tcp://127.0.0.1:{street}"
timeout = 1.0
retries = {retries}

[[buses]]
id = "water"
endpoint = "tcp://127.0.0.1:{water}"
timeout = {meter_timeout}
retries = {retries}

[[devices]]
id = "lamp-1"
bus = "street"
profile = "cityedge/streetlight"
unit_id = 1
interval = 1.0

[[devices]]
id = "lamp-2"
bus = "street"
profile = "cityedge/streetlight"
unit_id = 2
interval = 1.0

[[devices]]
id = "cam-21"
bus = "street"
profile = "cityedge/camera"
unit_id = 21
interval = 1.0

[[devices]]
id = "meter-11"
bus = "water"
profile = "cityedge/water_meter"
unit_id = 11
interval = {meter_interval}

[[outputs]]
type = "mqtt"
id = "uplink"
brokers = [{{ url = "mqtt://127.0.0.1:{broker}" }}]
health_interval = 0
"""


@dataclass
class Stack:
    street: SimulatorServer
    water: SimulatorServer
    broker: Mosquitto
    agent: Agent
    url: str  # the page
    state: Path
    users: Path
    settings: UiSettings

    @property
    def audit(self) -> list[str]:
        path = self.state / "audit.jsonl"
        return path.read_text().splitlines() if path.exists() else []


@contextlib.asynccontextmanager
async def page(settings: UiSettings) -> AsyncIterator[str]:
    """The commissioning page served in this process on a free loopback port: its URL."""
    stop = asyncio.Event()
    ready: asyncio.Future[str] = asyncio.get_running_loop().create_future()
    ui_task = asyncio.create_task(
        serve(
            settings,
            Listen("127.0.0.1", 0),
            announce=lambda _: None,
            stop=stop,
            signals=False,
            on_ready=ready.set_result,
        ),
        name="ui",
    )
    try:
        yield await asyncio.wait_for(ready, 10)
    finally:
        stop.set()
        await asyncio.wait_for(ui_task, 10)


@contextlib.asynccontextmanager
async def stack(work: Path, *, login: bool = True) -> AsyncIterator[Stack]:
    """Everything up, the agent ready and every device polled once; torn down in reverse."""
    async with contextlib.AsyncExitStack() as up:
        mq = work / "mosquitto"
        mq.mkdir()
        broker = Mosquitto(mq, free_port(), False, None)
        user = ["user root"] if os.geteuid() == 0 else []
        broker.conf.write_text(
            "\n".join(
                [
                    *user,
                    f"log_dest file {broker.log}",
                    f"listener {broker.port} 127.0.0.1",
                    "allow_anonymous true",
                    "persistence false",
                ]
            )
            + "\n"
        )
        assert Path(MOSQUITTO).exists(), f"mosquitto not found at {MOSQUITTO}"
        broker.start()
        up.callback(broker.stop)
        street_spec = SimSpec(streetlights=(1, 2), water_meters=(), cameras=(21,))
        street = await up.enter_async_context(SimulatorServer(street_spec))
        water_spec = SimSpec(streetlights=(), water_meters=(11,), cameras=())
        water = await up.enter_async_context(SimulatorServer(water_spec))
        state = work / "state"
        cfg = work / "gateway.toml"
        cfg.write_text(
            CONFIG.format(
                state=state,
                street=street.port,
                water=water.port,
                broker=broker.port,
                retries=RETRIES,
                meter_timeout=METER_TIMEOUT,
                meter_interval=METER_INTERVAL,
            )
        )
        users = work / "ui_users"
        add_user(users, "alice", PASSWORD)
        agent = Agent(load_config(cfg))
        agent_task = asyncio.create_task(agent.run(), name="agent")

        async def stop_agent() -> None:
            agent.request_shutdown()
            await asyncio.wait_for(asyncio.gather(agent_task, return_exceptions=True), 15)

        up.push_async_callback(stop_agent)
        settings = UiSettings(
            socket_path(state),
            Users.load(users) if login else None,
            interval=UI_INTERVAL,
            throttle=LoginThrottle(per_client=3, overall=100),
        )
        url = await up.enter_async_context(page(settings))
        async with asyncio.timeout(20):
            polled = {"lamp-1", "lamp-2", "cam-21", "meter-11"}
            while {d for d, _ in agent.pipeline.last_values} != polled or agent.ready_at is None:
                await asyncio.sleep(0.05)
        yield Stack(street, water, broker, agent, url, state, users, settings)
