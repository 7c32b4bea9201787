"""Checks of the files a config names: what would otherwise fail only at run time.

- ``gateway.profile_dirs``: each directory exists (a typo would silently fall back to the
  built-in profiles);
- ``outputs[].tls``: the CA, certificate and key files exist and can be read; by this user,
  and by the service's ``cityedge`` account when it exists and this is root (the service is
  not root: a root-only key file is refused on every connection attempt);
- secrets: each secret the config names has a source that exists, is not empty and is
  readable by its owner only (agent/config/credentials.py).

Paths relative to the gateway file are taken from its directory, as the loader does.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from agent.config import credentials
from agent.config.gateway import GatewayConfig
from agent.config.outputs import MqttOutput

Loc = tuple[str | int, ...]
TLS_FILES = ("ca_file", "cert_file", "key_file")


def profile_dir_problems(cfg: GatewayConfig, base: Path) -> list[tuple[Loc, str]]:
    out: list[tuple[Loc, str]] = []
    for i, d in enumerate(cfg.gateway.profile_dirs):
        path = Path(d) if Path(d).is_absolute() else base / d
        try:
            ok = path.is_dir()
        except OSError:
            ok = False
        if not ok:
            what = "is not a directory" if path.exists() else "does not exist"
            out.append(
                (
                    ("gateway", "profile_dirs", i),
                    f"profile directory {path} {what} (relative entries are taken from the "
                    "gateway file's directory)",
                )
            )
    return out


def tls_problems(cfg: GatewayConfig) -> list[tuple[Loc, str]]:
    out: list[tuple[Loc, str]] = []
    account = credentials.service_account() if os.geteuid() == 0 else None
    for i, o in enumerate(cfg.outputs):
        if not isinstance(o, MqttOutput) or o.tls is None:
            continue
        for key in TLS_FILES:
            name = getattr(o.tls, key)
            if name is None:
                continue
            msg = _file_problem(Path(name), account, secret=key == "key_file")
            if msg is not None:
                out.append((("outputs", i, "tls", key), msg))
    return out


def _file_problem(path: Path, account: tuple[int, int] | None, *, secret: bool) -> str | None:
    try:
        st = path.stat()
    except FileNotFoundError:
        return f"{path} does not exist"
    except OSError as exc:
        return f"{path} cannot be reached: {exc.strerror or exc}"
    if not stat.S_ISREG(st.st_mode):
        return f"{path} is not a file"
    if not os.access(path, os.R_OK):
        return f"{path} cannot be read by this user (mode {stat.filemode(st.st_mode)})"
    if account is not None and not _readable_by(st, *account):
        fix = f"chgrp cityedge {path} && chmod 640 {path}" if secret else f"chmod 644 {path}"
        return (
            f"{path} cannot be read by the service's user cityedge "
            f"(owner uid {st.st_uid}, mode {stat.filemode(st.st_mode)}): {fix}"
        )
    if secret and st.st_mode & stat.S_IROTH:
        return f"{path} is a private key readable by every user: chmod o-r {path}"
    return None


def _readable_by(st: os.stat_result, uid: int, gid: int) -> bool:
    if st.st_uid == uid:
        return bool(st.st_mode & stat.S_IRUSR)
    if st.st_gid == gid:
        return bool(st.st_mode & stat.S_IRGRP)
    return bool(st.st_mode & stat.S_IROTH)
