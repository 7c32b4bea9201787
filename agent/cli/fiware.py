"""``cityedge fiware provision``: the FIWARE IoT Agent service group and devices of a config.

Prints the bodies of ``POST /iot/services`` and ``POST /iot/devices`` for the output's API key
(docs/PAYLOADS.md, "FIWARE"), or posts them to the IoT Agent's north port with ``--iota``.
"""

from __future__ import annotations

import argparse
import json
import sys
import urllib.error
import urllib.request
from typing import Any

from agent.cli.common import config_file, load_or_report
from agent.config.outputs import MqttOutput

EXAMPLES = """examples:
  cityedge fiware provision /etc/cityedge/gateway.toml
  cityedge fiware provision gateway.toml --output city-platform --subservice /lighting
  cityedge fiware provision gateway.toml --iota http://iot-agent:4041 --service hanoi
exit status: 0 done, 1 the IoT Agent refused a body, 2 no usable output, 78 invalid config"""


def register(sub: Any) -> None:
    p = sub.add_parser(
        "fiware",
        help="FIWARE IoT Agent provisioning for the gateway's devices",
        description="FIWARE integration helpers.",
    )
    fsub = p.add_subparsers(dest="fiware_command", metavar="ACTION", required=True)
    q = fsub.add_parser(
        "provision",
        help="print (or post) the IoT Agent service group and device provisioning",
        description="Build the iotagent-json service group (API key of an 'iotagent' output) "
        "and one device per enabled device: entity id and type, attributes with their Smart "
        "Data Models names and types, commands, static attributes such as location.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    config_file(q)
    q.add_argument("--output", help="id of the MQTT output (default: the iotagent one)")
    q.add_argument("--service", default="openiot", help="fiware-service header (default openiot)")
    q.add_argument("--subservice", default="/", help="fiware-servicepath header (default /)")
    q.add_argument("--iota", metavar="URL", help="post to this IoT Agent north port")
    q.set_defaults(func=run)


def _output(outputs: list[MqttOutput], wanted: str | None) -> MqttOutput | str:
    if wanted is not None:
        for o in outputs:
            if o.id == wanted:
                return o
        return f"no MQTT output '{wanted}' (have: {', '.join(o.id for o in outputs) or 'none'})"
    iota = [o for o in outputs if o.encoding == "iotagent"]
    if len(iota) == 1:
        return iota[0]
    return 'name the MQTT output with --output (none or several have encoding = "iotagent")'


def run(args: argparse.Namespace) -> int:
    from agent.forward.fiware.provision import provisioning

    loaded = load_or_report(args.config, args.dropin)
    if loaded is None:
        return 78
    outputs = [o for o in loaded.config.outputs if isinstance(o, MqttOutput)]
    out = _output(outputs, args.output)
    if isinstance(out, str):
        print(f"cityedge: {out}", file=sys.stderr)
        return 2
    body = provisioning(loaded, out)
    headers = {"fiware-service": args.service, "fiware-servicepath": args.subservice}
    if args.iota is None:
        doc = {
            "headers": headers,
            "POST /iot/services": body["services"],
            "POST /iot/devices": body["devices"],
        }
        print(json.dumps(doc, indent=2, ensure_ascii=False))
        return 0
    rc = 0
    for path, payload in (("/iot/services", body["services"]), ("/iot/devices", body["devices"])):
        status, text = _post(args.iota.rstrip("/") + path, payload, headers)
        ok = 200 <= status < 300
        # 409: already provisioned (DUPLICATE_GROUP / DUPLICATE_DEVICE_ID); update by hand
        print(f"POST {path}: {status} {text.strip()[:200]}".rstrip())
        if not ok and status != 409:
            rc = 1
    return rc


def _post(url: str, payload: object, headers: dict[str, str]) -> tuple[int, str]:
    req = urllib.request.Request(
        url,
        data=json.dumps(payload).encode(),
        headers={"Content-Type": "application/json", **headers},
        method="POST",
    )
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, resp.read().decode("utf-8", "replace")
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode("utf-8", "replace")
    except (urllib.error.URLError, OSError) as exc:
        return 0, f"cannot reach the IoT Agent: {getattr(exc, 'reason', exc)}"
