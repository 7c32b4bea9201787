"""decode/normalize (drivers) -> filters (ext) -> sequence numbers -> sinks.

The pipeline is called by bus tasks once per device poll. It runs the device's filter bank over
the whole batch, stamps each surviving reading with the gateway-wide sequence number and hands
the batch to every sink. A sink's ``submit`` returning means the batch is accepted (written or
committed), so a reading counted in ``delivered`` is never lost by a shutdown.

Device state transitions (drivers/device_state.py) travel the same queues as the readings, so
each sink sees them in order: a sink that hears them (``StatusSink``,
agent/forward/sinks/base.py) gets each once every reading its device emitted before it has
been submitted, and before any later reading of that device (the MQTT sink then publishes it
in that place). Order between devices is not kept: it means nothing to a platform.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Coroutine, Sequence
from typing import TYPE_CHECKING, Any

from agent.forward.sinks.base import Sink, StatusSink
from drivers.base import DeviceBinding
from drivers.core.reading import Reading
from drivers.device_state import Transition

if TYPE_CHECKING:
    from agent.ingest.filtering import DeviceFilters

log = logging.getLogger("cityedge.pipeline")
MAX_QUEUED = 1000  # batches per sink before the bus owners feel back-pressure
MAX_COALESCED = 20_000  # readings handed to a sink in one submit


class Pipeline:
    def __init__(
        self, sinks: Sequence[Sink], bindings: Sequence[DeviceBinding], first_seq: int | None = None
    ) -> None:
        self.sinks = list(sinks)
        self._feeds = [_Feed(s) for s in self.sinks]
        self.filters: dict[str, DeviceFilters] = {}
        self.set_bindings(bindings)
        # Seeded from the clock (µs) so sequence numbers keep increasing across restarts
        # without a write per reading; the outbox row id is the durable delivery id.
        self._seq = first_seq if first_seq is not None else time.time_ns() // 1000
        self.received = 0
        self.forwarded = 0
        self.last_emit = 0.0  # monotonic; the watchdog checks poll progress with it
        self.transitions = 0  # device state transitions handed to the sinks
        self.last_values: dict[tuple[str, str], Reading] = {}
        # Marks readings taken while the wall clock is not synchronised (agent.ops.timesync).
        self.time_mark: Callable[[Sequence[Reading]], Sequence[Reading]] | None = None

    @property
    def seq(self) -> int:
        return self._seq

    def set_bindings(self, bindings: Sequence[DeviceBinding]) -> None:
        """(Re)build filter banks; unchanged chains keep their state (config reload)."""
        try:
            from agent.ingest.filtering import DeviceFilters
        except ImportError:  # filters not available: pass-through
            return
        new: dict[str, DeviceFilters] = {}
        for b in bindings:
            f = DeviceFilters(b)
            old = self.filters.get(b.id)
            if old is not None:
                f.carry_state_from(old)
            new[b.id] = f
        self.filters = new

    async def emit(self, binding: DeviceBinding, batch: Sequence[Reading]) -> None:
        self.last_emit = time.monotonic()
        self.received += len(batch)
        if self.time_mark is not None:
            batch = self.time_mark(batch)
        for r in batch:  # what the device said last (pre-filter), for status / read
            self.last_values[(r.device_id, r.point)] = r
        flt = self.filters.get(binding.id)
        out = flt.apply(batch) if flt is not None else list(batch)
        self.forwarded += len(out)
        if not out:
            return
        # The pipeline owns readings between the driver and the sinks: it stamps the sequence
        # in place (dataclasses.replace cost as much as decoding the value, see PROFILE.md).
        # Sinks serialize at submit, so nothing ever sees a reading's seq change afterwards.
        seq = self._seq
        for r in out:
            seq += 1
            r.seq = seq
        self._seq = seq
        for feed in self._feeds:
            await feed.queue.put(out)  # waits only when a sink is MAX_QUEUED batches behind

    async def device_state(self, transition: Transition) -> None:
        """A device changed state: to every sink, in order with the readings."""
        self.transitions += 1
        for feed in self._feeds:
            await feed.queue.put(transition)

    @property
    def suppressed(self) -> int:
        """Net of samples a swinging door held back and released with a later batch."""
        return max(0, self.received - self.forwarded)

    @property
    def delivered(self) -> int:
        """Readings accepted (written / committed) by every sink."""
        return min((f.delivered for f in self._feeds), default=self.forwarded)

    def feeders(self) -> list[tuple[str, Callable[[], Coroutine[Any, Any, None]]]]:
        """One long-lived task per sink (started by the runtime in its TaskGroup)."""
        return [(f"feed:{f.sink.name}", f.run) for f in self._feeds]

    async def drain(self) -> None:
        """Return once every queued batch has been accepted by its sink (shutdown)."""
        await asyncio.gather(*(f.queue.join() for f in self._feeds))

    def undelivered(self) -> int:
        """Readings still queued for a sink (after a shutdown whose grace ran out)."""
        n = 0
        for f in self._feeds:
            while not f.queue.empty():
                item = f.queue.get_nowait()
                if not isinstance(item, Transition):
                    n += len(item)
        return n


class _Feed:
    """Hands batches to one sink without making the bus owner wait for the sink.

    The outbox accepts a batch once it is committed (group commit: up to ~0.1 s plus an
    fsync). Awaiting that in the bus task capped a bus at about ten device polls a second;
    here the bus only enqueues, and whatever queued up while a commit ran is handed to the
    sink as one batch, so a slow commit makes batches larger, not polls later.
    """

    def __init__(self, sink: Sink) -> None:
        self.sink = sink
        self.queue: asyncio.Queue[list[Reading] | Transition] = asyncio.Queue(MAX_QUEUED)
        self.delivered = 0
        self._status = sink.device_status if isinstance(sink, StatusSink) else None

    async def run(self) -> None:
        while True:
            await self._hand_over(await self.queue.get())

    async def _hand_over(self, item: list[Reading] | Transition) -> None:
        """Everything queued, in one submit where order allows. Order matters per device
        only: a transition is heard after the readings its device emitted before it and
        before those after it. So a transition of a device with no readings in the batch
        being gathered is heard at once (at start-up every device's "online" precedes its
        first poll: splitting there cost one commit wait per device, 5 s for 50 devices,
        while their readings piled up in memory); only the device's own earlier readings
        make the batch go first."""
        q = self.queue
        taken = 1
        batch: list[Reading] = []
        devices: set[str] = set()
        try:
            while True:
                if isinstance(item, Transition):
                    if item.device_id in devices:
                        await self._submit(batch)
                        batch, devices = [], set()
                    self._hear(item)
                elif item:
                    batch.extend(item)
                    devices.update({r.device_id for r in item})
                if q.empty() or len(batch) >= MAX_COALESCED:
                    break
                item = q.get_nowait()
                taken += 1
            if batch:
                await self._submit(batch)
        finally:
            for _ in range(taken):
                q.task_done()

    async def _submit(self, batch: list[Reading]) -> None:
        await self.sink.submit(batch)
        self.delivered += len(batch)

    def _hear(self, transition: Transition) -> None:
        if self._status is None:
            return
        try:
            self._status(transition)
        except Exception:
            log.exception("sink %s: device status hook failed", self.sink.name)
