"""Native JSON envelope, version 1 (schema: agent/schemas/native-v1.json, docs/PAYLOADS.md).

All readings of a gateway go to ONE topic, ``<prefix>/<gateway>/data``: MQTT only orders
messages per topic, so one topic keeps the whole stream (and every device in it) in order, and
a batch of many devices costs one message instead of one per device.

The reading JSON is the outbox's stored form (``agent/forward/outbox_codec.py``), spliced in
here. Every reading carries ``id``, its outbox delivery id: stable across redeliveries and
restarts, so the platform drops a reading whose id it has already stored. ``msgId`` is
``"<first id>-<last id>"`` of the message; a replay may cut messages differently, so
de-duplicate on reading ids.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from agent.forward.encoders.base import BaseEncoder, OutMessage
from agent.forward.outbox_codec import parse_iso_ms, reading_from_json, reading_json
from drivers.core.reading import Reading, iso_ms, now_ms

if TYPE_CHECKING:
    from agent.forward.outbox import OutboxRow
    from drivers.device_state import Transition

# the reading codec lived here before the outbox took it over; old imports keep working
__all__ = ["NativeEncoder", "parse_iso_ms", "reading_from_json", "reading_json"]

VERSION = 1
_HEADER_SLACK = 256  # envelope fields around the readings array, generously
_HIST = b'"historical":true'


def _dumps(obj: object) -> str:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False)


class NativeEncoder(BaseEncoder):
    name = "native"

    def __init__(
        self,
        gateway_id: str,
        *,
        topic_prefix: str = "cityedge",
        status_topic: str | None = None,
        max_message_bytes: int = 128 * 1024,
        clock: Callable[[], int] = now_ms,
    ) -> None:
        self.gateway_id = gateway_id
        self.base = f"{topic_prefix}/{gateway_id}"
        self.data_topic = f"{self.base}/data"
        self.status_topic = status_topic or f"{self.base}/status"
        self.max_message_bytes = max_message_bytes
        self._clock = clock
        # device -> (state, reason, detail, since ms): restated after every reconnect
        self._devices: dict[str, tuple[str, str | None, str | None, int]] = {}

    def _status(self, state: str) -> OutMessage:
        body: dict[str, object] = {
            "v": VERSION,
            "type": "status",
            "gateway": self.gateway_id,
            "state": state,
        }
        if state == "online":
            body["since"] = iso_ms(self._clock())
        return OutMessage(self.status_topic, _dumps(body).encode(), qos=1, retain=True)

    def will(self) -> OutMessage | None:
        return self._status("offline")

    def on_connect(self) -> list[OutMessage]:
        out = [self._status("online")]
        out += [self._device_msg(d, *status) for d, status in self._devices.items()]
        return out

    def on_disconnect(self) -> list[OutMessage]:
        """Published before a graceful DISCONNECT (the broker only sends the will on a
        connection loss)."""
        return [self._status("offline")]

    def device_topic(self, device_id: str) -> str:
        return f"{self.base}/{device_id}/status"

    def _device_msg(
        self, device_id: str, state: str, reason: str | None, detail: str | None, t: int
    ) -> OutMessage:
        body = {
            "v": VERSION,
            "type": "device",
            "gateway": self.gateway_id,
            "device": device_id,
            "state": state,
            "since": iso_ms(t),
        }
        if reason is not None:
            body["reason"] = reason
        if detail is not None:
            body["detail"] = detail
        return OutMessage(self.device_topic(device_id), _dumps(body).encode(), qos=1, retain=True)

    def device_status(
        self, device_id: str, online: bool, transition: Transition | None = None
    ) -> list[OutMessage]:
        status: tuple[str, str | None, str | None, int]
        if transition is None:
            status = ("online" if online else "offline", None, None, self._clock())
        else:
            reason = None if transition.reason is None else transition.reason.value
            status = (transition.state.value, reason, transition.detail, transition.at_ms)
        self._devices[device_id] = status
        return [self._device_msg(device_id, *status)]

    def encode(self, batch: Sequence[Reading]) -> list[OutMessage]:
        """Without outbox ids (direct use): ids and msgId come from the readings' ``seq``."""
        return self._pack([(r.seq, reading_json(r)) for r in batch])

    def encode_rows(self, rows: Sequence[OutboxRow], historical_through: int) -> list[OutMessage]:
        """Outbox rows, oldest first; rows with ``id <= historical_through`` are flagged
        historical. The stored reading JSON is spliced, not re-encoded."""
        out: list[tuple[int, bytes]] = []
        for row in rows:
            data = row.data
            if row.id <= historical_through and _HIST not in data:
                data = b'{"historical":true,' + data[1:]
            out.append((row.id, data))
        return self._pack(out)

    def _pack(self, items: Sequence[tuple[int, bytes]]) -> list[OutMessage]:
        """``(id, reading JSON)`` -> messages of at most ``max_message_bytes`` each (a single
        oversized reading still goes alone)."""
        out: list[OutMessage] = []
        parts: list[bytes] = []
        first = last = 0
        size = _HEADER_SLACK
        for rid, data in items:
            part = b'{"id":%d,' % rid + data[1:]
            if parts and size + len(part) + 1 > self.max_message_bytes:
                out.append(self._data(first, last, parts))
                parts, size = [], _HEADER_SLACK
            if not parts:
                first = rid
            parts.append(part)
            last = rid
            size += len(part) + 1
        if parts:
            out.append(self._data(first, last, parts))
        return out

    def _data(self, first: int, last: int, parts: list[bytes]) -> OutMessage:
        head = _dumps(
            {
                "v": VERSION,
                "type": "data",
                "gateway": self.gateway_id,
                "msgId": f"{first}-{last}",
                "sentAt": iso_ms(self._clock()),
                "count": len(parts),
            }
        )
        payload = head[:-1].encode() + b',"readings":[' + b",".join(parts) + b"]}"
        return OutMessage(self.data_topic, payload, qos=1)
