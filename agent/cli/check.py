"""``cityedge check CONFIG``: validate everything and print a summary."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from agent.cli.common import config_file, load_or_report
from agent.config.gateway import GatewayConfig
from agent.config.loader import LoadedConfig
from agent.config.outputs import MqttOutput
from agent.control.model import CHANNELS
from agent.control.security import channels_of, config_warnings, exposed_secret_files
from agent.forward import statedir
from drivers.core.endpoint import parse_endpoint

EXAMPLES = """examples:
  cityedge check /etc/cityedge/gateway.toml
  cityedge check examples/demo.toml --dropin /etc/cityedge/conf.d
exit status: 0 valid, 78 invalid (every problem is listed with file, line and field),
             1 the state directory cannot hold the outbox (the message says what to do)
Checked besides the config and its profiles: the files it names (TLS CA, certificate and key,
profile directories) and each secret it names, where the installed unit loads it from (the
file exists, is not empty, mode 0600; its value is not read). Also shown: the effective
policy of each command channel, and warnings about settings that weaken it
(tls.insecure_skip_verify, a channel trusting an anonymous broker connection)."""


def register(sub: Any) -> None:
    p = sub.add_parser(
        "check",
        help="validate a gateway config and its profiles",
        description="Validate the gateway file, its drop-ins and every profile "
        "it uses; print a summary.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    config_file(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    loaded = load_or_report(args.config, args.dropin, secrets="verify", check_files=True)
    if loaded is None:
        return 78
    cfg = loaded.config
    print(f"gateway {cfg.gateway.id}: configuration OK ({len(loaded.files)} file(s))")
    for issue in loaded.warnings:
        print(f"warning: {issue}")
    print(f"buses: {len(cfg.buses)}")
    for bus in cfg.buses:
        ep = parse_endpoint(bus.endpoint)
        devs = loaded.devices_on(bus.id)
        extra = f", {ep.baudrate} {ep.bytesize}{ep.parity}{ep.stopbits}" if ep.is_serial else ""
        print(f"  {bus.id}: {bus.protocol} {ep.scheme}{extra} — {len(devs)} device(s)")
    npoints = 0
    print(f"devices: {len(cfg.devices)}")
    for dev in cfg.devices:
        prof = loaded.profiles[dev.profile]
        npoints += len(prof.points)
        state = "" if dev.enabled else " (disabled)"
        print(
            f"  {dev.id}: {prof.kind} '{dev.profile}' unit {dev.unit_id} on {dev.bus}, "
            f"{len(prof.points)} points every {dev.interval:g} s{state}"
        )
    print(f"points: {npoints}")
    print(f"outputs: {len(cfg.outputs)}")
    for out in cfg.outputs:
        detail = getattr(out, "path", None) or getattr(out, "encoding", "")
        print(f"  {out.id}: {out.type} {detail}")
    if loaded.secret_sources:
        print("secrets (values not shown):")
        for name, where in loaded.secret_sources.items():
            print(f"  {name}: {where}")
    print("command channels (effective policy, docs/COMMANDS.md):")
    for channel, policy, detail in channel_policies(cfg):
        print(f"  {channel:<10} {policy:<10} {detail}")
    warnings = [*exposed_secret_files(cfg), *config_warnings(cfg)]
    for w in warnings:
        print(f"warning: {w}")
    return check_state_dir(loaded)


_WHAT = {
    "signature": "HMAC-SHA256 signature with ts and nonce required",
    "broker": "trusts the broker's account / client certificate and its ACL",
    "off": "every command refused (answered and audited)",
}


def channel_policies(cfg: GatewayConfig) -> list[tuple[str, str, str]]:
    """(channel, policy, what it means here) for each command channel."""
    effective = cfg.commands.effective_policy()
    mqtt = [o for o in cfg.outputs if isinstance(o, MqttOutput)]
    keys = [k for k in (cfg.commands.hmac_secret, *cfg.commands.hmac_extra_secrets) if k]
    rows = []
    for channel in CHANNELS:
        policy = effective[channel]
        if channel == "local":
            detail = (
                f"control socket and CLI: root, the agent's user and group "
                f"'{cfg.commands.local_group}' (Unix peer credentials)"
                if policy == "peer"
                else "local writes refused"
            )
            rows.append((channel, policy, detail))
            continue
        outs = [o.id for o in mqtt if channel in channels_of(o)]
        detail = _WHAT[policy]
        if policy == "signature":
            detail += f", key id(s) {', '.join(keys) or '-'}"
        elif policy == "broker" and channel in ("native", "config"):
            detail += "; a signature, if sent, is verified"
        if not outs:
            detail = "not offered (no output carries it)"
        else:
            detail += f"; output(s) {', '.join(outs)}"
        rows.append((channel, policy, detail))
    return rows


def check_state_dir(loaded: LoadedConfig) -> int:
    """The state directory (outbox, sequence mark, control socket) and each outbox budget."""
    cfg = loaded.config
    path = Path(cfg.gateway.state_dir)
    rep = statedir.inspect(path)
    free = f", {statedir.mib(rep.free)} free" if rep.free is not None else ""
    print(f"state directory {path}: {'OK' if rep.ok else 'UNUSABLE'}{free}")
    for w in rep.warnings:
        print(f"  warning: {w}")
    for e in rep.errors:
        print(f"  ERROR: {e}")
    rate = sum(
        len(loaded.profiles[d.profile].points) / d.interval for d in cfg.devices if d.enabled
    )
    for out in cfg.outputs:
        if not isinstance(out, MqttOutput):
            continue
        budget, how = statedir.budget_for(path, out.outbox_max_bytes)
        hours = statedir.outage_hours(budget, rate)
        cover = (
            f"; about {hours:.1f} h of outage at the polled {rate:.0f} readings/s" if hours else ""
        )
        print(f"  outbox {out.id}: budget {statedir.mib(budget)} ({how}){cover}")
    return 0 if rep.ok else 1
