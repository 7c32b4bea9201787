"""Cross-field checks that a single model cannot make (references, uniqueness, overlaps)."""

from __future__ import annotations

from collections.abc import Mapping
from urllib.parse import urlsplit

from agent.config.gateway import GatewayConfig
from agent.config.locations import location_problems, ngsi_problems
from agent.config.outputs import MqttOutput
from drivers.core.config import BusConfig, DeviceConfig
from drivers.core.endpoint import is_loopback, parse_endpoint
from drivers.core.issues import did_you_mean
from drivers.core.profile import DataType, Point, Profile
from drivers.core.sdm_terms import KINDS
from drivers.serial.mbus import SecondaryAddress

Loc = tuple[str | int, ...]

# Unit ids per transport (docs/DEPLOY.md, "Unit ids"). On a serial line (rtu://, ascii://,
# and rtu+tcp:// to a serial server) 0 is the broadcast address, which no device answers,
# and 248-255 are reserved: 1..247. Modbus TCP addresses the device by IP; its unit id picks
# a unit behind a TCP-to-RTU gateway (1..247, the same rules, since the gateway forwards it:
# 0 becomes a broadcast) or, for a device that is itself on TCP, 255 as the TCP spec asks
# (Messaging on TCP/IP Implementation Guide 1.0b, 4.4.2): 248..254 and 0 are refused.
UNIT_RANGES: dict[str, tuple[tuple[int, int], ...]] = {
    "modbus-serial": ((1, 247),),
    "modbus-tcp": ((1, 247), (255, 255)),
    "pelco_d": ((1, 255),),
    "mbus": ((0, 250),),  # 251-255: 253 selects by secondary address, 254/255 broadcast
    "serial": ((0, 255),),
}
UNIT_VALUES = {
    "modbus-serial": "1..247",
    "modbus-tcp": "1..247 for a unit behind a TCP gateway, or 255 for a device that is itself "
    "on Modbus TCP",
    "pelco_d": "1..255",
    "mbus": "0..250 (or address = its secondary address)",
    "serial": "0..255",
}
UNIT_HINTS = {
    "modbus-serial": "0 is the broadcast address (no device answers it) and 248..255 are "
    "reserved: use the device's address, 1..247",
    "modbus-tcp": "use the id of the unit behind a TCP-to-RTU gateway (1..247; 0 would be "
    "forwarded as a broadcast), or 255 for a device that is itself on Modbus TCP",
    "mbus": "primary addresses are 0..250 (253: set address = the secondary address instead)",
}


def _transport(bus: BusConfig) -> str:
    if bus.protocol != "modbus":
        return bus.protocol
    return "modbus-tcp" if parse_endpoint(bus.endpoint).scheme == "tcp" else "modbus-serial"


def _unit_problems(
    i: int, d: DeviceConfig, bus: BusConfig, prof: Profile | None
) -> list[tuple[Loc, str]]:
    """A unit id must be given where it selects the device, and fit the transport."""
    kind = _transport(bus)
    secondary = bus.protocol == "mbus" and d.address is not None
    if secondary:
        return []
    spec = prof.serial if prof is not None else None
    needs = kind != "serial" or (
        spec is not None
        and (spec.address_field is not None or any("{addr" in r.request for r in spec.reads))
    )
    if needs and "unit_id" not in d.model_fields_set:
        return [
            (
                ("devices", i, "unit_id"),
                f"missing: device '{d.id}' on a {kind} bus needs its address there; there is no "
                f"default: write unit_id = {UNIT_VALUES[kind]}",
            )
        ]
    ranges = UNIT_RANGES[kind]
    if any(lo <= d.unit_id <= hi for lo, hi in ranges):
        return []
    shown = " or ".join(f"{lo}..{hi}" if lo != hi else str(lo) for lo, hi in ranges)
    hint = UNIT_HINTS.get(kind)
    return [
        (
            ("devices", i, "unit_id"),
            f"unit id {d.unit_id} out of range {shown} for a {kind} bus"
            + (f": {hint}" if hint else ""),
        )
    ]


def _rs485_problems(i: int, echo: bool, kernel: bool, scheme: str) -> list[tuple[Loc, str]]:
    out: list[tuple[Loc, str]] = []
    if kernel and scheme not in ("rtu", "ascii", "serial"):
        out.append(
            (
                ("buses", i, "rs485", "kernel"),
                "the kernel RS-485 mode is a setting of a local serial port "
                "(rtu://, ascii://, serial://); a serial server switches its own line",
            )
        )
    if echo and scheme == "tcp":
        out.append((("buses", i, "rs485", "echo"), "Modbus TCP has no line echo"))
    return out


def cross_check(cfg: GatewayConfig, profiles: Mapping[str, Profile]) -> list[tuple[Loc, str]]:
    out: list[tuple[Loc, str]] = []
    _unique(out, "buses", [b.id for b in cfg.buses])
    _unique(out, "devices", [d.id for d in cfg.devices])
    _unique(out, "outputs", [o.id for o in cfg.outputs])
    buses = {b.id: b for b in cfg.buses}
    phys: dict[str, int] = {}
    for i, b in enumerate(cfg.buses):
        ep = parse_endpoint(b.endpoint)
        if ep.key in phys:
            out.append(
                (
                    ("buses", i, "endpoint"),
                    f"same physical bus as bus '{cfg.buses[phys[ep.key]].id}'"
                    " (one owner per bus: put both devices on one bus)",
                )
            )
        phys.setdefault(ep.key, i)
        if b.protocol == "modbus" and ep.scheme.startswith("serial"):
            out.append(
                (
                    ("buses", i, "endpoint"),
                    "modbus buses use tcp://, rtu+tcp://, rtu:// or ascii://",
                )
            )
        if b.protocol != "modbus" and ep.scheme in ("tcp", "rtu", "ascii", "rtu+tcp"):
            out.append(
                (("buses", i, "endpoint"), f"{b.protocol} buses use serial:// or serial+tcp://")
            )
        if b.rs485 is not None:
            out.extend(_rs485_problems(i, b.rs485.echo, b.rs485.kernel, ep.scheme))
    seen_units: dict[tuple[str, int], int] = {}
    seen_addresses: dict[tuple[str, str], int] = {}
    for i, d in enumerate(cfg.devices):
        bus = buses.get(d.bus)
        if bus is None:
            out.append(
                (
                    ("devices", i, "bus"),
                    f"unknown bus '{d.bus}'{did_you_mean(d.bus, buses)} "
                    f"(defined: {', '.join(buses) or 'none'})",
                )
            )
            continue
        # An M-Bus meter polled by secondary address is selected by it and talked to at 0xFD:
        # its unit id never goes on the wire, so it may be shared (or be 253).
        secondary = bus.protocol == "mbus" and d.address is not None
        if d.address is not None:
            out.extend(_address_problems(i, d.bus, d.address, bus.protocol, seen_addresses))
        key = (d.bus, d.unit_id)
        if key in seen_units and not secondary:
            out.append(
                (
                    ("devices", i, "unit_id"),
                    f"unit id {d.unit_id} is already used on "
                    f"bus '{d.bus}' by device '{cfg.devices[seen_units[key]].id}'",
                )
            )
        if not secondary:
            seen_units.setdefault(key, i)
        prof = profiles.get(d.profile)
        out.extend(_unit_problems(i, d, bus, prof))
        if prof is None:
            continue
        if prof.protocol != bus.protocol:
            out.append(
                (
                    ("devices", i, "profile"),
                    f"profile '{d.profile}' speaks "
                    f"{prof.protocol} but bus '{d.bus}' is {bus.protocol}",
                )
            )
        names = [p.name for p in prof.points]
        for pname in d.filters:
            if pname not in names:
                out.append(
                    (
                        ("devices", i, "filters", pname),
                        f"profile '{d.profile}' has no point '{pname}'{did_you_mean(pname, names)}",
                    )
                )
    out.extend(_command_checks(cfg))
    for i, o in enumerate(cfg.outputs):
        if isinstance(o, MqttOutput):
            out.extend(_mqtt_checks(i, o, cfg))
    out.extend(location_problems(cfg))
    out.extend(ngsi_problems(cfg, profiles))
    return out


def _address_problems(
    i: int, bus: str, address: str, protocol: str, seen: dict[tuple[str, str], int]
) -> list[tuple[Loc, str]]:
    loc: Loc = ("devices", i, "address")
    if protocol != "mbus":
        return [(loc, "address is only used by M-Bus devices")]
    try:
        norm = str(SecondaryAddress.parse(address))
    except ValueError as exc:
        return [(loc, str(exc))]
    first = seen.setdefault((bus, norm), i)
    if first != i:
        return [(loc, f"secondary address {norm} is already used on bus '{bus}' by another device")]
    return []


def _unique(out: list[tuple[Loc, str]], section: str, ids: list[str]) -> None:
    first: dict[str, int] = {}
    for i, x in enumerate(ids):
        if x in first:
            out.append(
                ((section, i, "id"), f"duplicate id '{x}' (first used by {section}[{first[x]}])")
            )
        first.setdefault(x, i)


def profile_problems(prof: Profile) -> list[tuple[Loc, str]]:
    """Problems inside one (resolved) profile: an unknown kind; in a Modbus profile overlaps,
    undefined ranges, tables."""
    out: list[tuple[Loc, str]] = []
    if prof.kind not in KINDS:
        out.append(
            (
                ("kind",),
                f"unknown kind '{prof.kind}'{did_you_mean(prof.kind, KINDS)}: one of "
                f"{', '.join(KINDS)} ('device' for any other kind of field device)",
            )
        )
    if prof.protocol != "modbus":
        return out
    spans: list[tuple[str, int, int, int, Point]] = []
    for i, p in enumerate(prof.points):
        lo, hi = p.address, p.address + p.registers - 1
        if p.writable and p.table.value in ("input", "discrete"):
            out.append((("points", i, "writable"), f"{p.table.value} table is read-only"))
        for u in prof.limits.undefined:
            if u.table == p.table and lo <= u.end and u.start <= hi:
                out.append(
                    (
                        ("points", i, "address"),
                        f"'{p.name}' lies in the undefined range {u.start}..{u.end}",
                    )
                )
        for t, a, b, _, q in spans:
            if t == p.table.value and lo <= b and a <= hi:
                shared_bit = lo == a and hi == b and lo == hi and DataType.BIT in (p.type, q.type)
                if not shared_bit:
                    out.append(
                        (
                            ("points", i, "address"),
                            f"'{p.name}' ({p.table.value} {lo}..{hi})"
                            f" overlaps '{q.name}' ({a}..{b})",
                        )
                    )
        spans.append((p.table.value, lo, hi, i, p))
    return out


def _mqtt_checks(i: int, o: MqttOutput, cfg: GatewayConfig) -> list[tuple[Loc, str]]:
    out: list[tuple[Loc, str]] = []
    for j, b in enumerate(o.brokers):
        u = urlsplit(b.url)
        if u.scheme not in ("mqtt", "mqtts") or not u.hostname:
            out.append(
                (("outputs", i, "brokers", j, "url"), "use mqtt://host:port or mqtts://host:port")
            )
            continue
        if (
            u.scheme == "mqtt"
            and o.tls is None
            and not o.allow_insecure
            and not is_loopback(u.hostname)
        ):
            out.append(
                (
                    ("outputs", i, "brokers", j, "url"),
                    "plain MQTT to a non-loopback "
                    "broker: use mqtts:// with [tls], or set allow_insecure = true",
                )
            )
    if o.tls is not None and o.tls.key_file is not None and o.tls.cert_file is None:
        out.append(
            (
                ("outputs", i, "tls", "key_file"),
                "key_file without cert_file: the key belongs to a client certificate; set "
                "cert_file (or drop key_file)",
            )
        )
    return out


def secret_refs(cfg: GatewayConfig) -> list[tuple[Loc, str]]:
    """Every secret the config names, with the field naming it."""
    refs: list[tuple[Loc, str]] = [
        (("outputs", i, "password_secret"), o.password_secret)
        for i, o in enumerate(cfg.outputs)
        if isinstance(o, MqttOutput) and o.password_secret is not None
    ]
    cmd = cfg.commands
    if cmd.hmac_secret:
        refs.append((("commands", "hmac_secret"), cmd.hmac_secret))
    refs += [
        (("commands", "hmac_extra_secrets", i), n) for i, n in enumerate(cmd.hmac_extra_secrets)
    ]
    return refs


def _command_checks(cfg: GatewayConfig) -> list[tuple[Loc, str]]:
    out: list[tuple[Loc, str]] = []
    cmd = cfg.commands
    effective = cmd.effective_policy()
    if cmd.require_signature:
        for ch in ("native", "config"):
            if getattr(cmd.policy, ch) == "broker":
                out.append(
                    (
                        ("commands", "policy", ch),
                        "'broker' contradicts require_signature = true (drop one of them)",
                    )
                )
    signed = [ch for ch, p in effective.items() if p == "signature"]
    if signed and cmd.hmac_secret is None:
        out.append(
            (
                ("commands", "hmac_secret"),
                f"the {' and '.join(signed)} channel(s) require signatures: set hmac_secret "
                "(the name of a secret holding the key)",
            )
        )
    return out
