"""What a sink is, and what some sinks can do besides (typed seams, issue 20).

``Sink`` is what every output implements. ``submit`` takes a batch from one poll of one device
(already filtered, sequence numbers assigned) and returns once the sink has *accepted* it:
written for the JSON-lines sink, committed to the durable outbox for MQTT. ``run`` is the
sink's long-lived task (publisher loop, periodic flush); it is started inside the root
TaskGroup and must re-raise CancelledError. ``close`` flushes what is in flight within the
shutdown grace period. ``stats`` fills the one statistics record every observer reads
(``SinkStats``, agent/ops/observe.py).

The capabilities below are Protocols of their own. The runtime, the pipeline and the
operations code find them with ``isinstance`` against these runtime-checkable Protocols, once,
when they wire the sinks (never per reading), and a sink names the ones it implements among
its bases, so mypy checks every method against its contract:

- ``StatusSink``: hears each device state transition, in order with the readings
  (``device_status``; agent/ingest/pipeline.py);
- ``CommandSink``: carries commands: the command binding (agent/control/binding.py) subscribes
  through it and publishes its answers through it;
- ``RebirthSink``: re-sends what a (re)connect sends (the ``rebirth`` gateway command);
- ``HealthSink``: publishes a health message with every device's status;
- ``ClockFixSink``: stores readings, and fixes the pre-sync ones when the clock synchronises
  (agent/ops/ops.py calls it; the Protocol lives in agent/ops/timesync.py, below this stage).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from agent.ops.observe import SinkStats
from agent.ops.timesync import ClockFixSink
from drivers.core.reading import Reading

if TYPE_CHECKING:
    from agent.config.outputs import MqttOutput
    from agent.forward.encoders.base import Encoder
    from drivers.device_state import Transition

__all__ = [
    "ClockFixSink",
    "CommandSink",
    "Handler",
    "HealthSink",
    "RebirthSink",
    "Sink",
    "SinkStats",
    "StatusProvider",
    "StatusSink",
]

Handler = Callable[[str, bytes], Awaitable[None]]  # (topic, payload) of a received message
StatusProvider = Callable[[], Mapping[str, object]]  # device id -> its status entry


@runtime_checkable
class Sink(Protocol):
    name: str

    async def submit(self, batch: Sequence[Reading]) -> None: ...

    async def run(self) -> None: ...

    async def close(self) -> None: ...

    def stats(self) -> SinkStats: ...


@runtime_checkable
class StatusSink(Protocol):
    def device_status(self, transition: Transition) -> None:
        """A device changed state (drivers/device_state.py). Called after every reading the
        device emitted before the transition has been submitted and before any later one of
        that device is (other devices' readings may be either side); synchronous and cheap."""


@runtime_checkable
class CommandSink(Protocol):
    name: str
    output: MqttOutput  # its topics and encoding decide the command topics
    encoder: Encoder  # Sparkplug: the alias table DCMDs are decoded with

    def add_handler(self, topic_filter: str, callback: Handler) -> None:
        """Subscribe (QoS 1) and call ``callback(topic, payload)`` for every matching message,
        across reconnects."""

    async def publish(self, topic: str, payload: bytes, qos: int = 1, retain: bool = False) -> None:
        """Publish outside the stream of readings (command answers); waits for the PUBACK."""


@runtime_checkable
class RebirthSink(Protocol):
    def rebirth(self) -> None:
        """Re-send what a (re)connect sends: births (Sparkplug), online status (native)."""


@runtime_checkable
class HealthSink(Protocol):
    def set_status_provider(self, provider: StatusProvider) -> None:
        """Where the health message gets every device's status from."""

    def set_alarm_provider(self, provider: Callable[[], Sequence[str]]) -> None:
        """Where the health message gets the agent's active alarms from."""
