"""``cityedge outbox``: inspect, export, purge and salvage the store-and-forward queue.

Reads open the SQLite file read-only (WAL lets them run beside the daemon). Purging and
salvaging into the live outbox change what the platform will receive, so they refuse while the
agent runs; purge asks for ``--yes``. A damaged file is reported as such (with what to do),
never as a traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path
from typing import Any, TextIO

from agent.cli.common import config_option, describe, load_or_report
from agent.config.loader import LoadedConfig
from agent.config.outputs import MqttOutput
from agent.control.ctl import request, socket_path
from agent.forward.outbox_files import aside_dirs
from agent.forward.outbox_maint import count_before, insert_salvaged, newest_ts, purge
from agent.forward.outbox_store import Store
from agent.forward.outbox_types import StoreFault

EXAMPLES = """examples:
  cityedge outbox                         # depth, oldest reading, drops per MQTT output
  cityedge outbox --json                  # the same as one JSON object
  cityedge outbox export > backlog.jsonl  # every queued reading, oldest first
  cityedge outbox export --limit 100 --output uplink
  systemctl stop cityedge && cityedge outbox purge --older-than 86400 --yes
  cityedge outbox salvage /var/lib/cityedge/outbox-uplink.sqlite.damaged-20260101T000000Z > r.jsonl
                                          # every readable reading of a set-aside file
  systemctl stop cityedge && cityedge outbox salvage DIR --into   # back into the live outbox
                                          # (DIR: the set-aside directory /health names)"""

EXPORT_CHUNK = 10_000


def register(sub: Any) -> None:
    p = sub.add_parser(
        "outbox",
        help="inspect, export, purge or salvage the store-and-forward queue",
        description=describe(__doc__),
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "action", nargs="?", default="stats", choices=["stats", "export", "purge", "salvage"]
    )
    p.add_argument("file", nargs="?", help="salvage: the damaged file or its set-aside directory")
    config_option(p)
    p.add_argument("--output", help="MQTT output id (default: all)")
    p.add_argument("--limit", type=int, default=0, help="export: at most N readings")
    p.add_argument("--older-than", type=float, help="purge: only readings older than N seconds")
    p.add_argument("--all", action="store_true", help="purge: everything")
    p.add_argument("--yes", action="store_true", help="purge: really delete")
    p.add_argument(
        "--into", action="store_true", help="salvage: into the live outbox (agent stopped)"
    )
    p.add_argument(
        "--json", action="store_true", help="stats: one JSON object, by output (docs/CLI.md)"
    )
    p.set_defaults(func=run)


class Damaged(Exception):
    def __init__(self, path: Path, detail: str, done: int = 0) -> None:
        super().__init__(detail)
        self.path = path
        self.detail = detail
        self.done = done

    def report(self) -> str:
        where = f" after {self.done} reading(s)" if self.done else ""
        return (
            f"cityedge: outbox {self.path} is damaged{where} ({self.detail}); the agent sets it "
            f"aside at its next start; recover its readings with: cityedge outbox salvage "
            f"{self.path}"
        )


def outbox_files(loaded: LoadedConfig, only: str | None) -> list[tuple[str, Path]]:
    state = Path(loaded.config.gateway.state_dir)
    outs = [o for o in loaded.config.outputs if isinstance(o, MqttOutput)]
    if only is not None:
        outs = [o for o in outs if o.id == only]
        if not outs:
            raise SystemExit(f"cityedge: no MQTT output '{only}' in the config")
    return [(o.id, state / f"outbox-{o.id}.sqlite") for o in outs]


def _open(path: Path) -> Store:
    try:
        return Store.open_readonly(path)
    except StoreFault as f:
        if f.kind == "corrupt":
            raise Damaged(path, f.detail) from f
        raise SystemExit(f"cityedge: cannot read outbox {path}: {f.detail}") from f


def stats(path: Path) -> dict[str, Any]:
    st = _open(path)
    try:
        oldest = st.oldest
        newest = newest_ts(st)
    except Exception as exc:
        raise Damaged(path, str(exc)) from exc
    finally:
        st.close()
    now = time.time()
    size = sum(p.stat().st_size for p in path.parent.glob(f"{path.name}*") if p.is_file())
    out: dict[str, Any] = {
        "depth": st.depth,
        "oldestAgeS": None if oldest is None else round(now - oldest[0] / 1000),
        "newestAgeS": None if newest is None else round(now - newest / 1000),
        "drops": st.drops,
        "bytes": size,
        "lastId": st.last_id,
    }
    if st.set_aside:
        out["setAside"] = st.set_aside
    damaged = [str(d) for d in aside_dirs(path)]
    if damaged:
        out["damagedFiles"] = damaged
    return out


def export(path: Path, sink: TextIO, limit: int) -> int:
    """Every queued reading as a JSON line with its delivery id; returns how many."""
    st = _open(path)
    n, after = 0, 0
    try:
        while True:
            try:
                rows = st.read(after, EXPORT_CHUNK)
            except StoreFault as f:
                raise Damaged(path, f.detail, n) from f
            for row in rows:
                sink.write(f'{{"id":{row.id},{row.data[1:].decode()}\n')
                n += 1
                if limit and n >= limit:
                    return n
            if len(rows) < EXPORT_CHUNK:
                return n
            after = rows[-1].id
    finally:
        st.close()


def _daemon_running(loaded: LoadedConfig) -> bool:
    path = socket_path(loaded.config.gateway.state_dir)
    if not path.exists():
        return False
    try:
        asyncio.run(request(path, {"op": "status"}, 2.0))
    except (OSError, TimeoutError, ConnectionError):
        return False
    return True


def _refuse_if_running(loaded: LoadedConfig) -> bool:
    if _daemon_running(loaded):
        print(
            "cityedge: the agent is running; stop it first (systemctl stop cityedge)",
            file=sys.stderr,
        )
        return True
    return False


def run(args: argparse.Namespace) -> int:
    if args.action == "salvage":
        return salvage_cmd(args)
    loaded = load_or_report(args.config)
    if loaded is None:
        return 78
    files = outbox_files(loaded, args.output)
    missing = [p for _, p in files if not p.exists()]
    if not files or len(missing) == len(files):
        print("cityedge: no outbox yet (no MQTT output, or the agent has not run)", file=sys.stderr)
        return 1
    files = [(o, p) for o, p in files if p.exists()]
    try:
        if args.action == "stats":
            got = {out: stats(path) for out, path in files}
            if args.json:
                print(json.dumps(got, indent=2))
            else:
                from agent.cli.render import console
                from agent.cli.views import print_outbox

                print_outbox(console(), got)
            return 0
        if args.action == "export":
            n = 0
            for _, path in files:
                n += export(path, sys.stdout, args.limit - n if args.limit else 0)
                if args.limit and n >= args.limit:
                    break
            return 0
    except Damaged as exc:
        sys.stdout.flush()
        print(exc.report(), file=sys.stderr)
        return 1
    return purge_cmd(args, loaded, files)


def purge_cmd(args: argparse.Namespace, loaded: LoadedConfig, files: list[tuple[str, Path]]) -> int:
    if not (args.all or args.older_than is not None):
        print("cityedge: purge needs --all or --older-than SECONDS", file=sys.stderr)
        return 2
    if _refuse_if_running(loaded):
        return 1
    cutoff = None if args.all else int((time.time() - (args.older_than or 0)) * 1000)
    for out, path in files:
        if not args.yes:
            st = _open(path)
            try:
                count = st.depth if cutoff is None else count_before(st, cutoff)
            finally:
                st.close()
            print(f"{out}: would delete {count} reading(s); add --yes to delete")
            continue
        try:
            st = Store.open(path)
            try:
                count = purge(st, cutoff)
            finally:
                st.close()
        except StoreFault as f:
            print(f"cityedge: cannot purge {path}: {f.detail}", file=sys.stderr)
            return 1
        print(f"{out}: deleted {count} reading(s) (counted as drops)")
    return 0


def salvage_cmd(args: argparse.Namespace) -> int:
    from agent.forward.outbox_salvage import salvage

    if not args.file:
        print(
            "cityedge: outbox salvage needs FILE (a damaged file or its directory)", file=sys.stderr
        )
        return 2
    target = Path(args.file)
    try:
        got = salvage(target)
    except OSError as exc:
        print(f"cityedge: cannot read {target}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    lost = got.lost
    summary = (
        f"salvaged {len(got.readings)} reading(s) from {got.records} record(s)"
        f"{f' and {got.legacy_rows} old-format row(s)' if got.legacy_rows else ''}: "
        f"{got.pages} page(s) read, {got.wal_frames} WAL frame(s), "
        f"{got.unreadable_cells} unreadable cell(s)"
    )
    if lost is not None:
        summary += f"; the file held {got.expected} when set aside: {lost} could not be read"
    if not args.into:
        for rid, text in got.readings:
            sys.stdout.write(f'{{"id":{rid},{text[1:].decode()}\n')
        sys.stdout.flush()
        print(f"cityedge: {summary}", file=sys.stderr)
        return 0
    loaded = load_or_report(args.config)
    if loaded is None:
        return 78
    files = outbox_files(loaded, args.output)
    if len(files) != 1:
        print("cityedge: several MQTT outputs: name one with --output", file=sys.stderr)
        return 2
    if _refuse_if_running(loaded):
        return 1
    out, live = files[0]
    if live.resolve() == target.resolve():
        print("cityedge: salvage a set-aside copy, not the live file itself", file=sys.stderr)
        return 2
    try:
        st = Store.open(live)
        try:
            inserted, refused = insert_salvaged(st, got.readings, lost or 0)
        finally:
            st.close()
    except StoreFault as f:
        print(f"cityedge: cannot write the live outbox {live}: {f.detail}", file=sys.stderr)
        return 1
    print(f"cityedge: {summary}", file=sys.stderr)
    print(
        f"{out}: {inserted} reading(s) back in the outbox (sent, marked historical, at the next "
        f"start){f'; {refused} refused: their ids are in use' if refused else ''}"
        f"{f'; {lost} counted as dropped' if lost else ''}"
    )
    return 0
