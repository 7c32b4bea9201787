"""``cityedge outbox``: inspect, export and purge the store-and-forward queue.

Reads open the SQLite file read-only (WAL lets them run beside the daemon). Purging changes
what the platform will receive, so it refuses while the agent runs and asks for ``--yes``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sqlite3
import sys
import time
from pathlib import Path
from typing import Any

from agent.commands.common import default_config, load_or_report
from agent.config.loader import LoadedConfig
from agent.config.outputs import MqttOutput
from agent.ctl import request, socket_path

EXAMPLES = """examples:
  cityedge outbox                         # depth, oldest reading, drops per MQTT output
  cityedge outbox export > backlog.jsonl  # every queued reading, oldest first
  cityedge outbox export --limit 100 --output uplink
  systemctl stop cityedge && cityedge outbox purge --older-than 86400 --yes"""


def register(sub: Any) -> None:
    p = sub.add_parser(
        "outbox",
        help="inspect, export or purge the store-and-forward queue",
        description=__doc__,
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("action", nargs="?", default="stats", choices=["stats", "export", "purge"])
    p.add_argument("-c", "--config", default=default_config())
    p.add_argument("--output", help="MQTT output id (default: all)")
    p.add_argument("--limit", type=int, default=0, help="export: at most N readings")
    p.add_argument("--older-than", type=float, help="purge: only readings older than N seconds")
    p.add_argument("--all", action="store_true", help="purge: everything")
    p.add_argument("--yes", action="store_true", help="purge: really delete")
    p.set_defaults(func=run)


def outbox_files(loaded: LoadedConfig, only: str | None) -> list[tuple[str, Path]]:
    state = Path(loaded.config.gateway.state_dir)
    outs = [o for o in loaded.config.outputs if isinstance(o, MqttOutput)]
    if only is not None:
        outs = [o for o in outs if o.id == only]
        if not outs:
            raise SystemExit(f"cityedge: no MQTT output '{only}' in the config")
    return [(o.id, state / f"outbox-{o.id}.sqlite") for o in outs]


def _ro(path: Path) -> sqlite3.Connection:
    return sqlite3.connect(f"file:{path}?mode=ro", uri=True)


def stats(path: Path) -> dict[str, Any]:
    with _ro(path) as db:
        depth, oldest, newest = db.execute(
            "SELECT count(*), min(ts), max(ts) FROM outbox"
        ).fetchone()
        drops = db.execute("SELECT value FROM meta WHERE key='drops'").fetchone()
    now = time.time()
    return {
        "depth": depth,
        "oldestAgeS": None if oldest is None else round(now - oldest / 1000),
        "newestAgeS": None if newest is None else round(now - newest / 1000),
        "drops": drops[0] if drops else 0,
        "bytes": path.stat().st_size,
    }


def _daemon_running(loaded: LoadedConfig) -> bool:
    path = socket_path(loaded.config.gateway.state_dir)
    if not path.exists():
        return False
    try:
        asyncio.run(request(path, {"op": "status"}, 2.0))
    except (OSError, TimeoutError, ConnectionError):
        return False
    return True


def run(args: argparse.Namespace) -> int:
    loaded = load_or_report(args.config)
    if loaded is None:
        return 78
    files = outbox_files(loaded, args.output)
    missing = [p for _, p in files if not p.exists()]
    if not files or len(missing) == len(files):
        print("cityedge: no outbox yet (no MQTT output, or the agent has not run)", file=sys.stderr)
        return 1
    files = [(o, p) for o, p in files if p.exists()]
    if args.action == "stats":
        for out, path in files:
            print(f"{out}: {json.dumps(stats(path))}")
        return 0
    if args.action == "export":
        n = 0
        for _, path in files:
            with _ro(path) as db:
                sql = "SELECT data FROM outbox ORDER BY id"
                for (data,) in db.execute(sql):
                    sys.stdout.write((data.decode() if isinstance(data, bytes) else data) + "\n")
                    n += 1
                    if args.limit and n >= args.limit:
                        return 0
        return 0
    if not (args.all or args.older_than is not None):
        print("cityedge: purge needs --all or --older-than SECONDS", file=sys.stderr)
        return 2
    if _daemon_running(loaded):
        print(
            "cityedge: the agent is running; stop it first (systemctl stop cityedge)",
            file=sys.stderr,
        )
        return 1
    cutoff = int((time.time() - (args.older_than or 0)) * 1000)
    for out, path in files:
        with sqlite3.connect(path) as db:
            where = "" if args.all else " WHERE ts < ?"
            params: tuple[int, ...] = () if args.all else (cutoff,)
            (count,) = db.execute(f"SELECT count(*) FROM outbox{where}", params).fetchone()
            if not args.yes:
                print(f"{out}: would delete {count} reading(s); add --yes to delete")
                continue
            db.execute(f"DELETE FROM outbox{where}", params)
            db.execute("UPDATE meta SET value = value + ? WHERE key = 'drops'", (count,))
            print(f"{out}: deleted {count} reading(s) (counted as drops)")
    return 0
