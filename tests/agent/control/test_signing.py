"""The signature as docs/COMMANDS.md specifies it: the documented test vector against the code
and against openssl, the JCS number table, every field covered, and `cityedge sign`."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from agent.config.gateway import CommandsSection
from agent.control.model import Command, CommandRejected
from agent.control.parse import parse_native
from agent.control.router import signed_fields
from agent.control.signing import SignedFields, canonical, jcs_number, signature, verify

ROOT = Path(__file__).resolve().parents[3]


def doc_vector() -> dict[str, str]:
    text = (ROOT / "docs" / "COMMANDS.md").read_text()
    block = text.split("Test vector", 1)[1].split("```text", 1)[1].split("```", 1)[0]
    return dict(line.split(": ", 1) for line in block.strip().splitlines())


def test_documented_vector_matches_the_code() -> None:
    v = doc_vector()
    device = v["topic"].split("/")[2]
    cmd = parse_native(device, v["payload"].encode(), None)
    fields = signed_fields(v["gateway"], cmd)
    assert canonical(fields).hex() == v["signed string (hex)"]
    assert signature(v["key"].encode(), fields) == v["sig"] == cmd.signature
    keys = {v["kid"]: v["key"].encode()}
    assert verify(keys, None, fields, v["sig"]) == ""
    assert verify(keys, None, fields, v["sig"].upper()) == ""
    # the line-by-line listing in the doc is the same string
    listing = (ROOT / "docs" / "COMMANDS.md").read_text().split("line by line:", 1)[1]
    lines = listing.split("```text", 1)[1].split("```", 1)[0].strip("\n")
    assert lines.encode() == canonical(fields)


def test_documented_vector_matches_openssl(tmp_path: Path) -> None:
    """An implementation that is not ours computes the same MAC over the documented bytes."""
    v = doc_vector()
    data = tmp_path / "signed.bin"
    data.write_bytes(bytes.fromhex(v["signed string (hex)"]))
    out = subprocess.run(
        ["openssl", "dgst", "-sha256", "-hmac", v["key"], str(data)],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    assert out.strip().endswith(v["sig"])


@pytest.mark.parametrize(
    ("number", "text"),
    [  # Node.js String(x) for each, i.e. ECMAScript Number.prototype.toString (RFC 8785)
        (0.4, "0.4"),
        (1.0, "1"),
        (-0.0, "0"),
        (100, "100"),
        (1e21, "1e+21"),
        (1e20, "100000000000000000000"),
        (1.2345678901234568e20, "123456789012345680000"),
        (1e-7, "1e-7"),
        (1e-6, "0.000001"),
        (5e-324, "5e-324"),
        (1.7976931348623157e308, "1.7976931348623157e+308"),
        (0.1 + 0.2, "0.30000000000000004"),
        (-1.5, "-1.5"),
        (2**60, "1152921504606847000"),
        (12.5e3, "12500"),
        (0.405, "0.405"),
    ],
)
def test_jcs_numbers(number: float, text: str) -> None:
    assert jcs_number(number) == text


def test_iso_and_epoch_ts_are_signed_as_sent() -> None:
    """Issue #17: a command whose ts is ISO 8601 and was signed over that text verifies."""
    key = b"secret"
    for ts in ('"2026-11-23T18:00:00Z"', "1795456800000"):
        text = ts.strip('"')
        fields = SignedFields("", "gw", "c1", "lamp-1", "dim_level", 0.4, text, "n1")
        sig = signature(key, fields)
        payload = (
            f'{{"id":"c1","point":"dim_level","value":0.4,"ts":{ts},"nonce":"n1","sig":"{sig}"}}'
        )
        cmd = parse_native("lamp-1", payload.encode(), None)
        assert verify({"k": key}, "k", signed_fields("gw", cmd), sig) == ""
        assert cmd.issued_at_ms == 1795456800000


def test_every_field_is_covered() -> None:
    key = b"secret"
    base = SignedFields("k", "gw", "c1", "lamp-1", "dim_level", 0.4, "1795456800000", "n1")
    sig = signature(key, base)
    for name, other in {
        "kid": "k2",
        "gateway": "gw2",
        "id": "c2",
        "device": "lamp-2",
        "target": "lamp_switch",
        "value": 0.5,
        "ts": "1795456800001",
        "nonce": "n2",
    }.items():
        changed = SignedFields(**{**{f: getattr(base, f) for f in base.__slots__}, name: other})
        reason = verify({"k": key, "k2": key}, None, changed, sig)
        assert reason == "bad signature", name
    assert verify({"k": key}, None, base, sig) == ""
    assert verify({}, None, base, sig) == "unknown key id 'k'"


@pytest.mark.parametrize("field", ["id", "nonce", "kid", "point", "ts"])
def test_control_characters_cannot_forge_lines(field: str) -> None:
    body = {"id": "c1", "point": "dim_level", "value": 1, "ts": "2026-11-23T18:00:00Z"}
    body[field] = "a\nb"
    with pytest.raises(CommandRejected):
        parse_native("lamp-1", json.dumps(body).encode(), None)


def test_value_strings_are_escaped_as_json() -> None:
    f = SignedFields("", "gw", "c1", "d", "t", 'a"\n\u00e9', "1", "n")
    assert canonical(f).split(b"\n")[6] == '"a\\"\\né"'.encode()


def test_signature_policy_needs_ts_and_nonce() -> None:
    assert CommandsSection(require_signature=True).effective_policy()["native"] == "signature"


async def test_cityedge_sign_output_verifies(tmp_path: Path) -> None:
    key = tmp_path / "cmd.key"
    key.write_text("7b5f2c9e3a1d4f6b8e0c2a4d6f8b1e3c\n")
    args = [
        "sign",
        "--key-file",
        str(key),
        "--kid",
        "cmd_key",
        "--gateway",
        "hn-cabinet-0042",
        "--id",
        "c-8842",
        "--ts",
        "2026-11-23T18:00:00Z",
        "--nonce",
        "3f9c2a7b1e5d4c8a",
        "--topic",
        "--explain",
        "lamp-01",
        "dim_level",
        "0.4",
    ]
    proc = subprocess.run(
        [sys.executable, "-m", "agent", *args], capture_output=True, text=True, check=True
    )
    topic, payload = proc.stdout.splitlines()
    v = doc_vector()
    assert topic == v["topic"]
    assert json.loads(payload) == json.loads(v["payload"])
    assert proc.stderr.encode().rstrip(b"\n") == bytes.fromhex(v["signed string (hex)"])
    assert re.fullmatch(r"[0-9a-f]{64}", json.loads(payload)["sig"])


def test_signed_fields_of_gateway_action() -> None:
    cmd = Command("c2", "native", None, "ping", None, 1795456800000, "n")
    f = signed_fields("gw", cmd)
    assert canonical(f) == b"CITYEDGE-CMD-V1\n\ngw\nc2\n\nping\nnull\n1795456800000\nn"
