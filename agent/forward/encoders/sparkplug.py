"""Sparkplug B 3.0 edge node encoder (see docs/PAYLOADS.md, "Sparkplug B").

The gateway is one edge node (group id = ``sparkplug_group`` or ``topic_prefix``, edge node
id = gateway id); each configured device is a Sparkplug device with one metric per profile
point. Session rules implemented here (spec sections in brackets):

- bdSeq [6.4.19]: a new value for every MQTT CONNECT (``will()``), 0-255 wrapping, persisted in
  the state directory so a restart never reuses the previous session's number; the NBIRTH of a
  session carries the same bdSeq as that session's NDEATH will.
- seq [6.4.20]: one counter per edge node over NBIRTH, DBIRTH, NDATA, DDATA and DDEATH;
  NBIRTH is always seq 0, then +1 per message mod 256.
- Births [5.x]: NBIRTH and every DBIRTH define every metric with name, alias and datatype;
  NDATA/DDATA are by exception and address metrics by alias only.
- Aliases are assigned once and persisted with bdSeq, so they survive restarts and profile
  additions (new points get new aliases, existing ones never move).

Sparkplug uses the whole Encoder protocol (agent/forward/encoders/base.py): ``will()`` before
every CONNECT, registered as the will; ``encode`` only while ``ready_to_publish()`` is true
(births sent, primary host online); ``wants_reconnect()`` acted on after ``on_message``;
``on_disconnect()`` published before a graceful disconnect.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agent import __version__
from agent.config.outputs import MqttOutput
from agent.forward.encoders import sparkplug_b_pb2 as pb
from agent.forward.encoders import sparkplug_codec as spc
from agent.forward.encoders.base import BaseEncoder, OutMessage
from drivers.base import DeviceBinding
from drivers.core.reading import Quality, Reading, Value, now_ms
from drivers.device_state import Transition

log = logging.getLogger(__name__)

REBIRTH = "Node Control/Rebirth"
MAX_NCMD = 16 * 1024  # agent/control/parse.py MAX_PAYLOAD: the size limit of every channel
BDSEQ = "bdSeq"
NODE = ""  # key of the edge node's own metrics in the metric tables

_QUALITY = {
    Quality.GOOD: spc.QUALITY_GOOD,
    Quality.BAD: spc.QUALITY_BAD,
    Quality.STALE: spc.QUALITY_UNCERTAIN,
}


class SparkplugNotReady(RuntimeError):
    """encode() called before the session's births (or while the primary host is offline)."""


@dataclass(slots=True)
class _Metric:
    name: str
    alias: int
    datatype: int
    unit: str | None = None
    value: Value = None
    timestamp: int | None = None
    quality: int = spc.QUALITY_GOOD


class SparkplugEncoder(BaseEncoder):
    name = "sparkplug"

    def __init__(
        self,
        output: MqttOutput,
        gateway_id: str,
        bindings: Sequence[DeviceBinding],
        state_dir: Path,
        *,
        clock: Callable[[], int] = now_ms,
    ) -> None:
        self.group = output.sparkplug_group or output.topic_prefix
        self.edge = gateway_id
        self.primary_host = output.primary_host_id
        self._data_qos = output.qos
        self._clock = clock
        self._state_file = Path(state_dir) / f"sparkplug-{output.id}.json"
        saved = self._load()
        last_bdseq = saved.get("bdSeq")
        self._next_bdseq = (last_bdseq + 1) % 256 if isinstance(last_bdseq, int) else 0
        self._bdseq: int | None = None
        self._aliases: dict[str, int] = {
            str(k): int(v) for k, v in dict(saved.get("aliases", {})).items()
        }
        self._metrics: dict[str, dict[str, _Metric]] = {NODE: {}}
        self._define(NODE, REBIRTH, spc.BOOLEAN, value=False)
        self._define(NODE, "Node Info/Version", spc.STRING, value=__version__)
        for b in sorted(bindings, key=lambda b: b.id):
            if not b.device.enabled:
                continue
            self._metrics[b.id] = {}
            per_device = b.device.filters
            for p in b.profile.points:
                chain = per_device.get(p.name, p.filters)
                kinds = frozenset(str(f.type) for f in chain)
                self._define(b.id, p.name, spc.point_datatype(p, kinds), unit=p.unit)
        self._save()
        self._online: dict[str, bool] = {}  # last device_status per device
        self._born: set[str] = set()  # devices with a DBIRTH in this session
        self._node_born = False
        self._seq = 0
        self._host = spc.HostState()
        self._reconnect = False

    # --- topics ---------------------------------------------------------------------------
    def topic(self, message_type: str, device: str | None = None) -> str:
        base = f"{spc.NAMESPACE}/{self.group}/{message_type}/{self.edge}"
        return base if device is None else f"{base}/{device}"

    @property
    def state_topic(self) -> str | None:
        return None if self.primary_host is None else f"{spc.NAMESPACE}/STATE/{self.primary_host}"

    # --- Encoder protocol -----------------------------------------------------------------
    def will(self) -> OutMessage:
        """A new session: allocate and persist the next bdSeq, return the NDEATH will."""
        self._bdseq = self._next_bdseq
        self._next_bdseq = (self._bdseq + 1) % 256
        self._save()
        self._node_born = False
        self._host = spc.HostState()  # the host's STATE must be seen again on this connection
        return self._ndeath()

    def on_connect(self) -> list[OutMessage]:
        if self._bdseq is None:
            self.will()
        self._node_born = False
        self._born.clear()
        if self.primary_host is not None and not self._host.online:
            return []  # births wait for the primary host's STATE [5.4, phid-wait]
        return self._births()

    def subscriptions(self) -> list[str]:
        subs = [self.topic("NCMD"), self.topic("DCMD") + "/+"]
        if self.state_topic is not None:
            subs.append(self.state_topic)
        return subs

    def on_message(self, topic: str, payload: bytes) -> list[OutMessage]:
        if topic == self.state_topic:
            return self._on_state(payload)
        if topic != self.topic("NCMD"):
            return []  # DCMD and other NCMD metrics belong to the command subsystem
        if len(payload) > MAX_NCMD:
            return []  # refused unparsed; the command binding answers and audits it
        try:
            commands = self.decode_command(topic, payload)
        except spc.SparkplugDecodeError as exc:
            log.warning("ignoring NCMD: %s", exc)
            return []
        if any(name == REBIRTH and value is True for _, name, value in commands):
            if self.primary_host is not None and not self._host.online:
                return []
            return self._births()
        return []

    def encode(self, batch: Sequence[Reading]) -> list[OutMessage]:
        if not self._node_born:
            raise SparkplugNotReady("no NBIRTH in this session yet (see ready_to_publish())")
        by_device: dict[str, list[Reading]] = {}
        for r in batch:
            by_device.setdefault(NODE if r.device_id == self.edge else r.device_id, []).append(r)
        out: list[OutMessage] = []
        if self._learn(by_device.get(NODE, ())):
            out.extend(self._births())  # a new node metric can only be defined by an NBIRTH
        for device, of_device in by_device.items():
            readings = of_device
            if device == NODE:
                out.append(self._data("NDATA", NODE, readings))
                continue
            if device not in self._metrics:
                self._metrics[device] = {}
            if not self._online.get(device, True):
                # A device reported down gets no DDATA until its next DBIRTH. Its stale
                # values (``stale_readings``) say nothing the DDEATH did not: dropped.
                readings = [r for r in readings if r.quality is not Quality.STALE]
                if not readings:
                    continue
            changed = self._learn(readings, device)
            if device not in self._born or changed:
                out.append(self._dbirth(device))
            out.append(self._data("DDATA", device, readings))
            if not self._online.get(device, True):
                # Data of a device reported down: only history replayed after a reconnect (the
                # publisher orders transitions with the rows otherwise). Born just to carry it,
                # dead again right after; liveness comes from device_status() only.
                out.append(self._ddeath(device))
        return out

    def device_status(
        self, device_id: str, online: bool, transition: Transition | None = None
    ) -> list[OutMessage]:
        """DDEATH when the device goes offline, DBIRTH when it answers again (online or
        degraded: a degraded device is alive, its failing points carry bad quality)."""
        self._online[device_id] = online
        if not self._node_born or device_id not in self._metrics:
            return []
        if online and device_id not in self._born:
            return [self._dbirth(device_id)]
        if not online and device_id in self._born:
            return [self._ddeath(device_id)]
        return []

    def ready_to_publish(self) -> bool:
        """True once NBIRTH went out in this session and the primary host (if any) is online."""
        return self._node_born

    def wants_reconnect(self) -> bool:
        """True (once) after the primary host went offline: the spec wants NDEATH (already
        returned by on_message), DISCONNECT and a new session [phid-offline]."""
        wanted, self._reconnect = self._reconnect, False
        return wanted

    def on_disconnect(self) -> list[OutMessage]:
        """NDEATH to publish before an intentional DISCONNECT [intentional-disconnect]."""
        if not self._node_born:
            return []
        self._node_born = False
        self._born.clear()
        return [self._ndeath()]

    @property
    def bdseq(self) -> int | None:
        return self._bdseq

    def decode_command(self, topic: str, payload: bytes) -> list[spc.Command]:
        aliases = {
            (None if dev == NODE else dev, m.alias): (m.name, m.datatype)
            for dev, metrics in self._metrics.items()
            for m in metrics.values()
        }
        return spc.decode_command(topic, payload, aliases)

    # --- messages -------------------------------------------------------------------------
    def _births(self) -> list[OutMessage]:
        self._seq = 0
        self._born.clear()
        msg = self._payload()
        m = msg.metrics.add(name=BDSEQ, timestamp=msg.timestamp, datatype=spc.INT64)
        m.long_value = self._bdseq or 0
        for metric in self._metrics[NODE].values():
            self._birth_metric(msg, metric)
        self._node_born = True
        out = [OutMessage(self.topic("NBIRTH"), msg.SerializeToString(), qos=0)]
        for device in self._metrics:
            if device != NODE and self._online.get(device, True):
                out.append(self._dbirth(device))
        return out

    def _dbirth(self, device: str) -> OutMessage:
        msg = self._payload()
        for metric in self._metrics[device].values():
            self._birth_metric(msg, metric)
        self._born.add(device)
        return OutMessage(self.topic("DBIRTH", device), msg.SerializeToString(), qos=0)

    def _ddeath(self, device: str) -> OutMessage:
        self._born.discard(device)
        return OutMessage(self.topic("DDEATH", device), self._payload().SerializeToString(), qos=0)

    def _ndeath(self) -> OutMessage:
        msg = pb.Payload(timestamp=self._clock())
        m = msg.metrics.add(name=BDSEQ, timestamp=msg.timestamp, datatype=spc.INT64)
        m.long_value = self._bdseq or 0
        return OutMessage(self.topic("NDEATH"), msg.SerializeToString(), qos=1, retain=False)

    def _data(self, kind: str, device: str, readings: Sequence[Reading]) -> OutMessage:
        msg = self._payload()
        seqs = [r.seq for r in readings]
        msg.uuid = f"{min(seqs)}-{max(seqs)}"  # stable message id: the readings' seq range
        table = self._metrics[device]
        for r in readings:
            d = table[r.point]
            m = msg.metrics.add(alias=d.alias, timestamp=r.observed_at_ms)
            spc.set_value(m, d.datatype, r.value)
            if r.historical:
                m.is_historical = True
            q = _QUALITY[r.quality]
            if q != spc.QUALITY_GOOD or q != d.quality:
                _quality(m, q)
            if d.timestamp is None or r.observed_at_ms >= d.timestamp:
                d.value, d.timestamp, d.quality = r.value, r.observed_at_ms, q
        device_arg = None if device == NODE else device
        return OutMessage(self.topic(kind, device_arg), msg.SerializeToString(), qos=self._data_qos)

    def _payload(self) -> pb.Payload:
        msg = pb.Payload(timestamp=self._clock(), seq=self._seq)
        self._seq = (self._seq + 1) % 256
        return msg

    def _birth_metric(self, msg: pb.Payload, d: _Metric) -> None:
        m = msg.metrics.add(
            name=d.name, alias=d.alias, datatype=d.datatype, timestamp=d.timestamp or msg.timestamp
        )
        spc.set_value(m, d.datatype, d.value)
        if d.quality != spc.QUALITY_GOOD:
            _quality(m, d.quality)
        if d.unit:
            m.properties.keys.append("engUnit")  # the unit property Ignition displays
            m.properties.values.add(type=spc.STRING, string_value=d.unit)

    def _on_state(self, payload: bytes) -> list[OutMessage]:
        try:
            state = spc.parse_state(payload)
        except ValueError as exc:
            log.warning("ignoring STATE from %s: %s", self.primary_host, exc)
            return []
        if not self._host.accept(state):
            return []  # older than what we already saw [phid-wait-timestamp]
        if state.online:
            return [] if self._node_born else self._births()
        if not self._node_born:
            return []
        self._node_born = False
        self._born.clear()
        self._reconnect = True
        return [self._ndeath()]

    # --- metric tables --------------------------------------------------------------------
    def _define(
        self, device: str, name: str, datatype: int, *, unit: str | None = None, value: Value = None
    ) -> None:
        key = f"{device}/{name}"
        alias = self._aliases.get(key)
        if alias is None:
            alias = max(self._aliases.values(), default=0) + 1
            self._aliases[key] = alias
        self._metrics[device][name] = _Metric(name, alias, datatype, unit, value)

    def _learn(self, readings: Sequence[Reading], device: str = NODE) -> bool:
        """Define metrics no birth has announced yet (points outside the profile)."""
        table = self._metrics[device]
        new = False
        for r in readings:
            if r.point not in table:
                self._define(device, r.point, spc.infer_datatype(r.value), unit=r.unit)
                new = True
        if new:
            self._save()
        return new

    def _load(self) -> dict[str, Any]:
        try:
            data = json.loads(self._state_file.read_text())
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            log.warning("unreadable %s (%s): bdSeq and aliases start afresh", self._state_file, exc)
            return {}
        return data if isinstance(data, dict) else {}

    def _save(self) -> None:
        tmp = self._state_file.with_suffix(".tmp")
        last = self._bdseq if self._bdseq is not None else (self._next_bdseq - 1) % 256
        try:
            self._state_file.parent.mkdir(parents=True, exist_ok=True)
            with open(tmp, "w") as f:
                json.dump({"bdSeq": last, "aliases": self._aliases}, f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self._state_file)
        except OSError as exc:  # a read-only or full state directory must not stop the agent
            log.error(
                "cannot save %s (%s): bdSeq and aliases may start afresh after a restart",
                self._state_file,
                exc.strerror or exc,
            )


def _quality(m: pb.Payload.Metric, code: int) -> None:
    m.properties.keys.append("Quality")
    m.properties.values.add(type=spc.INT32, int_value=code)
