"""Modbus TCP through the whole stack (pdu -> mbap -> I/O thread -> TcpClient): against a real
pymodbus server for the function codes, and against a scripted peer for what real devices and
gateways get wrong on the wire. The stream rules alone, without sockets, are byte tables in
test_mbap_frames.py."""

from __future__ import annotations

import asyncio
import itertools
import struct
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from drivers.core.endpoint import parse_endpoint
from drivers.core.profile import Table
from drivers.device_state import Reason
from drivers.modbus import mbap_io, pdu
from drivers.modbus.adapter import (
    DeviceException,
    ModbusClient,
    NoResponse,
    NotConnected,
    Outcome,
    modbus_client,
)
from drivers.modbus.results import MAX_SILENT
from tests.drivers.modbus.conftest import TcpServer, sim_device

Reply = Callable[[int, int, bytes], Awaitable[bytes | None]]  # (tid, unit, pdu) -> raw bytes


class Peer:
    """A TCP peer that answers each request ADU with whatever ``reply`` returns (raw bytes)."""

    def __init__(self, reply: Reply) -> None:
        self.reply = reply
        self.server: asyncio.Server | None = None
        self.requests: list[tuple[int, int, bytes]] = []

    async def _handle(self, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await r.readexactly(7)
                tid, _pid, length, unit = struct.unpack(">HHHB", head)
                pdu = await r.readexactly(length - 1)
                self.requests.append((tid, unit, pdu))
                out = await self.reply(tid, unit, pdu)
                if out is None:
                    w.close()
                    return
                w.write(out)
                await w.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"tcp://127.0.0.1:{self.server.sockets[0].getsockname()[1]}"


@pytest.fixture
async def peer() -> AsyncIterator[Callable[[Reply], Awaitable[Peer]]]:
    peers: list[Peer] = []

    async def start(reply: Reply) -> Peer:
        p = Peer(reply)
        p.server = await asyncio.start_server(p._handle, "127.0.0.1", 0)
        peers.append(p)
        return p

    yield start
    for p in peers:
        assert p.server is not None
        p.server.close()


def adu(tid: int, unit: int, pdu: bytes, pid: int = 0) -> bytes:
    return struct.pack(">HHHB", tid, pid, len(pdu) + 1, unit) + pdu


async def client_for(url: str) -> ModbusClient:
    c = modbus_client(parse_endpoint(url), 0.2)
    await c.connect(1.0)
    return c


async def no_response(c: ModbusClient, address: int, timeout: float) -> NoResponse:
    """Read one holding register of unit 1, expecting NoResponse; the exception."""
    with pytest.raises(NoResponse) as exc:
        await c.read(Table.HOLDING, address, 1, 1, timeout)
    return exc.value


async def test_every_function_code_against_pymodbus(modbus_tcp_server) -> None:
    srv: TcpServer = await modbus_tcp_server(
        [
            sim_device(
                3,
                holding={0: 1, 1: 2, 2: 0xFFFF},
                inputs={5: 42},
                coils={0: True, 9: True},
                discrete={3: True},
            )
        ]
    )
    c = await client_for(srv.url)
    try:
        assert await c.read(Table.HOLDING, 0, 3, 3, 1.0) == [1, 2, 0xFFFF]
        assert await c.read(Table.INPUT, 5, 1, 3, 1.0) == [42]
        assert await c.read(Table.COIL, 0, 10, 3, 1.0) == [True] + [False] * 8 + [True]
        assert await c.read(Table.DISCRETE, 0, 4, 3, 1.0) == [False, False, False, True]
        await c.write_registers(3, 1, [7], 1.0)
        await c.write_registers(3, 0, [8, 9], 1.0)
        await c.write_coil(3, 9, False, 1.0)
        assert await c.read(Table.HOLDING, 0, 3, 3, 1.0) == [8, 9, 0xFFFF]
        assert (await c.read(Table.COIL, 0, 10, 3, 1.0))[9] is False
        with pytest.raises(DeviceException) as exc:
            await c.read(Table.HOLDING, 100, 2, 3, 1.0)
        assert (exc.value.unit, exc.value.function_code, exc.value.code) == (3, 3, 2)
    finally:
        c.close()


async def test_late_reply_to_a_timed_out_request_is_skipped(peer) -> None:
    release = asyncio.Event()

    async def reply(tid: int, unit: int, pdu: bytes) -> bytes:
        if tid == 1:  # the first answer comes after the client gave up on it
            await release.wait()
            return adu(tid, unit, b"\x03\x02\x00\x01")
        return adu(tid, unit, b"\x03\x02\x00\x02")

    p = await peer(reply)
    c = await client_for(p.url)
    assert (await no_response(c, 0, 0.05)).bad_frame is False
    release.set()
    # the stale answer (tid 1) arrives first on the stream and must not be taken for tid 2
    assert await c.read(Table.HOLDING, 0, 1, 1, 1.0) == [2]
    assert c.connected
    c.close()


@pytest.mark.parametrize(
    ("raw", "what"),
    [
        (adu(1, 1, b"\x03\x02\x00\x01", pid=7), "protocol id 7"),
        (struct.pack(">HHHB", 1, 0, 400, 1) + b"\x00" * 8, "length 400"),
        (adu(1, 9, b"\x03\x02\x00\x01"), "another unit's id"),
    ],
    ids=["protocol-id", "length", "unit-id"],
)
async def test_corrupt_stream_resets_the_connection(peer, raw: bytes, what: str) -> None:
    async def reply(tid: int, unit: int, pdu: bytes) -> bytes:
        return raw

    p = await peer(reply)
    c = await client_for(p.url)
    with pytest.raises(NotConnected, match="connection closed") as exc:
        await c.read(Table.HOLDING, 0, 1, 1, 1.0)
    assert exc.value.kind is Reason.BAD_FRAMES
    assert not c.connected, what


@pytest.mark.parametrize(
    ("pdu", "why"),
    [
        (b"\x03\x04\x00\x01", "byte count says 4, one register asked"),
        (b"\x03\x02\x00", "truncated data"),
        (b"\x04\x02\x00\x01", "answer for another function code"),
        (b"\x83", "exception PDU without its code"),
    ],
    ids=["byte-count", "truncated", "function-code", "exception"],
)
async def test_malformed_pdu_is_a_bad_frame(peer, pdu: bytes, why: str) -> None:
    async def reply(tid: int, unit: int, _: bytes) -> bytes:
        return adu(tid, unit, pdu)

    p = await peer(reply)
    c = await client_for(p.url)
    assert (await no_response(c, 0, 1.0)).bad_frame, why
    assert c.connected  # the frame boundaries were fine: the stream is still usable
    c.close()


async def test_silence_and_partial_frames(peer) -> None:
    """Link supervision (issue 15): a peer that goes quiet keeps the connection for one
    timeout, is dropped after MAX_SILENT in a row; half a frame older than the timeout drops
    it at once (the stream position is lost)."""

    async def reply(tid: int, unit: int, pdu: bytes) -> bytes:
        if pdu[1:3] == b"\x00\x00":
            await asyncio.sleep(3600)  # address 0: never answers
        return adu(tid, unit, b"\x03\x02\x00\x01")[:8]  # address 1: half a frame

    p = await peer(reply)
    c = await client_for(p.url)
    assert MAX_SILENT == 2
    assert (await no_response(c, 0, 0.05)).bad_frame is False
    assert c.connected
    with pytest.raises(NotConnected, match="2 timeouts in a row") as exc:
        await c.read(Table.HOLDING, 0, 1, 1, 0.05)
    assert exc.value.kind is Reason.TIMEOUT and not c.connected
    c = await client_for(p.url)
    with pytest.raises(NotConnected, match="partial frame older than the timeout") as exc:
        await c.read(Table.HOLDING, 1, 1, 1, 0.05)
    assert exc.value.kind is Reason.BAD_FRAMES and not c.connected


async def test_peer_closing_mid_request_is_not_connected(peer) -> None:
    async def reply(tid: int, unit: int, pdu: bytes) -> None:
        return None

    p = await peer(reply)
    c = await client_for(p.url)
    with pytest.raises(NotConnected):
        await c.read(Table.HOLDING, 0, 1, 1, 1.0)
    assert not c.connected
    with pytest.raises(NotConnected):
        await c.read(Table.HOLDING, 0, 1, 1, 1.0)


async def test_connect_refused_is_not_connected() -> None:
    srv = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = srv.sockets[0].getsockname()[1]
    srv.close()
    await srv.wait_closed()
    c = modbus_client(parse_endpoint(f"tcp://127.0.0.1:{port}"), 0.2)
    with pytest.raises(NotConnected, match="ConnectionRefusedError") as exc:
        await c.connect(1.0)
    assert exc.value.kind is Reason.REFUSED


async def test_request_adu_on_the_wire(peer) -> None:
    async def reply(tid: int, unit: int, pdu: bytes) -> bytes:
        return adu(tid, unit, pdu[:5] if pdu[0] == 16 else pdu)

    p = await peer(reply)
    c = await client_for(p.url)
    await c.write_registers(17, 0x0102, [0xABCD, 1], 1.0)
    await c.write_coil(17, 5, True, 1.0)
    assert p.requests == [
        (1, 17, bytes.fromhex("10 0102 0002 04 ABCD 0001")),
        (2, 17, bytes.fromhex("05 0005 FF00")),
    ]
    c.close()


def test_on_uvloop(monkeypatch: pytest.MonkeyPatch) -> None:
    """uvloop's transports are not asyncio.Transport subclasses; the MBAP stream must not care."""
    from agent.ops import eventloop

    monkeypatch.setenv(eventloop.ENV, "uvloop")

    async def main() -> list[int] | list[bool]:
        async def reply(tid: int, unit: int, pdu: bytes) -> bytes:
            return adu(tid, unit, b"\x03\x04\x00\x07\x00\x08")

        srv = Peer(reply)
        srv.server = await asyncio.start_server(srv._handle, "127.0.0.1", 0)
        try:
            c = await client_for(srv.url)
            try:
                assert type(asyncio.get_running_loop()).__module__.startswith("uvloop")
                return await c.read(Table.HOLDING, 0, 2, 1, 1.0)
            finally:
                c.close()
        finally:
            srv.server.close()

    assert eventloop.run(main()) == [7, 8]


# --- batches: ``transact`` on the I/O thread (drivers/modbus/mbap_io.py) ----------------------
def reads(n: int, unit: int = 1) -> list[tuple[int, bytes]]:
    """FC03 of one register at each of the addresses 0..n-1."""
    return [(unit, pdu.read(Table.HOLDING, i, 1)) for i in range(n)]


def values(o: Outcome, address: int, unit: int = 1) -> list[int] | list[bool]:
    """The register read by outcome ``o`` of ``reads(n)[address]`` (or its error, raised)."""
    return pdu.parse(unit, pdu.read(Table.HOLDING, address, 1), o.reply())


def all_values(got: list[Outcome]) -> list[list[int] | list[bool]]:
    return [values(o, i) for i, o in enumerate(got)]


def register_reply(tid: int, unit: int, pdu: bytes) -> bytes:
    """FC03 of one register: the register's address as its value."""
    return adu(tid, unit, b"\x03\x02" + pdu[1:3])


async def answer(tid: int, unit: int, pdu: bytes) -> bytes:
    """FC03 as ``register_reply``, FC06 echoed."""
    return adu(tid, unit, pdu) if pdu[0] == 6 else register_reply(tid, unit, pdu)


async def test_batch_sends_one_request_after_the_other(peer) -> None:
    arrived: list[float] = []

    async def reply(tid: int, unit: int, pdu: bytes) -> bytes:
        arrived.append(time.monotonic())
        await asyncio.sleep(0.03)
        return register_reply(tid, unit, pdu)

    p = await peer(reply)
    c = await client_for(p.url)
    got = await c.transact(reads(4), 1.0)
    assert all_values(got) == [[0], [1], [2], [3]]
    # never two requests in flight: many serial gateways behind Modbus TCP cannot queue them
    assert all(b - a >= 0.025 for a, b in itertools.pairwise(arrived))
    assert [tid for tid, _, _ in p.requests] == [1, 2, 3, 4]
    for g in got:  # each read carries its own wire times and receive time
        assert 0.025 <= g.end - g.start < 0.5
        assert abs(g.wall_ms - time.time() * 1000) < 5000
    assert got[3].start >= got[0].end
    c.close()


async def test_batch_stops_at_a_timeout_and_the_stream_stays_usable(peer) -> None:
    async def reply(tid: int, unit: int, pdu: bytes) -> bytes:
        if pdu[1:3] == b"\x00\x01":
            await asyncio.sleep(0.2)  # address 1 answers after the client gave up
        return register_reply(tid, unit, pdu)

    p = await peer(reply)
    c = await client_for(p.url)
    got = await c.transact(reads(4), 0.05)
    assert len(got) == 2 and values(got[0], 0) == [0]
    with pytest.raises(NoResponse) as exc:
        values(got[1], 1)
    assert exc.value.bad_frame is False
    assert len(p.requests) == 2  # addresses 2 and 3 were never sent: the bus owner decides
    await asyncio.sleep(0.25)  # the late answer to address 1 arrives and is skipped
    assert all_values(await c.transact(reads(2), 1.0)) == [[0], [1]]
    c.close()


async def test_exception_reply_does_not_stop_a_batch(peer) -> None:
    async def reply(tid: int, unit: int, pdu: bytes) -> bytes:
        if pdu[1:3] == b"\x00\x01":
            return adu(tid, unit, b"\x83\x02")
        return register_reply(tid, unit, pdu)

    p = await peer(reply)
    c = await client_for(p.url)
    got = await c.transact(reads(3), 1.0)
    assert len(got) == 3 and values(got[2], 2) == [2]
    with pytest.raises(DeviceException) as exc:
        values(got[1], 1)
    assert exc.value.code == 2
    c.close()


async def test_cut_batch_ends_after_the_read_in_flight(peer) -> None:
    async def reply(tid: int, unit: int, pdu: bytes) -> bytes:
        await asyncio.sleep(0.03)
        return await answer(tid, unit, pdu)

    p = await peer(reply)
    c = await client_for(p.url)
    task = asyncio.create_task(c.transact(reads(10), 1.0))
    await asyncio.sleep(0.045)  # the second read is in flight
    c.cut()
    got = await task
    assert all_values(got) == [[0], [1]]
    assert len(p.requests) == 2
    await c.write_registers(1, 0, [5], 1.0)  # a write goes out right after
    c.close()


async def test_cancelled_batch_sends_nothing_more(peer) -> None:
    async def reply(tid: int, unit: int, pdu: bytes) -> bytes:
        await asyncio.sleep(0.03)
        return register_reply(tid, unit, pdu)

    p = await peer(reply)
    c = await client_for(p.url)
    task = asyncio.create_task(c.transact(reads(10), 1.0))
    await asyncio.sleep(0.045)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await asyncio.sleep(0.1)
    assert len(p.requests) == 2
    # the reply to the abandoned read is skipped; the next batch gets its own answers
    assert all_values(await c.transact(reads(2), 1.0)) == [[0], [1]]
    c.close()


async def test_peer_closing_mid_batch_is_not_connected(peer) -> None:
    async def reply(tid: int, unit: int, pdu: bytes) -> bytes | None:
        return None if pdu[1:3] == b"\x00\x01" else register_reply(tid, unit, pdu)

    p = await peer(reply)
    c = await client_for(p.url)
    got = await c.transact(reads(3), 1.0)
    assert len(got) == 2 and values(got[0], 0) == [0]
    with pytest.raises(NotConnected):
        values(got[1], 1)
    assert not c.connected
    with pytest.raises(NotConnected):
        await c.transact(reads(1), 1.0)


async def test_io_thread_ends_with_the_last_connection(peer) -> None:
    p = await peer(answer)
    clients = [await client_for(p.url) for _ in range(3)]
    # the three connections run their batches at the same time on the one thread
    results = await asyncio.gather(*(c.transact(reads(3), 1.0) for c in clients))
    assert [all_values(r) for r in results] == [[[0], [1], [2]]] * 3
    assert [t.name for t in threading.enumerate()].count("cityedge-mbap") == 1
    for c in clients:
        c.close()
    async with asyncio.timeout(2):
        while any(t.name == "cityedge-mbap" for t in threading.enumerate()):
            await asyncio.sleep(0.01)


async def test_batches_of_one_tick_reach_the_loop_together(peer, monkeypatch) -> None:
    async def slow(tid: int, unit: int, pdu: bytes) -> bytes:
        await asyncio.sleep(0.01)
        return register_reply(tid, unit, pdu)

    async def stuck(tid: int, unit: int, pdu: bytes) -> bytes:
        await asyncio.sleep(3600)
        return b""

    fast_peer, slow_peer, stuck_peer = await peer(answer), await peer(slow), await peer(stuck)
    fast, slower, dead = [await client_for(p.url) for p in (fast_peer, slow_peer, stuck_peer)]
    done: dict[str, float] = {}

    async def run(name: str, c: ModbusClient, n: int, timeout: float) -> None:
        await c.transact(reads(n), timeout)
        done[name] = time.monotonic()

    # one loop wake-up for both: the fast bus's replies wait for the slow bus's (~40 ms; the
    # bound is raised so that a loaded machine cannot make this test flaky)
    monkeypatch.setattr(mbap_io, "HOLD_MAX", 2.0)
    t0 = time.monotonic()
    await asyncio.gather(run("fast", fast, 1, 1.0), run("slow", slower, 4, 1.0))
    assert done["slow"] - t0 >= 0.035
    assert abs(done["fast"] - done["slow"]) < 0.01
    # but never longer than HOLD_MAX: a bus waiting out a timeout does not hold the others
    monkeypatch.setattr(mbap_io, "HOLD_MAX", 0.05)
    t0 = time.monotonic()
    await asyncio.gather(run("fast", fast, 1, 1.0), run("dead", dead, 1, 0.8))
    assert done["fast"] - t0 < 0.5
    assert done["dead"] - t0 >= 0.8
    for c in (fast, slower, dead):
        c.close()


class Dribble:
    """A socket that takes one byte per ``send`` (after refusing the first one outright): what
    a nearly full socket buffer does to a request."""

    def __init__(self, sock: Any) -> None:
        self.sock = sock
        self.calls = 0

    def send(self, data: bytes) -> int:
        self.calls += 1
        if self.calls == 1:
            raise BlockingIOError
        return int(self.sock.send(data[:1]))

    def __getattr__(self, name: str) -> Any:
        return getattr(self.sock, name)


async def test_a_request_the_socket_takes_in_pieces_goes_out_whole(peer) -> None:
    """``sock.send`` may write less than asked; the rest goes out as the socket has room again,
    so the stream never loses a byte (the I/O thread used to ignore what send returned)."""
    p = await peer(answer)
    c = await client_for(p.url)
    conn = c._conn  # type: ignore[attr-defined]
    conn.sock = slow = Dribble(conn.sock)
    got = await c.transact(reads(3), 1.0)
    assert all_values(got) == [[0], [1], [2]]
    assert slow.calls >= 3 * 12  # one byte at a time, every request whole at the peer
    assert [pdu_ for _, _, pdu_ in p.requests] == [r for _, r in reads(3)]
    await c.write_registers(1, 0, [0xABCD], 1.0)  # FC06, answered with its echo
    c.close()
