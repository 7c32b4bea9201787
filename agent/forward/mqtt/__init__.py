"""MQTT plumbing of the publisher: broker addresses, TLS, client options, backoff, send path."""

from agent.forward.mqtt.connect import (
    Backoff,
    BrokerAddress,
    MqttConfigError,
    PublishRefusedError,
    build_tls_context,
    client_options,
    parse_brokers,
)
from agent.forward.mqtt.wire import NotConnectedError

__all__ = [
    "Backoff",
    "BrokerAddress",
    "MqttConfigError",
    "NotConnectedError",
    "PublishRefusedError",
    "build_tls_context",
    "client_options",
    "parse_brokers",
]
