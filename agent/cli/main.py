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
    "agent.cli.profiles",
    "agent.cli.tools",
    "agent.cli.watch",
    "agent.cli.scan",
    "agent.cli.outbox",
    "agent.cli.fiware",
    "agent.cli.sign",
    "agent.cli.ui",
    "agent.cli.completion",
)


# The module of each subcommand, so `cityedge run` imports only the daemon's command and not
# every tool's module (about 1 MB of the daemon's memory); any other first word (--help, a
# typo) builds the whole parser.
COMMAND_OF = {
    "read": "agent.cli.tools",
    "write": "agent.cli.tools",
    "status": "agent.cli.tools",
    **{m.rsplit(".", 1)[1]: m for m in COMMAND_MODULES if not m.endswith(".tools")},
}


def filter_impl() -> str:
    try:
        from ext import IMPLEMENTATION

        return str(IMPLEMENTATION)
    except ImportError:
        return "unavailable"


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The whole CLI, or only ``command``'s subcommand when it names a known one."""
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
    modules = [COMMAND_OF[command]] if command in COMMAND_OF else COMMAND_MODULES
    for name in modules:
        try:
            mod = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name != name:
                raise
            continue
        mod.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    words = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser(words[0] if words else None)
    args = parser.parse_args(words)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    rc: int = args.func(args)
    return rc


if __name__ == "__main__":
    sys.exit(main())
