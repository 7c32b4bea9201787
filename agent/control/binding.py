"""Bind the command router to an MQTT output: topics per encoding, answers on response topics.

Every MQTT output accepts native JSON commands; an output's encoding adds its own convention:

- all: ``<prefix>/<gw>/<device>/cmd`` and ``<prefix>/<gw>/cmd``; answers on topic + ``/res``
- iotagent, ngsild: ``/<apikey>/<device>/cmd`` (FIWARE IoT Agent JSON); answers shaped by
  agent/fiware/answers.py (``cmdexe`` when carried out; ``<cmd>_status`` ERROR otherwise)
- sparkplug: ``spBv1.0/<group>/DCMD/<gw>/<device>`` and ``NCMD``; answers on
  ``<prefix>/<gw>/<device>/cmd/res``

Sparkplug has no command ids: the id is a hash of the payload (which carries the host's
timestamp and seq), so an MQTT redelivery of the same DCMD is answered, not executed twice.
``Node Control/Rebirth`` is the encoder's (it re-sends the births); the binding maps
``Node Control/Reload`` and ``Node Control/Ping`` to the gateway actions.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from agent.config.outputs import MqttOutput
from agent.control.model import Command, CommandRejected, CommandResult
from agent.control.parse import command_id_of, parse_config, parse_iota, parse_native
from agent.control.router import CommandRouter

log = logging.getLogger("cityedge.commands")

Handler = Callable[[str, bytes], Awaitable[None]]
Subscribe = Callable[[str, Handler], None]
Publish = Callable[[str, bytes], Awaitable[None]]

SPB_ACTIONS = {"Node Control/Reload": "reload", "Node Control/Ping": "ping"}


class CommandBinding:
    def __init__(
        self,
        router: CommandRouter,
        gateway_id: str,
        output: MqttOutput,
        publish: Publish,
        sparkplug: Any = None,
    ) -> None:
        self.router = router
        self.gw = gateway_id
        self.output = output
        self.publish = publish
        self.sparkplug = sparkplug  # the output's SparkplugEncoder (alias table for DCMD)
        self.prefix = f"{output.topic_prefix}/{gateway_id}"
        self.apikey = output.apikey or gateway_id
        self._iota_seq = 0

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
            cmd = parse_native(device, payload, reply)
        except CommandRejected as exc:
            cid = exc.command_id or command_id_of(payload)
            await self._answer(reply, self.router.reject(cid, exc.reason, f"native:{topic}"))
            return
        await self._answer(reply, await self.router.execute(cmd))

    async def _config(self, topic: str, payload: bytes) -> None:
        """Remote config update: ``{"id", "toml", "ts"?, "nonce"?, "sig"?}``; the signature (if
        any) covers the SHA-256 of the TOML text as the command value."""
        reply = f"{topic}/res"
        try:
            cmd = parse_config(payload, reply)
        except CommandRejected as exc:
            cid = exc.command_id or command_id_of(payload)
            await self._answer(reply, self.router.reject(cid, exc.reason, "config"))
            return
        await self._answer(reply, await self.router.execute(cmd))

    async def _iota(self, topic: str, payload: bytes) -> None:
        from agent.fiware.answers import command_names, iota_answer

        device = topic.split("/")[2]
        reply = f"/{self.apikey}/{device}/cmdexe"
        ngsild = self.output.encoding == "ngsild"
        self._iota_seq += 1
        try:
            cmd = parse_iota(device, payload, self._iota_seq, reply)
        except CommandRejected as exc:
            res = self.router.reject(f"iota-{device}-{self._iota_seq}", exc.reason, "iota")
            names = command_names(payload)
            for name in names:  # the IoT Agent's <name>_status shows the refusal
                await self.publish(*iota_answer(self.apikey, device, name, res, ngsild=ngsild))
            if not names:  # no command to attach it to: the native response topic
                await self._answer(f"{self.prefix}/{device}/cmd/res", res)
            return
        res = await self.router.execute(cmd)
        await self.publish(*iota_answer(self.apikey, device, cmd.target, res, ngsild=ngsild))

    async def _sparkplug(self, topic: str, payload: bytes) -> None:
        from agent.encoders.sparkplug_codec import (
            SparkplugDecodeError,
            decode_command,
            parse_payload,
        )

        cid = "spb-" + hashlib.sha256(topic.encode() + payload).hexdigest()[:20]
        parts = topic.split("/")
        device = parts[4] if len(parts) == 5 else None
        reply = f"{self.prefix}/{device}/cmd/res" if device else f"{self.prefix}/cmd/res"
        try:
            if self.sparkplug is not None:
                cmds = self.sparkplug.decode_command(topic, payload)
            else:
                cmds = decode_command(topic, payload)
            ts = parse_payload(topic, payload).timestamp or None
        except SparkplugDecodeError as exc:
            await self._answer(reply, self.router.reject(cid, exc.reason, "sparkplug"))
            return
        for i, (dev, metric, metric_value) in enumerate(cmds):
            name, value = metric, metric_value
            if dev is None:
                if name == "Node Control/Rebirth":
                    continue  # handled by the encoder's on_message
                action = SPB_ACTIONS.get(name)
                if action is None:
                    res = self.router.reject(
                        f"{cid}-{i}", f"unsupported node metric '{name}'", "sparkplug"
                    )
                    await self._answer(reply, res)
                    continue
                name, value = action, None
            cmd = Command(
                f"{cid}-{i}", "sparkplug", dev, name, value, issued_at_ms=ts, reply_to=reply
            )
            await self._answer(reply, await self.router.execute(cmd))
