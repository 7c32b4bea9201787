"""Remote config update over MQTT: validate, apply, acknowledge, roll back on failure.

The new gateway file is validated next to the live one (same drop-ins, same profile library),
then swapped in atomically with the previous version kept as ``<file>.previous``. If the reload
does not apply, the previous file is restored and reloaded. A remote update may not change where
the gateway connects (MQTT brokers, TCP endpoints of buses): that stays a technician's decision,
so a stolen platform credential cannot redirect the gateway's traffic.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

from agent.config.loader import LoadedConfig, load_config
from agent.config.outputs import MqttOutput
from drivers.core.endpoint import parse_endpoint
from drivers.core.errors import ConfigError

if TYPE_CHECKING:
    from agent.runtime import Agent

log = logging.getLogger("cityedge.config")


def network_targets(loaded: LoadedConfig) -> set[str]:
    outputs = loaded.config.outputs
    targets = {str(b.url) for o in outputs if isinstance(o, MqttOutput) for b in o.brokers}
    for bus in loaded.config.buses:
        ep = parse_endpoint(bus.endpoint)
        if not ep.is_serial:
            targets.add(f"{ep.host}:{ep.port}")
    return targets


async def apply_remote_config(agent: Agent, cmd_id: str, text: str) -> str | None:
    """Return None when applied, else the reason (nothing changed, or rolled back)."""
    main = Path(agent.loaded.files[0])
    candidate = main.with_name(f".{main.name}.{cmd_id[:32]}.new")
    try:
        await asyncio.to_thread(candidate.write_text, text, "utf-8")
    except OSError as exc:
        return f"cannot write next to {main}: {exc.strerror or exc} (read-only config dir?)"
    try:
        try:
            new = await asyncio.to_thread(
                load_config, candidate, agent.loaded.dropin_dir or main.parent / "conf.d"
            )
        except ConfigError as exc:
            issues = [str(i).replace(str(candidate), main.name) for i in exc.issues]
            return "invalid config: " + "; ".join(issues[:10])
        added = network_targets(new) - network_targets(agent.loaded)
        if added:
            return (
                "remote updates may not add network destinations "
                f"({', '.join(sorted(added))}); change them on site"
            )
        backup = main.with_name(main.name + ".previous")
        await asyncio.to_thread(shutil.copy2, main, backup)
        os.replace(candidate, main)
        result = await agent.reload(f"mqtt:{cmd_id}")
        if result.ok:
            log.info("remote config %s applied (previous version kept in %s)", cmd_id, backup)
            return None
        os.replace(backup, main)
        await agent.reload(f"rollback of {cmd_id}")
        return "reload failed, previous config restored: " + "; ".join(result.errors[:5])
    finally:
        candidate.unlink(missing_ok=True)
