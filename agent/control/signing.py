"""Command signatures, specified to the byte (docs/COMMANDS.md, "Signing a command").

The signed string is nine lines joined by a line feed (0x0A), UTF-8, no trailing newline::

    CITYEDGE-CMD-V1
    <kid>        the "kid" member as sent ("" when absent: the gateway's hmac_secret)
    <gateway>    the gateway id (a command signed for one gateway is void on another)
    <id>
    <device>     from the topic; "" for gateway actions and config updates
    <target>     the "point" or "action" member as sent; "config" for config updates
    <value>      the value as RFC 8785 (JCS) canonical JSON; "null" when absent
    <ts>         the "ts" member as sent: epoch-ms digits, or the ISO 8601 text itself
    <nonce>

The signature is HMAC-SHA256 over those bytes, keyed with the UTF-8 bytes of the secret the
kid names, written as 64 lowercase hex digits (uppercase is accepted). Every field except the
value is refused at parse time if it holds a control character, so no field can forge a line
break; the value's JSON escapes them.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal

from drivers.core.reading import Value

VERSION = "CITYEDGE-CMD-V1"


def jcs_number(x: int | float) -> str:
    """A number as ECMAScript's Number.prototype.toString writes it (RFC 8785, 3.2.2.3):
    the shortest digits that round-trip, in plain notation for 1e-7 < |x| < 1e21, else as
    d.ddde±x."""
    if isinstance(x, int):
        if abs(x) <= 2**53:
            return str(x)
        x = float(x)  # JCS works on IEEE doubles: a huge integer is written as one
    if not math.isfinite(x):
        raise ValueError("JSON has no representation for NaN or infinity")
    if x == 0:
        return "0"
    # repr() gives the shortest round-trip digits (as ECMAScript does); Decimal splits them
    sign, digit_tuple, exp = Decimal(repr(x)).as_tuple()
    assert isinstance(exp, int)
    digits = "".join(map(str, digit_tuple)).rstrip("0")
    exp += len(digit_tuple) - len(digits)
    k = len(digits)
    n = exp + k  # x = 0.<digits> * 10**n
    if k <= n <= 21:
        out = digits + "0" * (n - k)
    elif 0 < n <= 21:
        out = digits[:n] + "." + digits[n:]
    elif -6 < n <= 0:
        out = "0." + "0" * (-n) + digits
    else:
        e = n - 1
        mant = digits[0] + ("." + digits[1:] if k > 1 else "")
        out = f"{mant}e{'+' if e > 0 else '-'}{abs(e)}"
    return ("-" if sign else "") + out


def jcs_value(value: Value) -> str:
    """A command value (null, boolean, number or string) as RFC 8785 canonical JSON."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return jcs_number(value)
    if isinstance(value, str):
        # JSON.stringify escaping: \" \\ \b \f \n \r \t, other controls as \u00xx, the rest raw
        return json.dumps(value, ensure_ascii=False)
    raise ValueError(f"a command value is null, a boolean, a number or a string, not {value!r}")


@dataclass(frozen=True, slots=True)
class SignedFields:
    """The members of a command that the signature covers, as the sender wrote them."""

    kid: str
    gateway: str
    id: str
    device: str
    target: str
    value: Value
    ts: str
    nonce: str


def canonical(f: SignedFields) -> bytes:
    lines = (VERSION, f.kid, f.gateway, f.id, f.device, f.target, jcs_value(f.value), f.ts, f.nonce)
    return "\n".join(lines).encode("utf-8")


def signature(key: bytes, f: SignedFields) -> str:
    return hmac.new(key, canonical(f), hashlib.sha256).hexdigest()


def verify(keys: Mapping[str, bytes], default_kid: str | None, f: SignedFields, sig: str) -> str:
    """Return "" when ``sig`` is valid, else the reason it is not."""
    kid = f.kid or default_kid
    if kid is None:
        return "no command key is configured ([commands] hmac_secret)"
    key = keys.get(kid)
    if key is None:
        return f"unknown key id '{kid}'"
    if not hmac.compare_digest(signature(key, f), sig.lower()):
        return "bad signature"
    return ""
