"""Cross-field checks that a single model cannot make (references, uniqueness, overlaps)."""

from __future__ import annotations

from collections.abc import Mapping
from ipaddress import ip_address
from urllib.parse import urlsplit

from agent.config.gateway import GatewayConfig
from agent.config.locations import location_problems, ngsi_problems
from agent.config.outputs import MqttOutput
from drivers.core.endpoint import parse_endpoint
from drivers.core.profile import DataType, Point, Profile
from drivers.serial.mbus import SecondaryAddress

Loc = tuple[str | int, ...]

# Unit-id ranges per protocol (Modbus: 0 broadcast, 248-255 reserved on serial lines;
# on TCP the unit id is often ignored and 255/0 are common, so allow 0..255 there).
UNIT_RANGES = {
    "modbus-serial": (1, 247),
    "modbus-tcp": (0, 255),
    "pelco_d": (1, 255),
    "mbus": (0, 250),
    "serial": (0, 255),
}


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
                    f"same physical bus as buses[{phys[ep.key]}]"
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
                    f"unknown bus '{d.bus}' (defined: {', '.join(buses) or 'none'})",
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
                    f"bus '{d.bus}' by devices[{seen_units[key]}]",
                )
            )
        if not secondary:
            seen_units.setdefault(key, i)
        ep = parse_endpoint(bus.endpoint)
        kind = (
            bus.protocol
            if bus.protocol != "modbus"
            else ("modbus-tcp" if ep.scheme == "tcp" else "modbus-serial")
        )
        lo, hi = UNIT_RANGES[kind]
        if not lo <= d.unit_id <= hi and not secondary:
            out.append(
                (
                    ("devices", i, "unit_id"),
                    f"unit id {d.unit_id} out of range {lo}..{hi} for a {kind} bus",
                )
            )
        prof = profiles.get(d.profile)
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
        names = {p.name for p in prof.points}
        for pname in d.filters:
            if pname not in names:
                out.append(
                    (
                        ("devices", i, "filters", pname),
                        f"profile '{d.profile}' has no point of that name",
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
        return [
            (loc, f"secondary address {norm} is already used on bus '{bus}' by devices[{first}]")
        ]
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
    """Problems inside one (resolved) Modbus profile: overlaps, undefined ranges, tables."""
    out: list[tuple[Loc, str]] = []
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
        for t, a, b, j, q in spans:
            if t == p.table.value and lo <= b and a <= hi:
                shared_bit = lo == a and hi == b and lo == hi and DataType.BIT in (p.type, q.type)
                if not shared_bit:
                    out.append(
                        (
                            ("points", i, "address"),
                            f"'{p.name}' ({p.table.value} {lo}..{hi})"
                            f" overlaps '{q.name}' ({a}..{b}) of points[{j}]",
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
            and not _loopback(u.hostname)
        ):
            out.append(
                (
                    ("outputs", i, "brokers", j, "url"),
                    "plain MQTT to a non-loopback "
                    "broker: use mqtts:// with [tls], or set allow_insecure = true",
                )
            )
    if o.password_secret is not None and o.password_secret not in cfg.secrets:
        out.append(
            (
                ("outputs", i, "password_secret"),
                f"secret '{o.password_secret}' not found "
                "(put it in $CREDENTIALS_DIRECTORY or CITYEDGE_SECRETS__"
                f"{o.password_secret.upper()})",
            )
        )
    return out


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ip_address(host).is_loopback
    except ValueError:
        return False


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
    names = ([("hmac_secret", cmd.hmac_secret)] if cmd.hmac_secret else []) + [
        (("hmac_extra_secrets", i), n) for i, n in enumerate(cmd.hmac_extra_secrets)
    ]
    for field, name in names:
        if name not in cfg.secrets:
            loc: Loc = ("commands", *field) if isinstance(field, tuple) else ("commands", field)
            out.append(
                (
                    loc,
                    f"secret '{name}' not found (put it "
                    f"in $CREDENTIALS_DIRECTORY or CITYEDGE_SECRETS__{name.upper()})",
                )
            )
    return out
