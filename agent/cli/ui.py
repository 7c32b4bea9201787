"""``cityedge ui``: the local commissioning page, in its own process (agent/ui/)."""

from __future__ import annotations

import argparse
import asyncio
import getpass
import os
import ssl
import sys
from pathlib import Path
from typing import Any

from agent.cli.common import config_option, load_or_report

EXAMPLES = """examples:
  cityedge ui                                   # http://127.0.0.1:8088/ on the gateway itself
  cityedge ui --port 8090 --interval 2
  cityedge ui --host 0.0.0.0 --users /etc/cityedge/credentials/ui_users   # cabinet LAN: login
  cityedge ui --add-user alice --users /etc/cityedge/credentials/ui_users   # asks a password
From a laptop: ssh -L 8088:127.0.0.1:8088 technician@gateway, then open http://127.0.0.1:8088/.
Bound to anything but loopback the page needs a users file (and takes --tls-cert/--tls-key).
exit status: 0 stopped (SIGINT/SIGTERM) or user added, 1 cannot listen,
78 bad configuration or users file"""
MIN_PASSWORD = 10


def register(sub: Any) -> None:
    p = sub.add_parser(
        "ui",
        help="serve the commissioning page (devices, live values, plan, outbox, writes)",
        description="Serve the local commissioning page: buses, devices with state and reason, "
        "live values with units and quality, the read plan and bus load, the outbox and link, "
        "recent warnings, and confirmed point writes through the command router. It runs "
        "beside the agent and talks to it over its control socket (the agent must be running).",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    config_option(
        p,
        "gateway file, for the agent's state directory (default $CITYEDGE_CONFIG, "
        "else /etc/cityedge/gateway.toml)",
    )
    p.add_argument(
        "--socket", type=Path, metavar="PATH", help="the agent's control socket (instead of -c)"
    )
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default loopback)")
    p.add_argument("--port", type=int, default=8088, help="TCP port (default 8088)")
    p.add_argument(
        "--users",
        type=Path,
        metavar="FILE",
        help="users file (name:scrypt-hash lines); default $CREDENTIALS_DIRECTORY/ui_users, "
        "else /etc/cityedge/credentials/ui_users when it exists. With one, the page asks a login",
    )
    p.add_argument("--add-user", metavar="NAME", help="add or change a user in the users file")
    p.add_argument(
        "--tls-cert", type=Path, metavar="FILE", help="serve HTTPS with this certificate (PEM)"
    )
    p.add_argument(
        "--tls-key", type=Path, metavar="FILE", help="the certificate's private key (PEM)"
    )
    p.add_argument(
        "--allow-host",
        action="append",
        default=[],
        metavar="NAME",
        help="a host name the page may be reached by (addresses, localhost and this machine's "
        "name always are)",
    )
    p.add_argument(
        "--interval",
        type=float,
        default=1.0,
        metavar="S",
        help="seconds between live updates (default 1)",
    )
    p.add_argument(
        "--idle-exit",
        type=float,
        default=0.0,
        metavar="S",
        help="exit after S seconds without an open page (socket activation; default never)",
    )
    p.set_defaults(func=run)


def _users_file(args: argparse.Namespace) -> Path | None:
    from agent.ui.auth import DEFAULT_USERS_FILE, USERS_CREDENTIAL

    if args.users is not None:
        return Path(args.users)
    cred = os.environ.get("CREDENTIALS_DIRECTORY")
    if cred and (Path(cred) / USERS_CREDENTIAL).exists():
        return Path(cred) / USERS_CREDENTIAL
    return DEFAULT_USERS_FILE if DEFAULT_USERS_FILE.exists() else None


def _fail(message: str, code: int) -> int:
    print(f"cityedge ui: {message}", file=sys.stderr)
    return code


def _add_user(args: argparse.Namespace) -> int:
    from agent.ui.auth import DEFAULT_USERS_FILE, add_user, check_name

    if (why := check_name(args.add_user)) is not None:
        return _fail(why, 78)
    path = Path(args.users) if args.users is not None else DEFAULT_USERS_FILE
    if sys.stdin.isatty():
        password = getpass.getpass(f"password for {args.add_user}: ")
        if getpass.getpass("again: ") != password:
            return _fail("the passwords differ; nothing changed", 78)
    else:
        password = sys.stdin.readline().rstrip("\r\n")
    if len(password) < MIN_PASSWORD:
        return _fail(f"a password needs at least {MIN_PASSWORD} characters", 78)
    try:
        replaced = add_user(path, args.add_user, password)
    except OSError as exc:
        return _fail(f"cannot write {path}: {exc.strerror or exc}", 78)
    print(f"{'changed' if replaced else 'added'} {args.add_user} in {path}; restart the page")
    return 0


def _tls(args: argparse.Namespace) -> ssl.SSLContext | None:
    if args.tls_cert is None and args.tls_key is None:
        return None
    if args.tls_cert is None or args.tls_key is None:
        raise ValueError("--tls-cert and --tls-key go together")
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        ctx.load_cert_chain(args.tls_cert, args.tls_key)
    except (OSError, ssl.SSLError) as exc:
        raise ValueError(f"cannot load {args.tls_cert} / {args.tls_key}: {exc}") from exc
    return ctx


def run(args: argparse.Namespace) -> int:
    if args.add_user:
        return _add_user(args)
    from agent.control.ctl import socket_path
    from agent.ui.app import UiSettings
    from agent.ui.auth import Users, UsersFileError
    from agent.ui.serve import Listen, ServeError, activated_socket, is_loopback, serve

    if args.socket is not None:
        control = Path(args.socket)
    else:
        loaded = load_or_report(args.config)
        if loaded is None:
            return 78
        control = socket_path(loaded.config.gateway.state_dir)
    try:
        listen = Listen(args.host, args.port, activated_socket(), _tls(args))
    except ValueError as exc:
        return _fail(str(exc), 78)
    users_file = _users_file(args)
    users = None
    if users_file is not None:
        try:
            users = Users.load(users_file)
        except UsersFileError as exc:
            return _fail(str(exc), 78)
    elif not is_loopback(listen):
        return _fail(
            "listening beyond loopback needs a login: give a users file (--users FILE, or "
            "LoadCredential=ui_users:...; add a user with 'cityedge ui --add-user NAME')",
            78,
        )
    settings = UiSettings(
        control,
        users,
        tls=listen.tls is not None,
        interval=max(0.2, args.interval),
        allow_hosts=frozenset(h.lower() for h in args.allow_host),
    )
    try:
        asyncio.run(serve(settings, listen, idle_exit=args.idle_exit, announce=_announce))
    except ServeError as exc:
        return _fail(exc.message, 1)
    return 0


def _announce(line: str) -> None:
    print(line, flush=True)
