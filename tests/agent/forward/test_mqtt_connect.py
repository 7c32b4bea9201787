"""The options every MQTT connection of the agent is made with, on a real socket to Mosquitto."""

from __future__ import annotations

import socket

import aiomqtt

from agent.forward.mqtt.connect import client_options
from tests.agent.forward.test_mqtt_sink import GW, output
from tests.conftest import MosquittoFactory


async def test_the_mqtt_socket_sends_without_nagles_delay(mosquitto: MosquittoFactory) -> None:
    """A command answer follows the PUBACK of the command at once; with Nagle's algorithm it
    waited for the broker's delayed ACK, ~40 ms per round trip (docs/COMMANDS.md)."""
    broker = mosquitto()
    async with aiomqtt.Client(
        "127.0.0.1", broker.port, **client_options(output(broker), GW, {})
    ) as c:
        sock = c._client.socket()
        assert isinstance(sock, socket.socket)
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
