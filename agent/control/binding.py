"""Bind the command router to an MQTT output: topics per encoding, answers on response topics.

Every MQTT output accepts native JSON commands; an output's encoding adds its own convention:

- all: ``<prefix>/<gw>/<device>/cmd`` and ``<prefix>/<gw>/cmd``; answers on topic + ``/res``
- iotagent, ngsild: ``/<apikey>/<device>/cmd`` (FIWARE IoT Agent JSON); answers shaped by
  agent/forward/fiware/answers.py (``cmdexe`` when carried out; ``<cmd>_status`` ERROR otherwise)
- sparkplug: ``spBv1.0/<group>/DCMD/<gw>/<device>`` and ``NCMD``; answers on
  ``<prefix>/<gw>/<device>/cmd/res``

Sparkplug and IoT Agent commands have no ids: the id is a hash of the topic and the payload
(a DCMD carries the host's timestamp and seq), so a redelivery of the same bytes within the
de-duplication window is answered again, not executed again. Each metric of a DCMD is a
command with its own answer, and the metrics are validated together: one invalid metric and
none is executed. ``Node Control/Rebirth`` is carried out by the encoder (it re-sends the
births at once); the binding answers and audits it like ``Node Control/Reload`` and
``Node Control/Ping``, which map to the gateway actions.

Every payload gets exactly one answer per command and one audit record, the empty, the
oversized (refused by size before any parsing) and the undecodable ones included.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable

from agent.config.outputs import MqttOutput
from agent.control.model import Command, CommandRejected, CommandResult
from agent.control.parse import (
    MAX_PAYLOAD,
    check_size,
    command_id_of,
    parse_config,
    parse_iota,
    parse_native,
    payload_id,
)
from agent.control.router import CommandRouter
from agent.forward.encoders.base import CommandDecoder

log = logging.getLogger("cityedge.commands")

Handler = Callable[[str, bytes], Awaitable[None]]
Subscribe = Callable[[str, Handler], None]
Publish = Callable[[str, bytes], Awaitable[None]]

SPB_ACTIONS = {"Node Control/Reload": "reload", "Node Control/Ping": "ping"}
REBIRTH_NOTE = "handled by the Sparkplug session: births re-sent unless its primary host is offline"


class CommandBinding:
    def __init__(
        self,
        router: CommandRouter,
        gateway_id: str,
        output: MqttOutput,
        publish: Publish,
        sparkplug: CommandDecoder | None = None,
    ) -> None:
        self.router = router
        self.gw = gateway_id
        self.output = output
        self.publish = publish
        self.sparkplug = sparkplug  # the output's SparkplugEncoder (alias table for DCMD)
        self.prefix = f"{output.topic_prefix}/{gateway_id}"
        self.apikey = output.apikey or gateway_id

    def install(self, subscribe: Subscribe) -> list[str]:
        topics = [f"{self.prefix}/+/cmd", f"{self.prefix}/cmd", f"{self.prefix}/config"]
        subscribe(topics[0], self._native)
        subscribe(topics[1], self._native)
        subscribe(topics[2], self._config)
        if self.output.encoding in ("ngsild", "iotagent"):
            topics.append(f"/{self.apikey}/+/cmd")
            subscribe(topics[-1], self._iota)
        if self.output.encoding == "sparkplug":
            group = self.output.sparkplug_group or self.output.topic_prefix
            for t in (f"spBv1.0/{group}/DCMD/{self.gw}/+", f"spBv1.0/{group}/NCMD/{self.gw}"):
                topics.append(t)
                subscribe(t, self._sparkplug)
        return topics

    async def _answer(self, topic: str, result: CommandResult) -> None:
        await self.publish(topic, json.dumps(result.to_dict(), separators=(",", ":")).encode())

    async def _native(self, topic: str, payload: bytes) -> None:
        parts = topic.split("/")
        device = parts[-2] if len(parts) == len(self.prefix.split("/")) + 2 else None
        reply = f"{topic}/res"
        try:
            cmd = parse_native(device, payload, reply, origin=topic)
        except CommandRejected as exc:
            cid = exc.command_id or command_id_of(payload)
            await self._answer(reply, self.router.reject(cid, exc.reason, "native", topic))
            return
        [res] = await self.router.execute_all([cmd])
        await self._answer(reply, res)

    async def _config(self, topic: str, payload: bytes) -> None:
        """Remote config update: ``{"id", "toml", "ts"?, "nonce"?, "kid"?, "sig"?}``; the
        signature (if any) covers the SHA-256 of the TOML text as the command value."""
        reply = f"{topic}/res"
        try:
            cmd = parse_config(payload, reply, origin=topic)
        except CommandRejected as exc:
            cid = exc.command_id or command_id_of(payload)
            await self._answer(reply, self.router.reject(cid, exc.reason, "config", topic))
            return
        [res] = await self.router.execute_all([cmd])
        await self._answer(reply, res)

    async def _iota(self, topic: str, payload: bytes) -> None:
        from agent.forward.fiware.answers import command_names, iota_answer

        device = topic.split("/")[2]
        reply = f"/{self.apikey}/{device}/cmdexe"
        ngsild = self.output.encoding == "ngsild"
        try:
            cmd = parse_iota(device, payload, topic, reply)
        except CommandRejected as exc:
            cid = payload_id("iota", topic, payload)
            res = self.router.reject(cid, exc.reason, "iota", topic)
            names = command_names(payload)
            for name in names:  # the IoT Agent's <name>_status shows the refusal
                await self.publish(*iota_answer(self.apikey, device, name, res, ngsild=ngsild))
            if not names:  # no command to attach it to: the native response topic
                await self._answer(f"{self.prefix}/{device}/cmd/res", res)
            return
        [res] = await self.router.execute_all([cmd])
        await self.publish(*iota_answer(self.apikey, device, cmd.target, res, ngsild=ngsild))

    async def _sparkplug(self, topic: str, payload: bytes) -> None:
        from agent.forward.encoders.sparkplug_codec import (
            SparkplugDecodeError,
            decode_command,
            parse_payload,
        )

        cid = payload_id("spb", topic, payload)
        parts = topic.split("/")
        device = parts[4] if len(parts) == 5 else None
        reply = f"{self.prefix}/{device}/cmd/res" if device else f"{self.prefix}/cmd/res"
        try:
            check_size(payload, MAX_PAYLOAD)  # before any protobuf parsing
            if self.sparkplug is not None:
                decoded = self.sparkplug.decode_command(topic, payload)
            else:
                decoded = decode_command(topic, payload)
            ts = parse_payload(topic, payload).timestamp or None
            if not decoded:
                raise CommandRejected(f"{parts[2]} without metrics")
        except SparkplugDecodeError as exc:
            await self._answer(reply, self.router.reject(cid, exc.reason, "sparkplug", topic))
            return
        except CommandRejected as exc:
            await self._answer(reply, self.router.reject(cid, exc.reason, "sparkplug", topic))
            return
        cmds: list[Command] = []
        for i, (dev, metric, metric_value) in enumerate(decoded):
            name, value = metric, metric_value
            if dev is None:
                # an unknown node metric is a gateway action nobody knows: the router rejects
                # it, and with it the whole NCMD
                name, value = SPB_ACTIONS.get(metric, metric), None
                if metric_value is not True:
                    name = f"{metric} = {metric_value!r} (Node Control metrics take true)"
            cmds.append(
                Command(
                    f"{cid}-{i}",
                    "sparkplug",
                    dev,
                    name,
                    value,
                    issued_at_ms=ts,
                    reply_to=reply,
                    origin=topic,
                )
            )
        # the encoder has re-sent the births already: acknowledged, the rest go to the router
        for c in cmds:
            if c.target == "Node Control/Rebirth":
                await self._answer(reply, self.router.acknowledge(c, REBIRTH_NOTE))
        rest = [c for c in cmds if c.target != "Node Control/Rebirth"]
        if rest:
            for res in await self.router.execute_all(rest):
                await self._answer(reply, res)
