"""Load, merge and validate the gateway config and its profiles, reporting every error at once.

Order of precedence (last wins): gateway file, drop-ins (``conf.d/*.toml``, lexical order;
tables merge, arrays of tables append), secrets from ``$CREDENTIALS_DIRECTORY`` (file name =
secret name), then ``CITYEDGE_…`` environment variables with ``__`` for nesting
(``CITYEDGE_GATEWAY__LOG_LEVEL=debug``; ``CITYEDGE_SECRETS__MQTT_PASSWORD=…``).
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from agent.config.gateway import GatewayConfig
from agent.config.validate import cross_check, profile_problems
from drivers.core.config import DeviceConfig
from drivers.core.errors import ConfigError, ConfigIssue
from drivers.core.library import ProfileLibrary
from drivers.core.locate import format_path, locate
from drivers.core.profile import Profile

BUILTIN_PROFILES = Path(__file__).resolve().parent.parent.parent / "drivers" / "profiles"
_TOML_POS = re.compile(r"\(at line (\d+), column (\d+)\)")


@dataclass(frozen=True)
class LoadedConfig:
    config: GatewayConfig
    profiles: Mapping[str, Profile]  # profile ref -> resolved profile (extends applied)
    files: tuple[str, ...]  # every file that contributed, for reload change detection
    profile_files: Mapping[str, str] = field(default_factory=dict)
    dropin_dir: str | None = None

    def device_profile(self, device: DeviceConfig) -> Profile:
        return self.profiles[device.profile]

    def devices_on(self, bus_id: str) -> list[DeviceConfig]:
        return [d for d in self.config.devices if d.bus == bus_id and d.enabled]


class _CredentialsSource(PydanticBaseSettingsSource):
    """systemd ``LoadCredential=NAME:path`` -> ``secrets.NAME``."""

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        cred_dir = os.environ.get("CREDENTIALS_DIRECTORY")
        if not cred_dir or not Path(cred_dir).is_dir():
            return {}
        secrets = {}
        for f in sorted(Path(cred_dir).iterdir()):
            if f.is_file():
                secrets[f.name] = f.read_text(encoding="utf-8").rstrip("\r\n")
        return {"secrets": secrets} if secrets else {}


class _Settings(GatewayConfig, BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="CITYEDGE_",
        env_nested_delimiter="__",
        extra="forbid",
        frozen=True,
        case_sensitive=False,
    )

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return env_settings, _CredentialsSource(settings_cls), init_settings


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


def _validation_issues(
    exc: ValidationError, origin: Any, prefix: tuple[str | int, ...] = ()
) -> list[ConfigIssue]:
    out = []
    for err in exc.errors(include_url=False):
        loc = (*prefix, *err["loc"])
        file, line, rel = origin(loc)
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            msg = "unknown key (not allowed here; check the spelling)"
        out.append(ConfigIssue(file, format_path(rel), msg, line if line else None))
    return out


class _Origins:
    """Remember which file each array entry came from, to name it (and its line) in errors."""

    def __init__(self, main: Path) -> None:
        self.main = main
        self.texts: dict[Path, str] = {}
        self.items: dict[str, list[tuple[Path, int]]] = {}

    def add(self, path: Path, data: Mapping[str, Any]) -> None:
        try:
            self.texts[path] = path.read_text(encoding="utf-8")
        except OSError:
            self.texts[path] = ""
        for k, v in data.items():
            if isinstance(v, list) and v and isinstance(v[0], dict):
                self.items.setdefault(k, []).extend((path, i) for i in range(len(v)))

    def __call__(self, loc: tuple[Any, ...]) -> tuple[str, int | None, tuple[Any, ...]]:
        if len(loc) >= 2 and isinstance(loc[0], str) and isinstance(loc[1], int):
            entries = self.items.get(loc[0], [])
            if loc[1] < len(entries):
                path, idx = entries[loc[1]]
                rel = (loc[0], idx, *loc[2:])
                return str(path), locate(self.texts.get(path, ""), rel), rel
        if loc and loc[0] == "secrets":
            return "$CREDENTIALS_DIRECTORY / CITYEDGE_SECRETS__*", None, loc
        for path, text in self.texts.items():
            line = locate(text, loc)
            if line is not None:
                return str(path), line, loc
        return str(self.main), None, loc


def load_config(
    path: str | Path, dropin_dir: str | Path | None = None, env: Mapping[str, str] | None = None
) -> LoadedConfig:
    """Load and validate everything; raise ConfigError listing every problem found."""
    del env  # the environment is read by pydantic-settings from os.environ
    main = Path(path)
    issues: list[ConfigIssue] = []
    if not main.is_file():
        raise ConfigError([ConfigIssue(str(main), "", "config file not found")])
    origins = _Origins(main)
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
        raise ConfigError(issues)
    gw = data.get("gateway")
    if isinstance(gw, dict) and isinstance(gw.get("state_dir"), str):
        # relative to the config file, not to wherever the daemon was started from
        gw["state_dir"] = str((main.parent / gw["state_dir"]).absolute())
    try:
        cfg: GatewayConfig = GatewayConfig.model_validate(_Settings(**data).model_dump())
    except ValidationError as exc:
        issues.extend(_validation_issues(exc, origins))
        raise ConfigError(issues) from None
    lib = ProfileLibrary(
        [Path(p) if Path(p).is_absolute() else main.parent / p for p in cfg.gateway.profile_dirs]
        + [BUILTIN_PROFILES]
    )
    profiles: dict[str, Profile] = {}
    failed: set[str] = set()
    for i, dev in enumerate(cfg.devices):
        if dev.profile in profiles or dev.profile in failed:
            continue
        failed.add(dev.profile)
        try:
            profiles[dev.profile] = lib.load(dev.profile)
            failed.discard(dev.profile)
        except ConfigError as exc:
            file, line, _ = origins(("devices", i, "profile"))
            for iss in exc.issues:
                issues.append(iss)
            if not exc.issues:
                issues.append(ConfigIssue(file, f"devices[{i}].profile", "profile error", line))
        except KeyError:
            file, line, rel = origins(("devices", i, "profile"))
            issues.append(
                ConfigIssue(
                    file,
                    format_path(rel),
                    f"profile '{dev.profile}' not found in {', '.join(str(d) for d in lib.dirs)}",
                    line,
                )
            )
    for ref, prof in profiles.items():
        pfile = lib.ref_files[ref]
        ptext = Path(pfile).read_text(encoding="utf-8")
        for loc, msg in profile_problems(prof):
            issues.append(ConfigIssue(pfile, format_path(loc), msg, locate(ptext, loc)))
    for loc, msg in cross_check(cfg, profiles):
        file, line, rel = origins(loc)
        issues.append(ConfigIssue(file, format_path(rel), msg, line))
    if issues:
        raise ConfigError(issues)
    files.extend(sorted(set(lib.used_files)))
    return LoadedConfig(
        cfg, profiles, tuple(files), dict(lib.ref_files), str(dropin_dir) if dropin_dir else None
    )
