"""Modbus RTU / ASCII on a serial line: the framings of ``rtu.py`` over ``drivers/link.py``.

The line runs one frame at a time on the event loop: the inter-frame gap before each request
(3.5 characters; the bus owner's pacing), the request, its reply or its timeout. A serial line
is slow enough that a loop wake-up per reply costs nothing worth a thread (at 9600 baud a
read of ten registers is ~35 ms of wire time). The bytes that arrived before a request (noise,
a late reply to a request that timed out) are dropped, so they cannot be taken for its reply.

RS-485 echo (``rs485.echo``): ``Link.send`` verifies the echo of each frame byte for byte and
returns once it is in (drivers/rs485.py). A wrong echo is a collision on the line, so the
request fails as a bad frame once its timeout has passed (a device may be answering into the
collision meanwhile; its reply must not meet our next frame); a missing echo fails at once,
as silence.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

from drivers.core.endpoint import Endpoint
from drivers.device_state import Reason
from drivers.link import Link, LinkError
from drivers.modbus.client import Calls, request_chars, response_timeout
from drivers.modbus.results import EchoFailed, ModbusError, NoResponse, NotConnected, Outcome
from drivers.modbus.rtu import AsciiFramer, RtuFramer
from drivers.rs485 import EchoError, EchoMismatch

if TYPE_CHECKING:
    from drivers.core.config import Rs485Config


class LineClient(Calls):
    def __init__(
        self,
        endpoint: Endpoint,
        timeout: float | None,
        rs485: Rs485Config | None,
        gap: float,
    ) -> None:
        self.url = endpoint.url
        self.endpoint = endpoint
        self.timeout = timeout  # None: sized from each request's frames
        self.gap = gap
        self._link = Link(endpoint, rs485)
        self._framer = (
            AsciiFramer()
            if endpoint.scheme == "ascii"
            else RtuFramer(stream=endpoint.scheme == "rtu+tcp")
        )
        self._last_end = -math.inf
        self._cut = False

    @property
    def connected(self) -> bool:
        return self._link.is_open

    async def connect(self, timeout: float) -> None:
        self.close()
        try:
            async with asyncio.timeout(timeout):
                await self._link.open()
        except TimeoutError as exc:
            self.close()
            raise NotConnected(self.url, "connect timed out", Reason.TIMEOUT) from exc
        except LinkError as exc:
            raise NotConnected(self.url, exc.reason, exc.kind) from exc

    def close(self) -> None:
        self._link.close_now()

    def cut(self) -> None:
        self._cut = True

    async def transact(
        self, requests: Sequence[tuple[int, bytes]], timeout: float | None = None
    ) -> list[Outcome]:
        if not self._link.is_open:
            raise NotConnected(self.url, "not connected", self._link.down_reason)
        self._cut = False
        out: list[Outcome] = []
        for unit, request in requests:
            if out and self._cut:
                break
            outcome = await self._exchange(unit, request, timeout)
            out.append(outcome)
            if outcome.error is not None:
                break
        return out

    async def _exchange(self, unit: int, request: bytes, timeout: float | None) -> Outcome:
        loop = asyncio.get_running_loop()
        wait = self._last_end + self.gap - loop.time()
        if wait > 0:
            await asyncio.sleep(wait)
        if timeout is None:
            timeout = response_timeout(self.endpoint, self.timeout, request_chars(request))
        link, framer = self._link, self._framer
        frame = framer.request(unit, request)
        link.discard_input()
        start = loop.time()
        error: ModbusError
        try:
            await link.send(frame)
            deadline = loop.time() + timeout
            while True:
                reply = framer.receive(await link.receive(deadline - loop.time()))
                if reply is not None:
                    end = self._last_end = loop.time()
                    return Outcome(reply, None, start, end)
        except TimeoutError:
            error = self._expired(unit, request[0])
        except EchoError as exc:
            framer.expire()
            if isinstance(exc, EchoMismatch):
                await self._settle(start + timeout)
            error = EchoFailed(unit, request[0], exc)
        except LinkError as exc:
            self.close()
            error = NotConnected(self.url, exc.reason, exc.kind)
        end = self._last_end = loop.time()
        return Outcome(None, error, start, end)

    def _expired(self, unit: int, fc: int) -> ModbusError:
        exp = self._framer.expire()
        if not exp.close:
            return NoResponse(unit, fc, bad_frame=exp.bad_frame)
        self.close()
        kind = Reason.BAD_FRAMES if exp.bad_frame else Reason.TIMEOUT
        return NotConnected(self.url, f"{exp.why}; connection closed", kind)

    async def _settle(self, until: float) -> None:
        """Let the line go quiet until ``until`` (what arrives meanwhile is dropped)."""
        loop = asyncio.get_running_loop()
        try:
            while (left := until - loop.time()) > 0:
                await self._link.receive(left)
        except (TimeoutError, LinkError):
            pass
