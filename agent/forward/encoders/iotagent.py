"""FIWARE IoT Agent JSON measures (``encoding = "iotagent"``, docs/PAYLOADS.md "FIWARE").

For a stock iotagent-json provisioned with ``cityedge fiware provision``: topic
``/<apikey>/<device id>/attrs``, payload one JSON object per observation time,
``{"<point>": value, ..., "TimeInstant": "<observedAt>"}``, or an array of them (the IoT
Agent's multi-measure) when a batch spans several times. The IoT Agent names, types and
places each value from its provisioning (agent/forward/fiware/mapping.py), and with the group's
``timestamp: true`` the TimeInstant becomes every attribute's ``observedAt``.

Values are given in the provisioned type: 0/1 where the model wants an integer flag, a
bitfield as its flag names joined by ","; a value outside its model attribute's enum or
bounds is left out (the Smart Data Model could not hold it; native JSON and NGSI-LD still
carry it). Bad readings are left out (a measure has no null).

Each device state transition is one measure on the device's topic,
``{"_deviceState": "offline", "_deviceStateReason": "timeout", "TimeInstant": <its time>}``,
provisioned as the Device entity's ``deviceState`` and ``deviceStateReason`` (the reason is
``""`` when the device is online again).
"""

from __future__ import annotations

import functools
import json
import logging
from collections.abc import Sequence
from pathlib import Path

from agent.config.outputs import MqttOutput
from agent.forward.encoders import sdm
from agent.forward.encoders.base import IotAgentTopics, OutMessage
from agent.forward.fiware.mapping import REASON_KEY, STATE_KEY, Attr, DeviceMap, device_map
from drivers.base import DeviceBinding
from drivers.core.reading import Quality, Reading, iso_ms
from drivers.device_state import Transition

log = logging.getLogger("cityedge.iotagent")

Measure = dict[str, object]


class IotAgentEncoder(IotAgentTopics):
    name = "iotagent"

    def __init__(
        self,
        output: MqttOutput,
        gateway_id: str,
        bindings: Sequence[DeviceBinding],
        state_dir: Path,
    ) -> None:
        super().__init__(output, gateway_id)
        maps: list[DeviceMap] = [device_map(gateway_id, b) for b in bindings]
        self._attrs: dict[tuple[str, str], Attr] = {
            (m.device_id, a.object_id): a for m in maps for a in m.attributes
        }
        self.left_out = 0  # values a model attribute could not hold

    def device_status(
        self, device_id: str, online: bool, transition: Transition | None = None
    ) -> list[OutMessage]:
        if transition is None:
            state, reason, at = "online" if online else "offline", None, self._clock()
        else:
            state, reason, at = transition.state.value, transition.reason, transition.at_ms
        measure = {
            "TimeInstant": _iso(at),
            STATE_KEY: state,
            REASON_KEY: "" if reason is None else reason.value,
        }
        payload = json.dumps(measure, separators=(",", ":"), ensure_ascii=False).encode()
        return [OutMessage(self.topic(device_id), payload, qos=self._qos)]

    def encode(self, batch: Sequence[Reading]) -> list[OutMessage]:
        by_device: dict[str, list[tuple[int, Measure]]] = {}
        for r in batch:
            if r.quality is Quality.BAD or r.value is None:
                continue
            a = self._attrs.get((r.device_id, r.point))
            if a is None:
                continue  # not provisioned: the IoT Agent would not know where to put it
            value: object
            if isinstance(r.value, tuple):
                value = ",".join(r.value) if a.text else list(r.value)
            elif a.spec is not None:
                value = sdm.model_value(a.spec, r.value)
                if not a.spec.holds(value):
                    self.left_out += 1
                    continue
            elif isinstance(r.value, bool) and a.type == "Number":
                value = int(r.value)  # a measurement's numValue
            else:
                value = r.value
            self._measure(by_device.setdefault(r.device_id, []), r)[r.point] = value
        out: list[OutMessage] = []
        for device_id, measures in by_device.items():
            items = [m for _, m in measures]
            body: object = items[0] if len(items) == 1 else items
            payload = json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()
            out.append(OutMessage(self.topic(device_id), payload, qos=self._qos))
        return out

    @staticmethod
    def _measure(measures: list[tuple[int, Measure]], r: Reading) -> Measure:
        """The measure of the reading's observation time, oldest first; a point seen twice at
        one time (a replay) starts another, so no measure holds two values of one point."""
        for ts, m in measures:
            if ts == r.observed_at_ms and r.point not in m:
                return m
        m = {"TimeInstant": _iso(r.observed_at_ms)}
        measures.append((r.observed_at_ms, m))
        return m


_iso = functools.lru_cache(maxsize=256)(iso_ms)
