"""Link/publish counters of an MQTT sink and the gateway health message built from them."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from agent.forward.outbox import OutboxStats
from agent.ops.observe import SinkStats
from drivers.core.reading import iso_ms


@dataclass(slots=True)
class LinkStats:
    connected: bool = False
    broker: str | None = None  # current (or last) broker URL
    connected_since_ms: int | None = None
    connects: int = 0  # successful CONNACKs
    connect_failures: int = 0
    disconnects: int = 0  # sessions that ended other than by close()
    published_messages: int = 0  # PUBACKed (QoS 1) or written (QoS 0)
    published_readings: int = 0  # readings whose rows were deleted after their PUBACK
    last_publish_ms: int | None = None
    last_error: str | None = None
    encode_errors: int = 0  # readings this output's encoding could not carry (skipped, logged)


@dataclass(frozen=True, slots=True, kw_only=True)
class MqttSinkStats(SinkStats):
    """The MQTT sink's statistics: the common record (agent/ops/observe.py) filled from its
    link and outbox counters, which it carries too (the health message shows them)."""

    link: LinkStats  # a copy
    outbox: OutboxStats

    @classmethod
    def of(
        cls, name: str, link: LinkStats, outbox: OutboxStats, kind: str = "MqttSink"
    ) -> MqttSinkStats:
        return cls(
            name=name,
            kind=kind,
            connected=link.connected,
            broker=link.broker,
            messages=link.published_messages,
            readings=link.published_readings,
            last_error=link.last_error,
            encode_errors=link.encode_errors,
            outbox_depth=outbox.depth,
            outbox_oldest_age_s=0.0 if outbox.depth == 0 else outbox.oldest_age_s,
            outbox_dropped=outbox.drops,
            outbox_bytes=outbox.bytes,
            outbox_budget=outbox.budget,
            outbox_memory=outbox.memory,
            outbox_fault=outbox.fault,
            outbox_alarms=outbox.alarms,
            link=link,
            outbox=outbox,
        )


def health_payload(
    gateway_id: str,
    stats: MqttSinkStats,
    devices: Mapping[str, object] | None,
    now: int,
    alarms: Sequence[str] = (),
) -> bytes:
    """The native-v1 ``health`` message (schema: agent/schemas/native-v1.json)."""
    ln, ob = stats.link, stats.outbox
    body: dict[str, object] = {
        "v": 1,
        "type": "health",
        "gateway": gateway_id,
        "ts": iso_ms(now),
        "link": {
            "connected": ln.connected,
            "broker": ln.broker,
            "since": iso_ms(ln.connected_since_ms) if ln.connected_since_ms else None,
            "connects": ln.connects,
            "disconnects": ln.disconnects,
        },
        "outbox": {
            "depth": ob.depth,
            "oldestAge": round(ob.oldest_age_s, 3) if ob.oldest_age_s is not None else None,
            "drops": ob.drops,
        },
        "published": {"messages": ln.published_messages, "readings": ln.published_readings},
        "devices": dict(devices) if devices is not None else {},
    }
    if alarms:  # auxiliary services down (e.g. the metrics port held by another process)
        body["alarms"] = list(alarms)
    return json.dumps(body, separators=(",", ":"), default=str).encode()
