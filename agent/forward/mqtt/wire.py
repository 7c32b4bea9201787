"""The ordered send path of one MQTT connection.

Every message of a connection (births, data, control replies, health) goes through one FIFO and
one dispatcher task, which starts a publish task per message in queue order while at most
``window`` QoS 1 publishes wait for their PUBACK. Tasks start in creation order and aiomqtt hands
a message to paho synchronously at the start of ``publish``, so messages reach the wire in the
order the encoder produced them; Sparkplug's seq and births-before-data depend on that.

A :class:`Unit` groups the messages encoded from one slice of the outbox; when the last of them
is acknowledged ``on_done`` runs (the sink deletes the rows there). A failed publish fails the
connection's TaskGroup: the rows stay in the outbox and are replayed after the reconnect.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable, Iterable

import aiomqtt

from agent.forward.encoders.base import OutMessage


class NotConnectedError(Exception):
    def __init__(self, output: str) -> None:
        super().__init__(f"output '{output}': not connected to a broker")
        self.output = output


class Unit:
    __slots__ = ("count", "first", "future", "last", "remaining")

    def __init__(
        self,
        remaining: int,
        first: int = 0,
        last: int = 0,
        count: int = 0,
        future: asyncio.Future[None] | None = None,
    ) -> None:
        self.remaining = remaining
        self.first = first
        self.last = last
        self.count = count  # outbox rows covered (0 for control messages)
        self.future = future


class Wire:
    def __init__(
        self,
        client: aiomqtt.Client,
        window: int,
        tg: asyncio.TaskGroup,
        on_published: Callable[[OutMessage], None],
        on_unit_done: Callable[[Unit], None],
    ) -> None:
        self._client = client
        self._window = window
        self._tg = tg
        self._on_published = on_published
        self._on_unit_done = on_unit_done
        self._q: deque[tuple[OutMessage, Unit | None]] = deque()
        self._sem = asyncio.Semaphore(window)
        self._inflight = 0
        self._changed = asyncio.Event()
        self._seq = 0

    def _signal(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    def put(self, msgs: Iterable[OutMessage], unit: Unit | None = None) -> None:
        """Queue messages in order (synchronous, so the order equals the encoder call order)."""
        for m in msgs:
            self._q.append((m, unit))
        self._signal()

    async def publish(self, msg: OutMessage) -> None:
        """Queue one message and wait for its PUBACK (or for the connection to fail)."""
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.put([msg], Unit(1, future=fut))
        await fut

    @property
    def backlog(self) -> int:
        return len(self._q) + self._inflight

    async def space(self) -> None:
        """Wait until fewer than ``window`` messages are queued (back-pressure for the reader)."""
        while len(self._q) >= self._window:
            await self._changed.wait()

    async def drain(self) -> None:
        while self._q or self._inflight:
            await self._changed.wait()

    async def run(self) -> None:
        while True:
            while not self._q:
                await self._changed.wait()
            await self._sem.acquire()
            msg, unit = self._q.popleft()
            self._inflight += 1
            self._seq += 1
            self._tg.create_task(self._publish(msg, unit), name=f"mqtt-publish-{self._seq}")
            self._signal()

    async def _publish(self, msg: OutMessage, unit: Unit | None) -> None:
        try:
            await self._client.publish(msg.topic, msg.payload, qos=msg.qos, retain=msg.retain)
        except BaseException:
            if unit is not None and unit.future is not None and not unit.future.done():
                unit.future.set_exception(aiomqtt.MqttError("connection lost before PUBACK"))
            raise
        finally:
            self._sem.release()
            self._inflight -= 1
            self._signal()
        self._on_published(msg)
        if unit is not None:
            unit.remaining -= 1
            if unit.remaining == 0:
                if unit.future is not None and not unit.future.done():
                    unit.future.set_result(None)
                self._on_unit_done(unit)

    def fail_pending(self, exc: BaseException) -> None:
        """The connection ended: callers of :meth:`publish` still waiting get ``exc``."""
        for _, unit in self._q:
            if unit is not None and unit.future is not None and not unit.future.done():
                unit.future.set_exception(exc)
        self._q.clear()
