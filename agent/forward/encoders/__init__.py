"""Encoders turn batches of readings into MQTT messages (native JSON, Sparkplug B, NGSI-LD,
FIWARE IoT Agent JSON)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from agent.forward.encoders.base import BaseEncoder, Encoder, OutMessage

if TYPE_CHECKING:
    from agent.config.outputs import MqttOutput
    from drivers.base import DeviceBinding


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


__all__ = ["BaseEncoder", "Encoder", "OutMessage", "make_encoder"]
