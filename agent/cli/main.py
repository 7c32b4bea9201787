"""``cityedge`` command line: run, check, simulate, plan, read, write, scan, status, ..."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from agent import __version__

# Each module registers its own subcommand (keeps --help fast: heavy imports stay inside them).
COMMAND_MODULES = (
    "agent.cli.run",
    "agent.cli.check",
    "agent.cli.simulate",
    "agent.cli.demo",
    "agent.cli.plan",
    "agent.cli.tools",
    "agent.cli.watch",
    "agent.cli.scan",
    "agent.cli.outbox",
    "agent.cli.fiware",
    "agent.cli.sign",
    "agent.cli.completion",
)


def filter_impl() -> str:
    try:
        from ext import IMPLEMENTATION

        return str(IMPLEMENTATION)
    except ImportError:
        return "unavailable"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cityedge",
        description="Edge gateway agent: polls field controllers over Modbus and serial "
        "protocols and forwards normalized readings to the city platform.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Run 'cityedge COMMAND --help' for a command's options and examples.",
    )
    parser.add_argument(
        "--version", action="version", version=f"cityedge {__version__} (filters: {filter_impl()})"
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        try:
            mod = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name != name:
                raise
            continue
        mod.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    rc: int = args.func(args)
    return rc


if __name__ == "__main__":
    sys.exit(main())
