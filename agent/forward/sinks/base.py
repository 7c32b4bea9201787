"""The sink interface every output implements.

Contract: ``submit`` takes a batch from one poll of one device (already filtered, sequence
numbers assigned) and returns once the sink has *accepted* it: written for the JSON-lines sink,
committed to the durable outbox for MQTT. ``run`` is the sink's long-lived task (publisher loop,
periodic flush); it is started inside the root TaskGroup and must re-raise CancelledError.
``close`` flushes what is in flight within the shutdown grace period.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

from drivers.core.reading import Reading


@runtime_checkable
class Sink(Protocol):
    name: str

    async def submit(self, batch: Sequence[Reading]) -> None: ...

    async def run(self) -> None: ...

    async def close(self) -> None: ...
