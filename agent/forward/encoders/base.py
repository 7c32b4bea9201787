"""The encoder interface used by the MQTT publisher.

An encoder is created once per MQTT output with everything it must know up front (the gateway
id, every device binding with its profile, the state directory for counters that must survive
a restart such as Sparkplug's bdSeq). The publisher calls it from one task only, so encoders may
keep state (Sparkplug seq, aliases) without locks.

``Encoder`` is the whole contract: the publisher calls every method of it, with no optional
hooks looked up at run time. ``BaseEncoder`` gives the defaults an encoding without a session
of its own needs (no will, no control messages, always ready, rows encoded from their
readings); every encoder derives from it, so mypy checks each one against the contract.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from drivers.core.reading import Reading, now_ms

if TYPE_CHECKING:
    from agent.config.outputs import MqttOutput
    from agent.forward.encoders.sparkplug_codec import Command as SparkplugCommand
    from agent.forward.outbox_types import OutboxRow
    from drivers.device_state import Transition


@dataclass(frozen=True, slots=True)
class OutMessage:
    topic: str
    payload: bytes
    qos: int = 1
    retain: bool = False


class Encoder(Protocol):
    name: str

    def will(self) -> OutMessage | None:
        """Last will registered with the broker at connect (Sparkplug NDEATH / status offline)."""

    def on_connect(self) -> list[OutMessage]:
        """Messages to send after every (re)connect, before any data (births, online status)."""

    def on_disconnect(self) -> list[OutMessage]:
        """Published before a graceful DISCONNECT (the broker sends the will only when the
        connection is lost)."""

    def subscriptions(self) -> list[str]:
        """Topic filters this encoding must receive (NCMD/DCMD, STATE, IoT-Agent commands)."""

    def on_message(self, topic: str, payload: bytes) -> list[OutMessage]:
        """Protocol-level control messages (e.g. Sparkplug rebirth); returns what to send."""

    def wants_reconnect(self) -> bool:
        """Checked after each ``on_message``: True ends the session (Sparkplug: the primary
        host went offline and came back)."""

    def ready_to_publish(self) -> bool:
        """Gates data: False holds the stream (Sparkplug: the primary host is offline)."""

    def encode(self, batch: Sequence[Reading]) -> list[OutMessage]:
        """Readings of one or more devices (``historical`` already set on replay) -> messages.
        Every message must carry a stable id/sequence so the platform can drop redeliveries."""

    def encode_rows(self, rows: Sequence[OutboxRow], historical_through: int) -> list[OutMessage]:
        """Outbox rows, oldest first (``row.id`` is the reading's stable delivery id,
        ``row.data`` its native JSON, ``row.reading`` the decoded Reading); rows with
        ``id <= historical_through`` waited for a link and must be flagged historical."""

    def device_status(
        self, device_id: str, online: bool, transition: Transition | None = None
    ) -> list[OutMessage]:
        """A device changed state: ``online`` is up (online or degraded) or down; the
        ``transition`` (drivers/device_state.py) carries the state, the reason and its time
        when the runtime sends it. Once per transition: Sparkplug DDEATH / DBIRTH, the native
        device status, the NGSI-LD Device ``deviceState``, the IoT Agent ``deviceState``
        measure."""


class BaseEncoder(Encoder):
    """Defaults for an encoding without a session of its own; ``encode`` and
    ``device_status`` are each encoder's."""

    def will(self) -> OutMessage | None:
        return None

    def on_connect(self) -> list[OutMessage]:
        return []

    def on_disconnect(self) -> list[OutMessage]:
        will = self.will()
        return [] if will is None else [will]

    def subscriptions(self) -> list[str]:
        return []

    def on_message(self, topic: str, payload: bytes) -> list[OutMessage]:
        return []

    def wants_reconnect(self) -> bool:
        return False

    def ready_to_publish(self) -> bool:
        return True

    def encode_rows(self, rows: Sequence[OutboxRow], historical_through: int) -> list[OutMessage]:
        batch = []
        for row in rows:
            r = row.reading
            if row.id <= historical_through and not r.historical:
                r = dataclasses.replace(r, historical=True)
            batch.append(r)
        return self.encode(batch)


class IotAgentTopics(BaseEncoder):
    """The FIWARE IoT Agent's MQTT transport, which both FIWARE encodings use (``iotagent``
    measures, ``ngsild`` entities): a device's data on ``/<apikey>/<device id>/attrs``; its
    commands come on ``/<apikey>/<device id>/cmd``, answered by the command binding."""

    def __init__(
        self, output: MqttOutput, gateway_id: str, clock: Callable[[], int] = now_ms
    ) -> None:
        self.gateway = gateway_id
        self.apikey = output.apikey or gateway_id
        self._qos = output.qos
        self._clock = clock

    def topic(self, device_id: str) -> str:
        return f"/{self.apikey}/{device_id}/attrs"

    def subscriptions(self) -> list[str]:
        return [f"/{self.apikey}/+/cmd"]


@runtime_checkable
class CommandDecoder(Protocol):
    """An encoding whose own payloads carry commands (Sparkplug DCMD/NCMD metrics, named by
    the aliases it gave them); the command binding decodes them with it."""

    def decode_command(self, topic: str, payload: bytes) -> list[SparkplugCommand]: ...
