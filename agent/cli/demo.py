"""``cityedge demo``: simulators + agent in one process, readings on stdout."""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
from importlib import resources
from pathlib import Path
from typing import Any

from agent.cli.common import load_or_report
from agent.ops import eventloop
from agent.ops.logs import setup_logging
from agent.runtime import EXIT_CONFIG, EXIT_OK, Agent

EXAMPLES = """examples:
  cityedge demo                 # runs until Ctrl-C
  cityedge demo --duration 5    # stops by itself
  cityedge demo --speed 720     # one simulated day per two minutes (lamps switch at dusk)
  cityedge demo --output json --duration 5 > readings.jsonl   # what the platform receives
  cityedge demo --verbose --duration 5   # and the simulators' Modbus wire log"""


def register(sub: Any) -> None:
    p = sub.add_parser(
        "demo",
        help="run simulated devices and the agent together",
        description="Start simulated streetlights, water meters and a camera "
        "controller on loopback and poll them with the built-in demo config; "
        "readings are printed one line per device poll on a terminal, as JSON lines "
        "otherwise (or as --output says).",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--duration", type=float, default=0.0, help="seconds to run (0 = forever)")
    p.add_argument("--speed", type=float, default=1.0, help="simulated-time speed-up")
    p.add_argument("--config-out", help="also write the generated config to this file")
    p.add_argument(
        "--output",
        choices=("human", "json"),
        help="readings as readable lines (default on a terminal) or JSON lines (default otherwise)",
    )
    p.add_argument(
        "--verbose", action="store_true", help="log the simulators' Modbus traffic (hex)"
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from agent.cli.poll_lines import output_mode

    args.output = output_mode(args.output, default_human=True)
    # the readable lines already say when a device comes and goes: the log keeps to problems
    setup_logging("warning" if args.output == "human" else "info")
    from agent.cli.simulate import quiet_simulators, wire_log

    if args.verbose:
        wire_log()
    else:
        quiet_simulators()
    try:
        eventloop.run(_demo(args))
    except KeyboardInterrupt:
        pass
    return EXIT_OK if not getattr(args, "_failed", False) else EXIT_CONFIG


async def _demo(args: argparse.Namespace) -> None:
    from drivers.sim.serial_sims import serve_serial_sims
    from drivers.sim.server import SimSpec, SimulatorServer

    sim = SimulatorServer(SimSpec(speed=args.speed))
    await sim.start()
    serial = await serve_serial_sims({"serial": [1], "pelco_d": [1], "mbus": [5]})
    try:
        with tempfile.TemporaryDirectory(prefix="cityedge-demo-") as tmp:
            text = (resources.files("agent") / "defaults" / "demo.toml").read_text("utf-8")
            text = text.replace("@PORT@", str(sim.port)).replace("@STATE_DIR@", tmp)
            for proto, path in serial.paths.items():
                text = text.replace(f"@{proto.upper()}@", path)
            cfg_path = Path(tmp) / "demo.toml"
            cfg_path.write_text(text, encoding="utf-8")
            if args.config_out:
                cfg_path.replace(args.config_out)
                cfg_path = Path(args.config_out)
            loaded = load_or_report(str(cfg_path))
            if loaded is None:
                args._failed = True
                return
            print(
                f"cityedge demo: Modbus TCP simulators on 127.0.0.1:{sim.port}, serial "
                f"simulators on {', '.join(serial.paths.values())}; readings follow "
                "(Ctrl-C to stop)",
                file=sys.stderr,
            )
            from agent.cli.poll_lines import readable_sinks
            from agent.ops.ops import attach_operations
            from agent.ops.timesync import TimeKeeper
            from agent.runtime import bindings_for, build_sinks

            sinks = None
            if args.output == "human":
                sinks = readable_sinks(loaded, build_sinks(loaded, bindings_for(loaded)))
            agent = Agent(loaded, sinks=sinks)
            # the demo runs anywhere (containers report an unsynchronised kernel clock)
            attach_operations(agent, timekeeper=TimeKeeper(kernel_probe=lambda: None))
            agent.install_signal_handlers()
            async with asyncio.TaskGroup() as tg:
                tg.create_task(sim.run(), name="simulators")
                agent_task = tg.create_task(agent.run(), name="agent")
                if args.duration > 0:
                    tg.create_task(_stop_after(agent, args.duration), name="demo-timer")
                await agent_task
                for t in asyncio.all_tasks():
                    if t.get_name() in ("simulators", "demo-timer"):
                        t.cancel()
    finally:
        await serial.close()
        await sim.stop()


async def _stop_after(agent: Agent, seconds: float) -> None:
    await asyncio.sleep(seconds)
    agent.request_shutdown()
