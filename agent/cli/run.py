"""``cityedge run CONFIG``: the daemon."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from typing import Any

from agent import __version__
from agent.cli.common import config_file, load_or_report
from agent.config.loader import LoadedConfig
from agent.ops import eventloop
from agent.ops.logs import setup_logging
from agent.runtime import EXIT_CONFIG, EXIT_FAILURE, EXIT_OK, Agent

log = logging.getLogger("cityedge")

EXAMPLES = """examples:
  cityedge run /etc/cityedge/gateway.toml
  CITYEDGE_GATEWAY__LOG_LEVEL=debug cityedge run examples/demo.toml
  cityedge run examples/demo.toml --output human   # one readable line per device poll
signals: SIGTERM/SIGINT stop gracefully (in-flight readings are flushed), SIGHUP reloads.
exit status: 0 stopped cleanly, 1 runtime failure (systemd restarts), 78 bad configuration"""


def register(sub: Any) -> None:
    p = sub.add_parser(
        "run",
        help="run the gateway agent (the daemon)",
        description="Poll the configured field buses and forward readings.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    config_file(p)
    p.add_argument(
        "--output",
        choices=("human", "json"),
        default="json",
        help="what JSON-lines outputs to stdout print: JSON lines (default), or one readable "
        "line per device poll with units and highlighted state changes",
    )
    p.set_defaults(func=run)


async def serve(loaded: LoadedConfig, output: str = "json") -> None:
    from agent.ops.ops import attach_operations

    log.info(
        "cityedge %s starting on %s (event loop %s, python %s%s)",
        __version__,
        loaded.files[0],
        type(asyncio.get_running_loop()).__module__.split(".")[0],
        sys.version.split()[0],
        " -" + "O" * sys.flags.optimize if sys.flags.optimize else "",
    )
    _check_state_dir(loaded)
    sinks = None
    if output == "human":
        from agent.cli.poll_lines import readable_sinks
        from agent.runtime import bindings_for, build_sinks

        sinks = readable_sinks(loaded, build_sinks(loaded, bindings_for(loaded)))
    agent = Agent(loaded, sinks=sinks)
    attach_operations(agent)
    agent.install_signal_handlers()
    await agent.run()


def _check_state_dir(loaded: LoadedConfig) -> None:
    """Say what is wrong with the state directory, then run anyway: the outbox keeps readings
    in memory while it cannot write, and recovers by itself once it can."""
    from pathlib import Path

    from agent.forward import statedir

    rep = statedir.inspect(Path(loaded.config.gateway.state_dir))
    for e in rep.errors:
        log.error("%s (running anyway: readings are kept in memory until it is fixed)", e)
    for w in rep.warnings:
        log.warning("%s", w)


def run(args: argparse.Namespace) -> int:
    loaded = load_or_report(args.config, args.dropin, secrets="require")
    if loaded is None:
        return EXIT_CONFIG
    setup_logging(loaded.config.gateway.log_level)
    try:
        eventloop.run(serve(loaded, getattr(args, "output", "json")))
    except Exception as exc:
        leaves = exc.exceptions if isinstance(exc, ExceptionGroup) else (exc,)
        for leaf in leaves:
            log.critical(
                "agent failed: %s: %s",
                type(leaf).__name__,
                leaf,
                exc_info=loaded.config.gateway.log_level == "debug",
            )
        return EXIT_FAILURE
    return EXIT_OK
