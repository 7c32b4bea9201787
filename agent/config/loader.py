"""Load, merge and validate the gateway config and its profiles, reporting every error at once.

Order of precedence (last wins): gateway file, drop-ins (``conf.d/*.toml``, lexical order;
tables merge, arrays of tables append), secrets from their credential files
(agent/config/credentials.py: ``$CREDENTIALS_DIRECTORY`` under systemd, else the sources the
installed unit names), then ``CITYEDGE_…`` environment variables with ``__`` for nesting
(``CITYEDGE_GATEWAY__LOG_LEVEL=debug``; ``CITYEDGE_SECRETS__MQTT_PASSWORD=…``; see
agent/config/environ.py). Every error names where its value came from: the file and line (a
drop-in's own), or the variable (agent/config/origins.py). Values written in a file must have
their TOML type (``port = "9108"`` is refused; drivers/core/issues.py).

``secrets`` says what a command needs: ``require`` (the daemon: every secret the config names
must have a value), ``optional`` (commands that do not connect: values are read where this
user can, nothing is required) or ``verify`` (``cityedge check``: no value is read, each named
secret's source must exist, be non-empty and private). ``check_files`` also checks the files
the config names: profile directories and TLS files (agent/config/files.py).
"""

from __future__ import annotations

import copy
import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import ValidationError

from agent.config import credentials
from agent.config.environ import merge, overlay
from agent.config.files import profile_dir_problems, tls_problems
from agent.config.gateway import GatewayConfig
from agent.config.origins import Loc, Origins
from agent.config.validate import cross_check, profile_problems, secret_refs
from drivers.core.config import DeviceConfig
from drivers.core.errors import ConfigError, ConfigIssue
from drivers.core.issues import problems, strict_problems
from drivers.core.library import ProfileLibrary
from drivers.core.profile import Profile

BUILTIN_PROFILES = Path(__file__).resolve().parent.parent.parent / "drivers" / "profiles"
_TOML_POS = re.compile(r"\(at line (\d+), column (\d+)\)")
SecretMode = Literal["require", "optional", "verify"]


@dataclass(frozen=True)
class LoadedConfig:
    config: GatewayConfig
    profiles: Mapping[str, Profile]  # profile ref -> resolved profile (extends applied)
    files: tuple[str, ...]  # every file that contributed, for reload change detection
    profile_files: Mapping[str, str] = field(default_factory=dict)
    dropin_dir: str | None = None
    warnings: tuple[ConfigIssue, ...] = ()  # what check says but does not refuse
    secret_sources: Mapping[str, str] = field(default_factory=dict)  # name -> where from
    secret_notes: Mapping[str, str] = field(default_factory=dict)  # name -> why not read

    def device_profile(self, device: DeviceConfig) -> Profile:
        return self.profiles[device.profile]

    def devices_on(self, bus_id: str) -> list[DeviceConfig]:
        return [d for d in self.config.devices if d.bus == bus_id and d.enabled]


def _read_toml(path: Path, issues: list[ConfigIssue]) -> dict[str, Any] | None:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        issues.append(ConfigIssue(str(path), "", f"cannot read file: {exc.strerror or exc}"))
        return None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        m = _TOML_POS.search(str(exc))
        msg = _TOML_POS.sub("", str(exc)).strip()
        issues.append(
            ConfigIssue(str(path), "", f"TOML syntax error: {msg}", int(m.group(1)) if m else None)
        )
        return None


def _merge(base: dict[str, Any], extra: Mapping[str, Any]) -> None:
    for k, v in extra.items():
        if isinstance(v, dict) and isinstance(base.get(k), dict):
            _merge(base[k], v)
        elif isinstance(v, list) and isinstance(base.get(k), list) and v and isinstance(v[0], dict):
            base[k] = base[k] + v
        else:
            base[k] = v


def _absolute(data: dict[str, Any], base: Path, staged: Path | None) -> None:
    """Paths relative to the file's directory, not to wherever the daemon was started; in a
    staged install (credentials.staged_root), absolute ones under the staging directory."""

    def fix(table: Any, key: str) -> None:
        v = table.get(key) if isinstance(table, dict) else None
        if isinstance(v, str) and v:
            path = Path(v)
            if staged is not None and path.is_absolute():
                path = staged / v.lstrip("/")
            table[key] = str((base / path).absolute())

    gw = data.get("gateway")
    fix(gw, "state_dir")
    if staged is not None and isinstance(gw, dict) and isinstance(gw.get("profile_dirs"), list):
        gw["profile_dirs"] = [
            str(staged / d.lstrip("/")) if isinstance(d, str) and d.startswith("/") else d
            for d in gw["profile_dirs"]
        ]
    fix(data.get("commands"), "audit_file")
    for out in data.get("outputs") or []:
        tls = out.get("tls") if isinstance(out, dict) else None
        for key in ("ca_file", "cert_file", "key_file"):
            fix(tls, key)


class _Issues(list[ConfigIssue]):
    def __init__(self, origins: Origins) -> None:
        super().__init__()
        self.origins = origins

    def at(self, loc: Loc, message: str, *, env: bool = True) -> ConfigIssue:
        file, line, shown = self.origins(loc, env=env)
        guess = re.search(r"\(did you mean '(\w+)'\?\)", message)
        unknown = message.startswith("unknown key")
        if unknown and guess and file.startswith("$") and file.lower().endswith(f"__{loc[-1]}"):
            # a variable is corrected as a variable: CITYEDGE_METRICS__PROT -> ..._PORT
            var = file[1 : -len(str(loc[-1]))] + guess.group(1).upper()
            message = message.replace(guess.group(0), f"(did you mean {var}?)")
        issue = ConfigIssue(file, shown, message, line)
        self.append(issue)
        return issue


def load_config(
    path: str | Path,
    dropin_dir: str | Path | None = None,
    env: Mapping[str, str] | None = None,
    *,
    secrets: SecretMode = "require",
    check_files: bool = False,
) -> LoadedConfig:
    """Load and validate everything; raise ConfigError listing every problem found.
    ``env`` defaults to ``os.environ``."""
    environ = os.environ if env is None else env
    main = Path(path)
    if not main.is_file():
        raise ConfigError([ConfigIssue(str(main), "", "config file not found")])
    origins = Origins(main)
    issues = _Issues(origins)
    data = _read_toml(main, issues) or {}
    origins.add(main, data)
    ddir = Path(dropin_dir) if dropin_dir else main.parent / "conf.d"
    files = [str(main)]
    if ddir.is_dir():
        for f in sorted(ddir.glob("*.toml")):
            extra = _read_toml(f, issues)
            files.append(str(f))
            if extra is not None:
                origins.add(f, extra)
                _merge(data, extra)
    if issues:
        raise ConfigError(list(issues))
    if "secrets" in data:
        issues.at(
            ("secrets",),
            "secrets never go in a config file: put each in a credential file "
            "(docs/DEPLOY.md, 'Credentials') and name it (password_secret = \"NAME\")",
        )
        del data["secrets"]
    _absolute(data, main.parent, credentials.staged_root(main))

    creds = credentials.find(main, environ)
    values, notes = creds.read() if secrets != "verify" else ({}, {})
    origins.secrets = {n: str(s.path or s.origin) for n, s in creds.sources.items()}
    env_over = overlay(environ)
    issues.extend(env_over.issues)
    origins.env = env_over.origins
    merged = copy.deepcopy(data)
    if values:
        merged["secrets"] = dict(values)
    merge(merged, env_over.data)
    origins.data = merged
    cfg: GatewayConfig | None = None
    try:
        cfg = GatewayConfig.model_validate(merged)
        found = []
    except ValidationError as exc:
        found = problems(GatewayConfig, exc)
    for p in found:
        issues.at(p.loc, p.message)
    # a bad value in a file is reported even where a variable overrides it here: the service
    # does not have this shell's environment
    for p in strict_problems(GatewayConfig, data, [p.loc for p in found]):
        issues.at(p.loc, p.message, env=False)
    if issues or cfg is None:
        raise ConfigError(list(issues))

    if check_files:
        for loc, msg in profile_dir_problems(cfg, main.parent):
            issues.at(loc, msg)
    lib = ProfileLibrary(
        [Path(p) if Path(p).is_absolute() else main.parent / p for p in cfg.gateway.profile_dirs]
        + [BUILTIN_PROFILES]
    )
    profiles = _load_profiles(cfg, lib, issues)
    for ref, prof in profiles.items():
        names = {"points": [{"name": p.name} for p in prof.points]}
        issues.extend(lib.issue(ref, loc, msg, names) for loc, msg in profile_problems(prof))
    for loc, msg in cross_check(cfg, profiles):
        issues.at(loc, msg)
    warnings = _Issues(origins)
    _secrets(cfg, creds, secrets, notes, environ, issues, warnings)
    if check_files:
        for loc, msg in tls_problems(cfg):
            issues.at(loc, msg)
    if issues:
        raise ConfigError(list(issues))
    files.extend(sorted(set(lib.used_files)))
    return LoadedConfig(
        cfg,
        profiles,
        tuple(files),
        dict(lib.ref_files),
        str(dropin_dir) if dropin_dir else None,
        tuple(warnings),
        {n: creds.describe(n) for _, n in secret_refs(cfg)},
        notes,
    )


def _load_profiles(cfg: GatewayConfig, lib: ProfileLibrary, issues: _Issues) -> dict[str, Profile]:
    profiles: dict[str, Profile] = {}
    tried: set[str] = set()
    for i, dev in enumerate(cfg.devices):
        if dev.profile in tried:
            continue
        tried.add(dev.profile)
        try:
            profiles[dev.profile] = lib.load(dev.profile)
        except ConfigError as exc:
            issues.extend(exc.issues)
            if not exc.issues:
                issues.at(("devices", i, "profile"), "profile error")
        except KeyError:
            issues.at(
                ("devices", i, "profile"),
                f"profile '{dev.profile}' not found{lib.suggest(dev.profile)} in "
                f"{', '.join(str(d) for d in lib.dirs)} (cityedge profiles lists them)",
            )
    return profiles


def _secrets(
    cfg: GatewayConfig,
    creds: credentials.Credentials,
    mode: SecretMode,
    notes: Mapping[str, str],
    environ: Mapping[str, str],
    issues: _Issues,
    warnings: _Issues,
) -> None:
    if mode == "optional":
        return
    for loc, name in secret_refs(cfg):
        if name in cfg.secrets and mode == "require":
            continue
        env = f"CITYEDGE_SECRETS__{name.upper()}"
        if mode == "verify" and any(k.upper() == env for k in environ):
            if creds.unit is not None:
                warnings.at(
                    loc,
                    f"secret '{name}' comes from ${env} here; the service does not see this "
                    f"shell's environment: {creds.missing(name)}",
                )
            continue
        if mode == "require":
            issues.at(loc, f"secret '{name}' not found: {notes.get(name) or creds.missing(name)}")
            continue
        error, warning = creds.verify(name)
        if error is not None:
            issues.at(loc, error)
        if warning is not None:
            warnings.at(loc, warning)
