"""One device's request/response exchange on the bus's line: pacing, retries, accounting.

The session's rules, the same as Modbus's: the inter-frame gap before each request, writes
waiting go first (the bus owner serves them before a poll's next request), one attempt for a
probe of an offline device, ``retries`` more otherwise."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TYPE_CHECKING, TypeVar

from drivers.base import DeviceStats
from drivers.rs485 import EchoError, NoEcho
from drivers.serial.framing import Deframer
from drivers.serial.handlers import BadResponse, DeviceTimeout

if TYPE_CHECKING:
    from drivers.serial.session import SerialSession

T = TypeVar("T")


class LineExchange:
    """Implements ``handlers.Exchange`` for one device. ``timeout`` covers one attempt, from
    the end of the request to the end of the reply (it includes the reply's wire time)."""

    def __init__(
        self,
        session: SerialSession,
        device_id: str,
        stats: DeviceStats,
        timeout: float,
        retries: int,
    ) -> None:
        self.bus = session
        self.device_id = device_id
        self.stats = stats
        self.timeout = timeout
        self.retries = retries
        self.probing = False  # a quarantined device gets one attempt, not the retries too
        # Silence this long inside a frame means the frame is dead. Generous: USB adapters
        # and serial servers deliver in bursts (FTDI latency timer 16 ms, server packing).
        self.idle = max(0.1, 30 * session.endpoint.char_time)
        self.rx_ms = 0  # wall-clock time the last accepted reply completed

    async def _pace_and_send(self, request: bytes) -> None:
        bus = self.bus
        wait = bus.last_tx_end + bus.gap - bus.clock()
        if wait > 0:
            await asyncio.sleep(wait)
        junk = bus.link.discard_input()
        if junk:
            self.stats.bad_frames += 1  # unsolicited bytes: noise or a late reply
        self.stats.requests += 1
        bus.stats.requests += 1
        await bus.link.send(request)

    def _done(self, t0: float) -> None:
        bus = self.bus
        bus.last_tx_end = bus.clock()
        bus.stats.busy_s += bus.last_tx_end - t0

    async def send(self, request: bytes) -> None:
        t0 = self.bus.clock()
        try:
            await self._pace_and_send(request)
            # no reply to wait for: keep the line quiet for the command's own wire time
            await asyncio.sleep(len(request) * self.bus.endpoint.char_time)
        except EchoError as exc:  # rs485.echo: the command did not go out intact
            self.stats.bad_frames += 1
            raise BadResponse(self.device_id, 1) from exc
        finally:
            self._done(t0)

    async def transact(
        self, request: bytes, deframer: Deframer, accept: Callable[[bytes], T | None]
    ) -> T:
        await self.bus.owner.serve_writes()
        attempts = 1 if self.probing else self.retries + 1
        saw_bad = False
        for _ in range(attempts):
            t0 = self.bus.clock()
            try:
                await self._pace_and_send(request)
                deadline = self.bus.clock() + self.timeout
                result, bad = await self._await_reply(deframer, accept, deadline)
            except EchoError as exc:
                # rs485.echo: our frame did not come back intact (a collision, or an adapter
                # without echo: the transport logs which); silence where the echo should be
                # is silence, a wrong echo a bad frame
                result, bad = None, not isinstance(exc, NoEcho)
                self.stats.bad_frames += bad
            finally:
                self._done(t0)
                self.stats.bad_frames += deframer.bad
                deframer.bad = 0
            if result is not None:
                self.rx_ms = self.bus.wall_ms()
                self.bus.owner.answered()
                return result
            saw_bad = saw_bad or bad
            if not bad:
                self.stats.timeouts += 1  # silence; a garbled reply is counted in bad_frames
        if saw_bad:
            raise BadResponse(self.device_id, attempts)
        raise DeviceTimeout(self.device_id, attempts)

    async def _await_reply(
        self, deframer: Deframer, accept: Callable[[bytes], T | None], deadline: float
    ) -> tuple[T | None, bool]:
        bad = False
        while True:
            remaining = deadline - self.bus.clock()
            if remaining <= 0:
                break
            pending = deframer.pending() > 0
            try:
                data = await self.bus.link.receive(
                    min(remaining, self.idle) if pending else remaining
                )
            except TimeoutError:
                if not pending:
                    break
                frame = deframer.salvage()  # quiet mid-candidate: it was a false start
            else:
                frame = deframer.feed(data)
            while frame is not None:
                try:
                    result = accept(frame)
                except ValueError:
                    result = None  # checksum fine, content undecodable: a bad frame
                if result is not None:
                    return result, bad
                bad = True
                self.stats.bad_frames += 1
                frame = deframer.next_frame()
        if deframer.pending() or deframer.bad:
            bad = True
        deframer.abandon()  # the device stopped mid-frame: count the fragment, drop it
        return None, bad
