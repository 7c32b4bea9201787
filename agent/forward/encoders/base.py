"""The encoder interface used by the MQTT publisher.

An encoder is created once per MQTT output with everything it must know up front (the gateway
id, every device binding with its profile, the state directory for counters that must survive
a restart such as Sparkplug's bdSeq). The publisher calls it from one task only, so encoders may
keep state (Sparkplug seq, aliases) without locks.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from drivers.core.reading import Reading

if TYPE_CHECKING:
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

    def subscriptions(self) -> list[str]:
        """Topic filters this encoding must receive (NCMD/DCMD, STATE, IoT-Agent commands)."""

    def on_message(self, topic: str, payload: bytes) -> list[OutMessage]:
        """Protocol-level control messages (e.g. Sparkplug rebirth); returns what to send."""

    def encode(self, batch: Sequence[Reading]) -> list[OutMessage]:
        """Readings of one or more devices (``historical`` already set on replay) -> messages.
        Every message must carry a stable id/sequence so the platform can drop redeliveries."""

    def device_status(
        self, device_id: str, online: bool, transition: Transition | None = None
    ) -> list[OutMessage]:
        """A device changed state: ``online`` is up (online or degraded) or down; the
        ``transition`` (drivers/device_state.py) carries the state, the reason and its time
        when the runtime sends it. Once per transition: Sparkplug DDEATH / DBIRTH, the native
        device status, the NGSI-LD Device ``deviceState``."""
