"""Output (sink) configuration. One entry per output; several may run at once."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field


class _M(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class JsonLinesOutput(_M):
    type: Literal["jsonl"]
    id: str
    path: str = "-"  # "-" = stdout


class BrokerConfig(_M):
    url: str  # mqtt://host:1883 or mqtts://host:8883


class TlsConfig(_M):
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    insecure_skip_verify: bool = False


class MqttOutput(_M):
    type: Literal["mqtt"]
    id: str
    brokers: tuple[BrokerConfig, ...] = Field(min_length=1)
    encoding: Literal["native", "sparkplug", "ngsild", "iotagent"] = "native"
    protocol: Literal["3.1.1", "5"] = "5"
    topic_prefix: str = "cityedge"
    username: str | None = None
    password_secret: str | None = None  # name of a secret (credentials dir / env)
    tls: TlsConfig | None = None
    allow_insecure: bool = False  # plain TCP to a non-loopback broker is refused otherwise
    keepalive: int = Field(30, ge=5, le=3600)
    qos: Literal[0, 1] = 1
    window: int = Field(32, ge=1, le=1024)  # QoS 1 messages in flight
    max_batch: int = Field(200, ge=1, le=10000)  # readings per message
    max_message_bytes: int = Field(128 * 1024, ge=1024)
    batch_latency: float = Field(0.2, ge=0, le=60)  # wait this long to fill a message
    client_id: str | None = None  # default "<gateway id>-<output id>"
    clean_start: bool = True  # the outbox replays; a broker session only keeps queued commands
    connect_timeout: float = Field(10.0, gt=0, le=600)  # TCP + TLS + CONNACK
    publish_timeout: float = Field(30.0, gt=0, le=600)  # PUBACK / SUBACK wait
    reconnect_min: float = Field(1.0, gt=0, le=600)  # backoff base (exponential, full jitter)
    reconnect_max: float = Field(60.0, gt=0, le=3600)
    status_topic: str | None = None  # native: default "<prefix>/<gateway>/status" (retained)
    health_topic: str | None = None  # default "<prefix>/<gateway>/health"
    health_interval: float = Field(60.0, ge=0, le=86400)  # 0 = no health messages
    # outbox bounds; beyond them the oldest readings are dropped (and counted). Bytes of the
    # file's live pages; None = half the free space of the state directory, 64 MiB..2 GiB
    outbox_max_bytes: int | None = Field(None, ge=1 << 20)
    outbox_max_rows: int | None = Field(None, ge=100)  # readings; None = no row bound
    outbox_max_age: float | None = Field(7 * 86400.0, gt=0)  # seconds; None = no age bound
    commit_interval: float = Field(0.1, gt=0, le=5)  # outbox group-commit latency
    # --- Sparkplug B (encoding = "sparkplug"); see docs/PAYLOADS.md ---
    sparkplug_group: str | None = Field(None, pattern=r"^[^/+#]+$")  # None -> topic_prefix
    primary_host_id: str | None = Field(None, pattern=r"^[^/+#]+$")  # hold data while offline
    # --- NGSI-LD ("ngsild") and FIWARE IoT Agent JSON ("iotagent"): topic
    # /<apikey>/<device>/attrs; the IoT Agent service group's API key (docs/PAYLOADS.md) ---
    apikey: str | None = Field(None, pattern=r"^[^/+#]+$")  # None -> gateway id


OutputConfig = Annotated[JsonLinesOutput | MqttOutput, Field(discriminator="type")]
