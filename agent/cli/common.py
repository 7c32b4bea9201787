"""Helpers shared by subcommands: the config arguments, loading config with
technician-friendly errors."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from agent.config import ConfigError, LoadedConfig, load_config
from agent.config.loader import SecretMode

DEFAULT_CONFIG = "/etc/cityedge/gateway.toml"
CONFIG_HELP = "gateway file (default $CITYEDGE_CONFIG, else /etc/cityedge/gateway.toml)"


def default_config() -> str:
    """The gateway file commands use without ``-c``: ``$CITYEDGE_CONFIG``, else the path the
    systemd unit runs."""
    return os.environ.get("CITYEDGE_CONFIG") or DEFAULT_CONFIG


def config_file(p: argparse.ArgumentParser) -> None:
    """The gateway file as an argument, with its drop-in directory (the commands that run or
    check a config name it on purpose)."""
    p.add_argument("config", help="gateway TOML file")
    p.add_argument("--dropin", help="drop-in directory (default: conf.d beside the file)")


def config_option(p: argparse.ArgumentParser, help: str = CONFIG_HELP) -> None:
    """``-c/--config``: the gateway file of a tool, the installed one by default."""
    p.add_argument("-c", "--config", default=default_config(), help=help)


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
