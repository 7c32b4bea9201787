"""Broker list, TLS context and aiomqtt client options for one MQTT output.

Everything aiomqtt-specific that happens before a connection lives here so the publisher loop
stays readable. Secrets are handled as ``SecretStr`` until the last moment and never logged.
"""

from __future__ import annotations

import random
import socket
import ssl
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import aiomqtt
from paho.mqtt.reasoncodes import ReasonCode
from pydantic import SecretStr

from agent.config.outputs import MqttOutput
from drivers.core.endpoint import is_loopback


class MqttConfigError(ValueError):
    """An MQTT output cannot be used as configured (checked again at sink construction)."""

    def __init__(self, output: str, field: str, reason: str) -> None:
        super().__init__(f"output '{output}' {field}: {reason}")
        self.output = output
        self.field = field
        self.reason = reason


@dataclass(frozen=True, slots=True)
class BrokerAddress:
    host: str
    port: int
    tls: bool

    def __str__(self) -> str:
        return f"{'mqtts' if self.tls else 'mqtt'}://{self.host}:{self.port}"


def parse_brokers(output: MqttOutput) -> list[BrokerAddress]:
    """mqtts:// (or any broker when ``[tls]`` is set) uses TLS; plain MQTT to a non-loopback
    host is refused unless ``allow_insecure`` (same rule as config validation)."""
    out: list[BrokerAddress] = []
    for j, b in enumerate(output.brokers):
        u = urlsplit(b.url)
        if u.scheme not in ("mqtt", "mqtts") or not u.hostname:
            raise MqttConfigError(
                output.id, f"brokers[{j}].url", "use mqtt://host:port or mqtts://host:port"
            )
        tls = u.scheme == "mqtts" or output.tls is not None
        if not tls and not output.allow_insecure and not is_loopback(u.hostname):
            raise MqttConfigError(
                output.id,
                f"brokers[{j}].url",
                "plain MQTT to a non-loopback "
                "broker: use mqtts:// with [tls], or set allow_insecure = true",
            )
        out.append(BrokerAddress(u.hostname, u.port or (8883 if tls else 1883), tls))
    return out


class TlsFileError(Exception):
    """A TLS file of an output cannot be used; says which (ssl's own errors do not)."""

    def __init__(self, key: str, path: str | None, exc: Exception) -> None:
        why = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        super().__init__(f"tls.{key} {path}: {why} (cityedge check tests these files)")


def build_tls_context(output: MqttOutput) -> ssl.SSLContext:
    """Verify the broker against ``ca_file`` (system store when unset) with hostname check;
    present a client certificate when configured. Blocking (reads files)."""
    t = output.tls
    try:
        ctx = ssl.create_default_context(
            ssl.Purpose.SERVER_AUTH, cafile=t.ca_file if t is not None else None
        )
    except (OSError, ssl.SSLError) as exc:
        raise TlsFileError("ca_file", t.ca_file if t is not None else None, exc) from None
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    if t is not None and t.cert_file is not None:
        try:
            ctx.load_cert_chain(t.cert_file, t.key_file)
        except (OSError, ssl.SSLError) as exc:
            files = f"{t.cert_file}{f', {t.key_file}' if t.key_file else ''}"
            raise TlsFileError("cert_file/key_file", files, exc) from None
    if t is not None and t.insecure_skip_verify:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    return ctx


# Nagle's algorithm holds a small write while an earlier one is unacknowledged, and the peer's
# delayed ACK holds that acknowledgement up to ~40 ms: a command answer (a PUBLISH right after
# the PUBACK of the command) waited for it on every round trip. paho leaves Nagle on; MQTT
# packets are whole messages, so there is nothing for it to coalesce (docs/COMMANDS.md).
NO_DELAY = ((socket.IPPROTO_TCP, socket.TCP_NODELAY, 1),)


def client_options(
    output: MqttOutput,
    gateway_id: str,
    secrets: Mapping[str, SecretStr],
) -> dict[str, Any]:
    """Keyword arguments for ``aiomqtt.Client`` common to every broker of the output."""
    password = None
    if output.password_secret is not None:
        secret = secrets.get(output.password_secret)
        if secret is None:
            raise MqttConfigError(
                output.id, "password_secret", f"secret '{output.password_secret}' not found"
            )
        password = secret.get_secret_value()
    v5 = output.protocol == "5"
    opts: dict[str, Any] = {
        "identifier": output.client_id or f"{gateway_id}-{output.id}",
        "protocol": aiomqtt.ProtocolVersion.V5 if v5 else aiomqtt.ProtocolVersion.V311,
        "username": output.username,
        "password": password,
        "keepalive": output.keepalive,
        "timeout": output.connect_timeout,  # the publisher raises it once connected
        "max_inflight_messages": output.window,
        "socket_options": NO_DELAY,
    }
    # We replay from our own outbox, so a broker-side session only matters for commands
    # queued while offline; paho rejects clean_session with MQTT 5 (clean_start instead).
    if v5:
        opts["clean_start"] = output.clean_start
    else:
        opts["clean_session"] = output.clean_start
    return opts


class PublishRefusedError(Exception):
    """The broker answered a QoS 1 PUBLISH with a failure reason code (MQTT 5 PUBACK >= 0x80,
    e.g. 0x87 Not authorized by an ACL). The rows stay in the outbox."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"broker refused a publish: {reason}")
        self.reason = reason


def watch_refusals(client: aiomqtt.Client, on_refused: Callable[[str], None]) -> None:
    """aiomqtt 2.x completes ``publish`` on any PUBACK and drops its reason code; intercept
    paho's callback so a refused message is never treated as delivered (its ``publish`` then
    waits until the session is torn down)."""
    paho = client._client
    original: Any = paho.on_publish

    def on_publish(c: Any, userdata: Any, mid: int, rc: Any, props: Any) -> None:
        if isinstance(rc, ReasonCode) and rc.is_failure:
            on_refused(str(rc))
            return
        if original is not None:
            original(c, userdata, mid, rc, props)

    paho.on_publish = on_publish


class Backoff:
    """Exponential backoff with full jitter: sleep uniform(0, min(max, base * 2**n)), but at
    least ``base / 2`` so a flapping broker is not hammered."""

    def __init__(
        self, base: float, maximum: float, rand: Callable[[float, float], float] = random.uniform
    ) -> None:
        self.base = base
        self.maximum = maximum
        self._rand = rand
        self._n = 0

    def next(self) -> float:
        cap = min(self.maximum, self.base * (2 ** min(self._n, 30)))
        self._n += 1
        return max(self.base / 2, self._rand(0.0, cap))

    def reset(self) -> None:
        self._n = 0
