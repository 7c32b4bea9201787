"""Helpers shared by subcommands: loading config with technician-friendly errors."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from agent.config import ConfigError, LoadedConfig, load_config
from agent.config.loader import SecretMode

DEFAULT_CONFIG = "/etc/cityedge/gateway.toml"


def default_config() -> str:
    """The gateway file commands use without ``-c``: ``$CITYEDGE_CONFIG``, else the path the
    systemd unit runs."""
    return os.environ.get("CITYEDGE_CONFIG") or DEFAULT_CONFIG


class CommandError(Exception):
    """A failure to show the user as one line (plus a hint), with an exit code."""

    def __init__(self, message: str, hint: str | None = None, code: int = 1) -> None:
        self.message = message
        self.hint = hint
        self.code = code
        super().__init__(message)


def load_or_report(
    path: str,
    dropin: str | None = None,
    *,
    secrets: SecretMode = "optional",
    check_files: bool = False,
) -> LoadedConfig | None:
    """Load the config; on errors print every issue to stderr and return None.

    Secrets are ``optional`` by default: only the daemon (``run``) needs them all, and a
    command that does not connect must work for a technician who cannot read them."""
    try:
        return load_config(Path(path), dropin, secrets=secrets, check_files=check_files)
    except ConfigError as exc:
        print(f"cityedge: configuration refused ({len(exc.issues)} error(s)):", file=sys.stderr)
        for issue in exc.issues:
            print(f"  {issue}", file=sys.stderr)
        return None


def describe(doc: str | None) -> str:
    """A module docstring as a ``--help`` description: without its ``cityedge x``: title
    and without reStructuredText literals (double backticks), which argparse prints raw."""
    text = (doc or "").strip()
    first, _, rest = text.partition("\n")
    if first.startswith("``cityedge") and "``: " in first:
        first = first.split("``: ", 1)[1]
        first = first[:1].upper() + first[1:]
    return f"{first}\n{rest}".strip().replace("``", "")
