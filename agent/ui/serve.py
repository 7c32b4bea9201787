"""Run the commissioning page: its own process, beside the agent, never inside it.

aiohttp's ``AppRunner`` with a ``TCPSite`` (or a ``SockSite`` on the socket systemd passed,
``cityedge-ui.socket``), the shared poller and an optional idle timer in one TaskGroup. SIGINT
and SIGTERM stop it; the open pages' event streams are closed within a second.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass

from aiohttp import web

from agent.ui.app import UiSettings, make_app
from agent.ui.hub import ControlClient, Hub
from drivers.core.endpoint import is_loopback as is_loopback_host

SD_LISTEN_FDS_START = 3


class ServeError(Exception):
    def __init__(self, message: str) -> None:
        self.message = message
        super().__init__(message)


@dataclass(frozen=True)
class Listen:
    host: str = "127.0.0.1"
    port: int = 8088
    sock: socket.socket | None = None  # from systemd socket activation
    tls: ssl.SSLContext | None = None


def activated_socket() -> socket.socket | None:
    """The listening socket systemd passed (LISTEN_FDS, sd_listen_fds(3)), if any."""
    if os.environ.get("LISTEN_PID") != str(os.getpid()):
        return None
    if int(os.environ.get("LISTEN_FDS", "0") or 0) < 1:
        return None
    for name in ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"):
        os.environ.pop(name, None)  # not for our children
    sock = socket.socket(fileno=SD_LISTEN_FDS_START)
    sock.setblocking(False)
    return sock


def is_loopback(listen: Listen) -> bool:
    if listen.sock is not None:
        if listen.sock.family == socket.AF_UNIX:
            return True
        host = str(listen.sock.getsockname()[0])
    else:
        host = listen.host
    return is_loopback_host(host)


def url_of(listen: Listen, site: web.BaseSite) -> str:
    scheme = "https" if listen.tls else "http"
    if listen.sock is not None:
        host, port = listen.sock.getsockname()[:2]
    else:
        server = getattr(site, "_server", None)
        sockets = getattr(server, "sockets", None) or []
        host, port = (sockets[0].getsockname()[:2]) if sockets else (listen.host, listen.port)
    shown = f"[{host}]" if ":" in str(host) else host
    return f"{scheme}://{shown}:{port}/"


async def serve(
    settings: UiSettings,
    listen: Listen,
    *,
    idle_exit: float = 0.0,
    announce: Callable[[str], None] = print,
    stop: asyncio.Event | None = None,
    signals: bool = True,
    on_ready: Callable[[str], None] | None = None,
) -> None:
    """Serve until SIGINT/SIGTERM (``signals``) or ``stop`` is set; ``on_ready`` gets the
    page's URL once it listens."""
    client = ControlClient(settings.socket)
    hub = Hub(client, settings.interval)
    app = make_app(settings, hub)
    runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=1.0, access_log=None)
    await runner.setup()
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    sigs = (signal.SIGINT, signal.SIGTERM) if signals else ()
    for sig in sigs:
        loop.add_signal_handler(sig, stop.set)
    try:
        site: web.BaseSite
        if listen.sock is not None:
            site = web.SockSite(runner, listen.sock, ssl_context=listen.tls)
        else:
            site = web.TCPSite(runner, listen.host, listen.port, ssl_context=listen.tls)
        try:
            await site.start()
        except OSError as exc:
            raise ServeError(
                f"cannot listen on {listen.host}:{listen.port}: {exc.strerror or exc}"
            ) from exc
        url = url_of(listen, site)
        login = "login required" if settings.users is not None else "no login: loopback only"
        announce(
            f"commissioning page on {url} ({login}); agent control socket "
            f"{settings.socket}; serving until SIGINT/SIGTERM"
        )
        if on_ready is not None:
            on_ready(url)
        async with asyncio.TaskGroup() as tg:
            poller = tg.create_task(hub.run(), name="ui-poll")
            idle = None
            if idle_exit > 0:
                idle = tg.create_task(_idle_exit(hub, idle_exit, stop), name="ui-idle")
            await stop.wait()
            poller.cancel()
            if idle is not None:
                idle.cancel()
    finally:
        for sig in sigs:
            loop.remove_signal_handler(sig)
        await runner.cleanup()
        await client.close()


async def _idle_exit(hub: Hub, after: float, stop: asyncio.Event) -> None:
    """Socket-activated: leave when no page has listened for ``after`` seconds; systemd
    starts the page again on the next connection."""
    while True:
        await asyncio.sleep(min(after, 30.0))
        if not hub.listeners and time.monotonic() - hub.last_activity >= after:
            stop.set()
            return
