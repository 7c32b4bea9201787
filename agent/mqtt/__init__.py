"""MQTT plumbing shared by the publisher: broker addresses, TLS, client options, backoff."""

from agent.mqtt.connect import (
    Backoff,
    BrokerAddress,
    MqttConfigError,
    build_tls_context,
    client_options,
    is_loopback,
    parse_brokers,
)

__all__ = [
    "Backoff",
    "BrokerAddress",
    "MqttConfigError",
    "build_tls_context",
    "client_options",
    "is_loopback",
    "parse_brokers",
]
