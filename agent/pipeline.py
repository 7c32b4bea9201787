"""decode/normalize (drivers) -> filters (ext) -> sequence numbers -> sinks.

The pipeline is called by bus tasks once per device poll. It runs the device's filter bank over
the whole batch, stamps each surviving reading with the gateway-wide sequence number and hands
the batch to every sink. A sink's ``submit`` returning means the batch is accepted (written or
committed), so a reading counted in ``delivered`` is never lost by a shutdown.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from agent.reading import Reading
from agent.sinks.base import Sink
from drivers.base import DeviceBinding

if TYPE_CHECKING:
    from agent.filtering import DeviceFilters

log = logging.getLogger("cityedge.pipeline")
_set = object.__setattr__


class Pipeline:
    def __init__(
        self, sinks: Sequence[Sink], bindings: Sequence[DeviceBinding], first_seq: int | None = None
    ) -> None:
        self.sinks = list(sinks)
        self.filters: dict[str, DeviceFilters] = {}
        self.set_bindings(bindings)
        # Seeded from the clock (µs) so sequence numbers keep increasing across restarts
        # without a write per reading; the outbox row id is the durable delivery id.
        self._seq = first_seq if first_seq is not None else time.time_ns() // 1000
        self.received = 0
        self.delivered = 0
        self.suppressed = 0
        self.forwarded = 0
        self.last_emit = 0.0  # monotonic; the watchdog checks poll progress with it
        self.last_values: dict[tuple[str, str], Reading] = {}
        # Marks readings taken while the wall clock is not synchronised (agent.timesync).
        self.time_mark: Callable[[Sequence[Reading]], Sequence[Reading]] | None = None

    @property
    def seq(self) -> int:
        return self._seq

    def set_bindings(self, bindings: Sequence[DeviceBinding]) -> None:
        """(Re)build filter banks; unchanged chains keep their state (config reload)."""
        try:
            from agent.filtering import DeviceFilters
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
        # a swinging door may release a held-back sample with a later batch: count net
        self.forwarded += len(out)
        self.suppressed = max(0, self.received - self.forwarded)
        if not out:
            return
        # The pipeline owns readings between the driver and the sinks: it stamps the sequence
        # in place (dataclasses.replace cost as much as decoding the value, see PROFILE.md).
        # Sinks serialize at submit, so nothing ever sees a reading's seq change afterwards.
        seq = self._seq
        for r in out:
            seq += 1
            _set(r, "seq", seq)
        self._seq = seq
        stamped = out
        for sink in self.sinks:
            await sink.submit(stamped)
        self.delivered += len(stamped)
