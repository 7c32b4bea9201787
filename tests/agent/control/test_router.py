"""Every rejection path of the router, with a recording writer standing in for the bus."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.config.gateway import CommandsSection
from agent.control.audit import AuditLog
from agent.control.model import Command, CommandRejected, CommandStatus
from agent.control.parse import parse_iota, parse_native
from agent.control.router import CommandRouter, nonce_window, signed_fields
from agent.control.signing import signature
from agent.control.store import CommandStore
from drivers.base import DeviceBinding, WriteResult, WriteStatus
from drivers.core.config import DeviceConfig
from drivers.core.profile import Profile
from drivers.core.reading import Value

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
    durable: bool = True,
    **policy: object,
) -> tuple[CommandRouter, RecordingWriter, Clock]:
    """A router on a durable store in ``tmp_path``: a second call on the same directory is
    the same gateway after a restart."""
    binding = DeviceBinding("gw", DeviceConfig(id="lamp-1", bus="b", profile="t/lamp"), PROFILE)
    writer = writer or RecordingWriter()
    clock = clock or Clock()
    section = CommandsSection(**policy)

    async def ping(_: Command) -> str | None:
        return None

    router = CommandRouter(
        section,
        [binding],
        writer,
        AuditLog(tmp_path / "audit.jsonl"),
        gateway_id="gw",
        keys={"k": KEY},
        default_kid="k",
        actions={"ping": ping},
        clock=clock,
        store=CommandStore(
            tmp_path / "commands.sqlite" if durable else None,
            window=section.dedup_window,
            nonce_window=nonce_window(section),
            clock=clock,
        ),
    )
    return router, writer, clock


def cmd(target: str = "dimLevel", value: Value = 40, cid: str = "c1", **kw: Any) -> Command:
    return Command(
        cid,
        kw.pop("source", "native"),
        kw.pop("device", "lamp-1"),
        target,
        value,
        issued_at_ms=kw.pop("ts", int(NOW * 1000)),
        **kw,
    )


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
        (cmd("config", device=None), "config updates go to"),  # not as a native action
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
    assert unsigned.status is CommandStatus.REJECTED and "requires signed" in (
        unsigned.reason or ""
    )
    good = cmd(cid="s1", nonce="n1")
    good = Command(
        **{
            **{f: getattr(good, f) for f in good.__slots__},
            "signature": sign(b"k" * 32, good),
        }
    )
    forged = Command(
        **{
            **{f: getattr(good, f) for f in good.__slots__},
            "id": "s2",
            "nonce": "n2",
            "value": 100,
        }
    )
    assert (await router.execute(forged)).reason == "bad signature"
    assert (await router.execute(good)).status is CommandStatus.OK
    replay = Command(
        **{
            **{f: getattr(good, f) for f in good.__slots__},
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
        router, writer, _ = make(Path(tmp), durable=False)  # about parsing, not durability
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


def audit_ids(tmp_path: Path) -> list[str]:
    return [json.loads(x)["id"] for x in (tmp_path / "audit.jsonl").read_text().splitlines()]


async def test_replay_after_restart_is_answered_not_written(tmp_path: Path) -> None:
    """Issue #17 item 1: the same id after a restart, with a fresh ts, does not write again."""
    router, writer, clock = make(tmp_path)
    first = await router.execute(cmd(cid="b-ok-2", value=50))
    router.store.close()
    clock.t += 90
    router2, _, _ = make(tmp_path, writer=writer, clock=clock)  # the restarted agent
    again = await router2.execute(cmd(cid="b-ok-2", value=70, ts=int(clock.t * 1000)))
    assert again.duplicate and again.to_dict() == {**first.to_dict(), "duplicate": True}
    assert writer.writes == [("lamp-1", "dimLevel", 50)]
    records = [json.loads(x) for x in (tmp_path / "audit.jsonl").read_text().splitlines()]
    assert [(r["id"], r["duplicate"]) for r in records] == [("b-ok-2", False), ("b-ok-2", True)]


async def test_nonces_and_rate_limit_survive_a_restart(tmp_path: Path) -> None:
    router, writer, clock = make(
        tmp_path, require_signature=True, hmac_secret="k", rate_per_minute=2
    )
    signed = cmd(cid="s1", nonce="n1")
    signed = Command(
        **{**{f: getattr(signed, f) for f in signed.__slots__}, "signature": sign(KEY, signed)}
    )
    assert (await router.execute(signed)).status is CommandStatus.OK
    router.store.close()
    router2, _, _ = make(
        tmp_path,
        writer=writer,
        clock=clock,
        require_signature=True,
        hmac_secret="k",
        rate_per_minute=2,
    )
    reuse = cmd(cid="s2", nonce="n1")
    reuse = Command(
        **{**{f: getattr(reuse, f) for f in reuse.__slots__}, "signature": sign(KEY, reuse)}
    )
    res = await router2.execute(reuse)
    assert res.status is CommandStatus.REJECTED and "nonce already used" in (res.reason or "")
    third = cmd(cid="s3", nonce="n3")
    third = Command(
        **{**{f: getattr(third, f) for f in third.__slots__}, "signature": sign(KEY, third)}
    )
    assert (await router2.execute(third)).status is CommandStatus.OK
    fourth = cmd(cid="s4", nonce="n4")
    fourth = Command(
        **{**{f: getattr(fourth, f) for f in fourth.__slots__}, "signature": sign(KEY, fourth)}
    )
    res = await router2.execute(fourth)
    assert "rate limit" in (res.reason or "")  # 2 per minute, one of them before the restart
    assert len(writer.writes) == 2


async def test_an_unsigned_copy_does_not_poison_the_signed_command(tmp_path: Path) -> None:
    router, writer, _ = make(tmp_path, require_signature=True, hmac_secret="k")
    assert (await router.execute(cmd(cid="x1", value=99))).status is CommandStatus.REJECTED
    real = cmd(cid="x1", nonce="n")
    real = Command(
        **{**{f: getattr(real, f) for f in real.__slots__}, "signature": sign(KEY, real)}
    )
    res = await router.execute(real)
    assert res.status is CommandStatus.OK and not res.duplicate
    assert writer.writes == [("lamp-1", "dimLevel", 40)]


async def test_a_group_is_validated_and_rejected_whole(tmp_path: Path) -> None:
    """Issue #17 item 6: a DCMD with one valid and one invalid metric executes nothing."""
    router, writer, _ = make(tmp_path)
    results = await router.execute_all(
        [
            cmd("dimLevel", 30, "g-0", source="sparkplug"),
            cmd("mode", "turbo", "g-1", source="sparkplug"),
        ]
    )
    assert [r.status for r in results] == [CommandStatus.REJECTED] * 2
    assert "not executed: mode was rejected" in (results[0].reason or "")
    assert "expects one of" in (results[1].reason or "")
    assert writer.writes == []
    assert audit_ids(tmp_path) == ["g-0", "g-1"]
    ok = await router.execute_all(
        [
            cmd("dimLevel", 30, "h-0", source="sparkplug"),
            cmd("mode", "manual", "h-1", source="sparkplug"),
        ]
    )
    assert [r.status for r in ok] == [CommandStatus.OK] * 2
    assert writer.writes == [("lamp-1", "dimLevel", 30), ("lamp-1", "mode", "manual")]


async def test_a_failed_write_stops_the_rest_of_its_group(tmp_path: Path) -> None:
    router, writer, _ = make(tmp_path)
    writer.result = WriteResult(WriteStatus.TIMEOUT, "no answer")
    results = await router.execute_all([cmd("dimLevel", 30, "f-0"), cmd("mode", "manual", "f-1")])
    assert [r.status for r in results] == [CommandStatus.TIMEOUT, CommandStatus.REJECTED]
    assert len(writer.writes) == 1


async def test_rounding_to_the_register_is_reported(tmp_path: Path) -> None:
    """Issue #17 item 6: 0.405 on a 0.01 register is written as 0.4 and the answer says so."""
    scaled = PROFILE.model_copy(
        update={
            "points": (
                PROFILE.points[0].model_copy(update={"scale": 0.01, "min": 0, "max": 1}),
                *PROFILE.points[1:],
            )
        }
    )
    router, writer, _ = make(tmp_path)
    router.set_bindings(
        [DeviceBinding("gw", DeviceConfig(id="lamp-1", bus="b", profile="t/lamp"), scaled)]
    )
    writer.result = WriteResult(WriteStatus.OK, readback=0.7000000000000001)
    exact = await router.execute(cmd(value=0.7, cid="r0"))
    assert exact.to_dict() == {
        "id": "r0",
        "status": "ok",
        "device": "lamp-1",
        "target": "dimLevel",
        "value": 0.7,
    }
    writer.result = WriteResult(WriteStatus.OK, readback=40 * 0.01)  # what the register gives
    res = await router.execute(cmd(value=0.405, cid="r1"))
    assert res.value == 0.4 and res.requested == 0.405
    assert res.to_dict()["requested"] == 0.405
    last = json.loads((tmp_path / "audit.jsonl").read_text().splitlines()[-1])
    assert (last["value"], last["written"]) == (0.405, 0.4)


async def test_concurrent_copies_of_an_id_write_once(tmp_path: Path) -> None:
    import asyncio

    gate = asyncio.Event()

    class Slow(RecordingWriter):
        async def __call__(
            self, device: str, point: str, value: Value, timeout: float
        ) -> WriteResult:
            await gate.wait()
            return await super().__call__(device, point, value, timeout)

    router, writer, _ = make(tmp_path, writer=Slow())
    tasks = [asyncio.create_task(router.execute(cmd(cid="same"))) for _ in range(3)]
    await asyncio.sleep(0.05)
    gate.set()
    results = await asyncio.gather(*tasks)
    assert len(writer.writes) == 1
    assert sorted(r.duplicate for r in results) == [False, True, True]
    assert audit_ids(tmp_path) == ["same"] * 3


CHANNEL_CASES = [
    # (channel, policy, signed?, accepted?)
    ("native", "signature", False, False),
    ("native", "signature", True, True),
    ("native", "broker", False, True),
    ("native", "broker", True, True),
    ("native", "off", True, False),
    ("config", "off", False, False),
    ("sparkplug", "broker", False, True),
    ("sparkplug", "off", False, False),
    ("iota", "broker", False, True),
    ("iota", "off", False, False),
]


@pytest.mark.parametrize(("channel", "policy", "signed", "accepted"), CHANNEL_CASES)
async def test_each_channel_under_each_policy(
    tmp_path: Path, channel: str, policy: str, signed: bool, accepted: bool
) -> None:
    router, writer, _ = make(tmp_path, hmac_secret="k", policy={channel: policy})
    c = cmd(cid="p1", nonce="n1" if signed else None, source=channel)
    if signed:
        c = Command(**{**{f: getattr(c, f) for f in c.__slots__}, "signature": sign(KEY, c)})
    res = await router.execute(c)
    assert (res.status is CommandStatus.OK) is accepted, res
    assert len(writer.writes) == (1 if accepted else 0)
    assert audit_ids(tmp_path) == ["p1"]


async def test_require_signature_leaves_other_channels_alone(tmp_path: Path) -> None:
    """Issue #17 item 2: Sparkplug, the IoT Agent and the local CLI are not blocked."""
    from agent.control.peer import of_process

    router, writer, _ = make(tmp_path, require_signature=True, hmac_secret="k")
    for i, source in enumerate(("sparkplug", "iota")):
        assert (await router.execute(cmd(cid=f"o{i}", source=source))).status is CommandStatus.OK
    me = of_process()
    local = cmd(cid="l1", source="local", peer=me, origin=me.user)
    assert (await router.execute(local)).status is CommandStatus.OK
    assert len(writer.writes) == 3


async def test_local_channel_checks_peer_credentials(tmp_path: Path) -> None:
    from agent.control.model import PeerCred

    router, writer, _ = make(tmp_path, local_group="nogroup")
    stranger = PeerCred(4242, 54321, 54321, (), "uid 54321")
    res = await router.execute(cmd(cid="l1", source="local", peer=stranger, origin="uid 54321"))
    assert res.status is CommandStatus.REJECTED
    assert res.reason == "user 'uid 54321' is neither root nor in group 'nogroup'"
    member = PeerCred(4243, 54321, 54321, (65534,), "uid 54321")
    ok = await router.execute(cmd(cid="l2", source="local", peer=member, origin="uid 54321"))
    assert ok.status is CommandStatus.OK
    assert writer.writes == [("lamp-1", "dimLevel", 40)]
    users = [json.loads(x).get("user") for x in (tmp_path / "audit.jsonl").read_text().splitlines()]
    assert users == ["uid 54321", "uid 54321"]
