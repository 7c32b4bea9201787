"""Command answers a stock FIWARE IoT Agent (iotagent-json) turns into the right status.

iotagent-json hands every ``/<apikey>/<device>/cmdexe`` message to iotagent-node-lib's
``setCommandResult`` with the status ``OK`` (lib/commandHandler.js, ``updateCommand``): the
value becomes ``<cmd>_info``, and ``<cmd>_status`` is ``OK`` whatever the value says. A key
that is no provisioned command is refused there (``CommandNotFound``) and reaches nothing.
So a command that was not carried out is not answered on ``cmdexe``: its ``<cmd>_status``
(``ERROR``) and ``<cmd>_info`` (the result) go as a measure on ``/<apikey>/<device>/attrs``,
the way iotagent-node-lib documents reporting a command error ("Scenario 3: commands
(error)"); the service group is provisioned with ``explicitAttrs: false`` so they pass.
"""

from __future__ import annotations

import json

from agent.control.model import CommandResult, CommandStatus

MAX_NAMES = 8
MAX_NAME = 128


def command_names(payload: bytes) -> list[str]:
    """The command names a payload addresses, when it is a JSON object at all (best effort,
    for answering one that failed to parse)."""
    try:
        d = json.loads(payload)
    except (ValueError, UnicodeDecodeError):
        return []
    if not isinstance(d, dict):
        return []
    return [k for k in d if isinstance(k, str) and 0 < len(k) <= MAX_NAME][:MAX_NAMES]


def iota_answer(
    apikey: str, device: str, command: str, result: CommandResult, *, ngsild: bool = False
) -> tuple[str, bytes]:
    """(topic, payload) of the answer to one IoT Agent command. ``ngsild`` outputs (NGSI-LD
    entities on ``attrs``, no IoT Agent in the path) keep every answer on ``cmdexe``."""
    info = result.to_dict()
    if result.status is CommandStatus.OK or ngsild:
        body: dict[str, object] = {command: info}
        topic = f"/{apikey}/{device}/cmdexe"
    else:
        body = {f"{command}_status": "ERROR", f"{command}_info": info}
        topic = f"/{apikey}/{device}/attrs"
    return topic, json.dumps(body, separators=(",", ":")).encode()
