"""Parse command payloads of each encoding into Command records (or CommandRejected).

Native JSON (topic ``<prefix>/<gateway>/<device>/cmd``, gateway actions on
``<prefix>/<gateway>/cmd``)::

    {"id": "c-123", "point": "dimLevel", "value": 40,
     "ts": 1795000000000 | "2026-11-23T18:00:00Z", "nonce": "…", "sig": "hex"}
    {"id": "c-124", "action": "ping"}

FIWARE IoT Agent (JSON over MQTT) convention: ``/<apikey>/<device>/cmd`` with
``{"<command>": <value>}``; the result goes to ``/<apikey>/<device>/cmdexe``. The convention
carries no id or time: the id is a hash of the topic and the payload, so a redelivery of the
same bytes within the de-duplication window is answered again, not executed again.

Sizes are checked before any parsing, on every channel (``MAX_PAYLOAD``).
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from datetime import datetime
from typing import Any

from agent.control.model import Command, CommandRejected
from drivers.core.reading import Value

MAX_PAYLOAD = 16 * 1024
MAX_ID = 128
# Control characters (and DEL) are refused in every signed text field, so none can fake the
# line structure of the signed string (agent/control/signing.py).
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
# The id of a payload that cannot be parsed (malformed, oversized) is looked for in its first
# KiB only: nothing beyond the size limit is ever parsed.
_ID_PREFIX = re.compile(rb'"id"\s*:\s*"([^"\\\x00-\x1f]{1,128})"')


def check_size(payload: bytes, limit: int = MAX_PAYLOAD) -> None:
    if len(payload) > limit:
        raise CommandRejected(f"payload too large ({len(payload)} bytes, max {limit})")
    if not payload.strip():
        raise CommandRejected("empty payload")


def _load(payload: bytes, limit: int = MAX_PAYLOAD) -> Any:
    check_size(payload, limit)
    try:
        return json.loads(payload.decode("utf-8"), parse_constant=_no_constants)
    except (UnicodeDecodeError, json.JSONDecodeError, ValueError) as exc:
        raise CommandRejected(f"malformed JSON: {exc}") from None


def _no_constants(name: str) -> float:
    raise ValueError(f"{name} is not valid JSON")


def _value(v: Any) -> Value:
    if v is None or isinstance(v, bool | int | str):
        return v
    if isinstance(v, float):
        if not math.isfinite(v):
            raise CommandRejected("value must be finite")
        return v
    raise CommandRejected(f"value must be a number, boolean or string, not {type(v).__name__}")


def _timestamp(v: Any) -> int | None:
    if v is None:
        return None
    if isinstance(v, int) and not isinstance(v, bool):
        return v
    if isinstance(v, str):
        if _CONTROL.search(v) or len(v) > 64:
            raise CommandRejected("bad timestamp (use epoch ms or ISO 8601 UTC)")
        try:
            dt = datetime.fromisoformat(v.replace("Z", "+00:00"))
        except ValueError:
            raise CommandRejected(f"bad timestamp {v!r} (use epoch ms or ISO 8601 UTC)") from None
        if dt.tzinfo is None:
            raise CommandRejected("timestamp must carry a UTC offset (e.g. ...Z)")
        return int(dt.timestamp() * 1000)
    raise CommandRejected("ts must be epoch milliseconds or an ISO 8601 string")


def _str(d: dict[str, Any], key: str, required: bool = False) -> str | None:
    v = d.get(key)
    if v is None:
        if required:
            raise CommandRejected(f"missing '{key}'")
        return None
    if not isinstance(v, str) or not v or len(v) > MAX_ID:
        raise CommandRejected(f"'{key}' must be a non-empty string of at most {MAX_ID} chars")
    if _CONTROL.search(v):
        raise CommandRejected(f"'{key}' must not contain control characters")
    return v


def _ts_text(v: Any) -> str | None:
    return None if v is None else str(v)


def command_id_of(payload: bytes) -> str:
    """Best effort id for answering a payload that failed to parse: an ``"id"`` string member
    in its first KiB, else "unknown". Never parses the payload."""
    m = _ID_PREFIX.search(payload[:1024])
    if m is None:
        return "unknown"
    try:
        return m.group(1).decode("utf-8")
    except UnicodeDecodeError:
        return "unknown"


def payload_id(prefix: str, topic: str, payload: bytes) -> str:
    """The id of a command whose encoding has none: identical bytes on the same topic give
    the same id, so a redelivery is answered from the de-duplication record."""
    digest = hashlib.sha256(topic.encode() + b"\0" + payload).hexdigest()
    return f"{prefix}-{digest[:24]}"


def parse_native(
    device: str | None, payload: bytes, reply_to: str | None, origin: str | None = None
) -> Command:
    d = _load(payload)
    if not isinstance(d, dict):
        raise CommandRejected("command must be a JSON object")
    allowed = {"id", "point", "action", "value", "ts", "nonce", "sig", "kid"}
    unknown = set(d) - allowed
    cid = _str(d, "id", required=True)
    assert cid is not None
    if unknown:
        raise CommandRejected(f"unknown field(s): {', '.join(sorted(unknown))}", cid)
    try:
        if device is None:
            target = _str(d, "action", required=True)
        else:
            target = _str(d, "point", required=True)
        assert target is not None
        return Command(
            id=cid,
            source="native",
            device=device,
            target=target,
            value=_value(d.get("value")),
            issued_at_ms=_timestamp(d.get("ts")),
            nonce=_str(d, "nonce"),
            signature=_str(d, "sig"),
            reply_to=reply_to,
            ts_text=_ts_text(d.get("ts")),
            kid=_str(d, "kid"),
            origin=origin,
        )
    except CommandRejected as exc:
        raise CommandRejected(exc.reason, cid) from None


def parse_iota(device: str, payload: bytes, topic: str, reply_to: str) -> Command:
    d = _load(payload)
    if not isinstance(d, dict) or len(d) != 1:
        raise CommandRejected('IoT Agent commands are {"<command>": <value>} with one command')
    ((name, raw),) = d.items()
    if not isinstance(name, str) or not name or len(name) > MAX_ID or _CONTROL.search(name):
        raise CommandRejected("bad command name")
    return Command(
        id=payload_id("iota", topic, payload),
        source="iota",
        device=device,
        target=name,
        value=_value(raw),
        reply_to=reply_to,
        origin=topic,
    )


MAX_CONFIG = 256 * 1024


def parse_config(payload: bytes, reply_to: str, origin: str | None = None) -> Command:
    """A remote config update: the whole gateway file as TOML text."""
    d = _load(payload, MAX_CONFIG)
    if not isinstance(d, dict):
        raise CommandRejected('config updates are {"id": ..., "toml": "<gateway file>"}')
    cid = _str(d, "id", required=True)
    assert cid is not None
    toml = d.get("toml")
    if not isinstance(toml, str) or not toml.strip():
        raise CommandRejected("missing 'toml' (the whole gateway file)", cid)
    unknown = set(d) - {"id", "toml", "ts", "nonce", "sig", "kid"}
    if unknown:
        raise CommandRejected(f"unknown field(s): {', '.join(sorted(unknown))}", cid)
    digest = hashlib.sha256(toml.encode()).hexdigest()
    try:
        return Command(
            id=cid,
            source="config",
            device=None,
            target="config",
            value=digest,
            issued_at_ms=_timestamp(d.get("ts")),
            nonce=_str(d, "nonce"),
            signature=_str(d, "sig"),
            reply_to=reply_to,
            extra={"toml": toml},
            ts_text=_ts_text(d.get("ts")),
            kid=_str(d, "kid"),
            origin=origin,
        )
    except CommandRejected as exc:
        raise CommandRejected(exc.reason, cid) from None
