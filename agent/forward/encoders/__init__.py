"""Encoders turn batches of readings into MQTT messages (native JSON, Sparkplug B, NGSI-LD,
FIWARE IoT Agent JSON)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from agent.forward.encoders.base import Encoder, OutMessage

if TYPE_CHECKING:
    from agent.config.outputs import MqttOutput
    from agent.forward.outbox import OutboxRow
    from drivers.base import DeviceBinding


@runtime_checkable
class RowEncoder(Protocol):
    """Optional extension of :class:`Encoder`: the publisher calls ``encode_rows`` instead of
    ``encode`` when present, with the outbox rows themselves (``row.id`` is the reading's stable
    delivery id, ``row.data`` its native JSON, ``row.reading`` the decoded Reading). Rows with
    ``id <= historical_through`` waited for a link and must be flagged historical."""

    def encode_rows(
        self, rows: Sequence[OutboxRow], historical_through: int
    ) -> list[OutMessage]: ...


def make_encoder(
    output: MqttOutput,
    gateway_id: str,
    bindings: Sequence[DeviceBinding],
    state_dir: Path,
) -> Encoder:
    """The encoder named by ``output.encoding``; Sparkplug and NGSI-LD are imported lazily
    (protobuf is only loaded when a Sparkplug output exists)."""
    if output.encoding == "native":
        from agent.forward.encoders.native import NativeEncoder

        return NativeEncoder(
            gateway_id,
            topic_prefix=output.topic_prefix,
            status_topic=output.status_topic,
            max_message_bytes=output.max_message_bytes,
        )
    if output.encoding == "sparkplug":
        from agent.forward.encoders.sparkplug import SparkplugEncoder

        return SparkplugEncoder(
            output=output, gateway_id=gateway_id, bindings=bindings, state_dir=state_dir
        )
    if output.encoding == "iotagent":
        from agent.forward.encoders.iotagent import IotAgentEncoder

        return IotAgentEncoder(
            output=output, gateway_id=gateway_id, bindings=bindings, state_dir=state_dir
        )
    from agent.forward.encoders.ngsild import NgsiLdEncoder

    return NgsiLdEncoder(
        output=output, gateway_id=gateway_id, bindings=bindings, state_dir=state_dir
    )
