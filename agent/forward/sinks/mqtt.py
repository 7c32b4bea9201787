"""MQTT sink: durable outbox + publisher loop (aiomqtt 2.x) driving any Encoder.

``submit`` returns once the readings are committed to the outbox. ``run`` owns the outbox's
group-commit task and the link loop: connect to the brokers in turn (exponential backoff with
jitter), register the encoder's will, subscribe, publish the encoder's ``on_connect`` messages,
then stream the outbox oldest first with at most ``window`` QoS 1 publishes in flight. Rows are
deleted only after their PUBACK; anything unacknowledged when the link drops is sent again after
the reconnect (the same outbox ids, so the platform can drop the duplicates).

Historical flag: a row committed before the current connection was established (id <= the
outbox's last id at connect time) is sent with ``historical=True``. It waited for a link - an
outage, a restart, or the first connect after boot - so its timestamp is older than its arrival.

The encoder is used through its whole protocol (agent/forward/encoders/base.py):
``ready_to_publish()`` gates data, ``wants_reconnect()`` is checked after each ``on_message``
and ends the session, ``on_disconnect()`` is published before a graceful DISCONNECT.

Device state transitions (``device_status``) are published in order with the readings: each
is held until every outbox row committed before it has been encoded (its *barrier*, the
outbox's last id when it arrived), and rows committed after it wait for it. So a Sparkplug
host never sees DDATA after a DDEATH that was decided later, nor data of a device coming back
before its DBIRTH. Transitions wait in memory while the link is down (a restart re-derives the
state from the next polls); the encoder restates what it last published after a reconnect.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import math
import random
import ssl
from collections import deque
from collections.abc import Callable, Coroutine, Mapping, Sequence
from pathlib import Path
from typing import Any

import aiomqtt
from paho.mqtt.client import topic_matches_sub
from pydantic import SecretStr

from agent.config.outputs import MqttOutput
from agent.forward.encoders import make_encoder
from agent.forward.encoders.base import Encoder, OutMessage
from agent.forward.mqtt.connect import (
    Backoff,
    BrokerAddress,
    PublishRefusedError,
    build_tls_context,
    client_options,
    parse_brokers,
    watch_refusals,
)
from agent.forward.mqtt.stats import LinkStats, MqttSinkStats, health_payload
from agent.forward.mqtt.wire import NotConnectedError, Unit, Wire
from agent.forward.outbox import Outbox, OutboxRow
from agent.forward.sinks.base import (
    ClockFixSink,
    CommandSink,
    Handler,
    HealthSink,
    RebirthSink,
    StatusProvider,
    StatusSink,
)
from agent.ops.timesync import ClockOffset
from drivers.base import DeviceBinding
from drivers.core.reading import Reading, now_ms
from drivers.device_state import Transition

log = logging.getLogger("cityedge.mqtt")
MAX_PENDING_STATES = 10_000  # transitions held while the link is down (a flapping device...)


def _first_leaf(exc: BaseException) -> BaseException:
    while isinstance(exc, BaseExceptionGroup):
        exc = exc.exceptions[0]
    return exc


class _Reconnect(Exception):
    """The encoder asked for a new session (Sparkplug: the primary host went offline)."""


class MqttSink(StatusSink, CommandSink, RebirthSink, HealthSink, ClockFixSink):
    """A ``Sink`` (agent/forward/sinks/base.py), checked where the runtime lists it: its
    ``submit`` is the outbox's own, so a batch goes from the pipeline's feed to the outbox
    without a frame that only forwards it."""

    submit: Callable[[Sequence[Reading]], Coroutine[Any, Any, None]]  # Outbox.submit

    def __init__(
        self,
        name: str,
        output: MqttOutput,
        gateway_id: str,
        bindings: Sequence[DeviceBinding],
        state_dir: Path,
        secrets: Mapping[str, SecretStr] | None = None,
        *,
        encoder: Encoder | None = None,
        device_status: StatusProvider | None = None,
        close_timeout: float = 3.0,
        rand: Callable[[float, float], float] = random.uniform,
    ) -> None:
        self.name = name
        self.output = output
        self.gateway_id = gateway_id
        self.brokers: list[BrokerAddress] = parse_brokers(output)
        self._opts = client_options(output, gateway_id, secrets or {})
        self.encoder: Encoder = encoder or make_encoder(output, gateway_id, bindings, state_dir)
        self._encode_failures: set[tuple[str, str]] = set()
        self.outbox = Outbox(
            Path(state_dir) / f"outbox-{output.id}.sqlite",
            max_bytes=output.outbox_max_bytes,
            max_rows=output.outbox_max_rows,
            max_age=output.outbox_max_age,
            commit_interval=output.commit_interval,
        )
        self.submit = self.outbox.submit  # accepted = committed
        self.health_topic = output.health_topic or f"{output.topic_prefix}/{gateway_id}/health"
        self.status_provider = device_status
        # the agent's alarms (auxiliary services down: agent/ops/alarms.py), for the health message
        self.alarm_provider: Callable[[], Sequence[str]] | None = None
        self.close_timeout = close_timeout
        self._backoff = Backoff(output.reconnect_min, output.reconnect_max, rand)
        self._handlers: list[tuple[str, Handler]] = []
        self._subscribed: set[str] = set()
        self._subs_changed = asyncio.Event()
        self._ctrl = asyncio.Event()  # an on_message ran: re-check ready_to_publish()
        self._closing = asyncio.Event()
        self._link_done = asyncio.Event()
        self._running = False
        self._tls: ssl.SSLContext | None = None
        self._wire: Wire | None = None
        self._tg: asyncio.TaskGroup | None = None
        self._states: deque[tuple[int, Transition]] = deque()  # (barrier row id, transition)
        self.link = LinkStats()

    # -- Sink protocol -------------------------------------------------------------------
    async def run(self) -> None:
        self._running = True
        try:
            async with asyncio.TaskGroup() as tg:
                self._tg = tg
                tg.create_task(self.outbox.run(), name=f"outbox:{self.name}")
                try:
                    await self._link_loop()
                finally:
                    self._link_done.set()
        finally:
            self._tg = None

    async def close(self) -> None:
        """Stop taking rows, wait for in-flight PUBACKs, publish the offline status, disconnect
        and commit what is queued. Committed rows stay in the outbox for the next start."""
        self._closing.set()
        self._ctrl.set()
        self.outbox.wake_readers()
        if self._running and self.link.connected:  # else nothing is in flight: don't wait
            try:
                async with asyncio.timeout(self.close_timeout):
                    await self._link_done.wait()
            except TimeoutError:
                log.warning(
                    "output %s: publisher did not stop within %.1f s", self.name, self.close_timeout
                )
        await self.outbox.close()

    # -- API for the runtime, commands and metrics ----------------------------------------
    def add_handler(self, topic_filter: str, callback: Handler) -> None:
        """Subscribe (QoS 1) and call ``callback(topic, payload)`` for every matching message;
        kept across reconnects. Callbacks run as tasks of the sink; exceptions are logged."""
        self._handlers.append((topic_filter, callback))
        self._subs_changed.set()

    async def publish(self, topic: str, payload: bytes, qos: int = 1, retain: bool = False) -> None:
        """Publish outside the outbox (command responses); waits for the PUBACK.
        Raises NotConnectedError when no broker link exists, MqttError when it drops."""
        wire = self._wire
        if wire is None:
            raise NotConnectedError(self.name)
        await wire.publish(OutMessage(topic, payload, qos, retain))

    def device_status(self, transition: Transition) -> None:
        """A device changed state (drivers/device_state.py). Called by the pipeline after the
        readings emitted before it were submitted; published after them (see the module
        docstring)."""
        if len(self._states) >= MAX_PENDING_STATES:
            _, dropped = self._states.popleft()
            log.warning(
                "output %s: too many device transitions waiting; dropped %s -> %s of %s",
                self.name,
                dropped.previous.value,
                dropped.state.value,
                dropped.device_id,
            )
        self._states.append((self.outbox.last_id, transition))
        self.outbox.wake_readers()

    def _put_states(self, wire: Wire, below: float) -> None:
        """Encode and send the transitions whose barrier is below row id ``below``."""
        msgs: list[OutMessage] = []
        states = self._states
        while states and states[0][0] < below:
            _, t = states.popleft()
            msgs += self.encoder.device_status(t.device_id, t.online, t)
        if msgs:
            wire.put(msgs)

    def correct_unsynced(self, offset: ClockOffset) -> None:
        """Clock synchronised: fix the timestamps of pre-sync readings still in the outbox
        (queued for the outbox's storage thread; returns at once)."""
        self.outbox.correct_unsynced(offset)

    def set_status_provider(self, provider: StatusProvider) -> None:
        self.status_provider = provider

    def set_alarm_provider(self, provider: Callable[[], Sequence[str]]) -> None:
        self.alarm_provider = provider

    def rebirth(self) -> None:
        """Re-send what a (re)connect sends: births (Sparkplug) / online status (native)."""
        if self._wire is not None:
            self._wire.put(self.encoder.on_connect())

    def stats(self) -> MqttSinkStats:
        return MqttSinkStats.of(self.name, dataclasses.replace(self.link), self.outbox.stats())

    @property
    def connected(self) -> bool:
        return self.link.connected

    # -- link loop -----------------------------------------------------------------------
    async def _link_loop(self) -> None:
        loop = asyncio.get_running_loop()
        i, delay = 0, 0.0
        while not self._closing.is_set():
            if delay:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(delay):
                        await self._closing.wait()
                if self._closing.is_set():
                    return
            broker = self.brokers[i]
            was, t0 = self.link.connects, loop.time()
            try:
                await self._session(broker)
            except* _Reconnect:
                log.info("output %s: new session requested by the encoder", self.name)
            except* Exception as eg:
                err = _first_leaf(eg)
                self.link.last_error = f"{type(err).__name__}: {err}"
                log.warning("output %s: %s: %s", self.name, broker, self.link.last_error)
            if self._closing.is_set():
                return
            if self.link.connects > was:  # was connected: retry the same broker
                self.link.disconnects += 1
                # a session that dies right away (refused publishes, kicked by a duplicate
                # client id) keeps growing the backoff instead of reconnecting in a loop
                if loop.time() - t0 > self.output.reconnect_max:
                    self._backoff.reset()
                delay = self._backoff.next()
            else:
                self.link.connect_failures += 1
                i = (i + 1) % len(self.brokers)
                delay = self._backoff.next() if i == 0 else 0.0

    async def _session(self, broker: BrokerAddress) -> None:
        opts = dict(self._opts)
        if broker.tls:
            if self._tls is None:
                self._tls = await asyncio.to_thread(build_tls_context, self.output)
            opts["tls_context"] = self._tls
        will = self.encoder.will()
        if will is not None:
            opts["will"] = aiomqtt.Will(will.topic, will.payload, will.qos, will.retain)
        self.link.broker = str(broker)
        client = aiomqtt.Client(broker.host, broker.port, **opts)
        async with client:
            # aiomqtt uses one timeout for CONNACK and PUBACK waits; a handshake the broker
            # rejects after the socket opened (TLS 1.3 client-cert alert) only ends by timeout.
            client.timeout = self.output.publish_timeout
            # aiomqtt warns at every publish beyond 10 awaiting their PUBACK; ours keeps up to
            # `window` in flight by design, so a replay logged thousands of such warnings
            client.pending_calls_threshold = self.output.window
            self.link.connects += 1
            log.info("output %s: connected to %s", self.name, broker)
            try:
                await self._serve(client)
            finally:
                self.link.connected = False

    async def _serve(self, client: aiomqtt.Client) -> None:
        await self.outbox.flush()  # acks of the last session, so they are not replayed
        boundary = self.outbox.last_id
        self._subscribed = set()
        refused: list[str] = []
        refusal = asyncio.Event()

        def on_refused(reason: str) -> None:
            refused.append(reason)
            refusal.set()

        watch_refusals(client, on_refused)
        async with asyncio.TaskGroup() as tg:
            wire = Wire(client, self.output.window, tg, self._published, self._unit_done)
            side = [
                tg.create_task(wire.run(), name=f"mqtt-wire:{self.name}"),
                tg.create_task(self._receive(client, wire), name=f"mqtt-rx:{self.name}"),
            ]
            side.append(
                tg.create_task(self._refusals(refusal, refused), name=f"mqtt-refusals:{self.name}")
            )
            await self._subscribe(client)
            side.append(tg.create_task(self._resubscribe(client), name=f"mqtt-sub:{self.name}"))
            wire.put(self.encoder.on_connect())
            self._wire = wire
            self.link.connected, self.link.connected_since_ms = True, now_ms()  # and subscribed
            try:
                if self.output.health_interval > 0:
                    side.append(tg.create_task(self._health(wire), name=f"mqtt-hb:{self.name}"))
                await self._send(wire, boundary)
                await wire.drain()
                for m in self.encoder.on_disconnect():
                    await wire.publish(m)
                for t in side:
                    t.cancel()
            finally:
                self._wire = None
                wire.fail_pending(NotConnectedError(self.name))

    async def _refusals(self, event: asyncio.Event, reasons: list[str]) -> None:
        await event.wait()
        raise PublishRefusedError(reasons[0])

    async def _subscribe(self, client: aiomqtt.Client) -> None:
        self._subs_changed.clear()
        wanted = [*self.encoder.subscriptions(), *(f for f, _ in self._handlers)]
        for f in dict.fromkeys(wanted):
            if f not in self._subscribed:
                granted = await client.subscribe(f, qos=1)
                # SUBACK 0x80 (3.1.1) or a reason code >= 0x80 (5): typically an ACL
                if any((g if isinstance(g, int) else g.value) >= 0x80 for g in granted):
                    log.warning("output %s: broker refused subscription %s", self.name, f)
                self._subscribed.add(f)

    async def _resubscribe(self, client: aiomqtt.Client) -> None:
        while True:
            await self._subs_changed.wait()
            await self._subscribe(client)

    async def _receive(self, client: aiomqtt.Client, wire: Wire) -> None:
        enc = self.encoder
        enc_filters = enc.subscriptions()
        async for m in client.messages:
            topic = m.topic.value
            p = m.payload
            payload = (
                p
                if isinstance(p, bytes)
                else bytes(p)
                if isinstance(p, bytearray)
                else str(p if p is not None else "").encode()
            )
            if any(topic_matches_sub(f, topic) for f in enc_filters):
                wire.put(enc.on_message(topic, payload))
                self._ctrl.set()
                if enc.wants_reconnect():
                    await wire.drain()
                    raise _Reconnect
            for f, cb in self._handlers:
                if topic_matches_sub(f, topic) and self._tg is not None:
                    self._tg.create_task(self._call(cb, topic, payload), name=f"mqtt-handler:{f}")

    async def _call(self, cb: Handler, topic: str, payload: bytes) -> None:
        try:
            await cb(topic, payload)
        except Exception:
            log.exception("output %s: handler for %s failed", self.name, topic)

    async def _health(self, wire: Wire) -> None:
        while True:
            devices: Mapping[str, object] | None = None
            if self.status_provider is not None:
                try:
                    devices = self.status_provider()
                except Exception:
                    log.exception("output %s: device status provider failed", self.name)
            alarms = self.alarm_provider() if self.alarm_provider is not None else ()
            body = health_payload(self.gateway_id, self.stats(), devices, now_ms(), alarms)
            wire.put([OutMessage(self.health_topic, body, qos=1)])
            await asyncio.sleep(self.output.health_interval)

    # -- outbox -> wire --------------------------------------------------------------------
    async def _send(self, wire: Wire, boundary: int) -> None:
        ready = self.encoder.ready_to_publish
        cursor, limit = 0, self.output.max_batch
        while not self._closing.is_set():
            if not ready():
                self._ctrl.clear()
                if self._closing.is_set():
                    return
                await self._ctrl.wait()
                continue
            await wire.space()
            rows = await self.outbox.read(cursor, limit)
            if not rows:
                # every row committed before a waiting transition is out (or acked): its turn
                self._put_states(wire, math.inf)
                if self._closing.is_set():  # close() woke the readers while we read
                    return
                await self.outbox.wait_for_rows(cursor)
                continue
            if (
                not self._states
                and len(rows) < limit
                and await self._fill_wait(rows, cursor, limit)
            ):
                rows = await self.outbox.read(cursor, limit)
            if self._closing.is_set():
                return
            if not ready():  # a control message arrived meanwhile
                continue
            if self._states:
                self._put_states(wire, rows[0].id)
                if self._states and self._states[0][0] < rows[-1].id:
                    barrier = self._states[0][0]  # rows after it wait for the transition
                    rows = [r for r in rows if r.id <= barrier]
            cursor = rows[-1].id
            self._encode(wire, rows, boundary)

    async def _fill_wait(self, rows: list[OutboxRow], cursor: int, limit: int) -> bool:
        """Live flow: wait up to ``batch_latency`` after the oldest row's commit for more rows
        to fill the message. Returns True when new rows arrived."""
        wait = self.output.batch_latency - (now_ms() - rows[0].ts_ms) / 1000
        if wait <= 0:
            return False
        wait = min(wait, self.output.batch_latency)
        loop = asyncio.get_running_loop()
        deadline, seen = loop.time() + wait, self.outbox.last_id
        while self.outbox.last_id - cursor < limit and not self._closing.is_set():
            left = deadline - loop.time()
            if left <= 0:
                break
            try:
                async with asyncio.timeout(left):
                    await self.outbox.wait_for_rows(self.outbox.last_id)
            except TimeoutError:
                break
        return self.outbox.last_id > seen

    def _encode(self, wire: Wire, rows: list[OutboxRow], boundary: int) -> None:
        try:
            msgs = self.encoder.encode_rows(rows, boundary)
        except Exception:
            # One reading the encoding cannot carry (a value its declared type refuses) must
            # not stall the output: a failing batch is encoded row by row, and a row that
            # still fails is skipped, counted and logged; its row is acked with the rest, so
            # the publisher never retries it in a loop.
            msgs = []
            for row in rows:
                try:
                    msgs += self.encoder.encode_rows([row], boundary)
                except Exception as exc:
                    self._encode_failed(row, exc)
        if self.output.qos == 0:
            msgs = [dataclasses.replace(m, qos=0) for m in msgs]
        unit = Unit(len(msgs), rows[0].id, rows[-1].id, len(rows))
        if msgs:
            wire.put(msgs, unit)
        else:
            self._unit_done(unit)

    def _encode_failed(self, row: OutboxRow, exc: Exception) -> None:
        self.link.encode_errors += 1
        r = row.reading
        key = (r.device_id, r.point)
        if key not in self._encode_failures:  # once per point, not once per tick
            self._encode_failures.add(key)
            log.error(
                "output %s: reading %d (%s/%s = %r) cannot be encoded as %s, skipped: %s: %s",
                self.name,
                row.id,
                r.device_id,
                r.point,
                r.value,
                self.output.encoding,
                type(exc).__name__,
                exc,
            )

    def _published(self, msg: OutMessage) -> None:
        self.link.published_messages += 1
        self.link.last_publish_ms = now_ms()

    def _unit_done(self, unit: Unit) -> None:
        if unit.count:
            self.outbox.ack(unit.first, unit.last, unit.count)
            self.link.published_readings += unit.count
