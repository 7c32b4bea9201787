"""The I/O thread under every Modbus TCP connection: MBAP transactions run as batches.

Why a thread: a poll is a request/reply pair, and on the asyncio loop each reply costs a full
loop wake-up (selector, handle, transport, future, task step), about 70-120 us of CPU per
transaction on a small VM, against ~20 us for the same exchange on a plain epoll loop. At
50 devices x 2 requests a second that alone was half the agent's CPU. So the bus owner hands
the requests of a whole tick (every due device of its bus) to this thread as one batch; the
thread sends each request as soon as the previous reply is in and wakes the event loop once,
with every reply and its receive time. The bus owner stays the single owner of its bus: the
thread never decides anything, it only moves bytes and keeps the stream rules below.

Stream rules (a TCP stream has no resynchronisation point):
- a reply whose transaction id is not the one in flight is a late answer to a request that
  timed out: skipped;
- a header that cannot be Modbus (protocol id != 0, length outside 2..254) or the wrong unit id
  means the stream is corrupt: the connection is closed and the request fails as a bad frame,
  so the bus owner reconnects on a clean stream;
- link supervision (issue 15): a partial frame still incomplete when the request times out (a
  peer that sent half a reply and went quiet), or ``MAX_SILENT`` timeouts in a row with no
  reply of ours in between (a peer that accepted and stopped reading, a frozen process),
  close the connection as well. Keeping such a socket only keeps the bus dead.

A batch stops at its first timeout or lost link (the bus owner decides what to retry), or
when the bus owner cuts it short because a write must go out next; a Modbus exception reply
is an answer like any other and the batch goes on.

One thread serves every connection of the process through one epoll set; it starts with the
first connection and ends when the last one is closed. All shared state is guarded by one
lock; the GIL makes the lock uncontended in practice.

A finished batch is handed over when no other batch is running, or after ``HOLD_MAX`` (50 ms)
at most: with aligned polls every bus's batch of a tick then reaches the loop in one wake-up,
and the loop decodes and forwards the whole tick in one pass while its code is warm in the
caches (the readings keep their own receive times). A bus stuck in a timeout holds the others
back by no more than ``HOLD_MAX``.
"""

from __future__ import annotations

import asyncio
import math
import os
import select
import socket
import struct
import threading
import time
from collections.abc import Sequence

from drivers.device_state import Reason, link_reason

_HEADER = struct.Struct(">HHHB")  # transaction id, protocol id (0), length, unit id
MAX_PDU = 253
_RECV = 4096
IDLE_WAKE = 1.0  # s
HOLD_MAX = 0.05  # s a finished batch may wait for the other buses' batches of the tick


MAX_SILENT = 2  # timeouts in a row after which a connection is closed and opened again


class MbapTimeout(Exception):
    """No complete reply within the timeout; ``bad_frame``: bytes came but no valid frame.
    ``why`` says what closed the connection when it was closed with it."""

    def __init__(self, bad_frame: bool, why: str = "") -> None:
        self.bad_frame = bad_frame
        self.why = why or ("garbled reply" if bad_frame else "no response")
        super().__init__(self.why)


class MbapClosed(Exception):
    """The connection is closed (or closed while the request waited); ``kind``: what it
    means for the devices behind it."""

    def __init__(self, message: str, kind: Reason = Reason.RESET) -> None:
        self.kind = kind
        super().__init__(message)


class Outcome:
    """One transaction of a batch: the reply PDU or the error, with its monotonic send and
    receive times and the wall-clock receive time (s)."""

    __slots__ = ("end", "error", "pdu", "start", "wall")

    def __init__(
        self, pdu: bytes | None, error: Exception | None, start: float, end: float
    ) -> None:
        self.pdu = pdu
        self.error = error
        self.start = start
        self.end = end
        self.wall = time.time()

    def result(self) -> bytes:
        if self.error is not None:
            raise self.error
        assert self.pdu is not None
        return self.pdu


class Batch:
    __slots__ = (
        "cut",
        "deadline",
        "done",
        "fut",
        "i",
        "loop",
        "out",
        "reqs",
        "rx_seen",
        "sent",
        "tid",
        "timeout",
    )

    def __init__(
        self,
        reqs: Sequence[tuple[int, bytes]],
        timeout: float,
        loop: asyncio.AbstractEventLoop,
        fut: asyncio.Future[list[Outcome]],
    ) -> None:
        self.reqs = reqs
        self.loop = loop
        self.fut = fut
        self.out: list[Outcome] = []
        self.i = 0
        self.tid = 0
        self.sent = 0.0
        self.deadline = math.inf
        self.rx_seen = False
        self.done = False
        self.cut = False  # send nothing more after the request in flight
        self.timeout = timeout


class Conn:
    """One TCP connection registered with the engine."""

    def __init__(self, engine: Engine, sock: socket.socket) -> None:
        self.engine = engine
        self.sock = sock
        self.fd = sock.fileno()
        self.buf = bytearray()
        self.batch: Batch | None = None
        self.closed = False
        self.tid = 0
        self.silent = 0  # timeouts in a row since the last reply of ours

    # --- called with the engine lock held -------------------------------------------------
    def send_next(self, now: float) -> None:
        b = self.batch
        assert b is not None
        unit, pdu = b.reqs[b.i]
        self.tid = b.tid = (self.tid + 1) & 0xFFFF
        b.rx_seen = False
        b.sent = now
        b.deadline = now + b.timeout
        self.engine.next_deadline = min(self.engine.next_deadline, b.deadline)
        try:
            self.sock.send(_HEADER.pack(b.tid, 0, len(pdu) + 1, unit) + pdu)
        except OSError as exc:  # incl. a full send buffer: the peer stopped reading
            kind = Reason.TIMEOUT if isinstance(exc, BlockingIOError) else link_reason(exc)
            self.fail(MbapClosed(f"send failed: {exc}", kind))

    def readable(self) -> None:
        try:
            data = self.sock.recv(_RECV)
        except BlockingIOError:
            return
        except OSError as exc:
            self.fail(MbapClosed(f"{type(exc).__name__}: {exc}", link_reason(exc)))
            return
        if not data:
            self.fail(MbapClosed("closed by the peer", Reason.RESET))
            return
        now = time.monotonic()
        b = self.batch
        if b is not None:
            b.rx_seen = True
        buf: bytes | bytearray = self.buf
        if not buf:
            buf = data  # the usual case: whole replies in one segment, parsed without copies
        else:
            buf += data
        pos = 0
        while len(buf) - pos >= 7:
            tid, pid, length, unit = _HEADER.unpack_from(buf, pos)
            if pid != 0 or not 2 <= length <= MAX_PDU + 1:
                why = f"corrupt MBAP header (protocol {pid}, length {length})"
                self.fail(MbapTimeout(True, why))
                return
            end = pos + 6 + length
            if len(buf) < end:
                break
            pdu = bytes(buf[pos + 7 : end])
            pos = end
            if not self._frame(tid, unit, pdu, now):
                return
        if isinstance(buf, bytearray):
            del buf[:pos]
        elif pos < len(buf):
            self.buf = bytearray(buf[pos:])

    def _frame(self, tid: int, unit: int, pdu: bytes, now: float) -> bool:
        """One whole MBAP frame; False when it broke the stream (the connection is closed)."""
        b = self.batch
        if b is None or b.tid != tid:
            return True  # a late reply to a request that timed out
        if b.reqs[b.i][0] != unit:
            self.fail(MbapTimeout(True, f"reply from unit {unit}, not {b.reqs[b.i][0]}"))
            return False
        self.silent = 0
        b.out.append(Outcome(pdu, None, b.sent, now))
        b.i += 1
        if b.i < len(b.reqs) and not b.cut:
            self.send_next(now)
        else:
            self.finish()
        return True

    def expire(self, now: float) -> None:
        b = self.batch
        if b is None or now < b.deadline:
            return
        self.silent += 1
        if self.buf:  # half a reply, then nothing for a whole timeout: position unknown
            self.fail(MbapTimeout(True, "partial frame older than the timeout"))
        elif self.silent >= MAX_SILENT:
            self.fail(MbapTimeout(b.rx_seen, f"{self.silent} timeouts in a row"))
        else:
            b.out.append(Outcome(None, MbapTimeout(bad_frame=b.rx_seen), b.sent, now))
            self.finish()

    def fail(self, error: Exception) -> None:
        """End the batch with ``error``; a stream error also closes the connection."""
        self.engine.drop(self)
        b = self.batch
        if b is not None:
            b.out.append(Outcome(None, error, b.sent, time.monotonic()))
            self.finish()

    def finish(self) -> None:
        b, self.batch = self.batch, None
        if b is None or b.done:
            return
        b.done = True
        self.engine.hold(b)


def _deliver(batches: list[Batch]) -> None:
    for b in batches:
        if not b.fut.done():
            b.fut.set_result(b.out)


class Engine:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self._conns: dict[int, Conn] = {}
        self._ep: select.epoll | None = None
        self._wake_r, self._wake_w = -1, -1
        self._thread: threading.Thread | None = None
        self._sleep_until = -math.inf  # set by the thread before each sleep
        # no batch deadline is earlier than this (one may be later: a reply moved it on, and
        # the thread wakes once for nothing, instead of searching every connection each time)
        self.next_deadline = math.inf
        self._held: list[Batch] = []
        self._held_until = math.inf

    def hold(self, b: Batch) -> None:
        """A finished batch waits for the others still running (at most ``HOLD_MAX``), so
        that one loop wake-up hands the event loop every bus's replies of the tick."""
        now = time.monotonic()
        if not self._held:
            self._held_until = now + HOLD_MAX
            self.next_deadline = min(self.next_deadline, self._held_until)
        self._held.append(b)
        if not any(c.batch for c in self._conns.values()):
            self.release()

    def release(self) -> None:
        held, self._held = self._held, []
        by_loop: dict[asyncio.AbstractEventLoop, list[Batch]] = {}
        for b in held:
            by_loop.setdefault(b.loop, []).append(b)
        for loop, batches in by_loop.items():
            try:
                loop.call_soon_threadsafe(_deliver, batches)
            except RuntimeError:  # the loop is closed: nobody waits for these any more
                pass

    def register(self, sock: socket.socket) -> Conn:
        conn = Conn(self, sock)
        with self.lock:
            if self._ep is None:
                self._ep = select.epoll()
                self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
                self._ep.register(self._wake_r, select.EPOLLIN)
            self._ep.register(conn.fd, select.EPOLLIN)
            self._conns[conn.fd] = conn
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="cityedge-mbap", daemon=True)
                self._thread.start()
        return conn

    def drop(self, conn: Conn) -> None:
        """Close ``conn`` (lock held, or from the loop thread through ``close``)."""
        if conn.closed:
            return
        conn.closed = True
        if self._conns.get(conn.fd) is conn:
            del self._conns[conn.fd]
            assert self._ep is not None
            self._ep.unregister(conn.fd)
        conn.sock.close()

    def close(self, conn: Conn) -> None:
        with self.lock:
            self.drop(conn)
            if conn.batch is not None:
                conn.fail(MbapClosed("closed"))
        self._wake()

    def start(self, conn: Conn, batch: Batch) -> None:
        with self.lock:
            if conn.closed:
                raise MbapClosed("not connected")
            if conn.batch is not None:
                raise RuntimeError("one batch at a time per connection (the bus owner's rule)")
            conn.batch = batch
            conn.send_next(time.monotonic())
            if batch.deadline < self._sleep_until:
                self._wake()

    def cut(self, conn: Conn) -> None:
        """End the batch running on ``conn`` after the request in flight."""
        with self.lock:
            if conn.batch is not None:
                conn.batch.cut = True

    def abandon(self, conn: Conn, batch: Batch) -> None:
        """The waiter is gone (cancelled): stop sending the rest of its batch."""
        with self.lock:
            batch.done = True
            if conn.batch is batch:
                conn.batch = None

    def _wake(self) -> None:
        if self._wake_w >= 0:
            try:
                os.write(self._wake_w, b"\0")
            except BlockingIOError:  # the pipe is full of wake-ups already
                pass

    def _run(self) -> None:
        ep = self._ep
        assert ep is not None
        while True:
            with self.lock:
                if not self._conns:
                    self._thread = None
                    self._sleep_until = -math.inf  # wake-ups then go to a thread not started
                    return
                now = time.monotonic()
                # idle, the thread still looks up once a second: a batch starting then with
                # the usual 1 s timeout needs no wake-up of its own (one fewer per batch)
                until = min(self.next_deadline, now + IDLE_WAKE)
                self._sleep_until = until
            timeout = max(0.0, until - now)
            events = ep.poll(timeout)
            with self.lock:
                self._sleep_until = -math.inf  # awake: a new batch needs no wake-up
                for fd, _ in events:
                    if fd == self._wake_r:
                        while True:
                            try:
                                if not os.read(fd, 512):
                                    break
                            except BlockingIOError:
                                break
                        continue
                    conn = self._conns.get(fd)
                    if conn is not None:
                        conn.readable()
                now = time.monotonic()
                if now >= self.next_deadline:
                    for conn in list(self._conns.values()):
                        conn.expire(now)
                    if self._held and now >= self._held_until:
                        self.release()
                    self.next_deadline = min(
                        (c.batch.deadline for c in self._conns.values() if c.batch),
                        default=math.inf,
                    )
                    if self._held:
                        self.next_deadline = min(self.next_deadline, self._held_until)


ENGINE = Engine()
