"""The commissioning page's HTTP side (aiohttp): static page, session, live events, writes.

- ``GET /`` and ``/static/*``: the page, plain HTML/CSS/JS shipped in the package (no CDN);
- ``GET /api/session``: whether a login is needed, who is logged in, the CSRF token;
- ``POST /api/login`` (JSON ``{"user", "password"}``), ``POST /api/logout``: the session cookie;
- ``GET /api/events``: server-sent events, ``plan`` (the read plan) and ``devices`` (their
  description) once per config, ``snapshot`` (everything live) every second (agent/ui/hub.py);
- ``GET /api/snapshot``: one snapshot (scripts, a page that cannot keep a stream open);
- ``POST /api/write`` (JSON ``{"device", "point", "value"}``, the value as typed): the control
  socket's ``write`` on the ``local`` channel, ``onBehalfOf`` the logged-in user.

Defences: every request's ``Host`` must be an address, ``localhost``, this machine's name or an
``--allow-host`` (a page elsewhere cannot reach this one through DNS rebinding); every POST
must be JSON, from this origin when the browser says one, and (but the login) carry the
session's CSRF token in ``X-CSRF-Token``; cookies are HttpOnly and SameSite=Strict (and Secure
over TLS); a strict Content-Security-Policy allows nothing but this origin.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import logging
import os
import secrets
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from aiohttp import web

from agent.control.ctl import request as control_request
from agent.ui.auth import LoginThrottle, Session, Sessions, Users
from agent.ui.hub import AgentUnreachable, Hub
from drivers.core.fpenv import keep_subnormals
from drivers.core.reading import now_ms

log = logging.getLogger("cityedge.ui")
# aiohttp has just loaded yarl, whose armv7l wheel turns on flush-to-zero for the whole process
# (drivers/core/fpenv.py): values below 2.2e-308 would read 0 in this process
keep_subnormals()
COOKIE = "cityedge_session"
KEEPALIVE_S = 15.0
MAX_BODY = 16 * 1024
_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; "
    "img-src 'self' data:; connect-src 'self'; form-action 'self'; base-uri 'none'; "
    "frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
}
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass
class UiSettings:
    socket: Path  # the agent's control socket
    users: Users | None  # None: no login (loopback only)
    tls: bool = False
    interval: float = 1.0
    write_timeout: float = 15.0
    allow_hosts: frozenset[str] = frozenset()
    sessions: Sessions = field(default_factory=Sessions)
    throttle: LoginThrottle = field(default_factory=LoginThrottle)


SETTINGS = web.AppKey("settings", UiSettings)
HUB = web.AppKey("hub", Hub)
OPEN = web.AppKey("open_session", Session)  # the one session of a page without login


def static_dir() -> Path:
    return Path(str(resources.files("agent.ui") / "static"))


def make_app(settings: UiSettings, hub: Hub) -> web.Application:
    app = web.Application(
        middlewares=[_guard], client_max_size=MAX_BODY, handler_args={"max_field_size": 8190}
    )
    app[SETTINGS] = settings
    app[HUB] = hub
    app[OPEN] = Session(None, secrets.token_urlsafe(32), 0.0, 0.0)
    app.router.add_get("/", _index)
    app.router.add_static("/static/", static_dir(), show_index=False, follow_symlinks=False)
    app.router.add_get("/api/session", _session)
    app.router.add_post("/api/login", _login)
    app.router.add_post("/api/logout", _logout)
    app.router.add_get("/api/events", _events)
    app.router.add_get("/api/snapshot", _snapshot)
    app.router.add_post("/api/write", _write)
    return app


# -- middleware ---------------------------------------------------------------------------------
_PUBLIC = frozenset({"/", "/api/session", "/api/login"})


@web.middleware
async def _guard(request: web.Request, handler: Handler) -> web.StreamResponse:
    settings = request.app[SETTINGS]
    if not _host_allowed(request.host, settings.allow_hosts):
        return _error(421, f"unknown host name '{request.host}' (see cityedge ui --allow-host)")
    if request.method == "POST":
        if request.content_type != "application/json":
            return _error(415, "JSON only")
        origin = request.headers.get("Origin")
        scheme = "https" if settings.tls else "http"
        if origin is not None and origin != f"{scheme}://{request.host}":
            return _error(403, "cross-origin request refused")
    path = request.path
    if not path.startswith("/static/") and path not in _PUBLIC:
        session = current_session(request)
        if session is None:
            return _error(401, "log in first")
        if request.method == "POST" and not secrets.compare_digest(
            request.headers.get("X-CSRF-Token", ""), session.csrf
        ):
            return _error(403, "missing or wrong CSRF token: reload the page")
    try:
        response = await handler(request)
    except web.HTTPException as exc:
        response = exc
    response.headers.update(_HEADERS)
    if not path.startswith("/static/"):
        response.headers.setdefault("Cache-Control", "no-store")
    return response


def _host_allowed(host: str, allowed: frozenset[str]) -> bool:
    name = host.rsplit(":", 1)[0] if not host.endswith("]") else host
    name = name.strip("[]").lower()
    if name in allowed or name in ("localhost", socket.gethostname().lower()):
        return True
    if name == f"{socket.gethostname().lower()}.local":
        return True
    with contextlib.suppress(ValueError):
        ipaddress.ip_address(name)
        return True
    return False


def current_session(request: web.Request) -> Session | None:
    settings = request.app[SETTINGS]
    if settings.users is None:
        return request.app[OPEN]
    return settings.sessions.get(request.cookies.get(COOKIE))


def _error(status: int, message: str, **extra: Any) -> web.Response:
    return web.json_response({"ok": False, "error": message, **extra}, status=status)


# -- handlers -----------------------------------------------------------------------------------
async def _index(request: web.Request) -> web.StreamResponse:
    return web.FileResponse(static_dir() / "index.html")


async def _session(request: web.Request) -> web.Response:
    settings = request.app[SETTINGS]
    session = current_session(request)
    return web.json_response(
        {
            "login": settings.users is not None,
            "user": None if session is None else session.user,
            "csrf": None if session is None else session.csrf,
            "interval": settings.interval,
        }
    )


async def _login(request: web.Request) -> web.Response:
    settings = request.app[SETTINGS]
    if settings.users is None:
        return _error(400, "this page has no login (loopback only)")
    client = request.remote or "?"
    wait = settings.throttle.retry_after(client)
    if wait > 0:
        return web.json_response(
            {"ok": False, "error": f"too many failed logins: try again in {wait:.0f} s"},
            status=429,
            headers={"Retry-After": str(int(wait) + 1)},
        )
    body = await _json(request)
    user, password = str(body.get("user", ""))[:64], str(body.get("password", ""))[:1024]
    ok = await asyncio.to_thread(settings.users.verify, user, password)
    if not ok:
        settings.throttle.failed(client)
        log.warning("commissioning page: failed login for '%s' from %s", user, client)
        return _error(401, "wrong user name or password")
    settings.throttle.succeeded(client)
    sid, session = settings.sessions.open(user)
    log.info("commissioning page: %s logged in from %s", user, client)
    resp = web.json_response({"ok": True, "user": user, "csrf": session.csrf})
    resp.set_cookie(
        COOKIE,
        sid,
        httponly=True,
        samesite="Strict",
        secure=settings.tls,
        path="/",
        max_age=int(settings.sessions.max_s),
    )
    return resp


async def _logout(request: web.Request) -> web.Response:
    request.app[SETTINGS].sessions.close(request.cookies.get(COOKIE))
    resp = web.json_response({"ok": True})
    resp.del_cookie(COOKIE, path="/")
    return resp


async def _events(request: web.Request) -> web.StreamResponse:
    hub = request.app[HUB]
    resp = web.StreamResponse(
        headers={"Content-Type": "text/event-stream", "Cache-Control": "no-store"}
    )
    await resp.prepare(request)
    q = hub.subscribe()
    try:
        await resp.write(f"retry: {int(hub.interval * 2000)}\n\n".encode())
        while True:
            try:
                name, data = await asyncio.wait_for(q.get(), KEEPALIVE_S)
            except TimeoutError:
                await resp.write(b": keep-alive\n\n")
                continue
            if current_session(request) is None:
                await resp.write(b"event: logout\ndata: {}\n\n")
                break
            await resp.write(f"event: {name}\ndata: {data}\n\n".encode())
    except (ConnectionResetError, ConnectionError):
        pass  # the page went away
    finally:
        hub.unsubscribe(q)
    return resp


async def _snapshot(request: web.Request) -> web.Response:
    hub = request.app[HUB]
    snap = await hub.poll_once()
    return web.json_response(snap)


async def _write(request: web.Request) -> web.Response:
    settings = request.app[SETTINGS]
    session = current_session(request)
    if session is None:  # the middleware let it through a moment ago: it just expired
        return _error(401, "log in first")
    body = await _json(request)
    try:
        device, point = _name(body, "device"), _name(body, "point")
        value = body["value"]
        if isinstance(value, bool) or value is None or not isinstance(value, str | int | float):
            raise ValueError("value must be text or a number")
    except (KeyError, ValueError) as exc:
        return _error(400, f"bad write request: {exc}")
    req: dict[str, Any] = {
        "op": "write",
        "id": f"ui-{now_ms()}-{secrets.token_hex(4)}",
        "device": device,
        "point": point,
        "text": str(value),
    }
    if session.user is not None:
        req["onBehalfOf"] = session.user
    try:
        reply = await control_request(settings.socket, req, settings.write_timeout)
    except (OSError, TimeoutError, ValueError) as exc:
        return _error(503, str(AgentUnreachable(f"the agent did not take the write: {exc}")))
    if "status" not in reply:  # refused by the control socket itself (permissions)
        return _error(403, str(reply.get("error")))
    log.info(
        "commissioning page: %s wrote %s.%s = %r: %s",
        session.user or f"uid {os.getuid()}",
        device,
        point,
        value,
        reply.get("status"),
    )
    return web.json_response(reply)


def _name(body: dict[str, Any], key: str) -> str:
    v = body[key]
    if not isinstance(v, str) or not 0 < len(v) <= 128:
        raise ValueError(f"'{key}' must be a name")
    return v


async def _json(request: web.Request) -> dict[str, Any]:
    try:
        body = await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise web.HTTPBadRequest(
            text=json.dumps({"ok": False, "error": "bad JSON"}), content_type="application/json"
        ) from exc
    if not isinstance(body, dict):
        raise web.HTTPBadRequest(
            text=json.dumps({"ok": False, "error": "expected a JSON object"}),
            content_type="application/json",
        )
    return body
