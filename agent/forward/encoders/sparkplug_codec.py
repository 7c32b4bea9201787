"""Sparkplug B value codec: datatypes from profile points, metric value get/set, topics, commands.

Kept apart from the encoder state machine (agent/forward/encoders/sparkplug.py) so the command
subsystem can decode NCMD/DCMD without an encoder instance.

Integer conventions follow the Sparkplug 3.0 payload rules (spec 6.4.16): Int8/16/32 and
UInt8/16/32 travel in ``int_value`` (uint32), signed values as two's complement of 32 bits;
Int64/UInt64 and DateTime in ``long_value`` (uint64), signed as two's complement of 64 bits.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass

from google.protobuf.message import DecodeError

from agent.forward.encoders import sparkplug_b_pb2 as pb
from drivers.core.profile import DataType, Point
from drivers.core.reading import Value

NAMESPACE = "spBv1.0"

# Sparkplug DataType enum values (sparkplug_b.proto, enum DataType)
INT8, INT16, INT32, INT64 = pb.Int8, pb.Int16, pb.Int32, pb.Int64
UINT8, UINT16, UINT32, UINT64 = pb.UInt8, pb.UInt16, pb.UInt32, pb.UInt64
FLOAT, DOUBLE, BOOLEAN, STRING = pb.Float, pb.Double, pb.Boolean, pb.String
DATETIME, TEXT = pb.DateTime, pb.Text

_INT32_TYPES: frozenset[int] = frozenset({INT8, INT16, INT32, UINT8, UINT16, UINT32})
_INT64_TYPES: frozenset[int] = frozenset({INT64, UINT64, DATETIME})
_SIGNED_BITS: dict[int, int] = {INT8: 8, INT16: 16, INT32: 32, INT64: 64}

_POINT_TYPES: dict[DataType, int] = {
    DataType.BOOL: BOOLEAN,
    DataType.BIT: BOOLEAN,
    DataType.INT16: INT16,
    DataType.UINT16: UINT16,
    DataType.INT32: INT32,
    DataType.UINT32: UINT32,
    DataType.INT64: INT64,
    DataType.UINT64: UINT64,
    DataType.FLOAT32: FLOAT,
    DataType.FLOAT64: DOUBLE,
    DataType.STRING: STRING,
    DataType.BITFIELD: STRING,
}

# OPC-style quality codes carried in the metric property "Quality" (Ignition convention).
QUALITY_GOOD = 192
QUALITY_UNCERTAIN = 64  # our "stale": last known value re-reported
QUALITY_BAD = 0


class SparkplugDecodeError(ValueError):
    """A Sparkplug message we received could not be decoded."""

    def __init__(self, topic: str, reason: str) -> None:
        super().__init__(f"{topic}: {reason}")
        self.topic = topic
        self.reason = reason


def point_datatype(point: Point, filter_types: frozenset[str] = frozenset()) -> int:
    """Sparkplug datatype for a profile point, after scaling and filters.

    A scaled/offset integer register carries engineering units (a float), and so does a
    smoothed one or a totalizer rate; enums and flag enums arrive as their label.
    """
    if point.enum or point.flag_enum:
        return STRING
    dt = _POINT_TYPES[point.type]
    if dt in _INT32_TYPES or dt in _INT64_TYPES:
        if point.scale != 1.0 or point.offset != 0.0 or "smooth" in filter_types:
            return DOUBLE
        if "totalizer" in filter_types:
            return INT64  # an unwrapped counter outgrows its register width
    return dt


def infer_datatype(value: Value) -> int:
    """Datatype for a metric no profile describes (node metrics, unknown points)."""
    if isinstance(value, bool):
        return BOOLEAN
    if isinstance(value, int):
        return INT64
    if isinstance(value, float):
        return DOUBLE
    return STRING


def set_value(metric: pb.Payload.Metric, datatype: int, value: Value) -> None:
    """Store ``value`` in the oneof field that ``datatype`` prescribes (or mark it null)."""
    if value is None:
        metric.is_null = True
        return
    if isinstance(value, tuple):
        value = ",".join(value)  # bitfield: names of the set bits
    if datatype == BOOLEAN:
        metric.boolean_value = bool(value)
    elif datatype == DOUBLE:
        metric.double_value = float(value)
    elif datatype == FLOAT:
        metric.float_value = float(value)
    elif datatype in (STRING, TEXT):
        metric.string_value = str(value)
    elif datatype in _INT32_TYPES:
        metric.int_value = _as_int(value) & 0xFFFF_FFFF
    elif datatype in _INT64_TYPES:
        metric.long_value = _as_int(value) & 0xFFFF_FFFF_FFFF_FFFF
    else:
        metric.string_value = str(value)


def _as_int(value: float | int | str) -> int:
    if isinstance(value, str):
        return int(value)
    return round(value)  # a filter may hand a float to an integer metric


def get_value(metric: pb.Payload.Metric, datatype: int | None = None) -> Value:
    """Decode a metric's value; ``datatype`` overrides a missing one (alias-only metrics)."""
    if metric.is_null:
        return None
    dt = metric.datatype if metric.HasField("datatype") else datatype
    field = metric.WhichOneof("value")
    if field is None:
        return None
    if field == "int_value":
        return _signed(metric.int_value, dt)
    if field == "long_value":
        return _signed(metric.long_value, dt)
    if field == "bytes_value":
        raise ValueError("bytes/file/array metrics are not supported")
    if field in ("dataset_value", "template_value", "extension_value"):
        raise ValueError(f"{field} metrics are not supported")
    raw: Value = getattr(metric, field)
    return raw


def _signed(raw: int, datatype: int | None) -> int:
    bits = _SIGNED_BITS.get(datatype or 0)
    if bits is None:
        return raw
    raw &= (1 << bits) - 1
    return raw - (1 << bits) if raw >= 1 << (bits - 1) else raw


@dataclass(frozen=True, slots=True)
class Topic:
    group: str
    message_type: str  # NBIRTH, NDATA, NCMD, DDATA, ...
    edge_node: str
    device: str | None = None


def parse_topic(topic: str) -> Topic:
    parts = topic.split("/")
    if len(parts) not in (4, 5) or parts[0] != NAMESPACE:
        raise SparkplugDecodeError(topic, "not a Sparkplug B edge node or device topic")
    return Topic(parts[1], parts[2], parts[3], parts[4] if len(parts) == 5 else None)


def parse_payload(topic: str, payload: bytes) -> pb.Payload:
    msg = pb.Payload()
    try:
        msg.ParseFromString(payload)
    except DecodeError as exc:
        raise SparkplugDecodeError(topic, f"malformed protobuf: {exc}") from exc
    return msg


Command = tuple[str | None, str, Value]


def decode_command(
    topic: str,
    payload: bytes,
    aliases: Mapping[tuple[str | None, int], tuple[str, int]] | None = None,
) -> list[Command]:
    """NCMD/DCMD -> [(device id or None for the node, metric name, value), ...].

    ``aliases`` maps (device id or None, alias) -> (metric name, datatype); hosts may address
    metrics by alias only (spec 6.4.17). Raises SparkplugDecodeError on anything malformed.
    """
    t = parse_topic(topic)
    if t.message_type not in ("NCMD", "DCMD"):
        raise SparkplugDecodeError(topic, f"{t.message_type} is not a command")
    if (t.message_type == "DCMD") != (t.device is not None):
        raise SparkplugDecodeError(topic, "NCMD takes no device id, DCMD needs one")
    msg = parse_payload(topic, payload)
    out: list[Command] = []
    for m in msg.metrics:
        datatype: int | None = None
        if m.HasField("name") and m.name:
            name = m.name
        elif m.HasField("alias") and aliases is not None and (t.device, m.alias) in aliases:
            name, datatype = aliases[(t.device, m.alias)]
        else:
            raise SparkplugDecodeError(topic, "metric without a name or a known alias")
        try:
            value = get_value(m, datatype)
        except ValueError as exc:
            raise SparkplugDecodeError(topic, f"metric {name!r}: {exc}") from exc
        out.append((t.device, name, value))
    return out


@dataclass(frozen=True, slots=True)
class State:
    """A primary host application's STATE message."""

    online: bool
    timestamp: int | None  # None for the Sparkplug 2.2 text form "ONLINE" / "OFFLINE"


def parse_state(payload: bytes) -> State:
    """Sparkplug 3.0 JSON ``{"online": bool, "timestamp": ms}`` [6.4.23]; the 2.2 text form
    is accepted too because some hosts still publish it."""
    text = payload.decode("utf-8", errors="replace").strip()
    if text in ("ONLINE", "OFFLINE"):
        return State(text == "ONLINE", None)
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise ValueError(f"not a STATE payload: {text[:60]!r}") from exc
    if not isinstance(data, dict) or not isinstance(data.get("online"), bool):
        raise ValueError("STATE payload lacks a boolean 'online'")
    ts = data.get("timestamp")
    if ts is not None and (not isinstance(ts, int) or isinstance(ts, bool)):
        raise ValueError("STATE 'timestamp' is not an integer")
    return State(data["online"], ts)


@dataclass(slots=True)
class HostState:
    """What the edge node knows about its primary host on the current connection."""

    online: bool = False
    timestamp: int | None = None

    def accept(self, state: State) -> bool:
        """Apply ``state`` unless it is older than the last one seen [phid-wait-timestamp]."""
        if (
            state.timestamp is not None
            and self.timestamp is not None
            and state.timestamp < self.timestamp
        ):
            return False
        if state.timestamp is not None:
            self.timestamp = state.timestamp
        self.online = state.online
        return True
