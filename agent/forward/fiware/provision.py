"""The IoT Agent provisioning of a gateway: one service group per ``iotagent`` output (its API
key) and one device per enabled device, built from agent/forward/fiware/mapping.py.

Bodies for ``POST /iot/services`` and ``POST /iot/devices`` on the IoT Agent's north port
(iotagent-node-lib's provisioning API; its lib/templates/deviceGroup.json and
createDevice.json accept them: tests/agent/test_fiware.py).
"""

from __future__ import annotations

from typing import Any

from agent.config.loader import LoadedConfig
from agent.config.outputs import MqttOutput
from agent.forward.fiware.mapping import device_map
from agent.runtime import bindings_for

RESOURCE = "/iot/json"  # iotagent-json's default resource


def service_group(loaded: LoadedConfig, output: MqttOutput) -> dict[str, Any]:
    return {
        "apikey": output.apikey or loaded.config.gateway.id,
        "resource": RESOURCE,
        "entity_type": "Device",
        "transport": "MQTT",
        "protocol": "IoTA-JSON",
        "ngsiVersion": "ld",
        # each measure's TimeInstant becomes every attribute's observedAt: the reading's time
        "timestamp": True,
        # false: a command's <cmd>_status / <cmd>_info measures (a rejected command) pass
        "explicitAttrs": False,
    }


def provisioning(loaded: LoadedConfig, output: MqttOutput) -> dict[str, Any]:
    """``{"services": <body of POST /iot/services>, "devices": <body of POST /iot/devices>}``."""
    gw = loaded.config.gateway.id
    apikey = output.apikey or gw
    devices = []
    for b in bindings_for(loaded):
        m = device_map(gw, b)
        devices.append(
            {
                "device_id": b.id,
                "entity_name": m.entity_name,
                "entity_type": m.entity_type,
                "apikey": apikey,
                "protocol": "IoTA-JSON",
                "transport": "MQTT",
                "ngsiVersion": "ld",
                "timestamp": True,
                "explicitAttrs": False,
                "attributes": [a.provision() for a in m.attributes],
                "commands": [{"name": c, "type": "command"} for c in m.commands],
                "static_attributes": list(m.statics),
            }
        )
    return {
        "services": {"services": [service_group(loaded, output)]},
        "devices": {"devices": devices},
    }
