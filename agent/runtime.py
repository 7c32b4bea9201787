"""The daemon: one root TaskGroup owning every bus, sink and housekeeping task.

Shutdown (SIGTERM/SIGINT or the injected trigger): stop polling first, then give the sinks the
rest of the grace period to flush what is in flight, then cancel whatever is left. Readings a
sink has accepted are never dropped by a shutdown.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import time
from collections.abc import Callable, Coroutine, Sequence
from pathlib import Path
from typing import Any

from agent.config.loader import LoadedConfig, load_config
from agent.config.outputs import JsonLinesOutput
from agent.control.binding import CommandBinding
from agent.control.model import Command
from agent.control.router import CommandRouter
from agent.forward.encoders.base import CommandDecoder
from agent.forward.sinks.base import CommandSink, HealthSink, RebirthSink, Sink
from agent.forward.sinks.jsonl import JsonLinesSink
from agent.ingest.pipeline import Pipeline
from agent.ops import memory
from agent.ops.alarms import Alarms, supervise
from agent.ops.recent import RecentLog
from agent.ops.reload import ReloadResult, diff
from agent.ops.sdnotify import notify
from drivers.base import BusDriver, DeviceBinding, WriteResult, WriteStatus
from drivers.core.errors import ConfigError
from drivers.core.reading import Value, now_ms
from drivers.registry import create_driver

log = logging.getLogger("cityedge.runtime")

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_CONFIG = 78  # EX_CONFIG: the unit uses RestartPreventExitStatus=78 (a restart won't help)


def bindings_for(loaded: LoadedConfig) -> list[DeviceBinding]:
    gid = loaded.config.gateway.id
    here = loaded.config.gateway.location
    return [
        DeviceBinding(gid, d, loaded.profiles[d.profile], here)
        for d in loaded.config.devices
        if d.enabled
    ]


def build_sinks(loaded: LoadedConfig, bindings: Sequence[DeviceBinding]) -> list[Sink]:
    sinks: list[Sink] = []
    cfg = loaded.config
    for out in cfg.outputs:
        if isinstance(out, JsonLinesOutput):
            sinks.append(JsonLinesSink(out.id, out.path))
        else:
            from agent.forward.sinks.mqtt import MqttSink

            sinks.append(
                MqttSink(
                    out.id, out, cfg.gateway.id, bindings, Path(cfg.gateway.state_dir), cfg.secrets
                )
            )
    return sinks


class Agent:
    def __init__(
        self,
        loaded: LoadedConfig,
        *,
        sinks: Sequence[Sink] | None = None,
        on_reload: Callable[[], None] | None = None,
    ) -> None:
        self.loaded = loaded
        self.bindings = bindings_for(loaded)
        self.sinks = list(sinks) if sinks is not None else build_sinks(loaded, self.bindings)
        self._seq_file = Path(loaded.config.gateway.state_dir) / "seq"
        self.pipeline = Pipeline(self.sinks, self.bindings, first_seq=_first_seq(self._seq_file))
        self.drivers: dict[str, BusDriver] = {}
        for bus in loaded.config.buses:
            self._make_driver(bus.id)
        self.shutdown = asyncio.Event()
        self.started_at = time.monotonic()
        self.ready_at: float | None = None
        self._on_reload = on_reload
        self.reloads = 0
        self.last_reload: ReloadResult | None = None
        self.reload_listeners: list[Callable[[ReloadResult], None]] = []
        self._reload_requests: asyncio.Queue[tuple[str, LoadedConfig | None]] = asyncio.Queue()
        self._reload_lock = asyncio.Lock()
        self._tg: asyncio.TaskGroup | None = None
        self._bus_tasks: dict[str, asyncio.Task[None]] = {}
        # Long-lived housekeeping services (metrics/health server, watchdog, control socket,
        # time-sync monitor...): (task name, coroutine factory), started in the root TaskGroup
        # under supervision (a failure is an alarm, never the end of collection) and
        # cancelled after the sinks have flushed.
        self.alarms = Alarms()
        self.services: list[tuple[str, Callable[[], Coroutine[Any, Any, None]]]] = []
        self.services.append(("seq-persist", self._persist_seq))
        if loaded.config.gateway.watch_config > 0:
            self.services.append(("config-watch", self._watch_config))
        from agent.control.ctl import ControlServer, listen_path

        self.control = ControlServer(self, listen_path(loaded.config.gateway.state_dir))
        self.services.append(("control", self.control.run))
        self.router: CommandRouter | None = None
        self._install_commands()
        # the last warnings, for the commissioning page (control socket `warnings`)
        self.recent = RecentLog()
        for sink in self.sinks:  # per-device status in the MQTT health message
            if isinstance(sink, HealthSink):
                sink.set_status_provider(self.device_status)
                sink.set_alarm_provider(self.alarm_texts)

    def alarm_texts(self) -> list[str]:
        return [str(a) for a in self.alarms.active()]

    def device_status(self) -> dict[str, Any]:
        from agent.control.ctl import devices_of

        return devices_of(self)

    def _install_commands(self) -> None:
        """The command router (always: the technician CLI writes through it too, on the local
        channel) and its MQTT bindings on every MQTT output (agent/control/binding.py);
        ``[commands] enabled = false`` installs no MQTT binding at all."""
        from agent.control.setup import build_router

        cfg = self.loaded.config
        mqtt = [s for s in self.sinks if isinstance(s, CommandSink)]
        rebirths = [s for s in self.sinks if isinstance(s, RebirthSink)]

        async def ping(_: Command) -> str | None:
            return None

        async def rebirth(_: Command) -> str | None:
            for s in rebirths:
                s.rebirth()
            return None

        async def reload(_: Command) -> str | None:
            result = await self.reload("command")
            return None if result.ok else "; ".join(result.errors[:5])

        async def config(cmd: Command) -> str | None:
            from agent.control.remote_config import apply_remote_config

            return await apply_remote_config(self, cmd.id, cmd.extra["toml"])

        self.router = build_router(
            cfg,
            self.bindings,
            self.write,
            {"ping": ping, "rebirth": rebirth, "reload": reload, "config": config},
        )
        if not cfg.commands.enabled:
            return
        for s in mqtt:
            spb = s.encoder if isinstance(s.encoder, CommandDecoder) else None
            binding = CommandBinding(self.router, cfg.gateway.id, s.output, s.publish, spb)
            binding.install(s.add_handler)

    def _make_driver(self, bus_id: str) -> None:
        bus = next(b for b in self.loaded.config.buses if b.id == bus_id)
        devs = [b for b in self.bindings if b.device.bus == bus.id]
        if devs:
            # readings and device state transitions reach the sinks through the pipeline, in
            # order (drivers/device_state.py, agent/ingest/pipeline.py)
            self.drivers[bus.id] = create_driver(
                bus, devs, self.pipeline.emit, self.pipeline.device_state
            )
        else:
            self.drivers.pop(bus.id, None)

    @property
    def grace(self) -> float:
        return self.loaded.config.gateway.shutdown_grace

    def request_shutdown(self) -> None:
        self.shutdown.set()

    def request_reload(self, source: str, loaded: LoadedConfig | None = None) -> None:
        self._reload_requests.put_nowait((source, loaded))

    def install_signal_handlers(self) -> None:
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, self.request_shutdown)
        loop.add_signal_handler(signal.SIGINT, self.request_shutdown)
        loop.add_signal_handler(signal.SIGHUP, self._sighup)

    def _sighup(self) -> None:
        log.info("SIGHUP: reload requested")
        self.request_reload("SIGHUP")
        if self._on_reload is not None:
            self._on_reload()

    async def write(self, device_id: str, point: str, value: Value, timeout: float) -> WriteResult:
        """Route a write to the owner task of the device's bus (commands, CLI, remote)."""
        binding = next((b for b in self.bindings if b.id == device_id), None)
        driver = self.drivers.get(binding.device.bus) if binding else None
        if binding is None or driver is None:
            return WriteResult(WriteStatus.REJECTED, f"unknown device '{device_id}'")
        return await driver.write(device_id, point, value, timeout)

    async def run(self) -> None:
        logging.getLogger().addHandler(self.recent)
        try:
            await self._run()
        finally:
            logging.getLogger().removeHandler(self.recent)

    async def _run(self) -> None:
        async with asyncio.TaskGroup() as tg:
            self._tg = tg
            sink_tasks = [tg.create_task(s.run(), name=f"sink:{s.name}") for s in self.sinks]
            feed_tasks = [tg.create_task(f(), name=n) for n, f in self.pipeline.feeders()]
            for bid in list(self.drivers):
                self._start_bus(bid)
            ready_task = tg.create_task(self._announce_ready(), name="ready")
            reload_task = tg.create_task(self._reloader(), name="reloader")
            svc_tasks = [
                tg.create_task(supervise(name, factory, self.alarms), name=name)
                for name, factory in self.services
            ]
            await self.shutdown.wait()
            notify("STOPPING=1")
            log.info("shutting down (grace %.1f s)", self.grace)
            deadline = time.monotonic() + self.grace
            reload_task.cancel()
            bus_tasks = list(self._bus_tasks.values())
            for t in bus_tasks:
                t.cancel()
            if bus_tasks:
                await asyncio.wait(bus_tasks, timeout=max(0.0, deadline - time.monotonic()))
            try:  # what the buses read is handed to the sinks before they flush and close
                await asyncio.wait_for(self.pipeline.drain(), max(0.1, deadline - time.monotonic()))
            except TimeoutError:
                log.error("sinks did not accept every reading within the grace period")
            # No batch may reach a sink once it closes (a bus that outlived the grace can
            # still emit): the feeders stop first, and what they still held is counted.
            for t in feed_tasks:
                t.cancel()
            await asyncio.wait(feed_tasks)
            if left := self.pipeline.undelivered():
                log.error("%d reading(s) not handed to a sink before the shutdown", left)
            for s in self.sinks:
                try:
                    await asyncio.wait_for(s.close(), max(0.1, deadline - time.monotonic()))
                except TimeoutError:
                    log.error("sink %s did not flush within the grace period", s.name)
            for t in (*sink_tasks, *svc_tasks):
                t.cancel()
            log.info(
                "stopped: %d readings read, %d delivered to %d sink(s), %d suppressed by filters",
                self.pipeline.received,
                self.pipeline.delivered,
                len(self.sinks),
                self.pipeline.suppressed,
            )
            ready_task.cancel()
        if self.router is not None:
            self.router.store.close()

    def _start_bus(self, bus_id: str) -> None:
        assert self._tg is not None
        driver = self.drivers[bus_id]
        self._bus_tasks[bus_id] = self._tg.create_task(driver.run(), name=f"bus:{bus_id}")

    async def _stop_bus(self, bus_id: str) -> None:
        task = self._bus_tasks.pop(bus_id, None)
        if task is not None:
            task.cancel()
            await asyncio.wait([task])
        self.drivers.pop(bus_id, None)

    async def _reloader(self) -> None:
        while True:
            source, loaded = await self._reload_requests.get()
            try:
                await self.reload(source, loaded)
            except Exception as exc:  # a bug must not stop collection: the old config stays
                log.error("reload (%s) failed, nothing changed", source, exc_info=exc)

    async def reload(self, source: str, loaded: LoadedConfig | None = None) -> ReloadResult:
        """Validate and apply; a refused config changes nothing (the reason is logged and kept
        in ``last_reload`` for the health message)."""
        async with self._reload_lock:
            self.reloads += 1
            if loaded is None:
                try:
                    main = self.loaded.files[0]
                    loaded = await asyncio.to_thread(load_config, main, self.loaded.dropin_dir)
                except ConfigError as exc:
                    result = ReloadResult(
                        False, source, [str(i) for i in exc.issues], None, now_ms()
                    )
                    self._reloaded(result)
                    log.error(
                        "reload (%s) refused, nothing changed:\n  %s",
                        source,
                        "\n  ".join(result.errors),
                    )
                    return result
            new_bindings = bindings_for(loaded)
            plan = diff(self.loaded, self.bindings, loaded, new_bindings)
            for bid in (*plan.stop, *plan.restart):
                await self._stop_bus(bid)
            self.loaded = loaded
            self.bindings = new_bindings
            self.pipeline.set_bindings(new_bindings)
            if self.router is not None:
                self.router.set_bindings(new_bindings)
            for bid in (*plan.start, *plan.restart):
                self._make_driver(bid)
                if bid in self.drivers and self._tg is not None:
                    self._start_bus(bid)
            self._config_mtimes = _mtimes(loaded.files)
            result = ReloadResult(True, source, [], plan, now_ms())
            self._reloaded(result)
            log.info(
                "reload (%s) applied: %d bus(es) started, %d stopped, %d restarted, %d unchanged%s",
                source,
                len(plan.start),
                len(plan.stop),
                len(plan.restart),
                len(plan.unchanged),
                f"; restart the agent to apply {', '.join(plan.needs_restart)}"
                if plan.needs_restart
                else "",
            )
            return result

    async def _persist_seq(self) -> None:
        """Keep a high-water mark of the reading sequence so it never goes backwards, even
        after a reboot with a wrong clock (gateways without RTC before NTP)."""
        try:
            while True:
                await asyncio.sleep(10.0)
                await asyncio.to_thread(_write_seq, self._seq_file, self.pipeline.seq)
        finally:
            _write_seq(self._seq_file, self.pipeline.seq)

    def _reloaded(self, result: ReloadResult) -> None:
        self.last_reload = result
        for listener in self.reload_listeners:
            try:
                listener(result)
            except Exception:
                log.exception("reload listener failed")

    async def _watch_config(self) -> None:
        """Reload when a config or profile file changes (mtime/size poll: cheap, no inotify
        dependency, works on every filesystem a technician may use)."""
        self._config_mtimes = _mtimes(self.loaded.files)
        interval = self.loaded.config.gateway.watch_config
        while True:
            await asyncio.sleep(interval)
            current = _mtimes(self.loaded.files)
            if current != self._config_mtimes:
                self._config_mtimes = current
                log.info("config file changed on disk: reloading")
                self.request_reload("file change")

    async def _announce_ready(self) -> None:
        from agent.control.security import config_warnings, exposed_secret_files

        for warning in (
            *exposed_secret_files(self.loaded.config),
            *config_warnings(self.loaded.config),
        ):
            log.warning("%s", warning)
        drivers = list(self.drivers.values())

        async def opened() -> None:
            # one by one, not gather(): a gather future cancelled with the agent would be
            # logged as "exception was never retrieved"
            for d in drivers:
                await d.ready()

        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(opened(), timeout=10.0)
        self.ready_at = time.monotonic()
        memory.settle()
        notify("READY=1")
        log.info(
            "ready: %d bus(es), %d device(s), %d output(s) in %.2f s",
            len(self.drivers),
            len(self.bindings),
            len(self.sinks),
            self.ready_at - self.started_at,
        )


def _mtimes(files: Sequence[str]) -> dict[str, tuple[float, int]]:
    out = {}
    for f in files:
        try:
            st = os.stat(f)
            out[f] = (st.st_mtime, st.st_size)
        except OSError:
            out[f] = (0.0, -1)
    return out


SEQ_MARGIN = 10_000_000  # more than can be produced between two persists of the mark


def _first_seq(path: Path) -> int:
    clock = time.time_ns() // 1000
    try:
        persisted = int(path.read_text().strip())
    except (OSError, ValueError):
        return clock
    return max(clock, persisted + SEQ_MARGIN)


def _write_seq(path: Path, seq: int) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(f"{seq}\n")
        os.replace(tmp, path)
    except OSError as exc:
        log.warning("cannot persist the sequence mark in %s: %s", path, exc.strerror or exc)
