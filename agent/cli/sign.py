"""``cityedge sign``: write a signed native command, ready to publish (docs/COMMANDS.md).

Integrators can check their own implementation against it: the signed string is printed on
stderr with ``--explain``. The key is the gateway's (``-c``: the secret ``hmac_secret`` names,
from ``$CREDENTIALS_DIRECTORY`` or ``CITYEDGE_SECRETS__<NAME>``) or a key file.
"""

from __future__ import annotations

import argparse
import json
import secrets
import sys
import time
from pathlib import Path
from typing import Any

from agent.cli.common import config_option, describe, load_or_report
from drivers.core.reading import Value

EXAMPLES = """examples:
  cityedge sign lamp-1 dim_level 0.4            # key and gateway id from the config
  cityedge sign --topic --action ping           # the topic on a first line, then the command
  cityedge sign --key-file cmd.key --kid cmd_key --gateway hn-cabinet-0042 lamp-01 lamp_switch on
  cityedge sign --id wo-2291 --ts 2026-11-23T18:00:00Z --nonce 7f3a9c cam-21 preset 3
VALUE is JSON when it parses as a JSON number, true, false or null, else a string.
The command goes to <prefix>/<gateway>/<device>/cmd (gateway actions: <prefix>/<gateway>/cmd);
--topic prints that topic on a first line. The key file holds the secret's text (a trailing
newline is ignored), the same bytes as the credential file the agent reads."""


def register(sub: Any) -> None:
    p = sub.add_parser(
        "sign",
        help="produce a signed command (HMAC-SHA256, docs/COMMANDS.md)",
        description=describe(__doc__),
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("target", nargs="*", metavar="DEVICE POINT VALUE", help="what to write")
    p.add_argument("--action", help="a gateway action instead (ping, rebirth, reload)")
    config_option(
        p,
        "gateway file: gateway id, key and topic prefix "
        "(default $CITYEDGE_CONFIG, else /etc/cityedge/gateway.toml)",
    )
    p.add_argument("--key-file", help="read the key from this file instead of the config")
    p.add_argument("--kid", help="key id to send (the secret's name; default: none sent)")
    p.add_argument("--gateway", help="gateway id (default: from the config)")
    p.add_argument("--id", help="command id (default: a random one)")
    p.add_argument("--ts", help="epoch ms or ISO 8601 UTC (default: now, in epoch ms)")
    p.add_argument("--nonce", help="default: 128 random bits in hex")
    p.add_argument("--topic", action="store_true", help="print the topic on a first line")
    p.add_argument("--explain", action="store_true", help="print the signed string on stderr")
    p.set_defaults(func=run)


def _value(text: str) -> Value:
    try:
        v = json.loads(text)
    except ValueError:
        return text
    return v if v is None or isinstance(v, bool | int | float) else text


def run(args: argparse.Namespace) -> int:
    from agent.control.signing import SignedFields, canonical, signature

    if args.action is not None:
        if args.target:
            print("cityedge: give DEVICE POINT VALUE or --action, not both", file=sys.stderr)
            return 2
        device, target, value = "", args.action, None
    elif len(args.target) == 3:
        device, target, value = args.target[0], args.target[1], _value(args.target[2])
    else:
        print("cityedge: sign DEVICE POINT VALUE, or sign --action NAME", file=sys.stderr)
        return 2
    gateway, kid, key, prefix = args.gateway, args.kid, None, "cityedge"
    if args.key_file is not None:
        try:
            key = Path(args.key_file).read_text("utf-8").rstrip("\r\n").encode()
        except OSError as exc:
            print(f"cityedge: cannot read {args.key_file}: {exc.strerror}", file=sys.stderr)
            return 1
    if key is None or gateway is None:
        loaded = load_or_report(args.config)
        if loaded is None:
            return 78
        cfg = loaded.config
        gateway = gateway or cfg.gateway.id
        prefix = next((o.topic_prefix for o in cfg.outputs if hasattr(o, "topic_prefix")), prefix)
        if key is None:
            name = kid or cfg.commands.hmac_secret
            if name is None or name not in cfg.secrets:
                why = loaded.secret_notes.get(name or "")
                print(
                    f"cityedge: no key: {why}"
                    if why
                    else "cityedge: no key: set [commands] hmac_secret and its secret, or pass "
                    "--key-file",
                    file=sys.stderr,
                )
                return 1
            key = cfg.secrets[name].get_secret_value().encode()
    ts = args.ts or str(int(time.time() * 1000))
    cmd: dict[str, object] = {"id": args.id or f"c-{secrets.token_hex(8)}"}
    cmd["action" if args.action is not None else "point"] = target
    if args.action is None:
        cmd["value"] = value
    cmd["ts"] = int(ts) if ts.isdigit() else ts
    cmd["nonce"] = args.nonce or secrets.token_hex(16)
    if kid:
        cmd["kid"] = kid
    fields = SignedFields(
        kid or "", gateway, str(cmd["id"]), device, target, value, ts, str(cmd["nonce"])
    )
    cmd["sig"] = signature(key, fields)
    if args.explain:
        sys.stderr.write(canonical(fields).decode() + "\n")
    if args.topic:
        print(f"{prefix}/{gateway}/{device}/cmd" if device else f"{prefix}/{gateway}/cmd")
    print(json.dumps(cmd, ensure_ascii=False, separators=(",", ":")))
    return 0
