"""The I/O thread under every Modbus TCP connection: it moves bytes, batch after batch.

Why a thread: a poll is a request/reply pair, and on the asyncio loop each reply costs a full
loop wake-up (selector, handle, transport, future, task step), about 70-120 us of CPU per
transaction on a small VM, against ~20 us for the same exchange on a plain epoll loop. At
50 devices x 2 requests a second that alone was half the agent's CPU. So the Modbus session
hands the requests of a whole tick (every due device of its bus) to this thread as one batch;
the thread sends each request as soon as the previous reply is in (never two in flight) and
wakes the event loop once, with every reply and its receive time.

The thread decides nothing. The stream rules (transaction pairing, late replies, corrupt
headers, link supervision) are ``drivers/modbus/mbap.py``'s, sans-I/O; PDUs are checked by the
session (``drivers/modbus/pdu.py``). What is left here is the plumbing: epoll, a request
written in pieces when the socket takes only part of it (``send`` may write less than asked;
the rest goes out when the socket is writable again, so the stream never loses a byte), the
deadlines, and the hand-over to the loop.

A batch stops at its first timeout or lost link (the session decides what to retry), or when
the bus owner cuts it short because a write must go out next; a Modbus exception reply is an
answer like any other and the batch goes on.

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
import threading
import time
from collections.abc import Sequence

from drivers.device_state import Reason, link_reason
from drivers.modbus.mbap import MbapConnection, StreamBroken
from drivers.modbus.results import ModbusError, NoResponse, NotConnected, Outcome

_RECV = 4096
IDLE_WAKE = 1.0  # s
HOLD_MAX = 0.05  # s a finished batch may wait for the other buses' batches of the tick
_IN, _OUT = select.EPOLLIN, select.EPOLLOUT


class Batch:
    """Requests ``(unit, pdu)`` of one tick on one connection, and their outcomes."""

    __slots__ = ("cut", "deadline", "done", "fut", "i", "loop", "out", "reqs", "sent", "timeout")

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
        self.sent = 0.0
        self.deadline = math.inf
        self.done = False
        self.cut = False  # send nothing more after the request in flight
        self.timeout = timeout


class Conn:
    """One TCP connection registered with the engine (every method: engine lock held)."""

    def __init__(self, engine: Engine, sock: socket.socket, url: str) -> None:
        self.engine = engine
        self.sock = sock
        self.url = url
        self.fd = sock.fileno()
        self.mbap = MbapConnection()
        self.out = b""  # the part of the request the socket did not take yet
        self.batch: Batch | None = None
        self.closed = False

    def send_next(self, now: float) -> None:
        b = self.batch
        assert b is not None
        unit, pdu = b.reqs[b.i]
        b.sent = now
        b.deadline = now + b.timeout
        self.engine.next_deadline = min(self.engine.next_deadline, b.deadline)
        self._write(self.mbap.send(unit, pdu))

    def _write(self, data: bytes) -> None:
        try:
            n = self.sock.send(data)
        except BlockingIOError:  # the socket buffer is full: the peer is not reading
            n = 0
        except OSError as exc:
            self.fail(NotConnected(self.url, f"send failed: {exc}", link_reason(exc)))
            return
        self.out = data[n:]
        self.engine.want_write(self, bool(self.out))

    def writable(self) -> None:
        if self.out:
            self._write(self.out)
        else:
            self.engine.want_write(self, False)

    def readable(self) -> None:
        try:
            data = self.sock.recv(_RECV)
        except BlockingIOError:
            return
        except OSError as exc:
            self.fail(NotConnected(self.url, f"{type(exc).__name__}: {exc}", link_reason(exc)))
            return
        if not data:
            self.fail(NotConnected(self.url, "closed by the peer", Reason.RESET))
            return
        now = time.monotonic()
        try:
            reply = self.mbap.receive(data)
        except StreamBroken as exc:
            self.fail(NotConnected(self.url, f"{exc.why}; connection closed", Reason.BAD_FRAMES))
            return
        b = self.batch
        if reply is None or b is None:  # incomplete, or the answer to an abandoned batch
            return
        b.out.append(Outcome(reply, None, b.sent, now))
        b.i += 1
        if b.i < len(b.reqs) and not b.cut:
            self.send_next(now)
        else:
            self.finish()

    def expire(self, now: float) -> None:
        b = self.batch
        if b is None or now < b.deadline:
            return
        exp = self.mbap.expire(unsent=bool(self.out))
        if exp.close:
            kind = Reason.BAD_FRAMES if exp.bad_frame else Reason.TIMEOUT
            self.fail(NotConnected(self.url, f"{exp.why}; connection closed", kind))
            return
        unit, pdu = b.reqs[b.i]
        b.out.append(Outcome(None, NoResponse(unit, pdu[0], bad_frame=exp.bad_frame), b.sent, now))
        self.finish()

    def fail(self, error: ModbusError) -> None:
        """End the batch with ``error`` and close the connection."""
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

    def register(self, sock: socket.socket, url: str) -> Conn:
        conn = Conn(self, sock, url)
        with self.lock:
            if self._ep is None:
                self._ep = select.epoll()
                self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
                self._ep.register(self._wake_r, select.EPOLLIN)
            self._ep.register(conn.fd, _IN)
            self._conns[conn.fd] = conn
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="cityedge-mbap", daemon=True)
                self._thread.start()
        return conn

    def want_write(self, conn: Conn, on: bool) -> None:
        """Watch ``conn`` for room in its socket buffer while part of a request waits."""
        if self._ep is not None and not conn.closed and self._conns.get(conn.fd) is conn:
            self._ep.modify(conn.fd, _IN | _OUT if on else _IN)

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
                conn.fail(NotConnected(conn.url, "closed"))
        self._wake()

    def start(self, conn: Conn, batch: Batch) -> None:
        with self.lock:
            if conn.closed:
                raise NotConnected(conn.url, "not connected")
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
                for fd, ev in events:
                    if fd == self._wake_r:
                        while True:
                            try:
                                if not os.read(fd, 512):
                                    break
                            except BlockingIOError:
                                break
                        continue
                    conn = self._conns.get(fd)
                    if conn is not None and ev & _OUT:
                        conn.writable()
                    if conn is not None and not conn.closed and ev & ~_OUT:
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
