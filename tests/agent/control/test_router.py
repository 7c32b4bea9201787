"""Every rejection path of the router, with a recording writer standing in for the bus."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.config.gateway import CommandsSection, DeviceConfig
from agent.config.profile import Profile
from agent.control.audit import AuditLog
from agent.control.model import Command, CommandRejected, CommandStatus
from agent.control.parse import parse_iota, parse_native
from agent.control.router import CommandRouter, nonce_window, signed_fields
from agent.control.signing import signature
from agent.control.store import CommandStore
from agent.reading import Value
from drivers.base import DeviceBinding, WriteResult, WriteStatus

PROFILE = Profile.model_validate(
    {
        "id": "t/lamp",
        "kind": "streetlight",
        "points": [
            {
                "name": "dimLevel",
                "metric": "dimmingLevel",
                "address": 0,
                "writable": True,
                "min": 0,
                "max": 100,
            },
            {"name": "lampOn", "address": 1, "type": "bit", "bit": 0, "writable": True},
            {"name": "mode", "address": 2, "writable": True, "enum": {0: "auto", 1: "manual"}},
            {"name": "power", "table": "input", "address": 0, "type": "float32"},
        ],
    }
)
NOW = 1_795_000_000.0


class Clock:
    def __init__(self) -> None:
        self.t = NOW

    def __call__(self) -> float:
        return self.t


class RecordingWriter:
    def __init__(self, result: WriteResult | None = None) -> None:
        self.writes: list[tuple[str, str, Value]] = []
        self.result = result

    async def __call__(self, device: str, point: str, value: Value, timeout: float) -> WriteResult:
        self.writes.append((device, point, value))
        return self.result or WriteResult(WriteStatus.OK, readback=value)


KEY = b"k" * 32


def sign(key: bytes, command: Command) -> str:
    return signature(key, signed_fields("gw", command))


def make(
    tmp_path: Path,
    writer: RecordingWriter | None = None,
    clock: Clock | None = None,
    **policy: object,
) -> tuple[CommandRouter, RecordingWriter, Clock]:
    """A router on a durable store in ``tmp_path``: a second call on the same directory is
    the same gateway after a restart."""
    binding = DeviceBinding("gw", DeviceConfig(id="lamp-1", bus="b", profile="t/lamp"), PROFILE)
    writer = writer or RecordingWriter()
    clock = clock or Clock()
    section = CommandsSection(**policy)  # type: ignore[arg-type]

    async def ping(_: Command) -> str | None:
        return None

    router = CommandRouter(
        section,
        [binding],
        writer,  # type: ignore[arg-type]
        AuditLog(tmp_path / "audit.jsonl"),
        gateway_id="gw",
        keys={"k": KEY},
        default_kid="k",
        actions={"ping": ping},
        clock=clock,
        store=CommandStore(
            tmp_path / "commands.sqlite",
            window=section.dedup_window,
            nonce_window=nonce_window(section),
            clock=clock,
        ),
    )
    return router, writer, clock


def cmd(target: str = "dimLevel", value: Value = 40, cid: str = "c1", **kw: object) -> Command:
    return Command(
        cid,
        "native",
        kw.pop("device", "lamp-1"),
        target,
        value,  # type: ignore[arg-type]
        issued_at_ms=kw.pop("ts", int(NOW * 1000)),
        **kw,
    )  # type: ignore[arg-type]


async def test_ok_write_and_audit(tmp_path: Path) -> None:
    router, writer, _ = make(tmp_path)
    res = await router.execute(cmd())
    assert res.status is CommandStatus.OK and res.value == 40
    assert writer.writes == [("lamp-1", "dimLevel", 40)]
    entry = json.loads((tmp_path / "audit.jsonl").read_text().splitlines()[0])
    assert entry["id"] == "c1" and entry["result"] == "ok" and entry["value"] == 40


@pytest.mark.parametrize(
    ("command", "reason"),
    [
        (cmd(device="ghost"), "unknown device 'ghost'"),
        (cmd("power", 1.0), "read-only"),
        (cmd("nope", 1), "has no point 'nope'"),
        (cmd("dimLevel", 140), "above the maximum 100"),
        (cmd("dimLevel", -1), "below the minimum 0"),
        (cmd("dimLevel", "bright"), "expects a number"),
        (cmd("dimLevel", True), "expects a number"),
        (cmd("lampOn", 2), "expects true/false"),
        (cmd("mode", "turbo"), "expects one of auto, manual"),
        (cmd(ts=int((NOW - 3600) * 1000)), "stale"),
        (cmd(ts=int((NOW + 3600) * 1000)), "future"),
        (cmd("reboot", device=None), "unknown gateway action"),
    ],
)
async def test_rejections_never_write(tmp_path: Path, command: Command, reason: str) -> None:
    router, writer, _ = make(tmp_path)
    res = await router.execute(command)
    assert res.status is CommandStatus.REJECTED
    assert res.reason is not None and reason in res.reason
    assert writer.writes == []


async def test_duplicate_id_answers_again_without_writing(tmp_path: Path) -> None:
    router, writer, clock = make(tmp_path)
    first = await router.execute(cmd())
    clock.t += 10
    again = await router.execute(cmd(value=80))
    assert again.duplicate and again.status is first.status and again.value == 40
    assert len(writer.writes) == 1
    clock.t += 4000  # past the dedup window: a new command with that id executes
    later = await router.execute(cmd(ts=int(clock.t * 1000)))
    assert not later.duplicate and len(writer.writes) == 2


async def test_rate_limit_per_device(tmp_path: Path) -> None:
    router, _writer, clock = make(tmp_path, rate_per_minute=3)
    results = [await router.execute(cmd(cid=f"c{i}")) for i in range(5)]
    assert [r.status for r in results].count(CommandStatus.OK) == 3
    assert "rate limit" in (results[-1].reason or "")
    clock.t += 61
    assert (await router.execute(cmd(cid="c9", ts=int(clock.t * 1000)))).status is CommandStatus.OK


async def test_signatures(tmp_path: Path) -> None:
    router, writer, _ = make(tmp_path, require_signature=True)
    unsigned = await router.execute(cmd())
    assert unsigned.status is CommandStatus.REJECTED and "requires signed" in (unsigned.reason or "")
    good = cmd(cid="s1", nonce="n1")
    good = Command(
        **{
            **{f: getattr(good, f) for f in good.__slots__},  # type: ignore[arg-type]
            "signature": sign(b"k" * 32, good),
        }
    )
    forged = Command(
        **{
            **{f: getattr(good, f) for f in good.__slots__},  # type: ignore[arg-type]
            "id": "s2",
            "nonce": "n2",
            "value": 100,
        }
    )
    assert (await router.execute(forged)).reason == "bad signature"
    assert (await router.execute(good)).status is CommandStatus.OK
    replay = Command(
        **{
            **{f: getattr(good, f) for f in good.__slots__},  # type: ignore[arg-type]
            "id": "s3",
        }
    )
    assert (await router.execute(replay)).status is CommandStatus.REJECTED
    assert writer.writes == [("lamp-1", "dimLevel", 40)]


async def test_device_errors_map_to_status(tmp_path: Path) -> None:
    router, writer, _ = make(tmp_path)
    writer.result = WriteResult(WriteStatus.FAILED, "exception 2")
    assert (await router.execute(cmd(cid="f"))).status is CommandStatus.FAILED
    writer.result = WriteResult(WriteStatus.TIMEOUT, "no answer")
    assert (await router.execute(cmd(cid="t"))).status is CommandStatus.TIMEOUT


async def test_gateway_ping_and_metric_alias(tmp_path: Path) -> None:
    router, writer, _ = make(tmp_path)
    assert (await router.execute(cmd("ping", None, "p", device=None))).status is CommandStatus.OK
    res = await router.execute(cmd("dimmingLevel", 10, "m"))
    assert res.status is CommandStatus.OK and writer.writes[-1] == ("lamp-1", "dimLevel", 10)


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"{not json", "malformed JSON"),
        (b"[1,2]", "JSON object"),
        (b'{"point":"dimLevel","value":1}', "missing 'id'"),
        (b'{"id":"x","value":1}', "missing 'point'"),
        (b'{"id":"x","point":"dimLevel","value":NaN}', "malformed JSON"),
        (b'{"id":"x","point":"dimLevel","value":{"a":1}}', "value must be"),
        (b'{"id":"x","point":"dimLevel","value":1,"ts":"yesterday"}', "bad timestamp"),
        (b'{"id":"x","point":"dimLevel","value":1,"extra":1}', "unknown field"),
        (b"\xff\xfe", "malformed JSON"),
    ],
)
def test_malformed_native_payloads(payload: bytes, reason: str) -> None:
    with pytest.raises(CommandRejected) as info:
        parse_native("lamp-1", payload, None)
    assert reason in info.value.reason


def test_iota_convention() -> None:
    topic = "/k/lamp-1/cmd"
    c = parse_iota("lamp-1", b'{"dimmingLevel": 30}', topic, "/k/lamp-1/cmdexe")
    assert (c.target, c.value) == ("dimmingLevel", 30) and c.id.startswith("iota-")
    # the same bytes on the same topic are the same command (a redelivery), others are not
    assert parse_iota("lamp-1", b'{"dimmingLevel": 30}', topic, "x").id == c.id
    assert parse_iota("lamp-1", b'{"dimmingLevel": 31}', topic, "x").id != c.id
    assert parse_iota("lamp-2", b'{"dimmingLevel": 30}', "/k/lamp-2/cmd", "x").id != c.id
    with pytest.raises(CommandRejected):
        parse_iota("lamp-1", b'{"a": 1, "b": 2}', topic, "x")


@settings(max_examples=300, deadline=None)
@given(
    st.binary(max_size=300)
    | st.builds(
        lambda d: json.dumps(d).encode(),
        st.dictionaries(
            st.sampled_from(["id", "point", "value", "ts", "nonce", "sig", "x"]),
            st.none()
            | st.booleans()
            | st.integers()
            | st.floats()
            | st.text(max_size=8)
            | st.lists(st.integers(), max_size=2),
            max_size=6,
        ),
    )
)
async def test_fuzz_payloads_never_crash_and_never_write_invalid(payload: bytes) -> None:
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        router, writer, _ = make(Path(tmp))
        try:
            command = parse_native("lamp-1", payload, None)
        except CommandRejected:
            return
        res = await router.execute(command)
        for _, point, value in writer.writes:
            assert point == "dimLevel" or point in ("lampOn", "mode")
            if point == "dimLevel":
                assert isinstance(value, int | float) and 0 <= value <= 100
        assert res.status in (CommandStatus.OK, CommandStatus.REJECTED)
